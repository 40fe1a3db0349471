"""The gin-configurable meta-training loop (MAML or Reptile) for any task.

Layout under root_dir:
  config.gin                   every binding the run was started with (evaluate reads it)
  operative_config.gin         the values that were actually used
  train/checkpoints/           field + outer optimizer + data iterator + step
  train/events.*               TensorBoard scalars and images
Rerunning on the same root_dir resumes from the latest checkpoint.
"""

import math
import os
import time

from absl import logging
import gin
import keras
import tensorflow as tf

from tf_metainit import checkpoints
from tf_metainit import files
from tf_metainit.fields import base as fields_base
from tf_metainit.meta import inner
from tf_metainit.meta import maml
from tf_metainit.meta import optimizers
from tf_metainit.meta import reptile
from tf_metainit.tasks import base as tasks_base

ALGORITHMS = ("maml", "reptile")


class DivergenceError(RuntimeError):
  pass


def function(fn, jit_compile=False):
  """tf.function with XLA as a switch: on CPU plain graphs are ~2x faster here."""
  return tf.function(fn, jit_compile=jit_compile, reduce_retracing=True)


def outer_optimizer(learning_rate):
  # The reference's optax.adam defaults: b1 0.9, b2 0.999, eps 1e-8 (Keras' is 1e-7).
  return keras.optimizers.Adam(learning_rate, beta_1=0.9, beta_2=0.999, epsilon=1e-8)


