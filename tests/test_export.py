"""Export of inits and fitted fields: SavedModel, numpy re-implementation, atomicity.

A tiny Reptile run (8x8 text images, 3x16 SIREN, 2 outer steps) is trained in-process
and exported once. Two subprocesses then run while the in-process tests do, since each
pays the TF import: a fresh interpreter that loads the SavedModel with tf_metainit, gin
and keras made unimportable and then runs `saved_model_cli show --all`, and
bin/export.py killed on purpose after writing its SavedModel over a copy of the export.
"""

import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import sys
import textwrap

import gin
import numpy as np
import pytest
import tensorflow as tf

from tf_metainit import export
from tf_metainit import runs
from tf_metainit import train
from tf_metainit.cli import common
from tf_metainit.fields import mlp
from tf_metainit.fields import siren
from tf_metainit.meta import optimizers
from tf_metainit.tasks import contract
from tf_metainit.tasks import image
from tf_metainit import exports
from tf_metainit import testtime

REPO = pathlib.Path(__file__).resolve().parents[1]
# gin/testing/tiny.gin with a third layer, 2 outer steps.
TINY = "testing/tiny.gin"
SMALL = (
    "ImageRegression.num_train = 4",
    "Siren.depth = 3",
    "meta_train.num_iterations = 2",
    "meta_train.num_val_signals = 1",
)
ADAPT_STEPS = 5
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")

# Loads the exports with tf_metainit, gin and keras unimportable (the SavedModel must
# not need them), then runs `saved_model_cli show --all` in the same process to pay the TF
# import once: TF 2.21 installs the saved_model_cli console script, which is exactly
# tensorflow.python.tools.saved_model_cli:main.
FRESH_LOAD = textwrap.dedent("""
    import contextlib
    import io
    import sys
    for blocked in ("tf_metainit", "gin", "keras"):
      sys.modules[blocked] = None
    import numpy as np
    import tensorflow as tf
    from tensorflow.python.tools import saved_model_cli

    export_dir, fourier_dir, inputs, outputs = sys.argv[1:]
    inp = np.load(inputs)
    loaded = tf.saved_model.load(export_dir)
    values = loaded.signatures["render"](coords=tf.constant(inp["coords"]))["values"]
    fourier = tf.saved_model.load(fourier_dir).signatures["render"](
        coords=tf.constant(inp["coords"]))["values"]
    adapt = loaded.signatures["adapt"]
    fitted = adapt(image=tf.constant(inp["image"]),
                   num_steps=tf.constant(int(inp["num_steps"])))
    # H and W are dynamic: a non-square crop works too.
    crop = adapt(image=tf.constant(inp["image"][:5]), num_steps=tf.constant(1))
    sys.argv = ["saved_model_cli", "show", "--dir", export_dir, "--all"]
    shown = io.StringIO()
    with contextlib.redirect_stdout(shown):
      try:
        saved_model_cli.main()
      except SystemExit as e:
        assert not e.code, e.code
    np.savez(outputs, values=values.numpy(), fourier_values=fourier.numpy(),
             signatures=sorted(loaded.signatures),
             crop_shape=crop["reconstruction"].shape.as_list(),
             saved_model_cli=shown.getvalue(),
             **{k: v.numpy() for k, v in fitted.items()})
""")


def numpy_field(export_dir):
  """Rebuilds a field from manifest.json and weights.npz with numpy only (README)."""
  with open(os.path.join(export_dir, "manifest.json")) as f:
    manifest = json.load(f)
  weights = np.load(os.path.join(export_dir, manifest["weights"]))
  field = manifest["field"]
  layers = [(weights[layer["kernel"]], weights[layer["bias"]])
            for layer in manifest["layers"]]

  def apply(x):
    h = np.asarray(x, np.float32)
    if field["type"] == "fourier_mlp":
      proj = h @ weights["fourier_matrix"]
      proj = 2 * np.pi * proj if field["two_pi"] else proj
      h = np.concatenate([np.sin(proj), np.cos(proj)], -1)
    elif field["type"] == "nerf_mlp":
      scaled = h[:, None, :] * np.asarray(field["frequencies"], np.float32)[:, None]
      h = np.concatenate([np.sin(scaled).reshape(len(h), -1),
                          np.cos(scaled).reshape(len(h), -1)], -1)
    for i, (kernel, bias) in enumerate(layers):
      h = h @ kernel + bias
      last = i == len(layers) - 1
      if field["type"] == "siren":
        h = h + field["output_offset"] if last else np.sin(field["w0"] * h)
      elif not last:
        h = np.maximum(h, 0)
      elif field["output_activation"] == "sigmoid":
        h = 1 / (1 + np.exp(-h))
    return h

  return manifest, apply


