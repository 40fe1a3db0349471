"""Inputs checked where they enter (issue 25, item 4): export manifests and weights,
sinograms and their angles, TF_CONFIG, an init's test-time step count, interpolation's
corner signals and --init names. Each bad input is one ValueError line that names the
problem, never a traceback, a large allocation or advice to unpickle a file."""

import json
import os
import shutil
import subprocess
import time

import numpy as np
import pytest

from tf_metainit import distribute
from tf_metainit import exports
from tf_metainit import fit_ct
from tf_metainit import interpolate
from tf_metainit import pretrained
from tf_metainit.fields import functional
from tf_metainit.fields import siren
from tf_metainit.tasks import image


def _one_line(error):
  # gin appends the configurable it was raised in; the binaries drop that.
  message = str(error.value).split("\n  In call to configurable")[0]
  assert "\n" not in message
  assert "pickle" not in message.lower()  # numpy's advice to unpickle, never
  return message


# --- exports --------------------------------------------------------------------------


def _copy(name, tmp_path):
  """A shipped init copied where a test may break it; (folder, manifest, arrays)."""
  folder = tmp_path / name
  shutil.copytree(pretrained.path(name), folder)
  manifest = json.loads((folder / exports.MANIFEST).read_text())
  with np.load(folder / exports.WEIGHTS) as npz:
    arrays = {k: npz[k] for k in npz.files}
  return folder, manifest, arrays


def _write(folder, manifest=None, arrays=None):
  if manifest is not None:
    (folder / exports.MANIFEST).write_text(json.dumps(manifest))
  if arrays is not None:
    np.savez(folder / exports.WEIGHTS, **arrays)


def _break(folder, manifest, arrays, fault):
  """Applies one fault a user's or a download's export may have."""
  if fault == "no layers":
    del manifest["layers"]
  elif fault == "no field":
    del manifest["field"]
  elif fault == "missing array":
    del arrays["layer_2_bias"]
  elif fault == "layers a string":
    manifest["layers"] = "layer_0_kernel"
  elif fault == "layer not an object":
    manifest["layers"][1] = ["layer_1_kernel", "layer_1_bias"]
  elif fault == "complex weights":
    arrays["layer_1_kernel"] = arrays["layer_1_kernel"].astype(np.complex64)
  elif fault == "integer weights":
    arrays["layer_1_bias"] = arrays["layer_1_bias"].astype(np.int32)
  elif fault == "nan weights":
    arrays["layer_3_kernel"][0, 0] = np.nan
  elif fault == "inf learned rate":
    arrays["inner_lr_4"][1] = np.inf
  elif fault == "rate missing":
    del arrays["inner_lr_9"]
  elif fault == "rate shape":
    arrays["inner_lr_3"] = arrays["inner_lr_3"][:1]
  elif fault == "wrong kernel shape":
    arrays["layer_2_kernel"] = arrays["layer_2_kernel"][:, :100]
  elif fault == "narrow layer":
    arrays["layer_2_kernel"] = arrays["layer_2_kernel"][:, :100]
    arrays["layer_2_bias"] = arrays["layer_2_bias"][:100]
    manifest["layers"][2]["shape"] = [256, 100]
  elif fault == "wrong first kernel":  # the field's in_dim is 2: only it can tell
    arrays["layer_0_kernel"] = np.zeros((5, 256), np.float32)
    manifest["layers"][0]["shape"] = [5, 256]
  elif fault == "declared shape":
    manifest["layers"][1]["shape"] = [256, 128]
  elif fault == "depth":
    manifest["field"]["depth"] = 7
  elif fault == "field key":
    del manifest["field"]["w0"]
  elif fault == "bad w0":
    manifest["field"]["w0"] = -1.0
  elif fault == "weights text file":
    (folder / "notes.txt").write_text("not an archive\n")
    manifest["weights"] = "notes.txt"
  elif fault == "weights npy":
    np.save(folder / "one.npy", arrays["layer_0_kernel"])
    manifest["weights"] = "one.npy"
  elif fault == "weights missing":
    manifest["weights"] = "gone.npz"
  elif fault == "object arrays":
    arrays["layer_0_bias"] = np.array([object()] * 256)
  elif fault == "weights outside":
    other = folder.parent / "other"
    other.mkdir()
    shutil.copy(folder / exports.WEIGHTS, other / exports.WEIGHTS)
    manifest["weights"] = "../other/weights.npz"
  elif fault == "weights absolute":
    outside = folder.parent / "elsewhere.npz"
    shutil.copy(folder / exports.WEIGHTS, outside)
    manifest["weights"] = str(outside)
  elif fault == "weights symlink":
    outside = folder.parent / "elsewhere.npz"
    shutil.copy(folder / exports.WEIGHTS, outside)
    os.symlink(outside, folder / "link.npz")
    manifest["weights"] = "link.npz"
  elif fault == "test_time a string":
    manifest["test_time"] = "sgd"
  elif fault == "rates without optimizer":
    del manifest["test_time"]["optimizer"]
  else:
    raise AssertionError(fault)
  _write(folder, manifest, arrays)


