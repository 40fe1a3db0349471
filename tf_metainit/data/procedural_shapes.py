"""Procedural stand-in for the ShapeNet view-synthesis data (no download).

Chairs, cars and lamps are unions of boxes, capped frustums (cylinders are
frustums with equal radii) and spheres with random proportions and colours.
Each object is ray traced exactly in numpy with Lambertian shading under
lights fixed in the world (so colour does not depend on the view, like the
paper's NeRF without view directions) and written in the reference's format
(`transforms.json` + RGBA PNGs + `<category>_splits.json`), so the same reader
(`tf_metainit.data.shapenet`) serves both.

Conventions: canonical object frame, z up, bounding box centred at the origin
with its largest side 2 * HALF_EXTENT; cameras at radius 4.031 on the upper
hemisphere looking at the origin, camera_angle_x of NeRF-synthetic (focal
177.78 px at 128 px), rays exactly as `tf_metainit.physics.rays.camera_rays`
(integer pixel coordinates, y up, looking along -z, unnormalised directions).
"""

import dataclasses
import json
import os
import shutil

import numpy as np
from PIL import Image

from tf_metainit import files

CATEGORIES = ('chairs', 'cars', 'lamps')
SPLITS = ('train', 'val', 'test')
CAMERA_ANGLE_X = 0.6911112070083618
CAMERA_RADIUS = 4.031
HALF_EXTENT = 0.75
MAX_SIN_ELEVATION = 0.9
AMBIENT = 0.35
KEY_LIGHT = (0.55, np.array([0.4, -0.3, 0.87]))
FILL_LIGHT = (0.2, np.array([-0.5, 0.6, 0.2]))
_EPS = 1e-9


# ----------------------------------------------------------------------------
# Primitives: each intersects (R, 3) rays and returns t (inf on a miss) and
# unit normals; `scaled` applies p -> (p + shift) * scale for normalisation.


def slabs(lo, hi, origins, directions):
  """Entry and exit parameters of (R, 3) rays through the box [lo, hi], and the entry
  face's unit normals; entry is negative for an origin inside the box.

  The slab test, one axis at a time (column-wise is faster than (R, 3) ops).
  """
  near = np.full(len(origins), -np.inf)
  far = np.full(len(origins), np.inf)
  axis = np.zeros(len(origins), dtype=int)
  for k in range(3):
    d = directions[:, k]
    d = np.where(np.abs(d) < _EPS, _EPS, d)
    t0 = (lo[k] - origins[:, k]) / d
    t1 = (hi[k] - origins[:, k]) / d
    enter = np.minimum(t0, t1)
    later = enter > near
    axis = np.where(later, k, axis)
    near = np.where(later, enter, near)
    far = np.minimum(far, np.maximum(t0, t1))
  normals = np.zeros_like(origins)
  rows = np.arange(len(origins))
  normals[rows, axis] = -np.sign(directions[rows, axis])
  return near, far, normals


@dataclasses.dataclass
class Box:
  """Axis-aligned box [lo, hi]."""
  lo: np.ndarray
  hi: np.ndarray
  colour: np.ndarray

  def bounds(self):
    return np.asarray(self.lo), np.asarray(self.hi)

  def scaled(self, shift, scale):
    return Box((self.lo + shift) * scale, (self.hi + shift) * scale,
               self.colour)

  def intersect(self, origins, directions):
    near, far, normals = slabs(self.lo, self.hi, origins, directions)
    hit = (near <= far) & (near > _EPS)
    return np.where(hit, near, np.inf), normals


