"""Random Shepp-Logan-style ellipse phantoms, their exact projections, readers.

Phantom frame. Ellipses are rows [A, a, b, xc, yc, theta_deg] in the usual
Shepp-Logan frame [-1, 1]^2 (REFERENCE.md section 2): a point (X, Y) is inside
when u^2/a^2 + v^2/b^2 <= 1 with u = (X-xc) cos(theta) + (Y-yc) sin(theta),
v = (X-xc) sin(theta) - (Y-yc) cos(theta), i.e. half-axis a lies along
(cos theta, sin theta). Intensities of overlapping ellipses add.

Pixel convention = the projector's (tf_metainit.physics.ct): pixel (r, c) of
an H x W image has its centre at normalised (x, y) = (c/W - 0.5, r/H - 0.5).
The phantom frame is the textbook one, X = 2x (columns, rightwards) and
Y = -2y (upwards: row 0 is the top, Y = +1), so the modified Shepp-Logan
table rasterises upright, rows and columns laid out as scikit-image's
`shepp_logan_phantom` and MATLAB's / phantominator's `phantom` (its three small
ellipses at Y = -0.605 in the bottom rows). Mirrored into the projector's
frame an ellipse has centre (xc, -yc) and tilt -theta. Every phantom lies
inside the disc X^2 + Y^2 <= 0.95^2, so the projector's truncated rays see all
of it.

Randomisation (an assumption: the generator behind the reference's ct_256.pkl
is unpublished). Starting from the modified Shepp-Logan table:
  * skull: outer ellipse with random half-axes (x0.85-1.1 / x0.85-1.0), centre
    shift (+-0.02), tilt (+-10 deg) and intensity A0 in [0.8, 1]; the brain
    ellipse has the same centre and tilt, a random wall thickness (x0.7-1.5 of
    Shepp-Logan's) and a downward shift of at most 60% of the wall, and an
    intensity making the brain level `base` in [0.1, 0.3];
  * the 8 inner Shepp-Logan features, each kept with probability 0.8, placed by
    the skull's scale/tilt plus N(0, 0.04) jitter, half-axes x0.75-1.25, tilt
    +-15 deg, intensity x0.5-2 (sign kept);
  * 0-4 extra ellipses at random places inside the brain, half-axes
    0.02-0.15, any tilt, intensity +-(0.05-0.3).
A feature that is not provably inside the brain is shrunk (up to 5 times) and
otherwise dropped.

Why intensities stay in [0, 1] without clipping (clipping would make the
analytic projections wrong). Outside the skull the value is 0, in the skull
wall A0 <= 1, and inside the brain base + (sum of the features covering the
point). Features are provably inside the brain, so that sum is bounded by the
largest total positive (negative) intensity over sets of features that may
overlap pairwise: two features count as disjoint only when a separating line is
found, which proves it. If a bound exceeds 1 - base (or -base), all positive
(negative) intensities are scaled down to fit, which is linear, so the exact
projections stay exact. Rasterised pixels are averages of such point values.

Anti-aliasing. `rasterize` averages supersample x supersample point samples per
pixel (default 4), a box filter; the analytic projections are those of the
continuous phantom. At 256x256 the two agree to 1-1.5% relative L2 through the
bilinear projector (see tests/test_ct_projector.py).
"""

import os
import pickle

import numpy as np

# Modified Shepp-Logan: rows [A, a, b, xc, yc, theta_deg] (REFERENCE.md s. 2).
SHEPP_LOGAN_MODIFIED = np.array([
    [1.0, .69, .92, 0., 0., 0.],
    [-.8, .6624, .874, 0., -.0184, 0.],
    [-.2, .11, .31, .22, 0., -18.],
    [-.2, .16, .41, -.22, 0., 18.],
    [.1, .21, .25, 0., .35, 0.],
    [.1, .046, .046, 0., .1, 0.],
    [.1, .046, .046, 0., -.1, 0.],
    [.1, .046, .023, -.08, -.605, 0.],
    [.1, .023, .023, 0., -.605, 0.],
    [.1, .023, .046, .06, -.605, 0.],
])

