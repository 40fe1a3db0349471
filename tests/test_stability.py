"""The stable meta-training recipe: outer schedule, best checkpoint, collapse detection,
and learned inner rates carried through evaluation and export."""

import json
import logging
import os

import gin
import numpy as np
import pytest
import tensorflow as tf

from tf_metainit import checkpoints
from tf_metainit import export
from tf_metainit import monitor
from tf_metainit import runs
from tf_metainit import train
from tf_metainit.cli import common
from tf_metainit.fields import functional
from tf_metainit.meta import inner
from tf_metainit.meta import outer

from test_train_cli import ALGORITHM_BINDINGS, SMALL, TEXT_CPU


def test_outer_schedule_closed_form():
  cosine = outer.OuterSchedule(1e-3, 110, warmup_steps=10, decay="cosine",
                               final_fraction=0.1)
  expected = {0: 1e-4, 4: 5e-4, 9: 1e-3, 10: 1e-3,
              60: 1e-3 * (0.1 + 0.9 * 0.5),   # half-way through the decay
              110: 1e-4, 500: 1e-4}
  for step, value in expected.items():
    np.testing.assert_allclose(float(cosine(step)), value, rtol=1e-5)
  constant = outer.OuterSchedule(1e-3, 100, warmup_steps=4)
  np.testing.assert_allclose([float(constant(s)) for s in (0, 1, 3, 50)],
                             [2.5e-4, 5e-4, 1e-3, 1e-3], rtol=1e-6)
  with pytest.raises(ValueError, match="outer_lr_decay"):
    outer.OuterSchedule(1e-3, 100, decay="linear")


def test_best_checkpoint_and_collapse_monitor(tmp_path, caplog):
  weight = tf.Variable(0.0)
  best = checkpoints.BestCheckpoint(str(tmp_path / "best"),
                                    {"w": tf.train.Checkpoint(w=weight)})
  watch = monitor.CollapseMonitor(3.0, best)
  caplog.set_level(logging.WARNING)
  for step, (value, w) in enumerate([(20.0, 1.0), (22.0, 2.0), (20.0, 3.0)], 1):
    weight.assign(w)
    assert not watch.check_validation(step, {"psnr": value})
  weight.assign(4.0)
  assert watch.check_validation(4, {"psnr": 18.9})  # 3.1 dB below the best
  assert "Collapse at step 4" in caplog.text and "at step 2" in caplog.text
  # The kept init is step 2's, and a resumed run knows the value to beat.
  reader = tf.train.load_checkpoint(str(tmp_path / "best"))
  assert reader.get_tensor("w/w/.ATTRIBUTES/VARIABLE_VALUE") == 2.0
  again = checkpoints.BestCheckpoint(str(tmp_path / "best"),
                                     {"w": tf.train.Checkpoint(w=weight)})
  assert (again.step, again.value) == (2, 22.0)
  # The inner loop that stops reducing the loss is a collapse sign too.
  for _ in range(5):
    watch.record_inner(0.05, 0.05)
  assert watch.check_inner(10)
  assert "no longer reduces" in caplog.text
  watch.record_inner(0.05, 0.03)
  assert not watch.check_inner(11)


def _train(root, bindings):
  common.parse_gin([TEXT_CPU], list(SMALL) + list(bindings))
  return train.meta_train(str(root))


def _step_of(path):
  return int(tf.train.load_checkpoint(path).get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE"))


@pytest.mark.parametrize("algorithm", ALGORITHM_BINDINGS)
def test_stop_on_collapse_keeps_the_best(algorithm, tmp_path, clean_gin, caplog):
  # An outer learning rate far too high for SIREN, and any drop counts (margin 0).
  caplog.set_level(logging.WARNING)
  stopped = _train(tmp_path / "run", list(ALGORITHM_BINDINGS[algorithm]) + [
      "meta_train.num_iterations = 40", "outer/Adam.learning_rate = 3e-2",
      "meta_train.val_every = 1", "meta_train.collapse_margin_db = 0.0",
      "meta_train.stop_on_collapse = True"])
  assert stopped < 40
  assert f"Collapse at step {stopped}" in caplog.text
  latest = checkpoints.latest_checkpoint(str(tmp_path / "run"))
  best = checkpoints.meta_checkpoint(str(tmp_path / "run"), "best")
  assert _step_of(latest) == stopped
  record = json.loads((tmp_path / "run" / "train" / "best" / "best.json").read_text())
  assert record["step"] < stopped and os.path.basename(best) == record["checkpoint"]


def test_learned_rates_through_evaluate_and_export(tmp_path, clean_gin):
  root = tmp_path / "run"
  _train(root, ["meta_train.num_iterations = 4", "meta_train.val_every = 2",
                "meta_train.inner_optimizer = @inner/LearnedSGD()",
                "outer/Adam.learning_rate = 1e-3"])
  gin.clear_config()
  common.parse_run_config(str(root), [], [], task_for=("export",))
  task = gin.query_parameter("evaluate.task").scoped_configurable_fn()
  init = runs.load_init(task, str(root))
  params, learned, path = init.params, init.optimizer, init.source
  assert "best" in path and learned.mode == "per_layer_step"
  rates = np.stack([np.asarray(r) for r in learned.rates])
  assert rates.shape == (6, 2) and not np.allclose(rates, 1e-2)  # meta-learned
  latest_path = runs.load_init(task, str(root), "latest").source
  assert _step_of(latest_path) == 4 and int(path.rsplit("-", 1)[1]) in (2, 4)

  out = tmp_path / "export"
  manifest = export.export(str(root), str(out))
  assert manifest["test_time"]["optimizer"]["mode"] == "per_layer_step"
  assert manifest["signatures"]["adapt"]["optimizer"]["name"] == "learned_sgd"
  saved = np.load(out / "weights.npz")
  np.testing.assert_allclose(np.stack([saved[f"inner_lr_{i}"] for i in range(6)]), rates)
  # The SavedModel's adapt applies the learned rates: same fit as the package's loop,
  # including a step past the trained K = 2 (it reuses step 2's rates).
  image = task.test_signals()["image"][0]
  loaded = tf.saved_model.load(str(out))
  result = loaded.signatures["adapt"](image=tf.constant(image), num_steps=tf.constant(3))
  obs = task.observe({"image": image[None]}, None)
  fitted, _ = inner.adapt(task.loss, functional.batch_params(params, 1),
                          lambda i: (obs["coords"], obs["pixels"]), 3, learned)
  expected = task.metrics(fitted, {"image": image[None]})["psnr"][0]
  np.testing.assert_allclose(float(result["psnr_after"]), float(expected), atol=1e-3)