@pytest.mark.parametrize("fault, message", [
    ("no layers", "manifest.json has no 'layers'"),
    ("no field", "manifest.json has no 'field'"),
    ("missing array", "has no array 'layer_2_bias'"),
    ("layers a string", "'layers' must be a list of layers, got str"),
    ("layer not an object", r"layers\[1\] must be an object naming"),
    ("complex weights", "'layer_1_kernel' is of dtype complex64, not real"),
    ("integer weights", "'layer_1_bias' is of dtype int32"),
    ("nan weights", "'layer_3_kernel' holds 1 NaN or inf"),
    ("inf learned rate", "'inner_lr_4' holds 1 NaN or inf"),
    ("rate missing", "each needing one: inner_lr_0 .. inner_lr_9"),
    ("rate shape", "inner_lr_3 has shape"),
    ("wrong kernel shape", r"layer 2 has a kernel of shape \(256, 100\) and a bias "
                           r"of shape \(256,\)"),
    ("narrow layer", r"field.width is 256 but layer 2's kernel 'layer_2_kernel' is "
                     r"\(256, 100\)"),
    ("wrong first kernel", r"'layer_0_kernel' is \(5, 256\), the field described "
                           r"needs \(2, 256\)"),
    ("declared shape", r"layers\[1\].shape is \[256, 128\]"),
    ("depth", "field.depth is 7 but its 'layers' lists 5"),
    ("field key", "lacks 'w0', which its 'siren' field needs"),
    ("bad w0", "cannot be rebuilt: Siren.w0 must be"),
    ("weights text file", "notes.txt is not an .npz archive"),
    ("weights npy", "one.npy is not an .npz archive"),
    ("weights missing", "gone.npz is missing"),
    ("object arrays", "holds something other than plain numeric arrays"),
    ("weights outside", "weights = '../other/weights.npz' points outside the export"),
    ("weights absolute", "points outside the export"),
    ("weights symlink", "weights = 'link.npz' points outside the export"),
    ("test_time a string", "test_time must be an object"),
    ("rates without optimizer", "no test_time.optimizer"),
])
def test_a_broken_export_is_one_line_naming_the_fault(tmp_path, fault, message):
  folder, manifest, arrays = _copy("text", tmp_path)
  exports.load(str(folder))  # the copy itself is fine
  _break(folder, manifest, arrays, fault)
  with pytest.raises(exports.ExportError, match=message) as error:
    exports.load(str(folder))
  assert "Re-export it" in _one_line(error)


def test_a_fourier_fields_constants_are_checked(tmp_path):
  folder, manifest, arrays = _copy("ct64", tmp_path)
  exports.load(str(folder))
  arrays["fourier_matrix"] = arrays["fourier_matrix"][:, :128]
  _write(folder, arrays=arrays)
  with pytest.raises(exports.ExportError, match=r"constants\['fourier_matrix'\] is "
                                                r"\[2, 256\] but the array is"):
    exports.load(str(folder))
  del manifest["constants"]["fourier_matrix"]
  _write(folder, manifest)
  with pytest.raises(exports.ExportError, match="lacks 'fourier_matrix'"):
    exports.load(str(folder))


def test_a_huge_declared_width_fails_before_anything_is_built(tmp_path, monkeypatch):
  folder, manifest, _ = _copy("text", tmp_path)
  manifest["field"]["width"] = 12000  # built, 2.5 GB of weights
  _write(folder, manifest)
  built = []
  monkeypatch.setattr(functional, "from_description",
                      lambda *args: built.append(args))
  start = time.monotonic()
  with pytest.raises(exports.ExportError, match="field.width is 12000 but layer 0"):
    exports.load(str(folder))
  assert not built and time.monotonic() - start < 5


@pytest.mark.parametrize("steps, shown", [(-3, "-3"), (0, "0"), ("2", "'2'")])
def test_an_inits_step_count_is_checked_where_it_is_read(tmp_path, steps, shown):
  folder, manifest, _ = _copy("ct64", tmp_path)
  manifest["test_time"]["num_steps"] = steps
  _write(folder, manifest)
  with pytest.raises(ValueError, match=f"test_time.num_steps must be a positive "
                                       f"integer, got {shown}") as error:
    exports.load_init(str(folder))
  assert "manifest.json" in _one_line(error)


