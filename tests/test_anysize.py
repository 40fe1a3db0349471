"""Training views at random sizes (data/anysize.py) and fits of any size in bounded
memory (fields/chunked.py, memory.py), checked against hand computations and the
unchunked computation."""

import numpy as np
import pytest
import tensorflow as tf

from tf_metainit import memory
from tf_metainit.data import anysize
from tf_metainit.fields import chunked
from tf_metainit.fields import functional
from tf_metainit.fields import siren
from tf_metainit.meta import inner
from tf_metainit.meta import optimizers
from tf_metainit.tasks import image as image_task


def test_bilinear_matches_hand_values():
  image = tf.reshape(tf.range(12.0), [3, 4, 1])  # value 4 * row + col
  coords = tf.constant([[0.0, 0.0], [1 / 3, 1 / 4], [0.5 / 3, 0.5 / 4],
                        [2 / 3, 3 / 4], [0.25 / 3, 2.75 / 4]])
  np.testing.assert_allclose(anysize.bilinear(image, coords).numpy().ravel(),
                             [0.0, 5.0, 2.5, 11.0, 1.0 + 2.75], atol=1e-5)


def test_points_are_the_views_pixels_and_apart():
  image = tf.random.stateless_uniform([40, 40, 3], [1, 2])
  points = anysize.sample_points(image, 500, 400, 0.25, tf.constant([3, 4]))
  assert points["coords"].shape == (500, 2) and points["query_pixels"].shape == (400, 3)
  rows_cols = np.round(points["coords"].numpy() * 40).astype(int)
  np.testing.assert_array_equal(points["pixels"].numpy(),
                                image.numpy()[rows_cols[:, 0], rows_cols[:, 1]])
  # 500 + 300 on-grid draws from 1600 pixels: no pixel in both support and query.
  on_grid = np.round(points["query_coords"].numpy()[:300] * 40).astype(int)
  support = {tuple(p) for p in rows_cols}
  assert not support & {tuple(p) for p in on_grid}
  between = points["query_coords"].numpy()[300:] * 40
  assert np.mean(np.abs(between - np.round(between)) > 1e-3) > 0.9  # off the grid
  assert between.max() <= 39


def test_views_have_sizes_in_range_and_replay_by_position():
  source = tf.random.stateless_uniform([64, 64, 3], [5, 6])
  sizes = [int(anysize.random_view(source, 8, 64, tf.constant([k, 0])).shape[0])
           for k in range(200)]
  assert min(sizes) >= 8 and max(sizes) <= 64
  assert min(sizes) < 12 and max(sizes) > 48  # log-uniform reaches both ends
  whole = anysize.random_view(source, 64, 64, tf.constant([1, 1]))
  np.testing.assert_allclose(whole.numpy(), source.numpy(), atol=1e-6)  # no resize
  stream = lambda: anysize.training_points(
      tf.data.Dataset.from_tensors({"image": source}).repeat(), (8, 64), 64, 32, 0.5, 7)
  first = [x["pixels"].numpy() for x in stream().take(4)]
  again = [x["pixels"].numpy() for x in stream().take(4)]
  for a, b in zip(first, again):
    np.testing.assert_array_equal(a, b)
  assert not np.array_equal(first[0], first[1])


def test_range_errors_name_the_fix():
  with pytest.raises(ValueError, match="low must be <= high"):
    anysize.check_range("r", (64, 32), 256)
  with pytest.raises(ValueError, match="never upsampled"):
    anysize.check_range("r", (32, 512), 256)
  with pytest.raises(ValueError, match="pair"):
    anysize.check_range("r", 64, 256)


def _mse(field):
  return lambda p, x, y: tf.reduce_mean(tf.square(field.apply(p, x) - y), axis=[1, 2])


def test_chunked_loss_and_gradient_match_the_whole_and_finite_differences():
  field = siren.Siren(width=16, depth=3, out_dim=3)
  params = functional.batch_params(
      [tf.cast(p, tf.float64) for p in field.params()], 2)
  x = tf.random.stateless_uniform([1, 1001, 2], [1, 1], dtype=tf.float64)
  y = tf.random.stateless_uniform([2, 1001, 3], [2, 2], dtype=tf.float64)
  loss = _mse(field)
  with tf.GradientTape() as tape:
    tape.watch(params)
    whole = tf.reduce_sum(loss(params, x, y))
  expected = tape.gradient(whole, params)
  with tf.GradientTape() as tape:
    tape.watch(params)
    parts = tf.reduce_sum(chunked.mean_loss(loss, params, x, y, 300))
  got = tape.gradient(parts, params)
  np.testing.assert_allclose(parts.numpy(), whole.numpy(), rtol=1e-12)
  for g, e in zip(got, expected):
    np.testing.assert_allclose(g.numpy(), e.numpy(), rtol=1e-9, atol=1e-12)
  # One entry against a central difference of the chunked loss itself.
  eps = 1e-6
  bump = np.zeros(params[-1].shape)
  bump[1, 2] = eps
  shifted = lambda s: float(tf.reduce_sum(chunked.mean_loss(
      loss, params[:-1] + [params[-1] + s * bump], x, y, 300)))
  np.testing.assert_allclose((shifted(1) - shifted(-1)) / (2 * eps),
                             got[-1].numpy()[1, 2], rtol=1e-6)


