"""Procedural stand-in for a Phototourism landmark (no download).

One static fountain facade (Trevi-like: columns, arched niches, cornice,
attic, steps into a basin) on a paved square under a far sky backdrop,
photographed by several hundred tourists. Each photo has its own camera
(position on a frontal arc, lens, aspect ratio, roll) and appearance (sun
with cast shadows, colour temperature, exposure, white balance, sky, haze);
about 30% also show people standing between the camera and the fountain.
The geometry is fixed; the seed drives cameras, appearances and people, each
photo from its own streams of (seed, index).

Files (`write_landmark`), in the Phototourism reader's layout:
  images/0000.jpg ...  RGB JPEG photos of varying sizes, in index order;
  c2w_mats.npy         (N, 3, 4) camera-to-world [R | t], metres, unscaled;
  kinv_mats.npy        (N, 3, 3) inverse intrinsics with the OpenGL flips;
  bds.npy              (N, 2) [near, far]: depth range of the static scene;
  landmark.json        the generator settings.

Conventions: metres, z up, the ground is z = 0 and the facade faces +y.
Cameras are OpenGL (x right, y up, looking along -z); integer pixel (i, j)
looks along R kinv [i, j, 1], whose camera z is -1, so the ray parameter t is
depth along the camera axis (as `tf_metainit.physics.rays.rays_from_kinv`).
Surfaces are Lambertian, so colour depends on the hit point and the photo,
not on the view, except for haze, which grows with distance.
"""

import dataclasses
import json
import os

import numpy as np
from PIL import Image

from tf_metainit import checks
from tf_metainit import files
from tf_metainit.data import procedural_shapes

GENERATOR = 'tf_metainit procedural landmark v1'
SETTINGS_FILE = 'landmark.json'
JPEG_QUALITY = 92
_EPS = 1e-9

# Facade dimensions (metres); the wall face is the plane y = 0.
FACADE_HALF_WIDTH = 10.0
FACADE_BACK = -3.5
WALL_TOP = 10.0
CORNICE_TOP = 11.0
ATTIC_FRONT, ATTIC_TOP = -0.3, 13.0
CROWN_HALF_WIDTH, CROWN_FRONT, CROWN_TOP = 3.5, -0.1, 14.2
LANDMARK_CENTRE = np.array([0.0, 0.0, 7.0])
# Far sky: encloses every camera; its centre lies below the ground so the
# visible part is a dome meeting the square's edge 87.7 m from the fountain.
BACKDROP = procedural_shapes.Sphere(np.array([0.0, 0.0, -20.0]), 90.0, np.zeros(3))

# Cameras: a frontal arc around the facade centre.
MAX_AZIMUTH = np.radians(60.0)
DISTANCE_RANGE = (20.0, 45.0)
EYE_HEIGHT_RANGE = (1.2, 8.0)
TARGET_X_RANGE = (-6.0, 6.0)
TARGET_Z_RANGE = (3.0, 10.0)
MAX_ROLL = np.radians(3.0)
# Field of view across the long side: one lens whichever way the camera is held.
FOV_RANGE = (np.radians(40.0), np.radians(75.0))
# (short / long side, portrait, probability).
ASPECTS = ((3 / 4, False, 0.3), (3 / 4, True, 0.15), (2 / 3, False, 0.25),
           (2 / 3, True, 0.15), (9 / 16, False, 0.15))
MIN_LANDMARK_FRACTION = 0.3

# Transient people.
OCCLUDED_FRACTION = 0.3
MAX_PEOPLE = 4
PERSON_HEIGHT_RANGE = (1.6, 1.9)
PERSON_DISTANCE_RANGE = (3.0, 25.0)

# Materials: each picks a texture for its part's base colour.
STONE, MARBLE, ROCK, WATER, WINDOW, PAVING, SKY = range(7)
_TRAVERTINE = np.array([0.80, 0.76, 0.67])
_MARBLE = np.array([0.88, 0.87, 0.84])
_ROCK = np.array([0.64, 0.60, 0.52])
_WATER = np.array([0.22, 0.52, 0.56])
_WINDOW = np.array([0.16, 0.15, 0.14])
_PAVING = np.array([0.52, 0.49, 0.45])
_SKIN_TONES = np.array([[0.93, 0.76, 0.64], [0.80, 0.58, 0.44],
                        [0.55, 0.38, 0.26], [0.36, 0.24, 0.17]])

# Random streams of one photo.
_CAMERA_STREAM, _APPEARANCE_STREAM, _OCCLUDER_STREAM = range(3)
_MAX_TRIES = 100


# ----------------------------------------------------------------------------
# Primitives beyond procedural_shapes': same intersect(origins, directions)
# -> (t, unit normals) interface, t = inf on a miss.


