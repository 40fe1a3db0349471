"""Test-time optimisation: how an init is fitted to new signals, for every job.

  Init                the field, its start weights and the one answer to "how is this
                      init fitted at test time": its optimizer and suggested steps
                      (from a run's record, runs.py, or an export's manifest)
  STANDARD_OPTIMIZER  Table 1's Adam 1e-4, the baselines' default (BASELINE_OPTIMIZERS)
  TestTimeOptimizer   many signals fitted at once, compiled functions reused
  fit_signals         one batch-of-one signal, its metric traced (tf-metainit-fit)
  steps_to_reach      the first traced step at which a curve reaches a target

Every fit goes through meta/inner.py's fit: a task's own observation and inner
batches, the same seeds as meta-training.
"""

import collections
import itertools

import numpy as np
import tensorflow as tf

from tf_metainit import checks
from tf_metainit.fields import functional
from tf_metainit.meta import inner
from tf_metainit.meta import learned_lr
from tf_metainit.meta import optimizers
from tf_metainit.tasks import contract


class Init(collections.namedtuple("Init", ["field", "params", "optimizer", "num_steps",
                                           "source", "task"])):
  """`task` is the task's description (task.describe()): which signals the init is
  for. `num_steps` (None: unset) comes from a run record or a manifest, so it is
  checked here, where every job's step count from a file enters."""
  __slots__ = ()

  def __new__(cls, field, params, optimizer, num_steps, source, task):
    try:
      checks.optional(checks.positive_int, "test_time.num_steps", num_steps)
    except ValueError as e:
      raise ValueError(f"The init {source} is unusable: {e} Correct it in the file "
                       "it comes from (an export's manifest.json, a run's "
                       "run.json).") from e
    return super().__new__(cls, field, params, optimizer, num_steps, source, task)


# Seed Table 1: every baseline with Adam 1e-4 (Meta's optimizer is its init's own).
STANDARD_OPTIMIZER = optimizers.Adam(1e-4)
BASELINES = ("standard", "mean", "matched", "shuffled")
BASELINE_OPTIMIZERS = dict.fromkeys(BASELINES, STANDARD_OPTIMIZER)


def per_setting(value, setting):
  """A value that may be given per setting ({setting: value}, keys int or str)."""
  if isinstance(value, dict):
    return value[setting] if setting in value else value[str(setting)]
  return value


class Choices:
  """Each init's optimizer and budget in a setting: the user's evaluate bindings by
  name ('meta:SV' falls back to 'meta'), a Meta init's learned rates before a
  fallback, then the init's own test-time optimizer (its run record) or Table 1's
  Adam for a baseline."""

  def __init__(self, user, metas, num_steps):
    self.user, self.metas, self.num_steps = user, metas, num_steps

  def optimizer(self, name, setting):
    if name in self.user:
      return per_setting(self.user[name], setting)
    own = self.metas[name].optimizer if name in self.metas else None
    base = name.split(":")[0]
    if isinstance(own, learned_lr.LearnedRates) or (base not in self.user and
                                                    own is not None):
      return own
    if base in self.user:
      return per_setting(self.user[base], setting)
    return BASELINE_OPTIMIZERS[name]

  def steps(self, name, setting):
    if not isinstance(self.num_steps, dict):
      return int(self.num_steps)
    table = self.num_steps
    return int(per_setting(table[name] if name in table else
                                table[name.split(":")[0]], setting))


def label(optimizer, default="Meta"):
  """The table's row name of a Meta init fitted with `optimizer`."""
  if isinstance(optimizer, learned_lr.LearnedRates):
    return learned_lr.LABELS[optimizer.mode]
  return default


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
  """The steps a trace of `num_steps` steps records (inner.adapt's trace rows)."""
  return np.asarray(list(range(0, num_steps, trace_every)) + [num_steps])


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


def unbatch(finals):
  """TestTimeOptimizer.run's per-chunk batched params -> one params list per signal."""
  return [[p[j] for p in chunk] for chunk in finals for j in range(int(chunk[0].shape[0]))]


def fit_signals(task, params, signals, optimizer, num_steps, setting, metric,
                trace_every=1, on_step=None):
  """(fitted batch-of-1 params, metric traced before step 0 and every trace_every
  steps) of unbatched `params` fitted to a task's batch-of-1 `signals` (seed 0).
  on_step(steps done, value), if given, gets each traced value as it comes."""
  trace_fn = (metric if on_step is None else
              _reporting(metric, on_step, trace_every, num_steps))

  @tf.function
  def run(p):
    fitted = inner.fit(task, p, signals, num_steps, optimizer, 0, setting,
                       trace_fn=trace_fn, trace_every=trace_every)
    return fitted.params, fitted.trace

  fitted, trace = run(functional.batch_params(params, 1))
  return fitted, trace[:, 0].numpy()


def fit_image(task, params, image, optimizer, num_steps, on_step=None):
  """(fitted params, PSNR before step 0..num_steps) of unbatched `params` fitted to
  `image` (H, W, C) on every pixel through an image task (ImageRegression.for_field);
  on_step(steps done, PSNR) is called as the PSNRs come."""
  signals = {"image": np.asarray(image, np.float32)[None]}
  fitted, curve = fit_signals(task, params, signals, optimizer, num_steps, "full",
                              lambda p: task.metrics(p, signals)["psnr"],
                              on_step=on_step)
  return [p[0] for p in fitted], curve


def _reporting(trace_fn, on_step, trace_every, num_steps):
  """trace_fn that also hands each value to on_step(steps done, value) from inside the
  compiled loop (the trace runs every trace_every steps and after the last)."""
  traced_so_far = itertools.count()

  def report(value):
    on_step(min(next(traced_so_far) * trace_every, num_steps), float(value[0]))
    return value

  def traced(params):
    value = trace_fn(params)
    reported = tf.numpy_function(report, [value], value.dtype, stateful=True)
    return tf.ensure_shape(reported, value.shape)

  return traced
