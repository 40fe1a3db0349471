"""Procedural "dead leaves" image dataset: occluding random shapes.

Photographs are scale invariant: their power spectrum falls as 1/f^2. The
dead-leaves model (Matheron 1968; Lee, Mumford & Huang, IJCV 2001) has the
same statistics: opaque shapes ("leaves") fall on the image, each hiding what
lies beneath, with sizes drawn from p(r) ~ r^-3, the exponent that makes the
picture look alike at every scale in 2-D. This is a built-in image class next
to `tf_metainit.data.text`, closer to photographs and just as offline.

Every image is a pure function of (split, index, resolution, seed): its
parameters come from a numpy Generator seeded with
SeedSequence([seed, split_id, index]), so any image can be rendered alone, in
any order, by any worker.

Disjointness rule: the split id ('train' = 0, 'test' = 1, 'validation' = 2;
validation came last, so the older splits kept their images) enters the seed
sequence, so the splits draw from independent streams and share no image (a
repeat would need thousands of continuous draws to coincide).

Shapes are defined in units of the image side, rendered at `supersample` x the
requested resolution and box-averaged down, so the same index gives the same
picture at every resolution, up to sampling and the per-pixel sensor noise.

Each image: a palette of a few colour clusters (low saturation more likely); a
background gradient between two palette colours; up to `max_leaves` discs,
ellipses and rectangles, each flat, shaded by a linear gradient, striped or
covered in smooth noise; on some images a Gaussian blur (depth of field); and
mild Gaussian sensor noise on all.
"""

import numpy as np

from tf_metainit import checks
from tf_metainit.data import procedural

SPLITS = ('train', 'test', 'validation')  # the order gives the split ids
SHAPES = ('disc', 'ellipse', 'rectangle')
SHAPE_PROBS = (0.35, 0.35, 0.3)
TEXTURES = ('flat', 'gradient', 'stripes', 'noise')
TEXTURE_PROBS = (0.3, 0.3, 0.15, 0.25)
# Brightness modulation: shading can be strong, patterns stay subtle.
MAX_CONTRAST = (0.0, 0.5, 0.25, 0.25)
NOISE_WAVES = 3  # The smooth noise is a sum of this many plane waves.
# Leaf radii in image sides. No edges are finer than R_MIN, so above
# 1 / (2 pi R_MIN) = 16 cycles per side the spectrum steepens towards 1/f^3;
# smaller leaves would extend the 1/f^2 range but need many more leaves.
R_MIN = 0.01
R_MAX = 0.5
EXPONENT = 3.0  # p(r) ~ r^-3: the scale-invariant exponent in 2-D.
_UNCOVERED = np.iinfo(np.int64).max  # Loses every np.minimum against a leaf.


def _split_id(split):
  if split not in SPLITS:
    raise ValueError(f'Unknown split {split!r}; use one of {SPLITS}.')
  return SPLITS.index(split)


def _image_rng(split, index, seed):
  """The Generator behind one image: independent of every other image."""
  return np.random.default_rng(
      np.random.SeedSequence([seed, _split_id(split), index]))


# ----------------------------------------------------------------------------
# Parameters.


def _power_law_mass(exponent, low, high):
  """Integral of r^-exponent over [low, high]."""
  if np.isclose(exponent, 1.0):
    return np.log(high / low)
  return (high ** (1 - exponent) - low ** (1 - exponent)) / (1 - exponent)


def _power_law(uniform, exponent, low, high):
  """Inverse CDF of p(r) ~ r^-exponent on [low, high] (exponent per sample)."""
  b = 1.0 - exponent
  log_case = np.isclose(b, 0.0)
  b = np.where(log_case, 1.0, b)  # Any value: that branch is discarded.
  power = (low ** b + uniform * (high ** b - low ** b)) ** (1.0 / b)
  return np.where(log_case, low * (high / low) ** uniform, power)


def sample_radii(rng, num, r_min=R_MIN, r_max=R_MAX, exponent=EXPONENT):
  """Radii of `num` leaves that touch the unit image.

  Leaves of radius r fall uniformly over the plane with density
  ~ r^-exponent. One touches the image iff its centre lies in
  [-r, 1 + r]^2, of area (1 + 2r)^2, so the radii of the leaves that touch
  follow r^-exponent (1 + 2r)^2: drawing those, and centres in that square,
  keeps the model translation invariant without wasting leaves off-image.
  """
  # r^-a (1 + 2r)^2 = r^-a + 4 r^-(a-1) + 4 r^-(a-2): a mixture of power laws.
  exponents = exponent - np.arange(3.0)
  weights = np.array([1.0, 4.0, 4.0]) * [
      _power_law_mass(a, r_min, r_max) for a in exponents]
  parts = rng.choice(3, size=num, p=weights / weights.sum())
  return _power_law(rng.random(num), exponents[parts], r_min, r_max)


