"""Fields: the functional `apply` seam, batched params, inits and encodings.

Forward passes are checked against numpy re-implementations written here from the
papers' formulas, not against the package's own code paths.
"""

import math

import numpy as np
import pytest
import tensorflow as tf

from tf_metainit.fields import functional
from tf_metainit.fields import mlp
from tf_metainit.fields import siren


def _numpy_siren(params, x, w0, offset):
  h = x
  for i in range(0, len(params) - 2, 2):
    h = np.sin(w0 * (h @ params[i] + params[i + 1]))
  return h @ params[-2] + params[-1] + offset


def _numpy_relu_mlp(params, h, output):
  for i in range(0, len(params) - 2, 2):
    h = np.maximum(h @ params[i] + params[i + 1], 0.0)
  out = h @ params[-2] + params[-1]
  return 1.0 / (1.0 + np.exp(-out)) if output == "sigmoid" else out


def _numpy_fourier_mlp(field, params, x):
  b = np.asarray(field.feature_matrix, np.float64)
  proj = x @ b
  return _numpy_relu_mlp(params, np.concatenate([np.sin(proj), np.cos(proj)], -1),
                         field.output_activation)


def _numpy_positional_encoding(x, freqs):
  """Hand-written loop: for each k all coords' sin(f_k x_d), then the same for cos."""
  sines, cosines = [], []
  for f in freqs:
    for d in range(x.shape[-1]):
      sines.append(np.sin(f * x[..., d]))
      cosines.append(np.cos(f * x[..., d]))
  return np.stack(sines + cosines, -1)


def _numpy_nerf_mlp(field, params, x):
  freqs = 2.0 ** (8.0 * np.arange(20) / 19.0)
  return _numpy_relu_mlp(params, _numpy_positional_encoding(x, freqs),
                         field.output_activation)


def _make(kind):
  if kind == "siren":
    return siren.Siren(in_dim=2, out_dim=3, width=16, depth=3, w0=30.0, seed=1)
  if kind == "fourier":
    return mlp.FourierMLP(in_dim=2, out_dim=1, num_features=16, sigma=3.0, width=16,
                          depth=3, seed=2)
  return mlp.NerfMLP(in_dim=3, out_dim=4, width=16, depth=3, seed=3)


def _numpy_forward(kind, field, params, x):
  params = [np.asarray(p, np.float64) for p in params]
  x = np.asarray(x, np.float64)
  if kind == "siren":
    return _numpy_siren(params, x, field.w0, field.output_offset)
  if kind == "fourier":
    return _numpy_fourier_mlp(field, params, x)
  return _numpy_nerf_mlp(field, params, x)


KINDS = ("siren", "fourier", "nerf")


def _perturb(params, rng, scale=0.5):
  """Adds noise on the scale of each tensor's init (zero biases: 0.03), so SIREN's w0
  does not push the sines to arguments where float32 loses accuracy."""
  out = []
  for p in params:
    p = np.asarray(p)
    spread = max(float(p.std()), 0.03)
    out.append((p + scale * spread * rng.standard_normal(p.shape)).astype(np.float32))
  return out


