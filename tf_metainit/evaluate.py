"""Test-time optimisation from several initializations: the paper's comparison.

For every observation setting of the task (images: all pixels; CT: 1/2/4/8 views; ...)
and every init, the held-out signals are optimised with that init's own optimizer,
learning rate and step budget, all signals of a chunk at once (per-signal batched
weights, one compiled while_loop). Writes under <root_dir>/eval/:
  results.json   per init, setting and test signal: the metric after every traced step
  results.md     the table (PSNR after `report_step` steps and steps to match the
                 reference init, or PSNR after each init's budget when report_step=None)
  curves_<setting>.png, grid_<setting>.png, and TensorBoard scalars under eval/.
"""

import os
import time

from absl import logging
import gin
import numpy as np
import tensorflow as tf

from tf_metainit import checks
from tf_metainit import distribute
from tf_metainit import export
from tf_metainit import files
from tf_metainit import figures
from tf_metainit import layout
from tf_metainit import progress
from tf_metainit import runs
from tf_metainit.fields import functional
from tf_metainit.meta import inits as inits_lib
from tf_metainit.meta import inner
from tf_metainit.meta import learned_lr
from tf_metainit.meta import optimizers
from tf_metainit.tasks import contract

BASELINES = ("standard", "mean", "matched", "shuffled")

# Seed Table 1 (images): Meta with SGD 1e-2, every baseline with Adam 1e-4.
DEFAULT_OPTIMIZERS = {
    "standard": optimizers.Adam(1e-4), "mean": optimizers.Adam(1e-4),
    "matched": optimizers.Adam(1e-4), "shuffled": optimizers.Adam(1e-4),
    "meta": optimizers.SGD(1e-2),
}


def steps_to_reach(curves, targets, steps):
  """First traced step at which each curve reaches its target; inf where it never does.

  curves: (num_traced, N) metric after steps[j]; targets: (N,).
  """
  reached = np.asarray(curves) >= np.asarray(targets)[None]
  first = np.argmax(reached, axis=0)
  out = np.asarray(steps, np.float64)[first]
  out[~reached.any(axis=0)] = np.inf
  return out


def format_match(values, budget):
  """'mean ± std' of steps-to-match, or '>budget (k/N)' when some never match."""
  values = np.asarray(values, np.float64)
  finite = np.isfinite(values)
  if finite.all():
    return f"{values.mean():.2f} ± {values.std():.2f}"
  return f">{budget} ({int(finite.sum())}/{len(values)} matched)"


def traced_steps(num_steps, trace_every):
  steps = list(range(0, num_steps, trace_every)) + [num_steps]
  return np.asarray(steps)


def _lookup(table, name, setting):
  """A per-init value ('meta:SV' falls back to 'meta') that may be per-setting."""
  return runs.per_setting(table[name] if name in table else table[name.split(":")[0]],
                          setting)


