"""A run directory a user can trust: faults a careless or hostile user meets, each as
a test that failed before the fix (see RELIABILITY.md for the whole probe).

Runs are tiny (8x8 images, a 2x16 SIREN, Reptile) and made in-process through the
calls the binaries make; the subprocess tests (one-line errors, kill -9) are few.
"""

import hashlib
import json
import os
import pathlib
import random
import shutil
import signal
import socket
import subprocess
import sys
import time

import gin
import numpy as np
import pytest
import tensorflow as tf

from tf_metainit import checkpoints
from tf_metainit import distribute
from tf_metainit import export
from tf_metainit import layout
from tf_metainit import provenance
from tf_metainit import runs
from tf_metainit import train
from tf_metainit.cli import common
from tf_metainit.data import phantoms
from tf_metainit.tasks import image
from tf_metainit import exports

REPO = pathlib.Path(__file__).resolve().parents[1]
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
# gin/testing/tiny.gin, keeping more checkpoints.
TINY = "testing/tiny.gin"
SMALL = ("meta_train.max_checkpoints = 5",)


def _train(root, num_iterations, *bindings, accept=False):
  gin.clear_config()
  try:
    common.parse_gin([TINY], list(SMALL) + [
        f"meta_train.num_iterations = {num_iterations}", *bindings])
    return train.meta_train(str(root), accept_config_changes=accept)
  finally:
    gin.clear_config()


def _weights(path):
  reader = tf.train.load_checkpoint(str(path))
  return {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map()
          if k.startswith("field/")}


def _assert_same_weights(a, b):
  wa, wb = _weights(a), _weights(b)
  assert wa.keys() == wb.keys()
  for k in wa:
    np.testing.assert_array_equal(wa[k], wb[k], err_msg=k)


def _digest(path):
  digest = hashlib.sha256()
  for f in sorted(pathlib.Path(path).rglob("*")):
    if f.is_file():
      digest.update(str(f.relative_to(path)).encode() + f.read_bytes())
  return digest.hexdigest()


@pytest.fixture(scope="module")
def base(tmp_path_factory):
  """`six`: 6 steps in one go (ckpt-2, 4, 6); `four`: 4 steps, copied by the tests."""
  base = tmp_path_factory.mktemp("faults")
  _train(base / "six", 6)
  _train(base / "four", 4)
  return base


def _copy(base, tmp_path, name="four"):
  root = tmp_path / name
  shutil.copytree(base / name, root)
  return root


def _ckpt(root, step):
  return pathlib.Path(layout.checkpoints_dir(str(root))) / f"ckpt-{step}"


# --- export writes only where it may ----------------------------------------------------


def test_export_refuses_every_target_it_did_not_write(base, tmp_path):
  root = _copy(base, tmp_path)
  user = tmp_path / "photos"
  user.mkdir()
  (user / "holiday.jpg").write_bytes(b"precious")
  a_file = tmp_path / "notes.txt"
  a_file.write_text("mine")
  before = {p: _digest(p) for p in (root, user)}
  gin.clear_config()
  common.parse_run_config(str(root), [], [], task_for=("export",))
  try:
    for target, why in ((root, "inside or above the run"),
                        (root / "train", "inside or above the run"),
                        (tmp_path, "inside or above the run"),
                        (user, "not a tf_metainit export"),
                        (a_file, "is a file")):
      with pytest.raises(exports.ExportError, match=why):
        export.export(str(root), str(target))
    assert a_file.read_text() == "mine"
    assert {p: _digest(p) for p in (root, user)} == before
    # A previous export of the package is replaced, as before.
    out = tmp_path / "init"
    export.export(str(root), str(out))
    export.export(str(root), str(out), checkpoint="latest")
    assert json.loads((out / "manifest.json").read_text())["source"][
        "checkpoint"].endswith("ckpt-4")
  finally:
    gin.clear_config()


# --- nothing runs code unless this command line says so ---------------------------------


