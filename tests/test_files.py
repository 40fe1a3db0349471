"""Atomic writes (text, JSON, PNG, directories) and the run layout's paths."""

import json
import os
import pathlib
import subprocess

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


def test_a_moved_aside_directory_is_restored(tmp_path):
  """Killed between 'move the old directory aside' and 'move the new one in'."""
  target = tmp_path / "init"
  dead = subprocess.Popen(["true"])
  dead.wait()
  aside = tmp_path / f"init.old-{dead.pid}"
  aside.mkdir()
  (aside / "manifest.json").write_text("{}")
  stale = tmp_path / f"init.tmp-{dead.pid}"
  stale.mkdir()
  with files.atomic_directory(str(target)) as tmp:
    assert (target / "manifest.json").exists()  # restored before the new one is built
    assert not stale.exists()
    (pathlib.Path(tmp) / "manifest.json").write_text('{"new": 1}')
  assert json.loads((target / "manifest.json").read_text()) == {"new": 1}
  assert sorted(p.name for p in tmp_path.iterdir()) == ["init"]


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
