"""Tests for loading a folder of images."""

import numpy as np
from PIL import Image
import pytest

from tf_metainit.data import image_folder


def _save(path, array, mode=None):
  Image.fromarray(np.asarray(array), mode).save(path)


def test_centre_crop_removes_side_bands(tmp_path):
  # 40x60: 10-column red bands left and right of a 40x40 blue/green square.
  image = np.zeros((40, 60, 3), np.uint8)
  image[:, :10] = image[:, 50:] = (255, 0, 0)
  image[:, 10:50] = (0, 0, 255)
  image[:20, 10:50] = (0, 255, 0)  # Top half green: checks row order.
  _save(tmp_path / 'wide.png', image)
  out = image_folder.folder_images(str(tmp_path), resolution=40)
  assert out.shape == (1, 40, 40, 3)
  assert out[..., 0].max() == 0.0  # No red band survives.
  np.testing.assert_allclose(out[0, :20], np.broadcast_to((0, 1, 0),
                                                          (20, 40, 3)))
  np.testing.assert_allclose(out[0, 20:], np.broadcast_to((0, 0, 1),
                                                          (20, 40, 3)))


def test_tall_image_crops_rows_and_resizes(tmp_path):
  image = np.full((90, 30, 3), 255, np.uint8)
  image[30:60] = 0  # Central 30x30 square is black.
  _save(tmp_path / 'tall.png', image)
  out = image_folder.folder_images(str(tmp_path), resolution=11)
  assert out.shape == (1, 11, 11, 3)
  np.testing.assert_allclose(out, 0.0, atol=1e-6)


def test_modes_extensions_and_order(tmp_path):
  rng = np.random.default_rng(0)
  _save(tmp_path / 'b_rgb.JPG', rng.integers(0, 256, (50, 70, 3), np.uint8))
  _save(tmp_path / 'a_gray.png', np.full((32, 32), 128, np.uint8))
  rgba = np.zeros((32, 32, 4), np.uint8)
  rgba[..., 0] = 255
  rgba[:, 16:, 3] = 255  # Left half transparent -> white; right half red.
  _save(tmp_path / 'c_rgba.png', rgba)
  _save(tmp_path / 'd_pal.gif', np.full((20, 20), 7, np.uint8), 'P')
  _save(tmp_path / 'e_gray16.png', np.full((16, 16), 65535, np.uint16))
  (tmp_path / 'notes.txt').write_text('not an image')
  out = image_folder.folder_images(str(tmp_path), resolution=32)
  assert out.shape == (5, 32, 32, 3) and out.dtype == np.float32
  assert 0.0 <= out.min() and out.max() <= 1.0
  np.testing.assert_allclose(out[0], 128 / 255, atol=1e-6)  # Gray first.
  np.testing.assert_allclose(out[2, :, :14], 1.0, atol=1e-6)
  np.testing.assert_allclose(out[2, :, 18:], np.broadcast_to(
      (1, 0, 0), (32, 14, 3)), atol=1e-6)
  np.testing.assert_allclose(out[4], 1.0, atol=1e-6)
  assert image_folder.folder_images(str(tmp_path), 8, max_images=2).shape == (
      2, 8, 8, 3)


def test_recursive(tmp_path):
  (tmp_path / 'sub').mkdir()
  _save(tmp_path / 'sub' / 'x.bmp', np.zeros((12, 12, 3), np.uint8))
  _save(tmp_path / 'y.webp', np.full((12, 12, 3), 255, np.uint8))
  assert image_folder.folder_images(str(tmp_path), 6).shape[0] == 1
  images = image_folder.folder_images(str(tmp_path), 6, recursive=True)
  assert images.shape == (2, 6, 6, 3) and images[0].max() == 0.0  # 'sub/x' < 'y'.


def test_missing_folder_error(tmp_path):
  with pytest.raises(FileNotFoundError, match='does not exist.*existing'):
    image_folder.folder_images(str(tmp_path / 'nope'), 8)


def test_empty_folder_error_lists_extensions(tmp_path):
  (tmp_path / 'sub').mkdir()
  (tmp_path / 'readme.txt').write_text('hi')
  with pytest.raises(ValueError, match=r'No images.*\.png.*\.webp.*recursive'):
    image_folder.folder_images(str(tmp_path), 8)


def test_corrupt_file_error_names_file(tmp_path):
  _save(tmp_path / 'good.png', np.zeros((8, 8, 3), np.uint8))
  (tmp_path / 'broken.png').write_bytes(b'\x89PNG garbage bytes' * 10)
  with pytest.raises(ValueError, match=r'broken\.png.*Replace it'):
    image_folder.folder_images(str(tmp_path), 8)


def test_partly_transparent_rgba_composites_on_white_within_range(tmp_path):
  # Top half fully transparent -> white; bottom half red at alpha 128.
  rgba = np.zeros((56, 56, 4), np.uint8)
  rgba[28:] = (255, 0, 0, 128)
  _save(tmp_path / 'sticker.png', rgba)
  # 56 -> 7 px: float rounding of the antialiased resize lifts white past 1.0.
  out = image_folder.folder_images(str(tmp_path), resolution=7)
  assert out.shape == (1, 7, 7, 3) and out.max() <= 1.0 and out.min() >= 0.0
  np.testing.assert_array_equal(out[0, :3], 1.0)  # Rows 0-2 see only the top.
  half = 1.0 - 128 / 255  # rgb * a + (1 - a) for the green and blue channels.
  np.testing.assert_allclose(out[0, 4:], np.broadcast_to((1.0, half, half),
                                                         (3, 7, 3)), atol=1 / 255)


def test_resized_white_stays_at_one():
  white = np.ones((128, 128, 3), np.float32)
  assert image_folder.center_crop_resize(white, 7).numpy().max() == 1.0
