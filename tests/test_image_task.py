"""ImageRegression's data: the pixel range, image folders with alpha, TFDS downloads."""

import gin
import numpy as np
from PIL import Image
import pytest

from tf_metainit.data import tfds_images
from tf_metainit.fields import siren
from tf_metainit.tasks import image


def _field():
  return siren.Siren(width=8, depth=2, w0=30.0)


def test_check_images_clips_round_off():
  images = np.full((2, 4, 4, 3), 0.5, np.float32)
  images[0, 0, 0] = 1.0000002  # What resizing a white pixel gives.
  images[1, 0, 0] = -3e-6
  checked = image.check_images(images, 4, 3, "test")
  assert checked.max() == 1.0 and checked.min() == 0.0
  np.testing.assert_array_equal(checked[:, 1:], 0.5)


@pytest.mark.parametrize("value", [255.0, 1.001, -0.01, np.nan])
def test_check_images_refuses_real_range_errors(value):
  images = np.full((1, 4, 4, 3), 0.5, np.float32)
  images[0, 1, 2] = value
  with pytest.raises(ValueError, match=r"where: pixel values .*divide 8-bit .* by 255"):
    image.check_images(images, 4, 3, "where")


def test_rgba_folder_reaches_the_task_in_range(tmp_path):
  for k in range(3):  # Transparent background, a half-transparent red square.
    rgba = np.zeros((64, 64, 4), np.uint8)
    rgba[16:48, 16:48] = (255, 0, 0, 64 * (k + 1))
    Image.fromarray(rgba, "RGBA").save(tmp_path / f"{k}.png")
  task = image.ImageRegression(dataset="folder", folder=str(tmp_path), resolution=7,
                               num_test=1, num_val=1, field=_field)
  test = task.test_signals()["image"]
  assert test.shape == (1, 7, 7, 3) and test.max() == 1.0
  np.testing.assert_array_equal(test[0, 0, 0], 1.0)  # Transparent corner: white.
  assert test[0, 3, 3, 1] < 0.6  # The square's centre keeps its red.


def test_tfds_download_is_off_unless_bound(tmp_path, monkeypatch, clean_gin):
  calls = []

  def fake_load(name, **kwargs):
    calls.append(kwargs["download"])
    raise AssertionError(f"Dataset {name}: could not find data in {kwargs['data_dir']}.")

  monkeypatch.setattr(tfds_images.tfds, "load", fake_load)
  task = image.ImageRegression(dataset="imagenette", data_dir=str(tmp_path), field=_field)
  with pytest.raises(FileNotFoundError, match="ImageRegression.download = True"):
    task.test_signals()
  gin.parse_config(["ImageRegression.download = True",
                    f"ImageRegression.data_dir = '{tmp_path}'"])
  task = image.ImageRegression(dataset="imagenette", field=_field)
  with pytest.raises(AssertionError, match="could not find data"):  # TFDS's own.
    task.test_signals()
  assert calls == [False, True]