@dataclasses.dataclass
class ArchedBlock:
  """Box [lo, hi] minus an infinite cylinder along y (the bore).

  With the bore's axis on the box's bottom face, this is the masonry over an
  arch: the bore cuts the half-round opening and its surface is the vault.
  """
  lo: np.ndarray
  hi: np.ndarray
  axis_x: float
  axis_z: float
  radius: float
  colour: np.ndarray

  def bounds(self):
    return np.asarray(self.lo), np.asarray(self.hi)

  def _bore(self, origins, directions):
    """Ray interval inside the bore; empty as (inf, -inf)."""
    px, pz = origins[:, 0] - self.axis_x, origins[:, 2] - self.axis_z
    dx, dz = directions[:, 0], directions[:, 2]
    a = dx**2 + dz**2
    half_b = px * dx + pz * dz
    c = px**2 + pz**2 - self.radius**2
    # Rays along the axis are inside for all t or never.
    along = a < _EPS
    a = np.where(along, 1.0, a)
    disc = half_b**2 - a * c
    root = np.sqrt(np.maximum(disc, 0))
    enter = np.where(disc >= 0, (-half_b - root) / a, np.inf)
    leave = np.where(disc >= 0, (-half_b + root) / a, -np.inf)
    enter = np.where(along, np.where(c < 0, -np.inf, np.inf), enter)
    leave = np.where(along, np.where(c < 0, np.inf, -np.inf), leave)
    return enter, leave

  def intersect(self, origins, directions):
    near, far, box_normals = procedural_shapes.slabs(self.lo, self.hi, origins,
                                                     directions)
    enter, leave = self._bore(origins, directions)
    # The solid starts at the box entry unless that lies in the bore; then it
    # starts where the ray leaves the bore, if still inside the box.
    face = (near > _EPS) & (near <= far) & ~((enter < near) & (near < leave))
    vault = ~face & (leave > _EPS) & (leave >= near) & (leave <= far)
    t = np.where(face, near, np.where(vault, leave, np.inf))
    hit = origins + np.where(np.isfinite(t), t, 0)[:, None] * directions
    # The vault's outward normal points into the bore, towards its axis.
    towards_axis = np.stack([self.axis_x - hit[:, 0], np.zeros(len(t)),
                             self.axis_z - hit[:, 2]], axis=-1) / self.radius
    return t, np.where(face[:, None], box_normals, towards_axis)


@dataclasses.dataclass
class Ground:
  """The horizontal plane z = height, hit from above."""
  height: float
  colour: np.ndarray

  def intersect(self, origins, directions):
    dz = directions[:, 2]
    down = dz < -_EPS
    t = (self.height - origins[:, 2]) / np.where(down, dz, -1.0)
    t = np.where(down & (t > _EPS), t, np.inf)
    normals = np.zeros_like(origins)
    normals[:, 2] = 1.0
    return t, normals


# ----------------------------------------------------------------------------
# The landmark: (shape, material) parts.


def _box(x0, x1, y0, y1, z0, z1, colour=_TRAVERTINE):
  return procedural_shapes.Box(np.array([x0, y0, z0], float),
                               np.array([x1, y1, z1], float), colour)


def _span(side, a, b):
  """(lo, hi) of the interval between side * a and side * b."""
  return min(side * a, side * b), max(side * a, side * b)


def _mirrored(build):
  """Parts of build(side) for side = -1 (left) and +1 (right)."""
  return build(-1.0) + build(1.0)


def _wing(side):
  """A wing wall with an arched statue niche, a window and two pilasters."""
  w, niche = FACADE_HALF_WIDTH, 5.5 * side
  opening = _span(side, 4.7, 6.3)
  return [
      (_box(*_span(side, 2.2, w), FACADE_BACK, -0.8, 0.0, WALL_TOP), STONE),
      (_box(*_span(side, 2.2, 4.7), -0.8, 0.0, 0.0, WALL_TOP), STONE),
      (_box(*_span(side, 6.3, w), -0.8, 0.0, 0.0, WALL_TOP), STONE),
      (_box(*opening, -0.8, 0.0, 0.0, 2.0), STONE),
      (ArchedBlock(np.array([opening[0], -0.8, 4.6]),
                   np.array([opening[1], 0.0, WALL_TOP]), niche, 4.6, 0.8,
                   _TRAVERTINE), STONE),
      (procedural_shapes.Frustum(2, np.array([niche, -0.4, 0.0]), 2.0, 3.9, 0.32, 0.22,
               _MARBLE), MARBLE),
      (procedural_shapes.Sphere(np.array([niche, -0.4, 4.12]), 0.2, _MARBLE), MARBLE),
      (_box(*_span(side, 4.9, 6.1), 0.0, 0.05, 6.8, 8.8, _WINDOW), WINDOW),
      (_box(*opening, 0.0, 0.2, 6.6, 6.8), STONE),
      (_box(*_span(side, 4.6, 6.4), 0.0, 0.25, 8.8, 9.1), STONE),
      (_box(*_span(side, 6.55, 7.45), 0.0, 0.3, 0.6, WALL_TOP), STONE),
      (_box(*_span(side, 9.1, w), 0.0, 0.3, 0.6, WALL_TOP), STONE),
  ]


