"""tf-metainit-fit-folder: a folder of images fitted into fields, batch by batch.

Each image's fitted weights are checked against the same init fitted to that image
alone (testtime.fit_image, a batch of one), a kill -9 and a resume against an
uninterrupted run bit for bit, and shards against one process.
"""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from tf_metainit import exports
from tf_metainit import fit_folder
from tf_metainit import fitted_set
from tf_metainit import pretrained
from tf_metainit import testtime
from tf_metainit.data import dead_leaves
from tf_metainit.data import image_folder
from tf_metainit.tasks import image as image_task

REPO = pathlib.Path(__file__).resolve().parents[1]
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
SIZE = 16


def _folder(path, count, broken=(), size=SIZE):
  path.mkdir()
  for i, picture in enumerate(dead_leaves.dead_leaves_images("test", count, size, 7)):
    Image.fromarray(np.round(picture * 255).astype(np.uint8)).save(
        path / f"leaf_{i:03d}.png")
  for name in broken:
    (path / name).write_bytes(b"\x89PNG\r\n\x1a\n not an image")
  return path


def _init():
  return exports.load_init(pretrained.resolve("natural")[1])


def _command(folder, out, *extra):
  return [sys.executable, str(REPO / "bin" / "fit_folder.py"), "--init=natural",
          f"--folder={folder}", f"--out_dir={out}", *extra]


def _run(folder, out, *extra):
  result = subprocess.run(_command(folder, out, *extra), capture_output=True, text=True,
                          env=ENV, timeout=600)
  return result


def _arrays(out):
  return fitted_set.load(str(out))


def test_each_image_gets_the_weights_of_fitting_it_alone(tmp_path):
  # At the init's own 64 px, where its learned rates gain 20 dB in 3 steps.
  folder = _folder(tmp_path / "photos", 5, broken=("leaf_002b.png",), size=64)
  init = _init()
  record = fit_folder.fit_folder(init, str(folder), str(tmp_path / "out"),
                                 resolution=64, num_steps=3, batch=4)
  assert record["state"] == "complete" and record["fitted"] == 5
  assert [s["file"] for s in record["skipped"]] == ["leaf_002b.png"]
  arrays = _arrays(tmp_path / "out")
  names = sorted(f"leaf_{i:03d}.png" for i in range(5))
  assert list(arrays["names"]) == names
  task = image_task.ImageRegression.for_field(init.field)
  keys = exports.param_names(init.field)
  for j, name in enumerate(names):
    picture = image_folder.load_image(str(folder / name))  # already 64x64
    alone, curve = testtime.fit_image(task, init.params, picture, init.optimizer, 3)
    for key, weights in zip(keys, alone):
      np.testing.assert_allclose(arrays[key][j], weights.numpy(), atol=2e-5)
    np.testing.assert_allclose(
        [arrays["psnr_init"][j], arrays["psnr_fitted"][j]], curve[[0, -1]], atol=1e-3)
  table = (tmp_path / "out" / "psnr.csv").read_text().splitlines()
  assert table[0] == "name,psnr_init,psnr_fitted" and len(table) == 6
  assert not (tmp_path / "out" / "parts").exists()
  # The reader: (name, weights) per image, and the init export rebuilds the field.
  (name, weights), = list(fitted_set.dataset(str(tmp_path / "out")).skip(1).take(1))
  assert name.numpy().decode() == names[1]
  np.testing.assert_array_equal(weights["layer_0_kernel"].numpy(),
                                arrays["layer_0_kernel"][1])
  field, params, _, _ = exports.load(str(tmp_path / "out" / "init"))
  assert [tuple(p.shape) for p in params] == [arrays[k].shape[1:] for k in keys]
  assert float(np.mean(arrays["psnr_fitted"])) > float(np.mean(arrays["psnr_init"])) + 10
  # Run again: complete, nothing redone, nothing changed.
  before = (tmp_path / "out" / "fields.npz").read_bytes()
  again = fit_folder.fit_folder(init, str(folder), str(tmp_path / "out"),
                                resolution=64, num_steps=3, batch=4)
  assert again["state"] == "complete"
  assert (tmp_path / "out" / "fields.npz").read_bytes() == before


