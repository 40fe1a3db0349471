"""A meta-training run's record, and the Meta init in it, as every job reads them.

Training writes <root_dir>/run.json (layout.record_path) before its first step and
again at every checkpoint:

  task          the task's description (task.describe()): which signals
  splits        which data trained it, chose its checkpoint and settings
                (validation) and only scores it (test) (task.splits())
  field         the field's description (architecture, activation constants)
  algorithm, inner_steps
  inner_optimizer  the inner optimizer's own description; learned rates say their mode
  test_time     how the Meta init is fitted at test time: optimizer (the learned
                rates, else the Meta optimizer the run's config gives evaluate at the
                task's default setting, else the inner optimizer) and num_steps (the
                config's Meta budget there, else the inner steps)
  best          step and held-out value of the best checkpoint so far

`load_init` is the one function evaluate, export, fit, interpolate and appearance use
to get a run's init and its test-time settings.
"""

import json
import os

import gin
import tensorflow as tf

from tf_metainit import checkpoints
from tf_metainit import files
from tf_metainit import layout
from tf_metainit import testtime
from tf_metainit.meta import learned_lr
from tf_metainit.meta import optimizers

FORMAT = "tf_metainit.run/1"


class RunRecordError(ValueError):
  pass


def write_record(root_dir, task, algorithm, inner_steps, inner_optimizer, test_time,
                 best=None, training=None):
  """Writes run.json (atomically). inner_optimizer: the built one; test_time:
  {'optimizer': its describe(), 'num_steps': int}; training: every hyperparameter
  (train.TrainConfig.describe())."""
  files.write_json(layout.record_path(root_dir), {
      "format": FORMAT, "task": task.describe(), "splits": task.splits(),
      "field": task.field.describe(),
      "algorithm": algorithm, "inner_steps": inner_steps,
      "inner_optimizer": inner_optimizer.describe(), "test_time": test_time,
      "best": best, "training": training or {}})


def read_record(root_dir):
  """The run record, or an error that says how to make it."""
  path = layout.record_path(root_dir)
  try:
    with open(path) as f:
      record = json.load(f)
  except FileNotFoundError:
    raise RunRecordError(
        f"{root_dir} has no run record ({os.path.basename(path)}): it was trained "
        "before runs recorded their test-time settings, or is no run directory. "
        "Rebuild it by rerunning the tf-metainit-train command that made it (a "
        "finished run only writes the record and stops).") from None
  except ValueError as e:
    raise RunRecordError(f"{path} is not valid JSON ({e}); rerun the run's "
                         "tf-metainit-train command to rewrite it.") from e
  if record.get("format") != FORMAT:
    raise RunRecordError(f"{path} is of format {record.get('format')!r}, not {FORMAT}; "
                         "rerun the run's tf-metainit-train command to rewrite it.")
  return record


def test_time_optimizer(description, rates=None):
  """The optimizer a record's or manifest's test_time describes; learned rates come
  from the checkpoint or weights file (`rates`)."""
  if description.get("name") == learned_lr.LearnedSGD.name:
    if rates is None:
      raise RunRecordError("The test-time optimizer is learned SGD, but no learned "
                           "rates were saved beside the weights.")
    return learned_lr.from_arrays(description, rates)
  return optimizers.from_description(description)


@gin.configurable(denylist=["root_dir", "checkpoint"])
def init_from_run(root_dir, checkpoint="best", task=gin.REQUIRED):
  """load_init with the run's own task, which gin builds from its config.gin
  (common.parse_run_config binds init_from_run.task)."""
  if task is gin.REQUIRED:
    raise ValueError("init_from_run.task is not set: parse the run's config.gin first "
                     "(tf-metainit-fit does).")
  return load_init(task, root_dir, checkpoint)


def load_init(task, root_dir, checkpoint="best"):
  """The Meta init of the run in root_dir (testtime.Init), rebuilt in `task`'s field.

  checkpoint: 'best' (by held-out validation during training) or 'latest'.
  """
  record = read_record(root_dir)
  path = checkpoints.meta_checkpoint(root_dir, checkpoint)
  saved = task.field.params()
  checkpoints.restore(tf.train.Checkpoint(field=checkpoints.field_trackable(task.field)),
                      path, partial=True)
  params = task.field.params()
  task.field.set_params(saved)
  test_time = record["test_time"]
  optimizer = test_time_optimizer(test_time["optimizer"],
                                  checkpoints.learned_rates(path))
  return testtime.Init(task.field, params, optimizer, test_time.get("num_steps"), path,
                       record["task"])