def _columns(side):
  """Two columns on plinths with capitals and the entablature break above."""
  parts = []
  for c in (2.75 * side, 4.15 * side):
    parts += [
        (_box(c - 0.55, c + 0.55, 0.0, 1.1, 0.6, 1.4), STONE),
        (procedural_shapes.Frustum(2, np.array([c, 0.55, 0.0]), 1.4, 9.3, 0.42, 0.36,
                                   _MARBLE), MARBLE),
        (_box(c - 0.55, c + 0.55, 0.0, 1.1, 9.3, WALL_TOP, _MARBLE), MARBLE),
    ]
  lo, hi = sorted((2.15 * side, 4.75 * side))
  return parts + [(_box(lo, hi, 0.45, 1.15, WALL_TOP, CORNICE_TOP), STONE)]


def _centre():
  """The great central niche with its vault and statue."""
  return [
      (_box(-2.2, 2.2, FACADE_BACK, -2.4, 0.0, WALL_TOP), STONE),
      (ArchedBlock(np.array([-2.2, -2.4, 6.6]), np.array([2.2, 0.0, WALL_TOP]),
                   0.0, 6.6, 2.2, _TRAVERTINE), STONE),
      (_box(-1.1, 1.1, -2.4, -0.6, 0.6, 2.4, _ROCK), ROCK),
      (procedural_shapes.Frustum(2, np.array([0.0, -1.5, 0.0]), 2.4, 5.0, 0.65, 0.4,
                                 _MARBLE), MARBLE),
      (procedural_shapes.Sphere(np.array([0.0, -1.5, 5.35]), 0.33, _MARBLE), MARBLE),
  ]


def _top():
  """Entablature, cornice, attic with its inscription, crown and arms."""
  w = FACADE_HALF_WIDTH
  return [
      (_box(-w - 0.3, w + 0.3, FACADE_BACK, 0.45, WALL_TOP, 10.5), STONE),
      (_box(-w - 0.5, w + 0.5, FACADE_BACK, 0.7, 10.5, CORNICE_TOP), STONE),
      (_box(-w, w, FACADE_BACK, ATTIC_FRONT, CORNICE_TOP, ATTIC_TOP), STONE),
      (_box(-3.0, 3.0, ATTIC_FRONT, ATTIC_FRONT + 0.1, 11.3, 12.7, _MARBLE),
       MARBLE),
      (_box(-CROWN_HALF_WIDTH, CROWN_HALF_WIDTH, FACADE_BACK, CROWN_FRONT,
            ATTIC_TOP, CROWN_TOP), STONE),
      (_box(-1.0, 1.0, CROWN_FRONT, 0.2, 12.9, 13.9, _MARBLE), MARBLE),
  ]


def _basin():
  """Steps down to the water, the basin's rim, rocks and two tritons."""
  w = FACADE_HALF_WIDTH
  steps = [(_box(-w - 0.5, w + 0.5, -0.1, 2.2 - 0.8 * k, 0.0, 0.2 * (k + 1)),
            STONE) for k in range(3)]
  rocks = [(procedural_shapes.Sphere(np.array(c, float), r, _ROCK), ROCK) for c, r in (
      ((0.0, 2.6, 0.0), 1.6), ((-3.2, 3.2, -0.2), 1.3),
      ((3.4, 3.0, -0.3), 1.4), ((-1.6, 1.5, 0.4), 0.9),
      ((1.8, 1.6, 0.5), 0.8))]
  tritons = [(procedural_shapes.Sphere(np.array([x, 3.0, 1.5]), 0.5, _MARBLE), MARBLE)
             for x in (-2.6, 2.6)]
  rim = [(_box(-9.0, 9.0, 9.5, 10.0, 0.0, 0.8), STONE),
         (_box(-9.0, -8.5, 2.2, 10.0, 0.0, 0.8), STONE),
         (_box(8.5, 9.0, 2.2, 10.0, 0.0, 0.8), STONE),
         (_box(-8.5, 8.5, 2.2, 9.5, 0.0, 0.15, _WATER), WATER)]
  return steps + rocks + tritons + rim


def landmark_parts():
  """(shape, material) pairs of the fountain, without ground and sky."""
  return (_mirrored(_wing) + _mirrored(_columns) + _centre() + _top()
          + _basin())


def landmark_corners():
  """(4, 3) top front corners of the attic (left, right) and of the crown.

  Above each one the photos show sky: nothing of the landmark is higher.
  """
  w, c = FACADE_HALF_WIDTH, CROWN_HALF_WIDTH
  return np.array([[-w, ATTIC_FRONT, ATTIC_TOP], [w, ATTIC_FRONT, ATTIC_TOP],
                   [-c, CROWN_FRONT, CROWN_TOP], [c, CROWN_FRONT, CROWN_TOP]])


def _union_bounds(shapes):
  lows, highs = zip(*(s.bounds() for s in shapes))
  return np.min(lows, axis=0), np.max(highs, axis=0)


_PARTS = landmark_parts()
_SHAPES = [shape for shape, _ in _PARTS]
_LANDMARK_LO, _LANDMARK_HI = _union_bounds(_SHAPES)
_GROUND = Ground(0.0, _PAVING)
# Static surfaces are indexed as landmark parts, then ground, then backdrop.
_GROUND_INDEX, _BACKDROP_INDEX = len(_PARTS), len(_PARTS) + 1
_MATERIALS = np.array([m for _, m in _PARTS] + [PAVING, SKY])
_COLOURS = np.array([s.colour for s in _SHAPES] + [_PAVING, np.zeros(3)])


