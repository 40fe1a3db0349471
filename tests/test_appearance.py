"""Appearance figures: the grid's weights by hand, the camera path, and the binaries of
a Phototourism run end to end (train, evaluate with Basic NeRF, appearance)."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from tf_metainit import appearance
from tf_metainit.fields import functional

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_grid_weights_put_the_init_at_the_centre_and_fits_at_the_corners():
  np.testing.assert_allclose(appearance.corner_weights(0, 0), [1, 0, 0, 0, 0])
  np.testing.assert_allclose(appearance.corner_weights(-1, -1), [0, 1, 0, 0, 0])
  np.testing.assert_allclose(appearance.corner_weights(1, 1), [0, 0, 0, 0, 1])
  # An edge midpoint is the mean of its two corners; halfway to a corner, half of it.
  np.testing.assert_allclose(appearance.corner_weights(1, 0), [0, 0, 0, 0.5, 0.5])
  np.testing.assert_allclose(appearance.corner_weights(0.5, 0.5),
                             [0.5, 0.5 * 1 / 16, 0.5 * 3 / 16, 0.5 * 3 / 16,
                              0.5 * 9 / 16])
  for u in np.linspace(-1, 1, 5):
    for v in np.linspace(-1, 1, 5):
      assert abs(sum(appearance.corner_weights(u, v)) - 1) < 1e-12


def test_mix_is_the_weighted_sum_layer_by_layer():
  init = [np.zeros((2, 2), np.float32), np.zeros(2, np.float32)]
  corners = [[np.full((2, 2), k, np.float32), np.full(2, 10 * k, np.float32)]
             for k in (1, 2, 3, 4)]
  # The grid mixes (init, corners) with functional.mix, as Fig. 1 mixes its fits.
  mixed = functional.mix([init, *corners], [0.2, 0.1, 0.2, 0.3, 0.2])
  np.testing.assert_allclose(mixed[0], np.full((2, 2), 0.1 + 0.4 + 0.9 + 0.8))
  np.testing.assert_allclose(mixed[1], np.full(2, 22.0), rtol=1e-6)
  assert mixed[0].dtype == np.float32


def test_camera_path_passes_through_the_cameras_with_rotations():
  def pose(angle, x):
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, 0, s, x], [0, 1, 0, 0], [-s, 0, c, 0]])

  cameras = np.stack([pose(0.0, 0.0), pose(0.4, 1.0), pose(0.2, 3.0)])
  path = appearance.camera_path(cameras, 4)
  assert len(path) == 9
  np.testing.assert_allclose(path[[0, 4, 8]], cameras, atol=1e-12)
  np.testing.assert_allclose(path[2][:, 3], [0.5, 0, 0])
  for p in path:
    np.testing.assert_allclose(p[:, :3] @ p[:, :3].T, np.eye(3), atol=1e-12)
    assert np.linalg.det(p[:, :3]) > 0


TINY = (
    "Phototourism.num_photos = 27", "Phototourism.long_side = 16",
    "Phototourism.num_test = 7", "Phototourism.num_val = 2",
    "Phototourism.num_samples = 8", "NerfMLP.width = 16",
    "NerfMLP.num_frequencies = 4", "meta_train.val_every = 1",
    "meta_train.num_val_signals = 2",
)


def _binary(name, root_dir, *bindings, gin_files=()):
  cmd = [sys.executable, str(REPO / "bin" / f"{name}.py"), f"--root_dir={root_dir}"]
  cmd += [f"--gin_file={f}" for f in gin_files]
  cmd += [f"--gin_bindings={b}" for b in bindings]
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
  result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env,
                          cwd=str(pathlib.Path(root_dir).parent))
  assert result.returncode == 0, f"{name}:\n{result.stdout}\n{result.stderr[-3000:]}"
  return result


@pytest.mark.slow  # over 35 s on 2 cores; run with --runslow
def test_phototourism_binaries_end_to_end(tmp_path):
  scene = f"Phototourism.scene_dir = '{tmp_path / 'scene'}'"
  meta, basic = tmp_path / "meta", tmp_path / "basic"
  _binary("meta_train", meta, scene, *TINY, "meta_train.num_iterations = 2",
          "meta_train.inner_steps = 2", gin_files=["phototourism/cpu.gin"])
  # Basic NeRF: one inner step, the scene's BASIC_ITERATIONS.
  _binary("meta_train", basic, scene, *TINY, "BASIC_ITERATIONS = 3",
          gin_files=["phototourism/cpu.gin", "phototourism/basic.gin"])
  config = (basic / "config.gin").read_text()
  assert "meta_train.inner_steps = 1" in config
  assert "BASIC_ITERATIONS = 3" in config
  assert tf.train.latest_checkpoint(str(basic / "train" / "checkpoints")).endswith(
      "ckpt-3")
  _binary("evaluate", meta, f"evaluate.extra_runs = {{'Basic': '{basic}'}}",
          "evaluate.num_steps = 4", "evaluate.trace_every = 2")
  results = json.loads((meta / "eval" / "results.json").read_text())
  labels = {v["label"] for v in results["inits"].values()}
  assert labels == {"Standard", "Meta", "Basic NeRF"}
  assert results["settings"] == ["left"]
  _binary("appearance", meta, "appearance.num_steps = 3", "appearance.grid_size = 3",
          "appearance.path_frames = 2")
  report = json.loads((meta / "eval" / "appearance.json").read_text())
  assert len(report["fitted_right_half_psnr"]["corners"]) == 4
  for name in ("appearance_transfer.png", "appearance_grid.png", "init_path.gif",
               "transfer_path.gif"):
    assert (meta / "eval" / name).stat().st_size > 0
