"""The ShapeNet task: observations, inner batches, the loss against numpy, and a run.

The references are independent of tf_metainit.physics: rays come from the procedural
generator's numpy twin, and the field and the volume render are re-done in numpy from
the reference formulas (REFERENCE.md 1.3, 4). Objects are 8x8 procedural chairs and
the field a 3x16 NerfMLP, so the whole file stays small.
"""

import copy
import json
import os

import gin
import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from tf_metainit import evaluate
from tf_metainit import testtime
from tf_metainit import train
from tf_metainit.cli import common
from tf_metainit.data import procedural_shapes
from tf_metainit.fields import functional
from tf_metainit.fields import mlp
from tf_metainit.meta import optimizers
from tf_metainit.tasks import contract
from tf_metainit.tasks import shapenet

RES = 8
SAMPLES = 6


def _field():
  return mlp.NerfMLP(width=16, depth=3, num_frequencies=4, max_log_frequency=3.0, seed=3)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("shapenet_data"))


@pytest.fixture(scope="module")
def task(data_dir):
  return shapenet.ShapeNetViews(
      category="chairs", data_dir=data_dir, resolution=RES, num_train=2, num_test=2,
      rays_per_step=7, test_rays_per_step=5, num_samples=SAMPLES, num_eval_views=2,
      render_chunk_points=5 * SAMPLES, field=_field)


@pytest.fixture(scope="module")
def signals(task):
  return task.test_signals()


def test_observation_shapes_and_rays(task, signals):
  assert signals["images"].shape == (2, 50, RES, RES, 3)
  assert signals["c2w"].shape == (2, 50, 4, 4) and signals["focal"].shape == (2,)
  seed = contract.stateless_seed(0)
  for setting, views, rays_per_step in ((None, 25, 7), (1, 1, 5), (25, 25, 5)):
    obs = task.observe(signals, seed, setting)
    for key in ("origins", "directions", "colours"):
      assert obs[key].shape == (2, views * RES * RES, 3), (setting, key)
    assert obs["rays_per_step"] == rays_per_step
  # Single view = frame 0 of each object, rays as the generator casts them.
  obs = task.observe(signals, seed, 1)
  for b in range(2):
    origins, directions = procedural_shapes.camera_rays_np(
        signals["c2w"][b, :1].astype(np.float64), signals["focal"][b], RES, RES)
    np.testing.assert_allclose(obs["origins"][b], origins.reshape(-1, 3), atol=1e-5)
    np.testing.assert_allclose(obs["directions"][b], directions.reshape(-1, 3),
                               atol=1e-5)
    np.testing.assert_array_equal(obs["colours"][b],
                                  signals["images"][b, 0].reshape(-1, 3))
  with pytest.raises(ValueError, match="1 to 25 views"):
    task.observe(signals, seed, 26)


def test_random_training_view_is_seeded(data_dir):
  task = shapenet.ShapeNetViews(
      data_dir=data_dir, resolution=RES, num_train=2, num_test=2, num_train_views=1,
      train_view_choice="random", field=_field)
  signals = task.test_signals()
  chosen = []
  for step in range(4):
    obs = task.observe(signals, contract.stateless_seed(0, step))
    again = task.observe(signals, contract.stateless_seed(0, step))
    np.testing.assert_array_equal(obs["colours"], again["colours"])
    colours = obs["colours"].numpy().reshape(2, 1, RES, RES, 3)
    # Each object shows one of its 25 input frames, never a held-out one.
    frames = [int(np.argmin(np.abs(signals["images"][b] - colours[b]).sum((1, 2, 3))))
              for b in range(2)]
    assert all(f < 25 for f in frames)
    chosen.append(tuple(frames))
  assert len(set(chosen)) > 1


