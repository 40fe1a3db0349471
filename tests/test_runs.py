"""The run record (runs.py): what training writes, what every job reads, and the one
line an old run without it gets."""

import json
import os
import subprocess
import sys

import gin
import numpy as np
import pytest
import tensorflow as tf

from tf_metainit import layout
from tf_metainit import runs
from tf_metainit import testtime
from tf_metainit import train
from tf_metainit.cli import common
from tf_metainit.meta import learned_lr
from tf_metainit.meta import optimizers

from test_faults import ENV, REPO

TINY = "testing/tiny.gin"


def _train(root, *bindings):
  gin.clear_config()
  try:
    common.parse_gin([TINY], ["meta_train.num_iterations = 2", *bindings])
    return train.meta_train(str(root))
  finally:
    gin.clear_config()


def _task_of(root):
  gin.clear_config()
  common.parse_run_config(str(root), [], [])
  task = gin.query_parameter("meta_train.task").scoped_configurable_fn()
  gin.clear_config()
  return task


@pytest.fixture(scope="module")
def learned(tmp_path_factory):
  """Second-order MAML with LSLR rates (the default job's recipe), 2 steps."""
  root = tmp_path_factory.mktemp("runs") / "learned"
  _train(root, "meta_train.algorithm = 'maml'",
         "meta_train.inner_optimizer = @inner/LearnedSGD()",
         "meta_train.val_every = 1", "outer/Adam.learning_rate = 1e-3")
  return root


def test_a_learned_run_records_its_mode_and_load_init_rebuilds_it(learned):
  record = json.loads((learned / "run.json").read_text())
  assert record["format"] == runs.FORMAT
  assert record["task"]["task"] == "image" and record["field"]["type"] == "siren"
  assert record["algorithm"] == "maml" and record["inner_steps"] == 2
  assert record["inner_optimizer"]["mode"] == "per_layer_step"
  assert record["test_time"]["optimizer"]["name"] == "learned_sgd"
  assert record["test_time"]["num_steps"] == 2
  assert record["training"]["outer_optimizer"] == {
      "name": "adam", "learning_rate": 1e-3, "beta1": 0.9, "beta2": 0.999,
      "epsilon": 1e-8}
  best = json.loads((learned / "train" / "best" / "best.json").read_text())
  assert record["best"] == {"step": best["step"], "value": best["value"]}
  task = _task_of(learned)
  init = runs.load_init(task, str(learned))
  assert isinstance(init.optimizer, learned_lr.LearnedRates)
  assert init.optimizer.mode == "per_layer_step" and init.num_steps == 2
  # The rates are the checkpoint's, not where training started them.
  reader = tf.train.load_checkpoint(init.source)
  saved = [reader.get_tensor(f"inner_lr/rate_{i}/.ATTRIBUTES/VARIABLE_VALUE")
           for i in range(len(init.optimizer.rates))]
  for rate, want in zip(init.optimizer.rates, saved):
    np.testing.assert_array_equal(np.asarray(rate), want)
  assert not np.allclose(np.stack(saved), 1e-2)
  assert testtime.label(init.optimizer) == "Meta (LSLR)"


def test_the_record_takes_the_configs_meta_settings_for_evaluate(tmp_path):
  # An evaluation budget and optimizer in the training config are the init's own.
  root = tmp_path / "run"
  _train(root, "evaluate.optimizer_settings = {'meta': @meta/SGD()}",
         "meta/SGD.learning_rate = 0.25", "evaluate.num_steps = {'meta': 7}")
  test_time = runs.read_record(str(root))["test_time"]
  assert test_time == {"optimizer": {"name": "sgd", "learning_rate": 0.25},
                       "num_steps": 7}
  init = runs.load_init(_task_of(root), str(root))
  assert init.optimizer == optimizers.SGD(0.25) and init.num_steps == 7


def test_an_old_run_without_a_record_gets_one_line_and_a_rerun_writes_it(tmp_path):
  root = tmp_path / "old"
  _train(root)
  os.remove(layout.record_path(str(root)))
  result = subprocess.run(
      [sys.executable, str(REPO / "bin" / "export.py"), f"--root_dir={root}",
       f"--export_dir={tmp_path / 'export'}"], capture_output=True, text=True, env=ENV,
      timeout=300)
  errors = [l for l in result.stderr.splitlines() if l.startswith("ERROR:")]
  assert result.returncode == 1 and len(errors) == 1, result.stderr[-2000:]
  assert "has no run record (run.json)" in errors[0]
  assert "rerunning the tf-metainit-train command" in errors[0]
  assert not (tmp_path / "export").exists()
  # The finished run's own command only writes the record.
  before = sorted(os.listdir(layout.checkpoints_dir(str(root))))
  assert _train(root) == 2
  assert sorted(os.listdir(layout.checkpoints_dir(str(root)))) == before
  assert runs.read_record(str(root))["inner_steps"] == 2


def test_a_corrupt_record_is_named(tmp_path):
  root = tmp_path / "run"
  root.mkdir()
  (root / "run.json").write_text("{not json")
  with pytest.raises(runs.RunRecordError, match="run.json is not valid JSON"):
    runs.read_record(str(root))
  (root / "run.json").write_text(json.dumps({"format": "other/9"}))
  with pytest.raises(runs.RunRecordError, match="of format 'other/9'"):
    runs.read_record(str(root))
