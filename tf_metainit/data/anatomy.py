"""Procedural CT-like axial slices of heads, chests and abdomens.

What and why. A meta-learned CT initialisation is only as good as the prior its
training images define. Ellipse phantoms (phantoms.py) are flat, few-edged and
all alike; real axial CT / MRI slices have a smooth irregular body outline, a
skin / fat / muscle wall, softly textured organs, thin bright bone, dark air,
and many small structures at several scales. This module draws such slices
procedurally, so that the learned initialisation is a prior for real anatomy,
not for ellipses. It is not an anatomical atlas: shapes, sizes and levels are
plausible ranges, randomised per slice, with no claim to match any patient.

What a slice contains (each randomised per slice):
  * a body outline: an ellipse perturbed by low Fourier harmonics, its largest
    radius 0.6-0.95 of the half-width, with a random centre offset, rotation
    (mostly upright, sometimes any angle) and left-right mirroring; its
    bound radius (largest axis x (1 + sum of harmonic magnitudes)) plus the
    offset is at most RADIUS = 0.95, so it provably stays in that disc and a
    parallel-beam projector's truncated rays see all of it (outside the body
    every value is exactly 0);
  * head (30%): skin, scalp, skull ring (sometimes with a less dense diploe),
    cerebrospinal fluid (CSF), grey-matter cortex with a gyral inner boundary
    and sulci, white matter, lateral ventricles, sometimes deep grey nuclei,
    a midline fissure / falx, calcifications and air in a sinus;
  * thorax (30%): skin, subcutaneous fat of varying thickness, a muscle wall,
    two large dark lungs with small vessels, a heart (or, higher up, a
    trachea), aorta, ribs, sternum, sometimes scapulae, and a spine;
  * abdomen (40%): the same wall, visceral fat filled with bowel loops (some
    gas-filled), 1-5 organs (liver, spleen, kidneys, stomach with an air-fluid
    level, bladder, generic blobs) with soft texture, aorta / vena cava and
    small vessels, 0-2 bone rings (pelvis / limbs) and a spine (vertebral body
    with cortex and marrow, arch around the canal, spinous and transverse
    processes, paraspinal and psoas muscles).

Levels are attenuation-like in [0, 1]: 0 air outside the body, gas and lung
0-0.1, fat 0.2-0.35, CSF / fluid ~0.3-0.4, soft tissue and muscle 0.35-0.5,
organs 0.4-0.6, enhanced vessels up to 0.75, bone 0.8-1.0. One per-slice
"window" draw places all tissues coherently within their ranges (overall
contrast scaling), plus a per-tissue jitter. Textures are smooth random fields
(sums of plane waves) of small amplitude, so organs are not flat.

MR-like contrasts. With `mr_fraction` > 0 a slice is, with that probability, drawn
with T1- or T2-weighted-like levels instead (MR_TISSUES, half each): the same
geometry, but fat bright and cortical bone dark, and in T2 fluid and CSF the
brightest. Real held-out slices are often MR, and a CT-only prior teaches that
bone is the brightest and fat dark, which MR inverts; the mix makes the prior one
of shapes and edges more than of one modality's levels. The contrast is drawn
from its own stream, so a slice drawn as CT is the same slice whatever
mr_fraction is.

Conventions as phantoms.py. Pixel (r, c) of an H x W image has its centre at
normalised (x, y) = (c/W - 0.5, r/H - 0.5); the slice frame is X = 2x
(rightwards) and Y = -2y (upwards), [-1, 1]^2. Anatomy is built in a local
frame (u lateral, v anterior, the body centre at 0) that the pose maps into
that frame. Everything, textures included, is a function of the continuous
point, so every resolution samples the same slice: the random draws precede
and never depend on the resolution. A pixel is the mean of supersample x
supersample point samples (a box filter), so edges are sharp but
anti-aliased. A non-square (H, W) stretches the frame, as in phantoms.py.

Determinism. Slice `index` of `split` draws from
np.random.default_rng(np.random.SeedSequence([seed, split_id, index])), so
splits are independent streams and any slice renders alone. Its first draw
picks the kind (`slice_kind`).

Rendering is a painter's algorithm: shapes are painted in order, each only
inside its bounding box of the supersampled grid and clipped by named masks
('body', 'interior', ...) that earlier shapes stored, which keeps every
structure inside the body.
"""

import numbers

import numpy as np

SPLITS = {"train": 0, "validation": 1, "test": 2}
KINDS = ("head", "thorax", "abdomen")
KIND_PROBS = (0.3, 0.3, 0.4)
RADIUS = 0.95  # every slice lies in this disc of the slice frame

# Attenuation-like level ranges; `_Draw.level` draws within them.
TISSUES = {
    "skin": (0.38, 0.5),
    "fat": (0.2, 0.32),
    "visceral_fat": (0.22, 0.35),
    "scalp": (0.26, 0.42),
    "muscle": (0.36, 0.48),
    "soft": (0.37, 0.5),
    "mediastinum": (0.3, 0.42),
    "fluid": (0.32, 0.4),
    "csf": (0.3, 0.37),
    "grey": (0.48, 0.58),
    "white": (0.4, 0.47),
    "organ": (0.42, 0.58),
    "liver": (0.46, 0.6),
    "kidney": (0.46, 0.6),
    "blood": (0.43, 0.52),
    "enhanced": (0.58, 0.75),
    "marrow": (0.52, 0.72),
    "diploe": (0.66, 0.82),
    "bone": (0.82, 1.0),
    "calcification": (0.75, 0.95),
    "lung": (0.02, 0.09),
    "gas": (0.0, 0.05),
}

