"""Camera rays and stratified sampling against hand-computed values."""

import numpy as np
import pytest
import tensorflow as tf

from tf_metainit.physics import rays

# Non-square so that swapping rows and columns would show.
HEIGHT, WIDTH, FOCAL = 4, 6, 2.0


def _pose(rotation, translation):
  c2w = np.eye(4)
  c2w[:3, :3], c2w[:3, 3] = rotation, translation
  return c2w


def test_identity_camera_corner_centre_and_origin():
  c2w = _pose(np.eye(3), [1.0, 2.0, 3.0])
  origins, directions = rays.camera_rays(c2w, FOCAL, HEIGHT, WIDTH)
  assert directions.shape == (HEIGHT, WIDTH, 3)
  # Top-left pixel (i=0, j=0): ((0 - W/2)/f, -(0 - H/2)/f, -1), no +0.5.
  np.testing.assert_allclose(directions[0, 0], [-1.5, 1.0, -1.0])
  # Pixel (i=W/2, j=H/2) looks straight down the camera axis.
  np.testing.assert_allclose(directions[2, 3], [0.0, 0.0, -1.0])
  # Bottom-right pixel (i=5, j=3).
  np.testing.assert_allclose(directions[3, 5], [1.0, -0.5, -1.0])
  np.testing.assert_allclose(origins, np.broadcast_to([1.0, 2.0, 3.0],
                                                      (HEIGHT, WIDTH, 3)))


def test_rotation_about_z_by_90_degrees():
  rotation = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
  c2w = _pose(rotation, [0.0, 0.0, 5.0])
  _, directions = rays.camera_rays(c2w, FOCAL, HEIGHT, WIDTH)
  # R (x, y, z) = (-y, x, z); directions are not normalised.
  np.testing.assert_allclose(directions[0, 0], [-1.0, -1.5, -1.0])
  np.testing.assert_allclose(directions[2, 3], [0.0, 0.0, -1.0])


def test_look_at_camera_centre_ray_hits_target():
  # Camera at (0, -4, 0) facing +y, z up: columns right, up, back.
  rotation = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
  origins, directions = rays.camera_rays(
      _pose(rotation, [0.0, -4.0, 0.0]), FOCAL, HEIGHT, WIDTH)
  np.testing.assert_allclose(origins[2, 3] + 4 * directions[2, 3], 0.0)
  # The top row of the image is above the horizon.
  assert np.all(directions[0, :, 2] > 0)


def test_batched_3x4_float32_inside_tf_function():
  rotation = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
  c2w = np.stack([_pose(np.eye(3), [1, 2, 3]),
                  _pose(rotation, [0, 0, 5])])[:, :3].astype(np.float32)
  fn = tf.function(lambda c, f: rays.camera_rays(c, f, HEIGHT, WIDTH))
  origins, directions = fn(tf.constant(c2w), tf.constant([FOCAL, 1.0]))
  assert origins.shape == (2, HEIGHT, WIDTH, 3)
  assert directions.dtype == tf.float32
  np.testing.assert_allclose(directions[0, 0, 0], [-1.5, 1.0, -1.0])
  # Focal 1 doubles the offsets before rotation: (-3, 2, -1) -> (-2, -3, -1).
  np.testing.assert_allclose(directions[1, 0, 0], [-2.0, -3.0, -1.0])
  np.testing.assert_allclose(origins[1, 3, 5], [0.0, 0.0, 5.0])


def test_kinv_rays_match_pinhole_rays():
  rng = np.random.default_rng(0)
  q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
  c2w = _pose(q, rng.normal(size=3))
  # Synthetic inverse intrinsics of the reference, sign flips included.
  kinv = np.array([[1 / FOCAL, 0, -WIDTH / (2 * FOCAL)],
                   [0, -1 / FOCAL, HEIGHT / (2 * FOCAL)], [0, 0, -1]])
  expected_o, expected_d = rays.camera_rays(c2w, FOCAL, HEIGHT, WIDTH)
  o, d = rays.rays_from_kinv(c2w, kinv, HEIGHT, WIDTH)
  np.testing.assert_allclose(d, expected_d, atol=1e-12)
  np.testing.assert_allclose(o, expected_o)
  _, d2 = rays.rays_from_kinv(c2w, kinv, HEIGHT, WIDTH, downsample=2)
  assert d2.shape == (2, 3, 3)
  np.testing.assert_allclose(d2, expected_d[::2, ::2], atol=1e-12)


def test_evenly_spaced_samples_include_both_ends():
  origins = tf.constant([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]], tf.float64)
  directions = tf.constant([[0.0, 0.0, -1.0], [0.0, 2.0, 0.0]], tf.float64)
  z, points = rays.sample_along_rays(origins, directions, 2.0, 6.0, 5, False)
  np.testing.assert_allclose(z, [[2, 3, 4, 5, 6]] * 2)
  np.testing.assert_allclose(points[1, 2], [1.0, 9.0, 1.0])
  np.testing.assert_allclose(points[0, -1], [0.0, 0.0, -6.0])


@pytest.mark.parametrize('per_ray', [False, True])
def test_stratified_samples_stay_in_their_bins(per_ray):
  num_rays, num_samples = 64, 16
  origins = tf.zeros([num_rays, 3])
  directions = tf.ones([num_rays, 3])
  near, far = 2.0, 6.0
  if per_ray:
    near = tf.linspace(1.0, 2.0, num_rays)
    far = near + tf.linspace(1.0, 5.0, num_rays)
  seed = tf.constant([3, 4])
  z, points = rays.sample_along_rays(origins, directions, near, far,
                                     num_samples, True, seed=seed)
  base, _ = rays.sample_along_rays(origins, directions, near, far,
                                   num_samples, False)
  width = ((np.asarray(far) - np.asarray(near)) / num_samples)
  width = np.broadcast_to(width, [num_rays])[:, None]
  offset = (z - base).numpy()
  assert np.all(offset >= 0) and np.all(offset < width + 1e-6)
  # Jitter is independent per sample and fills the bin.
  assert offset.std() > 0.2 * width.mean()
  np.testing.assert_allclose(points, z[..., None] * np.ones(3), rtol=1e-6)
  # Stateless: the same seed repeats, another seed differs.
  again, _ = rays.sample_along_rays(origins, directions, near, far,
                                    num_samples, True, seed=seed)
  other, _ = rays.sample_along_rays(origins, directions, near, far,
                                    num_samples, True, seed=tf.constant([5, 6]))
  np.testing.assert_array_equal(z, again)
  assert not np.allclose(z, other)