@dataclasses.dataclass
class Frustum:
  """Capped frustum along coordinate `axis`; radius r0 at lo, r1 at hi."""
  axis: int
  centre: np.ndarray  # a point on the axis; its `axis` coordinate is unused
  lo: float
  hi: float
  r0: float
  r1: float
  colour: np.ndarray

  def _perm(self):
    # Coordinates (u, v, w) with w along the axis.
    return [(self.axis + 1) % 3, (self.axis + 2) % 3, self.axis]

  def bounds(self):
    radius = max(self.r0, self.r1)
    lo = np.asarray(self.centre, float) - radius
    hi = np.asarray(self.centre, float) + radius
    lo[self.axis], hi[self.axis] = self.lo, self.hi
    return lo, hi

  def scaled(self, shift, scale):
    return Frustum(self.axis, (self.centre + shift) * scale,
                   (self.lo + shift[self.axis]) * scale,
                   (self.hi + shift[self.axis]) * scale,
                   self.r0 * scale, self.r1 * scale, self.colour)

  def intersect(self, origins, directions):
    perm = self._perm()
    o, d = origins[:, perm], directions[:, perm]
    cu, cv = np.asarray(self.centre)[perm[:2]]
    px, py, pz = o[:, 0] - cu, o[:, 1] - cv, o[:, 2] - self.lo
    du, dv, dw = d[:, 0], d[:, 1], d[:, 2]
    slope = (self.r1 - self.r0) / (self.hi - self.lo)
    radius_at_o = self.r0 + slope * pz
    # Side: (pu + t du)^2 + (pv + t dv)^2 = (r0 + slope (pz + t dw))^2.
    a = du**2 + dv**2 - (slope * dw)**2
    a = np.where(np.abs(a) < _EPS, _EPS, a)
    b = 2 * (px * du + py * dv - slope * dw * radius_at_o)
    c = px**2 + py**2 - radius_at_o**2
    disc = b**2 - 4 * a * c
    root = np.sqrt(np.maximum(disc, 0))
    best = np.full(len(o), np.inf)
    for t in ((-b - root) / (2 * a), (-b + root) / (2 * a)):
      w = pz + t * dw
      ok = (disc >= 0) & (t > _EPS) & (w >= 0) & (w <= self.hi - self.lo)
      best = np.where(ok & (t < best), t, best)
    # Caps: planes w = lo (radius r0) and w = hi (radius r1).
    safe_dw = np.where(np.abs(dw) < _EPS, _EPS, dw)
    cap_normal = np.zeros(len(o))
    for plane, radius, sign in ((0.0, self.r0, -1.0),
                                (self.hi - self.lo, self.r1, 1.0)):
      t = (plane - pz) / safe_dw
      ok = ((t > _EPS) & ((px + t * du)**2 + (py + t * dv)**2 <= radius**2)
            & (t < best))
      best = np.where(ok, t, best)
      cap_normal = np.where(ok, sign, cap_normal)
    on_side = np.isfinite(best) & (cap_normal == 0)
    t_hit = np.where(np.isfinite(best), best, 0.0)
    qu, qv = px + t_hit * du, py + t_hit * dv
    radius_hit = radius_at_o + slope * t_hit * dw
    normal_p = np.stack([np.where(on_side, qu, 0.0),
                         np.where(on_side, qv, 0.0),
                         np.where(on_side, -slope * radius_hit, cap_normal)],
                        axis=-1)
    normal_p /= np.maximum(np.linalg.norm(normal_p, axis=-1, keepdims=True),
                           _EPS)
    normals = np.empty_like(normal_p)
    normals[:, perm] = normal_p
    return best, normals


@dataclasses.dataclass
class Sphere:
  centre: np.ndarray
  radius: float
  colour: np.ndarray

  def bounds(self):
    return self.centre - self.radius, self.centre + self.radius

  def scaled(self, shift, scale):
    return Sphere((self.centre + shift) * scale, self.radius * scale,
                  self.colour)

  def intersect(self, origins, directions):
    p = origins - self.centre
    a = np.sum(directions**2, axis=-1)
    b = 2 * np.sum(p * directions, axis=-1)
    c = np.sum(p**2, axis=-1) - self.radius**2
    disc = b**2 - 4 * a * c
    root = np.sqrt(np.maximum(disc, 0))
    t_near, t_far = (-b - root) / (2 * a), (-b + root) / (2 * a)
    t = np.where(t_near > _EPS, t_near, t_far)
    t = np.where((disc >= 0) & (t > _EPS), t, np.inf)
    hit_point = origins + np.where(np.isfinite(t), t, 0)[:, None] * directions
    return t, (hit_point - self.centre) / self.radius


# ----------------------------------------------------------------------------
# Object families, built in loose units then normalised.


def _colour(rng, low=0.1, high=0.95):
  return rng.uniform(low, high, size=3)


def _leg(rng_round, x, y, size, height, colour):
  if rng_round:
    return Frustum(2, np.array([x, y, 0.0]), 0.0, height, size / 2, size / 2,
                   colour)
  return Box(np.array([x - size / 2, y - size / 2, 0.0]),
             np.array([x + size / 2, y + size / 2, height]), colour)