# MR-like levels of the same tissues: intensity-like in [0, 1] after a
# percentile normalisation, so fat (T1) or fluid (T2) reaches the top.
MR_TISSUES = {
    "t1": {
        "skin": (0.4, 0.55), "fat": (0.8, 0.95), "visceral_fat": (0.75, 0.92),
        "scalp": (0.6, 0.85), "muscle": (0.28, 0.4), "soft": (0.35, 0.5),
        "mediastinum": (0.6, 0.8), "fluid": (0.1, 0.2), "csf": (0.08, 0.18),
        "grey": (0.42, 0.52), "white": (0.58, 0.7), "organ": (0.35, 0.5),
        "liver": (0.45, 0.58), "kidney": (0.38, 0.5), "blood": (0.1, 0.35),
        "enhanced": (0.6, 0.8), "marrow": (0.6, 0.85), "diploe": (0.5, 0.75),
        "bone": (0.02, 0.08), "calcification": (0.05, 0.2), "lung": (0.0, 0.05),
        "gas": (0.0, 0.04),
    },
    "t2": {
        "skin": (0.35, 0.5), "fat": (0.55, 0.75), "visceral_fat": (0.5, 0.72),
        "scalp": (0.45, 0.65), "muscle": (0.15, 0.25), "soft": (0.3, 0.45),
        "mediastinum": (0.45, 0.65), "fluid": (0.85, 1.0), "csf": (0.85, 1.0),
        "grey": (0.42, 0.52), "white": (0.3, 0.38), "organ": (0.35, 0.5),
        "liver": (0.2, 0.3), "kidney": (0.45, 0.6), "blood": (0.05, 0.2),
        "enhanced": (0.3, 0.5), "marrow": (0.4, 0.6), "diploe": (0.35, 0.55),
        "bone": (0.02, 0.08), "calcification": (0.02, 0.1), "lung": (0.0, 0.05),
        "gas": (0.0, 0.04),
    },
}
CONTRASTS = ("ct",) + tuple(MR_TISSUES)

# Texture fields: (name, shortest, longest wavelength) in slice-frame units.
# Wavelengths are >= 0.1 (3 pixels at 64 px), so 64 px renders do not alias.
FIELDS = (("low", 0.3, 1.2), ("mid", 0.1, 0.3), ("gyri", 0.12, 0.28),
          ("sulci", 0.15, 0.35))
_FIELD = {name: i for i, (name, _, _) in enumerate(FIELDS)}
_WAVES = 24  # plane waves per field


def _split_id(split):
  if split not in SPLITS:
    raise ValueError(f"unknown split {split!r}; use one of {sorted(SPLITS)}")
  return SPLITS[split]


def _rng(index, split, seed):
  return np.random.default_rng(
      np.random.SeedSequence([seed, _split_id(split), index]))


def slice_contrast(index, split="train", seed=0, mr_fraction=0.0):
  """'ct', 't1' or 't2': drawn from the slice's own contrast stream."""
  if not 0.0 <= mr_fraction <= 1.0:
    raise ValueError(f"mr_fraction must be in [0, 1], got {mr_fraction!r}")
  u = np.random.default_rng(
      np.random.SeedSequence([seed, _split_id(split), index, 1])).uniform(size=2)
  if u[0] >= mr_fraction:
    return "ct"
  return "t1" if u[1] < 0.5 else "t2"


def _resolution(resolution):
  if np.ndim(resolution) == 0:
    height = width = resolution
  else:
    height, width = resolution
  for side in (height, width):
    if (isinstance(side, bool) or not isinstance(side, numbers.Integral) or
        side < 1):
      raise ValueError(f"resolution must be a positive int or (H, W) of "
                       f"positive ints, got {resolution!r}")
  return int(height), int(width)


def _check_request(index, seed, supersample):
  for name, value, low in (("index", index, 0), ("seed", seed, 0),
                           ("supersample", supersample, 1)):
    if (isinstance(value, bool) or not isinstance(value, numbers.Integral) or
        value < low):
      raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


# ----------------------------------------------------------------------------
# Shapes, in the local anatomy frame (u lateral, v anterior).


class _Blob:
  """A smooth star-shaped region: an ellipse with a harmonic radius.

  In blob coordinates p = u'/a, q = v'/b ((u', v') the offset from the centre
  turned by -angle) a point of normalised radius rho = |(p, q)| and angle t is
  inside when rho <= R(t) = 1 + sum_k alpha_k cos kt + beta_k sin kt.
  """

  def __init__(self, centre, axes, angle=0.0, harmonics=()):
    self.centre = tuple(float(c) for c in centre)
    self.axes = tuple(float(a) for a in axes)
    self.angle = float(angle)
    # Python floats stay "weak" in numpy arithmetic: the grid stays float32.
    self.harmonics = [(float(a), float(b)) for a, b in harmonics]

  def bound(self):
    """Centre and a radius that provably contains the blob."""
    extra = sum(np.hypot(a, b) for a, b in self.harmonics)
    return self.centre, max(self.axes) * (1.0 + extra)

  def _polar(self, u, v):
    ca, sa = np.cos(self.angle), np.sin(self.angle)
    du, dv = u - self.centre[0], v - self.centre[1]
    p = (du * ca + dv * sa) / self.axes[0]
    q = (dv * ca - du * sa) / self.axes[1]
    rho = np.hypot(p, q)
    safe = np.maximum(rho, 1e-12)
    cos, sin = p / safe, q / safe
    radius, slope = 1.0, 0.0
    cos_k, sin_k = cos, sin
    for k, (alpha, beta) in enumerate(self.harmonics, 1):
      if k > 1:  # angle addition: no trigonometric calls per harmonic
        cos_k, sin_k = cos_k * cos - sin_k * sin, sin_k * cos + cos_k * sin
      radius = radius + alpha * cos_k + beta * sin_k
      slope = slope + k * (beta * cos_k - alpha * sin_k)
    return rho, cos, sin, radius, slope

  def inside(self, u, v):
    rho, _, _, radius, _ = self._polar(u, v)
    return rho <= radius

  def depth(self, u, v):
    """Approximate distance inside the outline (< 0 outside), cos t, sin t.

    (R(t) - rho) / |grad(rho - R(t))|, the gradient taken on the outline
    along the same ray: exact for circles, first-order accurate near any
    outline, monotone along rays and finite at the centre, where a gradient
    taken at the point itself would blow up.
    """
    rho, cos, sin, radius, slope = self._polar(u, v)
    a, b = self.axes
    grad_u = cos / a + slope * sin / (a * radius)
    grad_v = sin / b - slope * cos / (b * radius)
    return (radius - rho) / np.hypot(grad_u, grad_v), cos, sin

  def boundary(self, t):
    """Outline point at blob angle t and its outward unit normal (local)."""
    radius, slope = 1.0, 0.0
    for k, (alpha, beta) in enumerate(self.harmonics, 1):
      radius += alpha * np.cos(k * t) + beta * np.sin(k * t)
      slope += k * (beta * np.cos(k * t) - alpha * np.sin(k * t))
    a, b = self.axes
    point = np.array([a * radius * np.cos(t), b * radius * np.sin(t)])
    normal = np.array([np.cos(t) / a + slope * np.sin(t) / (a * radius),
                       np.sin(t) / b - slope * np.cos(t) / (b * radius)])
    ca, sa = np.cos(self.angle), np.sin(self.angle)
    turn = np.array([[ca, -sa], [sa, ca]])
    return (np.array(self.centre) + turn @ point,
            turn @ normal / np.linalg.norm(normal))


