"""Emission-absorption volume rendering (REFERENCE.md section 4) and chunking.

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


def _pad_to_chunks(x, total):
  """Repeats the last row so the leading size becomes `total` (valid rays)."""
  index = tf.minimum(tf.range(total), tf.shape(x)[0] - 1)
  return tf.gather(x, index)


def render_in_chunks(fn, inputs, chunk_size):
  """Maps `fn` over the leading (ray) axis of `inputs` chunk by chunk.

  Memory stays bounded by one chunk: eagerly a Python loop, inside a graph a
  sequential `tf.map_fn`. The last chunk is padded with copies of the last ray
  (so `fn` always sees `chunk_size` rows and traces once) and the padding is
  dropped from the result.

  Args:
    fn: maps a nest of (chunk_size, ...) tensors to a nest of (chunk_size, ...)
      tensors.
    inputs: a tensor or nest of tensors sharing the leading size R (> 0).
    chunk_size: rays per call (Python int).

  Returns:
    fn's output nest with leading size R.
  """
  flat = [tf.convert_to_tensor(x) for x in tf.nest.flatten(inputs)]
  num_rays = tf.shape(flat[0])[0]
  num_chunks = (num_rays + chunk_size - 1) // chunk_size
  padded_size = num_chunks * chunk_size

  def chunked(x):
    x = _pad_to_chunks(x, padded_size)
    return tf.reshape(x, tf.concat([[num_chunks, chunk_size],
                                    tf.shape(x)[1:]], axis=0))

  chunks = tf.nest.pack_sequence_as(inputs, [chunked(x) for x in flat])
  if tf.executing_eagerly():
    outputs = [fn(tf.nest.map_structure(lambda c, k=k: c[k], chunks))
               for k in range(int(num_chunks))]
    stacked = tf.nest.map_structure(lambda *o: tf.stack(o), *outputs)
  else:
    stacked = tf.map_fn(fn, chunks, parallel_iterations=1,
                        fn_output_signature=_output_signature(fn, inputs,
                                                              chunk_size))

  def unchunked(y):
    y = tf.reshape(y, tf.concat([[padded_size], tf.shape(y)[2:]], axis=0))
    return y[:num_rays]

  return tf.nest.map_structure(unchunked, stacked)


def _output_signature(fn, inputs, chunk_size):
  """Traces `fn` once on a chunk-shaped spec to learn its output structure."""
  specs = tf.nest.map_structure(
      lambda x: tf.TensorSpec([chunk_size] + x.shape[1:].as_list(), x.dtype),
      inputs)
  outputs = tf.function(fn).get_concrete_function(specs).structured_outputs
  return tf.nest.map_structure(
      lambda t: tf.TensorSpec(t.shape, t.dtype), outputs)

