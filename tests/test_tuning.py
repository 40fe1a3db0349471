"""Test-time settings chosen on the validation split: the choice against a closed-form
SGD trajectory, the gin file it writes read back by gin, and evaluate's choose mode
scoring the test signals with exactly what was chosen."""

import os

import gin
import numpy as np
import pytest

from test_evaluate import tiny_run  # pylint: disable=unused-import
from test_task_contract import Lines
from tf_metainit import evaluate
from tf_metainit import testtime
from tf_metainit import tuning
from tf_metainit.meta import optimizers


def test_best_candidate_prefers_metric_then_fewer_steps_then_the_earlier():
  curves = [(np.array([0, 5, 10]), np.array([10.0, 20.0, 20.0])),
            (np.array([0, 5, 10]), np.array([10.0, 19.0, 20.0])),
            (np.array([0, 5]), np.array([np.nan, 20.0]))]
  assert tuning.best_candidate(curves) == (0, 1)  # 20 dB at step 5, first listed
  curves.append((np.array([0, 5]), np.array([1.0, 20.5])))
  assert tuning.best_candidate(curves) == (3, 1)
  with pytest.raises(ValueError, match="diverge"):
    tuning.best_candidate([(np.array([0]), np.array([np.nan]))])


def _closed_form_psnr(y, rate, num_steps):
  """Mean PSNR over signals after 0..num_steps SGD steps on mean((x w + b - y)^2)
  from w = 0.3, b = 0 (Lines' affine field), written out in numpy."""
  x = np.linspace(0, 1, y.shape[1], endpoint=False)
  w, b = np.full(len(y), 0.3), np.zeros(len(y))
  out = []
  for _ in range(num_steps + 1):
    r = x[None] * w[:, None] + b[:, None] - y
    out.append(np.mean(-10 * np.log10(np.mean(r ** 2, axis=1))))
    w, b = w - rate * 2 * np.mean(r * x, axis=1), b - rate * 2 * np.mean(r, axis=1)
  return np.array(out)


def test_choose_picks_the_closed_form_best_rate_and_step():
  task = Lines()
  signals = task.test_signals()  # Lines has one set: here it plays validation
  choices = testtime.Choices({"standard": optimizers.SGD(0.5)}, {}, 6)
  chosen = tuning.choose(testtime.TestTimeOptimizer(task), {"standard":
                                                            task.field.params()},
                         choices, signals, ["full"], (0.1, 1.0, 1.9), True, 1, 8)
  rates = [0.05, 0.5, 0.95]
  curves = [_closed_form_psnr(signals["y"][..., 0], r, 6) for r in rates]
  best = max((c[k], -k, -i) for i, c in enumerate(curves) for k in range(7))
  i, k = -best[2], -best[1]
  opt = chosen.optimizers["standard"]["full"]
  assert isinstance(opt, optimizers.SGD) and opt.learning_rate == pytest.approx(rates[i])
  assert chosen.steps["standard"]["full"] == k
  for candidate, curve in zip(chosen.candidates["full"]["standard"], curves):
    np.testing.assert_allclose(candidate["metric"], curve, rtol=1e-4)
  # With the budget kept, only the rate is chosen, on the metric after all 6 steps.
  kept = tuning.choose(testtime.TestTimeOptimizer(task), {"standard":
                                                          task.field.params()},
                       choices, signals, ["full"], (0.1, 1.0, 1.9), False, 1, 8)
  assert kept.steps["standard"]["full"] == 6
  assert kept.optimizers["standard"]["full"].learning_rate == pytest.approx(
      rates[int(np.argmax([c[-1] for c in curves]))])


def test_the_gin_file_gives_evaluate_the_choices(clean_gin):
  chosen = tuning.Chosen(
      optimizers={"standard": {"1": optimizers.Adam(5e-4), "2": optimizers.Adam(1e-3)},
                  "meta:SV": {"1": optimizers.SGD(10.0), "2": optimizers.SGD(3.0)},
                  "meta": {"1": None, "2": None}},
      steps={"standard": {"1": 50, "2": 75}, "meta:SV": {"1": 5, "2": 9},
             "meta": {"1": 12, "2": 3}},
      classical={"sart": {"1": {"iterations": 1}, "2": {"iterations": 50}}})
  text = tuning.gin_bindings(chosen, [1, 2], "chosen\non validation")
  assert text.startswith("# chosen\n# on validation\n")
  gin.parse_config(text)
  settings = gin.query_parameter("evaluate.optimizer_settings")
  assert set(settings) == {"standard", "meta:SV"}  # learned rates stay the init's own
  built = {name: {s: ref.scoped_configurable_fn() for s, ref in per.items()}
           for name, per in settings.items()}
  assert built["standard"] == {1: optimizers.Adam(5e-4), 2: optimizers.Adam(1e-3)}
  assert built["meta:SV"] == {1: optimizers.SGD(10.0), 2: optimizers.SGD(3.0)}
  assert gin.query_parameter("evaluate.num_steps") == {
      "standard": {1: 50, 2: 75}, "meta:SV": {1: 5, 2: 9}, "meta": {1: 12, 2: 3}}
  assert gin.query_parameter("evaluate.classical") == {
      "sart": {1: {"iterations": 1}, 2: {"iterations": 50}}}


def test_evaluate_chooses_on_validation_before_reading_the_test_split(tiny_run,
                                                                      tmp_path):
  task = gin.query_parameter("meta_train.task").scoped_configurable_fn()
  reads = []
  for split in ("validation_signals", "test_signals"):
    original = getattr(task, split)
    setattr(task, split, lambda original=original, split=split: (
        reads.append(split), original())[1])
  common = dict(task=task, inits=("standard", "meta"), num_steps=4, fit_steps=2,
                grid_signals=1, report_step=None)
  chosen_dir = str(tmp_path / "chosen")
  results = evaluate.evaluate(tiny_run, output_dir=chosen_dir,
                              choose_rate_factors=(0.5, 2.0), **common)
  assert reads[0] == "validation_signals" and "test_signals" in reads
  record = results["chosen_on_validation"]
  assert record["split"] == "text 'validation' images 0-3 at 8 px"
  table = open(os.path.join(chosen_dir, "results.md")).read()
  assert "chosen on the validation split (text 'validation' images 0-3" in table
  # The same table again from the written bindings alone, no sweep: same numbers.
  gin.parse_config(open(os.path.join(chosen_dir, "chosen.gin")).read())
  num_steps = gin.query_parameter("evaluate.num_steps")
  optimizer_settings = {  # built while their scoped rates are bound
      name: {s: ref.scoped_configurable_fn() for s, ref in per.items()}
      for name, per in gin.query_parameter("evaluate.optimizer_settings").items()}
  gin.clear_config()
  again = evaluate.evaluate(tiny_run, output_dir=str(tmp_path / "again"), **dict(
      common, num_steps=num_steps, optimizer_settings=optimizer_settings))
  for name in ("standard", "meta"):
    a = results["inits"][name]["settings"]["full"]
    b = again["inits"][name]["settings"]["full"]
    assert a["num_steps"] == b["num_steps"] and a["learning_rate"] == b["learning_rate"]
    np.testing.assert_allclose(a["psnr_at_report"], b["psnr_at_report"], rtol=1e-5)
