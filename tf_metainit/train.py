"""The gin-configurable meta-training loop (MAML or Reptile) for any task.

Layout under root_dir:
  config.gin                   every binding the run was started with (evaluate reads it)
  operative_config.gin         the values that were actually used
  train/checkpoints/           field + outer optimizer + data iterator + step
  train/events.*               TensorBoard scalars and images
Rerunning on the same root_dir resumes from the latest checkpoint.
"""

import collections
import contextlib
import functools
import math
import os
import signal
import threading
import time

from absl import logging
import gin
import keras
import tensorflow as tf

from tf_metainit import checkpoints
from tf_metainit import checks
from tf_metainit import distribute
from tf_metainit import files
from tf_metainit import layout
from tf_metainit import progress
from tf_metainit import provenance
from tf_metainit.fields import functional
from tf_metainit.meta import inner
from tf_metainit.meta import learned_lr
from tf_metainit.meta import optimizers
from tf_metainit.meta import outer
from tf_metainit.tasks import contract

class DivergenceError(RuntimeError):
  pass


class Interrupted(RuntimeError):
  """SIGTERM or SIGINT stopped training after saving a checkpoint."""

  def __init__(self, signum, step, path):
    self.signum = signum
    super().__init__(f"Stopped by {signal.Signals(signum).name} after step {step}; "
                     f"saved {path}. Rerun the same command to resume.")


@contextlib.contextmanager
def _stop_requests():
  """SIGTERM (a scheduler's pre-emption) and SIGINT (Ctrl-C) ask the loop to save
  and stop after the current step; a second signal stops at once."""
  requested = []
  if threading.current_thread() is not threading.main_thread():
    yield requested  # signal handlers can only be set from the main thread
    return

  def handler(signum, frame):
    del frame
    if requested:
      raise KeyboardInterrupt
    logging.warning("%s: stopping after this step.", signal.Signals(signum).name)
    requested.append(signum)

  previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
  try:
    yield requested
  finally:
    for s, h in previous.items():
      signal.signal(s, h)


def function(fn, jit_compile=False):
  """tf.function with XLA as a switch: on CPU plain graphs are ~2x faster here."""
  return tf.function(fn, jit_compile=jit_compile, reduce_retracing=True)


class OuterSchedule(keras.optimizers.schedules.LearningRateSchedule):
  """Linear warm-up to `peak`, then constant or cosine decay to final_fraction * peak."""

  def __init__(self, peak, num_iterations, warmup_steps=0, decay="constant",
               final_fraction=0.0):
    if decay not in ("constant", "cosine"):
      raise ValueError(f"meta_train.outer_lr_decay must be 'constant' or 'cosine', got "
                       f"{decay!r}.")
    self.peak, self.num_iterations = float(peak), int(num_iterations)
    self.warmup_steps, self.decay = int(warmup_steps), decay
    self.final_fraction = float(final_fraction)

  def __call__(self, step):
    step = tf.cast(step, tf.float32)
    warm = (tf.minimum(1.0, (step + 1.0) / self.warmup_steps) if self.warmup_steps
            else tf.constant(1.0))
    if self.decay == "constant":
      return self.peak * warm
    span = max(self.num_iterations - self.warmup_steps, 1)
    progress = tf.clip_by_value((step - self.warmup_steps) / span, 0.0, 1.0)
    cosine = 0.5 * (1.0 + tf.cos(math.pi * progress))
    return self.peak * warm * (self.final_fraction + (1 - self.final_fraction) * cosine)

  def get_config(self):
    return dict(peak=self.peak, num_iterations=self.num_iterations,
                warmup_steps=self.warmup_steps, decay=self.decay,
                final_fraction=self.final_fraction)


OUTER_OPTIMIZERS = ("adam", "sgd")


def outer_optimizer(learning_rate, kind="adam"):
  """The outer loop's optimizer; gradient clipping happens in the outer step, on the
  gradient averaged over replicas.

  'adam' is the reference's optax.adam (b1 0.9, b2 0.999, eps 1e-8; Keras' is 1e-7).
  'sgd' with Reptile is Nichol et al.'s own outer step, theta0 += lr (mean theta_K -
  theta0): it moves each weight by its share of the inner loop's displacement, where
  Adam moves every weight by about lr whatever its scale (README, "Why it collapsed").
  """
  if kind == "sgd":
    return keras.optimizers.SGD(learning_rate)
  return keras.optimizers.Adam(learning_rate, beta_1=0.9, beta_2=0.999, epsilon=1e-8)


