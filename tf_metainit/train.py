"""Meta-training (MAML or Reptile) for any task: a frozen configuration and a Trainer.

Layout under root_dir:
  run.json                     the run record (runs.py): what every other job reads
  config.gin                   every binding the run was started with
  operative_config.gin         the values that were actually used
  train/checkpoints/           field + outer optimizer + data iterator + step
  train/best/                  the best init by held-out validation
  train/events.*               TensorBoard scalars and images
Rerunning on the same root_dir resumes from the latest checkpoint.

  config = train.TrainConfig()          # gin: meta_train.<name> = value
  train.Trainer(root_dir, config).run()
"""

import contextlib
import copy
import dataclasses
import math
import os
import signal
import threading
import time

from absl import logging
import gin
import tensorflow as tf

from tf_metainit import checkpoints
from tf_metainit import checks
from tf_metainit import distribute
from tf_metainit import files
from tf_metainit import layout
from tf_metainit import monitor
from tf_metainit import progress
from tf_metainit import provenance
from tf_metainit import runs
from tf_metainit import testtime
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


def _hp(default, check=None, resumable=False):
  """A hyperparameter: its default, the rule a value must meet, and whether a resumed
  run may change it (it changes how the run is watched, not what it trains)."""
  return dataclasses.field(default=default,
                           metadata={"check": check, "resumable": resumable})