SPLITS = {"train": 0, "validation": 1, "test": 2}
MAX_EXTRA = 4
E_MAX = len(SHEPP_LOGAN_MODIFIED) + MAX_EXTRA
RADIUS = 0.95  # every phantom lies in this disc of the phantom frame
# Directions for support-function checks; finer = tighter containment proofs.
_NUM_DIRECTIONS = 1440
_SLACK = 1e-6  # keeps float rounding of intensity sums inside [0, 1]


# ----------------------------------------------------------------------------
# Geometry of ellipses: support functions give exact containment/disjointness.


def _directions(num=_NUM_DIRECTIONS):
  t = np.arange(num) * (2 * np.pi / num)
  return np.stack([np.cos(t), np.sin(t)], axis=-1)


def _support(ellipse, normals):
  """max over the ellipse of p . n, for unit normals (K, 2)."""
  _, a, b, xc, yc, theta = ellipse
  th = np.deg2rad(theta)
  along_a = normals @ np.array([np.cos(th), np.sin(th)])
  along_b = normals @ np.array([-np.sin(th), np.cos(th)])
  return normals @ np.array([xc, yc]) + np.sqrt((a * along_a)**2 +
                                                (b * along_b)**2)


def _radius(ellipse):
  return np.hypot(ellipse[3], ellipse[4]) + max(ellipse[1], ellipse[2])


def _inside(inner, outer, margin=0.0):
  """Proves inner + margin disc lies inside outer (False = not proven).

  For convex sets, inner within outer iff h_in(n) <= h_out(n) for all n. Both
  support functions are Lipschitz in n with constant <= their radius, so
  checking K directions with an extra (r_in + r_out) * pi / K proves it.
  """
  normals = _directions()
  slack = (_radius(inner) + _radius(outer)) * np.pi / len(normals)
  gap = _support(outer, normals) - _support(inner, normals)
  return bool(np.all(gap >= margin + slack))


def _in_disc(ellipse, radius=RADIUS):
  normals = _directions()
  slack = _radius(ellipse) * np.pi / len(normals)
  return bool(np.all(_support(ellipse, normals) <= radius - slack))


def _disjoint(e1, e2):
  """True only if a separating line is found (which proves disjointness)."""
  normals = _directions()
  return bool(np.any(_support(e1, normals) + _support(e2, -normals) < -1e-9))


def _max_clique_sum(weights, overlap):
  """Largest sum of weights over sets of pairwise-overlapping features."""
  best = 0.0

  def grow(total, candidates):
    nonlocal best
    best = max(best, total)
    for i, k in enumerate(candidates):
      grow(total + weights[k], [j for j in candidates[i + 1:] if overlap[k, j]])

  grow(0.0, [k for k in range(len(weights)) if weights[k] > 0])
  return best


def intensity_bounds(ellipses):
  """Proven (low, high) bounds of base + features inside the brain.

  Args:
    ellipses: (E, 6) rows as produced by `phantom_params` (skull, brain, then
      features inside the brain).

  Returns:
    (low, high) with low <= value <= high at every point inside the brain.
  """
  base = ellipses[0, 0] + ellipses[1, 0]
  features = ellipses[2:]
  n = len(features)
  overlap = np.ones((n, n), dtype=bool)
  for i in range(n):
    for j in range(i + 1, n):
      overlap[i, j] = overlap[j, i] = not _disjoint(features[i], features[j])
  amps = features[:, 0]
  high = base + _max_clique_sum(np.maximum(amps, 0), overlap)
  low = base - _max_clique_sum(np.maximum(-amps, 0), overlap)
  return low, high


# ----------------------------------------------------------------------------
# Random phantoms.


def _split_id(split):
  if split not in SPLITS:
    raise ValueError(f"unknown split {split!r}; use one of {sorted(SPLITS)}")
  return SPLITS[split]


