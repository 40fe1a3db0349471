"""Tests of the procedural CT-like anatomy slices."""

import numpy as np
import pytest
from scipy import ndimage

from tf_metainit.data import anatomy


def _frame_radius(height, width):
  """Distance of each pixel centre from the frame's origin (X = 2x, Y = -2y)."""
  x = 2 * (np.arange(width) / width - 0.5)
  y = -2 * (np.arange(height) / height - 0.5)
  return np.hypot(x[None, :], y[:, None])


def _well_inside(image, margin=3):
  """Pixels at least `margin` pixels inside the body (not its blurred rim)."""
  return ndimage.binary_erosion(image > 0, iterations=margin)


def test_same_arguments_give_identical_bytes():
  a = anatomy.render_slice(7, "validation", 48, seed=3)
  b = anatomy.render_slice(7, "validation", 48, seed=3)
  assert a.tobytes() == b.tobytes()


def test_slice_does_not_depend_on_generation_order():
  batch = anatomy.slice_arrays("test", 4, 32, seed=1)["image"]
  alone = anatomy.render_slice(3, "test", 32, seed=1)
  np.testing.assert_array_equal(batch[3], alone)


def test_splits_seeds_and_indices_differ():
  base = anatomy.render_slice(0, "train", 48)
  for other in (anatomy.render_slice(0, "validation", 48),
                anatomy.render_slice(0, "test", 48),
                anatomy.render_slice(1, "train", 48),
                anatomy.render_slice(0, "train", 48, seed=1)):
    assert np.abs(base - other).mean() > 0.02  # a new slice, not a tweak
  validation = anatomy.render_slice(0, "validation", 48)
  assert not np.array_equal(validation, anatomy.render_slice(0, "test", 48))


def test_bad_requests_raise():
  with pytest.raises(ValueError, match="unknown split.*test.*train"):
    anatomy.render_slice(0, "val")
  with pytest.raises(ValueError, match="unknown split"):
    anatomy.slice_arrays("training", 2, 16)
  with pytest.raises(ValueError, match="index"):
    anatomy.render_slice(-1)
  with pytest.raises(ValueError, match="resolution"):
    anatomy.render_slice(0, resolution=0)
  with pytest.raises(ValueError, match="supersample"):
    anatomy.render_slice(0, supersample=0)


@pytest.mark.parametrize("resolution, shape",
                         [(1, (1, 1)), (17, (17, 17)), (64, (64, 64)),
                          ((48, 80), (48, 80)), (np.int64(20), (20, 20))])
def test_shape_range_dtype(resolution, shape):
  images = anatomy.slice_arrays("train", 3, resolution)["image"]
  assert images.shape == (3,) + shape and images.dtype == np.float32
  assert images.min() >= 0 and images.max() <= 1
  alone = anatomy.render_slice(0, "train", resolution)
  assert alone.shape == shape and alone.dtype == np.float32


def test_air_at_corners_and_outside_the_disc():
  side = 128
  radius = _frame_radius(side, side)
  # Point samples (supersample 1) test the continuous slice itself: zero at
  # every pixel centre outside the disc; averaged pixels may reach half a
  # pixel diagonal further.
  half_diagonal = np.sqrt(2) / side
  for i in range(24):
    points = anatomy.render_slice(i, "train", side, supersample=1)
    assert np.all(points[radius > anatomy.RADIUS] == 0), i
    image = anatomy.render_slice(i, "train", side)
    assert np.all(image[radius > anatomy.RADIUS + half_diagonal] == 0), i
    assert np.all(image[[0, 0, -1, -1], [0, -1, 0, -1]] == 0), i
    assert image.max() > 0.3, i  # not blank


def test_same_slice_at_every_resolution():
  # Heads, chests and abdomens all appear among the first 12 slices.
  assert {anatomy.slice_kind(i) for i in range(12)} == set(anatomy.KINDS)
  for i in range(12):
    fine = anatomy.render_slice(i, "train", 256)
    coarse = anatomy.render_slice(i, "train", 64)
    blocks = fine.reshape(64, 4, 64, 4).mean(axis=(1, 3))
    assert np.abs(blocks - coarse).mean() < 0.03, i
    small = anatomy.render_slice(i, "train", 32)
    halves = coarse.reshape(32, 2, 32, 2).mean(axis=(1, 3))
    assert np.abs(halves - small).mean() < 0.04, i


def test_slices_vary():
  images = anatomy.slice_arrays("train", 16, 64)["image"]
  body = (images > 0).mean(axis=0) >= 0.5  # inside the body in most slices
  assert body.sum() > 500
  assert np.median(images.std(axis=0)[body]) > 0.1
  diffs = np.abs(images[:, None] - images[None]).mean(axis=(2, 3))
  assert diffs[~np.eye(16, dtype=bool)].min() > 0.02  # no near-duplicates


def test_kind_mix():
  kinds = [anatomy.slice_kind(i, "train") for i in range(300)]
  assert 0.2 < kinds.count("head") / 300 < 0.4
  assert 0.2 < kinds.count("thorax") / 300 < 0.4


def test_tissues_appear():
  images = anatomy.slice_arrays("train", 24, 128)["image"]
  bone = air = fat = soft = 0
  for image in images:
    inside = _well_inside(image)
    values = image[inside]
    bone += (image > 0.75).sum() >= 4
    air += (values < 0.1).sum() >= 10  # lungs, bowel gas, sinuses
    fat += ((values > 0.2) & (values < 0.35)).sum() >= 10
    soft += ((values > 0.35) & (values < 0.6)).sum() >= 10
  assert bone >= 0.8 * len(images)
  assert air >= 0.2 * len(images)
  assert fat >= 0.3 * len(images)
  assert soft == len(images)


def test_mr_contrast_is_its_own_stream():
  # A slice drawn as CT is the same slice whatever mr_fraction is.
  ct_slices = [i for i in range(12) if anatomy.slice_contrast(i, "train", 0, 0.5) == "ct"]
  assert ct_slices
  for i in ct_slices[:3]:
    np.testing.assert_array_equal(anatomy.render_slice(i, "train", 32, mr_fraction=0.5),
                                  anatomy.render_slice(i, "train", 32))
  contrasts = [anatomy.slice_contrast(i, "train", 0, 0.5) for i in range(400)]
  assert 0.42 < contrasts.count("ct") / 400 < 0.58
  assert 0.18 < contrasts.count("t1") / 400 < 0.32
  assert all(anatomy.slice_contrast(i, "test", 0, 0.0) == "ct" for i in range(50))
  with pytest.raises(ValueError, match="mr_fraction"):
    anatomy.slice_contrast(0, mr_fraction=1.5)


def test_mr_levels_invert_bone_and_fat():
  # The same geometry with MR levels (point samples, so no pixel mixes tissues):
  # CT's bright cortical bone is dark (both T1 and T2 bone levels lie in
  # [0.02, 0.08]), and T1's fat outshines its muscle.
  checked = 0
  for i in range(16):
    ct_image = anatomy.render_slice(i, "train", 128, supersample=1)
    mr_image = anatomy.render_slice(i, "train", 128, supersample=1, mr_fraction=1.0)
    bone = ct_image > 0.85
    if bone.sum() >= 5:
      assert np.median(mr_image[bone]) < 0.15, i
      checked += 1
    assert set(anatomy.MR_TISSUES[anatomy.slice_contrast(i, "train", 0, 1.0)]) == \
        set(anatomy.TISSUES)
  assert checked >= 4
  t1 = anatomy.MR_TISSUES["t1"]
  assert t1["fat"][0] > t1["muscle"][1] and t1["bone"][1] < t1["muscle"][0]