def hsv_to_rgb(hsv):
  """(..., 3) HSV in [0, 1] to RGB in [0, 1]."""
  h, s, v = np.moveaxis(hsv, -1, 0)
  k = (np.array([5.0, 3.0, 1.0]) + 6.0 * h[..., None]) % 6.0
  ramp = np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)
  return v[..., None] * (1.0 - s[..., None] * ramp)


def sample_palette(rng, max_clusters=4):
  """An image's dominant palette: 2..max_clusters HSV centres and weights.

  Low saturations are more likely and values stay mid-range, as in
  photographs; hues are free.
  """
  k = rng.integers(2, max_clusters + 1)
  centres = np.stack(
      [rng.random(k), rng.beta(1.2, 3.0, k), rng.beta(2.0, 2.0, k)], axis=1)
  return centres, rng.dirichlet(np.ones(k))


def palette_colours(rng, palette, num, jitter=(0.03, 0.08, 0.12)):
  """`num` RGB colours, each a palette centre jittered in HSV."""
  centres, weights = palette
  hsv = centres[rng.choice(len(weights), num, p=weights)]
  hsv = hsv + rng.normal(0.0, jitter, (num, 3))
  hsv[:, 0] %= 1.0  # Hue wraps around; saturation and value clip.
  return hsv_to_rgb(np.clip(hsv, 0.0, 1.0))


def _half_axes(rng, radius, shape):
  """(N, 2) half-axes; every shape fits in the disc of its radius."""
  aspect = np.where(shape == SHAPES.index('disc'), 1.0,
                    rng.uniform(0.2, 1.0, len(radius)))
  # A rectangle's half-diagonal, not its half-side, is the radius.
  long = np.where(shape == SHAPES.index('rectangle'),
                  radius / np.sqrt(1.0 + aspect ** 2), radius)
  return np.stack([long, long * aspect], axis=1)


def sample_leaves(rng, num, palette, r_min=R_MIN, r_max=R_MAX,
                  exponent=EXPONENT, cycles_per_leaf=(1.0, 4.0),
                  max_cycles=16.0):
  """Parameters of `num` leaves, front first, as a dict of arrays.

  Keys: radius (N,); centre (N, 2) as (row, col) in image sides; shape (N,)
  indexing SHAPES; half_axes (N, 2); angle (N,); colour (N, 3) RGB;
  texture (N,) indexing TEXTURES; contrast (N,); and the texture's waves:
  wave_angle and wave_phase (N, NOISE_WAVES), wave_freq (N,) in cycles per
  image side. Gradients and stripes use the first wave only.

  Args:
    rng: numpy Generator.
    num: number of leaves.
    palette: (centres, weights) from `sample_palette`.
    r_min: smallest leaf radius, in image sides.
    r_max: largest leaf radius, in image sides.
    exponent: the radii follow p(r) ~ r^-exponent (3 = scale invariant).
    cycles_per_leaf: texture frequency range across a leaf's diameter, so
      textures scale with their leaves.
    max_cycles: cap in cycles per image side, so that small leaves' patterns
      stay resolvable at 64 px instead of aliasing.
  """
  radius = sample_radii(rng, num, r_min, r_max, exponent)
  reach = radius[:, None]
  centre = rng.random((num, 2)) * (1.0 + 2.0 * reach) - reach
  shape = rng.choice(len(SHAPES), num, p=SHAPE_PROBS)
  texture = rng.choice(len(TEXTURES), num, p=TEXTURE_PROBS)
  return {
      'radius': radius,
      'centre': centre,
      'shape': shape,
      'half_axes': _half_axes(rng, radius, shape),
      'angle': rng.uniform(0.0, np.pi, num),
      'colour': palette_colours(rng, palette, num),
      'texture': texture,
      'contrast': rng.random(num) * np.take(MAX_CONTRAST, texture),
      'wave_angle': rng.uniform(0.0, 2.0 * np.pi, (num, NOISE_WAVES)),
      'wave_phase': rng.uniform(0.0, 2.0 * np.pi, (num, NOISE_WAVES)),
      'wave_freq': np.minimum(
          rng.uniform(*cycles_per_leaf, num) / (2.0 * radius), max_cycles),
  }


