"""Optimizers bound in gin as objects, the learning rate inside: end to end through gin,
one-line errors that show the new binding for each old form, and runs whose config.gin
predates the objects still evaluating and exporting (with the same numbers).

One tiny Reptile run (test_export's 8x8 text images, 3x16 SIREN, 2 outer steps) with an
Adam inner loop bound in gin is trained once and shared.
"""

import copy
import json
import logging
import pathlib
import re
import shutil
import types

import gin
import numpy as np
import pytest
import tensorflow as tf

from tf_metainit import evaluate
from tf_metainit import export
from tf_metainit import interpolate
from tf_metainit import runs
from tf_metainit import train
from tf_metainit.cli import common
from tf_metainit.meta import optimizers
from tf_metainit.tasks import image

from test_export import SMALL

TEXT_CPU = "image/text_cpu.gin"
ADAM_INNER = ("meta_train.inner_optimizer = @inner/Adam()",
              "inner/Adam.learning_rate = 1e-3")
# Standard with Adam 1e-3 and Meta with SGD 0.05, both for 2 steps, in the new form.
EVAL = ("evaluate.inits = ('standard', 'meta')", "evaluate.num_steps = 2",
        "evaluate.report_step = None", "evaluate.grid_signals = 1")
EVAL_OPTIMIZERS = ("evaluate.optimizer_settings = {'standard': @standard/Adam(), "
                   "'meta': @meta/SGD()}",
                   "standard/Adam.learning_rate = 1e-3", "meta/SGD.learning_rate = 0.05")
# The same, as a config.gin written before optimizers were objects held them: the
# sections of the scoped rates (image/maml.gin's inner/SGD too) did not exist.
OLD_INNER = "meta_train.inner_learning_rate = 0.001\nmeta_train.inner_optimizer = 'adam'"
SCOPED_RATES = re.compile(r"# Parameters for inner/\w+:\n# =+\n.*\n\n")
OLD_EVAL = ("# Parameters for evaluate:\n"
            "# " + "=" * 78 + "\n"
            "evaluate.optimizer_settings = \\\n"
            "    {'meta': ('sgd', 0.05), 'standard': {'full': ('adam', 0.001)}}\n")


@pytest.fixture
def clean_gin():
  gin.clear_config()
  yield
  gin.clear_config()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("bindings") / "run")
  gin.clear_config()
  common.parse_gin([TEXT_CPU], list(SMALL + ADAM_INNER))
  train.meta_train(root)
  gin.clear_config()
  return root


def _weights(root):
  reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(
      str(pathlib.Path(root, "train", "checkpoints"))))
  return {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map()
          if k.startswith("field/")}


def _evaluate_like_the_binary(root, bindings):
  """What bin/evaluate.py does: the run's config.gin, then the user's bindings."""
  gin.clear_config()
  common.parse_run_config(root, [], list(bindings))
  try:
    return evaluate.evaluate(root)
  finally:
    gin.clear_config()


def _export_like_the_binary(root, export_dir):
  gin.clear_config()
  common.parse_run_config(root, [], [], task_for=("export",))
  try:
    return export.export(root, export_dir)
  finally:
    gin.clear_config()


def _task():
  gin.clear_config()
  common.parse_gin([TEXT_CPU], list(SMALL))
  try:
    return image.ImageRegression()
  finally:
    gin.clear_config()


def _check_results(results, root):
  """Standard had Adam 1e-3 and Meta SGD 0.05: the optimizers, and their numbers."""
  entries = {name: results["inits"][name]["settings"]["full"]
             for name in ("standard", "meta")}
  assert (entries["standard"]["optimizer"], entries["standard"]["learning_rate"]) == (
      "adam", 1e-3)
  assert (entries["meta"]["optimizer"], entries["meta"]["learning_rate"]) == ("sgd", 0.05)
  table = (pathlib.Path(root) / "eval" / "results.md").read_text()
  assert "(adam 0.001, 2 steps)" in table and "(sgd 0.05, 2 steps)" in table
  task = _task()
  meta, _, _ = runs.load_meta_init(task, root)
  tto = evaluate.TestTimeOptimizer(task)
  for name, params, optimizer in (("standard", task.field.params(), optimizers.Adam(1e-3)),
                                  ("meta", meta, optimizers.SGD(0.05))):
    trace, _ = tto.run(params, task.test_signals(), optimizer, 2, "full")
    np.testing.assert_array_equal(np.asarray(entries[name]["metric"]).T, trace)