class _Capsule:
  """Points within `radius` of the segment start-end (processes, fissures)."""

  def __init__(self, start, end, radius):
    self.start = tuple(float(s) for s in start)
    self.end = tuple(float(e) for e in end)
    self.radius = float(radius)

  def bound(self):
    (su, sv), (eu, ev) = self.start, self.end
    half = 0.5 * np.hypot(eu - su, ev - sv)
    return ((su + eu) / 2, (sv + ev) / 2), half + self.radius

  def inside(self, u, v):
    (su, sv), (eu, ev) = self.start, self.end
    du, dv = float(eu - su), float(ev - sv)
    length_sq = max(du * du + dv * dv, 1e-12)
    t = np.clip(((u - su) * du + (v - sv) * dv) / length_sq, 0.0, 1.0)
    return (u - su - t * du)**2 + (v - sv - t * dv)**2 <= self.radius**2


# ----------------------------------------------------------------------------
# Painting operations. A value is (level, field name or None, amplitude).


class _Fill:
  """Paints `value` inside a shape (optionally only where v >= `above`)."""

  def __init__(self, shape, value, clip=None, store=None, above=None):
    self.shape, self.value, self.clip = shape, value, clip
    self.store, self.above = store, above

  def paint(self, canvas):
    region = canvas.region(self.shape)
    if region is None:
      return
    rows, cols, u, v = region
    mask = self.shape.inside(u, v)
    if self.above is not None:  # gas rises to the anterior (upper) side
      mask &= v >= self.above
    canvas.put(rows, cols, mask, canvas.value(self.value, rows, cols),
               self.clip, self.store)


class _Layers:
  """Concentric layers inside a blob's outline, outermost first, then a core.

  Layer j is a dict: t (thickness), mod (harmonics of a relative thickness
  modulation around the outline), field / famp (a texture field added to
  the thickness: irregular boundaries such as gyri), value, and optional
  mask names: store saves this layer, store_in this layer and all inside it.
  """

  def __init__(self, blob, layers, core, clip=None, store=None,
               core_store=None):
    self.blob, self.layers, self.core = blob, layers, core
    self.clip, self.store, self.core_store = clip, store, core_store

  def paint(self, canvas):
    region = canvas.region(self.blob)
    if region is None:
      return
    rows, cols, u, v = region
    depth, cos, sin = self.blob.depth(u, v)
    inside = depth >= 0
    edge = np.zeros_like(depth)
    conditions, values, starts = [], [], []
    for layer in self.layers:
      thickness = layer["t"] * _modulation(layer.get("mod", ()), cos, sin)
      if layer.get("field") is not None:
        # A floor keeps e.g. the cortex a ribbon, not islands.
        folds = layer["famp"] * canvas.field(layer["field"])[rows, cols]
        thickness = np.maximum(thickness + folds, 0.35 * layer["t"])
      starts.append(edge)
      edge = edge + np.maximum(thickness, 0.0)
      conditions.append(depth < edge)
      values.append(canvas.value(layer["value"], rows, cols))
    core = canvas.value(self.core, rows, cols)
    shaded = np.select(conditions, values, default=core)
    painted = canvas.put(rows, cols, inside, shaded, self.clip, self.store)
    for layer, start, within in zip(self.layers, starts, conditions):
      if layer.get("store"):
        canvas.store(layer["store"], rows, cols,
                     painted & (depth >= start) & within)
      if layer.get("store_in"):
        canvas.store(layer["store_in"], rows, cols, painted & (depth >= start))
    if self.core_store:
      canvas.store(self.core_store, rows, cols, painted & (depth >= edge))


class _Ridge:
  """Paints where a field is near zero, inside a blob: curvy lines (sulci)."""

  def __init__(self, blob, field, width, value, clip):
    self.blob, self.field, self.width = blob, field, width
    self.value, self.clip = value, clip

  def paint(self, canvas):
    region = canvas.region(self.blob)
    if region is None:
      return
    rows, cols, _, _ = region
    mask = np.abs(canvas.field(self.field)[rows, cols]) < self.width
    canvas.put(rows, cols, mask, canvas.value(self.value, rows, cols),
               self.clip)


def _modulation(harmonics, cos, sin):
  """1 + sum_k alpha_k cos kt + beta_k sin kt, kept >= 0.2."""
  if not harmonics:
    return 1.0
  total, cos_k, sin_k = 1.0, cos, sin
  for k, (alpha, beta) in enumerate(harmonics, 1):
    if k > 1:
      cos_k, sin_k = cos_k * cos - sin_k * sin, sin_k * cos + cos_k * sin
    total = total + float(alpha) * cos_k + float(beta) * sin_k
  return np.maximum(total, 0.2)


# ----------------------------------------------------------------------------
# The canvas: the supersampled grid of the slice frame, posed anatomy.