def _chair(rng):
  """Seat box, back box and four box or cylinder legs."""
  width, depth = rng.uniform(0.8, 1.2), rng.uniform(0.8, 1.2)
  seat_top, thick = rng.uniform(0.7, 1.1), rng.uniform(0.06, 0.15)
  back_height, back_thick = rng.uniform(0.6, 1.3), rng.uniform(0.05, 0.15)
  leg, inset = rng.uniform(0.05, 0.12), rng.uniform(0.0, 0.1)
  round_legs = rng.random() < 0.5
  seat_colour = _colour(rng)
  leg_colour = seat_colour if rng.random() < 0.5 else _colour(rng, 0.05, 0.6)
  parts = [
      Box(np.array([-width / 2, -depth / 2, seat_top - thick]),
          np.array([width / 2, depth / 2, seat_top]), seat_colour),
      Box(np.array([-width / 2, depth / 2 - back_thick, seat_top]),
          np.array([width / 2, depth / 2, seat_top + back_height]),
          seat_colour),
  ]
  x, y = width / 2 - inset - leg / 2, depth / 2 - inset - leg / 2
  for sx in (-1, 1):
    for sy in (-1, 1):
      parts.append(_leg(round_legs, sx * x, sy * y, leg, seat_top - thick,
                        leg_colour))
  return parts


def _car(rng):
  """Body box, cabin box and four wheel cylinders along y."""
  length, width = rng.uniform(1.8, 2.4), rng.uniform(0.8, 1.0)
  wheel_radius, wheel_width = rng.uniform(0.16, 0.24), rng.uniform(0.12, 0.2)
  bottom = wheel_radius * rng.uniform(0.5, 0.9)
  top = bottom + rng.uniform(0.3, 0.45)
  cabin_length = length * rng.uniform(0.4, 0.65)
  cabin_x = length * rng.uniform(-0.15, 0.1)
  cabin_width = width * rng.uniform(0.75, 0.9)
  cabin_top = top + rng.uniform(0.25, 0.4)
  body_colour = _colour(rng)
  cabin_colour = body_colour * rng.uniform(0.3, 1.0)
  wheel_colour = np.full(3, rng.uniform(0.08, 0.25))
  parts = [
      Box(np.array([-length / 2, -width / 2, bottom]),
          np.array([length / 2, width / 2, top]), body_colour),
      Box(np.array([cabin_x - cabin_length / 2, -cabin_width / 2, top]),
          np.array([cabin_x + cabin_length / 2, cabin_width / 2, cabin_top]),
          cabin_colour),
  ]
  axle_x = length / 2 - rng.uniform(0.25, 0.4)
  for sx in (-1, 1):
    for sy in (-1, 1):
      # The wheel pokes out of the body by 40% of its width.
      inner = width / 2 - 0.6 * wheel_width
      lo, hi = (inner, inner + wheel_width) if sy > 0 else (
          -inner - wheel_width, -inner)
      parts.append(Frustum(1, np.array([sx * axle_x, 0.0, wheel_radius]), lo,
                           hi, wheel_radius, wheel_radius, wheel_colour))
  return parts


def _lamp(rng):
  """Base disc, pole cylinder and a frustum or sphere shade."""
  base_radius, base_height = rng.uniform(0.2, 0.35), rng.uniform(0.03, 0.1)
  pole_radius, pole_top = rng.uniform(0.02, 0.05), rng.uniform(0.9, 1.6)
  metal = _colour(rng, 0.05, 0.7)
  shade_colour = _colour(rng, 0.3, 1.0)
  centre = np.zeros(3)
  parts = [
      Frustum(2, centre, 0.0, base_height, base_radius,
              base_radius * rng.uniform(0.6, 1.0), metal),
      Frustum(2, centre, base_height, pole_top, pole_radius, pole_radius,
              metal),
  ]
  if rng.random() < 0.5:
    height = rng.uniform(0.2, 0.45)
    bottom = pole_top - height * rng.uniform(0.3, 0.7)
    r_bottom = rng.uniform(0.2, 0.4)
    parts.append(Frustum(2, centre, bottom, bottom + height, r_bottom,
                         r_bottom * rng.uniform(0.2, 0.8), shade_colour))
  else:
    parts.append(Sphere(np.array([0.0, 0.0, pole_top]),
                        rng.uniform(0.12, 0.3), shade_colour))
  return parts


_BUILDERS = {'chairs': _chair, 'cars': _car, 'lamps': _lamp}


def normalise(parts, half_extent=HALF_EXTENT):
  """Centres the bounding box at the origin, largest side 2 * half_extent."""
  lows, highs = zip(*(p.bounds() for p in parts))
  lo, hi = np.min(lows, axis=0), np.max(highs, axis=0)
  scale = 2 * half_extent / np.max(hi - lo)
  return [p.scaled(-(lo + hi) / 2, scale) for p in parts]


