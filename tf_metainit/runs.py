"""A finished meta-training run as evaluate and export read it.

Below both, so that neither imports the other to load a run's meta init or to read a
value its config gives per setting.
"""

import tensorflow as tf

from tf_metainit import checkpoints
from tf_metainit.meta import learned_lr


def per_setting(value, setting):
  """A value that may be given per setting ({setting: value}, keys int or str)."""
  if isinstance(value, dict):
    return value[setting] if setting in value else value[str(setting)]
  return value


def load_meta_init(task, run_dir, checkpoint="best"):
  """(field weights, learned inner optimizer or None, checkpoint path) of a run.

  checkpoint: 'best' (by held-out validation during training) or 'latest'.
  """
  path = checkpoints.meta_checkpoint(run_dir, checkpoint)
  saved = task.field.params()
  checkpoints.restore(tf.train.Checkpoint(field=checkpoints.field_trackable(task.field)),
                      path, partial=True)
  meta = task.field.params()
  task.field.set_params(saved)
  rates = checkpoints.learned_rates(path)
  learned = (None if rates is None else
             learned_lr.from_arrays(rates, [p.shape for p in meta]))
  return meta, learned, path