class _Canvas:
  """Point samples of the slice frame and the anatomy's pose on them."""

  def __init__(self, height, width, supersample, pose, waves):
    s = supersample
    offsets = (np.arange(s) + 0.5) / s - 0.5
    # Sub-sample k of pixel c sits at c + (k + 0.5)/s - 0.5; X = 2 (c/W - .5).
    self.xs = (2 * ((np.arange(width)[:, None] + offsets).ravel() / width -
                    0.5)).astype(np.float32)
    # Y = -2y: the rows go down, so Y decreases along them.
    self.ys = (-2 * ((np.arange(height)[:, None] + offsets).ravel() / height -
                     0.5)).astype(np.float32)
    self.image = np.zeros((len(self.ys), len(self.xs)), np.float32)
    centre, angle, mirror = pose
    # Python floats, so that float32 grids stay float32 (numpy's scalars
    # would promote them to float64).
    self.centre = (float(centre[0]), float(centre[1]))
    self.angle, self.mirror = float(angle), float(mirror)
    self.waves = waves
    self.masks = {}
    self._fields = {}

  def to_frame(self, point):
    """Slice-frame (X, Y) of a local (u, v) point."""
    c, s = np.cos(self.angle), np.sin(self.angle)
    mu = self.mirror * point[0]
    return (self.centre[0] + c * mu - s * point[1],
            self.centre[1] + s * mu + c * point[1])

  def region(self, shape):
    """Row / column slices of the shape's bounding box and their (u, v)."""
    centre, radius = shape.bound()
    x, y = self.to_frame(centre)
    c0 = np.searchsorted(self.xs, x - radius, "left")
    c1 = np.searchsorted(self.xs, x + radius, "right")
    r0 = np.searchsorted(-self.ys, -(y + radius), "left")
    r1 = np.searchsorted(-self.ys, -(y - radius), "right")
    if c1 <= c0 or r1 <= r0:
      return None
    dx = (self.xs[c0:c1] - self.centre[0])[None, :]
    dy = (self.ys[r0:r1] - self.centre[1])[:, None]
    c, s = float(np.cos(self.angle)), float(np.sin(self.angle))
    u = self.mirror * (c * dx + s * dy)
    v = c * dy - s * dx
    return slice(r0, r1), slice(c0, c1), u, v

  def field(self, name):
    """A unit-variance smooth random field on the whole grid (cached).

    sum_k a_k cos(kx X + ky Y + phase) splits into cos / sin products of a
    row and a column factor: one (rows, 2K) x (2K, cols) matrix product.
    """
    if name not in self._fields:
      kx, ky, phase, amp = self.waves[_FIELD[name]].astype(np.float32).T
      ys, xs = self.ys[:, None], self.xs[:, None]
      by_row = np.concatenate([np.cos(ys * ky), np.sin(ys * ky)], axis=1)
      along = xs * kx + phase
      by_col = np.concatenate([amp * np.cos(along), -amp * np.sin(along)],
                              axis=1)
      # einsum, not a BLAS matmul: no thread start-up on small grids, and
      # the same sums in the same order on every machine.
      self._fields[name] = np.einsum("rk,ck->rc", by_row, by_col)
    return self._fields[name]

  def value(self, spec, rows, cols):
    level, field, amp = float(spec[0]), spec[1], float(spec[2])
    if field is None or amp == 0:
      return np.float32(level)
    return level + amp * self.field(field)[rows, cols]

  def put(self, rows, cols, mask, value, clip=None, store=None):
    """Paints value where mask (and the clip mask); returns what it painted."""
    if clip is not None:
      allowed = self.masks.get(clip)
      if allowed is None:  # e.g. lung vessels in a slice without lungs
        return np.zeros_like(mask)
      mask = mask & allowed[rows, cols]
    target = self.image[rows, cols]  # a view: writes land in the image
    if isinstance(value, np.ndarray) and value.ndim:
      np.copyto(target, value, where=mask)
    else:
      target[mask] = value
    if store:
      self.store(store, rows, cols, mask)
    return mask

  def store(self, name, rows, cols, mask):
    if name not in self.masks:
      self.masks[name] = np.zeros(self.image.shape, bool)
    self.masks[name][rows, cols] |= mask


# ----------------------------------------------------------------------------
# Random scenes.


class _Draw:
  """One slice's random draws and the painting operations built from them.

  Holds the slice's shared geometry (body outline, its scale, the wall depth,
  the spine) so the anatomy builders below can place organs relative to it.
  """

  def __init__(self, rng, contrast="ct"):
    self.rng = rng
    self.tissues = TISSUES if contrast == "ct" else MR_TISSUES[contrast]
    self.window = rng.uniform()  # overall contrast: where tissues sit in range
    self.ops = []

  def uniform(self, low, high):
    return float(self.rng.uniform(low, high))

  def chance(self, probability):
    return self.rng.uniform() < probability

  def sign(self):
    return 1.0 if self.rng.uniform() < 0.5 else -1.0

  def level(self, tissue, field=None, amp=0.0):
    """(level, field, amplitude): the window place plus a tissue jitter."""
    low, high = self.tissues[tissue]
    place = np.clip(self.window + self.rng.normal(0.0, 0.25), 0.0, 1.0)
    return (float(low + (high - low) * place), field, float(amp))

  def harmonics(self, amplitudes):
    """(alpha_k, beta_k) for k = 1.., magnitudes up to amplitudes[k-1]."""
    mags = self.rng.uniform(0.0, 1.0, len(amplitudes)) * np.asarray(amplitudes)
    phases = self.rng.uniform(0.0, 2 * np.pi, len(amplitudes))
    return list(zip(mags * np.cos(phases), mags * np.sin(phases)))

  def in_blob(self, blob, fraction=0.8):
    """A random point well inside a blob's base ellipse."""
    r = fraction * np.sqrt(self.rng.uniform())
    t = self.rng.uniform(0.0, 2 * np.pi)
    ca, sa = np.cos(blob.angle), np.sin(blob.angle)
    p, q = blob.axes[0] * r * np.cos(t), blob.axes[1] * r * np.sin(t)
    return (blob.centre[0] + ca * p - sa * q, blob.centre[1] + sa * p + ca * q)

  def fill(self, shape, value, clip, **kwargs):
    self.ops.append(_Fill(shape, value, clip, **kwargs))

  def layers(self, blob, layers, core, clip, **kwargs):
    self.ops.append(_Layers(blob, layers, core, clip, **kwargs))

  def ring(self, blob, thickness, shell, core, clip, **kwargs):
    """A blob with a shell of `thickness` (bone cortex, organ capsule)."""
    self.layers(blob, [dict(t=thickness, value=shell)], core, clip, **kwargs)