# ----------------------------------------------------------------------------
# Rendering on a side x side grid of pixel centres (flat row-major indices).


def _pixel_centres(pixels, side):
  """(row, col) of flat pixel indices, in image sides."""
  return (pixels // side + 0.5) / side, (pixels % side + 0.5) / side


def _box_pairs(centre, radius, side):
  """(leaf, pixel) pairs for every pixel centre in each leaf's bounding box.

  Leaves are mostly small: testing only their boxes costs far less than
  testing every pixel against every leaf.
  """
  low = np.clip(np.ceil((centre - radius[:, None]) * side - 0.5), 0, side)
  high = np.clip(np.floor((centre + radius[:, None]) * side - 0.5) + 1, 0, side)
  low, size = low.astype(np.int64), np.maximum(high - low, 0).astype(np.int64)
  count = size[:, 0] * size[:, 1]
  leaf = np.repeat(np.arange(len(radius)), count)
  offset = np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count)
  width = size[leaf, 1]
  rows = low[leaf, 0] + offset // width
  cols = low[leaf, 1] + offset % width
  return leaf, rows * side + cols


def _inside(leaves, leaf, pixels, side):
  """Whether each pixel centre lies inside its paired leaf."""
  row, col = _pixel_centres(pixels, side)
  dy, dx = row - leaves['centre'][leaf, 0], col - leaves['centre'][leaf, 1]
  cos, sin = np.cos(leaves['angle'][leaf]), np.sin(leaves['angle'][leaf])
  u = (dx * cos + dy * sin) / leaves['half_axes'][leaf, 0]
  v = (dy * cos - dx * sin) / leaves['half_axes'][leaf, 1]
  is_rectangle = leaves['shape'][leaf] == SHAPES.index('rectangle')
  norm = np.where(is_rectangle, np.maximum(np.abs(u), np.abs(v)),
                  np.hypot(u, v))
  return norm <= 1.0


def leaf_owners(leaves, side, chunk=64):
  """Index of the frontmost leaf at each pixel centre (flat), -1 for none.

  Leaves are tested front first in chunks, and only against pixels still
  uncovered, stopping once all are covered: the leaves behind are hidden.
  """
  owner = np.full(side * side, _UNCOVERED, np.int64)
  for start in range(0, len(leaves['radius']), chunk):
    stop = start + chunk
    leaf, pixels = _box_pairs(leaves['centre'][start:stop],
                              leaves['radius'][start:stop], side)
    leaf += start
    free = owner[pixels] == _UNCOVERED
    leaf, pixels = leaf[free], pixels[free]
    inside = _inside(leaves, leaf, pixels, side)
    # Within a chunk several leaves may claim a pixel: the front one wins.
    np.minimum.at(owner, pixels[inside], leaf[inside])
    if not np.any(owner == _UNCOVERED):
      break
  return np.where(owner == _UNCOVERED, -1, owner)


def _texture(leaves, leaf, dy, dx):
  """Texture pattern in [-1, 1] at offsets (dy, dx) from each leaf's centre."""
  angle = leaves['wave_angle'][leaf]
  along = dx[:, None] * np.cos(angle) + dy[:, None] * np.sin(angle)
  waves = np.cos(2.0 * np.pi * leaves['wave_freq'][leaf, None] * along
                 + leaves['wave_phase'][leaf])
  patterns = (
      np.zeros_like(dx),  # flat
      np.clip(along[:, 0] / leaves['radius'][leaf], -1.0, 1.0),  # gradient
      waves[:, 0],  # stripes
      waves.mean(axis=1),  # smooth noise
  )
  return np.choose(leaves['texture'][leaf], patterns)


def background(colours, angle, side):
  """(side*side, 3) linear gradient, colours[0] to colours[1] along `angle`."""
  row, col = _pixel_centres(np.arange(side * side), side)
  # Projection on the direction, scaled so the image spans at most [0, 1].
  t = ((col - 0.5) * np.cos(angle) + (row - 0.5) * np.sin(angle)) / np.sqrt(2)
  return colours[0] + (t[:, None] + 0.5) * (colours[1] - colours[0])


