"""The tf-metainit-evaluate job: test-time optimisation from several inits on
held-out signals, the paper's comparison.

For every observation setting of the task (images: all pixels; CT: 1/2/4/8 views; ...)
and every init, the held-out signals are optimised with that init's own optimizer,
learning rate and step budget, all signals of a chunk at once (testtime.py). With
evaluate.choose_rate_factors bound, every init's learning rate and step count (and
each classical method's settings) are first chosen per setting on the task's
validation split (tuning.py), and the test signals are scored with those choices.
Writes under <root_dir>/eval/:
  results.json   per init, setting and test signal: the metric after every traced step
  results.md     the table (PSNR after `report_step` steps and steps to match the
                 reference init, or PSNR after each init's budget when report_step=None)
                 and, when chosen, the choices
  chosen.gin, chosen.json  the choices as evaluate bindings, and every candidate's
                 validation curve (when chosen)
  curves_<setting>.png, grid_<setting>.png, and TensorBoard scalars under eval/.
The folder must be new, empty or hold this package's evaluation outputs
(layout.EVAL_RECORDS);
these files are written into a new folder that replaces it whole, carrying over what
appearance and interpolate wrote there (files.atomic_directory).
"""

import itertools
import os
import time

from absl import logging
import gin
import numpy as np
import tensorflow as tf

from tf_metainit import baselines
from tf_metainit import checks
from tf_metainit import exports
from tf_metainit import files
from tf_metainit import figures
from tf_metainit import layout
from tf_metainit import progress
from tf_metainit import testtime
from tf_metainit import tuning
from tf_metainit.meta import learned_lr
from tf_metainit.meta import optimizers
from tf_metainit.tasks import contract

LABELS = {"standard": "Standard", "mean": "Mean", "matched": "Matched",
          "shuffled": "Shuffled", "meta": "Meta"}


def _check_arguments(task, optimizer_settings, num_steps, report_step, num_test, chunk,
                     trace_every, fit_steps, fit_optimizer, grid_signals, classical):
  """Errors that name the binding, before anything is written; returns the user's
  optimizer settings, checked."""
  if task is gin.REQUIRED or task is None:
    raise ValueError("evaluate.task is not set: bind it in gin (e.g. evaluate.task = "
                     "%TASK), or run on a root_dir written by meta_train.")
  steps = num_steps.values() if isinstance(num_steps, dict) else [num_steps]
  for value in steps:
    for v in (value.values() if isinstance(value, dict) else [value]):
      checks.non_negative_int("evaluate.num_steps", v)
  checks.optional(checks.non_negative_int, "evaluate.report_step", report_step)
  checks.optional(checks.positive_int, "evaluate.num_test", num_test)
  for name, value in (("chunk", chunk), ("trace_every", trace_every),
                      ("fit_steps", fit_steps), ("grid_signals", grid_signals)):
    checks.positive_int(f"evaluate.{name}", value)
  optimizers.check(fit_optimizer, "evaluate.fit_optimizer")
  unknown = sorted(set(classical or {}) - set(task.classical_methods))
  if unknown:
    raise ValueError(f"evaluate.classical names {unknown}, but {type(task).__name__} "
                     f"has {list(task.classical_methods) or 'no classical methods'} "
                     "(CT has fbp and sart, physics/classical_ct.py). Fix or remove the "
                     "binding.")
  return optimizers.check(dict(optimizer_settings or {}), "evaluate.optimizer_settings")


