"""Checkpoints that restore at construction and never leave a half-written one in use.

tf.train.CheckpointManager writes the data files first and the small `checkpoint` state
file last (atomically), so an interrupted save is never the "latest" one: the state
file is the sentinel that marks a checkpoint complete.
"""

import os

from absl import logging
import tensorflow as tf


class CheckpointError(RuntimeError):
  pass


def field_trackable(field):
  """The field's variables (incl. fixed ones such as a Fourier matrix) by name.

  Keras 3 does not expose a subclassed model's add_weight variables to
  tf.train.Checkpoint, so they are tracked explicitly.
  """
  return tf.train.Checkpoint(**{v.name: v for v in field.variables})


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


def latest_checkpoint(root_dir):
  """The newest complete meta-training checkpoint under root_dir, with a clear error."""
  directory = os.path.join(root_dir, "train", "checkpoints")
  path = tf.train.latest_checkpoint(directory)
  if path is None:
    raise CheckpointError(
        f"No meta-training checkpoint under {directory}. Run meta_train with "
        f"--root_dir={root_dir} first, or pass the root_dir of a finished run.")
  return path