def _skull(rng):
  """Skull and brain ellipses; the brain level A0 + A1 is in [0.1, 0.3]."""
  sl_skull, sl_brain = SHEPP_LOGAN_MODIFIED[0], SHEPP_LOGAN_MODIFIED[1]
  for _ in range(100):
    a0 = sl_skull[1] * rng.uniform(0.85, 1.1)
    b0 = sl_skull[2] * rng.uniform(0.85, 1.0)
    xc, yc = rng.uniform(-0.02, 0.02, size=2)
    tilt = rng.uniform(-10, 10)
    amp = rng.uniform(0.8, 1.0)
    skull = np.array([amp, a0, b0, xc, yc, tilt])
    wall_a = (sl_skull[1] - sl_brain[1]) * rng.uniform(0.7, 1.5)
    wall_b = (sl_skull[2] - sl_brain[2]) * rng.uniform(0.7, 1.5)
    # Shift the brain down along the skull's own axis, as in Shepp-Logan.
    drop = wall_b * rng.uniform(0.0, 0.6)
    th = np.deg2rad(tilt)
    base = rng.uniform(0.1, 0.3)
    brain = np.array([base - amp, a0 - wall_a, b0 - wall_b,
                      xc + drop * np.sin(th), yc - drop * np.cos(th), tilt])
    if _in_disc(skull) and _inside(brain, skull):
      return skull, brain
  raise RuntimeError("could not draw a skull; check the ranges")


def _shepp_logan_features(rng, skull):
  """The 8 inner Shepp-Logan features, randomly kept and perturbed."""
  sl_skull = SHEPP_LOGAN_MODIFIED[0]
  sx, sy = skull[1] / sl_skull[1], skull[2] / sl_skull[2]
  th = np.deg2rad(skull[5])
  rot = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
  features = []
  for amp, a, b, xc, yc, theta in SHEPP_LOGAN_MODIFIED[2:]:
    keep = rng.uniform() < 0.8
    # Draw everything even for dropped features: same stream layout.
    centre = skull[3:5] + rot @ np.array([xc * sx, yc * sy])
    centre = centre + rng.normal(0, 0.04, size=2)
    axes = np.array([a, b]) * rng.uniform(0.75, 1.25, size=2)
    tilt = theta + skull[5] + rng.uniform(-15, 15)
    amp = amp * rng.uniform(0.5, 2.0)
    if keep:
      features.append(np.array([amp, *axes, *centre, tilt]))
  return features


def _extra_features(rng, brain):
  """0..MAX_EXTRA random ellipses placed inside the brain."""
  th = np.deg2rad(brain[5])
  rot = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
  features = []
  for _ in range(rng.integers(0, MAX_EXTRA + 1)):
    rho = 0.8 * np.sqrt(rng.uniform())
    phi = rng.uniform(0, 2 * np.pi)
    centre = brain[3:5] + rot @ np.array(
        [brain[1] * rho * np.cos(phi), brain[2] * rho * np.sin(phi)])
    axes = rng.uniform(0.02, 0.15, size=2)
    tilt = rng.uniform(0, 180)
    amp = rng.uniform(0.05, 0.3) * (1 if rng.uniform() < 0.6 else -1)
    features.append(np.array([amp, *axes, *centre, tilt]))
  return features


def _fit_inside(feature, brain, margin=0.01, tries=5):
  """Shrinks feature until provably inside brain; None if it never fits."""
  feature = feature.copy()
  for _ in range(tries + 1):
    if _inside(feature, brain, margin):
      return feature
    feature[1:3] *= 0.8
  return None


def fit_intensities(ellipses):
  """Scales feature intensities so the phantom provably stays in [0, 1].

  Args:
    ellipses: (E, 6) skull, brain, then features provably inside the brain;
      skull intensity in (0, 1], brain level (A0 + A1) in (0, 1).

  Returns:
    A copy whose positive (negative) feature intensities are scaled by one
    common factor where needed (see module docstring).
  """
  ellipses = np.array(ellipses, dtype=np.float64)
  base = ellipses[0, 0] + ellipses[1, 0]
  low, high = intensity_bounds(ellipses)
  amps = ellipses[2:, 0]  # a view: scaling it edits ellipses
  if high > 1 - _SLACK * (1 - base):
    pos_scale = (1 - base) * (1 - _SLACK) / (high - base)
    amps[amps > 0] *= pos_scale
  if low < _SLACK * base:
    neg_scale = base * (1 - _SLACK) / (base - low)
    amps[amps < 0] *= neg_scale
  return ellipses