@gin.configurable("meta_train")
@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Every hyperparameter of meta-training; gin binds them as meta_train.<name>.

  task: a tasks.contract.Task (gin: @ImageRegression() etc.).
  algorithm: 'maml' (second-order unless first_order) or 'reptile'.
  num_iterations: total outer steps (150K images / 100K CT and ShapeNet in the paper).
  outer_batch_size: signals per outer step.
  outer_optimizer: the outer loop's optimizer with its peak rate (gin: @outer/Adam(),
    outer/Adam.learning_rate = 1e-5, the paper's; @outer/SGD() with Reptile is its own
    outer step, theta0 += lr (mean adapted theta - theta0)).
  outer_warmup_steps: linear warm-up of the outer learning rate from 0.
  outer_lr_decay: 'constant' or 'cosine' (to outer_final_lr_fraction * peak at
    num_iterations; changing num_iterations on resume changes the schedule).
  outer_final_lr_fraction: where the cosine ends, as a fraction of the peak.
  clip_global_norm: clip the outer gradient to this global norm (None: off).
  inner_steps: inner-loop steps K.
  inner_optimizer: the inner loop's optimizer (gin: @inner/SGD() with
    inner/SGD.learning_rate = 1e-2, the paper; @inner/Adam(); or @inner/LearnedSGD(),
    meta-learned rates of inner/LearnedSGD.mode: second-order MAML, or Reptile with
    their first-order gradient and rates_optimizer).
  rates_optimizer: Reptile with LearnedSGD only: the optimizer of the learned inner
    rates with its peak rate, on the outer schedule's warm-up and decay (gin:
    @rates/Adam(), rates/Adam.learning_rate = 1e-4). MAML updates them with
    outer_optimizer, as theta0; Reptile's outer step is not a gradient step.
  first_order: FOMAML: no gradient through the inner gradients.
  seed: seeds the field init, data order and per-step randomness.
  jit_compile: compile the outer step with XLA (faster on GPU, slower on CPU).
  log_every / summary_every / image_summary_every / checkpoint_every: in outer steps.
  max_checkpoints: checkpoints kept.
  val_every: every this many steps, adapt num_val_signals held-out signals with the
    inner loop; the best init by their metric is kept in train/best (0: at the end).
  collapse_margin_db: warn when the held-out metric falls this far below the best.
  stop_on_collapse: stop training at such a warning (the best init is kept).
  """
  task: object = None
  algorithm: str = "maml"
  num_iterations: int = _hp(1000, checks.positive_int, resumable=True)
  outer_batch_size: int = _hp(3, checks.positive_int)
  outer_optimizer: object = optimizers.Adam(1e-5)
  outer_warmup_steps: int = _hp(0, checks.non_negative_int)
  outer_lr_decay: str = "constant"
  outer_final_lr_fraction: float = _hp(0.0, checks.fraction)
  clip_global_norm: float = _hp(None, lambda n, v: checks.optional(checks.positive, n, v))
  inner_steps: int = _hp(2, checks.positive_int)
  inner_optimizer: object = optimizers.SGD(1e-2)
  rates_optimizer: object = None
  first_order: bool = False
  seed: int = _hp(0, checks.non_negative_int)
  jit_compile: bool = False
  log_every: int = _hp(50, checks.positive_int, resumable=True)
  summary_every: int = _hp(50, checks.positive_int, resumable=True)
  image_summary_every: int = _hp(500, checks.positive_int, resumable=True)
  checkpoint_every: int = _hp(500, checks.positive_int, resumable=True)
  max_checkpoints: int = _hp(3, checks.positive_int, resumable=True)
  val_every: int = _hp(50, checks.non_negative_int, resumable=True)
  num_val_signals: int = _hp(4, checks.positive_int)
  collapse_margin_db: float = _hp(3.0, checks.non_negative, resumable=True)
  stop_on_collapse: bool = _hp(False, resumable=True)

  def __post_init__(self):
    """Errors that name the gin binding to fix, before anything is written."""
    for f in dataclasses.fields(self):
      if f.metadata.get("check"):
        f.metadata["check"](f"meta_train.{f.name}", getattr(self, f.name))
    if self.task is None:
      raise ValueError("meta_train.task is not set: bind it in gin, e.g. "
                       "meta_train.task = @ImageRegression().")
    if self.algorithm not in outer.ALGORITHMS:
      raise ValueError(f"meta_train.algorithm must be one of {outer.ALGORITHMS}, got "
                       f"{self.algorithm!r}.")
    optimizers.check(self.inner_optimizer, "meta_train.inner_optimizer")
    if not hasattr(self.outer_optimizer, "keras_optimizer"):
      raise ValueError(f"meta_train.outer_optimizer is {self.outer_optimizer!r}: bind "
                       "@outer/Adam() or @outer/SGD() with its learning_rate.")
    learned = isinstance(self.inner_optimizer, learned_lr.LearnedSGD)
    if learned and self.algorithm == "maml" and self.first_order:
      raise ValueError("meta_train.inner_optimizer = LearnedSGD meta-learns its rates "
                       "through the inner loop: with algorithm 'maml' it needs "
                       "first_order = False (or use algorithm 'reptile').")
    reptile_rates = learned and self.algorithm == "reptile"
    if reptile_rates and self.rates_optimizer is None:
      raise ValueError("Reptile with meta_train.inner_optimizer = LearnedSGD needs the "
                       "rates' own optimizer: bind meta_train.rates_optimizer = "
                       "@rates/Adam() and rates/Adam.learning_rate (e.g. 1e-4).")
    if self.rates_optimizer is not None and not reptile_rates:
      raise ValueError("meta_train.rates_optimizer is only read with algorithm "
                       "'reptile' and inner_optimizer = @inner/LearnedSGD(); this run "
                       "would ignore it. Remove the binding.")
    if self.rates_optimizer is not None and not hasattr(self.rates_optimizer,
                                                        "keras_optimizer"):
      raise ValueError(f"meta_train.rates_optimizer is {self.rates_optimizer!r}: bind "
                       "@rates/Adam() or @rates/SGD() with its learning_rate.")

  @classmethod
  def resumable(cls):
    """Selectors a resumed run may change freely (provenance.check_resume)."""
    return frozenset(f"meta_train.{f.name}" for f in dataclasses.fields(cls)
                     if f.metadata.get("resumable"))

  def describe(self):
    """The hyperparameters as JSON values: for the run record and manifests."""
    out = {}
    for f in dataclasses.fields(self):
      value = getattr(self, f.name)
      out[f.name] = (value.describe() if hasattr(value, "describe") and f.name != "task"
                     else type(value).__name__ if f.name == "task" else value)
    return out

  def due(self, every, done):
    """Whether an event of period `every` (outer steps) happens after step `done`."""
    return bool(every and done % every == 0) or done == self.num_iterations


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


def meta_train(root_dir, config=None, strategy=None, accept_config_changes=False):
  """Trains `config` (default: TrainConfig() as gin binds it) in root_dir; returns the
  last outer step done."""
  return Trainer(root_dir, config or TrainConfig(), strategy,
                 accept_config_changes).run()


class Trainer:
  """Owns a run directory: its lock, record, checkpoints, summaries and the loop.

  strategy: the tf.distribute strategy the config's task (so its field's weights) was
  built under, entered by the caller (default: the current one); the outer batch is
  split over its replicas and the update is the one-device one.
  accept_config_changes: resume although the training bindings differ from the run's
  config.gin (the binary's --accept_config_changes).
  """

  def __init__(self, root_dir, config, strategy=None, accept_config_changes=False):
    if os.path.exists(root_dir) and not os.path.isdir(root_dir):
      raise ValueError(f"--root_dir={root_dir} is a file; give a directory (new, or a "
                       "run to resume).")
    current = tf.distribute.get_strategy()
    if strategy is not None and strategy is not current:
      raise ValueError(f"The config was built outside {type(strategy).__name__}'s scope: "
                       "build it (and so the task's field) inside `with "
                       "strategy.scope():`, as tf-metainit-train does.")
    self.root_dir, self.config = root_dir, config
    self.strategy, self.distributed = current, tf.distribute.has_strategy()
    self.accept_config_changes = accept_config_changes
    distribute.check_global_batch(config.outer_batch_size, current)

  def run(self):
    _refuse_unread_bindings()
    out_dir = distribute.write_root(self.root_dir, self.strategy)  # root_dir: chief
    try:
      # One trainer per root_dir (provenance.RunLock); nothing is written before this.
      with provenance.RunLock(out_dir):
        return self._run(out_dir)
    finally:
      distribute.release(out_dir, self.root_dir)

  def _run(self, out_dir):
    c, root = self.config, self.root_dir
    config_text = gin.config_str()
    changes = (provenance.check_resume(root, config_text, self.accept_config_changes,
                                       TrainConfig.resumable())
               if _has_checkpoints(root) else None)
    schedule, rates_schedule = (
        None if opt is None else
        outer.OuterSchedule(opt.learning_rate, c.num_iterations, c.outer_warmup_steps,
                            c.outer_lr_decay, c.outer_final_lr_fraction)
        for opt in (c.outer_optimizer, c.rates_optimizer))
    parts = outer.assemble(c.task, c.algorithm, c.inner_steps, c.inner_optimizer,
                           c.outer_optimizer, schedule, c.first_order, c.seed,
                           c.clip_global_norm, c.jit_compile or _on_tpu(self.strategy),
                           self.strategy if self.distributed else None,
                           c.rates_optimizer, rates_schedule)
    self.inner_opt = parts.inner_optimizer
    step_var = tf.Variable(0, dtype=tf.int64, name="step")
    meta_state = checkpoints.meta_state(c.task.field, self.inner_opt)
    state = dict(optimizer=parts.optimizer, step=step_var, **meta_state)
    if parts.rates_optimizer is not None:
      state["rates_optimizer"] = parts.rates_optimizer
    if not self.distributed:  # a distributed run derives its data position instead
      dataset = c.task.train_dataset(c.seed).batch(c.outer_batch_size,
                                                   drop_remainder=True)
      state["iterator"] = iterator = iter(dataset.prefetch(2))
    ckpt = checkpoints.Checkpointer(layout.checkpoints_dir(out_dir), c.max_checkpoints,
                                    restore_directory=layout.checkpoints_dir(root),
                                    **state)
    start = int(step_var.numpy())
    # Only now, with the checkpoint restored: a failed rerun leaves config.gin alone.
    if changes is None or changes:
      provenance.record_config(out_dir, config_text, start)
    best = checkpoints.BestCheckpoint(layout.best_dir(out_dir), meta_state,
                                      layout.best_dir(root))
    # The test-time settings are fixed for the run: read from gin once, not per save.
    test_time = testtime_settings(c.task, self.inner_opt, c.inner_steps)
    self._record = lambda: self.write_record(out_dir, best, *test_time)
    self._record()
    if ckpt.restored_from:
      logging.info("Resuming from step %d (%s)", start, ckpt.restored_from)
    if start >= c.num_iterations:
      logging.info("Already trained for %d >= %d iterations.", start, c.num_iterations)
      return start
    if self.distributed:
      iterator = distribute.distributed_dataset(
          self.strategy, lambda: c.task.train_dataset(c.seed), c.outer_batch_size, start)
    validation = monitor.Validation(c.task, c.inner_steps, self.inner_opt, c.seed,
                                    c.num_val_signals,
                                    monitor.CollapseMonitor(c.collapse_margin_db, best))
    writer = tf.summary.create_file_writer(layout.train_dir(out_dir))
    with writer.as_default(), distribute.watching_peers(self.strategy, root):
      done = self._loop(out_dir, start, iterator, parts.step, step_var, ckpt,
                        validation, lambda step: float(schedule(step)))
    writer.flush()
    return done

  def write_record(self, out_dir, best, optimizer, num_steps):
    """run.json: what the other jobs read (runs.py), with the best init so far (and
    learned rates described as they are now)."""
    c = self.config
    runs.write_record(out_dir, c.task, c.algorithm, c.inner_steps, self.inner_opt,
                      {"optimizer": optimizer.describe(), "num_steps": num_steps},
                      best=None if best.step is None else {"step": best.step,
                                                           "value": best.value},
                      training=c.describe())

  def _loop(self, out_dir, start, iterator, step_fn, step_var, ckpt, validation,
            learning_rate):
    """The outer steps from `start`; returns the last step done."""
    c = self.config
    last_good = ckpt.latest
    t0, steps_timed = time.time(), 0
    with _stop_requests() as requested, progress.Bar(
        c.num_iterations, "step", "Meta-training", start) as bar:
      bar.update(start)
      for step in range(start, c.num_iterations):
        before, after, grad_norm, finite = step_fn(next(iterator),
                                                   tf.constant(step, tf.int64))
        step_var.assign(step + 1)
        steps_timed += 1
        before, after = float(before), float(after)
        if not (math.isfinite(after) and math.isfinite(before) and bool(finite)):
          raise self._divergence(step, after, bool(finite), last_good)
        done = step + 1
        validation.monitor.record_inner(before, after)
        if done == start + 1:
          files.write_text(layout.operative_config_path(out_dir),
                           gin.operative_config_str())
        if c.due(c.summary_every, done):
          _training_summaries(done, before, after, float(grad_norm),
                              learning_rate(step), c.task.field, self.inner_opt)
        if c.due(c.log_every, done):
          _log(done, c.num_iterations, before, after, steps_timed / (time.time() - t0))
          t0, steps_timed = time.time(), 0
          validation.monitor.check_inner(done)
        collapsed = validation.run(done, c.due(c.val_every, done),
                                   c.due(c.image_summary_every, done))
        bar.update(done, **_bar_values(before, after, validation.latest))
        stop = collapsed and c.stop_on_collapse
        if c.due(c.checkpoint_every, done) or stop or requested:
          last_good = ckpt.save(done)
          self._record()
        if stop:
          logging.warning("Stopping at step %d (meta_train.stop_on_collapse = True).",
                          done)
          return done
        if requested:
          raise Interrupted(requested[0], done, last_good)
    return c.num_iterations

  def _divergence(self, step, loss, weights_finite, last_good):
    c = self.config
    what = (f"The loss became {loss}" if weights_finite else
            f"The weights became inf/NaN (loss {loss})")
    inner_rate = c.inner_optimizer.learning_rate
    if isinstance(c.inner_optimizer, learned_lr.LearnedSGD):
      inner_rate = f"{inner_rate}, where the learned rates start"
    return DivergenceError(
        f"{what} at outer step {step}: training diverged. Lower the learning rate of "
        f"meta_train.outer_optimizer (now {c.outer_optimizer.learning_rate}) or the "
        f"learning rate of meta_train.inner_optimizer (now {inner_rate}). The last good "
        f"checkpoint ({last_good or 'none yet'}) was kept; the diverged weights were not "
        "saved.")


def testtime_settings(task, inner_optimizer, inner_steps):
  """(optimizer, steps) with which the Meta init is fitted at test time: learned
  rates as trained; else the Meta optimizer and budget the run's config gives
  evaluate at the task's default setting (a Table 2/3 budget), else the inner loop's
  own optimizer and steps."""
  setting = task.default_setting
  bound = _bound("evaluate.optimizer_settings") or {}
  optimizer = inner_optimizer
  if not learned_lr.rates_of(inner_optimizer) and "meta" in bound:
    optimizer = testtime.per_setting(optimizers.check(bound["meta"],
                                                  "evaluate.optimizer_settings"),
                                 setting)
  steps = _bound("evaluate.num_steps")
  if isinstance(steps, dict):
    steps = testtime.per_setting(steps["meta"], setting) if "meta" in steps else None
  return optimizer, int(steps or inner_steps)


def _bound(selector):
  """A gin binding's value with its references built (a deep copy evaluates them, as
  gin itself does; fine for cheap objects such as optimizers), or None if unbound."""
  try:
    return copy.deepcopy(gin.query_parameter(selector))
  except ValueError:
    return None


def _on_tpu(strategy):
  return isinstance(strategy, tf.distribute.TPUStrategy)


def _refuse_unread_bindings():
  """The task, field and optimizers are built by now: whatever gin has not handed to
  them was bound for nothing."""
  unread = provenance.unread_bindings(gin.config_str(), gin.operative_config_str())
  # A shipped config's inner/SGD.learning_rate stays bound when a user switches the
  # inner optimizer to another, and gin cannot unbind it: a warning, not an error.
  spare_rates = [k for k in unread
                 if k.split("/")[-1].split(".")[0] in ("SGD", "Adam", "LearnedSGD")]
  for binding in spare_rates:
    logging.warning("%s is bound but this run uses another optimizer there.", binding)
  unread = [k for k in unread if k not in spare_rates]
  if unread:
    raise ValueError(f"This run never reads {', '.join(unread)}: they belong to another "
                     "task, dataset or field than the one configured. Remove them or "
                     "fix the name.")


def _has_checkpoints(root_dir):
  directory = layout.checkpoints_dir(root_dir)
  return os.path.isdir(directory) and any(
      name.startswith("ckpt-") for name in os.listdir(directory))


def _log(done, total, before, after, rate):
  tf.summary.scalar("outer/steps_per_sec", rate, step=done)
  logging.info("step %d/%d  inner-batch loss %.5f -> %.5f  (PSNR %.2f -> %.2f dB)"
               "  %.2f steps/s", done, total, before, after, _psnr(before),
               _psnr(after), rate)


def _bar_values(before, after, held_out):
  """The latest validation and what the step log line says, for the progress bar (a
  narrow terminal cuts its end)."""
  values = {f"held-out {name}": value for name, value in held_out.items()}
  values["inner-batch psnr"] = f"{_psnr(before):.2f} -> {_psnr(after):.2f}"
  return values


def _training_summaries(step, before, after, grad_norm, learning_rate, field, inner_opt):
  tf.summary.scalar("outer/loss_before_inner", before, step=step)
  tf.summary.scalar("outer/loss_after_inner", after, step=step)
  tf.summary.scalar("outer/psnr_before_inner", _psnr(before), step=step)
  tf.summary.scalar("outer/psnr_after_inner", _psnr(after), step=step)
  tf.summary.scalar("outer/grad_global_norm", grad_norm, step=step)
  tf.summary.scalar("outer/learning_rate", learning_rate, step=step)
  # Weight scales: a collapse shows first as hidden SIREN kernels growing
  # (docs/stability.md, "Why it collapsed").
  for v in field.trainable_variables:
    tf.summary.scalar(f"weights_rms/{v.name}",
                      float(tf.sqrt(tf.reduce_mean(tf.square(v)))), step=step)
  for v in learned_lr.rates_of(inner_opt):
    tf.summary.scalar(f"inner_lr/{v.name}", float(tf.reduce_mean(v)), step=step)


def _psnr(mse):
  return float(contract.psnr_from_mse(mse)) if mse > 0 else float("inf")
