"""The meta-training binary end to end: outputs, exact resume, and clear user errors.

Each subprocess pays the TensorFlow import (~10 s on the 2-core machine), so the runs
of one algorithm are made once by a module fixture, two at a time, and shared. Config
and data errors are also checked in-process through the same two calls the binary's
main() makes (common.parse_gin, then train.meta_train under common.run_and_report);
their subprocess versions are marked slow.
"""

import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tf_metainit import train
from tf_metainit.cli import common

REPO = pathlib.Path(__file__).resolve().parents[1]
BINARY = REPO / "bin" / "meta_train.py"
TEXT_CPU = "image/text_cpu.gin"
# A tiny version of the CPU text config: 16x16 images, 3x32 SIREN, 8 training images.
SMALL = (
    "ImageRegression.resolution = 16",
    "ImageRegression.num_train = 8",
    "ImageRegression.num_test = 2",
    "Siren.width = 32",
    "Siren.depth = 3",
    "meta_train.log_every = 1",
    "meta_train.summary_every = 1",
    "meta_train.num_val_signals = 2",
)
ALGORITHM_BINDINGS = {
    "maml": ("meta_train.algorithm = 'maml'",),
    "reptile": ("meta_train.algorithm = 'reptile'", "meta_train.inner_optimizer = @inner/SGD()",
                "meta_train.inner_steps = 3",
                "meta_train.outer_batch_size = 2"),
}
FIELD_VARIABLES = ("kernel_0", "bias_0", "kernel_1", "bias_1", "kernel_2", "bias_2")


def _start(root_dir, bindings=(), gin_files=(TEXT_CPU,), flags=()):
  cmd = [sys.executable, str(BINARY), f"--root_dir={root_dir}", *flags]
  cmd += [f"--gin_file={f}" for f in gin_files]
  cmd += [f"--gin_bindings={b}" for b in SMALL + tuple(bindings)]
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
  # Run from elsewhere than the repo: gin files must be found through gin/.
  return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          cwd=str(pathlib.Path(root_dir).parent), env=env)


def _finish(proc, timeout=300):
  out, err = proc.communicate(timeout=timeout)
  return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _run(root_dir, bindings=(), gin_files=(TEXT_CPU,), flags=()):
  return _finish(_start(root_dir, bindings, gin_files, flags))


def _checkpoint_dir(root_dir):
  return os.path.join(root_dir, "train", "checkpoints")


def _field_weights(checkpoint_path):
  reader = tf.train.load_checkpoint(checkpoint_path)
  keys = {k for k in reader.get_variable_to_shape_map() if k.startswith("field/")}
  weights = {name: reader.get_tensor(f"field/{name}/.ATTRIBUTES/VARIABLE_VALUE")
             for name in FIELD_VARIABLES}
  # Every field variable is saved, and nothing else under field/.
  assert keys == {f"field/{n}/.ATTRIBUTES/VARIABLE_VALUE" for n in FIELD_VARIABLES}
  return weights


def _step(checkpoint_path):
  return int(tf.train.load_checkpoint(checkpoint_path).get_tensor(
      "step/.ATTRIBUTES/VARIABLE_VALUE"))


def _ok(result):
  assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"


@pytest.fixture(scope="module", params=[
    "maml", pytest.param("reptile", marks=pytest.mark.slow)])
def runs(request, tmp_path_factory):
  """2 iterations into `two` and 4 into `four` in parallel, then `two` copied to
  `resumed` and resumed to 4 iterations (alongside, for maml, the binary's
  bad-parameter run, so the second core is not idle)."""
  algorithm = request.param
  base = tmp_path_factory.mktemp(f"runs_{algorithm}")
  dirs = {name: str(base / name) for name in ("two", "four", "resumed")}
  algo = ALGORITHM_BINDINGS[algorithm]
  procs = {
      "two": _start(dirs["two"], algo + ("meta_train.num_iterations = 2",)),
      "four": _start(dirs["four"], algo + ("meta_train.num_iterations = 4",)),
  }
  results = {name: _finish(p) for name, p in procs.items()}
  _ok(results["two"])
  shutil.copytree(dirs["two"], dirs["resumed"])
  procs = {"resumed": _start(dirs["resumed"], algo + ("meta_train.num_iterations = 4",))}
  if algorithm == "maml":
    (base / "bad").mkdir()
    gin_files, bindings, _ = _bad_cases(base / "bad")["unknown_parameter"]
    procs["unknown_parameter"] = _start(base / "bad" / "run", bindings, gin_files)
  results.update({name: _finish(p) for name, p in procs.items()})
  return algorithm, dirs, results