def phantom_params(index, split="train", seed=0):
  """Ellipses of phantom `index` of `split`.

  Deterministic from np.random.SeedSequence([seed, split_id, index]); the
  split id makes train / validation / test independent streams.

  Args:
    index: non-negative phantom index.
    split: 'train', 'validation' or 'test'.
    seed: non-negative dataset seed.

  Returns:
    (E, 6) float64 rows [A, a, b, xc, yc, theta_deg], E <= E_MAX: skull, brain,
    then features inside the brain.
  """
  rng = np.random.default_rng(
      np.random.SeedSequence([seed, _split_id(split), index]))
  skull, brain = _skull(rng)
  features = _shepp_logan_features(rng, skull) + _extra_features(rng, brain)
  features = [f for f in (_fit_inside(f, brain) for f in features)
              if f is not None]
  return fit_intensities(np.stack([skull, brain] + features))


# ----------------------------------------------------------------------------
# Rasterisation and exact projections.


def _resolution(resolution):
  if isinstance(resolution, int):
    return resolution, resolution
  height, width = resolution
  return int(height), int(width)


def _projector_frame(ellipses):
  """Contributing rows mirrored into the projector's frame (Y = 2y, down).

  Zero padding rows (A = 0 or empty axes) are dropped.
  """
  ellipses = np.array(ellipses, dtype=np.float64).reshape(-1, 6)
  keep = (ellipses[:, 0] != 0) & (ellipses[:, 1] > 0) & (ellipses[:, 2] > 0)
  mirrored = ellipses[keep]
  mirrored[:, 4:6] *= -1  # textbook Y is up; the array's rows go down
  return mirrored


def rasterize(ellipses, resolution, supersample=4):
  """Image of the ellipses in the projector's pixel convention.

  Args:
    ellipses: (E, 6) rows [A, a, b, xc, yc, theta_deg]; zero rows are ignored.
    resolution: int N for N x N, or (H, W).
    supersample: point samples per pixel side, averaged (box anti-aliasing);
      1 samples pixel centres only.

  Returns:
    (H, W) float32 image.
  """
  height, width = _resolution(resolution)
  s = int(supersample)
  # Sub-sample k of pixel c sits at c + (k + 0.5)/s - 0.5; X = 2 (c/W - 0.5).
  offsets = (np.arange(s) + 0.5) / s - 0.5
  xs = 2 * ((np.arange(width)[:, None] + offsets).ravel() / width - 0.5)
  ys = 2 * ((np.arange(height)[:, None] + offsets).ravel() / height - 0.5)
  fine = np.zeros((height * s, width * s))
  for amp, a, b, xc, yc, theta in _projector_frame(ellipses):
    th = np.deg2rad(theta)
    # Only the bounding box of the ellipse is evaluated.
    rx = np.hypot(a * np.cos(th), b * np.sin(th))
    ry = np.hypot(a * np.sin(th), b * np.cos(th))
    cols = np.flatnonzero(np.abs(xs - xc) <= rx)
    rows = np.flatnonzero(np.abs(ys - yc) <= ry)
    if not len(cols) or not len(rows):
      continue
    dx = xs[cols][None, :] - xc
    dy = ys[rows][:, None] - yc
    u = dx * np.cos(th) + dy * np.sin(th)
    v = dx * np.sin(th) - dy * np.cos(th)
    inside = (u / a)**2 + (v / b)**2 <= 1
    fine[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1] += amp * inside
  image = fine.reshape(height, s, width, s).mean(axis=(1, 3))
  return image.astype(np.float32)


