"""Atomic writes (text, JSON, PNG, directories) and the run layout's paths."""

import json
import os
import pathlib
import socket
import subprocess
import sys
import types

import numpy as np
from PIL import Image
import pytest

from tf_metainit import files
from tf_metainit import layout


def test_write_text_creates_parents_replaces_and_leaves_no_temp(tmp_path):
  path = os.path.join(str(tmp_path), "a", "b", "results.md")
  files.write_text(path, "first")
  files.write_text(path, "second")
  with open(path) as f:
    assert f.read() == "second"
  assert os.listdir(os.path.dirname(path)) == ["results.md"]


def test_write_json_is_complete_and_leaves_no_temp(tmp_path):
  path = tmp_path / "results.json"
  value = {"psnr": [1.5, 2.0], "name": "meta"}
  files.write_json(str(path), value)
  assert json.loads(path.read_text()) == value
  assert path.read_text() == json.dumps(value, indent=1)  # the format runs already use
  assert os.listdir(tmp_path) == ["results.json"]


def test_a_failed_write_keeps_the_old_file_and_no_temp(tmp_path):
  path = tmp_path / "results.json"
  files.write_json(str(path), {"old": 1})
  with pytest.raises(TypeError):
    files.write_json(str(path), {"new": object()})  # not JSON: fails before writing
  with pytest.raises(ValueError):
    with files._replacing(str(path), "w") as f:  # pylint: disable=protected-access
      f.write('{"half": ')
      raise ValueError("failed mid-write")
  assert json.loads(path.read_text()) == {"old": 1}
  assert os.listdir(tmp_path) == ["results.json"]


def test_save_image_and_figure_write_pngs(tmp_path):
  pixels = (np.arange(48).reshape(4, 4, 3) * 5).astype(np.uint8)
  files.save_image(Image.fromarray(pixels), str(tmp_path / "grid.png"))
  np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "grid.png")), pixels)
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots()
  ax.plot([0, 1], [0, 1])
  files.save_figure(fig, str(tmp_path / "curves.png"))
  plt.close(fig)
  assert Image.open(tmp_path / "curves.png").format == "PNG"
  assert sorted(os.listdir(tmp_path)) == ["curves.png", "grid.png"]


# --- output directories: leftovers by marker, symlinks, paths, whole swaps ------------


def _dead_pid():
  """The pid of a process that has exited: what a killed writer's marker names."""
  dead = subprocess.Popen([sys.executable, "-c", "pass"])
  dead.wait()
  return dead.pid


def _tree(path):
  """{relative path: bytes} of every file under `path`: equal means byte-identical."""
  root = pathlib.Path(path)
  return {str(p.relative_to(root)): p.read_bytes()
          for p in sorted(root.rglob("*")) if p.is_file()}


def _write(target, files_):
  with files.atomic_directory(str(target)) as tmp:
    for name, text in files_.items():
      (pathlib.Path(tmp) / name).write_text(text)


def _leftover(path, target, pid, **extra):
  """A folder holding a writer's marker, as atomic_directory writes it."""
  path.mkdir()
  marker = {"pid": pid, "host": socket.gethostname(), "target": str(target), **extra}
  (path / files.MARKER).write_text(json.dumps(marker))
  return path


def test_users_folders_named_like_temps_survive_a_write(tmp_path):
  """Names alone never make a folder a leftover, whatever pid they end in."""
  _write(tmp_path / "exp", {"manifest.json": "old"})
  users = [tmp_path / "results.old-2023", tmp_path / "exp.tmp-2024",
           tmp_path / "exp.old-1", tmp_path / f"exp.tmp-{_dead_pid()}",
           tmp_path / f"exp.tmp-{os.getpid()}"]  # the old temp name of this writer
  for folder in users:
    folder.mkdir()
    (folder / "mine.txt").write_text("keep")
  (tmp_path / "exp.tmp-7").write_text("a user's file")
  _write(tmp_path / "results", {"results.json": "{}"})
  _write(tmp_path / "exp", {"manifest.json": "new"})
  for folder in users:
    assert (folder / "mine.txt").read_text() == "keep"
  assert (tmp_path / "exp.tmp-7").read_text() == "a user's file"
  assert (tmp_path / "exp" / "manifest.json").read_text() == "new"
  assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
      ["exp", "results", "exp.tmp-7"] + [f.name for f in users])