def object_rng(category, split, index, seed=0):
  """Independent stream per (category, split, index): disjoint splits."""
  if category not in CATEGORIES or split not in SPLITS:
    raise ValueError(f'unknown category {category!r} or split {split!r}; use '
                     f'one of {CATEGORIES} and {SPLITS}')
  key = (CATEGORIES.index(category), SPLITS.index(split), index)
  return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def make_object(category, rng):
  """Primitives of one random object of `category` in the canonical frame."""
  if category not in _BUILDERS:
    raise ValueError(f'unknown category {category!r}; use one of {CATEGORIES}')
  return normalise(_BUILDERS[category](rng))


# ----------------------------------------------------------------------------
# Cameras, rays, ray tracing.


def look_at(eye, target=(0.0, 0.0, 0.0), up=(0.0, 0.0, 1.0)):
  """OpenGL camera-to-world: the camera's -z axis points at `target`."""
  eye = np.asarray(eye, float)
  back = eye - np.asarray(target, float)
  back /= np.linalg.norm(back)
  right = np.cross(up, back)
  right /= np.linalg.norm(right)
  c2w = np.eye(4)
  c2w[:3, 0], c2w[:3, 1], c2w[:3, 2] = right, np.cross(back, right), back
  c2w[:3, 3] = eye
  return c2w


def sample_cameras(rng, num_views, radius=CAMERA_RADIUS,
                   max_sin_elevation=MAX_SIN_ELEVATION):
  """Random views on the upper hemisphere, area-uniform, facing the origin."""
  azimuth = rng.uniform(0, 2 * np.pi, num_views)
  height = rng.uniform(0, max_sin_elevation, num_views)
  ring = np.sqrt(1 - height**2)
  eyes = radius * np.stack([ring * np.cos(azimuth), ring * np.sin(azimuth),
                            height], axis=-1)
  return np.stack([look_at(e) for e in eyes])


def focal_length(width, camera_angle_x=CAMERA_ANGLE_X):
  return 0.5 * width / np.tan(0.5 * camera_angle_x)


def camera_rays_np(c2w, focal, height, width):
  """numpy twin of physics.rays.camera_rays for (V, 4, 4) poses."""
  i, j = np.meshgrid(np.arange(width, dtype=float),
                     np.arange(height, dtype=float), indexing='xy')
  dirs_cam = np.stack([(i - width / 2) / focal, -(j - height / 2) / focal,
                       -np.ones_like(i)], axis=-1)
  directions = (dirs_cam.reshape(-1, 3) @ np.swapaxes(c2w[:, :3, :3], 1, 2))
  directions = directions.reshape(len(c2w), height, width, 3)
  origins = np.broadcast_to(c2w[:, None, None, :3, 3], directions.shape)
  return origins, directions


def _bounding_sphere(parts):
  lows, highs = zip(*(p.bounds() for p in parts))
  lo, hi = np.min(lows, axis=0), np.max(highs, axis=0)
  return (lo + hi) / 2, np.linalg.norm(hi - lo) / 2


def intersect(parts, origins, directions):
  """Nearest hit of (R, 3) rays: t (inf on a miss), normals, albedo."""
  best_t = np.full(len(origins), np.inf)
  normals = np.zeros_like(origins)
  albedo = np.zeros_like(origins)
  # Most rays miss the object: trace only those meeting its bounding sphere.
  centre, radius = _bounding_sphere(parts)
  candidate = np.isfinite(
      Sphere(centre, radius * 1.01, None).intersect(origins, directions)[0])
  o, d = origins[candidate], directions[candidate]
  t_sub = np.full(len(o), np.inf)
  n_sub, a_sub = np.zeros_like(o), np.zeros_like(o)
  for part in parts:
    t, n = part.intersect(o, d)
    closer = t < t_sub
    t_sub = np.where(closer, t, t_sub)
    n_sub = np.where(closer[:, None], n, n_sub)
    a_sub = np.where(closer[:, None], part.colour, a_sub)
  best_t[candidate], normals[candidate], albedo[candidate] = t_sub, n_sub, a_sub
  return best_t, normals, albedo


def shade(normals, albedo, directions):
  """Two-sided Lambertian shading under the fixed world lights."""
  facing = np.sum(normals * directions, axis=-1, keepdims=True) > 0
  normals = np.where(facing, -normals, normals)
  light = np.full(normals.shape[:-1] + (1,), AMBIENT)
  for strength, direction in (KEY_LIGHT, FILL_LIGHT):
    direction = direction / np.linalg.norm(direction)
    light += strength * np.maximum(normals @ direction, 0)[..., None]
  return np.clip(albedo * light, 0, 1)