def test_inner_batch_is_a_function_of_seed_and_step(task, signals):
  obs = task.observe(signals, contract.stateless_seed(0), None)
  seed = contract.stateless_seed(5)
  (a, ta), (b, tb) = (task.inner_batch(obs, tf.constant(3), seed) for _ in range(2))
  (c, tc) = task.inner_batch(obs, tf.constant(4), seed)
  assert a["points"].shape == (2, 7, SAMPLES, 3) and a["z_vals"].shape == (2, 7, SAMPLES)
  assert ta.shape == (2, 7, 3)
  np.testing.assert_array_equal(a["points"], b["points"])
  np.testing.assert_array_equal(ta, tb)
  assert not np.allclose(a["z_vals"], c["z_vals"])
  # Stratified: sample k lies in [near + k (far-near)/(N-1), + (far-near)/N).
  lo = 2.0 + 4.0 * np.arange(SAMPLES) / (SAMPLES - 1)
  z = a["z_vals"].numpy()
  assert np.all(z >= lo - 1e-6) and np.all(z < lo + 4.0 / SAMPLES + 1e-6)
  # Every sampled ray is a real pixel ray of the observed views, with its colour.
  origins, directions = procedural_shapes.camera_rays_np(
      signals["c2w"][0, :25].astype(np.float64), signals["focal"][0], RES, RES)
  origins, directions = origins.reshape(-1, 3), directions.reshape(-1, 3)
  points = a["points"].numpy()[0]
  d = (points[:, -1] - points[:, 0]) / (z[0, :, -1] - z[0, :, 0])[:, None]
  o = points[:, 0] - z[0, :, :1] * d
  for r in range(7):
    pixel = np.argmin(np.abs(directions - d[r]).sum(1) + np.abs(origins - o[r]).sum(1))
    np.testing.assert_allclose(directions[pixel], d[r], atol=1e-3)
    np.testing.assert_allclose(ta[0, r], signals["images"][0, :25].reshape(-1, 3)[pixel])


def _numpy_nerf(params, points):
  """Positional encoding + ReLU MLP, weights in (kernel, bias) order."""
  freqs = 2.0 ** np.linspace(0.0, 3.0, 4)
  scaled = (points[..., None, :] * freqs[:, None]).reshape(points.shape[:-1] + (-1,))
  h = np.concatenate([np.sin(scaled), np.cos(scaled)], -1)
  weights = [np.asarray(p, np.float64) for p in params]
  for i in range(0, len(weights) - 2, 2):
    h = np.maximum(h @ weights[i] + weights[i + 1], 0.0)
  return h @ weights[-2] + weights[-1]


def _numpy_render(raw, z_vals):
  """REFERENCE.md 4: white background, last delta 1e-3, T with the 1e-10 floor."""
  rgb, sigma = 1 / (1 + np.exp(-raw[..., :3])), np.maximum(raw[..., 3], 0.0)
  deltas = np.concatenate([np.diff(z_vals, axis=-1),
                           np.full(z_vals.shape[:-1] + (1,), 1e-3)], -1)
  alpha = 1.0 - np.exp(-sigma * deltas)
  survive = np.minimum(1.0, 1.0 - alpha + 1e-10)
  transmittance = np.concatenate([np.ones_like(survive[..., :1]),
                                  np.cumprod(survive[..., :-1], -1)], -1)
  weights = alpha * transmittance
  return (weights[..., None] * rgb).sum(-2) + 1.0 - weights.sum(-1)[..., None]


def test_loss_matches_numpy_render(task, signals):
  obs = task.observe(signals, contract.stateless_seed(0), 1)
  inputs, targets = task.inner_batch(obs, tf.constant(0), contract.stateless_seed(1))
  rng = np.random.default_rng(0)
  # Two signals with different weights; larger weights make sigma matter.
  params = []
  for p in task.field.params():
    p = 2.0 * np.asarray(p)
    params.append(np.stack([p, p + 0.1 * rng.standard_normal(p.shape)]).astype(np.float32))
  got = task.loss([tf.constant(p) for p in params], inputs, targets).numpy()
  want = []
  for b in range(2):
    raw = _numpy_nerf([p[b] for p in params], inputs["points"].numpy()[b].astype(np.float64))
    pred = _numpy_render(raw, inputs["z_vals"].numpy()[b].astype(np.float64))
    assert 0.05 < np.mean(pred) < 0.99  # neither all white nor saturated
    want.append(np.mean((pred - targets.numpy()[b]) ** 2))
  np.testing.assert_allclose(got, want, rtol=1e-4)


def test_metrics_and_render_chunked_equal_numpy(task, signals):
  params = functional.batch_params([p * 2.0 for p in task.field.params()], 2)
  metrics = tf.function(task.metrics)(params, {k: tf.constant(v) for k, v in
                                               signals.items()})
  rendered = task.render(params, signals).numpy()
  assert rendered.shape == (2, RES, RES, 3)
  np.testing.assert_array_equal(task.targets_for_display(signals),
                                signals["images"][:, 25])
  unbatched = [np.asarray(p) for p in task.field.params()]
  for b in range(2):
    psnrs = []
    for view in (25, 26):
      origins, directions = procedural_shapes.camera_rays_np(
          signals["c2w"][b, view:view + 1].astype(np.float64), signals["focal"][b],
          RES, RES)
      z_vals = np.linspace(2.0, 6.0, SAMPLES)
      points = origins[..., None, :] + z_vals[:, None] * directions[..., None, :]
      image = np.clip(_numpy_render(_numpy_nerf([2.0 * p for p in unbatched], points),
                                    z_vals), 0, 1)[0]
      if view == 25:
        np.testing.assert_allclose(rendered[b], image, atol=1e-4)
      psnrs.append(-10 * np.log10(np.mean((image - signals["images"][b, view]) ** 2)))
    np.testing.assert_allclose(metrics["psnr"][b], np.mean(psnrs), rtol=1e-4)


