"""Input encodings: random Fourier features (CT) and NeRF positional encoding."""

import numpy as np
import tensorflow as tf


def gaussian_matrix(in_dim, num_features, sigma, seed):
  """B = sigma * N(0, 1), shape (in_dim, num_features), fixed for the field's life."""
  rng = np.random.default_rng(seed)
  return (sigma * rng.standard_normal((in_dim, num_features))).astype(np.float32)


def fourier_features(x, matrix, two_pi=False):
  """[sin(x B), cos(x B)]. The paper's CT reference has no 2*pi factor (two_pi=False)."""
  proj = tf.matmul(x, matrix)
  if two_pi:
    proj = 2.0 * np.pi * proj
  return tf.concat([tf.sin(proj), tf.cos(proj)], -1)


def positional_frequencies(num_frequencies, max_log_frequency):
  """2^(f k/(N-1)), k = 0..N-1: log-spaced from 1 to 2^f (20 and 8 in the paper)."""
  return (2.0 ** np.linspace(0.0, max_log_frequency, num_frequencies)).astype(np.float32)


def positional_encoding(x, frequencies):
  """Per coordinate [sin(f_k x), cos(f_k x)]; no pi factor, no raw x (the reference).

  Output layout: for each frequency, all coordinates' sines, then all cosines,
  i.e. concat([sin(x f_k) for k], [cos(x f_k) for k]) flattened over (k, coord).
  """
  scaled = x[..., None, :] * frequencies[:, None]  # (..., N, D)
  new_shape = tf.concat([tf.shape(x)[:-1], [-1]], 0)
  return tf.concat([tf.reshape(tf.sin(scaled), new_shape),
                    tf.reshape(tf.cos(scaled), new_shape)], -1)