@pytest.mark.parametrize("kind", KINDS)
def test_apply_matches_call_and_numpy(kind):
  field = _make(kind)
  rng = np.random.default_rng(0)
  x = rng.uniform(-1, 1, (4, 5, field.in_dim)).astype(np.float32)
  via_apply = field.apply(field.trainable_variables, x).numpy()
  via_call = field(x).numpy()
  assert via_apply.shape == (4, 5, field.out_dim)
  np.testing.assert_array_equal(via_apply, via_call)
  np.testing.assert_allclose(
      via_apply, _numpy_forward(kind, field, field.trainable_variables, x),
      rtol=1e-4, atol=1e-5)
  # Non-default weights go through apply, not through the variables.
  params = _perturb(field.params(), rng)
  np.testing.assert_allclose(field.apply(params, x).numpy(),
                             _numpy_forward(kind, field, params, x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_batched_params_match_per_signal_apply(kind):
  field = _make(kind)
  rng = np.random.default_rng(1)
  num_signals = 3
  batched = functional.batch_params(field.params(), num_signals)
  for p, v in zip(batched, field.trainable_variables):
    assert p.shape == (num_signals,) + tuple(v.shape)
    np.testing.assert_array_equal(p.numpy(), np.broadcast_to(v.numpy(), p.shape))
  # Give each signal its own weights.
  batched = [tf.constant(p) for p in _perturb(batched, rng)]
  per_signal_x = rng.uniform(-1, 1, (num_signals, 7, field.in_dim)).astype(np.float32)
  shared_x = per_signal_x[:1]
  out_own = field.apply(batched, per_signal_x).numpy()
  out_shared = field.apply(batched, shared_x).numpy()
  assert out_own.shape == out_shared.shape == (num_signals, 7, field.out_dim)
  for b in range(num_signals):
    params_b = [p[b] for p in batched]
    np.testing.assert_allclose(out_own[b], field.apply(params_b, per_signal_x[b]).numpy(),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out_shared[b], field.apply(params_b, shared_x[0]).numpy(),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out_own[b], _numpy_forward(kind, field, params_b,
                                                          per_signal_x[b]),
                               rtol=1e-4, atol=1e-5)
  # The signals really differ, so a mix-up of weights would be caught.
  assert np.abs(out_own[0] - out_own[1]).max() > 1e-2


def test_siren_init_bounds_and_zero_biases():
  w0 = 30.0
  field = siren.Siren(in_dim=2, out_dim=3, width=256, depth=3, w0=w0, seed=0)
  fan_ins = [2, 256, 256]
  expected = [1.0 / 2] + [math.sqrt(6.0 / 256) / w0] * 2
  np.testing.assert_allclose(field.init_bounds(), expected, rtol=1e-12)
  variables = field.trainable_variables
  assert len(variables) == 6
  for i, fan_in in enumerate(fan_ins):
    kernel, bias = variables[2 * i].numpy(), variables[2 * i + 1].numpy()
    bound = 1.0 / fan_in if i == 0 else math.sqrt(6.0 / fan_in) / w0
    assert np.abs(kernel).max() <= bound * (1 + 1e-6)
    # 512+ samples of U(-b, b): the max |w| is within 1% of b with overwhelming odds.
    assert np.abs(kernel).max() > 0.9 * bound
    # Uniform, not e.g. a normal clipped at the bound: std = b / sqrt(3).
    np.testing.assert_allclose(kernel.std(), bound / math.sqrt(3), rtol=0.1)
    assert abs(kernel.mean()) < 0.1 * bound
    np.testing.assert_array_equal(bias, np.zeros_like(bias))


def test_siren_output_offset():
  field = siren.Siren(in_dim=2, out_dim=3, width=16, depth=3, w0=30.0)
  params = field.params()
  params[-2] = tf.zeros_like(params[-2])
  params[-1] = tf.zeros_like(params[-1])
  x = np.random.default_rng(0).uniform(0, 1, (10, 2)).astype(np.float32)
  np.testing.assert_array_equal(field.apply(params, x).numpy(), np.full((10, 3), 0.5))
  field.set_params(params)
  np.testing.assert_array_equal(field(x).numpy(), np.full((10, 3), 0.5))
  # A random init outputs mid grey on average.
  fresh = siren.Siren(in_dim=2, out_dim=3, width=64, depth=3, w0=30.0)
  assert abs(float(tf.reduce_mean(fresh(x))) - 0.5) < 0.2


def test_fourier_mlp_feature_matrix():
  sigma = 10.0
  field = mlp.FourierMLP(in_dim=2, out_dim=1, num_features=512, sigma=sigma, width=16,
                         depth=3)
  matrix = field.feature_matrix
  assert matrix.shape == (2, 512)
  assert not matrix.trainable
  assert all(v is not matrix for v in field.trainable_variables)
  assert any(v is matrix for v in field.non_trainable_variables)
  # Only the MLP's kernels and biases are trainable.
  assert len(field.trainable_variables) == 6
  values = np.asarray(matrix)
  np.testing.assert_allclose(values.std(), sigma, rtol=0.1)
  assert abs(values.mean()) < 0.15 * sigma
  # Gradients do not reach the matrix.
  x = tf.random.uniform((8, 2))
  with tf.GradientTape() as tape:
    loss = tf.reduce_sum(field(x))
  grads = tape.gradient(loss, field.trainable_variables + [matrix])
  assert grads[-1] is None
  assert all(g is not None for g in grads[:-1])


def test_nerf_positional_frequencies_and_encoding():
  field = mlp.NerfMLP(in_dim=3, out_dim=4, width=16, depth=3)
  k = np.arange(20)
  np.testing.assert_allclose(field.frequencies, 2.0 ** (8.0 * k / 19.0), rtol=1e-6)
  assert field.frequencies[0] == 1.0
  np.testing.assert_allclose(field.frequencies[-1], 256.0, rtol=1e-6)

  x = np.array([[0.1, -0.25, 0.7], [0.0, 1.0, -2.0]], np.float32)
  encoded = field.encode(tf.constant(x)).numpy()
  assert encoded.shape == (2, 120)
  # Hand-computed: first 60 = sin(f_k x_d) for k, then d; last 60 the cosines.
  for n in range(2):
    for kk in range(20):
      f = 2.0 ** (8.0 * kk / 19.0)
      for d in range(3):
        np.testing.assert_allclose(encoded[n, 3 * kk + d], np.sin(f * x[n, d]),
                                   atol=2e-4)
        np.testing.assert_allclose(encoded[n, 60 + 3 * kk + d], np.cos(f * x[n, d]),
                                   atol=2e-4)
  np.testing.assert_allclose(encoded[1, 60:63], [1.0, np.cos(1.0), np.cos(-2.0)],
                             atol=1e-6)


def test_nerf_output_dims():
  field = mlp.NerfMLP(in_dim=3, out_dim=4, width=16, depth=3)
  x = tf.random.uniform((2, 5, 7, 3))
  assert field(x).shape == (2, 5, 7, 4)
  assert field.apply(field.params(), tf.zeros((9, 3))).shape == (9, 4)
  batched = functional.batch_params(field.params(), 2)
  assert field.apply(batched, tf.zeros((1, 6, 3))).shape == (2, 6, 4)
  # Depth counts linear layers: 3 layers -> 6 trainable tensors, last one (4,).
  assert [tuple(v.shape) for v in field.trainable_variables] == [
      (120, 16), (16,), (16, 16), (16,), (16, 4), (4,)]


@pytest.mark.parametrize("kernel_init, std", [("keras", 1.0), ("haiku", 0.87962)])
def test_relu_mlp_kernel_init_scale_by_closed_form(kernel_init, std):
  # A normal truncated at +-2 sigma has std sigma * sqrt(1 - 4 phi(2) / (2 Phi(2) - 1))
  # = 0.87962 sigma: Haiku leaves it so, Keras raises sigma to undo it.
  field = mlp.NerfMLP(width=512, depth=3, num_frequencies=20, kernel_init=kernel_init,
                      seed=3)
  kernel = field.params()[2].numpy()  # 512 x 512, fan_in 512
  assert abs(kernel.std() * np.sqrt(512) - std) < 0.01
  assert np.abs(kernel).max() * np.sqrt(512) <= 2.0 * (1.0 / 0.87962 if
                                                      kernel_init == "keras" else 1.0) + 1e-5
  rebuilt = functional.from_description(field.describe(), {})
  assert rebuilt.kernel_init == kernel_init


def test_unknown_kernel_init_is_refused():
  with pytest.raises(ValueError, match="kernel_init must be one of"):
    mlp.FourierMLP(kernel_init="glorot")