def test_objects_bound_in_gin_train_evaluate_and_export(trained, tmp_path, clean_gin):
  config = pathlib.Path(trained, "config.gin").read_text()
  assert "meta_train.inner_optimizer = @inner/Adam()" in config
  assert "inner/Adam.learning_rate = 0.001" in config
  # The bound object is the inner loop: the same run with it passed in Python.
  common.parse_gin([TEXT_CPU], list(SMALL))
  train.meta_train(str(tmp_path / "python"), inner_optimizer=optimizers.Adam(1e-3))
  bound, passed = _weights(trained), _weights(str(tmp_path / "python"))
  assert bound
  for name in bound:
    np.testing.assert_array_equal(bound[name], passed[name], err_msg=name)

  results = _evaluate_like_the_binary(trained, EVAL + EVAL_OPTIMIZERS)
  _check_results(results, trained)

  # Export's adapt defaults to the run's own inner optimizer.
  manifest = _export_like_the_binary(trained, str(tmp_path / "export"))
  assert manifest["training"]["inner_optimizer"] == {
      "name": "adam", "learning_rate": 1e-3, "beta1": 0.9, "beta2": 0.999,
      "epsilon": 1e-8}
  assert manifest["test_time"] == {"optimizer": "adam", "learning_rate": 1e-3,
                                   "num_steps": 2}
  assert manifest["signatures"]["adapt"]["optimizer"]["name"] == "adam"


def test_a_run_config_of_the_old_form_still_evaluates_and_exports(trained, tmp_path,
                                                                  clean_gin, caplog):
  old = str(tmp_path / "old")
  shutil.copytree(trained, old)
  config = pathlib.Path(old, "config.gin")
  text, removed = SCOPED_RATES.subn("", config.read_text())
  assert removed == 2 and "inner/" in text  # only meta_train.inner_optimizer is left
  text = text.replace("meta_train.inner_optimizer = @inner/Adam()", OLD_INNER)
  assert "inner/" not in text
  config.write_text(text + "\n" + OLD_EVAL)
  caplog.set_level(logging.INFO, logger="absl")  # the binaries log at INFO
  results = _evaluate_like_the_binary(old, EVAL)
  assert "predates optimizers as gin objects" in caplog.text
  assert ("meta_train.inner_optimizer = @inner/Adam(); inner/Adam.learning_rate = 0.001"
          in caplog.text)
  assert ("evaluate.optimizer_settings = {'meta': @meta/SGD(), 'standard': {'full': "
          "@standard_full/Adam()}}; meta/SGD.learning_rate = 0.05; "
          "standard_full/Adam.learning_rate = 0.001") in caplog.text
  _check_results(results, old)
  saved = json.loads((pathlib.Path(old) / "eval" / "results.json").read_text())
  assert saved["inits"]["meta"]["settings"]["full"]["optimizer"] == "sgd"

  manifest = _export_like_the_binary(old, str(tmp_path / "export"))
  assert manifest["training"]["inner_optimizer"]["learning_rate"] == 1e-3
  # The old config's evaluate.optimizer_settings name Meta's optimizer: SGD 0.05.
  assert manifest["test_time"] == {"optimizer": "sgd", "learning_rate": 0.05,
                                   "num_steps": 2}


def test_learned_rates_start_at_the_sgd_learning_rate(tmp_path, clean_gin):
  # With outer learning rate 0 the rates after one step are where they started.
  common.parse_gin([TEXT_CPU], list(SMALL) + [
      "meta_train.algorithm = 'maml'", "meta_train.inner_lr_mode = 'per_parameter'",
      "meta_train.num_iterations = 1", "meta_train.outer_learning_rate = 0.0",
      "inner/SGD.learning_rate = 0.05"])
  train.meta_train(str(tmp_path / "run"))
  _, learned, _ = runs.load_meta_init(image.ImageRegression(), str(tmp_path / "run"),
                                      "latest")
  assert learned.mode == "per_parameter"
  for rate in learned.rates:
    np.testing.assert_array_equal(np.asarray(rate), np.float32(0.05))


# --- Old forms -------------------------------------------------------------------------