@gin.configurable(denylist=["root_dir", "checkpoint", "strategy"])
def evaluate(root_dir, task=gin.REQUIRED, inits=("standard", "mean", "matched",
                                                  "shuffled", "meta"),
             extra_runs=None, optimizer_settings=None, num_steps=100, report_step=2,
             reference="meta", settings=None, num_test=None, chunk=16, trace_every=1,
             fit_steps=1000, fit_optimizer=testtime.STANDARD_OPTIMIZER,
             grid_signals=8, labels=None, seed=0, output_dir=None, export_fitted=(),
             checkpoint="best", strategy=None, classical=None, choose_rate_factors=None,
             choose_steps=True, choose_classical=None):
  """Runs the comparison and writes the results; returns the results dict.

  Args:
    root_dir: a finished meta-training run (its checkpoint is the Meta init).
    task: the task (gin: the same binding as meta_train's).
    inits: which inits to compare, in table order.
    extra_runs: {label: root_dir or export} of more meta-trained inits (e.g.
      {'Reptile': dir}, or a shipped init's folder, pretrained.path(name));
      they appear as 'meta:<label>' and use the 'meta' optimizer settings unless
      optimizer_settings has their own key.
    optimizer_settings: {init: optimizer or {setting: optimizer}}, optimizers as
      objects (gin: {'meta': @meta/SGD()} with meta/SGD.learning_rate = 1e-2);
      defaults: a Meta init's own test-time optimizer from its run record (its
      learned rates, row label 'Meta-SGD' or 'Meta (LSLR)', unless this names it),
      seed Table 1's Adam 1e-4 for the baselines.
    num_steps: test-time steps; an int, or {init: int or {setting: int}}.
    report_step: the table's step (2 in Table 1); None reports each init's final PSNR.
    reference: the init whose report_step metric the others must match.
    settings: observation settings to evaluate (default: all of the task's).
    num_test: number of held-out signals (default: all the task provides).
    chunk: signals optimised at once.
    trace_every: record the metric every this many steps.
    fit_steps, fit_optimizer: the fit of the Mean and Matched baselines (gin:
      @fit/Adam() with fit/Adam.learning_rate; default Adam 1e-4).
    grid_signals: signals shown in the reconstruction grid.
    labels: {init: display name}.
    seed: shuffling seed and test-time randomness.
    output_dir: default <root_dir>/eval; new, empty, or holding this package's
      evaluation outputs (anything else is refused).
    export_fitted: inits (e.g. ('meta',)) whose fitted fields are exported, one per
      test signal and setting, to <output_dir>/fitted/<init>/<setting>/signal_<k>/ as
      a SavedModel + weights.npz + manifest.json (see exports.py).
    checkpoint: each run's Meta init: 'best' (held-out validation) or 'latest'.
    strategy: a tf.distribute strategy (the binary's evaluate/distribute.strategy):
      'mirrored' spreads each chunk's signals over every local GPU (or logical CPU);
      each signal's result is the one-device one.
    classical: {method: keyword settings, or {setting: keyword settings}} of classical
      reconstructions scored on the same signals and observations as table rows after
      the inits, for tasks that have them (task.classical_methods; CT: {'fbp': {},
      'sart': {'iterations': 100}}, physics/classical_ct.py; needs scikit-image).
    choose_rate_factors: if given (e.g. (0.3, 1, 3)), each init's learning rate is
      chosen per setting on the validation split among its configured rate times
      these factors (learned rates are kept), before the test signals are scored.
    choose_steps: with choose_rate_factors, also choose the step count, up to the
      configured budget (num_steps); False keeps the budgets.
    choose_classical: {method: {keyword: candidate values}} chosen the same way,
      e.g. {'sart': {'iterations': (1, 10, 50, 200)}}.
  """
  user = _check_arguments(task, optimizer_settings, num_steps, report_step, num_test,
                          chunk, trace_every, fit_steps, fit_optimizer,
                          grid_signals, classical)
  if choose_rate_factors is not None:
    choose_rate_factors = tuning.check_rate_factors(choose_rate_factors)
  output_dir = layout.eval_dir(root_dir, output_dir)
  layout.check_eval_dir(output_dir, "a tf-metainit-evaluate output")
  fits = {}
  params, metas = baselines.build(task, root_dir, inits, extra_runs, fit_steps,
                                  fit_optimizer, seed, checkpoint, fits)
  choices = testtime.Choices(user, metas, num_steps)
  settings = list(settings or task.settings)
  chosen = None
  # One optimizer for the choice and the table: its compiled fits are reused.
  tto = testtime.TestTimeOptimizer(task, seed=seed, strategy=strategy)
  if choose_rate_factors is not None or choose_classical:
    chosen, choices, classical = _choose_on_validation(
        task, tto, params, choices, settings, choose_rate_factors, choose_steps,
        choose_classical, classical, trace_every, chunk)
  # The test split is read only now: nothing above may depend on it.
  signals = task.test_signals()
  if num_test:
    signals = contract.take(signals, slice(0, num_test))
  labels_given = dict(labels or {})
  labels = dict(LABELS, **labels_given)
  if "meta" in metas and "meta" not in labels_given:
    labels["meta"] = testtime.label(choices.optimizer("meta", task.default_setting))
  results = {"settings": [str(s) for s in settings], "report_step": report_step,
             "reference": reference, "inits": {}, "fits": fits}
  if chosen is not None:
    results["chosen_on_validation"] = _chosen_record(chosen, task, params, choices,
                                                      settings)
  run = _Run(task, tto, signals, choices, results, labels, trace_every, chunk,
             report_step, grid_signals)
  # Everything goes into a new folder swapped in whole: a kill or a full disk leaves
  # the earlier evaluation or this one, never a mix.
  with files.atomic_directory(output_dir, replaces=_replaced) as out:
    writer = tf.summary.create_file_writer(os.path.join(out, "tensorboard"))
    try:
      with writer.as_default():
        grid_rows = {setting: run.setting(setting, params, dict(classical or {}),
                                          export_fitted, root_dir, out)
                     for setting in settings}
    finally:
      writer.close()  # its events are complete before the folder moves
    _summarise(results, params)
    files.write_json(os.path.join(out, "results.json"), results)
    files.write_text(os.path.join(out, "results.md"), results_table(results))
    if chosen is not None:
      files.write_text(os.path.join(out, "chosen.gin"), tuning.gin_bindings(
          chosen, settings, _CHOSEN_HEADER.format(root_dir=os.path.abspath(root_dir))))
      files.write_json(os.path.join(out, "chosen.json"), chosen.candidates)
    _figures(results, grid_rows, params, out)
  print(results_table(results))
  return results