@gin.configurable(denylist=["root_dir", "accept_config_changes"])
def meta_train(root_dir, task=gin.REQUIRED, algorithm="maml", num_iterations=1000,
               outer_batch_size=3, outer_optimizer_kind="adam",
               outer_learning_rate=1e-5, outer_warmup_steps=0,
               outer_lr_decay="constant", outer_final_lr_fraction=0.0,
               clip_global_norm=None, inner_steps=2,
               inner_optimizer=optimizers.SGD(1e-2), inner_lr_mode="fixed",
               first_order=False, seed=0, jit_compile=False, log_every=50,
               summary_every=50, image_summary_every=500, checkpoint_every=500,
               max_checkpoints=3, val_every=50, num_val_signals=4,
               collapse_margin_db=3.0, stop_on_collapse=False, strategy="default",
               cpu_replicas=2, accept_config_changes=False):
  """Meta-learns an initialization of `task.field`; returns the final outer step.

  Args:
    root_dir: where checkpoints, summaries and configs go; reused to resume.
    task: a tasks.base.Task (gin: @ImageRegression() etc.).
    algorithm: 'maml' (second-order unless first_order) or 'reptile'.
    num_iterations: total outer steps (150K images / 100K CT and ShapeNet in the paper).
    outer_batch_size: signals per outer step.
    outer_optimizer_kind: 'adam' (the paper's) or 'sgd' (Reptile's own outer step,
      theta0 += outer_learning_rate * (mean adapted theta - theta0)).
    outer_learning_rate: peak learning rate of the outer loop.
    outer_warmup_steps: linear warm-up of the outer learning rate from 0.
    outer_lr_decay: 'constant' or 'cosine' (to outer_final_lr_fraction * peak at
      num_iterations; changing num_iterations on resume changes the schedule).
    outer_final_lr_fraction: where the cosine ends, as a fraction of the peak.
    clip_global_norm: clip the outer gradient to this global norm (None: off).
    inner_steps: inner-loop steps K.
    inner_optimizer: the inner loop's optimizer with its learning rate (gin:
      @inner/SGD() and inner/SGD.learning_rate = 1e-2, the paper; or @inner/Adam()).
    inner_lr_mode: 'fixed', or meta-learned SGD rates started at inner_optimizer's
      learning rate: 'per_parameter' (Meta-SGD) or 'per_layer_step' (MAML++ LSLR);
      second-order MAML with an SGD inner_optimizer only (meta/learned_lr.py).
    first_order: FOMAML: no gradient through the inner gradients.
    seed: seeds the field init, data order and per-step randomness.
    jit_compile: compile the outer step with XLA (faster on GPU, slower on CPU).
    log_every / summary_every / image_summary_every / checkpoint_every: in outer steps.
    max_checkpoints: checkpoints kept.
    val_every: every this many steps, adapt num_val_signals held-out signals with the
      inner loop; the best init by their metric is kept in train/best (0 = only at
      the end).
    collapse_margin_db: warn when the held-out metric falls this far below the best.
    stop_on_collapse: stop training at such a warning (the best init is kept).
    strategy: 'default', 'mirrored', 'multi_worker' or 'tpu' (distribute.py); the
      outer batch is split over the replicas and the update is the one-device one.
    cpu_replicas: logical CPU devices of 'mirrored' on a machine without GPUs.
    accept_config_changes: resume although the training bindings differ from the
      run's config.gin (the binary's --accept_config_changes; never a gin binding).
  """
  _check_arguments(**locals())  # at entry, locals() are exactly the arguments
  _refuse_unread_bindings()
  strategy_object = _check_strategy(strategy, outer_batch_size)
  jit_compile = jit_compile or strategy == "tpu"
  cadence = Cadence(num_iterations, log_every, summary_every, image_summary_every,
                    checkpoint_every, val_every, stop_on_collapse)
  out_dir = distribute.write_root(root_dir, strategy_object)  # root_dir on the chief
  # One trainer per root_dir (provenance.RunLock); nothing is written before this.
  try:
    with provenance.RunLock(out_dir):
      config_text = gin.config_str()
      changes = (provenance.check_resume(root_dir, config_text, accept_config_changes)
                 if _has_checkpoints(root_dir) else None)
      field = task.field
      inner_opt = (learned_lr.make(inner_lr_mode,
                                   [v.shape for v in field.trainable_variables],
                                   inner_steps, inner_optimizer.learning_rate)
                   or inner_optimizer)
      schedule = OuterSchedule(outer_learning_rate, num_iterations, outer_warmup_steps,
                               outer_lr_decay, outer_final_lr_fraction)
      optimizer = outer_optimizer(schedule, outer_optimizer_kind)
      optimizer.build(learned_lr.meta_variables(field, inner_opt))
      step_var = tf.Variable(0, dtype=tf.int64, name="step")
      meta_state = checkpoints.meta_state(field, inner_opt)
      state = dict(optimizer=optimizer, step=step_var, **meta_state)
      if strategy == "default":  # a distributed run derives its data position instead
        dataset = task.train_dataset(seed).batch(outer_batch_size, drop_remainder=True)
        state["iterator"] = iterator = iter(dataset.prefetch(2))
      ckpt = checkpoints.Checkpointer(
          layout.checkpoints_dir(out_dir), max_checkpoints,
          restore_directory=layout.checkpoints_dir(root_dir), **state)
      start = int(step_var.numpy())
      # Only now, with the checkpoint restored: a failed rerun leaves config.gin alone.
      if changes is None or changes:
        provenance.record_config(out_dir, config_text, start)
      if ckpt.restored_from:
        logging.info("Resuming from step %d (%s)", start, ckpt.restored_from)
      if start >= num_iterations:
        logging.info("Already trained for %d >= %d iterations.", start, num_iterations)
        return start
      if strategy != "default":
        iterator = distribute.distributed_dataset(
            strategy_object, lambda: task.train_dataset(seed), outer_batch_size, start)
      step_fn = compiled_step(
          outer.build_step(field, task, optimizer, inner_opt, algorithm, inner_steps,
                           first_order, seed, clip_global_norm), jit_compile,
          strategy_object if strategy != "default" else None)
      validation = Validation(task, inner_steps, inner_opt, seed, num_val_signals,
                              CollapseMonitor(collapse_margin_db,
                                              checkpoints.BestCheckpoint(
                                                  layout.best_dir(out_dir), meta_state,
                                                  layout.best_dir(root_dir))))
      divergence = functools.partial(_divergence, outer_learning_rate=outer_learning_rate,
                                     inner_optimizer=inner_optimizer,
                                     inner_lr_mode=inner_lr_mode)
      writer = tf.summary.create_file_writer(layout.train_dir(out_dir))
      with writer.as_default(), distribute.watching_peers(strategy_object, root_dir):
        done = _loop(out_dir, start, cadence, iterator, step_fn, step_var, ckpt,
                     validation, lambda step: float(schedule(step)), inner_opt,
                     divergence)
      writer.flush()
      return done
  finally:
    distribute.release(out_dir, root_dir)