def _tree_digest(path):
  digest = hashlib.sha256()
  for f in sorted(pathlib.Path(path).rglob("*")):
    if f.is_file():
      digest.update(str(f.relative_to(path)).encode())
      digest.update(f.read_bytes())
  return digest.hexdigest()


def _start(cmd, cwd, env=ENV):
  return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          cwd=cwd, env=env)


def _finish(proc, timeout=300):
  out, err = proc.communicate(timeout=timeout)
  return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  base = tmp_path_factory.mktemp("export")
  root, out = str(base / "run"), str(base / "init")
  gin.clear_config()
  common.parse_gin([TINY], list(SMALL))
  train.meta_train(root)
  # What bin/export.py does, with the task passed in so the test can use it too.
  gin.clear_config()
  common.parse_run_config(root, [], [])
  task = image.ImageRegression()
  manifest = export.export(root, out, task=task)
  meta = runs.load_init(task, root).params
  gin.clear_config()

  rng = np.random.default_rng(0)
  coords = np.concatenate([image.pixel_grid(task.resolution),
                           rng.uniform(0, 1, (50, 2))]).astype(np.float32)
  test_image = task.test_signals()["image"][0]
  inputs = str(base / "inputs.npz")
  np.savez(inputs, coords=coords, image=test_image, num_steps=ADAPT_STEPS)

  # A field with a fixed encoding (its Fourier matrix is a non-trainable variable).
  fourier = mlp.FourierMLP(num_features=8, sigma=10.0, width=16, depth=3)
  fourier_dir = str(base / "fourier")
  exports.export_params(fourier, fourier.params(), fourier_dir)

  previous = str(base / "previous")
  shutil.copytree(out, previous)
  digest = _tree_digest(previous)
  script = base / "fresh_load.py"
  script.write_text(FRESH_LOAD)
  outputs = str(base / "outputs.npz")
  procs = {
      "load": _start([sys.executable, str(script), out, fourier_dir, inputs, outputs],
                     str(base)),
      "killed": _start([sys.executable, str(REPO / "bin" / "export.py"),
                        f"--root_dir={root}", f"--export_dir={previous}"], str(base),
                       dict(ENV, **{exports.CRASH_ENV: "saved_model"})),
  }
  yield dict(base=base, root=root, out=out, task=task, meta=meta, manifest=manifest,
             coords=coords, image=test_image, outputs=outputs, previous=previous,
             fourier=fourier, fourier_dir=fourier_dir,
             digest=digest, procs=procs, results={})
  for proc in procs.values():
    if proc.poll() is None:
      proc.kill()
      proc.wait()


def _result(run, name):
  """The subprocess' outcome; waited for only here, so in-process tests overlap it."""
  if name not in run["results"]:
    run["results"][name] = _finish(run["procs"][name])
  return run["results"][name]


def _loaded(run):
  result = _result(run, "load")
  assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
  return np.load(run["outputs"])


# In-process tests come first: they run while the subprocesses import TensorFlow.


def test_failed_export_keeps_the_previous_one(run, monkeypatch):
  target = str(run["base"] / "failing")
  field = run["task"].field
  exports.export_params(field, run["meta"], target)
  digest = _tree_digest(target)

  def fail(*args, **kwargs):
    raise OSError("disk full")

  monkeypatch.setattr(np, "savez", fail)
  with pytest.raises(OSError, match="disk full"):
    exports.export_params(field, field.params(), target)
  assert _tree_digest(target) == digest
  assert not list(run["base"].glob("failing.*"))