def _waves(rng):
  """Per field, (K, 4) rows kx, ky, phase, amplitude, unit variance."""
  out = []
  for _, shortest, longest in FIELDS:
    wavelength = np.exp(rng.uniform(np.log(shortest), np.log(longest),
                                    _WAVES))
    direction = rng.uniform(0.0, 2 * np.pi, _WAVES)
    k = 2 * np.pi / wavelength
    amp = rng.uniform(0.5, 1.0, _WAVES) * np.sqrt(wavelength)
    amp /= np.sqrt(0.5 * np.sum(amp**2))  # each wave has variance a^2 / 2
    out.append(np.stack([k * np.cos(direction), k * np.sin(direction),
                         rng.uniform(0.0, 2 * np.pi, _WAVES), amp], axis=1))
  return np.stack(out)


def _outline(d, kind):
  """Body (or head) outline blob in the local frame and its bound radius."""
  size = d.uniform(0.6, 0.95)  # largest radius, in half-widths
  if kind == "head":  # axial heads are longer front to back
    aspect = 1.0 / d.uniform(1.05, 1.3)
    harmonics = d.harmonics([0.04, 0.04, 0.02])
  else:
    aspect = d.uniform(1.1, 1.6)
    harmonics = d.harmonics([0.05, 0.08, 0.05, 0.03])
  extra = sum(np.hypot(a, b) for a, b in harmonics)
  longest = size / (1.0 + extra)  # so that _Blob.bound() is `size`
  axes = ((longest, longest / aspect) if aspect >= 1 else
          (longest * aspect, longest))
  return _Blob((0.0, 0.0), axes, 0.0, harmonics), size


def _pose(d, size):
  """Centre, rotation and mirroring; the bound disc stays inside RADIUS."""
  offset = (RADIUS - size) * np.sqrt(d.rng.uniform())
  direction = d.uniform(0.0, 2 * np.pi)
  centre = (offset * np.cos(direction), offset * np.sin(direction))
  # Scanners put patients upright; some data sets do not.
  angle = (d.uniform(-0.3, 0.3) if d.chance(0.8) else d.uniform(-np.pi, np.pi))
  return centre, angle, d.sign()


def _trunk(d, kind):
  """Skin, subcutaneous fat of varying thickness, muscle, and the inside."""
  s = d.scale
  skin = s * d.uniform(0.012, 0.025)
  fat = s * np.exp(d.uniform(np.log(0.02), np.log(0.2)))  # thin to obese
  muscle = s * d.uniform(0.03, 0.09)
  layers = [
      dict(t=skin, value=d.level("skin")),
      dict(t=fat, mod=d.harmonics([0.5, 0.4]),
           value=d.level("fat", "mid", d.uniform(0.003, 0.012))),
      dict(t=muscle, mod=d.harmonics([0.4, 0.4, 0.3]),
           value=d.level("muscle", "mid", d.uniform(0.005, 0.015)),
           store_in="deep"),
  ]
  core = (d.level("mediastinum", "low", 0.01) if kind == "thorax" else
          d.level("visceral_fat", "mid", d.uniform(0.005, 0.015)))
  d.layers(d.body, layers, core, None, store="body", core_store="interior")
  d.wall = skin + fat + muscle  # mean depth of the inside
  d.ai, d.bi = d.body.axes[0] - d.wall, d.body.axes[1] - d.wall


def _spine(d, thorax):
  """Paraspinal muscles, vertebral body, arch and processes near the back."""
  a, b = d.body.axes
  back = d.body.boundary(-np.pi / 2)[0][1]  # the back skin, at v < 0
  r = a * (d.uniform(0.08, 0.11) if thorax else d.uniform(0.1, 0.14))
  # The spine sits closer to the back in the chest than in the abdomen.
  vc = back + 2 * b * (d.uniform(0.18, 0.26) if thorax else
                       d.uniform(0.24, 0.34))
  body = _Blob((0.0, vc), (r * d.uniform(1.0, 1.25), r * d.uniform(0.8, 1.0)),
               d.uniform(-0.1, 0.1), d.harmonics([0.0, 0.05, 0.04]))
  canal_r = r * d.uniform(0.4, 0.6)
  arch = r * d.uniform(0.2, 0.35)
  canal_v = vc - body.axes[1] - canal_r * d.uniform(0.9, 1.2)
  muscle = d.level("muscle", "mid", d.uniform(0.005, 0.015))
  for side in (-1, 1):
    d.fill(_Blob((side * r * d.uniform(1.3, 1.9),
                  canal_v - r * d.uniform(0.5, 1.0)),
                 (r * d.uniform(1.0, 1.6), r * d.uniform(1.0, 1.5)),
                 d.uniform(-0.4, 0.4), d.harmonics([0.0, 0.1, 0.05])),
           muscle, "deep")
  bone = d.level("bone")
  d.ring(body, r * d.uniform(0.12, 0.22), bone,
         d.level("marrow", "mid", d.uniform(0.01, 0.03)), "deep")
  d.ring(_Blob((0.0, canal_v), (canal_r + arch,) * 2), arch, bone,
         d.level("soft"), "deep")
  tip = canal_v - canal_r - r * d.uniform(0.6, 1.3)
  d.fill(_Capsule((0.0, canal_v - canal_r), (r * d.uniform(-0.15, 0.15), tip),
                  r * d.uniform(0.15, 0.25)), bone, "deep")
  if d.chance(0.7):  # transverse processes are not in every slice
    for side in (-1, 1):
      end = (side * (canal_r + r * d.uniform(0.5, 1.2)),
             canal_v + r * d.uniform(-0.5, 0.2))
      d.fill(_Capsule((side * canal_r, canal_v), end,
                      r * d.uniform(0.15, 0.25)), bone, "deep")
  d.vc, d.vertebra = vc, body.axes


def _vessel(d, centre, radius, clip="interior"):
  value = d.level("enhanced") if d.enhanced else d.level("blood")
  d.fill(_Blob(centre, (radius, radius * d.uniform(0.8, 1.0)),
               d.uniform(0, np.pi)), value, clip)