def test_a_finished_output_holds_only_its_files(tmp_path):
  _write(tmp_path / "exp", {"manifest.json": "{}"})
  _write(tmp_path / "exp", {"manifest.json": "{}"})
  assert os.listdir(tmp_path / "exp") == ["manifest.json"]
  assert os.listdir(tmp_path) == ["exp"]


def test_a_file_temp_never_takes_a_users_file(tmp_path):
  """The old temp name, <path>.tmp-<pid>, was written over and then removed."""
  theirs = tmp_path / f"results.json.tmp-{os.getpid()}"
  theirs.write_text("a user's file")
  path = str(tmp_path / "results.json")
  files.write_json(path, {"a": 1})
  with pytest.raises(ValueError):
    with files._replacing(path, "w"):  # pylint: disable=protected-access
      raise ValueError("failed mid-write")
  assert theirs.read_text() == "a user's file"
  assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json", theirs.name]


def test_a_dead_writers_leftovers_are_cleaned_and_its_old_directory_restored(tmp_path):
  """Killed between 'move the old directory aside' and 'move the new one in': its
  marker names the moved-aside directory, the good one."""
  target, pid = tmp_path / "init", _dead_pid()
  aside = tmp_path / f"init.old-{pid}-0a1b"
  aside.mkdir()
  (aside / "manifest.json").write_text("{}")
  stale = _leftover(tmp_path / f"init.tmp-{pid}-2c3d", target, pid, aside=str(aside))
  (stale / "saved_model.pb").write_text("half")
  with files.atomic_directory(str(target)) as tmp:
    assert (target / "manifest.json").read_text() == "{}"  # restored before the build
    assert not stale.exists() and not (target / files.MARKER).exists()
    (pathlib.Path(tmp) / "manifest.json").write_text('{"new": 1}')
  assert json.loads((target / "manifest.json").read_text()) == {"new": 1}
  assert sorted(p.name for p in tmp_path.iterdir()) == ["init"]


_KILLED_BETWEEN_RENAMES = """
import os, signal, sys
from tf_metainit import files
rename = os.rename
def rename_then_die(a, b):
  rename(a, b)
  os.kill(os.getpid(), signal.SIGKILL)
os.rename = rename_then_die
with files.atomic_directory(sys.argv[1]) as tmp:
  open(os.path.join(tmp, "manifest.json"), "w").write("new")
"""


def test_a_writer_killed_between_its_renames_is_undone_by_the_next(tmp_path):
  target = tmp_path / "init"
  _write(target, {"manifest.json": "old"})
  killed = subprocess.run([sys.executable, "-c", _KILLED_BETWEEN_RENAMES, str(target)])
  assert killed.returncode == -9
  assert not target.exists()  # the old one moved aside, the new one not yet in
  assert len(list(tmp_path.glob("init.old-*"))) == 1
  with files.atomic_directory(str(target)) as tmp:
    assert (target / "manifest.json").read_text() == "old"
    (pathlib.Path(tmp) / "manifest.json").write_text("newer")
  assert _tree(target) == {"manifest.json": b"newer"}
  assert sorted(p.name for p in tmp_path.iterdir()) == ["init"]


def test_a_writer_killed_just_after_its_swap_is_finished_by_the_next(tmp_path):
  target, pid = tmp_path / "init", _dead_pid()
  aside = tmp_path / f"init.old-{pid}-0a1b"
  aside.mkdir()
  (aside / "manifest.json").write_text("old")
  _leftover(target, target, pid, aside=str(aside))
  (target / "manifest.json").write_text("new")
  _write(tmp_path / "init", {"manifest.json": "newer"})
  assert _tree(target) == {"manifest.json": b"newer"}
  assert sorted(p.name for p in tmp_path.iterdir()) == ["init"]


@pytest.mark.parametrize("case", ["live writer", "other host", "other target",
                                  "aside not a sibling of the target"])