def _replaced(name):
  """Whether `name` in the output folder is evaluate's own: the rest (appearance and
  interpolation share <root_dir>/eval) is carried into the new folder."""
  return name in ("results.json", "results.md", "tensorboard", "fitted", "chosen.gin",
                  "chosen.json") or (
      name.endswith(".png") and name.startswith(("curves_", "grid_")))


_CHOSEN_HEADER = """Test-time settings chosen on the validation split by tf-metainit-evaluate
(evaluate.choose_rate_factors) for the run {root_dir}. Rebuild its table without the
sweep: tf-metainit-evaluate ... --gin_file=<this file>"""


def _choose_on_validation(task, tto, params, choices, settings, rate_factors,
                          choose_steps, choose_classical, classical, trace_every,
                          chunk):
  """(tuning.Chosen, the Choices and classical settings it gives) from the
  validation split: the test signals are not read until the choices are made."""
  factors = rate_factors or (1.0,)  # classical choices alone: the rates as given
  signals = task.validation_signals()
  count = len(next(iter(signals.values())))
  logging.info("Choosing test-time settings on %d validation signals.", count)
  with progress.Bar(len(settings) * (len(params) + len(choose_classical or {})),
                    "row", "choosing on validation") as bar:
    rows_done = itertools.count(1)
    chosen = tuning.choose(
        tto, params, choices, signals, settings, factors, choose_steps, trace_every,
        chunk, choose_classical, task,
        on_row=lambda s, name, text: (logging.info("chosen on validation: %s / %s: %s",
                                                   s, name, text),
                                      bar.update(next(rows_done))))
  user = dict(choices.user)
  for name, per_setting in chosen.optimizers.items():
    fixed = {s: o for s, o in per_setting.items() if o is not None}
    if fixed:
      user[name] = fixed
  classical = dict(classical or {})
  classical.update(chosen.classical)
  return chosen, testtime.Choices(user, choices.metas, chosen.steps), classical


