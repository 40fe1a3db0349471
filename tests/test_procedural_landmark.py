"""Procedural Phototourism landmark: conventions, geometry, bounds, files."""

import json
import os

import numpy as np
from PIL import Image
import pytest

from tf_metainit.data import procedural_landmark as landmark


def _rays(camera):
  """World rays of every integer pixel, worked from c2w and kinv by hand."""
  i, j = np.meshgrid(np.arange(camera['width']), np.arange(camera['height']))
  pixels = np.stack([i, j, np.ones_like(i)], axis=-1).reshape(-1, 3)
  rotation, eye = camera['c2w'][:, :3], camera['c2w'][:, 3]
  directions = pixels @ (rotation @ camera['kinv']).T
  return np.tile(eye, (len(directions), 1)), directions


def _project(camera, points):
  """Pixel coordinates (i, j) and camera-axis depth of world points."""
  rotation, eye = camera['c2w'][:, :3], camera['c2w'][:, 3]
  p_cam = (points - eye) @ rotation  # R^T (X - t), one row per point
  projected = p_cam @ np.linalg.inv(camera['kinv']).T
  return projected[:, :2] / projected[:, 2:], -p_cam[:, 2]


def _render(index, camera, occluders=(), supersample=1):
  return landmark.render(camera['c2w'], camera['kinv'], camera['height'],
                         camera['width'], landmark.photo_appearance(index),
                         occluders, supersample)


def _photos(count, people):
  """The first `count` photo indices with (or without) transient people."""
  found = [k for k in range(200)
           if bool(landmark.photo_occluders(k)) == people]
  return found[:count]


def test_photos_are_deterministic_per_seed_and_index():
  first = landmark.generate_photo(3, long_side=32, seed=0)
  again = landmark.generate_photo(3, long_side=32, seed=0)
  assert first['image'].tobytes() == again['image'].tobytes()
  for key in ('c2w', 'kinv', 'bounds'):
    np.testing.assert_array_equal(first[key], again[key])
  for other in (landmark.generate_photo(3, long_side=32, seed=1),
                landmark.generate_photo(4, long_side=32, seed=0)):
    assert (other['image'].shape != first['image'].shape
            or other['image'].tobytes() != first['image'].tobytes())
    assert not np.allclose(other['c2w'], first['c2w'])