def _error(fn):
  """The error's one line (gin adds where it was raised on lines of its own)."""
  with pytest.raises(ValueError) as info:
    fn()
  message, *context = str(info.value).split("\n")
  assert all(line.strip().startswith("In call to configurable") for line in context)
  return message


def _suggested(message):
  """The bindings an error suggests, parsed by gin and built."""
  gin.parse_config(message.split("inside: ")[1].replace("; ", "\n"))


OLD_SETTINGS = {"meta": ("sgd", 10.0), "standard": {1: ("adam", 1e-5), 25: ("Adam", 1e-4)},
                "meta:SV": optimizers.SGD(0.5)}
NEW_SETTINGS = {"meta": optimizers.SGD(10.0),
                "standard": {1: optimizers.Adam(1e-5), 25: optimizers.Adam(1e-4)},
                "meta:SV": optimizers.SGD(0.5)}


def test_old_evaluate_settings_show_the_new_form(tmp_path, clean_gin):
  message = _error(lambda: evaluate.evaluate(str(tmp_path), task=object(),
                                             optimizer_settings=OLD_SETTINGS))
  assert message.startswith("evaluate.optimizer_settings holds ('sgd', 10.0), not an "
                            "optimizer object")
  assert ("evaluate.optimizer_settings = {'meta': @meta/SGD(), 'standard': "
          "{1: @standard_1/Adam(), 25: @standard_25/Adam()}, 'meta:SV': "
          "@meta_SV/SGD()}; meta/SGD.learning_rate = 10.0; "
          "standard_1/Adam.learning_rate = 1e-05") in message
  _suggested(message)
  assert copy.deepcopy(gin.query_parameter("evaluate.optimizer_settings")) == (
      NEW_SETTINGS)
  assert not (tmp_path / "eval").exists()  # failed before doing anything


def test_old_bindings_fail_with_one_line_errors(tmp_path, clean_gin, capsys):
  # Through gin, as the binaries print it.
  common.parse_gin([], ["evaluate.optimizer_settings = {'meta': ('sgd', 1e-2)}"])
  with pytest.raises(SystemExit):
    common.run_and_report(lambda: evaluate.evaluate(str(tmp_path), task=object()))
  assert ("ERROR: evaluate.optimizer_settings holds ('sgd', 0.01), not an optimizer "
          "object (names and (name, learning_rate) pairs are the old form). Bind objects "
          "with the learning rate inside: evaluate.optimizer_settings = {'meta': "
          "@meta/SGD()}; meta/SGD.learning_rate = 0.01\n") == capsys.readouterr().err
  gin.clear_config()

  message = _error(lambda: interpolate.interpolate(
      str(tmp_path), task=object(), optimizer_settings={"meta": ("adam", 1e-3)}))
  assert message.endswith("interpolate.optimizer_settings = {'meta': @meta/Adam()}; "
                          "meta/Adam.learning_rate = 0.001")
  task = types.SimpleNamespace(default_setting="full")
  message = _error(lambda: export.export(str(tmp_path / "run"), str(tmp_path / "out"),
                                         task=task, optimizer=("adam", 1e-4)))
  assert message.endswith("export.optimizer = @export/Adam(); "
                          "export/Adam.learning_rate = 0.0001")
  _suggested(message)
  assert copy.deepcopy(gin.query_parameter("export.optimizer")) == optimizers.Adam(1e-4)
  gin.clear_config()

  message = _error(lambda: train.meta_train(str(tmp_path / "run"), task=object(),
                                            inner_optimizer="sgd"))
  assert message.endswith("meta_train.inner_optimizer = @inner/SGD(); "
                          "inner/SGD.learning_rate = 0.01")
  # A class without the parentheses is no object either.
  message = _error(lambda: train.meta_train(str(tmp_path / "run"), task=object(),
                                            inner_optimizer=optimizers.SGD))
  assert "@inner/SGD()" in message
  message = _error(lambda: common.parse_gin(
      [], ["meta_train.inner_learning_rate = 0.5  # old"]))
  assert message == ("meta_train.inner_learning_rate is gone: the learning rate lives "
                     "in the optimizer object. Bind meta_train.inner_optimizer = "
                     "@inner/SGD(); inner/SGD.learning_rate = 0.5")
  assert not (tmp_path / "run").exists()