def _refuse_unread_bindings():
  """The task, field and optimizers are built by now: whatever gin has not handed to
  them was bound for nothing."""
  unread = provenance.unread_bindings(gin.config_str(), gin.operative_config_str())
  # A shipped config's inner/SGD.learning_rate stays bound when a user switches the
  # inner optimizer to Adam, and gin cannot unbind it: a warning, not an error.
  spare_rates = [k for k in unread if k.split("/")[-1].split(".")[0] in ("SGD", "Adam")]
  for binding in spare_rates:
    logging.warning("%s is bound but this run uses another optimizer there.", binding)
  # meta_train's own bindings go unread only where Python passed the argument.
  unread = [k for k in unread if k not in spare_rates and
            not k.startswith("meta_train.")]
  if unread:
    raise ValueError(f"This run never reads {', '.join(unread)}: they belong to another "
                     "task, dataset or field than the one configured. Remove them or "
                     "fix the name.")


def _check_strategy(name, outer_batch_size):
  """The strategy meta_train runs under: the one `name` says, whose scope the caller
  entered before the task (and so the field's weights) was built."""
  if (distribute.check_name(name) != "default") != tf.distribute.has_strategy():
    raise ValueError(
        f"meta_train.strategy = {name!r} but meta_train runs under "
        f"{type(tf.distribute.get_strategy()).__name__}: call it inside "
        f"`with distribute.get({name!r}).scope():`, as tf-metainit-train does.")
  strategy = tf.distribute.get_strategy()
  distribute.check_global_batch(outer_batch_size, strategy)
  return strategy


