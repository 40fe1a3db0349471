"""tf-metainit-fit: a learned init fitted to an image of any size, and exports read
back into the field they came from.

PSNR before fitting is checked against a numpy forward pass of the exported weights
(test_export.numpy_field), independent of the package's field code.
"""

import json
import logging
import os
import pathlib
import subprocess
import sys

import gin
import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from test_export import numpy_field
from tf_metainit import export
from tf_metainit import exports
from tf_metainit import fit
from tf_metainit import fitting
from tf_metainit import train
from tf_metainit.cli import common
from tf_metainit.fields import mlp
from tf_metainit.fields import siren

REPO = pathlib.Path(__file__).resolve().parents[1]
SMALL = (
    "ImageRegression.resolution = 8", "ImageRegression.num_train = 6",
    "ImageRegression.num_test = 2", "Siren.width = 16", "Siren.depth = 3",
    "meta_train.num_iterations = 3", "meta_train.num_val_signals = 2",
)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  base = tmp_path_factory.mktemp("fit")
  gin.clear_config()
  common.parse_gin(["image/text_cpu.gin"], list(SMALL))
  train.meta_train(str(base / "run"))
  gin.clear_config()
  common.parse_run_config(str(base / "run"), [], [], task_for=("export",))
  export.export(str(base / "run"), str(base / "export"))
  gin.clear_config()
  rng = np.random.default_rng(0)
  picture = (rng.uniform(0, 1, (11, 7, 3)) * 255).astype(np.uint8)  # not square
  Image.fromarray(picture).save(base / "photo.png")
  return base


@pytest.mark.parametrize("field", [
    siren.Siren(width=8, depth=3, w0=30.0),
    mlp.FourierMLP(num_features=4, sigma=3.0, width=8, depth=2),
    mlp.NerfMLP(num_frequencies=2, width=8, depth=3)])
def test_an_export_rebuilds_its_field(tmp_path, field):
  out = str(tmp_path / "export")
  exports.export_params(field, field.params(), out)
  loaded, params, _, _ = exports.load(out)
  x = np.random.default_rng(1).uniform(0, 1, (5, field.in_dim)).astype(np.float32)
  assert type(loaded) is type(field)
  np.testing.assert_allclose(loaded.apply(params, x), field.apply(field.params(), x),
                             rtol=1e-6, atol=1e-6)


def test_fit_from_an_export(trained, tmp_path):
  init = exports.load_init(str(trained / "export"))
  # The default job's recipe: 2 steps of its meta-learned per-layer, per-step rates.
  assert init.num_steps == 2 and init.optimizer.describe()["name"] == "learned_sgd"
  out = tmp_path / "out"
  result = fit.fit(init, str(trained / "photo.png"), str(out), num_steps=5,
                   compare=True)
  image = np.asarray(Image.open(trained / "photo.png"), np.float32) / 255
  _, apply = numpy_field(str(trained / "export"))
  rows, cols = np.meshgrid(np.arange(11) / 11, np.arange(7) / 7, indexing="ij")
  before = apply(np.stack([rows, cols], -1).reshape(-1, 2)).reshape(11, 7, 3)
  np.testing.assert_allclose(result["psnr"][0],
                             -10 * np.log10(np.mean((before - image) ** 2)), rtol=1e-4)
  assert len(result["psnr"]) == 6 and result["psnr"][-1] > result["psnr"][0]
  assert Image.open(out / "reconstruction.png").size == (7, 11)
  assert json.loads((out / "fit.json").read_text())["psnr"] == result["psnr"]
  assert len(result["standard"]["psnr"]) == 6
  # The fitted field's export renders the reconstruction.
  field, params, manifest, _ = exports.load(str(out / "export"))
  assert manifest["kind"] == "fitted" and manifest["fit"]["num_steps"] == 5
  recon = np.asarray(Image.open(out / "reconstruction.png"), np.float32) / 255
  np.testing.assert_allclose(fit.render(field, params, 11, 7), recon, atol=0.5 / 255 + 1e-6)


def test_fit_refuses_what_it_cannot_do(trained, tmp_path):
  init = exports.load_init(str(trained / "export"))
  foreign = tmp_path / "mine"
  foreign.mkdir()
  (foreign / "notes.txt").write_text("keep")
  with pytest.raises(ValueError, match="not a tf-metainit-fit output"):
    fit.fit(init, str(trained / "photo.png"), str(foreign))
  assert (foreign / "notes.txt").read_text() == "keep"
  nerf = mlp.NerfMLP(num_frequencies=2, width=8, depth=3)
  exports.export_params(nerf, nerf.params(), str(tmp_path / "nerf"),
                        manifest_extra={"test_time": {"optimizer": {"name": "sgd",
                                                                    "learning_rate": 1.0}}})
  with pytest.raises(ValueError, match="maps 3-D points to 4 values"):
    fit.fit(exports.load_init(str(tmp_path / "nerf")), str(trained / "photo.png"),
            str(tmp_path / "out"))
  exports.export_params(nerf, nerf.params(), str(tmp_path / "fitted"))  # no test_time
  with pytest.raises(exports.ExportError, match="a fitted field, not an init"):
    exports.load_init(str(tmp_path / "fitted"))
  (tmp_path / "bad.png").write_bytes(b"not a png")
  with pytest.raises(ValueError, match="Cannot decode image file"):
    fit.fit(init, str(tmp_path / "bad.png"), str(tmp_path / "out2"))


