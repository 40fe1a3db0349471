"""Training signals that are not one grid: random crops at random resolutions, seen as
points (issue 24).

An init meta-trained on every pixel of 64x64 images only learns what its field does
at those 4096 coordinates; between them it is free, and a 256x256 photo fitted from it
shows that freedom as noise. Here each training signal is drawn from a source image
(S, S, C) in [0, 1] as

  resolution r   log-uniform integer in [low, high]: the inner loop fits an r x r
                 image, as a user's image of that size would be, pixel (i, j) at
                 (i / r, j / r) (the reference's convention);
  crop           a square of side c (uniform integer in [r, S]) at a random position,
                 resized to r x r with antialiasing: a random zoom (photographs are
                 scale invariant) that never upsamples, and a random offset of the
                 r-grid against the content, sub-pixel whenever c > r;
  support        `support` of its pixels, what the inner loop fits: every pixel of a
                 random window ('window' sampling, a dense grid as a user's fit sees)
                 or pixels scattered over the view ('scatter');
  query          `query` points the meta-loss scores: pixels (the window's again, or
                 scattered ones apart from the support) and, a fraction `off_grid`,
                 points between pixels whose target is the bilinear interpolation of
                 their four pixels.

Support and query have fixed sizes, so an outer step costs the same at r = 32 as at
r = 512. A view smaller than the support has its pixels repeated, each about equally
often: its own mean loss.
"""

import tensorflow as tf

from tf_metainit import checks


def check_range(name, resolutions, source):
  """(low, high) of a training resolution range, checked against the source size."""
  if (not isinstance(resolutions, (tuple, list)) or len(resolutions) != 2):
    raise ValueError(f"{name} must be a (low, high) pair of pixel sizes, e.g. (32, 256); "
                     f"got {resolutions!r}.")
  low, high = (checks.positive_int(name, int(v)) for v in resolutions)
  if low > high:
    raise ValueError(f"{name} = {resolutions!r}: low must be <= high.")
  if high > source:
    raise ValueError(f"{name} = {resolutions!r} reaches above the source images' "
                     f"{source} px: crops are never upsampled. Raise the source "
                     "resolution or lower the range's high end.")
  return low, high


def pixel_coords(height, width):
  """(H*W, 2) coordinates (row / H, col / W), rows major."""
  rows = tf.range(height, dtype=tf.float32) / tf.cast(height, tf.float32)
  cols = tf.range(width, dtype=tf.float32) / tf.cast(width, tf.float32)
  return tf.reshape(tf.stack(tf.meshgrid(rows, cols, indexing="ij"), -1), [-1, 2])


def random_view(source, low, high, seed):
  """A random crop of `source` (S, S, C) at a random resolution r in [low, high]:
  the (r, r, C) image."""
  seeds = tf.random.split(seed, 4)
  side = tf.shape(source)[0]
  log_r = tf.random.stateless_uniform(
      [], seeds[0], tf.math.log(float(low) - 0.5), tf.math.log(float(high) + 0.5))
  r = tf.clip_by_value(tf.cast(tf.round(tf.exp(log_r)), tf.int32), low, high)
  crop = tf.random.stateless_uniform([], seeds[1], r, side + 1, tf.int32)
  top, left = tf.unstack(tf.random.stateless_uniform(
      [2], seeds[2], 0, side - crop + 1, tf.int32))
  window = source[top:top + crop, left:left + crop]
  image = tf.image.resize(window, tf.stack([r, r]), "bilinear", antialias=True)
  return tf.clip_by_value(image, 0.0, 1.0)


def bilinear(image, coords):
  """Bilinear interpolation of image (H, W, C) at coords (N, 2) in pixel-grid units
  (row / H, col / W), pixel (i, j) sitting at (i / H, j / W)."""
  shape = tf.shape(image)
  size = tf.cast(shape[:2], tf.float32)
  pos = coords * size
  base = tf.floor(pos)
  frac = pos - base
  base = tf.cast(base, tf.int32)
  limit = shape[:2] - 1
  out = 0.0
  for dr in (0, 1):
    for dc in (0, 1):
      idx = tf.minimum(base + [dr, dc], limit)
      weight = ((frac[:, 0] if dr else 1 - frac[:, 0])
                * (frac[:, 1] if dc else 1 - frac[:, 1]))
      out += weight[:, None] * tf.gather_nd(image, idx)
  return out