def test_export_fitted_fields(run):
  task = run["task"]
  signals = task.test_signals()
  trace, finals = testtime.TestTimeOptimizer(task).run(
      run["meta"], signals, optimizers.SGD(1e-2), 3, "full", trace_every=3)
  fitted = testtime.unbatch(finals)
  assert len(fitted) == 2
  out_dir = str(run["base"] / "fitted" / "meta" / "full")
  dirs = exports.export_fitted(
      task, fitted, out_dir, manifest_extra={"init": "meta", "num_steps": 3},
      per_signal_extra=[{"psnr": float(p)} for p in trace[-1]])
  assert [os.path.basename(d) for d in dirs] == ["signal_000", "signal_001"]
  for k, path in enumerate(dirs):
    manifest, apply = numpy_field(path)
    assert manifest["kind"] == "fitted" and manifest["init"] == "meta"
    assert manifest["psnr"] == pytest.approx(float(trace[-1, k]))
    assert set(manifest["signatures"]) == {"render"}
    want = task.field.apply(fitted[k], run["coords"]).numpy()
    values = tf.saved_model.load(path).signatures["render"](
        coords=tf.constant(run["coords"]))["values"].numpy()
    assert np.abs(values - want).max() < 1e-5
    assert np.abs(apply(run["coords"]) - want).max() < 1e-5
    # The fitted field reproduces its signal as well as evaluate measured.
    mse = np.mean((want[:task.resolution ** 2] - signals["image"][k].reshape(-1, 3)) ** 2)
    assert float(contract.psnr_from_mse(mse)) == pytest.approx(trace[-1, k], abs=1e-3)


@pytest.mark.parametrize("make_field", [
    lambda: mlp.FourierMLP(in_dim=3, out_dim=2, num_features=4, two_pi=True, width=8,
                           depth=2, output="linear"),
    lambda: mlp.NerfMLP(num_frequencies=4, max_log_frequency=3.0, width=16, depth=3),
    lambda: siren.Siren(in_dim=1, out_dim=1, width=8, depth=2, w0=30.0),
], ids=["fourier_mlp_two_pi", "nerf_mlp", "siren_1d"])
def test_numpy_reimplementation_of_other_fields(make_field, tmp_path):
  field = make_field()
  path = str(tmp_path / "field")
  manifest = exports.export_params(field, field.params(), path)
  x = np.random.default_rng(1).uniform(-1, 1, (64, field.in_dim)).astype(np.float32)
  _, apply = numpy_field(path)
  want = field(x).numpy()
  assert np.abs(apply(x) - want).max() < 1e-5
  values = tf.saved_model.load(path).signatures["render"](coords=tf.constant(x))
  assert np.abs(values["values"].numpy() - want).max() < 1e-5
  if isinstance(field, mlp.FourierMLP):
    assert manifest["constants"] == {"fourier_matrix": [3, 4]}


def test_batched_params_are_rejected(run):
  field = run["task"].field
  batched = [p[None] for p in run["meta"]]
  with pytest.raises(ValueError, match="unbatch"):
    exports.export_params(field, batched, str(run["base"] / "batched"))
  assert not list(run["base"].glob("batched*"))


# --- Results of the subprocesses ---------------------------------------------------


def test_render_in_fresh_process_matches(run):
  got = _loaded(run)
  assert sorted(got["signatures"]) == ["adapt", "render"]
  want = run["task"].field.apply(run["meta"], run["coords"]).numpy()
  diff = np.abs(got["values"] - want).max()
  fourier_diff = np.abs(got["fourier_values"] - run["fourier"](run["coords"])).max()
  _, apply = numpy_field(run["fourier_dir"])
  fourier_numpy = np.abs(got["fourier_values"] - apply(run["coords"])).max()
  print(f"render in a fresh process vs in-process max |diff|: Siren {diff:.2e}, "
        f"FourierMLP {fourier_diff:.2e} (numpy {fourier_numpy:.2e})")
  assert diff < 1e-5 and fourier_diff < 1e-5 and fourier_numpy < 1e-5


