"""Tests for the procedural dead-leaves image dataset."""

import numpy as np
import pytest

from tf_metainit.data import dead_leaves


def _radial_power(images):
  """Radially averaged power spectrum of the images' luminance, averaged.

  Index k is the power at k cycles per image. A Hann window keeps the
  image borders' discontinuities out of the spectrum.
  """
  gray = images.mean(axis=-1)
  gray -= gray.mean(axis=(1, 2), keepdims=True)
  side = gray.shape[1]
  gray *= np.outer(np.hanning(side), np.hanning(side))
  power = (np.abs(np.fft.fft2(gray)) ** 2).mean(axis=0)
  freq = np.fft.fftfreq(side, 1.0 / side)
  radius = np.rint(np.hypot(freq[:, None], freq)).astype(int).ravel()
  return np.bincount(radius, power.ravel()) / np.bincount(radius)


def _log_log_slope(x, y):
  return np.polyfit(np.log(x), np.log(y), 1)[0]


def test_same_arguments_give_identical_bytes():
  a = dead_leaves.render_dead_leaves(7, 'train', 64, seed=3)
  b = dead_leaves.render_dead_leaves(7, 'train', 64, seed=3)
  assert a.tobytes() == b.tobytes()


def test_image_does_not_depend_on_generation_order():
  batch = dead_leaves.dead_leaves_images('test', 4, 32, seed=1)
  alone = dead_leaves.render_dead_leaves(3, 'test', 32, seed=1)
  np.testing.assert_array_equal(batch[3], alone)
  later = dead_leaves.dead_leaves_images('test', 2, 32, seed=1, start=3)
  np.testing.assert_array_equal(later[0], alone)


def test_different_seed_index_or_split_changes_image():
  base = dead_leaves.render_dead_leaves(0, 'train', 48, seed=0)
  for other in (dead_leaves.render_dead_leaves(0, 'train', 48, seed=1),
                dead_leaves.render_dead_leaves(1, 'train', 48, seed=0),
                dead_leaves.render_dead_leaves(0, 'test', 48, seed=0)):
    assert np.abs(base - other).mean() > 0.05  # A new picture, not a tweak.


@pytest.mark.parametrize('resolution', [1, 17, 64])
def test_shape_range_dtype(resolution):
  images = dead_leaves.dead_leaves_images('train', 3, resolution, seed=0)
  assert images.shape == (3, resolution, resolution, 3)
  assert images.dtype == np.float32
  assert images.min() >= 0.0 and images.max() <= 1.0
  alone = dead_leaves.render_dead_leaves(0, 'train', resolution, seed=0)
  assert alone.dtype == np.float32 and alone.shape == (resolution,) * 2 + (3,)


def test_split_loader_returns_the_count_and_splits_differ():
  train = dead_leaves.dead_leaves_images('train', 5, 32, seed=2)
  test = dead_leaves.dead_leaves_images('test', 2, 32, seed=2)
  validation = dead_leaves.dead_leaves_images('validation', 2, 32, seed=2)
  assert train.shape == (5, 32, 32, 3) and test.shape == (2, 32, 32, 3)
  assert not np.array_equal(train[0], test[0])
  assert not np.array_equal(validation[0], test[0])
  assert not np.array_equal(validation[0], train[0])
  assert all(np.ptp(image) > 0.2 for image in train)  # Not blank.


def test_power_spectrum_falls_as_inverse_square():
  images = dead_leaves.dead_leaves_images('train', 50, 128, seed=0)
  power = _radial_power(images)
  freqs = np.arange(2, 41)
  assert -2.6 <= _log_log_slope(freqs, power[freqs]) <= -1.4


def test_same_picture_at_every_resolution():
  for index in range(4):
    large = dead_leaves.render_dead_leaves(index, 'train', 128, seed=0)
    small = dead_leaves.render_dead_leaves(index, 'train', 64, seed=0)
    pooled = large.reshape(64, 2, 64, 2, 3).mean(axis=(1, 3))
    assert np.abs(pooled - small).mean() < 0.03