def _chosen_record(chosen, task, params, choices, settings):
  """What results.json says of the choices: the split and each row's choice."""
  rows = {name: {str(s): tuning.choice_text(chosen, name, s, choices.optimizer(name, s))
                 for s in settings} for name in params}
  rows.update({f"classical:{m}": {str(s): v[str(s)] for s in settings}
               for m, v in chosen.classical.items()})
  return {"split": task.splits().get("validation", "the task's validation signals"),
          "rows": rows}


class _Run:
  """One evaluation's fits, rows and grid columns."""

  def __init__(self, task, tto, signals, choices, results, labels, trace_every, chunk,
               report_step, grid_signals):
    self.task, self.tto, self.signals, self.choices = task, tto, signals, choices
    self.results, self.labels = results, labels
    self.trace_every, self.chunk, self.report_step = trace_every, chunk, report_step
    self.shown = contract.take(signals, slice(0, grid_signals))
    self.num_shown = len(next(iter(self.shown.values())))

  def setting(self, setting, params, classical, export_fitted, root_dir, output_dir):
    """Every init's and classical method's row in one setting; returns the grid's
    columns (input and target where the task has them, then one per row)."""
    columns = [(label, images) for label, images in (
        ("input", self.task.inputs_for_display(self.shown, setting)),
        ("target", self.task.targets_for_display(self.shown))) if images is not None]
    for name, init in params.items():
      finals, trace, column = self.init(name, init, setting, params)
      columns.append(column)
      if name in export_fitted:
        _export_fitted(self.task, root_dir, output_dir, name, setting, self.results,
                       trace, finals)
    for method, method_settings in classical.items():
      columns.append(self.classical(method, method_settings, setting))
    return columns

  def init(self, name, init, setting, params):
    """Fits the test signals from one init; records its row; returns (final params
    per chunk, trace, its grid column)."""
    steps = self.choices.steps(name, setting)
    optimizer = self.choices.optimizer(name, setting)
    opt_name, lr = _optimizer_text(optimizer)
    num_signals = len(next(iter(self.signals.values())))
    t0 = time.time()
    with progress.Bar(num_signals, "signal", f"{setting} / {name}: {steps} steps") as bar:
      bar.update(0)
      trace, finals = self.tto.run(init, self.signals, optimizer, steps, setting,
                                   self.trace_every, self.chunk, on_chunk=bar.update)
    elapsed = time.time() - t0
    at = testtime.traced_steps(steps, self.trace_every)
    entry = self.results["inits"].setdefault(name, {"label": self.labels.get(
        name, name.split(":")[-1]), "settings": {}})
    row = entry["settings"][str(setting)] = {
        "optimizer": opt_name, "learning_rate": lr, "num_steps": steps,
        "steps": at.tolist(), "metric": trace.T.tolist(), "seconds": elapsed}
    longest = max(self.choices.steps(other, setting) for other in params)
    if steps < longest:  # its own curve on to the longest budget, for the figure
      more, _ = self.tto.run(init, self.signals, optimizer, longest, setting,
                             self.trace_every, self.chunk)
      row["continued"] = {"steps": testtime.traced_steps(longest,
                                                         self.trace_every).tolist(),
                          "metric": more.T.tolist()}
    logging.info("%s / %s: %s lr %g, %d steps in %.1fs: PSNR %.2f -> %.2f dB",
                 setting, name, opt_name, lr, steps, elapsed, trace[0].mean(),
                 trace[-1].mean())
    for j, s in enumerate(at):
      tf.summary.scalar(f"eval/{setting}/{name}/psnr", float(trace[j].mean()), step=s)
    if self.report_step is None:  # the grid shows the final fit: reuse it
      shown = [p[:self.num_shown] for p in testtime.joined(finals)]
    else:
      k = min(self.report_step, steps)
      shown = testtime.joined(self.tto.run(init, self.shown, optimizer, k, setting,
                                           max(k, 1), self.chunk)[1])
    images = np.clip(self.task.render(shown, self.shown).numpy(), 0, 1)
    return finals, trace, (entry["label"], images)

  def classical(self, method, method_settings, setting):
    """A classical reconstruction's row; returns its grid column."""
    kwargs = _classical_settings(method_settings, setting)
    t0 = time.time()
    images, psnr, description = self.task.classical(method, self.signals, setting,
                                                    kwargs)
    entry = self.results["inits"].setdefault(f"classical:{method}", {
        "label": self.labels.get(method, method.upper()), "settings": {}})
    entry["settings"][str(setting)] = {
        "method": description, "psnr": psnr.tolist(),
        "psnr_at_report_mean": float(psnr.mean()),
        "psnr_at_report_std": float(psnr.std()), "seconds": time.time() - t0}
    logging.info("%s / %s: PSNR %.2f dB", setting, method, psnr.mean())
    return entry["label"], np.clip(images[:self.num_shown], 0, 1)


