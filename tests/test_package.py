"""Process-level defaults the package sets before TensorFlow is imported, and what
its sdist and wheel ship."""

import os
import pathlib
import shutil
import subprocess
import sys
import tarfile
import zipfile

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]

_PROBE = ("import tf_metainit, os; "
          "from tensorflow.python.util import _pywrap_util_port as port; "
          "print(os.environ['TF_ENABLE_ONEDNN_OPTS'], port.IsMklEnabled())")


@pytest.mark.parametrize("preset, expected", [(None, "1 True"), ("0", "0 False")])
def test_onednn_on_unless_the_user_chose(preset, expected):
  env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
  if preset is not None:
    env["TF_ENABLE_ONEDNN_OPTS"] = preset
  out = subprocess.run([sys.executable, "-c", _PROBE + "; import tensorflow"],
                       env=env, capture_output=True, text=True, check=True)
  assert out.stdout.split("\n")[0].strip() == expected


def test_sdist_and_wheel_ship_every_gin_config(tmp_path):
  # Built from a copy, so the checkout gets no build/ or egg-info; the wheel is built
  # from the sdist, as pip does for a release, which checks both.
  src, dist, site = tmp_path / "src", tmp_path / "dist", tmp_path / "site"
  shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(
      ".git", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache"))
  build_sdist = ("from setuptools import build_meta; "
                 f"build_meta.build_sdist({str(dist)!r})")
  subprocess.run([sys.executable, "-c", build_sdist], cwd=src, check=True,
                 capture_output=True)
  (sdist,) = dist.glob("*.tar.gz")
  with tarfile.open(sdist) as tar:
    tar.extractall(tmp_path / "unpacked", filter="data")
  (unpacked,) = (tmp_path / "unpacked").iterdir()
  subprocess.run([sys.executable, "-m", "pip", "wheel", str(unpacked), "--no-deps",
                  "--no-build-isolation", "-w", str(dist)], check=True,
                 capture_output=True)
  (wheel,) = dist.glob("*.whl")
  want = {p.relative_to(REPO / "gin").as_posix() for p in (REPO / "gin").rglob("*.gin")}
  prefix = "tf_metainit/gin_configs/"
  with zipfile.ZipFile(wheel) as whl:
    shipped = {n[len(prefix):] for n in whl.namelist()
               if n.startswith(prefix) and n.endswith(".gin")}
    whl.extractall(site)
  assert "image/text_cpu.gin" in want
  assert shipped == want
  # Installed, the binaries look the configs up inside the package.
  probe = ("from tf_metainit.cli import common; "
           "print(common.__file__); print(common._resolve('image/text_cpu.gin'))")
  out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, check=True,
                       capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=str(site))).stdout.split()
  assert out == [str(site / "tf_metainit/cli/common.py"),
                 str(site / "tf_metainit/gin_configs/image/text_cpu.gin")]