def render(parts, c2w, focal, height, width):
  """RGBA float images (V, H, W, 4); rgb is 0 where alpha is 0."""
  origins, directions = camera_rays_np(c2w, focal, height, width)
  shape = directions.shape
  o, d = origins.reshape(-1, 3), directions.reshape(-1, 3)
  t, normals, albedo = intersect(parts, o, d)
  hit = np.isfinite(t)[:, None]
  rgb = np.where(hit, shade(normals, albedo, d), 0.0)
  return np.concatenate([rgb, hit.astype(float)], axis=-1).reshape(
      shape[:-1] + (4,))


# ----------------------------------------------------------------------------
# Writing the reference format.


def object_id(split, index):
  return f'{split}_{index:04d}'


def generate_object(category, split, index, resolution=128, num_views=50,
                    seed=0):
  """dict(parts, c2w (V,4,4), rgba uint8 (V,H,W,4)) of one object."""
  rng = object_rng(category, split, index, seed)
  parts = make_object(category, rng)
  c2w = sample_cameras(rng, num_views)
  rgba = render(parts, c2w, focal_length(resolution), resolution, resolution)
  return {'parts': parts, 'c2w': c2w,
          'rgba': np.round(rgba * 255).astype(np.uint8)}


def _settings(resolution, num_views, seed):
  return {'resolution': resolution, 'num_views': num_views, 'seed': seed}


def _write_object(object_dir, c2w, rgba, settings):
  frames = []
  for k, image in enumerate(rgba):
    # NeRF-Blender style path: relative and without the extension.
    frames.append({'file_path': f'./r_{k}',
                   'transform_matrix': c2w[k].tolist()})
    Image.fromarray(image, 'RGBA').save(
        os.path.join(object_dir, f'r_{k}.png'), compress_level=1)
  meta = {'camera_angle_x': CAMERA_ANGLE_X, 'frames': frames,
          'procedural': settings}
  with open(os.path.join(object_dir, 'transforms.json'), 'w') as f:
    json.dump(meta, f)


def _check_existing(object_dir, settings):
  with open(os.path.join(object_dir, 'transforms.json')) as f:
    found = json.load(f).get('procedural')
  if found != settings:
    raise ValueError(
        f'{object_dir} was generated with {found}, not {settings}; write to '
        'another out_dir or delete the category folder to regenerate.')


def _remove_stale_temps(category_dir):
  """Deletes temporary object folders whose writer process has died."""
  for name in os.listdir(category_dir):
    if not name.startswith('.tmp_'):
      continue
    pid = name.rsplit('_', 1)[-1]
    if not pid.isdigit() or not files.pid_alive(int(pid)):
      shutil.rmtree(os.path.join(category_dir, name), ignore_errors=True)


def write_category(out_dir, category, num_train, num_val, num_test,
                   resolution=128, num_views=50, seed=0):
  """Writes `<out_dir>/<category>/` in the reference ShapeNet format.

  Idempotent: complete objects are kept (after checking they were made with
  the same settings); each object is written into a hidden temporary folder
  and renamed, so an interrupted run never leaves a half-written object. The
  splits file is written last.

  Returns:
    the category folder path.
  """
  object_rng(category, 'train', 0, seed)  # Fails early on a bad category.
  category_dir = os.path.join(out_dir, category)
  os.makedirs(category_dir, exist_ok=True)
  _remove_stale_temps(category_dir)
  settings = _settings(resolution, num_views, seed)
  splits = {}
  for split, count in zip(SPLITS, (num_train, num_val, num_test)):
    splits[split] = [object_id(split, k) for k in range(count)]
    for index in range(count):
      final = os.path.join(category_dir, object_id(split, index))
      if os.path.isdir(final):
        _check_existing(final, settings)
        continue
      tmp = os.path.join(category_dir,
                         f'.tmp_{object_id(split, index)}_{os.getpid()}')
      shutil.rmtree(tmp, ignore_errors=True)
      os.makedirs(tmp)
      obj = generate_object(category, split, index, resolution, num_views,
                            seed)
      _write_object(tmp, obj['c2w'], obj['rgba'], settings)
      try:
        os.rename(tmp, final)
      except OSError:
        # Another writer finished this object first; its copy is identical.
        shutil.rmtree(tmp, ignore_errors=True)
  files.write_json(os.path.join(category_dir, f'{category}_splits.json'), splits)
  return category_dir