def test_matched_signal_and_no_mean(task):
  signal = task.output_as_signal(task.field.params())
  assert signal["images"].shape == (1, 50, RES, RES, 3)
  assert signal["c2w"].shape == (1, 50, 4, 4) and signal["focal"].shape == (1,)
  assert task.fit_setting == 25 and task.settings == (1, 25)
  with pytest.raises(NotImplementedError, match="Mean"):
    task.mean_signals()


def test_streamed_training_data_equals_in_memory(task, data_dir):
  streamed = shapenet.ShapeNetViews(
      category="chairs", data_dir=data_dir, resolution=RES, num_train=2, num_test=2,
      num_samples=SAMPLES, in_memory=False, field=_field)
  assert task.in_memory and not streamed.in_memory  # Procedural default: in RAM.
  ram, disk = iter(task.train_dataset(4)), iter(streamed.train_dataset(4))
  for _ in range(3):
    a, b = next(ram), next(disk)
    for key in ("images", "c2w", "focal"):
      np.testing.assert_allclose(a[key], b[key], atol=1e-6)
  params = task.field.params()
  np.testing.assert_allclose(streamed.output_as_signal(params)["images"],
                             task.output_as_signal(params)["images"], atol=1e-6)


def _wide_category(root, num_views=26):
  """Released-format chairs whose views are 2x4 (HxW): two train, one test object."""
  category = os.path.join(root, "chairs")
  rgba = np.full((2, 4, 4), 255, np.uint8)
  for object_id in ("a", "b", "c"):
    object_dir = os.path.join(category, object_id)
    os.makedirs(object_dir)
    frames = []
    for k in range(num_views):
      Image.fromarray(rgba, "RGBA").save(os.path.join(object_dir, f"r_{k}.png"))
      frames.append({"file_path": f"./r_{k}", "transform_matrix": np.eye(4).tolist()})
    with open(os.path.join(object_dir, "transforms.json"), "w") as f:
      json.dump({"camera_angle_x": 0.7, "frames": frames}, f)
  with open(os.path.join(category, "chairs_splits.json"), "w") as f:
    json.dump({"train": ["a", "b"], "val": [], "test": ["c"]}, f)
  return root


@pytest.mark.parametrize("in_memory", [True, False])
def test_nonsquare_views_need_the_gin_opt_in(tmp_path, clean_gin, in_memory):
  data_dir = _wide_category(str(tmp_path))
  gin.parse_config([f"ShapeNetViews.data_dir = '{data_dir}'",
                    "ShapeNetViews.procedural = False", "ShapeNetViews.resolution = 2",
                    f"ShapeNetViews.in_memory = {in_memory}"])
  with pytest.raises(ValueError, match=r"r_0\.png is 2x4 .*"
                     r"ShapeNetViews\.allow_nonsquare_resize = True"):
    shapenet.ShapeNetViews(field=_field).test_signals()
  gin.parse_config("ShapeNetViews.allow_nonsquare_resize = True")
  task = shapenet.ShapeNetViews(field=_field)
  assert task.test_signals()["images"].shape == (1, 26, 2, 2, 3)
  assert next(iter(task.train_dataset(0)))["images"].shape == (26, 2, 2, 3)


@pytest.mark.parametrize("files", [
    ["shapenet/chairs.gin"], ["shapenet/cars.gin"], ["shapenet/lamps.gin"],
    ["shapenet/chairs.gin", "shapenet/sv.gin"], ["shapenet/chairs_cpu.gin"],
    ["shapenet/cars_cpu.gin"], ["shapenet/lamps_cpu.gin"]])