def compiled_step(step, jit_compile, strategy=None):
  """The outer step as one tf.function; with a strategy, run on every replica (their
  results agree after the all-reduce, so the first is returned)."""
  if strategy is None:
    return function(step, jit_compile)

  def replicated(signals, step_index):
    outputs = strategy.run(step, args=(signals, step_index))
    return tuple(strategy.experimental_local_results(x)[0] for x in outputs)

  return function(replicated, jit_compile)


class Cadence(collections.namedtuple("Cadence", [
    "num_iterations", "log_every", "summary_every", "image_summary_every",
    "checkpoint_every", "val_every", "stop_on_collapse"])):
  """When, in outer steps done, the loop logs, summarises, validates and saves."""

  def due(self, every, done):
    return (every and done % every == 0) or done == self.num_iterations


def _loop(root_dir, start, cadence, iterator, step_fn, step_var, ckpt, validation,
          learning_rate, inner_opt, divergence):
  """The outer steps from `start`; returns the last step done."""
  field = validation.task.field
  last_good = ckpt.latest
  t0, steps_timed = time.time(), 0
  with _stop_requests() as requested, progress.Bar(
      cadence.num_iterations, "step", "Meta-training", start) as bar:
    bar.update(start)
    for step in range(start, cadence.num_iterations):
      before, after, grad_norm, finite = step_fn(next(iterator),
                                                 tf.constant(step, tf.int64))
      step_var.assign(step + 1)
      steps_timed += 1
      before, after = float(before), float(after)
      if not (math.isfinite(after) and math.isfinite(before) and bool(finite)):
        raise divergence(step, after, bool(finite), last_good=last_good)
      done = step + 1
      validation.monitor.record_inner(before, after)
      if done == start + 1:
        files.write_text(layout.operative_config_path(root_dir), gin.operative_config_str())
      if cadence.due(cadence.summary_every, done):
        _training_summaries(done, before, after, float(grad_norm), learning_rate(step),
                            field, inner_opt)
      if cadence.due(cadence.log_every, done):
        rate = steps_timed / (time.time() - t0)
        tf.summary.scalar("outer/steps_per_sec", rate, step=done)
        logging.info("step %d/%d  inner-batch loss %.5f -> %.5f  (PSNR %.2f -> %.2f dB)"
                     "  %.2f steps/s", done, cadence.num_iterations, before, after,
                     _psnr(before), _psnr(after), rate)
        t0, steps_timed = time.time(), 0
        validation.monitor.check_inner(done)
      collapsed = validation.run(done, cadence.due(cadence.val_every, done),
                                 cadence.due(cadence.image_summary_every, done))
      bar.update(done, **_bar_values(before, after, validation.latest))
      stop = collapsed and cadence.stop_on_collapse
      if cadence.due(cadence.checkpoint_every, done) or stop or requested:
        last_good = ckpt.save(done)
      if stop:
        logging.warning("Stopping at step %d (meta_train.stop_on_collapse = True).", done)
        return done
      if requested:
        raise Interrupted(requested[0], done, last_good)
  return cadence.num_iterations


def _bar_values(before, after, held_out):
  """The latest validation and what the step log line says, for the progress bar (a
  narrow terminal cuts its end)."""
  values = {f"held-out {name}": value for name, value in held_out.items()}
  values["inner-batch psnr"] = f"{_psnr(before):.2f} -> {_psnr(after):.2f}"
  return values


def _has_checkpoints(root_dir):
  directory = layout.checkpoints_dir(root_dir)
  return os.path.isdir(directory) and any(
      name.startswith("ckpt-") for name in os.listdir(directory))