class TestTimeOptimizer:
  """Batched test-time optimisation with compiled functions reused across chunks."""

  def __init__(self, task, metric="psnr", seed=0, strategy=None):
    """`strategy`: a tf.distribute strategy whose replicas share each chunk's signals
    (each signal is fitted alone, so its result is the one-device one)."""
    self.task, self.metric, self.seed = task, metric, seed
    self.strategy = strategy or tf.distribute.get_strategy()
    self._fns = {}

  def _fn(self, optimizer, num_steps, setting, trace_every):
    key = (optimizer, num_steps, setting, trace_every)
    if key not in self._fns:
      task, metric = self.task, self.metric

      def run(params, signals):
        fitted = inner.fit(task, params, signals, num_steps, optimizer, self.seed,
                           setting, trace_fn=lambda p: task.metrics(p, signals)[metric],
                           trace_every=trace_every)
        return fitted.params, fitted.trace

      if self.strategy.num_replicas_in_sync > 1:
        self._fns[key] = tf.function(lambda p, s: self.strategy.run(run, args=(p, s)),
                                     reduce_retracing=True)
      else:
        self._fns[key] = tf.function(run, reduce_retracing=True)
    return self._fns[key]

  def _fit_chunk(self, fn, params, part):
    """(final batched params, trace) of one chunk, split evenly over the replicas (the
    chunk padded with copies of its last signal, which are dropped again)."""
    size = len(next(iter(part.values())))
    replicas = self.strategy.num_replicas_in_sync
    if replicas == 1:
      return fn(functional.batch_params(params, size),
                {k: tf.constant(v) for k, v in part.items()})
    share = -(-size // replicas)
    padded = {k: np.concatenate([v, np.repeat(v[-1:], share * replicas - size, 0)])
              for k, v in part.items()}

    def replica_inputs(context):
      rows = slice(context.replica_id_in_sync_group * share,
                   (context.replica_id_in_sync_group + 1) * share)
      return (functional.batch_params(params, share),
              {k: tf.constant(v[rows]) for k, v in padded.items()})

    final, trace = fn(*self.strategy.experimental_distribute_values_from_function(
        replica_inputs))
    final = [tf.concat(self.strategy.experimental_local_results(p), 0)[:size]
             for p in final]
    trace = tf.concat(self.strategy.experimental_local_results(trace), 1)[:, :size]
    return final, trace

  def run(self, params, signals, optimizer, num_steps, setting, trace_every=1,
          chunk=16, on_chunk=None):
    """Returns (trace (num_traced, N), list of final params per chunk); calls
    on_chunk(signals fitted so far) after each chunk."""
    n = len(next(iter(signals.values())))
    fn = self._fn(optimizer, num_steps, setting, trace_every)
    traces, finals = [], []
    for start in range(0, n, chunk):
      final, trace = self._fit_chunk(fn, params,
                                     contract.take(signals, slice(start, start + chunk)))
      traces.append(trace.numpy())
      finals.append(final)
      if on_chunk is not None:
        on_chunk(min(start + chunk, n))
    return np.concatenate(traces, axis=1), finals


def joined(finals):
  """TestTimeOptimizer.run's final params per chunk as one batch over all signals."""
  return [tf.concat([chunk[i] for chunk in finals], 0) for i in range(len(finals[0]))]


def _optimizer_of(name, setting, learned, optimizer_settings):
  """(optimizer, its name, its learning rate) of init `name` in `setting`."""
  if name in learned:
    optimizer = learned[name]
    return optimizer, f"learned SGD ({optimizer.mode}), mean", optimizer.mean_rate()
  optimizer = _lookup(optimizer_settings, name, setting)
  return optimizer, optimizer.name, optimizer.learning_rate


def _check_arguments(task, optimizer_settings, num_steps, report_step, num_test, chunk,
                     trace_every, fit_steps, fit_learning_rate, grid_signals):
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
  checks.positive("evaluate.fit_learning_rate", fit_learning_rate)
  return optimizers.check(dict(optimizer_settings or {}), "evaluate.optimizer_settings",
                          "")


def build_inits(task, root_dir, names, extra_runs, fit_steps, fit_learning_rate, seed,
                checkpoint="best", overrides=(), fits=None):
  """Returns ({name: unbatched params} in table order, {name: learned inner optimizer}
  for meta inits trained with learned rates, except those named in `overrides`, whose
  optimizer the user gave); baselines derive from the first Meta. `fits`, a dict, gets
  the fitted baselines' (Mean, Matched) final metrics against what they were fitted to."""
  fits = {} if fits is None else fits
  standard = task.field.params()
  meta, meta_learned, _ = runs.load_meta_init(task, root_dir, checkpoint)
  out, learned = {}, {}
  for name in names:
    t0 = time.time()
    if name == "standard":
      out[name] = standard
    elif name == "meta":
      out[name] = meta
      if meta_learned is not None:
        learned[name] = meta_learned
    elif name == "shuffled":
      out[name] = inits_lib.shuffled(meta, seed)
    elif name in ("mean", "matched"):
      out[name], m = (inits_lib.mean(task, standard, fit_steps, fit_learning_rate)
                      if name == "mean" else
                      inits_lib.matched(task, standard, meta, fit_steps, fit_learning_rate))
      fits[name] = dict(m, steps=fit_steps, learning_rate=fit_learning_rate,
                        seconds=time.time() - t0)
      logging.info("%s init fitted in %.1fs: %s", name, time.time() - t0, m)
    else:
      raise ValueError(f"Unknown init {name!r}: use {BASELINES + ('meta',)} or a key of "
                       "evaluate.extra_runs.")
  for label, run_dir in (extra_runs or {}).items():
    name = f"meta:{label}"
    out[name], extra_learned, _ = runs.load_meta_init(task, run_dir, checkpoint)
    if extra_learned is not None:
      learned[name] = extra_learned
  return out, {k: v for k, v in learned.items() if k not in overrides}


@gin.configurable(denylist=["root_dir", "checkpoint"])
def evaluate(root_dir, task=gin.REQUIRED, inits=("standard", "mean", "matched",
                                                  "shuffled", "meta"),
             extra_runs=None, optimizer_settings=None, num_steps=100, report_step=2,
             reference="meta", settings=None, num_test=None, chunk=16, trace_every=1,
             fit_steps=1000, fit_learning_rate=1e-4, grid_signals=8, labels=None,
             seed=0, output_dir=None, export_fitted=(), checkpoint="best",
             strategy="default", cpu_replicas=2, classical=None):
  """Runs the comparison and writes the results; returns the results dict.

  Args:
    root_dir: a finished meta-training run (its checkpoint is the Meta init).
    task: the task (gin: the same binding as meta_train's).
    inits: which inits to compare, in table order.
    extra_runs: {label: root_dir} of more meta-trained inits (e.g. {'Reptile': dir});
      they appear as 'meta:<label>' and use the 'meta' optimizer settings unless
      optimizer_settings has their own key.
    optimizer_settings: {init: optimizer or {setting: optimizer}}, optimizers as
      objects (gin: {'meta': @meta/SGD()} with meta/SGD.learning_rate = 1e-2);
      defaults: seed Table 1, except that a Meta init trained with learned inner rates
      uses them (row label 'Meta-SGD' or 'Meta (LSLR)') unless this names it.
    num_steps: test-time steps; an int, or {init: int or {setting: int}}.
    report_step: the table's step (2 in Table 1); None reports each init's final PSNR.
    reference: the init whose report_step metric the others must match.
    settings: observation settings to evaluate (default: all of the task's).
    num_test: number of held-out signals (default: all the task provides).
    chunk: signals optimised at once.
    trace_every: record the metric every this many steps.
    fit_steps, fit_learning_rate: Adam fit of the Mean and Matched baselines.
    grid_signals: signals shown in the reconstruction grid.
    labels: {init: display name}.
    seed: shuffling seed and test-time randomness.
    output_dir: default <root_dir>/eval.
    export_fitted: inits (e.g. ('meta',)) whose fitted fields are exported, one per
      test signal and setting, to <output_dir>/fitted/<init>/<setting>/signal_<k>/ as
      a SavedModel + weights.npz + manifest.json (see export.py).
    checkpoint: which checkpoint of each run is its Meta init: 'best' (held-out
      validation during training) or 'latest'.
    strategy, cpu_replicas: 'mirrored' spreads each chunk's signals over every local
      GPU (or cpu_replicas logical CPUs); each signal's result is the one-device one.
    classical: {method: keyword settings, or {setting: keyword settings}} of classical
      reconstructions scored on the same signals and observations as table rows after
      the inits, for tasks that have them (CT: {'fbp': {}, 'sart': {'iterations':
      100}}, physics/classical_ct.py; needs scikit-image).
  """
  if strategy not in ("default", "mirrored"):
    raise ValueError(f"evaluate.strategy must be 'default' or 'mirrored', got "
                     f"{strategy!r}: signals are evaluated independently, so one "
                     "machine's devices are what helps.")
  user_settings = _check_arguments(task, optimizer_settings, num_steps, report_step,
                                   num_test, chunk, trace_every, fit_steps,
                                   fit_learning_rate, grid_signals)
  classical = dict(classical or {})
  if classical and not hasattr(task, "classical"):
    raise ValueError(f"evaluate.classical names {sorted(classical)}, but "
                     f"{type(task).__name__} has no classical reconstructions; only CT "
                     "does (physics/classical_ct.py). Remove the binding.")
  output_dir = layout.eval_dir(root_dir, output_dir)
  os.makedirs(output_dir, exist_ok=True)
  optimizer_settings = dict(DEFAULT_OPTIMIZERS, **user_settings)
  if not isinstance(num_steps, dict):
    num_steps = {name: num_steps for name in set(optimizer_settings) | set(inits)}
  labels_given = set(labels or {})
  labels = dict({"standard": "Standard", "mean": "Mean", "matched": "Matched",
                 "shuffled": "Shuffled", "meta": "Meta"}, **(labels or {}))
  settings = list(settings or task.settings)
  signals = task.test_signals()
  if num_test:
    signals = contract.take(signals, slice(0, num_test))
  num_signals = len(next(iter(signals.values())))
  fits = {}
  params, learned = build_inits(task, root_dir, inits, extra_runs, fit_steps,
                                fit_learning_rate, seed, checkpoint, user_settings, fits)
  if "meta" in learned and "meta" not in labels_given:
    labels["meta"] = learned_lr.LABELS[learned["meta"].mode]
  tto = TestTimeOptimizer(task, seed=seed,
                          strategy=distribute.get(strategy, cpu_replicas))
  results = {"settings": [str(s) for s in settings], "report_step": report_step,
             "reference": reference, "inits": {}, "fits": fits}
  writer = tf.summary.create_file_writer(os.path.join(output_dir, "tensorboard"))
  grid_rows = {}
  for setting in settings:
    shown = contract.take(signals, slice(0, grid_signals))
    grid_cols = [(label, images) for label, images in (
        ("input", task.inputs_for_display(shown, setting)),
        ("target", task.targets_for_display(shown))) if images is not None]
    for name, init in params.items():
      steps = int(_lookup(num_steps, name, setting))
      optimizer, opt_name, lr = _optimizer_of(name, setting, learned, optimizer_settings)
      t0 = time.time()
      with progress.Bar(num_signals, "signal",
                        f"{setting} / {name}: {steps} steps") as bar:
        bar.update(0)
        trace, finals = tto.run(init, signals, optimizer, steps, setting, trace_every,
                                chunk, on_chunk=bar.update)
      elapsed = time.time() - t0
      if name in export_fitted:
        _export_fitted(task, root_dir, output_dir, name, setting, opt_name, lr, steps,
                       trace, finals)
      at = traced_steps(steps, trace_every)
      entry = results["inits"].setdefault(name, {"label": labels.get(
          name, name.split(":")[-1]), "settings": {}})
      entry["settings"][str(setting)] = {
          "optimizer": opt_name, "learning_rate": lr, "num_steps": steps,
          "steps": at.tolist(), "metric": trace.T.tolist(), "seconds": elapsed}
      longest = max(int(_lookup(num_steps, other, setting)) for other in params)
      if steps < longest:  # its own curve on to the longest budget, for the figure
        more, _ = tto.run(init, signals, optimizer, longest, setting, trace_every, chunk)
        entry["settings"][str(setting)]["continued"] = {
            "steps": traced_steps(longest, trace_every).tolist(),
            "metric": more.T.tolist()}
      logging.info("%s / %s: %s lr %g, %d steps in %.1fs: PSNR %.2f -> %.2f dB",
                   setting, name, opt_name, lr, steps, elapsed, trace[0].mean(),
                   trace[-1].mean())
      with writer.as_default():
        for j, s in enumerate(at):
          tf.summary.scalar(f"eval/{setting}/{name}/psnr", float(trace[j].mean()), step=s)
      if report_step is None:  # the grid shows the final fit: reuse it
        shown_params = [p[:grid_signals] for p in joined(finals)]
      else:
        k = min(report_step, steps)
        shown_params = joined(tto.run(init, shown, optimizer, k, setting, max(k, 1),
                                      chunk)[1])
      grid_cols.append((entry["label"],
                        np.clip(task.render(shown_params, shown).numpy(), 0, 1)))
    for method, method_settings in classical.items():
      kwargs = _classical_settings(method_settings, setting)
      t0 = time.time()
      images, psnr, description = task.classical(method, signals, setting, kwargs)
      entry = results["inits"].setdefault(f"classical:{method}", {
          "label": labels.get(method, method.upper()), "settings": {}})
      entry["settings"][str(setting)] = {
          "method": description, "psnr": psnr.tolist(),
          "psnr_at_report_mean": float(psnr.mean()),
          "psnr_at_report_std": float(psnr.std()), "seconds": time.time() - t0}
      logging.info("%s / %s: PSNR %.2f dB", setting, method, psnr.mean())
      grid_cols.append((entry["label"], np.clip(images[:grid_signals], 0, 1)))
    grid_rows[setting] = grid_cols
  writer.flush()
  _summarise(results, params)
  files.write_json(os.path.join(output_dir, "results.json"), results)
  files.write_text(os.path.join(output_dir, "results.md"), results_table(results))
  _figures(results, grid_rows, params, output_dir)
  print(results_table(results))
  return results


def _classical_settings(value, setting):
  """Keyword settings of a classical method, given once or per setting."""
  value = dict(value or {})
  if setting in value or str(setting) in value:
    return dict(runs.per_setting(value, setting) or {})
  return value


def _export_fitted(task, root_dir, output_dir, name, setting, opt_name, lr, steps,
                   trace, finals):
  export.export_fitted(
      task, export.unbatch(finals),
      layout.fitted_dir(output_dir, name, setting),
      manifest_extra={"init": name, "setting": str(setting), "num_steps": steps,
                      "test_time": {"optimizer": opt_name, "learning_rate": lr},
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
        match = steps_to_reach(curves, ref_curves[rj], steps)
        e["steps_to_match"] = [None if not np.isfinite(m) else float(m) for m in match]
        e["steps_to_match_text"] = format_match(match, e["num_steps"])


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
  targets = {"mean": "the training set's mean signal", "matched": "the Meta init's output"}
  for name, fit in results.get("fits", {}).items():
    label = results["inits"].get(name, {}).get("label", name)
    lines.append(f"\n{label}: Standard fitted to {targets[name]} with {fit['steps']} "
                 f"Adam steps (lr {fit['learning_rate']:g}); then "
                 f"{fit.get('psnr', float('nan')):.2f} dB PSNR against it.")
  return "\n".join(lines) + "\n"


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
