"""Camera rays and stratified samples along them (the reference's NeRF rules).

Conventions (public reference notebooks, REFERENCE.md sections 1.3, 1.4, 4):
  * Pixel (i, j) = (column, row) at integer coordinates: no +0.5 pixel centre.
  * NeRF-Blender / OpenGL camera: x right, y up, the camera looks along -z, so
    d_cam = ((i - W/2) / f, -(j - H/2) / f, -1).
  * World directions d = R d_cam are NOT normalised: z is then depth along the
    camera axis and the renderer's deltas are not scaled by |d|.

Every function accepts leading batch dimensions and runs inside `tf.function`;
image sizes are Python ints because they fix output shapes.
"""

import tensorflow as tf


def _float_dtype(x):
  """Keeps float64 inputs in float64 (exact tests), everything else float32."""
  return x.dtype if x.dtype.is_floating else tf.float32


def _pixel_grid(height, width, downsample, dtype):
  """Integer pixel coordinates (i = column, j = row), each of shape (H', W')."""
  i, j = tf.meshgrid(tf.range(0, width, downsample),
                     tf.range(0, height, downsample), indexing='xy')
  return tf.cast(i, dtype), tf.cast(j, dtype)


def _to_world(c2w, dirs_cam):
  """Rotates camera-frame directions (..., H, W, 3) by c2w (..., 3|4, 4)."""
  rotation = c2w[..., None, None, :3, :3]
  directions = tf.reduce_sum(dirs_cam[..., None, :] * rotation, axis=-1)
  origins = tf.broadcast_to(c2w[..., None, None, :3, 3], tf.shape(directions))
  return origins, directions


def camera_rays(c2w, focal, height, width):
  """Rays of a pinhole camera in the NeRF-Blender convention.

  Args:
    c2w: (..., 3 or 4, 4) camera-to-world matrices.
    focal: focal length in pixels, a scalar or shape (...) matching c2w.
    height: image height in pixels (Python int).
    width: image width in pixels (Python int).

  Returns:
    origins, directions: (..., H, W, 3); directions are not normalised.
  """
  c2w = tf.convert_to_tensor(c2w)
  dtype = _float_dtype(c2w)
  c2w = tf.cast(c2w, dtype)
  # Trailing unit axes broadcast a batched focal over the pixel grid.
  focal = tf.cast(focal, dtype)[..., None, None]
  i, j = _pixel_grid(height, width, 1, dtype)
  x = (i - width / 2) / focal
  y = -(j - height / 2) / focal
  dirs_cam = tf.stack([x, y, -tf.ones_like(x)], axis=-1)
  return _to_world(c2w, dirs_cam)


def rays_from_kinv(c2w, kinv, height, width, downsample=1):
  """Rays from inverse intrinsics, as in the Phototourism reference.

  d = R (K^-1 [i, j, 1]^T) with integer pixel coordinates; K^-1 already holds
  the OpenGL sign flips. Scaling the translation (0.05 in the reference) is the
  caller's business.

  Args:
    c2w: (..., 3 or 4, 4) camera-to-world matrices.
    kinv: (..., 3, 3) inverse intrinsics.
    height: full image height in pixels (Python int).
    width: full image width in pixels (Python int).
    downsample: pixel stride (Python int); 2 keeps every other row and column.

  Returns:
    origins, directions: (..., ceil(H / downsample), ceil(W / downsample), 3).
  """
  c2w = tf.convert_to_tensor(c2w)
  dtype = _float_dtype(c2w)
  c2w = tf.cast(c2w, dtype)
  kinv = tf.cast(kinv, dtype)
  i, j = _pixel_grid(height, width, downsample, dtype)
  pixels = tf.stack([i, j, tf.ones_like(i)], axis=-1)
  dirs_cam = tf.reduce_sum(
      pixels[..., None, :] * kinv[..., None, None, :, :], axis=-1)
  return _to_world(c2w, dirs_cam)


def sample_along_rays(origins, directions, near, far, num_samples, randomized,
                      seed=None):
  """Evenly spaced depths with optional upward jitter, and the 3D points.

  z = linspace(near, far, N) includes both ends. When randomized, every sample
  independently moves up by U[0, 1) * (far - near) / N, exactly as the
  reference does (so the last one can pass `far` by up to one bin).

  Args:
    origins: (..., 3) ray origins.
    directions: (..., 3) ray directions (not normalised).
    near: scalar or (...) per-ray near bound.
    far: scalar or (...) per-ray far bound.
    num_samples: N, samples per ray (Python int).
    randomized: Python bool; False for evaluation.
    seed: shape [2] integer tensor for `tf.random.stateless_uniform`; if None
      while randomized, falls back to the global (stateful) generator.

  Returns:
    z_vals: (..., N) depths; points: (..., N, 3) = o + z d.
  """
  origins = tf.convert_to_tensor(origins)
  dtype = _float_dtype(origins)
  origins = tf.cast(origins, dtype)
  directions = tf.cast(directions, dtype)
  batch_shape = tf.shape(origins)[:-1]
  near = tf.broadcast_to(tf.cast(near, dtype), batch_shape)[..., None]
  far = tf.broadcast_to(tf.cast(far, dtype), batch_shape)[..., None]
  fractions = tf.linspace(tf.constant(0, dtype), tf.constant(1, dtype),
                          num_samples)
  z_vals = near + (far - near) * fractions
  if randomized:
    shape = tf.shape(z_vals)
    if seed is None:
      jitter = tf.random.uniform(shape, dtype=dtype)
    else:
      jitter = tf.random.stateless_uniform(shape, seed=seed, dtype=dtype)
    z_vals += jitter * (far - near) / num_samples
  points = origins[..., None, :] + z_vals[..., None] * directions[..., None, :]
  return z_vals, points