def _optimizer_text(optimizer):
  """(the table's optimizer name, its learning rate) of a test-time optimizer."""
  if isinstance(optimizer, learned_lr.LearnedRates):
    return f"learned SGD ({optimizer.mode}), mean", optimizer.mean_rate()
  return optimizer.name, optimizer.learning_rate


def _classical_settings(value, setting):
  """Keyword settings of a classical method, given once or per setting."""
  value = dict(value or {})
  if setting in value or str(setting) in value:
    return dict(testtime.per_setting(value, setting) or {})
  return value


def _export_fitted(task, root_dir, output_dir, name, setting, results, trace, finals):
  row = results["inits"][name]["settings"][str(setting)]
  exports.export_fitted(
      task, testtime.unbatch(finals),
      layout.fitted_dir(output_dir, name, setting),
      manifest_extra={"init": name, "setting": str(setting),
                      "num_steps": row["num_steps"],
                      "fitted_with": {"optimizer": row["optimizer"],
                                      "learning_rate": row["learning_rate"]},
                      "source": {"root_dir": os.path.abspath(root_dir)}},
      per_signal_extra=[{"signal_index": k, "psnr": float(p)}
                        for k, p in enumerate(trace[-1])])


def _summarise(results, params):
  """Adds per-init summary numbers: PSNR at report_step and steps to match reference."""
  k, ref = results["report_step"], results["reference"]
  for setting in results["settings"]:
    ref_entry = results["inits"].get(ref, {}).get("settings", {}).get(setting)
    for name in params:
      e = results["inits"][name]["settings"][setting]
      curves = np.asarray(e["metric"]).T
      steps = np.asarray(e["steps"])
      j = len(steps) - 1 if k is None else int(np.searchsorted(steps, k))
      if j >= len(steps) or (k is not None and steps[j] != k):
        raise ValueError(f"report_step {k} was not traced for {name}; make it a "
                         "multiple of evaluate.trace_every and within the step budget.")
      e["psnr_at_report"] = curves[j].tolist()
      e["psnr_at_report_mean"] = float(curves[j].mean())
      e["psnr_at_report_std"] = float(curves[j].std())
      if ref_entry is not None and name != ref and k is not None:
        ref_curves = np.asarray(ref_entry["metric"]).T
        rj = int(np.searchsorted(np.asarray(ref_entry["steps"]), k))
        match = testtime.steps_to_reach(curves, ref_curves[rj], steps)
        e["steps_to_match"] = [None if not np.isfinite(m) else float(m) for m in match]
        e["steps_to_match_text"] = testtime.format_match(match, e["num_steps"])