# ----------------------------------------------------------------------------
# Ray tracing.


def _nearest(shapes, origins, directions):
  """Nearest hit among shapes: t (inf on a miss), normals, index (-1)."""
  best = np.full(len(origins), np.inf)
  normals = np.zeros_like(origins)
  index = np.full(len(origins), -1)
  for k, shape in enumerate(shapes):
    t, n = shape.intersect(origins, directions)
    closer = t < best
    best[closer], normals[closer], index[closer] = t[closer], n[closer], k
  return best, normals, index


def _nearest_culled(shapes, lo, hi, origins, directions):
  """`_nearest`, tracing only the rays that meet the box [lo, hi]."""
  near, far, _ = procedural_shapes.slabs(lo, hi, origins, directions)
  inside = far >= np.maximum(near, 0)
  best = np.full(len(origins), np.inf)
  normals = np.zeros_like(origins)
  index = np.full(len(origins), -1)
  best[inside], normals[inside], index[inside] = _nearest(
      shapes, origins[inside], directions[inside])
  return best, normals, index


def _trace_static(origins, directions):
  """Nearest static surface (landmark, ground or backdrop) of every ray.

  Returns:
    t (finite: the backdrop encloses all cameras), normals, surface index.
  """
  t, normals, index = _nearest_culled(_SHAPES, _LANDMARK_LO, _LANDMARK_HI,
                                      origins, directions)
  for k, shape in ((_GROUND_INDEX, _GROUND), (_BACKDROP_INDEX, BACKDROP)):
    t_k, n_k = shape.intersect(origins, directions)
    closer = t_k < t
    t[closer], normals[closer], index[closer] = t_k[closer], n_k[closer], k
  return t, normals, index


def _shadowed(points, sun, occluders):
  """Whether the landmark or a person blocks the sun from each point."""
  directions = np.broadcast_to(sun, points.shape)
  t = _nearest_culled(_SHAPES, _LANDMARK_LO, _LANDMARK_HI, points,
                      directions)[0]
  if occluders:
    t = np.minimum(t, _nearest_culled(occluders, *_union_bounds(occluders),
                                      points, directions)[0])
  return np.isfinite(t)


def _pixel_rays(c2w, kinv, height, width, offsets=((0.0, 0.0),)):
  """Rays through pixel (i, j) + each (di, dj) of offsets, offset-major.

  Returns:
    origins, directions: (len(offsets) * H * W, 3); directions unnormalised,
    camera z = -1.
  """
  i, j = np.meshgrid(np.arange(width, dtype=float),
                     np.arange(height, dtype=float), indexing='xy')
  pixels = np.stack([np.stack([i + di, j + dj, np.ones_like(i)], axis=-1)
                     for di, dj in offsets]).reshape(-1, 3)
  c2w = np.asarray(c2w, float)
  directions = pixels @ (c2w[:3, :3] @ np.asarray(kinv, float)).T
  return np.broadcast_to(c2w[:3, 3], directions.shape), directions


# ----------------------------------------------------------------------------
# Textures: albedo multipliers as functions of the 3D hit point.


def _frac(x):
  return x - np.floor(x)


def _hash(a, b):
  """Pseudo-random value in [0, 1) per integer cell (a, b)."""
  return _frac(np.sin(a * 91.7 + b * 47.3 + 0.37) * 24634.6345)


def _face_coords(points, normals):
  """In-plane coordinates (u, v) of the face a hit lies on; v is up on walls."""
  n = np.abs(normals)
  x, y, z = points.T
  level = n[:, 2] > np.maximum(n[:, 0], n[:, 1])
  facing_y = n[:, 1] >= n[:, 0]
  return np.where(level | facing_y, x, y), np.where(level, y, z)


def _stone(points, normals, course=0.55, block=1.1):
  """Ashlar: staggered blocks of varying tint between mortar lines."""
  u, v = _face_coords(points, normals)
  row = np.floor(v / course)
  along = u / block + 0.5 * (row % 2)
  mortar = (_frac(v / course) < 0.08) | (_frac(along) < 0.04)
  return np.where(mortar, 0.6, 0.88 + 0.2 * _hash(np.floor(along), row))


def _marble(points, normals, flutes=24):
  """Fluted shafts: the tint follows the normal's azimuth on upright faces."""
  azimuth = np.arctan2(normals[:, 1], normals[:, 0])
  upright = np.abs(normals[:, 2]) < 0.5
  return np.where(upright, 0.92 + 0.08 * np.cos(flutes * azimuth), 1.0)


def _rock(points, normals):
  x, y, z = points.T
  return 0.75 + 0.25 * (np.sin(2.3 * x + 1.1 * z) * np.sin(1.7 * y - 2.9 * z)
                        * np.sin(3.1 * z + 0.7 * x))


def _water(points, normals):
  x, y = points[:, 0], points[:, 1]
  return 0.85 + 0.15 * (np.sin(3.3 * x + 0.8 * np.sin(2.1 * y))
                        * np.cos(2.7 * y - 1.1 * x))


