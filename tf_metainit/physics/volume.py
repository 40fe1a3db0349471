"""Emission-absorption volume rendering (REFERENCE.md section 4).

The renderer takes activated network outputs (rgb in [0, 1], sigma >= 0); the
field applies sigmoid / relu. Quadrature follows the reference exactly:
  delta_i = z_{i+1} - z_i, last delta a constant (1e-3 ShapeNet, 1e10
  Phototourism), not scaled by |d|;
  alpha_i = 1 - exp(-sigma_i delta_i);
  T_i = prod_{j<i} min(1, 1 - alpha_j + 1e-10);
  w_i = alpha_i T_i, C = sum w_i rgb_i (+ 1 - sum w_i on a white background).
"""

import tensorflow as tf

SHAPENET_LAST_DELTA = 1e-3
PHOTOTOURISM_LAST_DELTA = 1e10


def volume_render(rgb, sigma, z_vals, last_delta=SHAPENET_LAST_DELTA,
                  white_background=True):
  """Composites samples along rays.

  Args:
    rgb: (..., N, 3) sample colours in [0, 1].
    sigma: (..., N) non-negative densities.
    z_vals: (..., N) sample depths, or (N,) shared by all rays.
    last_delta: length given to the last sample's interval.
    white_background: add (1 - accumulated opacity) of white (ShapeNet).

  Returns:
    dict with 'rgb' (..., 3), 'acc' (...), 'weights' (..., N), 'depth' (...).
  """
  sigma = tf.convert_to_tensor(sigma)
  dtype = sigma.dtype
  rgb = tf.cast(rgb, dtype)
  z_vals = tf.broadcast_to(tf.cast(z_vals, dtype), tf.shape(sigma))
  last = tf.ones_like(z_vals[..., :1]) * tf.cast(last_delta, dtype)
  deltas = tf.concat([z_vals[..., 1:] - z_vals[..., :-1], last], axis=-1)
  alpha = 1.0 - tf.exp(-sigma * deltas)
  # 1e-10 keeps cumprod's gradient (which divides by its input) finite for
  # opaque samples; the ray argument first keeps the gradient at the min tie.
  survive = tf.minimum(1.0 - alpha + 1e-10, tf.constant(1.0, dtype))
  transmittance = tf.math.cumprod(survive, axis=-1, exclusive=True)
  weights = alpha * transmittance
  colour = tf.reduce_sum(weights[..., None] * rgb, axis=-2)
  acc = tf.reduce_sum(weights, axis=-1)
  depth = tf.reduce_sum(weights * z_vals, axis=-1)
  if white_background:
    colour += 1.0 - acc[..., None]
  return {'rgb': colour, 'acc': acc, 'weights': weights, 'depth': depth}