def results_table(results):
  """Markdown table in the seed's layout."""
  k, ref = results["report_step"], results["reference"]
  settings = results["settings"]
  lines = []
  if k is not None:
    ref_label = results["inits"].get(ref, {}).get("label", ref)
    for setting in settings:
      if len(settings) > 1:
        lines.append(f"\n**{setting}**\n")
      lines.append(f"| Init | Test-time optimizer | PSNR after {k} steps (dB) | "
                   f"# of iters to match {ref_label} |")
      lines.append("|---|---|---|---|")
      for name, entry in results["inits"].items():
        e = entry["settings"][setting]
        match = "-" if name == ref else e.get("steps_to_match_text", "-")
        how = e.get("method") or f"{e['optimizer']} lr {e['learning_rate']:g}"
        lines.append(f"| {entry['label']} | {how} | "
                     f"{e['psnr_at_report_mean']:.2f} ± {e['psnr_at_report_std']:.2f} | "
                     f"{match} |")
  else:
    lines.append("| Init | " + " | ".join(f"{s}" for s in settings) + " |")
    lines.append("|---|" + "---|" * len(settings))
    for name, entry in results["inits"].items():
      cells = []
      for setting in settings:
        e = entry["settings"][setting]
        how = e.get("method") or (f"{e['optimizer']} {e['learning_rate']:g}, "
                                  f"{e['num_steps']} steps")
        cells.append(f"{e['psnr_at_report_mean']:.2f} ({how})")
      lines.append(f"| {entry['label']} | " + " | ".join(cells) + " |")
  lines += _chosen_table(results)
  targets = {"mean": "the training set's mean signal", "matched": "the Meta init's output"}
  for name, fit in results.get("fits", {}).items():
    label = results["inits"].get(name, {}).get("label", name)
    how = fit["optimizer"]
    lines.append(f"\n{label}: Standard fitted to {targets[name]} with {fit['steps']} "
                 f"{how['name'].capitalize()} steps (lr {how['learning_rate']:g}); then "
                 f"{fit.get('psnr', float('nan')):.2f} dB PSNR against it.")
  return "\n".join(lines) + "\n"


def _chosen_table(results):
  """The rows' settings chosen on the validation split, as table lines (none when
  the bindings were used as given)."""
  chosen = results.get("chosen_on_validation")
  if not chosen:
    return []
  settings = results["settings"]
  lines = [f"\nTest-time settings chosen on the validation split ({chosen['split']}), "
           "never on these test signals:\n",
           "| Row | " + " | ".join(settings) + " |", "|---|" + "---|" * len(settings)]
  for name, per_setting in chosen["rows"].items():
    label = results["inits"].get(name, {}).get("label", name)
    lines.append(f"| {label} | " + " | ".join(str(per_setting[s]) for s in settings)
                 + " |")
  return lines


def _figures(results, grid_rows, params, output_dir):
  for setting, cols in grid_rows.items():
    labels = [label for label, _ in cols]
    rows = [[images[i] for _, images in cols] for i in range(len(cols[0][1]))]
    # Tiles of about 128 px: 64-px images at 2x, 32-px views at 4x.
    scale = max(1, round(128 / max(rows[0][0].shape[0], 1)))
    files.save_image(figures.image_grid(rows, labels, scale=scale),
                     os.path.join(output_dir, f"grid_{setting}.png"))
    curves = {}
    for name in params:
      e = results["inits"][name]["settings"][str(setting)]
      label = results["inits"][name]["label"]
      if "continued" in e:  # the table stops at its budget, the curve goes on
        label = f"{label} (table: {e['num_steps']} steps)"
        e = e["continued"]
      m = np.asarray(e["metric"])
      curves[label] = (np.asarray(e["steps"]), m.mean(0), m.std(0))
    longest = max((max(c[0]) for c in curves.values()), default=1)
    for name, entry in results["inits"].items():
      if name.startswith("classical:"):  # one reconstruction: a level line
        e = entry["settings"][str(setting)]
        curves[f"{entry['label']} ({e['method']})"] = (
            np.array([0, longest]), np.full(2, e["psnr_at_report_mean"]),
            np.full(2, e["psnr_at_report_std"]))
    figures.plot_curves(curves, os.path.join(output_dir, f"curves_{setting}.png"),
                        f"Test-time optimisation ({setting})")