def _paving(points, normals, tile=0.6):
  """Square setts with dark joints and a broad, slow variation of tint."""
  x, y = points[:, 0] / tile, points[:, 1] / tile
  joint = (_frac(x) < 0.07) | (_frac(y) < 0.07)
  sett = 0.85 + 0.25 * _hash(np.floor(x), np.floor(y))
  broad = 1 + 0.08 * np.cos(0.23 * points[:, 0]) * np.cos(0.19 * points[:, 1])
  return np.where(joint, 0.55, sett) * broad


_TEXTURES = {STONE: _stone, MARBLE: _marble, ROCK: _rock, WATER: _water,
             PAVING: _paving}


def _albedo(index, points, normals):
  """Textured albedo of static hits (the backdrop's is unused)."""
  material = _MATERIALS[index]
  albedo = _COLOURS[index].copy()
  for code, texture in _TEXTURES.items():
    mask = material == code
    if mask.any():
      albedo[mask] *= texture(points[mask], normals[mask])[:, None]
  return albedo


# ----------------------------------------------------------------------------
# Appearance: light, sky, haze and camera response of one photo.


def _sun_colour(warmth):
  """White at warmth 0, orange at 1 (a low colour temperature)."""
  return np.array([1.0, 1.0 - 0.25 * warmth, 1.0 - 0.55 * warmth])


def _weather(rng, kind):
  """Light and sky parameters typical of `kind`, with jitter."""
  u = rng.uniform
  if kind == 'sunny':
    return dict(elevation=u(25, 70), warmth=u(0, 0.3), sun=u(0.85, 1.15),
                ambient=u(0.3, 0.45) * np.array([0.85, 0.92, 1.05]),
                zenith=np.array([0.22, 0.42, 0.82]) + rng.normal(0, 0.04, 3),
                horizon=np.array([0.72, 0.8, 0.92]) + rng.normal(0, 0.03, 3),
                cloud_cover=u(0, 0.35), haze_distance=u(250, 700))
  if kind == 'overcast':
    grey = u(0.55, 0.75)
    return dict(elevation=u(25, 70), warmth=u(0, 0.15), sun=u(0.1, 0.3),
                ambient=u(0.65, 0.9) * np.array([1.0, 1.0, 1.02]),
                zenith=grey * np.array([1.0, 1.0, 1.05]),
                horizon=(grey + 0.1) * np.ones(3),
                cloud_cover=u(0.8, 1.0), haze_distance=u(80, 250))
  return dict(elevation=u(10, 20), warmth=u(0.6, 1.0), sun=u(0.55, 0.85),
              ambient=u(0.25, 0.4) * np.array([0.75, 0.75, 1.0]),
              zenith=np.array([0.18, 0.22, 0.45]) + rng.normal(0, 0.03, 3),
              horizon=np.array([0.95, 0.62, 0.38]) + rng.normal(0, 0.03, 3),
              cloud_cover=u(0, 0.5), haze_distance=u(120, 400))


def photo_appearance(index, seed=0):
  """Appearance parameters of photo `index` (independent of its camera).

  Returns:
    dict: weather ('sunny', 'overcast' or 'dusk'), sun_direction (unit, to
    the sun), sun_colour (rgb, strength included), ambient (rgb), zenith and
    horizon sky colours, cloud_cover in [0, 1], cloud_phase, haze_colour,
    haze_distance (metres), exposure (gain), white_balance (rgb gains).
  """
  rng = _photo_rng(seed, index, _APPEARANCE_STREAM)
  kind = ('sunny', 'overcast', 'dusk')[rng.choice(3, p=[0.6, 0.25, 0.15])]
  w = _weather(rng, kind)
  azimuth, elevation = rng.uniform(0, 2 * np.pi), np.radians(w['elevation'])
  balance = np.exp(rng.uniform(-0.1, 0.1, 3))
  horizon = np.clip(w['horizon'], 0.05, 1)
  return {
      'weather': kind,
      'sun_direction': np.array([np.cos(elevation) * np.cos(azimuth),
                                 np.cos(elevation) * np.sin(azimuth),
                                 np.sin(elevation)]),
      'sun_colour': w['sun'] * _sun_colour(w['warmth']),
      'ambient': w['ambient'],
      'zenith': np.clip(w['zenith'], 0.05, 1),
      'horizon': horizon,
      'cloud_cover': w['cloud_cover'],
      'cloud_phase': rng.uniform(0, 2 * np.pi),
      'haze_colour': horizon,
      'haze_distance': w['haze_distance'],
      'exposure': np.exp(rng.uniform(-0.3, 0.3)),
      # Gains with mean 1: tint without a change of brightness.
      'white_balance': balance / balance.mean(),
  }


