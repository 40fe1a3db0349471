"""The NeRF rendering that ShapeNet and Phototourism share (REFERENCE.md 4).

A field maps 3-D points to (r, g, b, sigma) logits; rgb = sigmoid, sigma = relu, and
samples are composited by `physics.volume`. The two tasks differ only in the last
interval (1e-3 on white for ShapeNet objects, 1e10 on black for Phototourism
scenes) and in whether the depth bounds are fixed or per photo.
"""

import tensorflow as tf

from tf_metainit.physics import rays
from tf_metainit.physics import volume


class Renderer:
  """Volume renders a field's rays; bounds are scalars or one pair per signal.

  Args:
    field: a Field with in_dim 3 and out_dim 4.
    num_samples: samples per ray.
    last_delta: the last sample's interval (volume.SHAPENET_LAST_DELTA or
      volume.PHOTOTOURISM_LAST_DELTA).
    white_background: composite onto white (ShapeNet) or black.
    chunk_points: points evaluated at once by render_rays (bounds memory).
  """

  def __init__(self, field, num_samples, last_delta, white_background, chunk_points):
    if field.in_dim != 3 or field.out_dim != 4:
      raise ValueError(
          f"NeRF fields map 3-D points to (r, g, b, sigma) logits; the field has "
          f"in_dim {field.in_dim} and out_dim {field.out_dim} (use NerfMLP).")
    self.field, self.num_samples = field, int(num_samples)
    self.last_delta, self.white_background = last_delta, bool(white_background)
    self.chunk_points = int(chunk_points)

  def volume(self, params, points, z_vals):
    """physics.volume's dict (rgb, acc, weights, depth) of rays whose samples are
    `points` (..., N, 3) at depths z_vals."""
    raw = self.field.apply(params, points)
    return volume.volume_render(
        tf.sigmoid(raw[..., :3]), tf.nn.relu(raw[..., 3]), z_vals,
        last_delta=self.last_delta, white_background=self.white_background)

  def composite(self, params, points, z_vals):
    """Colours of rays whose samples are `points` (..., N, 3) at depths z_vals."""
    return self.volume(params, points, z_vals)["rgb"]

  def sample(self, origins, directions, near, far, seed):
    """Stratified samples of (B, R) rays for one inner step: {'points', 'z_vals'}."""
    z_vals, points = rays.sample_along_rays(
        origins, directions, near, far, self.num_samples, randomized=True, seed=seed)
    return {"points": points, "z_vals": z_vals}

  def render_rays(self, params, origins, directions, near, far):
    """(B, R, 3) rays with per-signal params -> (B, R, 3) colours, even samples.

    near and far are Python scalars or (B,) per-signal bounds. Each signal's rays are
    cut into chunks and all (signal, chunk) pairs rendered in turn by one map_fn, so
    at most chunk_points points are in flight whatever B and R are, and the graph
    holds the field once (cheap to trace inside the evaluation's while_loop).
    """
    chunk = max(1, self.chunk_points // self.num_samples)
    params = [tf.convert_to_tensor(p) for p in params]
    shape = tf.shape(origins)
    near = tf.broadcast_to(tf.cast(near, tf.float32), shape[:1])
    far = tf.broadcast_to(tf.cast(far, tf.float32), shape[:1])
    num_chunks = (shape[1] + chunk - 1) // chunk
    # Zero-padded rays sample the origin only; their colours are dropped below.
    padding = [[0, 0], [0, num_chunks * chunk - shape[1]], [0, 0]]

    def chunked(x):
      return tf.reshape(tf.pad(x, padding), [-1, chunk, 3])

    signal = tf.repeat(tf.range(shape[0]), num_chunks)

    def render_chunk(elems):
      index, chunk_origins, chunk_directions = elems
      z_vals, points = rays.sample_along_rays(
          chunk_origins, chunk_directions, tf.gather(near, index),
          tf.gather(far, index), self.num_samples, randomized=False)
      return self.composite([tf.gather(p, index) for p in params], points, z_vals)

    colours = tf.map_fn(render_chunk, (signal, chunked(origins), chunked(directions)),
                        fn_output_signature=tf.TensorSpec([chunk, 3], tf.float32),
                        parallel_iterations=1)
    return tf.reshape(colours, [shape[0], -1, 3])[:, :shape[1]]

  def render_ray_list(self, params, origins, directions, near, far):
    """(R, 3) rays of one field (unbatched params), per-ray (R,) bounds -> dict of
    'rgb' (R, 3) clipped to [0, 1], 'depth' and 'acc' (R,), even samples."""
    chunk = max(1, self.chunk_points // self.num_samples)
    count = tf.shape(origins)[0]
    num_chunks = (count + chunk - 1) // chunk

    def chunked(x):
      x = tf.reshape(x, [count, -1])
      pad = tf.pad(x, [[0, num_chunks * chunk - count], [0, 0]], constant_values=1.0)
      return tf.reshape(pad, [num_chunks, chunk, -1])

    def render_chunk(elems):
      chunk_origins, chunk_directions, chunk_near, chunk_far = elems
      z_vals, points = rays.sample_along_rays(
          chunk_origins, chunk_directions, chunk_near[:, 0], chunk_far[:, 0],
          self.num_samples, randomized=False)
      out = self.volume(params, points, z_vals)
      return tf.clip_by_value(out["rgb"], 0.0, 1.0), out["depth"], out["acc"]

    spec = lambda shape: tf.TensorSpec(shape, tf.float32)
    rgb, depth, acc = tf.map_fn(
        render_chunk, tuple(chunked(x) for x in (origins, directions, near, far)),
        fn_output_signature=(spec([chunk, 3]), spec([chunk]), spec([chunk])),
        parallel_iterations=1)
    flat = lambda x, *tail: tf.reshape(x, [-1, *tail])[:count]
    return {"rgb": flat(rgb, 3), "depth": flat(depth), "acc": flat(acc)}


def flatten_rays(x):
  """(B, V, H, W, C) -> (B, V*H*W, C)."""
  return tf.reshape(x, tf.concat([tf.shape(x)[:1], [-1], tf.shape(x)[-1:]], 0))