@pytest.mark.parametrize("optimizer, message", [
    ({"name": "sgd", "rate": 0.1}, "unexpected keyword argument 'rate'"),
    ({"name": "sgd", "learning_rate": float("inf")}, "must be a finite number"),
])
def test_an_optimizer_it_cannot_build_is_one_line(tmp_path, optimizer, message):
  folder, manifest, _ = _copy("ct64", tmp_path)
  manifest["test_time"]["optimizer"] = optimizer
  _write(folder, manifest)
  with pytest.raises(exports.ExportError, match="test_time.optimizer .'sgd'. cannot "
                                                f"be built: .*{message}") as error:
    exports.load_init(str(folder))
  _one_line(error)


# --- sinograms ------------------------------------------------------------------------


def _sinogram(tmp_path, sinogram=None, angles=None):
  """Paths of a 6-view, 8-bin sinogram and its angles, either replaced if given."""
  if sinogram is None:
    sinogram = np.random.default_rng(0).uniform(0, 1, (6, 8)).astype(np.float32)
  if angles is None:
    angles = np.linspace(0, np.pi, len(sinogram), endpoint=False).astype(np.float32)
  np.save(tmp_path / "sino.npy", sinogram)
  np.save(tmp_path / "angles.npy", angles)
  return str(tmp_path / "sino.npy"), str(tmp_path / "angles.npy")


def _ones(shape, dtype=np.float32):
  return np.ones(shape, dtype)


@pytest.mark.parametrize("sinogram, angles, message", [
    (_ones((6, 8), np.complex64), None, "holds complex numbers"),
    (np.full((6, 8), "0.5"), None, "holds <U3 values, not numbers"),
    (_ones((6, 8), bool), None, "holds bool values"),
    (_ones((0, 8)), _ones(0), "at least one view"),
    (np.where(np.eye(6, 8), np.nan, 1.0), None, "--sinogram holds NaN or inf"),
    (None, np.array([0, 1, np.inf, 2, 3, 4]), "--angles holds NaN or inf"),
    (None, _ones(5), "has 6 rows .* but --angles has 5"),
    (None, _ones(6, np.complex128), "--angles file .* holds complex"),
])
def test_bad_sinograms_are_one_line(tmp_path, sinogram, angles, message):
  with pytest.raises(ValueError, match=message) as error:
    fit_ct.load_sinogram(*_sinogram(tmp_path, sinogram, angles))
  _one_line(error)


def test_a_file_that_is_no_npy_gets_no_unpickling_advice(tmp_path):
  sino, angles = _sinogram(tmp_path)
  with open(sino, "w") as f:
    f.write("0.1 0.2 0.3\n")
  with pytest.raises(ValueError, match="not a plain numeric .npy array") as error:
    fit_ct.load_sinogram(sino, angles)
  _one_line(error)
  np.savez(tmp_path / "sino.npz", a=_ones((6, 8)))
  with pytest.raises(ValueError, match="is an .npz archive"):
    fit_ct.load_sinogram(str(tmp_path / "sino.npz"), angles)


@pytest.mark.parametrize("angles, warned", [
    (np.linspace(0, 180, 6, endpoint=False), True),  # degrees
    (np.array([0, 1, 2, 3, 4, 1e30]), True),
    (np.linspace(-np.pi, np.pi, 6), False),
    (np.linspace(0, 2 * np.pi, 6), False),
])
def test_angles_beyond_a_turn_are_warned_about(tmp_path, monkeypatch, angles, warned):
  logged = []
  monkeypatch.setattr(fit_ct.logging, "warning",
                      lambda fmt, *args: logged.append(fmt % args))
  sinogram, angles = fit_ct.load_sinogram(*_sinogram(tmp_path, angles=angles))
  assert sinogram.shape == (6, 8) and angles.dtype == np.float32
  assert len(logged) == int(warned)
  if warned:
    assert "degrees" in logged[0] and "np.deg2rad" in logged[0]
    assert "\n" not in logged[0]


# --- TF_CONFIG ------------------------------------------------------------------------