def _sky(points, appearance):
  """Backdrop colour: horizon-to-zenith gradient, clouds and the sun's glow.

  A function of the direction from the square's centre to the hit point, so
  the sky is a fixed texture on the backdrop within one photo.
  """
  up = points / np.linalg.norm(points, axis=-1, keepdims=True)
  elevation = np.arcsin(np.clip(up[:, 2], 0, 1))
  azimuth = np.arctan2(up[:, 1], up[:, 0]) + appearance['cloud_phase']
  height = np.sqrt(elevation / (np.pi / 2))[:, None]
  colour = (1 - height) * appearance['horizon'] + height * appearance['zenith']
  # Integer frequencies in azimuth: no seam where it wraps.
  pattern = 0.5 + 0.2 * (
      np.sin(9 * azimuth + 2 * np.sin(7 * elevation))
      + np.sin(13 * elevation + 3 * np.sin(4 * azimuth))
      + 0.5 * np.sin(23 * azimuth + 31 * elevation
                     + 2 * np.sin(17 * elevation)))
  cover = appearance['cloud_cover']
  cloud = np.clip((pattern - (1 - cover)) / 0.25, 0, 1)[:, None]
  cloud_colour = 0.6 * appearance['sun_colour'] + appearance['ambient']
  colour = (1 - cloud) * colour + cloud * np.clip(cloud_colour, 0, 1)
  glow = np.exp(20 * (up @ appearance['sun_direction'] - 1))[:, None]
  return colour + 0.5 * glow * appearance['sun_colour']


def _light(points, normals, directions, appearance, occluders):
  """Irradiance: ambient plus the sun where it faces the surface unblocked."""
  facing = np.where(np.sum(normals * directions, axis=-1, keepdims=True) > 0,
                    -normals, normals)
  sun = appearance['sun_direction']
  cosine = np.maximum(facing @ sun, 0)
  lit = cosine > 0
  # Start shadow rays just off the surface so they miss it.
  lit[lit] = ~_shadowed(points[lit] + 1e-3 * facing[lit], sun, occluders)
  return (appearance['ambient']
          + (cosine * lit)[:, None] * appearance['sun_colour'])


def _shade(origins, directions, appearance, occluders):
  """Scene radiance of rays before the camera, and which hit a person."""
  t, normals, index = _trace_static(origins, directions)
  points = origins + t[:, None] * directions
  albedo = _albedo(index, points, normals)
  transient = np.zeros(len(t), dtype=bool)
  if occluders:
    t_o, n_o, k_o = _nearest_culled(occluders, *_union_bounds(occluders),
                                    origins, directions)
    transient = t_o < t
    colours = np.array([o.colour for o in occluders])
    t[transient], normals[transient] = t_o[transient], n_o[transient]
    albedo[transient] = colours[k_o[transient]]
    points[transient] = (origins[transient]
                         + t_o[transient, None] * directions[transient])
  sky = (index == _BACKDROP_INDEX) & ~transient
  rgb = np.empty_like(points)
  rgb[sky] = _sky(points[sky], appearance)
  rgb[~sky] = albedo[~sky] * _light(points[~sky], normals[~sky],
                                    directions[~sky], appearance, occluders)
  distance = t * np.linalg.norm(directions, axis=-1)
  haze = 1 - np.exp(-distance / appearance['haze_distance'])
  rgb += haze[:, None] * (appearance['haze_colour'] - rgb)
  return rgb, transient


def render(c2w, kinv, height, width, appearance, occluders=(),
           supersample=2):
  """The landmark under `appearance`, seen by camera (c2w, kinv).

  Args:
    c2w: (3 or 4, 4) OpenGL camera-to-world, metres.
    kinv: (3, 3) inverse intrinsics with the OpenGL flips.
    height: image height in pixels.
    width: image width in pixels.
    appearance: a `photo_appearance` dict.
    occluders: transient primitives (`photo_occluders`).
    supersample: n; each pixel averages n x n rays on a grid centred on its
      integer coordinates (offsets +-0.25 px for n = 2).

  Returns:
    dict: rgb (H, W, 3) float in [0, 1]; static_depth (H, W), depth along the
    camera axis of the static scene (landmark, ground or backdrop; people
    ignored) on the integer-pixel ray; transient (H, W), the fraction of the
    pixel's rays that hit a person.
  """
  checks.positive_int('render.supersample', supersample)
  steps = (np.arange(supersample) + 0.5) / supersample - 0.5
  offsets = [(di, dj) for dj in steps for di in steps]
  origins, directions = _pixel_rays(c2w, kinv, height, width, offsets)
  rgb, transient = _shade(origins, directions, appearance, list(occluders))
  # The sensor integrates radiance over the pixel, then saturates.
  rgb = rgb.reshape(len(offsets), height, width, 3).mean(axis=0)
  rgb = np.clip(rgb * appearance['exposure'] * appearance['white_balance'],
                0, 1)
  centre = _pixel_rays(c2w, kinv, height, width)
  return {
      'rgb': rgb,
      'static_depth': _trace_static(*centre)[0].reshape(height, width),
      'transient': transient.reshape(len(offsets), height, width).mean(axis=0),
  }


# ----------------------------------------------------------------------------
# Cameras.


def _photo_rng(seed, index, stream):
  return np.random.default_rng([seed, index, stream])


def _intrinsics(camera, long_side):
  """Pixel size, focal and kinv of a camera geometry at `long_side` pixels."""
  short = round(long_side * camera['ratio'])
  height, width = (long_side, short) if camera['portrait'] else (
      short, long_side)
  focal = long_side / (2 * np.tan(camera['fov'] / 2))
  kinv = np.array([[1 / focal, 0, -width / (2 * focal)],
                   [0, -1 / focal, height / (2 * focal)],
                   [0, 0, -1.0]])
  return {'height': height, 'width': width, 'focal': focal, 'kinv': kinv}


