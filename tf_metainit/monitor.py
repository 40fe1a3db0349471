"""Watching meta-training from held-out signals: validation, the best init, collapse.

  Validation       held-out signals adapted from the current init with the training
                   inner loop; their metric feeds the monitor, their renders TensorBoard
  CollapseMonitor  keeps the best init (checkpoints.BestCheckpoint) and warns when the
                   held-out metric falls away from it or the inner loop stops learning
"""

from absl import logging
import tensorflow as tf

from tf_metainit.fields import functional
from tf_metainit.meta import inner
from tf_metainit.meta import outer
from tf_metainit.tasks import contract

VALIDATION_METRIC = "psnr"


class Validation:
  """Held-out signals adapted from the current init with the meta-training inner loop;
  their metric feeds the collapse monitor and the best checkpoint."""

  def __init__(self, task, inner_steps, inner_opt, seed, num_signals, monitor):
    self.task, self.inner_steps, self.monitor = task, inner_steps, monitor
    self.latest = {}  # the last held-out metrics, for the progress bar
    signals = task.validation_signals()
    available = len(next(iter(signals.values())))
    if available < num_signals:
      raise ValueError(
          f"meta_train.num_val_signals = {num_signals}, but the task's validation "
          f"split holds {available} signals: lower meta_train.num_val_signals or "
          f"raise the task's num_val (e.g. {type(task).__name__}.num_val = "
          f"{num_signals}).")
    self.signals = contract.take(signals, slice(0, num_signals))

    def adapted(signals):
      params = functional.batch_params(task.field.params(),
                                       contract.batch_size_of(signals))
      params = inner.fit(task, params, signals, inner_steps, inner_opt, seed,
                         task.default_setting).params
      return task.metrics(params, signals), task.render(params, signals)

    self._adapted = outer.function(adapted)

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
