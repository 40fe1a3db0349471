"""Parallel-beam CT projector, differentiable with respect to the image.

Geometry follows the public reference's `ct_project` (REFERENCE.md section 3): an
H x W image spans the normalised square [-0.5, 0.5)^2 with pixel (r, c) at
x_c = c / W - 0.5 (columns), y_r = r / H - 0.5 (rows), i.e. the centre of the
square is pixel (H/2, W/2), not ((H-1)/2, (W-1)/2). For a view angle t the
sample grid (x_c, y_r) is rotated by

    x' = x cos t - y sin t,    y' = x sin t + y cos t,

the image is resampled at col' = (x' + 0.5) W, row' = (y' + 0.5) H and the
samples are averaged over r. Resampling is bilinear with zeros outside the image
(`interpolation='bilinear'`, the default), or the reference's nearest neighbour
(`'nearest'`: jax map_coordinates order 0, coordinates rounded half to even).

What a measurement approximates. Let f be the image as a function on the plane
in normalised units: the bilinear interpolant of the pixels, pixel (r, c) at
(x_c, y_r), fading to 0 within one pixel outside the grid. Detector bin c of view t sits at
offset s_c = c / W - 0.5 along the unit normal n = (cos t, sin t); its ray has
direction d = (-sin t, cos t). Then

    p(t, c) = (1/H) sum_r f(s_c n + y_r d)
            ~= integral_{-0.5}^{0.5} f(s_c n + y d) dy,

a left Riemann sum with step 1/H, so p is the line integral of f along the ray
in normalised units (unit = side of the image square), truncated to the ray
segment |y| < 0.5. For objects inside the disc of radius 0.5 (every phantom of
`tf_metainit.data.phantoms`) the truncation drops nothing, and p is the Radon
transform R f(t, s_c).

Implementation. The forward pass gathers the 4 bilinear taps of every sample;
its exact adjoint (`backproject`) splats with `Bincount`, which on CPU is an
order of magnitude faster than the scatter TF derives from a gather. Each of the
two is the other's custom gradient, so gradients of any order are exact.
"""

import math

import tensorflow as tf


def evenly_spaced_angles(num_views, dtype=tf.float32):
  """Test-time views: linspace(0, pi, num_views, endpoint=False)."""
  return tf.range(num_views, dtype=dtype) * (math.pi / num_views)


def random_angles(shape, seed, dtype=tf.float32):
  """Angles uniform in [0, pi) from stateless random ops.

  Args:
    shape: number of views, or a shape such as [batch, views].
    seed: int32/int64 tensor of shape [2] (stateless seed), so a training step
      can draw fresh angles from a step-dependent seed inside tf.function.
    dtype: float dtype of the angles.

  Returns:
    Tensor of the given shape.
  """
  if isinstance(shape, int):
    shape = [shape]
  u = tf.random.stateless_uniform(shape, seed=seed, dtype=dtype)
  # pi * u can round up to pi in float32; keep the interval half-open.
  return tf.minimum(u * math.pi, tf.constant(math.pi * (1 - 1e-6), dtype))


def _geometry(angles, batch, height, width):
  """Bilinear taps of every sample point.

  Args:
    angles: (V,) or (batch, V) floating angles.
    batch: number of images B (int32 scalar).
    height: image rows H.
    width: image columns W.

  Returns:
    corner: int32 (B, V, H, W), index of the top-left tap of sample (r, c) of
      image b in the batch of images zero-padded to (H + 3, W + 3) (one row and
      column before, two after) and flattened to (B * (H + 3) * (W + 3),).
    fr, fc: (..., V, H, W) fractional row / column offsets of the samples.
  """
  dtype = angles.dtype
  cos = tf.cos(angles)[..., None, None]
  sin = tf.sin(angles)[..., None, None]
  c = tf.range(width, dtype=dtype) - width / 2
  r = (tf.range(height, dtype=dtype) - height / 2)[:, None]
  # row' = (y' + 0.5) H and col' = (x' + 0.5) W written in pixel offsets.
  rows = (height / 2 + c * (height / width) * sin) + r * cos
  cols = (width / 2 + c * cos) - r * (width / height) * sin
  # Beyond one pixel outside, all taps read padding: clipping changes nothing.
  rows = tf.clip_by_value(rows, -1.0, float(height))
  cols = tf.clip_by_value(cols, -1.0, float(width))
  row0 = tf.floor(rows)
  col0 = tf.floor(cols)
  corner = tf.cast((row0 + 1) * (width + 3) + (col0 + 1), tf.int32)
  offsets = tf.range(batch) * ((height + 3) * (width + 3))
  corner = corner + offsets[:, None, None, None]
  return corner, rows - row0, cols - col0


def _forward(images, corner, fr, fc):
  """Projections (B, V, W) of images (B, H, W) at taps from `_geometry`."""
  height, width = images.shape[1], images.shape[2]
  flat = tf.reshape(tf.pad(images, [[0, 0], [1, 2], [1, 2]]), [-1])
  below = width + 3
  t00 = tf.gather(flat, corner)
  t01 = tf.gather(flat, corner + 1)
  t10 = tf.gather(flat, corner + below)
  t11 = tf.gather(flat, corner + below + 1)
  top = t00 + fc * (t01 - t00)
  bottom = t10 + fc * (t11 - t10)
  return tf.reduce_sum(top + fr * (bottom - top), axis=-2) / height


