"""Evaluation: the table's statistics by hand, baseline inits, an end-to-end run."""

import json
import os

import gin
import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from tf_metainit import baselines
from tf_metainit import evaluate
from tf_metainit import export
from tf_metainit import train
from tf_metainit.fields import siren
from tf_metainit.meta import inits
from tf_metainit.meta import optimizers
from tf_metainit.tasks import contract
from tf_metainit.tasks import image
from tf_metainit import testtime


def test_psnr_from_mse_by_hand():
  np.testing.assert_allclose(contract.psnr_from_mse(tf.constant([1.0, 0.01, 1e-3])).numpy(),
                             [0.0, 20.0, 30.0], rtol=1e-6)


def test_steps_to_reach_by_hand():
  # Two signals traced after steps 0, 5, 10, 15.
  curves = np.array([[10.0, 5.0], [19.0, 6.0], [21.0, 7.0], [30.0, 8.0]])
  steps = [0, 5, 10, 15]
  out = testtime.steps_to_reach(curves, [20.0, 7.5], steps)
  np.testing.assert_array_equal(out, [10.0, 15.0])
  out = testtime.steps_to_reach(curves, [20.0, 9.0], steps)
  assert out[0] == 10.0 and np.isinf(out[1])
  assert testtime.format_match([10.0, 14.0], 15) == "12.00 ± 2.00"
  assert testtime.format_match([10.0, np.inf], 15) == ">15 (1/2 matched)"


def test_traced_steps_include_the_last():
  np.testing.assert_array_equal(testtime.traced_steps(10, 4), [0, 4, 8, 10])
  np.testing.assert_array_equal(testtime.traced_steps(3, 1), [0, 1, 2, 3])


def test_shuffled_is_a_per_tensor_permutation():
  params = [tf.random.normal((5, 7), seed=1), tf.range(7, dtype=tf.float32)]
  shuffled = inits.shuffled(params, seed=3)
  for p, s in zip(params, shuffled):
    assert p.shape == s.shape
    np.testing.assert_array_equal(np.sort(p.numpy().ravel()), np.sort(s.numpy().ravel()))
    assert not np.array_equal(p.numpy(), s.numpy())


def _tiny_task(num_test=3):
  field = lambda: siren.Siren(width=32, depth=3, w0=30.0)
  return image.ImageRegression(resolution=8, num_train=6, num_test=num_test, field=field)


def test_matched_outputs_match_meta_but_weights_do_not():
  task = _tiny_task()
  standard = task.field.params()
  meta = [p + 0.05 * tf.random.normal(p.shape, seed=i) for i, p in enumerate(standard)]
  matched, metrics = inits.matched(task, standard, meta, num_steps=300,
                                   optimizer=optimizers.Adam(1e-3))
  out_meta = task.render(meta, None).numpy()
  out_matched = task.render(matched, None).numpy()
  assert np.abs(out_meta - out_matched).mean() < 0.02
  assert metrics["psnr"] > 30
  # Compared as MSEs: on some CPUs the fit is exact to float32 round-off (MSE ~1e-14,
  # 140 dB), where two sums of the same residuals differ by about 1%.
  hand = np.mean(np.square(out_meta - out_matched))
  np.testing.assert_allclose(10 ** (-metrics["psnr"] / 10), hand, rtol=0.05)
  weight_gap = np.mean([np.abs(a - b).mean() for a, b in zip(matched, meta)])
  assert weight_gap > 0.01


def test_mean_init_outputs_the_dataset_mean():
  task = _tiny_task()
  mean_image = task.mean_signals()["image"]
  fitted, _ = inits.mean(task, task.field.params(), num_steps=300,
                         optimizer=optimizers.Adam(1e-3))
  out = task.render(fitted, None).numpy()[0]
  assert np.abs(out - mean_image).mean() < 0.02


@pytest.fixture()
def tiny_run(tmp_path):
  gin.clear_config()
  gin.parse_config("""
      Siren.width = 32
      Siren.depth = 3
      ImageRegression.resolution = 8
      ImageRegression.num_train = 6
      ImageRegression.num_test = 3
      meta_train.task = @ImageRegression()
      meta_train.num_iterations = 2
      meta_train.outer_optimizer = @outer/Adam()
      outer/Adam.learning_rate = 1e-4
  """)
  root = str(tmp_path / "run")
  train.meta_train(root)
  yield root
  gin.clear_config()