def test_two_iterations_write_checkpoint_configs_and_summaries(runs):
  _, dirs, results = runs
  root = dirs["two"]
  _ok(results["two"])
  latest = tf.train.latest_checkpoint(_checkpoint_dir(root))
  assert latest is not None and latest.endswith("ckpt-2")
  assert _step(latest) == 2
  weights = _field_weights(latest)
  assert weights["kernel_1"].shape == (32, 32)
  assert weights["kernel_2"].shape == (32, 3)
  assert all(np.all(np.isfinite(w)) for w in weights.values())

  config = pathlib.Path(root, "config.gin").read_text()
  assert "meta_train.num_iterations = 2" in config
  assert "Siren.width = 32" in config
  operative = pathlib.Path(root, "operative_config.gin").read_text()
  assert "Siren.width = 32" in operative
  assert "ImageRegression.resolution = 16" in operative

  events = list(pathlib.Path(root, "train").glob("events.out.tfevents.*"))
  assert events
  tags = set()
  for path in events:
    for event in tf.compat.v1.train.summary_iterator(str(path)):
      tags.update(v.tag for v in event.summary.value)
  assert {"outer/loss_before_inner", "outer/loss_after_inner", "outer/steps_per_sec",
          "val/psnr_after_2_steps" if runs[0] == "maml" else "val/psnr_after_3_steps",
          "val/adapted", "val/target"} <= tags
  assert "step 2/2" in results["two"].stderr


def test_resume_gives_the_same_weights_as_one_run(runs):
  _, dirs, results = runs
  _ok(results["four"])
  _ok(results["resumed"])
  assert "Resuming from step 2" in results["resumed"].stderr
  resumed_path = tf.train.latest_checkpoint(_checkpoint_dir(dirs["resumed"]))
  four_path = tf.train.latest_checkpoint(_checkpoint_dir(dirs["four"]))
  assert resumed_path.endswith("ckpt-4") and four_path.endswith("ckpt-4")
  assert _step(resumed_path) == _step(four_path) == 4
  resumed, four = _field_weights(resumed_path), _field_weights(four_path)
  two = _field_weights(os.path.join(_checkpoint_dir(dirs["two"]), "ckpt-2"))
  max_diff = max(np.abs(resumed[n] - four[n]).max() for n in FIELD_VARIABLES)
  moved = max(np.abs(four[n] - two[n]).max() for n in FIELD_VARIABLES)
  print(f"{runs[0]}: resumed vs uninterrupted max |diff| {max_diff:.2e}; "
        f"steps 3-4 moved the weights by up to {moved:.2e}")
  assert moved > 1e-5  # the comparison below is not vacuous
  for name in FIELD_VARIABLES:
    np.testing.assert_allclose(resumed[name], four[name], rtol=0, atol=1e-6)
  # The outer Adam state resumed too.
  r_resumed = tf.train.load_checkpoint(resumed_path)
  r_four = tf.train.load_checkpoint(four_path)
  for key in r_four.get_variable_to_shape_map():
    if key.startswith("optimizer/"):
      np.testing.assert_allclose(r_resumed.get_tensor(key), r_four.get_tensor(key),
                                 rtol=1e-5, atol=1e-9, err_msg=key)


def _check_divergence(root_dir, good_checkpoint, stderr):
  assert "ERROR:" in stderr
  assert "training diverged" in stderr
  assert "learning rate of meta_train.inner_optimizer (now 1000000.0)" in stderr
  directory = _checkpoint_dir(root_dir)
  assert not any(name.startswith(("ckpt-3", "ckpt-4")) for name in os.listdir(directory))
  latest = tf.train.latest_checkpoint(directory)
  assert latest is not None and latest.endswith("ckpt-2")
  kept = _field_weights(latest)
  original = _field_weights(good_checkpoint)
  for name in FIELD_VARIABLES:
    assert np.all(np.isfinite(kept[name]))
    np.testing.assert_array_equal(kept[name], original[name])


@pytest.mark.slow
def test_divergence_binary_keeps_the_last_good_checkpoint(runs):
  _, dirs, _ = runs
  root = dirs["two"] + "_diverged"
  shutil.copytree(dirs["two"], root)
  # With MAML the update of step 3 turns the weights to NaN while that step's loss
  # (of the weights before the update) is still finite.
  result = _run(root, ALGORITHM_BINDINGS[runs[0]] + (
      "meta_train.num_iterations = 3", "inner/SGD.learning_rate = 1e6",
      "meta_train.inner_optimizer = @inner/SGD()"), flags=("--accept_config_changes",))
  assert result.returncode != 0
  assert "Traceback" not in result.stderr
  _check_divergence(root, os.path.join(_checkpoint_dir(dirs["two"]), "ckpt-2"),
                    result.stderr)


# --- Bad input -------------------------------------------------------------------------