def _adjoint(projections, corner, fr, fc, height, width):
  """Exact adjoint of `_forward`: (B, V, W) -> (B, H, W)."""
  below = width + 3
  batch = tf.shape(projections)[0]
  total = batch * (height + 3) * below
  g = projections[:, :, None, :] / height  # every sample of a ray shares it
  a = (1 - fr) * g
  b = fr * g
  parts = [a * (1 - fc), a * fc, b * (1 - fc), b * fc]
  corner = tf.reshape(corner, [-1])
  flat = 0.
  # Splat each tap at its corner, then shift by the tap's offset; the padding
  # keeps every tap inside its own image's block.
  for part, shift in zip(parts, [0, 1, below, below + 1]):
    counts = tf.raw_ops.Bincount(arr=corner, size=total,
                                 weights=tf.reshape(part, [-1]))
    flat += tf.pad(counts, [[shift, 0]])[:total]
  padded = tf.reshape(flat, [batch, height + 3, below])
  return padded[:, 1:height + 1, 1:width + 1]


# XLA fuses the gathers with the interpolation arithmetic. 20 views of 256x256,
# forward + backward in a tf.function on the 2-core CPU: ~15-20 ms compiled,
# ~85-150 ms as plain TF ops.
_COMPILED = {
    True: tuple(tf.function(f, jit_compile=True)
                for f in (_geometry, _forward, _adjoint)),
    False: (_geometry, _forward, _adjoint),
}


def _linear_pair(corner, fr, fc, height, width, jit_compile):
  """Projector and backprojector, each the other's custom gradient."""
  _, forward_fn, adjoint_fn = _COMPILED[bool(jit_compile)]

  # stop_gradient: the tape must not try to differentiate the kernels (it
  # would need a gradient for Bincount); the custom gradients replace that.
  @tf.custom_gradient
  def forward(images):
    return forward_fn(tf.stop_gradient(images), corner, fr, fc), adjoint

  @tf.custom_gradient
  def adjoint(projections):
    out = adjoint_fn(tf.stop_gradient(projections), corner, fr, fc, height,
                     width)
    return out, forward

  return forward, adjoint


INTERPOLATIONS = ("bilinear", "nearest")


def _operators(angles, batch, height, width, jit_compile, interpolation):
  if height is None or width is None:
    raise ValueError("image height and width must be static")
  if interpolation not in INTERPOLATIONS:
    raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got "
                     f"{interpolation!r}.")
  geometry_fn = _COMPILED[bool(jit_compile)][0]
  corner, fr, fc = geometry_fn(angles, batch, height, width)
  if interpolation == "nearest":
    # Weights 0 or 1 pick the nearest of the 4 taps: the same kernels, and their
    # adjoint stays exact. An exact tie (offset 0.5, which a rotated grid almost
    # never meets) rounds up, where jnp.round would round to even.
    fr = tf.cast(fr >= 0.5, fr.dtype)
    fc = tf.cast(fc >= 0.5, fc.dtype)
  return _linear_pair(corner, fr, fc, height, width, jit_compile)


def _prepare(x, angles, rank):
  """Validates shapes; returns (x with batch dim, angles, had_batch)."""
  x = tf.convert_to_tensor(x)
  if not x.dtype.is_floating:
    raise TypeError(f"expected a floating point tensor, got {x.dtype}")
  angles = tf.stop_gradient(tf.cast(angles, x.dtype))
  batched = x.shape.rank == rank
  if x.shape.rank == rank - 1:
    if angles.shape.rank != 1:
      raise ValueError(f"unbatched input needs (V,) angles, got {angles.shape}")
    x = x[None]
  elif not batched:
    raise ValueError(f"expected rank {rank - 1} or {rank}, got shape {x.shape}")
  if angles.shape.rank not in (1, 2):
    raise ValueError(f"angles must be (V,) or (B, V), got {angles.shape}")
  return x, angles, batched


def project(images, angles, jit_compile=True, interpolation="bilinear"):
  """Parallel-beam projections of images (see module docstring).

  Args:
    images: float (B, H, W), or (H, W) for a single image. H, W static.
    angles: (B, V) per-image angles, or (V,) shared by the batch; radians. May
      be a tensor drawn inside tf.function. Not differentiated.
    jit_compile: compile the gather/interpolation kernels with XLA (fast on CPU
      and GPU); False runs them as plain TF ops.
    interpolation: 'bilinear' or the reference's 'nearest'.

  Returns:
    (B, V, W) projections, or (V, W) for an (H, W) image: W detector bins per
    view, each the mean of H samples along its ray.
  """
  images, angles, batched = _prepare(images, angles, 3)
  height, width = images.shape[1], images.shape[2]
  forward, _ = _operators(angles, tf.shape(images)[0], height, width,
                          jit_compile, interpolation)
  out = forward(images)
  return out if batched else out[0]


def backproject(projections, angles, height, jit_compile=True,
                interpolation="bilinear"):
  """Exact adjoint (transpose) of `project`.

  Args:
    projections: float (B, V, W) or (V, W).
    angles: (B, V) or (V,) radians, as given to `project`.
    height: image rows H (the image width is the number of bins W).
    jit_compile, interpolation: as for `project`.

  Returns:
    (B, H, W) or (H, W) image x with <project(u), projections> = <u, x>.
  """
  projections, angles, batched = _prepare(projections, angles, 3)
  width = projections.shape[2]
  _, adjoint = _operators(angles, tf.shape(projections)[0], height, width,
                          jit_compile, interpolation)
  out = adjoint(projections)
  return out if batched else out[0]