# meta_train's numeric arguments and the rule each must meet.
_NUMBER_RULES = {
    "num_iterations": checks.positive_int, "outer_batch_size": checks.positive_int,
    "outer_learning_rate": checks.non_negative,
    "outer_warmup_steps": checks.non_negative_int,
    "outer_final_lr_fraction": checks.fraction, "inner_steps": checks.positive_int,
    "seed": checks.non_negative_int, "log_every": checks.positive_int,
    "summary_every": checks.positive_int, "image_summary_every": checks.positive_int,
    "checkpoint_every": checks.positive_int, "max_checkpoints": checks.positive_int,
    "val_every": checks.non_negative_int, "num_val_signals": checks.positive_int,
    "collapse_margin_db": checks.non_negative, "cpu_replicas": checks.positive_int,
}


def _check_arguments(task, algorithm, inner_optimizer, inner_lr_mode, first_order,
                     clip_global_norm, **others):
  """Errors that name the gin binding to fix, before anything is written."""
  root_dir = others["root_dir"]
  if os.path.exists(root_dir) and not os.path.isdir(root_dir):
    raise ValueError(f"--root_dir={root_dir} is a file; give a directory (new, or a run "
                     "to resume).")
  for name, rule in _NUMBER_RULES.items():
    rule(f"meta_train.{name}", others[name])
  checks.optional(checks.positive, "meta_train.clip_global_norm", clip_global_norm)
  if algorithm not in outer.ALGORITHMS:
    raise ValueError(f"meta_train.algorithm must be one of {outer.ALGORITHMS}, got "
                     f"{algorithm!r}.")
  if others["outer_optimizer_kind"] not in OUTER_OPTIMIZERS:
    raise ValueError(f"meta_train.outer_optimizer_kind must be one of "
                     f"{OUTER_OPTIMIZERS}, got {others['outer_optimizer_kind']!r}.")
  if task is gin.REQUIRED or task is None:
    raise ValueError("meta_train.task is not set: bind it in gin, e.g. "
                     "meta_train.task = @ImageRegression().")
  optimizers.check(inner_optimizer, "meta_train.inner_optimizer", "inner")
  learned_lr.check_mode(inner_lr_mode)
  if inner_lr_mode != "fixed" and (algorithm != "maml" or first_order):
    raise ValueError(
        f"meta_train.inner_lr_mode = {inner_lr_mode!r} meta-learns SGD rates through "
        "the inner loop: it needs algorithm 'maml' and first_order = False.")
  if inner_lr_mode != "fixed" and not isinstance(inner_optimizer, optimizers.SGD):
    raise ValueError(
        f"meta_train.inner_lr_mode = {inner_lr_mode!r} meta-learns SGD rates, started "
        f"at the inner optimizer's learning rate, but meta_train.inner_optimizer is "
        f"{inner_optimizer}: bind meta_train.inner_optimizer = @inner/SGD() with "
        f"inner/SGD.learning_rate = {inner_optimizer.learning_rate!r}.")


def _divergence(step, loss, weights_finite, outer_learning_rate, inner_optimizer,
                inner_lr_mode, last_good):
  what = (f"The loss became {loss}" if weights_finite else
          f"The weights became inf/NaN (loss {loss})")
  inner_rate = (f"{inner_optimizer.learning_rate}" if inner_lr_mode == "fixed" else
                f"{inner_optimizer.learning_rate}, where the learned rates start")
  return DivergenceError(
      f"{what} at outer step {step}: training diverged. Lower "
      f"meta_train.outer_learning_rate (now {outer_learning_rate}) or the learning "
      f"rate of meta_train.inner_optimizer (now {inner_rate}). The last good "
      f"checkpoint ({last_good or 'none yet'}) was kept; the diverged weights "
      "were not saved.")