def shade(leaves, owner, backdrop, side):
  """(side*side, 3) colours: each pixel's textured leaf, else the backdrop."""
  pixels = np.flatnonzero(owner >= 0)
  leaf = owner[pixels]
  row, col = _pixel_centres(pixels, side)
  pattern = _texture(leaves, leaf, row - leaves['centre'][leaf, 0],
                     col - leaves['centre'][leaf, 1])
  gain = 1.0 + leaves['contrast'][leaf] * pattern
  colours = backdrop.copy()
  colours[pixels] = np.clip(leaves['colour'][leaf] * gain[:, None], 0.0, 1.0)
  return colours


def gaussian_blur(image, sigma):
  """Blurs an (S, S, C) image with a Gaussian of `sigma` pixels.

  Done in the Fourier domain (cost independent of sigma) on a mirrored
  margin of 3 sigma, so the borders are neither wrapped nor darkened.
  """
  pad = int(np.ceil(3.0 * sigma))
  padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode='symmetric')
  size = padded.shape[0]
  freq_sq = np.fft.fftfreq(size)[:, None] ** 2 + np.fft.rfftfreq(size) ** 2
  gain = np.exp(-2.0 * np.pi ** 2 * sigma ** 2 * freq_sq)[..., None]
  spectrum = np.fft.rfft2(padded, axes=(0, 1)) * gain
  blurred = np.fft.irfft2(spectrum, s=(size, size), axes=(0, 1))
  return blurred[pad:size - pad, pad:size - pad]


def box_downsample(image, factor):
  """Averages each factor x factor block of an (S, S, C) image."""
  side, _, channels = image.shape
  blocks = image.reshape(side // factor, factor, side // factor, factor,
                         channels)
  return blocks.mean(axis=(1, 3))


def render_dead_leaves(index, split='train', resolution=64, seed=0,
                       r_min=R_MIN, r_max=R_MAX, exponent=EXPONENT,
                       max_leaves=8000, blur_prob=0.3, blur_range=(0.003, 0.02),
                       noise_range=(0.0, 0.01), supersample=2):
  """Renders dead-leaves image `index` of `split`: float32 (H, W, 3) in [0, 1].

  Args:
    index: non-negative image index within the split.
    split: 'train', 'validation' or 'test'; independent streams (see module doc).
    resolution: output side in pixels (any positive int).
    seed: dataset seed; a different seed gives a different dataset.
    r_min: smallest leaf radius, in image sides (0.01 = 0.64 px at 64 px).
    r_max: largest leaf radius, in image sides.
    exponent: leaf radii follow p(r) ~ r^-exponent (3 = scale invariant).
    max_leaves: leaf budget; with the defaults a pixel stays uncovered (and
      shows the background) with probability exp(-13); at 64 px the
      first ~5000 usually cover every pixel.
    blur_prob: fraction of images blurred, as by a shallow depth of field.
    blur_range: range of the blur's sigma (log-uniform), in image sides.
    noise_range: range of the sensor noise's standard deviation (uniform).
    supersample: render at this multiple of `resolution`, then box-average,
      for antialiasing that does not depend on the resolution.
  """
  checks.image_request(index, seed, resolution)
  rng = _image_rng(split, index, seed)
  # Every scene draw precedes the resolution-sized noise draw, so the scene
  # is the same at every resolution.
  palette = sample_palette(rng)
  backdrop_colours = palette_colours(rng, palette, 2)
  backdrop_angle = rng.uniform(0.0, 2.0 * np.pi)
  blurred = rng.random() < blur_prob
  blur_sigma = np.exp(rng.uniform(*np.log(blur_range))) if blurred else 0.0
  noise_sigma = rng.uniform(*noise_range)
  leaves = sample_leaves(rng, max_leaves, palette, r_min, r_max, exponent)

  side = resolution * supersample
  backdrop = background(backdrop_colours, backdrop_angle, side)
  colours = shade(leaves, leaf_owners(leaves, side), backdrop, side)
  image = colours.reshape(side, side, 3)
  if blur_sigma > 0:
    image = gaussian_blur(image, blur_sigma * side)
  image = box_downsample(image, supersample)
  image += rng.normal(0.0, noise_sigma, image.shape)
  return np.clip(image, 0.0, 1.0).astype(np.float32)


def dead_leaves_images(split='train', num_images=1000, resolution=64, seed=0,
                       start=0, **render_kwargs):
  """Images start..start+num_images-1 as float32 (N, H, W, 3) in memory."""
  return procedural.images(render_dead_leaves, split, num_images, resolution, seed, start,
                           **render_kwargs)