def _bad_cases(tmp_path):
  empty = tmp_path / "empty"
  empty.mkdir(exist_ok=True)
  garbage = tmp_path / "garbage"
  garbage.mkdir(exist_ok=True)
  (garbage / "a.png").write_bytes(b"this is not a png" * 10)
  folder = ("ImageRegression.dataset = 'folder'", "ImageRegression.num_test = 1")
  return {
      "unknown_parameter": (
          (TEXT_CPU,), ("meta_train.num_iterationz = 3",),
          ["Bad gin configuration", "num_iterationz"]),
      "unknown_configurable": (
          (TEXT_CPU,), ("Sirenn.width = 3",), ["Bad gin configuration", "Sirenn"]),
      "missing_gin_file": (
          (TEXT_CPU, "image/no_such_file.gin"), (),
          ["no_such_file.gin", "not found"]),
      "empty_folder": (
          (TEXT_CPU,), folder + (f"ImageRegression.folder = '{empty}'",),
          ["No images found", str(empty)]),
      "unreadable_image": (
          (TEXT_CPU,), folder + (f"ImageRegression.folder = '{garbage}'",),
          ["Cannot decode image file", "a.png"]),
      "wrong_channel_count": (
          (TEXT_CPU,), ("Siren.out_dim = 1",),
          ["3 channels", "outputs 1", "out_dim"]),
      # Optimizers are gin objects with the learning rate inside.
      "optimizer_as_a_name": (
          (TEXT_CPU,), ("meta_train.inner_optimizer = 'adam'",),
          ["meta_train.inner_optimizer holds 'adam', not an optimizer object",
           "@meta/SGD() with meta/SGD.learning_rate = 0.01"]),
      "outer_optimizer_as_a_name": (
          (TEXT_CPU,), ("meta_train.outer_optimizer = 'adam'",),
          ["meta_train.outer_optimizer is 'adam'", "@outer/Adam()"]),
      "reptile_rates_need_their_optimizer": (
          (TEXT_CPU,), ("meta_train.algorithm = 'reptile'",),
          ["Reptile with meta_train.inner_optimizer = LearnedSGD",
           "meta_train.rates_optimizer = @rates/Adam()"]),
  }


BAD_CASES = ("unknown_parameter", "unknown_configurable", "missing_gin_file",
             "empty_folder", "unreadable_image", "wrong_channel_count",
             "optimizer_as_a_name", "outer_optimizer_as_a_name",
             "reptile_rates_need_their_optimizer")


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_in_process(case, tmp_path, capsys, clean_gin):
  """What bin/meta_train.py's main() does, minus flag parsing and the TF import."""
  gin_files, bindings, messages = _bad_cases(tmp_path)[case]
  root = tmp_path / "run"
  with pytest.raises(SystemExit) as exit_info:
    common.run_and_report(
        lambda: common.parse_gin(list(gin_files), list(SMALL + bindings)))
    common.run_and_report(lambda: train.meta_train(str(root)))
  assert exit_info.value.code == 1
  err = capsys.readouterr().err
  assert "ERROR:" in err
  for message in messages:
    assert message in err
  # Nothing was checkpointed for a run that failed.
  assert tf.train.latest_checkpoint(_checkpoint_dir(root)) is None


def test_divergence_in_process_keeps_the_last_good_checkpoint(runs, capsys, clean_gin):
  """Resumes a copy of the binary's 2-iteration run with a diverging learning rate."""
  algorithm, dirs, _ = runs
  root = dirs["two"] + "_diverged_in_process"
  shutil.copytree(dirs["two"], root)
  # With MAML, step 3's update turns the weights to NaN while its loss (of the weights
  # before the update) is still finite; step 3 would be checkpointed as the last one.
  # A fixed inner rate: learned (LSLR) rates are restored from the checkpoint instead.
  common.parse_gin([TEXT_CPU], list(SMALL + ALGORITHM_BINDINGS[algorithm]) + [
      "meta_train.num_iterations = 3", "inner/SGD.learning_rate = 1e6",
      "meta_train.inner_optimizer = @inner/SGD()"])
  with pytest.raises(SystemExit) as exit_info:
    common.run_and_report(lambda: train.meta_train(root, accept_config_changes=True))
  assert exit_info.value.code == 1
  _check_divergence(root, os.path.join(_checkpoint_dir(dirs["two"]), "ckpt-2"),
                    capsys.readouterr().err)


def _check_binary_error(result, root_dir, messages):
  assert result.returncode != 0
  assert "ERROR:" in result.stderr
  for message in messages:
    assert message in result.stderr
  assert "Traceback" not in result.stderr
  assert not os.path.exists(_checkpoint_dir(root_dir))


def test_bad_parameter_binary(runs):
  """The real exit path: run by the `runs` fixture next to the resume."""
  algorithm, dirs, results = runs
  if algorithm != "maml":
    pytest.skip("made once, with the maml runs")
  root = pathlib.Path(dirs["two"]).parent / "bad" / "run"
  _check_binary_error(results["unknown_parameter"], root,
                      _bad_cases(root.parent)["unknown_parameter"][2])


@pytest.mark.slow
@pytest.mark.parametrize("case", [c for c in BAD_CASES if c != "unknown_parameter"])
def test_bad_input_binary(case, tmp_path):
  gin_files, bindings, messages = _bad_cases(tmp_path)[case]
  result = _run(tmp_path / "run", bindings, gin_files)
  _check_binary_error(result, tmp_path / "run", messages)