def analytic_projection(ellipses, angles, num_bins):
  """Exact parallel-beam projections in the projector's convention.

  p(t, c) = sum_e A_e * chord_e(t, s_c): the line integral in normalised units
  along the ray {s_c n + y d}, n = (cos t, sin t), d = (-sin t, cos t), at
  detector offset s_c = c / num_bins - 0.5, which is what
  `tf_metainit.physics.ct.project` approximates. In normalised units an ellipse
  has half-axes a/2, b/2, centre (xc/2, yc/2), tilt phi = theta, and its chord
  is 2 a b sqrt(rho^2 - s'^2) / rho^2 where rho^2 = a^2 cos^2(t - phi) +
  b^2 sin^2(t - phi) (squared support function) and s' = s - (x0 cos t +
  y0 sin t).

  Args:
    ellipses: (E, 6) rows [A, a, b, xc, yc, theta_deg]; zero rows are ignored.
    angles: (V,) radians.
    num_bins: detector bins W.

  Returns:
    (V, num_bins) float64.
  """
  t = np.asarray(angles, dtype=np.float64).reshape(-1, 1, 1)
  s = (np.arange(num_bins) / num_bins - 0.5)[None, None, :]
  e = _projector_frame(ellipses)[None, :, :, None]  # (1, E, 6, 1)
  amp, a, b, x0, y0 = (e[:, :, i] for i in range(5))
  a, b, x0, y0 = a / 2, b / 2, x0 / 2, y0 / 2
  phi = np.deg2rad(e[:, :, 5])
  rho2 = (a * np.cos(t - phi))**2 + (b * np.sin(t - phi))**2
  offset = s - (x0 * np.cos(t) + y0 * np.sin(t))
  chord = 2 * a * b * np.sqrt(np.maximum(rho2 - offset**2, 0)) / rho2
  return np.sum(amp * chord, axis=1)


# ----------------------------------------------------------------------------
# Datasets.


def _padded(ellipses):
  out = np.zeros((E_MAX, 6), dtype=np.float32)
  out[:len(ellipses)] = ellipses
  return out


def _example(index, split, resolution, seed, supersample):
  ellipses = phantom_params(int(index), split, seed)
  image = rasterize(ellipses, resolution, supersample)
  return image, _padded(ellipses), np.int32(len(ellipses))


def phantom_arrays(split, num, resolution, seed=0, supersample=4):
  """Phantoms 0..num-1 of a split as numpy arrays.

  Returns:
    dict with 'image' (num, H, W) float32, 'ellipses' (num, E_MAX, 6) float32
    zero-padded, 'num_ellipses' (num,) int32.
  """
  examples = [_example(i, split, resolution, seed, supersample)
              for i in range(num)]
  images, ellipses, counts = zip(*examples) if examples else ([], [], [])
  height, width = _resolution(resolution)
  return {
      "image": np.asarray(images, np.float32).reshape(num, height, width),
      "ellipses": np.asarray(ellipses, np.float32).reshape(num, E_MAX, 6),
      "num_ellipses": np.asarray(counts, np.int32).reshape(num),
  }


# ----------------------------------------------------------------------------
# Readers of real-format data.

_KEYS = ("data_train", "data_test")


def _check_images(array, name, path):
  """(N, H, W) float32 in [0, 1], or an error naming the problem and fix."""
  array = np.asarray(array)
  if not (np.issubdtype(array.dtype, np.floating) or array.dtype == bool):
    raise TypeError(
        f"{path}: {name} has dtype {array.dtype}; expected floating point "
        "intensities in [0, 1] (convert first, e.g. uint8 images / 255.)")
  if array.ndim > 3:
    # Indexing like data[idx][None] leaves singleton axes: drop them.
    singleton = tuple(i for i in range(1, array.ndim) if array.shape[i] == 1)
    array = np.squeeze(array, axis=singleton)
  if array.ndim != 3 or min(array.shape) < 1:
    raise ValueError(
        f"{path}: {name} has shape {np.shape(array)}; expected (N, H, W) "
        "images (singleton axes after N are squeezed); stack single images "
        "with np.stack")
  if array.size:
    low, high = np.min(array), np.max(array)
    if not (np.isfinite(low) and np.isfinite(high)) or low < 0 or high > 1:
      raise ValueError(
          f"{path}: {name} has values in [{low}, {high}]; expected finite "
          "values in [0, 1] (rescale, e.g. (x - min) / (max - min))")
  return array.astype(np.float32)