@pytest.mark.slow  # over 35 s on 2 cores; run with --runslow
def test_a_kill_and_a_resume_give_the_uninterrupted_weights(tmp_path):
  folder = _folder(tmp_path / "photos", 24)
  flags = ("--steps=2", f"--resolution={SIZE}", "--batch=2")
  reference = _run(folder, tmp_path / "reference", *flags)
  assert reference.returncode == 0, reference.stderr[-2000:]
  out = tmp_path / "out"
  proc = subprocess.Popen(_command(folder, out, *flags), stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL, env=ENV)
  deadline = time.time() + 300
  while not os.path.exists(fitted_set.part_path(str(out), 3)):
    assert time.time() < deadline and proc.poll() is None, "no part was written"
    time.sleep(0.02)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert not (out / "fields.npz").exists()
  done = fitted_set.finished_parts(str(out), 12)
  assert 4 <= len(done) < 12
  resumed = _run(folder, out, *flags)
  assert resumed.returncode == 0, resumed.stderr[-2000:]
  assert "Resuming" in resumed.stderr
  a, b = _arrays(tmp_path / "reference"), _arrays(out)
  assert a.keys() == b.keys()
  for key in a:
    np.testing.assert_array_equal(a[key], b[key])
  assert "Fitted 24 images" in resumed.stdout


@pytest.mark.slow  # three fits in fresh processes, one over 2 logical CPU replicas
def test_two_shards_and_two_replicas_give_the_one_process_weights(tmp_path):
  folder = _folder(tmp_path / "photos", 6)
  flags = ("--steps=2", f"--resolution={SIZE}", "--batch=2")
  assert _run(folder, tmp_path / "one", *flags).returncode == 0
  first = _run(folder, tmp_path / "sharded", *flags, "--num_shards=2", "--shard=1")
  assert first.returncode == 0 and "Shard 1 of 2 done" in first.stdout
  assert not (tmp_path / "sharded" / "fields.npz").exists()
  second = _run(folder, tmp_path / "sharded", *flags, "--num_shards=2", "--shard=0",
                "--strategy=mirrored")
  assert second.returncode == 0, second.stderr[-2000:]
  a, b = _arrays(tmp_path / "one"), _arrays(tmp_path / "sharded")
  np.testing.assert_array_equal(a.pop("names"), b.pop("names"))
  for key in a:
    np.testing.assert_allclose(a[key], b[key], atol=1e-6)


@pytest.mark.slow  # over 35 s on 2 cores; run with --runslow
def test_other_settings_and_foreign_folders_are_refused_in_one_line(tmp_path):
  folder = _folder(tmp_path / "photos", 2)
  out = tmp_path / "out"
  assert _run(folder, out, "--steps=1", f"--resolution={SIZE}").returncode == 0
  for extra, message in (
      (("--steps=2", f"--resolution={SIZE}"), "holds a fit with other settings "
       "(num_steps: 1 -> 2)"),
      (("--steps=1", f"--resolution={SIZE}", "--num_shards=2", "--shard=2"),
       "--shard=2 must be in 0..1")):
    result = _run(folder, out, *extra)
    errors = [l for l in result.stderr.splitlines() if l.startswith("ERROR:")]
    assert result.returncode == 1 and len(errors) == 1, result.stderr[-2000:]
    assert message in errors[0]
  mine = tmp_path / "mine"
  mine.mkdir()
  (mine / "notes.txt").write_text("mine")
  result = _run(folder, mine, "--steps=1")
  assert result.returncode == 1 and "holds files that are not a tf-metainit-fit-folder" \
      " output" in result.stderr
  assert os.listdir(mine) == ["notes.txt"]


def test_a_merge_claim_of_a_dead_shard_is_taken_over(tmp_path):
  dead = subprocess.Popen([sys.executable, "-c", "pass"])
  dead.wait()
  claim = tmp_path / fitted_set.MERGING
  claim.write_text(json.dumps({"pid": os.getpid(), "host": os.uname().nodename}))
  assert not fitted_set.claim_merge(str(tmp_path))  # alive: this process
  claim.write_text(json.dumps({"pid": dead.pid, "host": os.uname().nodename}))
  assert fitted_set.claim_merge(str(tmp_path))
  assert json.loads(claim.read_text())["pid"] == os.getpid()