def test_markers_but_a_dead_local_writers_of_this_target_are_left_alone(tmp_path, case):
  target, theirs = tmp_path / "init", tmp_path / "theirs"
  theirs.mkdir()
  live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
  marker = {"live writer": {"pid": live.pid},
            "other host": {"host": "another-host"},
            "other target": {"target": str(tmp_path / "other")},
            # A marker may not name something else to restore or delete.
            "aside not a sibling of the target": {"aside": str(theirs)}}[case]
  try:
    kept = _leftover(tmp_path / "init.tmp-1-aa",
                     **dict({"target": target, "pid": _dead_pid()}, **marker))
    _write(target, {"manifest.json": "{}"})
  finally:
    live.kill()
    live.wait()
  assert (kept / files.MARKER).exists() and theirs.exists()


def test_a_write_that_fails_midway_keeps_the_previous_output_byte_identical(tmp_path):
  target = tmp_path / "exp"
  _write(target, {"manifest.json": '{"old": 1}', "weights.npz": "old weights"})
  before = _tree(target)
  with pytest.raises(OSError, match="No space left"):
    with files.atomic_directory(str(target)) as tmp:
      (pathlib.Path(tmp) / "weights.npz").write_text("half")
      raise OSError(28, "No space left on device")  # a full disk, mid-write
  assert _tree(target) == before
  assert os.listdir(tmp_path) == ["exp"]


def test_a_symlinked_target_keeps_the_link_pointing_at_the_new_output(tmp_path):
  real, link = tmp_path / "exports" / "v1", tmp_path / "latest"
  _write(real, {"manifest.json": "old"})
  link.symlink_to(real)
  _write(link, {"manifest.json": "new"})
  assert link.is_symlink() and os.readlink(link) == str(real)
  assert _tree(link) == {"manifest.json": b"new"}
  assert sorted(p.name for p in tmp_path.iterdir()) == ["exports", "latest"]
  assert os.listdir(tmp_path / "exports") == ["v1"]


def test_a_dangling_link_gets_its_target_created(tmp_path):
  link = tmp_path / "latest"
  link.symlink_to(tmp_path / "exports" / "v2")
  assert files.target_dir_problem(str(link), lambda _: False, "an export") is None
  _write(link, {"manifest.json": "new"})
  assert link.is_symlink() and _tree(tmp_path / "exports" / "v2") == {
      "manifest.json": b"new"}
  assert sorted(p.name for p in tmp_path.iterdir()) == ["exports", "latest"]


def test_empty_and_looping_paths_are_refused_and_tilde_is_expanded(tmp_path,
                                                                   monkeypatch):
  monkeypatch.chdir(tmp_path)
  monkeypatch.setenv("HOME", str(tmp_path / "home"))
  (tmp_path / "home").mkdir()
  (tmp_path / "home" / "notes.txt").write_text("mine")
  owned = lambda _: False  # pylint: disable=unnecessary-lambda-assignment
  assert files.target_dir_problem("", owned, "an export") == (
      "is empty; give a directory path (it is created).")
  with pytest.raises(files.TargetError, match="is empty"):
    _write("", {"manifest.json": "{}"})
  (tmp_path / "a").symlink_to(tmp_path / "b")
  (tmp_path / "b").symlink_to(tmp_path / "a")
  assert "symlink loop" in files.target_dir_problem("a", owned, "an export")
  assert files.target_dir_problem("~", owned, "an export") == (
      "holds files that are not an export; give a new or empty directory.")
  assert files.resolve_target("~/out") == str(tmp_path / "home" / "out")
  _write("~/out", {"manifest.json": "{}"})
  assert (tmp_path / "home" / "out" / "manifest.json").exists()
  assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "home"]


def test_an_empty_export_dir_is_one_line():
  from tf_metainit import exports  # pylint: disable=g-import-not-at-top
  with pytest.raises(exports.ExportError, match=r"^--export_dir= is empty; give"):
    exports.check_export_dir("")


def test_replaces_carries_the_other_commands_files_over(tmp_path):
  """<root_dir>/eval is shared: evaluate replaces its files, appearance's stay."""
  target = tmp_path / "eval"
  _write(target, {"results.json": "old", "curves_4.png": "old", "appearance.json": "a"})
  (target / "fitted").mkdir()
  (target / "fitted" / "x").write_text("old")
  with files.atomic_directory(str(target), replaces=lambda n: n != "appearance.json"
                              ) as tmp:
    (pathlib.Path(tmp) / "results.json").write_text("new")
  assert _tree(target) == {"results.json": b"new", "appearance.json": b"a"}
  assert os.listdir(tmp_path) == ["eval"]