def _thorax(d):
  ai, bi, s = d.ai, d.bi, d.scale
  lungs = []
  for side in (-1, 1):
    lung = _Blob((side * ai * d.uniform(0.4, 0.55), bi * d.uniform(-0.1, 0.1)),
                 (ai * d.uniform(0.38, 0.55), bi * d.uniform(0.7, 0.95)),
                 side * d.uniform(-0.2, 0.2),
                 d.harmonics([0.0, 0.08, 0.06, 0.04]))
    lungs.append(lung)
    # Clipped to the inside, the lungs' outer edges follow the chest wall.
    d.fill(lung, d.level("lung", "low", d.uniform(0.005, 0.015)),
           "interior", store="lung")
  for _ in range(d.rng.integers(4, 21)):  # vessels seen end-on in the lungs
    radius = s * d.uniform(0.005, 0.02)
    d.fill(_Blob(d.in_blob(lungs[d.rng.integers(2)]), (radius, radius)),
           d.level("soft"), "lung")
  _spine(d, thorax=True)
  (vertebra_a, vertebra_b), vc = d.vertebra, d.vc
  if d.chance(0.75):  # heart level; painted over the lungs' inner edges
    heart = _Blob((ai * d.uniform(-0.05, 0.25), bi * d.uniform(0.0, 0.3)),
                  (ai * d.uniform(0.28, 0.42), bi * d.uniform(0.35, 0.55)),
                  d.uniform(-0.7, -0.1), d.harmonics([0.03, 0.08, 0.05]))
    epicardial_fat = dict(t=s * d.uniform(0.005, 0.03),
                          mod=d.harmonics([0.6, 0.5]), value=d.level("fat"))
    d.layers(heart, [epicardial_fat],
             d.level("blood", "low", d.uniform(0.005, 0.015)), "interior",
             core_store="heart")
    if d.enhanced:  # contrast-filled chambers inside the myocardium
      d.fill(_Blob(d.in_blob(heart, 0.3),
                   (heart.axes[0] * d.uniform(0.3, 0.55),
                    heart.axes[1] * d.uniform(0.3, 0.55)),
                   d.uniform(0, np.pi)), d.level("enhanced"), "heart")
  else:  # upper chest: an air-filled trachea instead
    radius = s * d.uniform(0.04, 0.07)
    trachea = _Blob((ai * d.uniform(-0.05, 0.05),
                     vc + vertebra_b + radius * d.uniform(1.1, 1.8)),
                    (radius, radius * d.uniform(0.8, 1.0)))
    d.ring(trachea, radius * 0.2, d.level("soft"), d.level("gas"), "interior")
  aorta = s * d.uniform(0.035, 0.06)
  _vessel(d, (vertebra_a * d.uniform(0.6, 1.4),
              vc + vertebra_b * d.uniform(0.3, 1.2)), aorta)
  if d.chance(0.5):  # ascending aorta in front of the heart
    _vessel(d, (ai * d.uniform(-0.15, 0.05), bi * d.uniform(0.35, 0.6)),
            aorta * d.uniform(0.9, 1.3))
  _ribs(d)


def _ribs(d):
  """Ribs (small oval bone rings) just inside the muscle wall, a sternum and
  sometimes scapulae within the back muscles."""
  s, bone, marrow = d.scale, d.level("bone"), d.level("marrow")
  for _ in range(d.rng.integers(4, 11)):
    t = d.uniform(-np.pi, np.pi)
    if abs(t - np.pi / 2) < 0.3 or abs(t + np.pi / 2) < 0.45:
      continue  # the sternum and the spine are drawn on their own
    length, thickness = s * d.uniform(0.03, 0.07), s * d.uniform(0.015, 0.03)
    point, normal = d.body.boundary(t)
    centre = point - normal * (d.wall + thickness * d.uniform(0.3, 1.0))
    along = np.arctan2(normal[0], -normal[1]) + d.uniform(-0.3, 0.3)
    d.ring(_Blob(centre, (length, thickness), along),
           thickness * d.uniform(0.3, 0.5), bone, marrow, "body")
  if d.chance(0.7):
    point, normal = d.body.boundary(np.pi / 2)
    thickness = s * d.uniform(0.015, 0.03)
    centre = point - normal * (d.wall * d.uniform(0.7, 1.0) + thickness)
    d.ring(_Blob(centre, (s * d.uniform(0.04, 0.07), thickness)),
           thickness * 0.4, bone, marrow, "body")
  if d.chance(0.4):
    for side in (-1, 1):
      point, normal = d.body.boundary(-np.pi / 2 + side * d.uniform(0.5, 0.9))
      centre = point - normal * d.wall * d.uniform(0.4, 0.7)
      half = s * d.uniform(0.06, 0.14) * np.array([-normal[1], normal[0]])
      d.fill(_Capsule(centre - half, centre + half,
                      s * d.uniform(0.008, 0.015)), bone, "deep")


def _abdomen(d):
  ai, bi, s = d.ai, d.bi, d.scale
  gas = d.level("gas")
  for _ in range(d.rng.integers(3, 13)):  # bowel loops fill the visceral fat
    radius = ai * d.uniform(0.05, 0.15)
    loop = _Blob((ai * d.uniform(-0.8, 0.8), bi * d.uniform(-0.3, 0.85)),
                 (radius, radius * d.uniform(0.6, 1.0)), d.uniform(0, np.pi),
                 d.harmonics([0.0, 0.12, 0.06]))
    content = (gas, d.level("fluid"), d.level("soft", "mid", 0.01))
    d.ring(loop, radius * d.uniform(0.15, 0.3), d.level("soft"),
           content[d.rng.choice(3, p=[0.35, 0.35, 0.3])], "interior")
  _spine(d, thorax=False)
  (vertebra_a, vertebra_b), vc = d.vertebra, d.vc
  for side in (-1, 1):  # psoas muscles beside the vertebral body
    if d.chance(0.7):
      d.fill(_Blob((side * vertebra_a * d.uniform(1.3, 1.8),
                    vc + vertebra_b * d.uniform(-0.2, 0.6)),
                   (vertebra_a * d.uniform(0.5, 0.9),
                    vertebra_b * d.uniform(0.7, 1.2)), d.uniform(-0.5, 0.5)),
             d.level("muscle"), "interior")
  names = sorted(_ORGANS)
  for name in d.rng.choice(names, size=d.rng.integers(1, 6), replace=False):
    _ORGANS[name](d)
  _vessel(d, (vertebra_a * d.uniform(0.0, 0.8),  # aorta
              vc + vertebra_b + s * d.uniform(0.05, 0.08)),
          s * d.uniform(0.03, 0.05))
  if d.chance(0.7):  # inferior vena cava: flatter, on the other side
    radius = s * d.uniform(0.03, 0.05)
    d.fill(_Blob((-vertebra_a * d.uniform(0.8, 1.6),
                  vc + vertebra_b + radius * d.uniform(0.8, 1.5)),
                 (radius, radius * d.uniform(0.5, 0.8)), d.uniform(-0.4, 0.4)),
           d.level("enhanced") if d.enhanced else d.level("blood"),
           "interior")
  for _ in range(d.rng.integers(0, 5)):  # small vessels
    _vessel(d, (ai * d.uniform(-0.6, 0.6), bi * d.uniform(-0.2, 0.7)),
            s * d.uniform(0.008, 0.02))
  for _ in range(d.rng.integers(0, 3)):  # pelvis / limb bones
    radius = s * d.uniform(0.05, 0.12)
    bone = _Blob((d.sign() * ai * d.uniform(0.45, 0.75),
                  bi * d.uniform(-0.5, 0.3)),
                 (radius, radius * d.uniform(0.5, 1.0)), d.uniform(0, np.pi),
                 d.harmonics([0.0, 0.1, 0.05]))
    d.ring(bone, radius * d.uniform(0.15, 0.3), d.level("bone"),
           d.level("marrow"), "interior")