def test_a_stored_config_cannot_grant_unpickling(tmp_path):
  root = tmp_path / "run"
  root.mkdir()
  (root / "config.gin").write_text(
      "meta_train.task = @CTReconstruction()\n"
      "CTReconstruction.source = 'reference_pickle'\n"
      "CTReconstruction.path = '/tmp/evil.pkl'\n"
      "CTReconstruction.allow_pickle = True\n")
  gin.clear_config()
  try:
    with pytest.raises(common.ConfigError, match="Pass --allow_pickle on the command"):
      common.parse_run_config(str(root), [], [])
  finally:
    gin.clear_config()


def test_unpickling_needs_the_grant(tmp_path):
  path = tmp_path / "ct.pkl"
  path.write_bytes(b"\x80\x04N.")  # pickle of None: harmless, and never opened
  with pytest.raises(ValueError, match="pass --allow_pickle"):
    phantoms.load_reference_pickle(path)
  phantoms.grant_unpickling(True)
  try:
    with pytest.raises(ValueError, match="data_train"):  # unpickled, then checked
      phantoms.load_reference_pickle(path)
  finally:
    phantoms.grant_unpickling(False)


# --- resume is exact or refuses ---------------------------------------------------------


def test_missing_state_file_resumes_from_the_newest_checkpoint(base, tmp_path):
  root = _copy(base, tmp_path)
  os.remove(_ckpt(root, 4).parent / "checkpoint")
  assert _train(root, 6) == 6
  _assert_same_weights(_ckpt(root, 6), _ckpt(base / "six", 6))
  for step in (2, 4, 6):  # nothing deleted
    assert pathlib.Path(f"{_ckpt(root, step)}.index").exists()


