"""CT task: observation geometry, losses against direct projections, a tiny run."""

import numpy as np
import pytest
import tensorflow as tf

from tf_metainit.fields import functional
from tf_metainit.fields import mlp
from tf_metainit.physics import ct
from tf_metainit.tasks import ct as ct_task


def small_task(**kw):
  field = lambda: mlp.FourierMLP(width=16, depth=3, num_features=16, sigma=5.0)
  args = dict(resolution=16, num_train=4, num_test=2, num_projections=5, field=field)
  args.update(kw)
  return ct_task.CTReconstruction(**args)


def test_coordinates_follow_reference_meshgrid_xy():
  grid = ct_task.pixel_grid_xy(4).reshape(4, 4, 2)
  # Reference: x1 = linspace(0, 1, 5)[:-1]; meshgrid(x1, x1) -> [..., 0] varies along cols.
  x1 = np.linspace(0, 1, 5)[:-1]
  xx, yy = np.meshgrid(x1, x1)
  np.testing.assert_allclose(grid[..., 0], xx)
  np.testing.assert_allclose(grid[..., 1], yy)


def test_test_views_are_evenly_spaced_and_targets_are_projections():
  task = small_task()
  signals = task.test_signals()
  obs = task.observe(signals, tf.constant([0, 0]), 4)
  np.testing.assert_allclose(obs["angles"][0].numpy(), np.arange(4) * np.pi / 4,
                             atol=1e-6)
  expected = ct.project(signals["image"], obs["angles"]).numpy()
  np.testing.assert_allclose(obs["targets"].numpy(), expected, atol=1e-6)
  assert obs["targets"].shape == (2, 4, 16)


def test_training_views_are_random_per_seed_and_in_range():
  task = small_task()
  signals = task.test_signals()
  a = task.observe(signals, tf.constant([1, 2]))["angles"].numpy()
  b = task.observe(signals, tf.constant([1, 2]))["angles"].numpy()
  c = task.observe(signals, tf.constant([1, 3]))["angles"].numpy()
  assert a.shape == (2, 5)
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, c)
  assert a.min() >= 0 and a.max() < np.pi


def test_loss_is_projection_mse_and_image_mse():
  task = small_task()
  signals = task.test_signals()
  params = functional.batch_params(task.field.params(), 2)
  image = task.image(params).numpy()
  obs = task.observe(signals, tf.constant([0, 0]), 2)
  loss = task.loss(params, *task.inner_batch(obs, 0, None)).numpy()
  by_hand = ((ct.project(image, obs["angles"]).numpy() - obs["targets"].numpy()) ** 2
             ).mean(axis=(1, 2))
  np.testing.assert_allclose(loss, by_hand, rtol=1e-5)
  obs = task.observe(signals, None, "image")
  loss = task.loss(params, *task.inner_batch(obs, 0, None)).numpy()
  np.testing.assert_allclose(loss, ((image - signals["image"]) ** 2).mean(axis=(1, 2)),
                             rtol=1e-5)
  psnr = task.metrics(params, signals)["psnr"].numpy()
  np.testing.assert_allclose(psnr, -10 * np.log10(by_hand * 0 + loss), rtol=1e-4)


def test_bad_sources_give_clear_errors(tmp_path):
  with pytest.raises(ValueError, match="source"):
    small_task(source="dicom")
  with pytest.raises(ValueError, match="CTReconstruction.path"):
    small_task(source="npz").test_signals()
  with pytest.raises(FileNotFoundError):
    small_task(source="npz", path=str(tmp_path / "missing.npz")).test_signals()
  bad = tmp_path / "ct.pkl"
  bad.write_bytes(b"not a pickle")
  with pytest.raises(ValueError, match="unpickle"):
    small_task(source="reference_pickle", path=str(bad)).test_signals()
  np.savez(tmp_path / "ct.npz", data_train=np.zeros((3, 8, 8), np.float32),
           data_test=np.zeros((2, 8, 8), np.float32))
  with pytest.raises(ValueError, match="resolution"):
    small_task(source="npz", path=str(tmp_path / "ct.npz")).test_signals()
  task = small_task(source="npz", path=str(tmp_path / "ct.npz"), resolution=8)
  with pytest.raises(ValueError, match="num_val = 4 are the validation set"):
    task.test_signals()
  task = small_task(source="npz", path=str(tmp_path / "ct.npz"), resolution=8, num_val=1)
  assert task.test_signals()["image"].shape == (2, 8, 8)


def test_a_test_file_replaces_the_test_split_resized_by_area(tmp_path):
  slices = np.zeros((3, 32, 32), np.float32)
  slices[:, :16] = 1.0  # top half bright: a 2x2 area mean keeps it exactly
  slices[1, :, :8] = 0.5
  np.savez(tmp_path / "real.npz", image=slices)
  task = small_task(test_file=str(tmp_path / "real.npz"), num_test=2)
  test = task.test_signals()["image"]
  expected = slices[:2].reshape(2, 16, 2, 16, 2).mean(axis=(2, 4))
  np.testing.assert_allclose(test, expected, atol=1e-6)
  assert task.splits()["test"].endswith("real.npz image[:2]")
  # Validation stays the source's own: a file of real slices is only ever scored.
  assert task.validation_signals()["image"].shape == (4, 16, 16)
  np.savez(tmp_path / "bad.npz", slices=slices)
  with pytest.raises(ValueError, match="expected one named 'image'"):
    small_task(test_file=str(tmp_path / "bad.npz")).test_signals()
  np.savez(tmp_path / "wide.npz", image=np.zeros((1, 8, 16), np.float32))
  with pytest.raises(ValueError, match="crop them to squares"):
    small_task(test_file=str(tmp_path / "wide.npz")).test_signals()


def test_the_anatomy_source_gives_the_generator_s_three_splits():
  from tf_metainit.data import anatomy  # pylint: disable=import-outside-toplevel
  task = small_task(source="anatomy", num_train=3, num_val=2)
  for split, signals, n in (("train", task._load()["train"], 3),
                            ("validation", task.validation_signals()["image"], 2),
                            ("test", task.test_signals()["image"], 2)):
    np.testing.assert_array_equal(signals, anatomy.slice_arrays(split, n, 16)["image"])
  assert task.splits()["validation"] == "anatomy slices 'validation' 0-1"


def test_mr_fraction_reaches_the_anatomy_slices_and_is_refused_elsewhere():
  from tf_metainit.data import anatomy  # pylint: disable=import-outside-toplevel
  task = small_task(source="anatomy", num_train=3, num_val=2, mr_fraction=1.0)
  np.testing.assert_array_equal(
      task.validation_signals()["image"],
      anatomy.slice_arrays("validation", 2, 16, mr_fraction=1.0)["image"])
  assert task.splits()["mr_fraction"] == 1.0
  with pytest.raises(ValueError, match="only read when CTReconstruction.source = 'anatomy'"):
    small_task(mr_fraction=0.5)
  with pytest.raises(ValueError, match=r"mr_fraction must be in \[0, 1\]"):
    small_task(source="anatomy", mr_fraction=2.0)