def _organ(d, tissue):
  return d.level(tissue, "low", d.uniform(0.008, 0.025))


def _liver(d):
  ai, bi = d.ai, d.bi
  liver = _Blob((-ai * d.uniform(0.3, 0.5), bi * d.uniform(-0.1, 0.2)),
                (ai * d.uniform(0.35, 0.6), bi * d.uniform(0.5, 0.85)),
                d.uniform(-0.3, 0.3), d.harmonics([0.08, 0.15, 0.08, 0.05]))
  d.fill(liver, _organ(d, "liver"), "interior", store="liver")
  for _ in range(d.rng.integers(0, 6)):  # hepatic vessels: brighter or darker
    radius = ai * d.uniform(0.01, 0.03)
    d.fill(_Blob(d.in_blob(liver, 0.7), (radius, radius)),
           d.level("enhanced") if d.enhanced else d.level("fluid"), "liver")


def _spleen(d):
  ai, bi = d.ai, d.bi
  d.fill(_Blob((ai * d.uniform(0.45, 0.65), -bi * d.uniform(0.1, 0.45)),
               (ai * d.uniform(0.12, 0.25), bi * d.uniform(0.2, 0.4)),
               d.uniform(0.3, 1.0), d.harmonics([0.0, 0.1, 0.06])),
         _organ(d, "organ"), "interior")


def _kidneys(d):
  ai, bi = d.ai, d.bi
  # With contrast (corticomedullary phase) the cortex is bright.
  cortex = d.level("enhanced") if d.enhanced else d.level("kidney")
  medulla, sinus = d.level("organ"), d.level("visceral_fat")
  for side in (-1, 1):
    if d.chance(0.2):
      continue  # this kidney is above or below the slice
    kidney = _Blob((side * (d.vertebra[0] + ai * d.uniform(0.15, 0.3)),
                    d.vc + bi * d.uniform(-0.1, 0.2)),
                   (ai * d.uniform(0.08, 0.13), bi * d.uniform(0.12, 0.22)),
                   side * d.uniform(0.2, 0.6), d.harmonics([0.05, 0.06]))
    d.ring(kidney, min(kidney.axes) * d.uniform(0.25, 0.4), cortex, medulla,
           "interior", core_store="renal")
    if d.chance(0.6):  # renal sinus fat at the hilum
      d.fill(_Blob(kidney.centre, (kidney.axes[0] * 0.35,
                                   kidney.axes[1] * 0.45), kidney.angle),
             sinus, "renal")


def _stomach(d):
  ai, bi = d.ai, d.bi
  stomach = _Blob((ai * d.uniform(0.1, 0.45), bi * d.uniform(0.2, 0.55)),
                  (ai * d.uniform(0.15, 0.3), bi * d.uniform(0.12, 0.25)),
                  d.uniform(0, np.pi), d.harmonics([0.05, 0.1, 0.05]))
  d.ring(stomach, min(stomach.axes) * d.uniform(0.1, 0.2), d.level("soft"),
         d.level("fluid"), "interior", core_store="lumen")
  if d.chance(0.6):  # gas above an air-fluid level
    level = stomach.centre[1] + stomach.axes[1] * d.uniform(-0.3, 0.5)
    d.fill(stomach, d.level("gas"), "lumen", above=level)


def _bladder(d):
  ai, bi = d.ai, d.bi
  bladder = _Blob((ai * d.uniform(-0.1, 0.1), bi * d.uniform(0.2, 0.5)),
                  (ai * d.uniform(0.15, 0.3), bi * d.uniform(0.15, 0.3)),
                  d.uniform(-0.3, 0.3), d.harmonics([0.03, 0.06]))
  d.ring(bladder, min(bladder.axes) * 0.08, d.level("soft"), d.level("fluid"),
         "interior")


def _organ_blob(d):
  ai, bi = d.ai, d.bi
  d.fill(_Blob((ai * d.uniform(-0.6, 0.6), bi * d.uniform(-0.3, 0.6)),
               (ai * d.uniform(0.1, 0.3), bi * d.uniform(0.1, 0.3)),
               d.uniform(0, np.pi), d.harmonics([0.05, 0.12, 0.06])),
         _organ(d, "organ"), "interior")


# An abdomen draws 1-5 of these, without repetition.
_ORGANS = {"liver": _liver, "spleen": _spleen, "kidneys": _kidneys,
           "stomach": _stomach, "bladder": _bladder, "blob1": _organ_blob,
           "blob2": _organ_blob}