def _sample_camera(rng):
  """A tourist's camera: pose on the frontal arc, lens and aspect ratio."""
  azimuth = rng.uniform(-MAX_AZIMUTH, MAX_AZIMUTH)
  distance = rng.uniform(*DISTANCE_RANGE)
  eye = np.array([distance * np.sin(azimuth), distance * np.cos(azimuth),
                  rng.uniform(*EYE_HEIGHT_RANGE)])
  target = np.array([rng.uniform(*TARGET_X_RANGE), 0.0,
                     rng.uniform(*TARGET_Z_RANGE)])
  roll = rng.uniform(-MAX_ROLL, MAX_ROLL)
  # Rolling turns the camera's x and y axes about its viewing axis.
  spin = np.array([[np.cos(roll), -np.sin(roll), 0],
                   [np.sin(roll), np.cos(roll), 0], [0, 0, 1.0]])
  c2w = procedural_shapes.look_at(eye, target)[:3]
  c2w[:, :3] = c2w[:, :3] @ spin
  ratio, portrait, _ = ASPECTS[rng.choice(len(ASPECTS),
                                          p=[a[2] for a in ASPECTS])]
  return {'c2w': c2w, 'target': target, 'fov': rng.uniform(*FOV_RANGE),
          'ratio': ratio, 'portrait': portrait}


def _landmark_fraction(camera, long_side=16):
  """Fraction of a coarse pixel grid whose rays hit the landmark."""
  pixels = _intrinsics(camera, long_side)
  origins, directions = _pixel_rays(camera['c2w'], pixels['kinv'],
                                    pixels['height'], pixels['width'])
  t = _nearest_culled(_SHAPES, _LANDMARK_LO, _LANDMARK_HI, origins,
                      directions)[0]
  return np.mean(np.isfinite(t))


def _camera_geometry(index, seed):
  """Resolution-free camera of photo `index`; resampled until it shows the
  landmark over at least MIN_LANDMARK_FRACTION of the frame."""
  rng = _photo_rng(seed, index, _CAMERA_STREAM)
  for _ in range(_MAX_TRIES):
    camera = _sample_camera(rng)
    if _landmark_fraction(camera) >= MIN_LANDMARK_FRACTION:
      return camera
  raise RuntimeError(f'no camera of photo {index} (seed {seed}) shows the '
                     f'landmark after {_MAX_TRIES} tries')


def photo_camera(index, long_side=64, seed=0):
  """Camera of photo `index` at `long_side` pixels on its long side.

  Returns:
    dict: c2w (3, 4), kinv (3, 3), height, width, focal (pixels).
  """
  checks.positive_int('photo_camera.long_side', long_side)
  camera = _camera_geometry(index, seed)
  return {'c2w': camera['c2w'], **_intrinsics(camera, long_side)}


# ----------------------------------------------------------------------------
# Transient people.


def _half_fov_tangents(camera):
  """tan of the half field of view across the width and the height."""
  tan_long = np.tan(camera['fov'] / 2)
  tan_short = tan_long * camera['ratio']
  return (tan_short, tan_long) if camera['portrait'] else (tan_long, tan_short)


def _in_view(camera, point, margin=0.95):
  """Whether `point` projects inside the central `margin` of the frame."""
  c2w = camera['c2w']
  p = c2w[:, :3].T @ (point - c2w[:, 3])
  tan_x, tan_y = _half_fov_tangents(camera)
  return (p[2] < 0 and abs(p[0] / p[2]) < margin * tan_x
          and abs(p[1] / p[2]) < margin * tan_y)


def _free_spot(rng, camera, taken, height):
  """Ground point for a person seen by the camera, or None.

  Within the view's horizontal angle, nearer to the camera than its target
  by 3 m, clear of the fountain and of the people already `taken`; at least
  the head must be in view.
  """
  eye, forward = camera['c2w'][:, 3], -camera['c2w'][:, 2]
  heading = np.arctan2(forward[1], forward[0])
  spread = np.arctan(_half_fov_tangents(camera)[0])
  near, far = PERSON_DISTANCE_RANGE
  far = min(far, np.linalg.norm((camera['target'] - eye)[:2]) - 3.0)
  for _ in range(_MAX_TRIES):
    angle = heading + rng.uniform(-spread, spread)
    distance = rng.uniform(near, far)
    spot = np.array([eye[0] + distance * np.cos(angle),
                     eye[1] + distance * np.sin(angle), 0.0])
    clear = (np.any(spot[:2] < _LANDMARK_LO[:2] - 1)
             or np.any(spot[:2] > _LANDMARK_HI[:2] + 1))
    apart = all(np.linalg.norm((spot - t)[:2]) > 0.8 for t in taken)
    if clear and apart and _in_view(camera, spot + [0, 0, height - 0.2]):
      return spot
  return None