def test_adapt_improves_psnr_like_the_test_time_optimizer(run):
  task = run["task"]
  signals = {"image": run["image"][None]}
  optimizer = optimizers.SGD(1e-2)  # the Meta init's default test-time optimizer
  trace, finals = testtime.TestTimeOptimizer(task).run(
      run["meta"], signals, optimizer, ADAPT_STEPS, "full", trace_every=ADAPT_STEPS)
  got = _loaded(run)
  gain, want_gain = got["psnr_after"] - got["psnr_before"], trace[-1, 0] - trace[0, 0]
  recon = task.render(finals[0], signals).numpy()[0]
  print(f"adapt {ADAPT_STEPS} steps: SavedModel {got['psnr_before']:.3f} -> "
        f"{got['psnr_after']:.3f} dB, in-process {trace[0, 0]:.3f} -> {trace[-1, 0]:.3f}"
        f" dB; gain differs by {abs(gain - want_gain):.1e} dB; reconstruction max "
        f"|diff| {np.abs(got['reconstruction'] - recon).max():.2e}")
  assert gain > 0
  assert abs(gain - want_gain) < 1e-3
  assert abs(got["psnr_before"] - trace[0, 0]) < 1e-3
  np.testing.assert_allclose(got["reconstruction"], recon, atol=1e-5)
  assert list(got["crop_shape"]) == [5, 8, 3]


def test_numpy_reimplementation_matches(run):
  saved = _loaded(run)["values"]
  manifest, apply = numpy_field(run["out"])
  want = run["task"].field.apply(run["meta"], run["coords"]).numpy()
  diff, diff_saved = np.abs(apply(run["coords"]) - want).max(), np.abs(
      apply(run["coords"]) - saved).max()
  print(f"numpy vs in-process max |diff| {diff:.2e}, vs SavedModel {diff_saved:.2e}")
  assert diff < 1e-5 and diff_saved < 1e-5
  # The manifest says what a re-implementation needs.
  assert manifest["field"]["w0"] == 200.0 and manifest["field"]["type"] == "siren"
  assert manifest["task"]["task"] == "image"
  assert manifest["kind"] == "meta_init"
  assert manifest["test_time"] == {
      "optimizer": {"name": "sgd", "learning_rate": 0.01}, "num_steps": 2}
  assert manifest["signatures"]["adapt"]["optimizer"]["learning_rate"] == 0.01
  assert manifest["signatures"]["render"]["inputs"]["coords"]["shape"] == [None, 2]
  assert manifest["training"]["algorithm"] == "reptile"
  assert manifest["training"]["num_iterations"] == 2
  assert "Siren.width = 16" in manifest["gin_config"]
  assert set(manifest["versions"]) >= {"tf_metainit", "tensorflow", "keras"}
  assert [layer["kernel"] for layer in manifest["layers"]] == [
      "layer_0_kernel", "layer_1_kernel", "layer_2_kernel"]


def test_saved_model_cli_lists_both_signatures(run):
  shown = str(_loaded(run)["saved_model_cli"])
  for text in ("signature_def['render']", "signature_def['adapt']", "coords",
               "num_steps", "reconstruction", "psnr_after", "shape: (-1, -1, 3)"):
    assert text in shown, shown


def test_killed_export_leaves_the_previous_one_intact(run):
  result = _result(run, "killed")
  assert result.returncode == -9, result.stderr  # SIGKILL, from exports.CRASH_ENV
  previous = run["previous"]
  assert _tree_digest(previous) == run["digest"]
  loaded = tf.saved_model.load(previous)
  values = loaded.signatures["render"](coords=tf.constant(run["coords"]))["values"]
  np.testing.assert_allclose(
      values.numpy(), run["task"].field.apply(run["meta"], run["coords"]).numpy(),
      atol=1e-5)
  # It was killed after its SavedModel was written into the temporary directory.
  leftovers = list(pathlib.Path(previous).parent.glob("previous.tmp-*"))
  assert len(leftovers) == 1
  assert (leftovers[0] / "saved_model.pb").exists()
  assert not (leftovers[0] / "manifest.json").exists()
  # The next export replaces the old one and cleans up after the killed one.
  exports.export_params(run["task"].field, run["meta"], previous)
  assert not list(pathlib.Path(previous).parent.glob("previous.*-*"))
  assert json.loads((pathlib.Path(previous) / "manifest.json").read_text())[
      "signatures"].keys() == {"render"}