@pytest.mark.parametrize("config, message", [
    ({"cluster": {"worker": ["a:1"]}, "task": "worker"},
     "task must be an object .* got 'worker'"),
    ({"cluster": ["a:1", "b:2"], "task": {"type": "worker", "index": 0}},
     "cluster must be an object of job name -> addresses, got \\['a:1'"),
    ([{"cluster": {}}], "is a JSON list, not an object"),
    ({"cluster": {"worker": ["a:1", "b"]}, "task": {"type": "worker", "index": 0}},
     "no cluster.worker list of 'host:port' addresses"),
    ({"cluster": {"worker": ["a:1"], "chief": []}, "task": {"type": "worker",
                                                           "index": 0}},
     "no cluster.chief list"),
    ({"cluster": {"chief": ["a:1"]}, "task": {"type": "chief", "index": 0}},
     "no cluster.worker list .*its jobs: \\['chief'\\]"),
    ({"cluster": {"worker": ["a:1"]}, "task": {"type": "chief", "index": 0}},
     "naming a job of its cluster"),
    ({"cluster": {"worker": ["a:1"]}, "task": {"type": "ps", "index": 0}},
     "naming a job of its cluster"),
    ({"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": "1"}},
     "0 <= i < 2 .* got '1'"),
    ({"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": True}},
     "got True"),
    ({"cluster": {"worker": ["a:1"]}}, "task must be an object"),
])
def test_a_malformed_tf_config_names_the_fault_and_the_right_form(config, message):
  with pytest.raises(ValueError, match=message) as error:
    distribute.check_tf_config(json.dumps(config))
  assert '"task": {"type": "worker", "index": 0}' in _one_line(error)


def test_a_well_formed_tf_config_passes():
  config = {"cluster": {"chief": ["c:1"], "worker": ["a:2", "[::1]:3"]},
            "task": {"type": "worker", "index": 1}}
  assert distribute.check_tf_config(json.dumps(config)) == config


# --- interpolation, --init ------------------------------------------------------------


def test_interpolation_with_too_few_test_signals_says_how_many(tmp_path):
  task = image.ImageRegression(resolution=4, num_train=1, num_test=2,
                               field=lambda: siren.Siren(width=4, depth=2))
  with pytest.raises(ValueError, match=r"needs 3 held-out test signals, but the task "
                                       r"has 2 \(ImageRegression.num_test\)") as error:
    interpolate.interpolate(str(tmp_path), task=task)
  _one_line(error)
  with pytest.raises(ValueError, match="needs 6 held-out"):
    interpolate.interpolate(str(tmp_path), task=task, signal_indices=(0, 1, 5))


def test_a_shipped_init_name_wins_over_a_folder_here(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  logged = []
  monkeypatch.setattr(pretrained.logging, "warning",
                      lambda fmt, *args: logged.append(fmt % args))
  assert pretrained.resolve("text") == ("shipped", pretrained.path("text"))
  assert not logged
  (tmp_path / "text").mkdir()
  assert pretrained.resolve("text") == ("shipped", pretrained.path("text"))
  assert len(logged) == 1 and "--init=./text for the folder" in logged[0]
  with pytest.raises(ValueError, match="neither a shipped init, an export") as error:
    pretrained.resolve("./text")
  assert "root_dir" not in _one_line(error)
  (tmp_path / "text" / "config.gin").write_text("")
  assert pretrained.resolve("./text") == ("run", "./text")
  shutil.copy(os.path.join(pretrained.path("text"), exports.MANIFEST), tmp_path / "text")
  assert pretrained.resolve("./text") == ("export", "./text")
  with pytest.raises(ValueError, match="No pretrained init named 'txet'"):
    pretrained.resolve("txet")
  with pytest.raises(ValueError, match="sub/txet: no such folder"):
    pretrained.resolve("sub/txet")


# --- through the installed binary -----------------------------------------------------


def _fit_binary(cwd, *args):
  result = subprocess.run(["tf-metainit-fit", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300)
  errors = [line for line in result.stderr.splitlines() if line.startswith("ERROR:")]
  assert result.returncode == 1 and len(errors) == 1, result.stderr
  assert "Traceback" not in result.stderr
  return errors[0], result.stderr


def test_the_binary_says_one_line_for_a_broken_export_and_a_shadowing_folder(tmp_path):
  folder, manifest, _ = _copy("text", tmp_path)
  del manifest["layers"]
  _write(folder, manifest)
  (tmp_path / "photo.png").write_bytes(b"not a picture")
  error, _ = _fit_binary(tmp_path, "--init=./text", "--image=photo.png")
  assert "manifest.json has no 'layers'" in error
  # --init=text is the shipped init, whatever the folder ./text holds.
  error, stderr = _fit_binary(tmp_path, "--init=text", "--image=photo.png")
  assert "Cannot decode image file" in error and "root_dir" not in stderr
  assert "--init=./text for the folder" in stderr