def window(image, side, seed):
  """A random side x side window of image (r, r, C) (the whole image when r <= side)
  and the coordinates of its pixels on the image's grid: (pixels (n, C), coords (n, 2),
  the window's corner (2,) and its size (2,), in grid units)."""
  shape = tf.shape(image)
  size = tf.minimum(shape[:2], side)
  corner = tf.random.stateless_uniform([2], seed, 0, tf.reduce_max(shape[:2] - size) + 1,
                                       tf.int32)
  corner = tf.minimum(corner, shape[:2] - size)
  part = image[corner[0]:corner[0] + size[0], corner[1]:corner[1] + size[1]]
  grid = pixel_coords(size[0], size[1]) * tf.cast(size, tf.float32)  # in pixels
  coords = (grid + tf.cast(corner, tf.float32)) / tf.cast(shape[:2], tf.float32)
  return (tf.reshape(part, [-1, shape[2]]), coords,
          tf.cast(corner, tf.float32) / tf.cast(shape[:2], tf.float32),
          tf.cast(size - 1, tf.float32) / tf.cast(shape[:2], tf.float32))


def sample_window(image, support, query, off_grid, seed):
  """Support: every pixel of a random window of about `support` pixels (the whole
  image below that), at its place on the image's grid, so the inner loop fits a dense
  grid at spacing 1 / r as a user's fit does; query: those pixels again (the paper's
  support = query) and, a fraction `off_grid` of `query`, points between them. Dicts
  as sample_points."""
  seeds = tf.random.split(seed, 3)
  side = int(support ** 0.5)  # the window holds at most `support` pixels
  pixels, coords, corner, span = window(image, side, seeds[0])
  n = tf.shape(pixels)[0]
  # Below `support` pixels the window's pixels repeat, each as often (up to one).
  chosen = tf.range(support) % n
  num_off = int(round(query * off_grid))
  on = tf.random.experimental.stateless_shuffle(tf.range(query - num_off) % n, seeds[1])
  between = corner + tf.random.stateless_uniform([num_off, 2], seeds[2]) * span
  return {"coords": tf.gather(coords, chosen), "pixels": tf.gather(pixels, chosen),
          "query_coords": tf.concat([tf.gather(coords, on), between], 0),
          "query_pixels": tf.concat([tf.gather(pixels, on), bilinear(image, between)],
                                    0)}


def sample_points(image, support, query, off_grid, seed):
  """The support and query points of one (r, r, C) image, scattered over it: a dict of
  coords (support, 2), pixels (support, C), query_coords (query, 2) and query_pixels
  (query, C)."""
  seeds = tf.random.split(seed, 2)
  shape = tf.shape(image)
  num_pixels = shape[0] * shape[1]
  pixels = tf.reshape(image, [num_pixels, shape[2]])
  coords = pixel_coords(shape[0], shape[1])
  num_off = int(round(query * off_grid))
  num_on = query - num_off
  order = tf.random.experimental.stateless_shuffle(tf.range(num_pixels), seeds[0])
  chosen = tf.gather(order, tf.range(support + num_on) % num_pixels)
  points = {"coords": tf.gather(coords, chosen[:support]),
            "pixels": tf.gather(pixels, chosen[:support])}
  on_grid = chosen[support:]
  # Between pixels: anywhere in the square the pixels span, [0, (r-1)/r]^2.
  span = tf.cast(shape[:2] - 1, tf.float32) / tf.cast(shape[:2], tf.float32)
  between = tf.random.stateless_uniform([num_off, 2], seeds[1]) * span
  points["query_coords"] = tf.concat([tf.gather(coords, on_grid), between], 0)
  points["query_pixels"] = tf.concat([tf.gather(pixels, on_grid),
                                      bilinear(image, between)], 0)
  return points


SAMPLINGS = {"window": sample_window, "scatter": sample_points}


def training_points(dataset, resolutions, support, query, off_grid, seed,
                    sampling="window"):
  """Maps a stream of {'image': (S, S, C)} sources to support/query point sets, one
  random view each. Element k's draws depend only on (seed, k), so a restored
  iterator continues the same stream."""
  low, high = resolutions
  base = tf.constant([seed, 24], tf.int32)

  def draw(index, signal):
    key = tf.random.experimental.stateless_fold_in(base, tf.cast(index, tf.int32))
    view_seed, point_seed = tf.unstack(tf.random.split(key, 2))
    view = random_view(signal["image"], low, high, view_seed)
    return SAMPLINGS[sampling](view, support, query, off_grid, point_seed)

  return dataset.enumerate().map(draw, num_parallel_calls=1)