def test_gin_files_parse(files, clean_gin):
  common.parse_gin(files, [])
  assert gin.query_parameter("meta_train.algorithm") == "reptile"
  assert gin.query_parameter("meta_train.inner_steps") == 32
  assert "mean" not in gin.query_parameter("evaluate.inits")
  # A deep copy evaluates gin's references: the optimizer objects evaluate gets.
  settings = copy.deepcopy(gin.query_parameter("evaluate.optimizer_settings"))
  # No Meta init here: every name's optimizer must come from the config.
  lookup = lambda settings, name, setting: testtime.Choices(
      settings, {}, 1).optimizer(name, setting)
  for name in ("standard", "matched", "shuffled", "meta", "meta:SV"):
    for setting in (1, 25):
      optimizer = lookup(settings, name, setting)
      assert isinstance(optimizer, (optimizers.SGD, optimizers.Adam))
      assert optimizer.learning_rate > 0
  if files[0].endswith("_cpu.gin"):  # CPU scale, the category's own Table 3 settings
    assert gin.query_parameter("ShapeNetViews.resolution") == 32
    assert gin.query_parameter("ShapeNetViews.category") == files[0].split("/")[1][:-8]
    assert gin.query_parameter("outer/Adam.learning_rate") == 5e-4
  if files == ["shapenet/chairs.gin"]:  # seed Table 3, Chairs, single view
    assert lookup(settings, "standard", 1) == optimizers.Adam(1e-5)
    assert lookup(settings, "meta:SV", 1) == optimizers.SGD(0.5)
    assert gin.query_parameter("evaluate.num_steps")["matched"] == 2000


def test_meta_train_then_evaluate_with_an_sv_run(data_dir, tmp_path, clean_gin):
  """Two Reptile iterations, then the comparison with the run also standing in as SV.

  Every init but SV shares one optimizer and the trace step equals the budget, so the
  evaluation compiles two test-time functions (tracing dominates at this size).
  """
  tiny = [
      f"ShapeNetViews.data_dir = '{data_dir}'", f"ShapeNetViews.resolution = {RES}",
      "ShapeNetViews.num_train = 2", "ShapeNetViews.num_test = 2",
      f"ShapeNetViews.num_samples = {SAMPLES}", "ShapeNetViews.num_eval_views = 1",
      "ShapeNetViews.rays_per_step = 8", "ShapeNetViews.test_rays_per_step = 4",
      "ShapeNetViews.settings = (1,)",
      "NerfMLP.width = 16", "NerfMLP.depth = 3",
      "meta_train.num_iterations = 2", "meta_train.inner_steps = 2",
      "meta_train.log_every = 1",
      "evaluate.task = @ShapeNetViews()", "evaluate.trace_every = 2",
      "evaluate.optimizer_settings = {'standard': @adam/Adam(), "
      "'matched': @adam/Adam(), 'shuffled': @adam/Adam(), 'meta': @adam/Adam(), "
      "'meta:SV': @sv/SGD()}",
      "adam/Adam.learning_rate = 1e-4", "sv/SGD.learning_rate = 0.5",
      "evaluate.num_steps = 2", "evaluate.fit_steps = 2", "evaluate.grid_signals = 1",
  ]
  root = str(tmp_path / "mv")
  common.parse_gin(["shapenet/chairs_cpu.gin"], tiny)
  assert train.meta_train(root) == 2
  assert tf.train.latest_checkpoint(os.path.join(root, "train", "checkpoints")).endswith(
      "ckpt-2")
  evaluate.evaluate(root, extra_runs={"SV": root})
  with open(os.path.join(root, "eval", "results.json")) as f:
    results = json.load(f)
  assert results["settings"] == ["1"] and results["report_step"] is None
  inits = results["inits"]
  assert list(inits) == ["standard", "matched", "shuffled", "meta", "meta:SV"]
  assert inits["meta"]["label"] == "MV Meta" and inits["meta:SV"]["label"] == "SV Meta"
  sv = inits["meta:SV"]["settings"]["1"]
  assert (sv["optimizer"], sv["learning_rate"], sv["num_steps"]) == ("sgd", 0.5, 2)
  for entry in inits.values():
    assert np.all(np.isfinite(entry["settings"]["1"]["metric"]))
  # Same weights, same optimizer: the SV slot reproduces Meta's start exactly.
  assert inits["meta:SV"]["settings"]["1"]["metric"][0][0] == (
      inits["meta"]["settings"]["1"]["metric"][0][0])
  # Grid columns: input view, held-out target, five inits; 8 px tiles drawn at 16x
  # (about 128 px).
  grid = np.asarray(Image.open(os.path.join(root, "eval", "grid_1.png")))
  assert grid.shape[1] == 7 * (RES * 16 + 2) + 2
  first_tile = grid[16:16 + RES * 16:16, 2:2 + RES * 16:16]
  frame0 = shapenet.ShapeNetViews(category="chairs", data_dir=data_dir, resolution=RES,
                                  num_train=2, num_test=2).test_signals()["images"][0, 0]
  np.testing.assert_allclose(first_tile / 255.0, frame0, atol=1 / 255.0)