def test_end_to_end_results_files(tiny_run):
  task = gin.query_parameter("meta_train.task").scoped_configurable_fn()
  results = evaluate.evaluate(
      tiny_run, task=task, num_steps={"standard": 6, "mean": 6, "matched": 6,
                                      "shuffled": 6, "meta": 2},
      fit_steps=5, grid_signals=2)
  out = os.path.join(tiny_run, "eval")
  for name in ("results.json", "results.md", "grid_full.png", "curves_full.png"):
    assert os.path.exists(os.path.join(out, name)), name
  data = json.load(open(os.path.join(out, "results.json")))
  assert data == json.loads(json.dumps(results))
  assert set(data["inits"]) == {"standard", "mean", "matched", "shuffled", "meta"}
  entry = data["inits"]["standard"]["settings"]["full"]
  assert entry["steps"] == list(range(7))
  metric = np.asarray(entry["metric"])
  assert metric.shape == (3, 7)
  np.testing.assert_allclose(entry["psnr_at_report_mean"], metric[:, 2].mean(), rtol=1e-6)
  table = open(os.path.join(out, "results.md")).read().splitlines()
  assert table[0].startswith("| Init | Test-time optimizer | PSNR after 2 steps")
  assert len(table) == 2 + 5 + 4 and table[7] == "" and table[9] == ""
  # The fitted baselines report how well they match their target (the number itself
  # is checked by hand in test_matched_outputs_match_meta_but_weights_do_not).
  fits = data["fits"]
  assert set(fits) == {"mean", "matched"} and fits["matched"]["steps"] == 5
  assert table[10] == (f"Matched: Standard fitted to the Meta init's output with 5 Adam "
                       f"steps (lr 0.0001); then {fits['matched']['psnr']:.2f} dB PSNR "
                       "against it.")
  # Meta's table stops at its 2 steps; its curve goes on to the longest budget (6) and
  # starts as its own trace (the same fit, run longer).
  meta = data["inits"]["meta"]["settings"]["full"]
  assert meta["steps"] == [0, 1, 2] and meta["continued"]["steps"] == list(range(7))
  np.testing.assert_allclose(np.asarray(meta["continued"]["metric"])[:, :3],
                             meta["metric"], rtol=1e-5)
  assert "continued" not in entry
  meta_row = [r for r in table if r.startswith("| Meta ")][0]
  assert meta_row.rstrip().endswith("| - |")


@pytest.mark.parametrize("report_step", [2, None])
def test_chunks_smaller_than_the_grid_give_the_same_results(tiny_run, tmp_path,
                                                            report_step):
  task = gin.query_parameter("meta_train.task").scoped_configurable_fn()
  runs = {chunk: evaluate.evaluate(
      tiny_run, task=task, inits=("standard", "meta"), num_steps=3, chunk=chunk,
      grid_signals=3, report_step=report_step,
      output_dir=str(tmp_path / f"chunk{chunk}")) for chunk in (1, 3)}
  for name in ("standard", "meta"):
    np.testing.assert_allclose(
        runs[1]["inits"][name]["settings"]["full"]["metric"],
        runs[3]["inits"][name]["settings"]["full"]["metric"], rtol=1e-5)
  grids = [np.asarray(Image.open(tmp_path / f"chunk{c}" / "grid_full.png"))
           for c in (1, 3)]
  np.testing.assert_array_equal(grids[0].shape, grids[1].shape)


def test_an_exported_init_is_an_extra_run(tiny_run, tmp_path):
  # The run's own init, exported, scores exactly as the run's Meta row; a field of
  # other shapes is refused by name.
  task = gin.query_parameter("meta_train.task").scoped_configurable_fn()
  exported = str(tmp_path / "exported")
  export.export(tiny_run, exported, task=task)
  results = evaluate.evaluate(tiny_run, task=task, inits=("meta",),
                              extra_runs={"Exported": exported}, num_steps=2,
                              grid_signals=1)
  runs_ = results["inits"]
  np.testing.assert_allclose(runs_["meta:Exported"]["settings"]["full"]["metric"],
                             runs_["meta"]["settings"]["full"]["metric"], rtol=1e-5)
  wide = image.ImageRegression(resolution=8, num_train=6, num_test=3,
                               field=lambda: siren.Siren(width=16, depth=3))
  with pytest.raises(ValueError, match="this task's field has"):
    baselines._extra_init(wide, exported, "best")  # pylint: disable=protected-access