def test_kinv_has_the_opengl_flips_and_rotations_are_proper():
  short_sides = {round(48 * r) for r in (3 / 4, 2 / 3, 9 / 16)}
  for index in range(6):
    camera = landmark.photo_camera(index, long_side=48)
    h, w, f = camera['height'], camera['width'], camera['focal']
    assert max(h, w) == 48 and min(h, w) in short_sides
    for i, j in ((0, 0), (w - 1, 0), (w // 2, h // 2), (7, h - 1)):
      np.testing.assert_allclose(camera['kinv'] @ [i, j, 1],
                                 [(i - w / 2) / f, -(j - h / 2) / f, -1],
                                 rtol=0, atol=1e-12)
    rotation = camera['c2w'][:, :3]
    assert camera['c2w'].shape == (3, 4)
    np.testing.assert_allclose(rotation.T @ rotation, np.eye(3), atol=1e-12)
    assert np.linalg.det(rotation) == pytest.approx(1.0)


def test_arched_block_and_ground_intersections():
  # Block x in [-1, 1], y in [0, 1], z in [0, 2]; bore radius 1 about the y
  # axis through x = z = 0: a half-round opening under the block.
  block = landmark.ArchedBlock(np.array([-1.0, 0, 0]), np.array([1.0, 1, 2]),
                               0.0, 0.0, 1.0, np.ones(3))
  origins = np.array([[0.9, -5, 1.5], [0.5, -5, 0.5], [0, 0.5, 3],
                      [0, 0.5, -3], [0, 0.5, 0.5], [-3, 0.5, 0.5]])
  directions = np.array([[0, 1, 0], [0, 1, 0], [0, 0, -1], [0, 0, 1],
                         [0, 0, 1], [1, 0, 0]], float)
  t, normals = block.intersect(origins, directions)
  # Face; through the opening; top; vault from below and from inside; side.
  np.testing.assert_allclose(t, [5, np.inf, 1, 4, 0.5, 2])
  hit = np.isfinite(t)
  np.testing.assert_allclose(
      normals[hit], [[0, -1, 0], [0, 0, 1], [0, 0, -1], [0, 0, -1],
                     [-1, 0, 0]], atol=1e-12)
  ground = landmark.Ground(0.0, np.ones(3))
  t, normals = ground.intersect(np.array([[1.0, 2, 3], [0, 0, 3]]),
                                np.array([[0.0, 1, -2], [0, 0, 1]]))
  np.testing.assert_allclose(t, [1.5, np.inf])
  np.testing.assert_allclose(normals[0], [0, 0, 1])


def test_supersampling_is_centred_on_the_integer_pixel():
  camera = landmark.photo_camera(5, long_side=24)
  appearance = dict(landmark.photo_appearance(5), exposure=0.3)  # no clipping
  shifted = []
  for di in (-0.25, 0.25):
    for dj in (-0.25, 0.25):
      # kinv applied to pixel (i + di, j + dj).
      kinv = camera['kinv'] @ [[1, 0, di], [0, 1, dj], [0, 0, 1]]
      shifted.append(landmark.render(camera['c2w'], kinv, camera['height'],
                                     camera['width'], appearance,
                                     supersample=1)['rgb'])
  averaged = landmark.render(camera['c2w'], camera['kinv'], camera['height'],
                             camera['width'], appearance, supersample=2)
  np.testing.assert_allclose(averaged['rgb'], np.mean(shifted, axis=0),
                             atol=1e-12)
  # One ray per pixel is the integer-pixel ray: with a pure red sky and no
  # sun, red pixels are exactly those whose static depth is the backdrop's.
  red = np.array([1.0, 0, 0])
  flat = dict(appearance, sun_colour=np.zeros(3), ambient=np.ones(3),
              zenith=red, horizon=red, haze_colour=red, haze_distance=np.inf,
              cloud_cover=0.0, exposure=1.0, white_balance=np.ones(3))
  centre = landmark.render(camera['c2w'], camera['kinv'], camera['height'],
                           camera['width'], flat, supersample=1)
  np.testing.assert_array_equal(averaged['static_depth'],
                                centre['static_depth'])
  sky = landmark.BACKDROP.intersect(*_rays(camera))[0].reshape(
      centre['static_depth'].shape)
  shows_sky = centre['static_depth'] == sky
  assert 0 < shows_sky.mean() < 1
  np.testing.assert_array_equal(np.all(centre['rgb'] == red, axis=-1),
                                shows_sky)


def test_cameras_stay_in_the_tourists_ranges():
  aspects = set()
  for index in range(30):
    camera = landmark.photo_camera(index, long_side=64)
    eye = camera['c2w'][:, 3]
    assert 20 <= np.hypot(*(eye - landmark.LANDMARK_CENTRE)[:2]) <= 45
    assert abs(np.degrees(np.arctan2(eye[0], eye[1]))) <= 60
    assert 1.2 <= eye[2] <= 8
    # Without roll the camera's x axis is level; roll tilts it by <= 3 deg.
    assert abs(camera['c2w'][2, 0]) <= np.sin(np.radians(3)) + 1e-12
    long_side = max(camera['height'], camera['width'])
    fov = np.degrees(2 * np.arctan(long_side / 2 / camera['focal']))
    assert 40 <= fov <= 75
    aspects.add((camera['width'], camera['height']))
  assert {(64, 48), (48, 64), (64, 43), (43, 64), (64, 36)} == aspects


def test_landmark_corners_reproject_to_the_facade_edge_under_sky():
  checked = 0
  for index in _photos(6, people=False):
    camera = landmark.photo_camera(index, long_side=96)
    depth = _render(index, camera)['static_depth']
    origins, directions = _rays(camera)
    sky = landmark.BACKDROP.intersect(origins, directions)[0].reshape(
        depth.shape)
    pixels, corner_depths = _project(camera, landmark.landmark_corners())
    centre = _project(camera, landmark.LANDMARK_CENTRE[None])[0][0]
    for (u, v), corner_depth in zip(pixels, corner_depths):
      i, j, inward = int(round(u)), int(round(v)), np.sign(centre[0] - u)
      inside = (j + 2, int(i + 2 * inward))
      outside = (j - 2, int(i - 2 * inward))
      if not all(0 <= a < s for p in (inside, outside)
                 for a, s in zip(p, depth.shape)):
        continue
      assert depth[inside] == pytest.approx(corner_depth, rel=0.1)
      assert depth[outside] == pytest.approx(sky[outside], rel=1e-12)
      checked += 1
  assert checked >= 8


def test_bounds_span_the_static_depth_and_far_is_the_sky():
  with_sky = 0
  for index in range(5):
    photo = landmark.generate_photo(index, long_side=32)
    camera = landmark.photo_camera(index, long_side=32)
    depth = _render(index, camera)['static_depth']
    near, far = photo['bounds']
    assert photo['bounds'].dtype == np.float64
    assert 0 < near < far
    assert np.all((near <= depth) & (depth <= far))
    assert (near, far) == (depth.min(), depth.max())
    sky = landmark.BACKDROP.intersect(*_rays(camera))[0].reshape(depth.shape)
    shows_sky = np.isclose(depth, sky, rtol=1e-12, atol=0)
    if shows_sky.any():
      assert far == sky[shows_sky].max()
      with_sky += 1
  assert with_sky >= 3


def test_write_landmark_round_trip_noop_and_refusals(tmp_path):
  out = str(tmp_path / 'scene')
  assert landmark.write_landmark(out, num_photos=6, long_side=32) == out
  names = sorted(os.listdir(os.path.join(out, 'images')))
  assert names == [f'{k:04d}.jpg' for k in range(6)]
  c2w = np.load(os.path.join(out, 'c2w_mats.npy'))
  kinv = np.load(os.path.join(out, 'kinv_mats.npy'))
  bounds = np.load(os.path.join(out, 'bds.npy'))
  assert (c2w.shape, kinv.shape, bounds.shape) == ((6, 3, 4), (6, 3, 3),
                                                     (6, 2))
  assert c2w.dtype == kinv.dtype == bounds.dtype == np.float64
  for k, name in enumerate(names):
    photo = landmark.generate_photo(k, long_side=32)
    with Image.open(os.path.join(out, 'images', name)) as image:
      assert (image.format, image.mode) == ('JPEG', 'RGB')
      pixels = np.asarray(image, dtype=float)
    assert pixels.shape == photo['image'].shape
    # kinv records the size: W = 2 f (W / 2f), H = 2 f (H / 2f).
    width, height = -2 * kinv[k, 0, 2] / kinv[k, 0, 0], 2 * kinv[k, 1, 2] * (
        1 / -kinv[k, 1, 1])
    assert (round(height), round(width)) == pixels.shape[:2]
    assert np.abs(pixels - photo['image']).mean() < 6  # JPEG loss only
    np.testing.assert_array_equal(c2w[k], photo['c2w'])
    np.testing.assert_array_equal(kinv[k], photo['kinv'])
    np.testing.assert_array_equal(bounds[k], photo['bounds'])
  with open(os.path.join(out, 'landmark.json')) as f:
    assert json.load(f) == {'num_photos': 6, 'long_side': 32, 'seed': 0,
                            'generator': landmark.GENERATOR}

  stamps = {p: os.stat(os.path.join(out, p)).st_mtime_ns
            for p in ('', 'images', 'bds.npy', 'images/0000.jpg')}
  assert landmark.write_landmark(out, num_photos=6, long_side=32) == out
  assert stamps == {p: os.stat(os.path.join(out, p)).st_mtime_ns
                    for p in stamps}
  with pytest.raises(ValueError, match=r'scene.*num_photos 6 there, 7 asked'):
    landmark.write_landmark(out, num_photos=7, long_side=32)

  foreign = tmp_path / 'foreign'
  foreign.mkdir()
  (foreign / 'notes.txt').write_text('mine')
  with pytest.raises(ValueError, match='foreign'):
    landmark.write_landmark(str(foreign), num_photos=1, long_side=8)
  assert os.listdir(foreign) == ['notes.txt']
  assert (foreign / 'notes.txt').read_text() == 'mine'
  assert sorted(os.listdir(tmp_path)) == ['foreign', 'scene']


def test_an_interrupted_write_leaves_nothing(tmp_path, monkeypatch):
  generate = landmark.generate_photo

  def fail_on_the_third(index, *args):
    if index == 2:
      raise KeyboardInterrupt
    return generate(index, *args)

  monkeypatch.setattr(landmark, 'generate_photo', fail_on_the_third)
  with pytest.raises(KeyboardInterrupt):
    landmark.write_landmark(str(tmp_path / 'scene'), num_photos=4,
                            long_side=8)
  assert os.listdir(tmp_path) == []


def test_appearances_differ_and_none_is_black():
  camera = landmark.photo_camera(0, long_side=16)
  means = np.array([_render(k, camera)['rgb'].mean(axis=(0, 1))
                    for k in range(30)])
  assert np.all((0.1 < means.mean(axis=1)) & (means.mean(axis=1) < 0.9))
  for a, b in ((0, 1), (1, 2), (2, 3), (0, 3)):
    assert np.abs(means[a] - means[b]).max() > 0.01
  kinds = {landmark.photo_appearance(k)['weather'] for k in range(30)}
  assert kinds == {'sunny', 'overcast', 'dusk'}


def test_people_appear_only_in_photos_that_have_them():
  people = [bool(landmark.photo_occluders(k)) for k in range(100)]
  assert 0.15 < np.mean(people) < 0.45
  for index, has_people in [(k, True) for k in _photos(3, people=True)] + [
      (k, False) for k in _photos(2, people=False)]:
    photo = landmark.generate_photo(index, long_side=64)
    camera = landmark.photo_camera(index, long_side=64)
    occluders = landmark.photo_occluders(index)
    seen = _render(index, camera, occluders, supersample=2)
    static = _render(index, camera, supersample=2)
    np.testing.assert_array_equal(np.round(seen['rgb'] * 255), photo['image'])
    np.testing.assert_array_equal(seen['static_depth'],
                                  static['static_depth'])
    differs = np.any(photo['image'] != np.round(static['rgb'] * 255), axis=-1)
    if has_people:
      covered = seen['transient'] >= 0.5
      assert covered.any()
      assert differs[covered].mean() > 0.9
    else:
      assert not differs.any() and not seen['transient'].any()