# --- the commands' output folders ------------------------------------------------------


def test_evaluate_refuses_a_folder_with_a_users_results_and_leaves_it(tmp_path):
  from tf_metainit import evaluate  # pylint: disable=g-import-not-at-top
  mine = tmp_path / "mine"
  mine.mkdir()
  (mine / "results.md").write_text("my table")
  (mine / "results.json").write_text('{"mine": 1}')
  task = types.SimpleNamespace(classical_methods=())
  with pytest.raises(ValueError) as refused:
    evaluate.evaluate(str(tmp_path / "run"), task=task, output_dir=str(mine))
  # (gin adds its "In call to configurable" line; the binaries print the first.)
  assert str(refused.value).splitlines()[0] == (
      f"{mine} holds files that are not a tf-metainit-evaluate output; give a new or "
      "empty directory.")
  assert _tree(mine) == {"results.md": b"my table", "results.json": b'{"mine": 1}'}


def test_evaluate_takes_the_packages_own_evaluation_folder(tmp_path):
  from tf_metainit import evaluate  # pylint: disable=g-import-not-at-top
  for name, record in (("results.json", {"settings": [], "report_step": 2,
                                         "inits": {}}),
                       ("appearance.json", {"photo_index": 0, "corner_indices": [],
                                            "camera_indices": []})):
    folder = tmp_path / name
    folder.mkdir()
    files.write_json(str(folder / name), record)
    (folder / "grid_full.png").write_text("x")
    layout.check_eval_dir(str(folder), "a tf-metainit-evaluate output")


def test_a_fit_that_fails_leaves_the_earlier_one_and_its_rerun_is_taken(tmp_path,
                                                                        monkeypatch):
  from tf_metainit import exports  # pylint: disable=g-import-not-at-top
  from tf_metainit import fitting  # pylint: disable=g-import-not-at-top
  out = tmp_path / "fit"
  result = {"init": "text", "num_steps": 2, "optimizer": {"name": "sgd"}}
  picture = {"reconstruction.png": np.zeros((2, 2))}

  def export(field, fitted, export_dir, **kwargs):
    del field, fitted, kwargs
    os.makedirs(export_dir)
    pathlib.Path(export_dir, "manifest.json").write_text("{}")

  def full_disk(*args, **kwargs):
    raise OSError(28, "No space left on device")

  monkeypatch.setattr(exports, "export_params", export)
  fitting.check_out_dir(str(out))
  fitting.finish(str(out), None, [], result, picture)
  before = _tree(out)
  assert sorted(before) == ["export/manifest.json", "fit.json", "reconstruction.png"]
  monkeypatch.setattr(exports, "export_params", full_disk)
  with pytest.raises(OSError):
    fitting.finish(str(out), None, [], dict(result, num_steps=3), picture)
  assert _tree(out) == before
  fitting.check_out_dir(str(out))  # the rerun is taken
  with pytest.raises(OSError):  # a first fit that fails leaves nothing
    fitting.finish(str(tmp_path / "new"), None, [], result, picture)
  assert sorted(p.name for p in tmp_path.iterdir()) == ["fit"]
  (tmp_path / "other").mkdir()
  (tmp_path / "other" / "fit.json").write_text("[]")  # not this package's fit.json
  with pytest.raises(ValueError, match="not a tf-metainit-fit output"):
    fitting.check_out_dir(str(tmp_path / "other"))


def test_layout_names_the_paths_existing_runs_use():
  root = os.path.join("runs", "text")
  assert layout.config_path(root) == "runs/text/config.gin"
  assert layout.operative_config_path(root) == "runs/text/operative_config.gin"
  assert layout.train_dir(root) == "runs/text/train"
  assert layout.checkpoints_dir(root) == "runs/text/train/checkpoints"
  assert layout.best_dir(root) == "runs/text/train/best"
  assert layout.eval_dir(root) == "runs/text/eval"
  assert layout.eval_dir(root, "elsewhere") == "elsewhere"
  assert (layout.fitted_dir(layout.eval_dir(root), "meta:old", 64)
          == "runs/text/eval/fitted/meta_old/64")