class Validation:
  """Held-out signals adapted from the current init with the meta-training inner loop;
  their metric feeds the collapse monitor and the best checkpoint."""

  def __init__(self, task, inner_steps, inner_opt, seed, num_signals, monitor):
    self.task, self.inner_steps, self.monitor = task, inner_steps, monitor
    self.latest = {}  # the last held-out metrics, for the progress bar
    self.signals = contract.take(task.validation_signals(), slice(0, num_signals))

    def adapted(signals):
      params = functional.batch_params(task.field.params(),
                                       contract.batch_size_of(signals))
      params = inner.fit(task, params, signals, inner_steps, inner_opt, seed,
                         task.default_setting).params
      return task.metrics(params, signals), task.render(params, signals)

    self._adapted = function(adapted)

  def run(self, step, metrics_wanted, images_wanted):
    """Adapts once for both the metrics and the image summaries; returns whether the
    metrics show a collapse."""
    if not (metrics_wanted or images_wanted):
      return False
    metrics, renders = self._adapted(self.signals)
    collapsed = False
    if metrics_wanted:
      values = {name: float(tf.reduce_mean(v)) for name, v in metrics.items()}
      self.latest = values
      for name, value in values.items():
        tf.summary.scalar(f"val/{name}_after_{self.inner_steps}_steps", value, step=step)
      logging.info("step %d  held-out %s after %d inner steps: %s", step,
                   "/".join(values), self.inner_steps,
                   " ".join(f"{v:.2f}" for v in values.values()))
      collapsed = self.monitor.check_validation(step, values)
    if images_wanted:
      tf.summary.image("val/adapted", tf.clip_by_value(renders, 0, 1), step=step,
                       max_outputs=4)
      targets = self.task.targets_for_display(self.signals)
      if targets is not None:
        tf.summary.image("val/target", targets, step=step, max_outputs=4)
    return collapsed


VALIDATION_METRIC = "psnr"


class CollapseMonitor:
  """Keeps the best held-out init and warns when training falls away from it.

  Two signs of collapse: the held-out metric (PSNR after the inner loop) falls more
  than `margin_db` below the best seen, or the inner loop stops reducing the training
  loss (mean relative reduction over a log window below STALL_FRACTION).
  """

  STALL_FRACTION = 1e-3

  def __init__(self, margin_db, best):
    self.margin_db, self.best = margin_db, best
    self._gains = []

  def record_inner(self, before, after):
    self._gains.append((before - after) / max(before, 1e-12))

  def check_inner(self, step):
    gains, self._gains = self._gains, []
    if gains and sum(gains) / len(gains) < self.STALL_FRACTION:
      logging.warning(
          "Possible collapse at step %d: the inner loop no longer reduces the training "
          "loss (mean relative reduction %.2g over the last %d steps). %s", step,
          sum(gains) / len(gains), len(gains), self.best.describe())
      return True
    return False

  def check_validation(self, step, values):
    value = values.get(VALIDATION_METRIC, next(iter(values.values())))
    if self.best.update(step, value):
      return False
    if self.best.value - value > self.margin_db:
      logging.warning(
          "Collapse at step %d: held-out %s %.2f is %.2f below the best. %s", step,
          VALIDATION_METRIC, value, self.best.value - value, self.best.describe())
      tf.summary.scalar("val/collapse", 1.0, step=step)
      return True
    return False


def _training_summaries(step, before, after, grad_norm, learning_rate, field, inner_opt):
  tf.summary.scalar("outer/loss_before_inner", before, step=step)
  tf.summary.scalar("outer/loss_after_inner", after, step=step)
  tf.summary.scalar("outer/psnr_before_inner", _psnr(before), step=step)
  tf.summary.scalar("outer/psnr_after_inner", _psnr(after), step=step)
  tf.summary.scalar("outer/grad_global_norm", grad_norm, step=step)
  tf.summary.scalar("outer/learning_rate", learning_rate, step=step)
  # Weight scales: a collapse shows first as hidden SIREN kernels growing (README).
  for v in field.trainable_variables:
    tf.summary.scalar(f"weights_rms/{v.name}",
                      float(tf.sqrt(tf.reduce_mean(tf.square(v)))), step=step)
  for v in learned_lr.rates_of(inner_opt):
    tf.summary.scalar(f"inner_lr/{v.name}", float(tf.reduce_mean(v)), step=step)


def _psnr(mse):
  return float(contract.psnr_from_mse(mse)) if mse > 0 else float("inf")