def _person(rng, spot, height):
  """Legs, torso and head; boxes or capped cylinders; random clothes."""
  x, y, _ = spot
  head = 0.115
  hips, shoulders = 0.48 * height, height - 2 * head
  top, bottom = rng.uniform(0.05, 0.95, 3), rng.uniform(0.05, 0.6, 3)
  skin = np.minimum(
      _SKIN_TONES[rng.integers(len(_SKIN_TONES))] * rng.uniform(0.9, 1.1), 1)
  if rng.random() < 0.5:
    body = [procedural_shapes.Box(np.array([x - 0.17, y - 0.12, 0.0]),
                                  np.array([x + 0.17, y + 0.12, hips]), bottom),
            procedural_shapes.Box(np.array([x - 0.25, y - 0.15, hips]),
                                  np.array([x + 0.25, y + 0.15, shoulders]), top)]
  else:
    base = np.array([x, y, 0.0])
    body = [procedural_shapes.Frustum(2, base, 0.0, hips, 0.17, 0.2, bottom),
            procedural_shapes.Frustum(2, base, hips, shoulders, 0.25, 0.22, top)]
  return body + [procedural_shapes.Sphere(np.array([x, y, height - head]), head, skin)]


def photo_occluders(index, seed=0):
  """Transient primitives of photo `index`: none, or 1-4 people.

  People (1.6-1.9 m tall, 0.5 m wide) stand on the ground in view, 3-25 m
  from the camera and nearer to it than the landmark, clear of the fountain.
  """
  rng = _photo_rng(seed, index, _OCCLUDER_STREAM)
  if rng.random() >= OCCLUDED_FRACTION:
    return []
  camera = _camera_geometry(index, seed)
  parts, taken = [], []
  for _ in range(rng.integers(1, MAX_PEOPLE + 1)):
    height = rng.uniform(*PERSON_HEIGHT_RANGE)
    spot = _free_spot(rng, camera, taken, height)
    if spot is not None:
      taken.append(spot)
      parts += _person(rng, spot, height)
  return parts


# ----------------------------------------------------------------------------
# Photos and the written scene.


def generate_photo(index, long_side=64, seed=0):
  """Photo `index`: its camera, appearance and people, rendered.

  Returns:
    dict: image uint8 (H, W, 3), c2w (3, 4), kinv (3, 3), bounds (2,) the
    [near, far] depth of the static scene over the photo's pixels.
  """
  camera = photo_camera(index, long_side, seed)
  rendered = render(camera['c2w'], camera['kinv'], camera['height'],
                    camera['width'], photo_appearance(index, seed),
                    photo_occluders(index, seed))
  depth = rendered['static_depth']
  return {'image': np.round(rendered['rgb'] * 255).astype(np.uint8),
          'c2w': camera['c2w'], 'kinv': camera['kinv'],
          'bounds': np.array([depth.min(), depth.max()])}


def _settings(num_photos, long_side, seed):
  return {'num_photos': checks.positive_int('num_photos', num_photos),
          'long_side': checks.positive_int('long_side', long_side),
          'seed': checks.non_negative_int('seed', seed),
          'generator': GENERATOR}


def _is_landmark(path):
  return os.path.isfile(os.path.join(path, SETTINGS_FILE))


def _check_existing(out_dir, settings):
  with open(os.path.join(out_dir, SETTINGS_FILE)) as f:
    found = json.load(f)
  differ = [f'{k} {found.get(k)!r} there, {v!r} asked'
            for k, v in settings.items() if found.get(k) != v]
  if differ:
    raise ValueError(
        f'{out_dir} holds a landmark generated with other settings '
        f'({"; ".join(differ)}); write to another out_dir or delete it to '
        'regenerate.')


def _write_photos(folder, settings):
  os.makedirs(os.path.join(folder, 'images'))
  c2w, kinv, bounds = [], [], []
  for index in range(settings['num_photos']):
    photo = generate_photo(index, settings['long_side'], settings['seed'])
    Image.fromarray(photo['image']).save(
        os.path.join(folder, 'images', f'{index:04d}.jpg'),
        quality=JPEG_QUALITY)
    c2w.append(photo['c2w'])
    kinv.append(photo['kinv'])
    bounds.append(photo['bounds'])
  np.save(os.path.join(folder, 'c2w_mats.npy'), np.stack(c2w))
  np.save(os.path.join(folder, 'kinv_mats.npy'), np.stack(kinv))
  np.save(os.path.join(folder, 'bds.npy'), np.stack(bounds))
  files.write_json(os.path.join(folder, SETTINGS_FILE), settings)


def write_landmark(out_dir, num_photos=300, long_side=64, seed=0):
  """Writes the landmark's photos and cameras into `out_dir` (module doc).

  Atomic: the folder is built beside `out_dir` and renamed into place. A
  complete scene with the same settings is kept as it is; one with other
  settings, and any non-empty folder that is not a landmark, are refused.

  Returns:
    out_dir.
  """
  settings = _settings(num_photos, long_side, seed)
  if _is_landmark(out_dir):
    _check_existing(out_dir, settings)
    return out_dir
  problem = files.target_dir_problem(out_dir, _is_landmark,
                                     'a procedural landmark')
  if problem:
    raise ValueError(f'{out_dir} {problem}')
  with files.atomic_directory(out_dir) as folder:
    _write_photos(folder, settings)
  return out_dir