CT_SMALL = (
    "CTReconstruction.resolution = 8",
    "CTReconstruction.num_train = 2",
    "CTReconstruction.num_test = 1",
    "CTReconstruction.num_projections = 3",
    "CTReconstruction.settings = (1, 2)",
    "FourierMLP.num_features = 8",
    "FourierMLP.width = 8",
    "FourierMLP.depth = 2",
    "meta_train.num_iterations = 1",
    "meta_train.inner_steps = 2",
    "meta_train.num_val_signals = 1",
)
ADAM = ("evaluate.optimizer_settings = {'meta': @meta/Adam()}",
        "meta/Adam.learning_rate = 1e-3")
EXPORT_ADAM = ("export.optimizer = @export/Adam()", "export/Adam.learning_rate = 1e-3")


def _tiny_run(root, gin_file, bindings):
  gin.clear_config()
  common.parse_gin([gin_file], list(bindings))
  train.meta_train(root)
  gin.clear_config()


def _export_like_the_binary(root, export_dir, bindings=()):
  """What bin/export.py does: the run's config.gin, the user's bindings, export."""
  gin.clear_config()
  common.parse_run_config(root, [], list(bindings), task_for=("export",))
  try:
    return export.export(root, export_dir)
  finally:
    gin.clear_config()


def test_ct_export_records_the_runs_inner_optimizer(tmp_path):
  # ct/cpu.gin trains with SGD at lr 10: the run record's test-time optimizer.
  root, out = str(tmp_path / "run"), str(tmp_path / "export")
  _tiny_run(root, "ct/cpu.gin", CT_SMALL)
  record = runs.read_record(root)
  assert record["test_time"] == {"optimizer": {"name": "sgd", "learning_rate": 10.0},
                                 "num_steps": 2}
  manifest = _export_like_the_binary(root, out)
  assert manifest["training"]["inner_optimizer"] == {"name": "sgd", "learning_rate": 10.0}
  assert manifest["test_time"] == record["test_time"]
  assert manifest["signatures"]["reconstruct"]["optimizer"] == {"name": "sgd",
                                                                "learning_rate": 10.0}
  # A training config that gives evaluate a Meta optimizer records that one.
  other = str(tmp_path / "run_adam")
  _tiny_run(other, "ct/cpu.gin", CT_SMALL + ADAM)
  assert runs.read_record(other)["test_time"] == {
      "optimizer": {"name": "adam", "learning_rate": 1e-3, "beta1": 0.9,
                    "beta2": 0.999, "epsilon": 1e-8}, "num_steps": 2}
  manifest = _export_like_the_binary(other, out)
  assert manifest["signatures"]["reconstruct"]["optimizer"]["name"] == "adam"
  # export.optimizer overrides the record.
  manifest = _export_like_the_binary(root, out, EXPORT_ADAM)
  assert manifest["test_time"]["optimizer"]["name"] == "adam"
  assert manifest["signatures"]["reconstruct"]["optimizer"]["name"] == "adam"


def test_adapt_signature_bakes_the_runs_inner_optimizer(tmp_path):
  root, out = str(tmp_path / "run"), str(tmp_path / "export")
  _tiny_run(root, TINY, SMALL + ("inner/SGD.learning_rate = 0.5",))
  manifest = _export_like_the_binary(root, out)
  assert manifest["test_time"]["optimizer"]["learning_rate"] == 0.5
  assert manifest["signatures"]["adapt"]["optimizer"] == {"name": "sgd",
                                                          "learning_rate": 0.5}
  manifest = _export_like_the_binary(root, out, EXPORT_ADAM)
  baked = manifest["signatures"]["adapt"]["optimizer"]
  assert (baked["name"], baked["learning_rate"]) == ("adam", 1e-3)