def test_radii_follow_the_power_law():
  r_min, r_max = 0.01, 0.5
  radii = dead_leaves.sample_radii(np.random.default_rng(0), 200_000,
                                   r_min, r_max, exponent=3.0)
  assert radii.min() >= r_min and radii.max() <= r_max
  edges = np.geomspace(r_min, 0.1, 12)
  counts, _ = np.histogram(radii, edges)
  centres = np.sqrt(edges[1:] * edges[:-1])
  # Undo the (1 + 2r)^2 weight of leaves that touch the image; the bins'
  # widths grow as r, so a density r^-3 gives counts ~ r^-2.
  density = counts / np.diff(edges) / (1 + 2 * centres) ** 2
  assert abs(_log_log_slope(centres, density) + 3.0) < 0.1


def _leaves(**overrides):
  """Two leaves in the style of `sample_leaves`, front first."""
  leaves = {
      'centre': np.array([[0.5, 0.5], [0.5, 0.7]]),
      'radius': np.array([0.25, 0.25]),
      'shape': np.full(2, dead_leaves.SHAPES.index('disc')),
      'half_axes': np.array([[0.25, 0.25], [0.25, 0.25]]),
      'angle': np.array([0.0, 0.0]),
  }
  leaves.update(overrides)
  return leaves


def test_shapes_have_their_area_and_the_front_leaf_wins():
  side = 200
  owners = dead_leaves.leaf_owners(_leaves(), side)
  np.testing.assert_allclose((owners == 0).sum(), np.pi * 0.25 ** 2 * side ** 2,
                             rtol=0.01)
  grid = owners.reshape(side, side)
  assert grid[100, 130] == 0  # In both discs: the front one owns it.
  assert grid[100, 170] == 1 and grid[10, 10] == -1
  # A square whose half-diagonal is the radius, turned by 45 degrees: a
  # diamond reaching the radius along the axes.
  rectangle = dead_leaves.SHAPES.index('rectangle')
  square = _leaves(shape=np.full(2, rectangle),
                   half_axes=np.full((2, 2), 0.25 / np.sqrt(2)),
                   angle=np.full(2, np.pi / 4))
  grid = dead_leaves.leaf_owners(square, side).reshape(side, side)
  assert (grid == 0).sum() == pytest.approx(0.125 * side ** 2, rel=0.01)
  assert grid[100, 52] == 0  # A corner.
  assert grid[69, 69] == -1  # In its bounding disc, not in the diamond.


def test_blur_keeps_flat_images_and_has_its_sigma():
  flat = np.full((32, 32, 3), 0.4)
  np.testing.assert_allclose(dead_leaves.gaussian_blur(flat, 3.0), 0.4)
  step = np.zeros((32, 32, 1))
  step[:, 16:] = 1.0
  edges = dead_leaves.gaussian_blur(step, 2.0)[:, [0, -1], 0]
  np.testing.assert_allclose(edges, [[0.0, 1.0]] * 32, atol=1e-3)  # No wrap.
  impulse = np.zeros((64, 64, 1))
  impulse[32, 32] = 1.0
  blurred = dead_leaves.gaussian_blur(impulse, 2.5)[..., 0]
  assert blurred.sum() == pytest.approx(1.0)
  profile, offsets = blurred[:, 32], np.arange(64) - 32
  spread = np.sqrt((profile * offsets ** 2).sum() / profile.sum())
  assert spread == pytest.approx(2.5, rel=0.02)


def test_bad_arguments_raise():
  with pytest.raises(ValueError, match='split'):
    dead_leaves.render_dead_leaves(0, 'val')
  with pytest.raises(ValueError):
    dead_leaves.render_dead_leaves(-1)
  with pytest.raises(ValueError):
    dead_leaves.render_dead_leaves(0, resolution=0)