def test_fit_binary_from_a_run_directory(trained, tmp_path):
  out = tmp_path / "out"
  result = subprocess.run(
      [sys.executable, str(REPO / "bin" / "fit.py"), f"--init={trained / 'run'}",
       f"--image={trained / 'photo.png'}", f"--out_dir={out}", "--steps=3",
       "--resolution=5", "--compare"], capture_output=True, text=True, timeout=300,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES=""))
  assert result.returncode == 0, result.stderr[-3000:]
  assert "Learned init: PSNR" in result.stdout and "Standard init" in result.stdout
  assert Image.open(out / "reconstruction.png").size == (5, 5)
  saved = json.loads((out / "fit.json").read_text())
  assert "train/best/ckpt-" in saved["init"]
  assert saved["optimizer"]["name"] == "learned_sgd" and len(saved["psnr"]) == 4


@pytest.mark.slow  # over 35 s on 2 cores; run with --runslow
def test_fit_binary_takes_a_shipped_init_by_name_and_one_input(trained, tmp_path):
  def run(*args):
    return subprocess.run(
        [sys.executable, str(REPO / "bin" / "fit.py"), *args], capture_output=True,
        text=True, timeout=300, env=dict(os.environ, CUDA_VISIBLE_DEVICES=""))

  out = tmp_path / "out"
  ok = run("--init=text", f"--image={trained / 'photo.png'}", f"--out_dir={out}",
           "--steps=2")
  assert ok.returncode == 0, ok.stderr[-3000:]
  saved = json.loads((out / "fit.json").read_text())
  assert saved["init"].endswith(os.path.join("pretrained", "text"))
  assert Image.open(out / "reconstruction.png").size == (7, 11)
  both = run("--init=text", f"--image={trained / 'photo.png'}", "--views=somewhere")
  assert both.returncode != 0 and "Give one input" in both.stderr
  unknown = run("--init=nope", f"--image={trained / 'photo.png'}")
  assert unknown.returncode == 1 and "No pretrained init named 'nope'" in unknown.stderr
  wrong = run("--init=landmark", f"--image={trained / 'photo.png'}",
              f"--out_dir={tmp_path / 'out2'}")
  assert wrong.returncode == 1 and "is a phototourism init. Give --views" in wrong.stderr


def test_fit_too_large_for_memory_is_refused_before_the_decode(tmp_path):
  # A 9000x7000 PNG of one colour: a few KB on disk, 63 megapixels once decoded.
  Image.new("RGB", (7000, 9000), (200, 30, 90)).save(tmp_path / "huge.png")
  result = subprocess.run(
      [sys.executable, str(REPO / "bin" / "fit.py"), "--init=natural",
       f"--image={tmp_path / 'huge.png'}", f"--out_dir={tmp_path / 'out'}"],
      capture_output=True, text=True, timeout=300,
      env=dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_METAINIT_MEMORY_LIMIT="2e9"))
  assert result.returncode == 1
  errors = [l for l in result.stderr.splitlines() if l.startswith("ERROR:")]
  assert len(errors) == 1 and "Fitting this 9000x7000 image needs about 7.3 GB" in errors[0]
  assert "downsample it to about" in errors[0] and not (tmp_path / "out").exists()


def test_a_long_fit_is_announced_with_its_estimated_duration(caplog):
  # A 5x256 SIREN's weight matrices: 2x256, three 256x256, 256x3 -> 6 x their
  # entries per point and step (forward and backward).
  field = siren.Siren(width=256, depth=5)
  per_point = 6 * (2 * 256 + 3 * 256 * 256 + 256 * 3)
  steps, points = 10_000_000, 64 * 64
  with caplog.at_level(logging.WARNING):
    seconds = fitting.announce_duration(field.params(), points, steps)
  assert seconds == pytest.approx(steps * points * per_point / fitting.ASSUMED_FLOPS)
  assert "about 11 days" in caplog.text  # 9.7e5 s
  caplog.clear()
  with caplog.at_level(logging.WARNING):
    fitting.announce_duration(field.params(), points, 2)  # milliseconds: no word
  assert not caplog.text