def _head(d):
  """Skin, scalp, skull, CSF, folded cortex, white matter and ventricles."""
  s, (a, b) = d.scale, d.body.axes
  skull_t = s * d.uniform(0.035, 0.08)
  mod = d.harmonics([0.3, 0.25])  # thicker at the front / back
  bone = d.level("bone")
  if d.chance(0.6):  # outer table, less dense diploe, inner table
    part = d.uniform(0.25, 0.4)
    skull = [dict(t=skull_t * part, mod=mod, value=bone, store="skull"),
             dict(t=skull_t * (1 - 2 * part), mod=mod,
                  value=d.level("diploe", "mid", 0.02), store="skull"),
             dict(t=skull_t * part, mod=mod, value=bone, store="skull")]
  else:
    skull = [dict(t=skull_t, mod=mod, value=bone, store="skull")]
  scalp = s * d.uniform(0.015, 0.045)
  csf_t = s * d.uniform(0.006, 0.02)
  grey = d.level("grey", "mid", d.uniform(0.003, 0.008))
  white = d.level("white", "low", d.uniform(0.003, 0.008))
  # CT shows grey matter a little brighter than white; keep that visible.
  white = (min(white[0], grey[0] - d.uniform(0.04, 0.1)),) + white[1:]
  layers = ([dict(t=s * d.uniform(0.01, 0.02), value=d.level("skin")),
             dict(t=scalp, mod=d.harmonics([0.4, 0.3]),
                  value=d.level("scalp", "mid", 0.01))] + skull +
            [dict(t=csf_t, value=d.level("csf"), store_in="cranium"),
             # The gyri field folds the grey / white boundary.
             dict(t=s * d.uniform(0.05, 0.09), field="gyri",
                  famp=s * d.uniform(0.025, 0.045), value=grey,
                  store="cortex")])
  d.layers(d.body, layers, white, None, store="body")
  csf = d.level("csf")
  d.ops.append(_Ridge(d.body, "sulci", d.uniform(0.12, 0.25), csf, "cortex"))
  if d.chance(0.5):  # deep grey nuclei around the ventricles
    for side in (-1, 1):
      d.fill(_Blob((side * a * d.uniform(0.12, 0.2),
                    b * d.uniform(-0.15, 0.15)),
                   (s * d.uniform(0.05, 0.1), s * d.uniform(0.06, 0.12)),
                   d.uniform(-0.5, 0.5), d.harmonics([0.0, 0.1])),
             (grey[0] - 0.01, None, 0.0), "cranium")
  # Midline fissure at the front and at the back, sometimes with a falx.
  inner = b - (scalp + skull_t + csf_t)
  for start, end in ((inner, b * d.uniform(0.1, 0.3)),
                     (-inner, -b * d.uniform(0.2, 0.4))):
    d.fill(_Capsule((0.0, start), (0.0, end), s * d.uniform(0.008, 0.014)),
           csf, "cranium")
    if d.chance(0.5):
      d.fill(_Capsule((0.0, start), (0.0, end), s * 0.005), d.level("blood"),
             "cranium")
  if d.chance(0.85):  # lateral ventricles, frontal horns diverging
    v0 = b * d.uniform(-0.1, 0.1)
    for side in (-1, 1):
      d.fill(_Blob((side * a * d.uniform(0.04, 0.1), v0),
                   (s * d.uniform(0.015, 0.06), s * d.uniform(0.06, 0.22)),
                   side * d.uniform(-0.35, 0.05),
                   d.harmonics([0.0, 0.15, 0.1])), csf, "cranium")
  for _ in range(d.rng.integers(0, 3)):  # calcifications (pineal, choroid)
    radius = s * d.uniform(0.006, 0.015)
    d.fill(_Blob((a * d.uniform(-0.15, 0.15), b * d.uniform(-0.3, 0.1)),
                 (radius, radius)), d.level("calcification"), "cranium")
  if d.chance(0.3):  # air in a frontal sinus or a mastoid, inside the bone
    t = (np.pi / 2 + d.uniform(-0.3, 0.3) if d.chance(0.6) else
         -np.pi / 2 + d.sign() * d.uniform(0.8, 1.3))
    point, normal = d.body.boundary(t)
    d.fill(_Blob(point - normal * (scalp + skull_t * 0.5),
                 (s * d.uniform(0.03, 0.07), skull_t * 0.6),
                 np.arctan2(normal[0], -normal[1])), d.level("gas"), "skull")


def slice_kind(index, split="train", seed=0):
  """'head', 'thorax' or 'abdomen': the first draw of the slice's stream."""
  return KINDS[_rng(index, split, seed).choice(len(KINDS), p=KIND_PROBS)]


def _scene(index, split, seed, contrast):
  """Pose, texture waves and painting operations of one slice."""
  rng = _rng(index, split, seed)
  kind = KINDS[rng.choice(len(KINDS), p=KIND_PROBS)]  # as slice_kind
  d = _Draw(rng, contrast)
  d.body, size = _outline(d, kind)
  d.scale = 0.5 * sum(d.body.axes)
  pose = _pose(d, size)
  waves = _waves(rng)
  if kind == "head":
    _head(d)
  else:
    _trunk(d, kind)
    d.enhanced = d.chance(0.4)  # intravenous contrast
    (_thorax if kind == "thorax" else _abdomen)(d)
  return pose, waves, d.ops


def render_slice(index, split="train", resolution=64, seed=0, supersample=2,
                 mr_fraction=0.0):
  """Slice `index` of `split` as float32 (H, W) in [0, 1].

  Args:
    index: non-negative slice index.
    split: 'train', 'validation' or 'test' (independent streams).
    resolution: int N for N x N, or (H, W).
    seed: non-negative dataset seed.
    supersample: point samples per pixel side, averaged (anti-aliasing).
    mr_fraction: probability of MR-like (T1 / T2) levels instead of CT ones.
  """
  _check_request(index, seed, supersample)
  height, width = _resolution(resolution)
  contrast = slice_contrast(int(index), split, int(seed), mr_fraction)
  pose, waves, ops = _scene(int(index), split, int(seed), contrast)
  canvas = _Canvas(height, width, int(supersample), pose, waves)
  for op in ops:
    op.paint(canvas)
  s = int(supersample)
  image = canvas.image.reshape(height, s, width, s).mean(axis=(1, 3))
  return np.clip(image, 0.0, 1.0).astype(np.float32)


def slice_arrays(split, num, resolution, seed=0, supersample=2, mr_fraction=0.0):
  """Slices 0..num-1 of a split: {'image': (num, H, W) float32}."""
  _split_id(split)
  height, width = _resolution(resolution)
  images = np.empty((num, height, width), np.float32)
  for i in range(num):
    images[i] = render_slice(i, split, (height, width), seed, supersample,
                             mr_fraction)
  return {"image": images}