def _check_pair(data, path):
  if not isinstance(data, dict) and not hasattr(data, "files"):
    raise ValueError(
        f"{path} holds a {type(data).__name__}; expected a dict (or .npz) "
        f"with arrays {list(_KEYS)}")
  present = list(data.files if hasattr(data, "files") else data.keys())
  missing = [k for k in _KEYS if k not in present]
  if missing:
    raise ValueError(
        f"{path} lacks {missing}; found keys {present}. Expected arrays "
        f"{list(_KEYS)} of (N, H, W) images in [0, 1]")
  out = {k: _check_images(data[k], k, path) for k in _KEYS}
  if out["data_train"].shape[1:] != out["data_test"].shape[1:]:
    raise ValueError(
        f"{path}: data_train images are {out['data_train'].shape[1:]} but "
        f"data_test images are {out['data_test'].shape[1:]}; both splits "
        "must share one resolution")
  return out


def _require_file(path):
  if not os.path.isfile(path):
    raise FileNotFoundError(
        f"{path} does not exist. Pass the path of the data file, or generate "
        "phantoms instead with tf_metainit.data.phantoms.phantom_arrays")


def load_npz(path):
  """Reads an .npz with arrays data_train and data_test of (N, H, W) images.

  Returns:
    {'data_train': (N, H, W) float32, 'data_test': (M, H, W) float32}.
  """
  path = os.fspath(path)
  _require_file(path)
  try:
    data = np.load(path, allow_pickle=False)
  except ValueError as e:
    raise ValueError(
        f"{path} could not be read without unpickling ({e}); save plain "
        "numeric arrays with np.savez") from e
  if not hasattr(data, "files"):
    raise ValueError(
        f"{path} is a single .npy array, not an .npz archive; save with "
        "np.savez(path, data_train=..., data_test=...)")
  with data:
    return _check_pair(data, path)


def load_images(path, resolution):
  """The (N, H, W) images in [0, 1] of an .npz's array `image` (held-out slices a
  user brings, e.g. docs/anatomy/real_slices.npz), area-resized to resolution."""
  path = os.fspath(path)
  _require_file(path)
  try:
    with np.load(path, allow_pickle=False) as data:
      arrays = {k: np.asarray(data[k]) for k in data.files}
  except (OSError, ValueError, AttributeError) as e:
    raise ValueError(f"{path} is not a readable .npz of plain arrays ({e}); save the "
                     "slices with np.savez(path, image=...).") from e
  if "image" not in arrays:
    raise ValueError(f"{path} has arrays {sorted(arrays)}; expected one named 'image' "
                     "of (N, H, W) slices in [0, 1] (np.savez(path, image=...)).")
  images = _check_images(arrays["image"].astype(np.float32), "image", path)
  if images.shape[1] != images.shape[2]:
    raise ValueError(f"{path}: the slices are {images.shape[1]}x{images.shape[2]}; "
                     "the projector's grid is square: crop them to squares first.")
  if images.shape[1:] != (resolution, resolution):
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    images = tf.image.resize(images[..., None], (resolution, resolution), "area",
                             antialias=True).numpy()[..., 0]
  return images


# Set only by a binary's --allow_pickle flag (grant_unpickling): no config file, such
# as a run's stored config.gin, can grant it.
_UNPICKLING_GRANTED = False


def grant_unpickling(granted=True):
  global _UNPICKLING_GRANTED
  _UNPICKLING_GRANTED = bool(granted)


def load_reference_pickle(path, allow_pickle=False):
  """Reads the public reference's ct_256.pkl (dict of data_train/data_test).

  Args:
    path: file path.
    allow_pickle: must be True (or granted by the command line): unpickling can
      execute arbitrary code stored in the file, so only load files you trust.

  Returns:
    {'data_train': (N, H, W) float32, 'data_test': (M, H, W) float32}.
  """
  path = os.fspath(path)
  if not (allow_pickle or _UNPICKLING_GRANTED):
    raise ValueError(
        f"refusing to unpickle {path}: loading a pickle can run arbitrary code "
        "stored in the file. If you trust it, pass --allow_pickle to the command "
        "(in Python: load_reference_pickle(path, allow_pickle=True)); better, convert "
        "it once to .npz (np.savez(out, data_train=..., data_test=...)) and use "
        "source='npz'.")
  _require_file(path)
  with open(path, "rb") as f:
    # latin1 lets numpy arrays pickled under Python 2 load.
    data = pickle.load(f, encoding="latin1")
  return _check_pair(data, path)
