"""Classical CT rows (FBP, SART through scikit-image): geometry, accuracy, the table."""

import builtins
import json
import os

import gin
import numpy as np
import pytest
import tensorflow as tf

from tf_metainit import evaluate
from tf_metainit import train
from tf_metainit.data import phantoms
from tf_metainit.fields import mlp  # noqa: F401  (registers FourierMLP with gin)
from tf_metainit.physics import classical_ct
from tf_metainit.physics import ct
from tf_metainit.tasks import ct as ct_task  # noqa: F401  (registers CTReconstruction)

transform = pytest.importorskip("skimage.transform")


def _psnr(a, b):
  return -10 * np.log10(np.mean(np.square(a - b)))


def _phantom(resolution, index=1):
  return phantoms.rasterize(phantoms.phantom_params(index, "test"), resolution)


def test_skimage_radon_is_our_projector_at_minus_the_angle():
  # The mapping the module's docstring states: radon(image, -degrees(t)).T = W p(t).
  image = _phantom(64)
  angles = np.array([0.0, 0.4, 1.3, 2.5])
  ours = ct.project(tf.constant(image[None]), tf.constant(angles[None], tf.float32))
  sk = transform.radon(image, theta=-np.rad2deg(angles), circle=True).T / 64
  np.testing.assert_allclose(sk, ours.numpy()[0], atol=2e-6 * np.abs(sk).max())
  # The other sign is a different geometry, which the check can see.
  flipped = transform.radon(image, theta=np.rad2deg(angles), circle=True).T / 64
  assert np.abs(flipped[1:] - ours.numpy()[0, 1:]).max() > 0.1 * np.abs(sk).max()


def test_fbp_and_sart_recover_a_densely_measured_phantom():
  # With 180 views either inverse is close to the image (measured: FBP 25.5 dB, its
  # ramp filter meeting a 64-pixel detector; SART 34.3); with 8 views SART is far
  # ahead of FBP's streaks (18.4 vs 26.9 dB on the validation phantoms). A wrong
  # rotation sign or centre would leave both near 10 dB.
  image = _phantom(64)
  dense = ct.evenly_spaced_angles(180, tf.float64).numpy()
  sino = ct.project(tf.constant(image[None], tf.float64),
                    tf.constant(dense[None])).numpy()[0]
  assert _psnr(classical_ct.fbp(sino, dense), image) > 24
  assert _psnr(classical_ct.sart(sino, dense, iterations=5), image) > 32
  sparse = ct.evenly_spaced_angles(8, tf.float64).numpy()
  sino8 = ct.project(tf.constant(image[None], tf.float64),
                     tf.constant(sparse[None])).numpy()[0]
  assert (_psnr(classical_ct.sart(sino8, sparse, iterations=50), image) >
          _psnr(classical_ct.fbp(sino8, sparse), image) + 3)


def test_reconstructions_stay_in_range_and_refuse_bad_input():
  image = _phantom(32)
  angles = ct.evenly_spaced_angles(4, tf.float64).numpy()
  sino = ct.project(tf.constant(image[None], tf.float64),
                    tf.constant(angles[None])).numpy()[0]
  for out in (classical_ct.fbp(sino, angles), classical_ct.sart(sino, angles, 3)):
    assert out.shape == (32, 32) and out.min() >= 0 and out.max() <= 1
  with pytest.raises(ValueError, match="one row per angle"):
    classical_ct.fbp(sino, angles[:3])
  with pytest.raises(ValueError, match="at least 1"):
    classical_ct.sart(sino, angles, iterations=0)
  with pytest.raises(ValueError, match="unknown classical CT method"):
    classical_ct.reconstruct("art", sino[None], angles[None])


def test_missing_scikit_image_names_the_extra(monkeypatch):
  real_import = builtins.__import__

  def no_skimage(name, *args, **kwargs):
    if name.startswith("skimage"):
      raise ImportError("No module named 'skimage'")
    return real_import(name, *args, **kwargs)

  monkeypatch.setattr(builtins, "__import__", no_skimage)
  with pytest.raises(ImportError, match=r"tf_metainit\[classical\]"):
    classical_ct.fbp(np.zeros((2, 8)), [0.0, 1.0])


def test_evaluate_adds_classical_rows_on_the_same_views(tmp_path):
  gin.clear_config()
  gin.parse_config("""
      FourierMLP.width = 16
      FourierMLP.depth = 3
      FourierMLP.num_features = 16
      CTReconstruction.field = @FourierMLP
      CTReconstruction.resolution = 16
      CTReconstruction.num_train = 2
      CTReconstruction.num_test = 2
      CTReconstruction.settings = (2, 4)
      meta_train.task = @CTReconstruction()
      meta_train.algorithm = 'reptile'
      meta_train.outer_batch_size = 2
      meta_train.num_iterations = 1
      meta_train.val_every = 0
  """)
  root = str(tmp_path / "run")
  try:
    train.meta_train(root)
    task = gin.query_parameter("meta_train.task").scoped_configurable_fn()
  finally:
    gin.clear_config()
  results = evaluate.evaluate(
      root, task=task, inits=("standard",), num_steps=3, report_step=None,
      grid_signals=2, classical={"fbp": {}, "sart": {2: {"iterations": 2},
                                                     4: {"iterations": 5}}})
  signals = task.test_signals()
  for setting, iterations in ((2, 2), (4, 5)):
    obs = task.observe(signals, tf.constant([0, 0]), setting)
    want = classical_ct.reconstruct("sart", obs["targets"].numpy(),
                                    obs["angles"].numpy(), iterations=iterations)
    psnr = [_psnr(w, s) for w, s in zip(want, signals["image"])]
    entry = results["inits"]["classical:sart"]["settings"][str(setting)]
    np.testing.assert_allclose(entry["psnr"], psnr, rtol=1e-4)
    assert entry["method"] == f"SART, {iterations} iterations, relaxation 0.5"
  table = open(os.path.join(root, "eval", "results.md")).read()
  assert "| FBP | " in table and "SART, 5 iterations" in table
  saved = json.load(open(os.path.join(root, "eval", "results.json")))
  assert set(saved["inits"]) == {"standard", "classical:fbp", "classical:sart"}


def test_evaluate_refuses_classical_rows_for_other_tasks(tmp_path):
  from tf_metainit.fields import siren  # pylint: disable=import-outside-toplevel
  from tf_metainit.tasks import image  # pylint: disable=import-outside-toplevel
  task = image.ImageRegression(resolution=8, num_train=2, num_test=1,
                               field=lambda: siren.Siren(width=8, depth=2))
  with pytest.raises(ValueError, match="ImageRegression has no classical methods"):
    evaluate.evaluate(str(tmp_path), task=task, inits=("standard",),
                      classical={"fbp": {}})


def test_shipped_classical_config_parses():
  from tf_metainit.cli import common  # pylint: disable=import-outside-toplevel
  gin.clear_config()
  try:
    common.parse_gin(["ct/eval_cpu.gin", "ct/classical.gin"], [])
    classical = gin.query_parameter("evaluate.classical")
  finally:
    gin.clear_config()
  assert set(classical) == {"fbp", "sart"}
  assert classical["sart"][8] == {"iterations": 200}
