"""Tests for the TFDS image datasets, on tfds mock data (no downloads)."""

import socket

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from tf_metainit.data import tfds_images


def _mock(**kwargs):
  # USE_CODE: build examples from the features in the builder code, so no
  # metadata or network is needed.
  return tfds.testing.mock_data(policy=tfds.testing.MockPolicy.USE_CODE,
                                **kwargs)


def _index_image_dataset(self, split, **kwargs):
  """Fake CelebA: channel 0 = row index, channel 1 = column index."""
  del self, split, kwargs
  rows, cols = np.meshgrid(np.arange(218), np.arange(178), indexing='ij')
  image = np.stack([rows, cols, np.zeros_like(rows)], -1).astype(np.uint8)
  return tf.data.Dataset.from_tensors({'image': image}).repeat(2)


def test_celeba_crop_geometry_and_resize():
  with _mock(as_dataset_fn=_index_image_dataset):
    image = next(iter(tfds_images.tfds_dataset('celeb_a', 'train'))).numpy()
    half = next(iter(tfds_images.tfds_dataset('celeb_a', 'train', 89)))
  assert image.shape == (178, 178, 3) and image.dtype == np.float32
  rows = np.round(image[..., 0] * 255)
  cols = np.round(image[..., 1] * 255)
  np.testing.assert_array_equal(rows[:, 0], np.arange(20, 198))
  np.testing.assert_array_equal(cols[0], np.arange(178))
  # Resizing is linear, so away from the borders output pixel i sits at the
  # centre of source pixels 2i, 2i+1 of the crop: rows 20.5 + 2i.
  assert half.shape == (89, 89, 3)
  np.testing.assert_allclose(half[2:-2, 40, 0] * 255,
                             20.5 + 2 * np.arange(2, 87), atol=1e-3)
  np.testing.assert_allclose(half[40, 2:-2, 1] * 255,
                             0.5 + 2 * np.arange(2, 87), atol=1e-3)


@pytest.mark.parametrize('resolution', [None, 100])
def test_celeba_shapes_on_random_mock(resolution):
  with _mock(num_examples=2):
    ds = tfds_images.tfds_dataset('celeb_a', 'validation', resolution,
                                  shuffle_files=True)
    images = np.stack([x.numpy() for x in ds])
  side = resolution or 178
  assert images.shape == (2, side, side, 3) and images.dtype == np.float32
  assert 0.0 <= images.min() and images.max() <= 1.0
  assert images.std() > 0.01  # Random mock pixels, not a constant image.


def test_imagenette_square_output():
  with _mock(num_examples=3):  # Mock images have random, varied sizes.
    for resolution, side in ((None, 178), (48, 48)):
      ds = tfds_images.tfds_dataset('imagenette', 'train', resolution)
      assert ds.element_spec.shape == (side, side, 3)
      images = np.stack([x.numpy() for x in ds.batch(3)][0])
      assert images.shape == (3, side, side, 3)
      assert 0.0 <= images.min() and images.max() <= 1.0


def test_imagenette_centre_crop():
  wide = np.zeros((10, 30, 3), np.uint8)
  wide[:, 10:20] = 255  # Only the central square is white.
  out = tfds_images.imagenette_preprocess(tf.constant(wide), 5).numpy()
  np.testing.assert_allclose(out, 1.0, atol=1e-6)


def test_resized_white_images_stay_in_range():
  celeba = tf.fill((218, 178, 3), tf.constant(255, tf.uint8))
  imagenette = tf.fill((100, 150, 3), tf.constant(255, tf.uint8))
  # Both resizes lift white to 1.0000002 before clipping.
  assert tfds_images.celeba_preprocess(celeba, 89).numpy().max() == 1.0
  assert tfds_images.imagenette_preprocess(imagenette, 7).numpy().max() == 1.0


def test_unknown_name_lists_known():
  with pytest.raises(ValueError, match=r"mnist.*celeb_a.*imagenette"):
    tfds_images.tfds_dataset('mnist', 'train')


def test_unprepared_dataset_names_data_dir_and_the_download_binding(
    tmp_path, monkeypatch):
  def no_network(*unused_args):
    raise RuntimeError('tfds_dataset touched the network without download=True')

  monkeypatch.setattr(socket.socket, 'connect', no_network)
  with pytest.raises(FileNotFoundError) as error:
    tfds_images.tfds_dataset('imagenette', 'train', data_dir=str(tmp_path),
                             download=False)
  message = str(error.value)
  assert str(tmp_path) in message and "'imagenette' is not prepared" in message
  assert 'ImageRegression.download = True' in message