@gin.configurable(denylist=["root_dir"])
def meta_train(root_dir, task=gin.REQUIRED, algorithm="maml", num_iterations=1000,
               outer_batch_size=3, outer_learning_rate=1e-5, inner_steps=2,
               inner_optimizer="sgd", inner_learning_rate=1e-2, first_order=False,
               seed=0, jit_compile=False, log_every=50, summary_every=50,
               image_summary_every=500, checkpoint_every=500, max_checkpoints=3,
               val_every=0, num_val_signals=4):
  """Meta-learns an initialization of `task.field`; returns the final outer step.

  Args:
    root_dir: where checkpoints, summaries and configs go; reused to resume.
    task: a tasks.base.Task (gin: @ImageRegression() etc.).
    algorithm: 'maml' (second-order unless first_order) or 'reptile'.
    num_iterations: total outer steps (150K images / 100K CT and ShapeNet in the paper).
    outer_batch_size: signals per outer step.
    outer_learning_rate: Adam learning rate of the outer loop.
    inner_steps: inner-loop steps K.
    inner_optimizer: 'sgd' (the paper) or 'adam'.
    inner_learning_rate: inner-loop learning rate.
    first_order: FOMAML: no gradient through the inner gradients.
    seed: seeds the field init, data order and per-step randomness.
    jit_compile: compile the outer step with XLA (faster on GPU, slower on CPU).
    log_every / summary_every / image_summary_every / checkpoint_every: in outer steps.
    max_checkpoints: checkpoints kept.
    val_every: every this many steps, adapt num_val_signals held-out signals with the
      inner loop and log their metrics (0 = only at the end).
  """
  if algorithm not in ALGORITHMS:
    raise ValueError(f"meta_train.algorithm must be one of {ALGORITHMS}, got {algorithm!r}.")
  if task is gin.REQUIRED or task is None:
    raise ValueError("meta_train.task is not set: bind it in gin, e.g. "
                     "meta_train.task = @ImageRegression().")
  tf.io.gfile.makedirs(root_dir)
  files.write_text(os.path.join(root_dir, "config.gin"), gin.config_str())
  field = task.field
  inner_opt = optimizers.make(inner_optimizer, inner_learning_rate)
  optimizer = outer_optimizer(outer_learning_rate)
  optimizer.build(field.trainable_variables)
  step_var = tf.Variable(0, dtype=tf.int64, name="step")
  dataset = task.train_dataset(seed).batch(outer_batch_size, drop_remainder=True)
  iterator = iter(dataset.prefetch(2))
  ckpt = checkpoints.Checkpointer(
      os.path.join(root_dir, "train", "checkpoints"), max_checkpoints,
      field=checkpoints.field_trackable(field), optimizer=optimizer, step=step_var,
      iterator=iterator)
  start = int(step_var.numpy())
  if ckpt.restored_from:
    logging.info("Resuming from step %d (%s)", start, ckpt.restored_from)
  if start >= num_iterations:
    logging.info("Already trained for %d >= %d iterations.", start, num_iterations)
    return start

  def train_step(signals, step):
    step_seed = tasks_base.stateless_seed(seed, step)
    if algorithm == "maml":
      before, after = maml.step(field, task, optimizer, signals, step_seed, inner_steps,
                                inner_opt, first_order)
    else:
      before, after = reptile.step(field, task, optimizer, signals, step_seed,
                                   inner_steps, inner_opt)
    # The losses are those of the weights before this update; the update itself can
    # still produce inf/NaN weights, which must not be checkpointed either.
    finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(v))
                            for v in field.trainable_variables])
    return tf.reduce_mean(before), tf.reduce_mean(after), finite

  train_step = function(train_step, jit_compile)
  val_signals = tasks_base.take(task.test_signals(), slice(0, num_val_signals))
  validate = function(lambda s: _adapted_metrics(task, s, seed, inner_steps, inner_opt))
  writer = tf.summary.create_file_writer(os.path.join(root_dir, "train"))
  last_good = ckpt.latest
  t0, steps_timed = time.time(), 0
  with writer.as_default():
    for step in range(start, num_iterations):
      signals = next(iterator)
      before, after, finite = train_step(signals, tf.constant(step, tf.int64))
      step_var.assign(step + 1)
      steps_timed += 1
      before, after = float(before), float(after)
      if not (math.isfinite(after) and math.isfinite(before) and bool(finite)):
        what = (f"The loss became {after}" if bool(finite) else
                f"The weights became inf/NaN (loss {after})")
        raise DivergenceError(
            f"{what} at outer step {step}: training diverged. Lower "
            f"meta_train.outer_learning_rate (now {outer_learning_rate}) or "
            f"meta_train.inner_learning_rate (now {inner_learning_rate}). The last good "
            f"checkpoint ({last_good or 'none yet'}) was kept; the diverged weights "
            "were not saved.")
      done = step + 1
      if done == start + 1:
        files.write_text(os.path.join(root_dir, "operative_config.gin"),
                         gin.operative_config_str())
      if done % summary_every == 0 or done == num_iterations:
        tf.summary.scalar("outer/loss_before_inner", before, step=done)
        tf.summary.scalar("outer/loss_after_inner", after, step=done)
        tf.summary.scalar("outer/psnr_before_inner", _psnr(before), step=done)
        tf.summary.scalar("outer/psnr_after_inner", _psnr(after), step=done)
      if done % log_every == 0 or done == num_iterations:
        rate = steps_timed / (time.time() - t0)
        tf.summary.scalar("outer/steps_per_sec", rate, step=done)
        logging.info("step %d/%d  inner-batch loss %.5f -> %.5f  (PSNR %.2f -> %.2f dB)"
                     "  %.2f steps/s", done, num_iterations, before, after,
                     _psnr(before), _psnr(after), rate)
        t0, steps_timed = time.time(), 0
      want_val = (val_every and done % val_every == 0) or done == num_iterations
      want_images = done % image_summary_every == 0 or done == num_iterations
      if want_val or want_images:  # one adaptation serves both
        metrics, renders = validate(val_signals)
      if want_val:
        for name, values in metrics.items():
          tf.summary.scalar(f"val/{name}_after_{inner_steps}_steps",
                            float(tf.reduce_mean(values)), step=done)
        logging.info("step %d  held-out %s after %d inner steps: %s", done,
                     "/".join(metrics), inner_steps,
                     " ".join(f"{float(tf.reduce_mean(v)):.2f}" for v in metrics.values()))
      if want_images:
        tf.summary.image("val/adapted", tf.clip_by_value(renders, 0, 1), step=done,
                         max_outputs=4)
        tf.summary.image("val/target", task.targets_for_display(val_signals), step=done,
                         max_outputs=4)
      if done % checkpoint_every == 0 or done == num_iterations:
        last_good = ckpt.save(done)
  writer.flush()
  return num_iterations


def _psnr(mse):
  return float(tasks_base.psnr_from_mse(mse)) if mse > 0 else float("inf")


def _adapted_metrics(task, signals, seed, inner_steps, inner_opt):
  """Held-out signals adapted from the current init with the meta-training inner loop."""
  field = task.field
  batch = tasks_base.batch_size_of(signals)
  params = fields_base.batch_params(field.params(), batch)
  obs = task.observe(signals, tasks_base.stateless_seed(seed, -1), task.default_setting)
  adapted, _ = inner.adapt(task.loss, params, lambda i: task.inner_batch(obs, i, seed),
                           inner_steps, inner_opt)
  return task.metrics(adapted, signals), task.render(adapted, signals)
