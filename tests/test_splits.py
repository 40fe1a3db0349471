"""Every task's validation split is its own: disjoint from train and test, recorded in
the run record, and meta-training refuses a task without one."""

import json

import numpy as np
from PIL import Image
import pytest

from tf_metainit import monitor
from tf_metainit import runs
from tf_metainit.fields import mlp
from tf_metainit.fields import siren
from tf_metainit.meta import optimizers
from tf_metainit.tasks import contract
from tf_metainit.tasks import ct
from tf_metainit.tasks import image


def _siren():
  return siren.Siren(width=8, depth=2, w0=30.0)


def _rows(array):
  """The set of a signal array's rows as bytes, to compare splits exactly."""
  return {row.tobytes() for row in np.asarray(array)}


@pytest.mark.parametrize("dataset", ["dead_leaves", "text"])
def test_procedural_images_have_three_disjoint_splits(dataset):
  task = image.ImageRegression(dataset=dataset, resolution=16, num_train=12, num_test=4,
                               num_val=3, field=_siren)
  val = task.validation_signals()["image"]
  test = task.test_signals()["image"]
  assert val.shape == (3, 16, 16, 3) and test.shape == (4, 16, 16, 3)
  assert not _rows(val) & _rows(test)
  assert not _rows(val) & _rows(task._train_images)
  assert task.splits()["validation"] == f"{dataset} 'validation' images 0-2 at 16 px"


def test_folder_splits_are_the_sorted_files_train_validation_test(tmp_path):
  for k in range(9):  # Image k is flat at level k / 10, so each file is known.
    Image.fromarray(np.full((8, 8, 3), 25 * k, np.uint8)).save(tmp_path / f"{k}.png")
  task = image.ImageRegression(dataset="folder", folder=str(tmp_path), resolution=8,
                               num_test=2, num_val=3, field=_siren)
  level = lambda images: [round(float(im.mean()) * 255 / 25) for im in images]
  assert level(task.test_signals()["image"]) == [7, 8]
  assert level(task.validation_signals()["image"]) == [4, 5, 6]
  assert level(task._train_images) == [0, 1, 2, 3]
  with pytest.raises(ValueError, match="none are left for training.*num_val"):
    image.ImageRegression(dataset="folder", folder=str(tmp_path), resolution=8,
                          num_test=4, num_val=5, field=_siren).test_signals()


def _ct(**kw):
  field = lambda: mlp.FourierMLP(width=8, depth=2, num_features=8, sigma=5.0)
  return ct.CTReconstruction(resolution=16, num_train=6, num_test=3, num_val=2,
                             num_projections=3, field=field, **kw)


def test_ct_phantoms_and_files_split_three_ways(tmp_path):
  task = _ct()
  val, test = task.validation_signals()["image"], task.test_signals()["image"]
  assert val.shape == (2, 16, 16)
  assert not _rows(val) & _rows(test) and not _rows(val) & _rows(task._load()["train"])
  train = np.stack([np.full((16, 16), k / 10, np.float32) for k in range(7)])
  np.savez(tmp_path / "ct.npz", data_train=train, data_test=train[:3])
  task = _ct(source="npz", path=str(tmp_path / "ct.npz"))
  # The file's last num_val training images validate; training keeps the rest.
  np.testing.assert_array_equal(task.validation_signals()["image"], train[5:])
  np.testing.assert_array_equal(task._load()["train"], train[:5])


def test_meta_training_refuses_a_task_without_a_validation_split():
  class NoValidation(contract.Task):
    field = None

  with pytest.raises(NotImplementedError, match="no validation split.*never on the test"):
    monitor.Validation(NoValidation(), 1, optimizers.SGD(1.0), 0, 2, None)


def test_asking_for_more_validation_signals_than_the_split_holds_names_both():
  with pytest.raises(ValueError, match=r"num_val_signals = 5.*holds 2.*"
                                       r"CTReconstruction.num_val = 5"):
    monitor.Validation(_ct(), 1, optimizers.SGD(1.0), 0, 5, None)


def test_the_run_record_holds_the_splits(tmp_path):
  task = _ct()
  runs.write_record(str(tmp_path), task, "maml", 2, optimizers.SGD(1.0),
                    {"optimizer": optimizers.SGD(1.0).describe(), "num_steps": 2})
  with open(tmp_path / "run.json") as f:
    record = json.load(f)
  assert record["splits"] == {"train": "procedural phantoms 'train' 0-5",
                              "validation": "procedural phantoms 'validation' 0-1",
                              "test": "procedural phantoms 'test' 0-2", "seed": 0}
