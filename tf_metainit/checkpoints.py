"""Checkpoints that restore at construction and never leave a half-written one in use.

tf.train.CheckpointManager writes the data files first and the small `checkpoint` state
file last (atomically), so an interrupted save is never the "latest" one: the state
file is the sentinel that marks a checkpoint complete.
"""

import json
import math
import os

from absl import logging
import tensorflow as tf

from tf_metainit import files
from tf_metainit import layout
from tf_metainit.meta import learned_lr

CHECKPOINTS = ("best", "latest")


class CheckpointError(RuntimeError):
  pass


def field_trackable(field):
  """The field's variables (incl. fixed ones such as a Fourier matrix) by name.

  Keras 3 does not expose a subclassed model's add_weight variables to
  tf.train.Checkpoint, so they are tracked explicitly.
  """
  return tf.train.Checkpoint(**{v.name: v for v in field.variables})


def meta_state(field, inner_optimizer=None):
  """What a meta-learned init is: the field's weights, plus learned inner rates."""
  state = {"field": field_trackable(field)}
  rates = learned_lr.rates_of(inner_optimizer)
  if rates:
    state["inner_lr"] = tf.train.Checkpoint(**{f"rate_{i}": r for i, r in enumerate(rates)})
  return state


class Checkpointer:
  """tf.train.Checkpoint + CheckpointManager over `directory`, restored on creation."""

  def __init__(self, directory, max_to_keep=3, **objects):
    self.directory = directory
    self._checkpoint = tf.train.Checkpoint(**objects)
    self._manager = tf.train.CheckpointManager(self._checkpoint, directory, max_to_keep)
    self.restored_from = restore(self._checkpoint, self._manager.latest_checkpoint,
                                 partial=False)

  def save(self, step):
    path = self._manager.save(checkpoint_number=step)
    logging.info("Saved checkpoint %s", path)
    return path

  @property
  def latest(self):
    return self._manager.latest_checkpoint


def restore(checkpoint, path, partial):
  """Restores `path` into `checkpoint` with an error that names the fix."""
  if not path:
    return None
  try:
    status = checkpoint.restore(path)
    if partial:
      status.expect_partial()
    else:
      status.assert_existing_objects_matched()
  except (tf.errors.OpError, ValueError, AssertionError) as e:
    raise CheckpointError(
        f"Could not restore checkpoint {path}: {type(e).__name__}: {str(e)[:500]}\n"
        "It is corrupt or was written by a different configuration (field size, "
        "algorithm). Use the gin config the run was started with, or start a fresh run "
        f"by pointing --root_dir elsewhere (or moving {os.path.dirname(path)} away)."
    ) from e
  logging.info("Restored %s", path)
  return path


class BestCheckpoint:
  """The init with the best held-out metric so far, in `directory` (layout.best_dir).

  `best.json` (step, value) is written after the checkpoint it describes, so a resumed
  run knows the value to beat.
  """

  def __init__(self, directory, state):
    self.directory = directory
    self._manager = tf.train.CheckpointManager(tf.train.Checkpoint(**state),
                                               self.directory, max_to_keep=1)
    self.step, self.value = None, -math.inf
    record = os.path.join(self.directory, "best.json")
    if os.path.exists(record):
      with open(record) as f:
        saved = json.load(f)
      self.step, self.value = saved["step"], saved["value"]

  def update(self, step, value):
    """Saves the init if `value` beats the best; returns whether it did."""
    if not value > self.value:
      return False
    path = self._manager.save(checkpoint_number=step)
    self.step, self.value = step, float(value)
    files.write_json(os.path.join(self.directory, "best.json"), {
        "step": step, "value": self.value, "checkpoint": os.path.basename(path)})
    logging.info("New best held-out value %.3f at step %d: %s", value, step, path)
    return True

  def describe(self):
    if self.step is None:
      return "No best init has been saved yet."
    return (f"The best init (held-out value {self.value:.2f} at step {self.step}) is "
            f"kept in {self.directory}.")


def meta_checkpoint(root_dir, which="best"):
  """The checkpoint holding a run's meta-learned init: 'best' (held-out validation,
  falling back to the latest for runs without one) or 'latest'."""
  if which not in CHECKPOINTS:
    raise ValueError(f"checkpoint must be one of {CHECKPOINTS}, got {which!r}.")
  if which == "best":
    path = tf.train.latest_checkpoint(layout.best_dir(root_dir))
    if path is not None:
      logging.info("Using the best checkpoint by held-out validation: %s "
                   "(--checkpoint=latest for the last one).", path)
      return path
    logging.warning("%s has no best checkpoint (trained without validation or before "
                    "it existed); using the latest.", root_dir)
  return latest_checkpoint(root_dir)


def learned_rates(path):
  """The meta-learned inner rates saved in checkpoint `path` (list of arrays), or None."""
  reader = tf.train.load_checkpoint(path)
  keys = {k.split("/")[1]: k for k in reader.get_variable_to_shape_map()
          if k.startswith("inner_lr/rate_")}
  if not keys:
    return None
  return [reader.get_tensor(keys[f"rate_{i}"]) for i in range(len(keys))]


def latest_checkpoint(root_dir):
  """The newest complete meta-training checkpoint under root_dir, with a clear error."""
  directory = layout.checkpoints_dir(root_dir)
  path = tf.train.latest_checkpoint(directory)
  if path is None:
    raise CheckpointError(
        f"No meta-training checkpoint under {directory}. Run meta_train with "
        f"--root_dir={root_dir} first, or pass the root_dir of a finished run.")
  return path