def test_truncated_checkpoint_falls_back_and_is_kept(base, tmp_path, caplog):
  root = _copy(base, tmp_path)
  data = next(_ckpt(root, 4).parent.glob("ckpt-4.data-*"))
  size = data.stat().st_size
  with open(data, "r+b") as f:
    f.truncate(size // 2)
  assert _train(root, 6) == 6
  assert "Could not restore checkpoint" in caplog.text and "ckpt-4" in caplog.text
  # Resumed from ckpt-2 and ended where the uninterrupted run did.
  _assert_same_weights(_ckpt(root, 6), _ckpt(base / "six", 6))
  kept = _ckpt(root, 4).parent / "unreadable" / data.name
  assert kept.stat().st_size == size // 2


def test_no_readable_checkpoint_names_the_files(base, tmp_path):
  root = _copy(base, tmp_path)
  for data in _ckpt(root, 4).parent.glob("ckpt-*.data-*"):
    data.write_bytes(b"")
  with pytest.raises(checkpoints.CheckpointError, match="ckpt-4, ckpt-2 all fail"):
    _train(root, 6)


def test_evaluate_and_export_name_a_truncated_checkpoint(base, tmp_path):
  root = _copy(base, tmp_path)
  data = next(_ckpt(root, 4).parent.glob("ckpt-4.data-*"))
  data.write_bytes(data.read_bytes()[:100])
  gin.clear_config()
  common.parse_run_config(str(root), [], [])
  try:
    with pytest.raises(checkpoints.CheckpointError, match=r"ckpt-4: .*corrupt"):
      runs.load_init(image.ImageRegression(), str(root), "latest")
  finally:
    gin.clear_config()


def test_leftovers_of_killed_saves_are_removed(base, tmp_path):
  root = _copy(base, tmp_path)
  directory = _ckpt(root, 4).parent
  (directory / "ckpt-5_temp").mkdir()
  (directory / "ckpt-5_temp" / "part-00000").write_bytes(b"half")
  (directory / "checkpoint.tmp1234abcd").write_text("half")
  _train(root, 4)
  assert not (directory / "ckpt-5_temp").exists()
  assert not (directory / "checkpoint.tmp1234abcd").exists()


# --- provenance -------------------------------------------------------------------------


def _lock(root, pid):
  pathlib.Path(layout.lock_path(str(root))).write_text(json.dumps(
      {"pid": pid, "host": socket.gethostname(), "started": "then"}))


def test_a_second_trainer_is_refused(base, tmp_path):
  root = _copy(base, tmp_path)
  sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
  try:
    _lock(root, sleeper.pid)
    with pytest.raises(provenance.RunDirectoryError, match=f"pid {sleeper.pid}"):
      _train(root, 6)
  finally:
    sleeper.kill()
    sleeper.wait()
  assert tf.train.latest_checkpoint(str(_ckpt(root, 4).parent)).endswith("ckpt-4")


def test_a_dead_trainers_lock_is_taken_over(base, tmp_path, caplog):
  root = _copy(base, tmp_path)
  dead = subprocess.Popen([sys.executable, "-c", "pass"])
  dead.wait()
  _lock(root, dead.pid)
  assert _train(root, 6) == 6
  assert "Taking over" in caplog.text
  assert not os.path.exists(layout.lock_path(str(root)))  # released at the end


def test_a_changed_config_is_refused_and_leaves_config_gin_alone(base, tmp_path):
  root = _copy(base, tmp_path)
  config = (root / "config.gin").read_text()
  for binding, change in (
      ("outer/Adam.learning_rate = 0.001",
       "outer/Adam.learning_rate: 0.0001 -> 0.001"),
      ("Siren.width = 32", "Siren.width: 16 -> 32")):
    with pytest.raises(provenance.RunDirectoryError, match=change):
      _train(root, 6, binding)
    assert (root / "config.gin").read_text() == config
  # num_iterations and logging cadence are free to change.
  assert _train(root, 6, "meta_train.log_every = 1") == 6


def test_an_accepted_change_takes_effect_and_is_kept_in_the_history(base, tmp_path):
  root = _copy(base, tmp_path)
  _train(root, 6, "outer/Adam.learning_rate = 0.0",
         "meta_train.outer_warmup_steps = 0", accept=True)
  # With the outer rate now 0, steps 5 and 6 leave the step-4 weights unchanged.
  _assert_same_weights(_ckpt(root, 6), _ckpt(base / "four", 4))
  history = sorted(os.listdir(layout.config_history_dir(str(root))))
  assert history == ["step-00000000.gin", "step-00000004.gin"]
  assert "outer/Adam.learning_rate = 0.0" in (root / "config.gin").read_text()


# --- the binaries -----------------------------------------------------------------------


def _binary(name, *args):
  return subprocess.run([sys.executable, str(REPO / "bin" / f"{name}.py"), *args],
                        capture_output=True, text=True, env=ENV, timeout=300)


def test_export_binary_into_the_run_exits_1_and_keeps_the_checkpoints(base, tmp_path):
  root = _copy(base, tmp_path)
  before = _digest(root)
  result = _binary("export", f"--root_dir={root}", f"--export_dir={root}")
  assert result.returncode == 1
  errors = [line for line in result.stderr.splitlines() if line.startswith("ERROR:")]
  assert len(errors) == 1 and "inside or above the run" in errors[0]
  assert "Traceback" not in result.stderr
  assert _digest(root) == before
  debug = _binary("export", f"--root_dir={root}", f"--export_dir={root}", "--debug")
  assert debug.returncode != 0 and "Traceback" in debug.stderr


def _wait_for_a_new_step(root, proc, timeout=120):
  """Returns once the trainer in `root` has checkpointed a step past the latest one
  on disk at the call, or has ended."""
  directory = layout.checkpoints_dir(str(root))
  start = tf.train.latest_checkpoint(directory) if os.path.isdir(directory) else None
  deadline = time.time() + timeout
  while proc.poll() is None and time.time() < deadline:
    latest = tf.train.latest_checkpoint(directory) if os.path.isdir(directory) else None
    if latest is not None and latest != start:
      return
    time.sleep(0.05)


@pytest.mark.slow
def test_kill_9_at_random_points_resumes_bit_identical(tmp_path):
  """kill -9 the trainer at random moments (many inside a save: one every step) until
  it finishes; the end is the uninterrupted run's."""
  steps = 400  # ~25 steps/s with a save each: about 16 s of training
  _train(tmp_path / "reference", steps)
  root = tmp_path / "killed"
  args = ([f"--root_dir={root}", f"--gin_file={TINY}"] +
          [f"--gin_bindings={b}" for b in SMALL + (
              f"meta_train.num_iterations = {steps}", "meta_train.checkpoint_every = 1")])
  rng = random.Random(0)
  kills = 0
  for _ in range(30):
    proc = subprocess.Popen([sys.executable, str(REPO / "bin" / "meta_train.py"), *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV)
    # Kill at a random moment once this launch has trained a step: the start-up (TF
    # import, tracing) takes 2.5 to 6 s by machine, and a kill before it proves nothing.
    _wait_for_a_new_step(root, proc)
    time.sleep(rng.uniform(0.0, 1.5))
    if proc.poll() is not None:
      assert proc.returncode == 0, proc.stderr.read().decode()[-2000:]
      break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    kills += 1
  else:
    pytest.fail("the trainer never finished")
  assert kills >= 3
  _assert_same_weights(_ckpt(root, steps), _ckpt(tmp_path / "reference", steps))


# --- every bad value gets a one-line error before anything is written ---------------------


@pytest.mark.parametrize("binding, message", [
    ("meta_train.num_iterations = -5", "meta_train.num_iterations must be a positive"),
    ("meta_train.inner_steps = -1", "meta_train.inner_steps must be a positive"),
    ("meta_train.outer_batch_size = 2.5", "meta_train.outer_batch_size must be a posit"),
    ("meta_train.outer_final_lr_fraction = 1.5", "must be a number in \\[0, 1\\]"),
    ("inner/SGD.learning_rate = -0.01", "SGD.learning_rate .* must be a finite number"),
    ("Siren.width = 0", "Siren.width must be a positive integer"),
    ("Siren.w0 = -30.0", "Siren.w0 must be a finite number > 0"),
    ("CTReconstruction.resolution = 8", "never reads CTReconstruction.resolution"),
])
def test_bad_values_and_unread_bindings_are_refused_up_front(tmp_path, binding, message):
  root = tmp_path / "run"
  with pytest.raises(ValueError, match=message):
    _train(root, 2, binding)
  assert not root.exists()


def test_an_unscoped_binding_read_inside_a_scope_counts_as_read():
  """distribute.* is read inside the train/ scope: gin reports it there, and the
  unscoped binding the user wrote was still read. A scoped one read nowhere is not."""
  config = ("distribute.startup_timeout = 60\n"
            "evaluate/distribute.strategy = 'mirrored'\n"
            "eval/Siren.width = 8\n"
            "Siren.depth = 3\n")
  operative = ("train/distribute.startup_timeout = 60\n"
               "Siren.width = 8\n")
  assert provenance.unread_bindings(config, operative) == ["Siren.depth", "eval/Siren.width"]
  # The fix reads the scope off gin's operative text: check that text names it so.
  gin.clear_config()
  gin.parse_config("distribute.startup_timeout = 61")
  with gin.config_scope("train"):
    distribute._configured()  # pylint: disable=protected-access
  assert "train/distribute.startup_timeout = 61" in gin.operative_config_str()
  assert provenance.unread_bindings(gin.config_str(), gin.operative_config_str()) == []
  gin.clear_config()


@pytest.mark.parametrize("binding, message", [
    ("ImageRegression.test_folder = '/photos'",
     "ImageRegression.test_folder is only read when ImageRegression.dataset = 'folder'"),
    ("ImageRegression.data_dir = '/tfds'", "ImageRegression.data_dir is only read when"),
    ("ImageRegression.num_test = 0", "ImageRegression.num_test must be a positive"),
])
def test_options_the_dataset_never_reads_are_refused(tmp_path, binding, message):
  with pytest.raises(ValueError, match=message):
    _train(tmp_path / "run", 2, binding)
  assert not (tmp_path / "run").exists()


@pytest.mark.slow  # over 35 s on 2 cores; run with --runslow
def test_sigterm_saves_the_step_and_resumes_bit_identical(tmp_path):
  """A scheduler's SIGTERM: the trainer saves the step it is on, exits 143 with one
  line, and the rerun ends where an uninterrupted run does."""
  steps = 3000  # ~700 steps/s: the signal lands mid-run
  _train(tmp_path / "reference", steps)
  root = tmp_path / "run"
  args = ([str(REPO / "bin" / "meta_train.py"), f"--root_dir={root}",
           f"--gin_file={TINY}"] +
          [f"--gin_bindings={b}" for b in SMALL + (
              f"meta_train.num_iterations = {steps}", "meta_train.checkpoint_every = 1000",
              "meta_train.log_every = 50")])
  proc = subprocess.Popen([sys.executable, *args], stderr=subprocess.PIPE, text=True,
                          env=ENV)
  directory = pathlib.Path(layout.checkpoints_dir(str(root)))
  seen = []
  for line in proc.stderr:  # SIGTERM once training logs its 50th step
    seen.append(line)
    if f"step 50/{steps}" in line:
      proc.send_signal(signal.SIGTERM)
      break
  _, err = proc.communicate(timeout=120)
  err = "".join(seen) + err
  assert proc.returncode == 143, err[-2000:]
  errors = [line for line in err.splitlines() if line.startswith("ERROR:")]
  assert len(errors) == 1 and "Stopped by SIGTERM after step" in errors[0]
  stopped = int(errors[0].split("after step ")[1].split(";")[0])
  assert 0 < stopped < steps
  assert tf.train.latest_checkpoint(str(directory)).endswith(f"ckpt-{stopped}")
  assert not os.path.exists(layout.lock_path(str(root)))
  rerun = subprocess.run([sys.executable, *args], capture_output=True, text=True,
                         env=ENV, timeout=300)
  assert rerun.returncode == 0, rerun.stderr[-2000:]
  _assert_same_weights(_ckpt(root, steps), _ckpt(tmp_path / "reference", steps))


def test_resume_with_a_relative_root_dir(base, tmp_path, monkeypatch):
  root = _copy(base, tmp_path)
  os.remove(_ckpt(root, 4).parent / "checkpoint")  # the recovery rewrites it, too
  monkeypatch.chdir(tmp_path)
  assert _train("four", 5) == 5
  assert _train("four", 6) == 6
  _assert_same_weights(_ckpt(root, 6), _ckpt(base / "six", 6))


def test_a_longer_run_is_recorded(base, tmp_path):
  root = _copy(base, tmp_path)
  _train(root, 6)
  assert "meta_train.num_iterations = 6" in (root / "config.gin").read_text()
  assert sorted(os.listdir(root / "config_history")) == [
      "step-00000000.gin", "step-00000004.gin"]


def test_a_config_gin_of_garbage_bytes_is_named(base, tmp_path):
  root = _copy(base, tmp_path)
  (root / "config.gin").write_bytes(bytes(range(128, 256)))
  gin.clear_config()
  try:
    with pytest.raises(provenance.RunDirectoryError, match="config.gin is not a gin"):
      common.parse_run_config(str(root), [], [])
  finally:
    gin.clear_config()


def test_a_full_disk_while_saving_is_one_line_that_says_what_to_do(tmp_path):
  ckpt = checkpoints.Checkpointer(str(tmp_path / "ckpts"), v=tf.Variable(1.0))
  def full(**_):
    raise tf.errors.ResourceExhaustedError(
        None, None, "{{function_node __wrapped__SaveV2}} x/ckpt-3_temp/part: No space "
        "left on device [Op:SaveV2]")
  ckpt._manager.save = full  # pylint: disable=protected-access
  with pytest.raises(checkpoints.CheckpointError,
                     match="step-3 checkpoint .*: No space left on device. Free space"):
    ckpt.save(3)


def test_a_changed_macro_is_the_change_of_the_bindings_that_use_it():
  stored = "LONG = 100\nSHORT = 3\nmeta_train.num_iterations = %LONG\n"
  resumable = train.TrainConfig.resumable()
  assert provenance.config_changes(
      stored, stored.replace("LONG = 100", "LONG = 900"), resumable) == []  # longer
  assert provenance.config_changes(
      stored, stored.replace("LONG = 100", "LONG = 900")) == [
          "meta_train.num_iterations: 100 -> 900"]
  uses = stored + "meta_train.inner_steps = %SHORT\n"
  assert provenance.config_changes(uses, uses.replace("SHORT = 3", "SHORT = 4"),
                                   resumable) == ["meta_train.inner_steps: 3 -> 4"]
  assert provenance.config_changes(stored, stored.replace("SHORT = 3", "SHORT = 4"),
                                   resumable) == []