def test_chunked_apply_matches_apply():
  field = siren.Siren(width=16, depth=3, out_dim=3)
  coords = image_task.pixel_grid_tensor(37, 23)
  params = functional.batch_params(field.params(), 2)
  np.testing.assert_allclose(chunked.apply(field, params, coords[None], 100).numpy(),
                             field.apply(params, coords[None]).numpy(), atol=1e-6)
  np.testing.assert_allclose(chunked.apply(field, field.params(), coords, 128).numpy(),
                             field.apply(field.params(), coords).numpy(), atol=1e-6)


def test_image_fit_in_chunks_is_the_whole_fit():
  field = siren.Siren(width=16, depth=3, out_dim=3)
  image = tf.random.stateless_uniform([1, 30, 41, 3], [3, 3]).numpy()
  fits = []
  for chunk in (256, 100000):
    task = image_task.ImageRegression(resolution=1, num_train=1, num_test=1,
                                      field=lambda: field, chunk_pixels=chunk)
    fitted = inner.fit(task, functional.batch_params(field.params(), 1),
                       {"image": image}, 5, optimizers.Adam(1e-3), 0)
    fits.append(fitted.params)
  for a, b in zip(*fits):
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-6)


def test_memory_check_refuses_with_the_size_needed():
  field = siren.Siren()
  needed = memory.image_fit_bytes(2000, 2000, field, 32768)
  assert needed == (memory.BASE_BYTES + memory.ACTIVATION_BYTES * 1280 * 32768
                    + memory.BYTES_PER_PIXEL * 4_000_000)
  assert memory.check_image_fit(2000, 2000, field, 32768, available=needed) == needed
  with pytest.raises(MemoryError, match=r"6000x6000 image needs about 4\.\d GB .* "
                                        r"1\.0 GB is available: downsample it to about"):
    memory.check_image_fit(6000, 6000, field, 32768, available=1 << 30)


def test_meta_loss_is_scored_on_the_query_after_fitting_the_support(clean_gin):
  from tf_metainit.meta import maml  # pylint: disable=g-import-not-at-top
  field = siren.Siren(width=16, depth=3)
  task = image_task.ImageRegression(
      dataset="text", resolution=16, num_train=2, num_test=1, field=lambda: field,
      train_resolutions=(8, 24), support_pixels=50, query_pixels=40,
      off_grid_fraction=0.5)
  signals = next(iter(task.train_dataset(0).batch(2)))
  assert signals["coords"].shape == (2, 50, 2)
  assert signals["query_coords"].shape == (2, 40, 2)
  theta0 = [tf.cast(p, tf.float64) for p in field.params()]
  signals = {k: tf.cast(v, tf.float64) for k, v in signals.items()}
  _, after, _ = maml.meta_loss_and_grads(task, theta0, signals, 0, 1,
                                         optimizers.SGD(0.1))
  # By hand: one SGD step on each signal's support, scored on its query.
  for b in range(2):
    with tf.GradientTape() as tape:
      tape.watch(theta0)
      support = tf.reduce_mean(tf.square(
          field.apply(theta0, signals["coords"][b]) - signals["pixels"][b]))
    adapted = [t - 0.1 * g for t, g in zip(theta0, tape.gradient(support, theta0))]
    query = tf.reduce_mean(tf.square(field.apply(adapted, signals["query_coords"][b])
                                     - signals["query_pixels"][b]))
    np.testing.assert_allclose(after[b].numpy(), query.numpy(), rtol=1e-10)
  # The held-out images are whole `resolution` grids, as before.
  assert task.test_signals()["image"].shape == (1, 16, 16, 3)


def test_window_support_is_a_dense_patch_of_the_views_grid():
  image = tf.random.stateless_uniform([100, 90, 3], [1, 2])
  points = anysize.sample_window(image, 64 * 64, 1000, 0.25, tf.constant([3, 4]))
  rows_cols = np.round(points["coords"].numpy() * [100, 90]).astype(int)
  np.testing.assert_array_equal(points["pixels"].numpy(),
                                image.numpy()[rows_cols[:, 0], rows_cols[:, 1]])
  low, high = rows_cols.min(0), rows_cols.max(0)
  np.testing.assert_array_equal(high - low, [63, 63])
  assert len({tuple(p) for p in rows_cols}) == 4096  # every pixel of the window once
  between = points["query_coords"].numpy()[750:] * [100, 90]
  assert (between >= low - 1e-4).all() and (between <= high + 1e-4).all()
  # A view smaller than the window: all of it, each pixel as often (up to one).
  small = tf.random.stateless_uniform([40, 40, 3], [1, 2])
  points = anysize.sample_window(small, 64 * 64, 1000, 0.25, tf.constant([3, 4]))
  counts = np.bincount((np.round(points["coords"].numpy() * 40).astype(int)
                        @ [40, 1]), minlength=1600)
  assert counts.min() == 2 and counts.max() == 3
