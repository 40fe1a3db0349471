"""Checkpoints that restore at construction and never leave a half-written one in use.

tf.train.CheckpointManager writes the data files first and the small `checkpoint` state
file last (atomically), so an interrupted save is never the "latest" one: the state
file is the sentinel that marks a checkpoint complete.
"""

import contextlib
import glob
import json
import math
import os
import re
import shutil

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
  """tf.train.Checkpoint + CheckpointManager over `directory`, restored on creation.

  Restores the newest readable checkpoint: the state file's list, or every ckpt-N on
  disk when the state file is gone. An unreadable one is named in a warning, moved to
  <directory>/unreadable/ (never deleted, never overwritten by the re-save of its step)
  and the previous one is tried; none readable is an error. Only one trainer may use
  the directory (train.py holds the run lock), so leftovers of killed saves are ours
  to remove.
  """

  def __init__(self, directory, max_to_keep=3, restore_directory=None, **objects):
    """`restore_directory` (default `directory`): where a non-chief worker of a
    multi-worker run reads the chief's checkpoints while it saves to a temp folder."""
    self.directory = directory
    self._checkpoint = tf.train.Checkpoint(**objects)
    if restore_directory in (None, directory):
      _remove_leftovers(directory)
      self.restored_from = self._restore_newest_readable(directory)
    else:
      self.restored_from = restore(self._checkpoint,
                                   tf.train.latest_checkpoint(restore_directory), False)
    self._manager = tf.train.CheckpointManager(self._checkpoint, directory, max_to_keep)

  def _restore_newest_readable(self, directory):
    listed = _listed_checkpoints(directory)
    candidates = listed if listed is not None else _checkpoints_on_disk(directory)
    if listed is None and candidates:
      logging.warning("%s has checkpoints but no state file ('checkpoint'); recovering "
                      "from the newest readable of %s.", directory,
                      ", ".join(os.path.basename(c) for c in candidates))
    unreadable = []
    for path in candidates:
      try:
        restore(self._checkpoint, path, partial=False)
      except CheckpointError as e:
        logging.warning("%s", e)
        unreadable.append(path)
        continue
      if unreadable or listed is None:
        _quarantine(unreadable)
        # The state file again lists exactly the readable checkpoints, oldest first,
        # so rotation and the next resume see the same history.
        readable = [c for c in candidates if c not in unreadable]
        # Absolute: TF would put the folder in front of a relative path once more.
        tf.compat.v1.train.update_checkpoint_state(
            directory, os.path.abspath(path),
            all_model_checkpoint_paths=[os.path.abspath(c) for c in readable[::-1]])
      return path
    if unreadable:
      raise CheckpointError(
          f"No readable checkpoint in {directory}: "
          f"{', '.join(os.path.basename(c) for c in unreadable)} all fail to restore "
          "(see the warnings above). They are kept; move the folder away to start over.")
    return None

  def save(self, step):
    with _save_errors(self.directory, step):
      path = self._manager.save(checkpoint_number=step)
    logging.info("Saved checkpoint %s", path)
    return path

  @property
  def latest(self):
    return self._manager.latest_checkpoint


@contextlib.contextmanager
def _save_errors(directory, step):
  """A failed save (disk full, read-only folder) as one line saying what to do; the
  previous checkpoints are complete, since the state file is written last."""
  try:
    yield
  except (tf.errors.OpError, OSError) as e:
    known = re.search(r"No space left on device|Read-only file system|Permission denied"
                      r"|Disk quota exceeded", str(e))
    reason = known.group(0) if known else " ".join(str(e).split())[:200]
    raise CheckpointError(
        f"Could not save the step-{step} checkpoint in {directory}: {reason}. Free "
        "space or fix the folder, then rerun the same command: training resumes from "
        "the last complete checkpoint.") from e


def _number(path):
  tail = path.rsplit("-", 1)[-1]
  return int(tail) if tail.isdigit() else -1


def _listed_checkpoints(directory):
  """The state file's checkpoints, newest first; None if it has no state file."""
  state = tf.train.get_checkpoint_state(directory)
  if state is None:
    return None
  # TF has already put the folder in front of the paths the file stores.
  paths = list(state.all_model_checkpoint_paths) or [state.model_checkpoint_path]
  return sorted(set(paths), key=_number, reverse=True)


def _checkpoints_on_disk(directory):
  """ckpt-N prefixes with an index file, newest first."""
  pattern = os.path.join(glob.escape(directory), "ckpt-*.index")
  paths = [p[:-len(".index")] for p in glob.glob(pattern)]
  return sorted((p for p in paths if _number(p) >= 0), key=_number, reverse=True)


def _quarantine(paths):
  for path in paths:
    folder = os.path.join(os.path.dirname(path), "unreadable")
    os.makedirs(folder, exist_ok=True)
    for name in glob.glob(glob.escape(path) + ".*"):
      os.replace(name, os.path.join(folder, os.path.basename(name)))
    logging.warning("Moved the unreadable checkpoint %s to %s.", path, folder)


def _remove_leftovers(directory):
  """Temp files of saves that were killed: TF's ckpt-N_temp folders and the state
  file's checkpoint.tmp* copies."""
  for path in glob.glob(os.path.join(glob.escape(directory), "ckpt-*_temp")):
    shutil.rmtree(path, ignore_errors=True)
    logging.info("Removed %s, left by an interrupted save.", path)
  for path in glob.glob(os.path.join(glob.escape(directory), "checkpoint.tmp*")):
    os.remove(path)
    logging.info("Removed %s, left by an interrupted save.", path)


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
  except Exception as e:  # pylint: disable=broad-except
    # A truncated data file fails deep in the reader (even as an IndexError); the
    # user needs the file's name either way.
    detail = " ".join(str(e).split())[:300]
    raise CheckpointError(
        f"Could not restore checkpoint {path}: {type(e).__name__}: {detail}. It is "
        "corrupt or was written by a different configuration (field size, algorithm): "
        "use the gin config the run was started with, or start a fresh run elsewhere."
    ) from e
  logging.info("Restored %s", path)
  return path


class BestCheckpoint:
  """The init with the best held-out metric so far, in `directory` (layout.best_dir).

  `best.json` (step, value) is written after the checkpoint it describes, so a resumed
  run knows the value to beat.
  """

  def __init__(self, directory, state, read_from=None):
    """`read_from` (default `directory`): where a non-chief worker reads the chief's
    best value, so that every worker saves at the same steps (saves are collective)."""
    self.directory = directory
    _remove_leftovers(directory)
    self._manager = tf.train.CheckpointManager(tf.train.Checkpoint(**state),
                                               self.directory, max_to_keep=1)
    self.step, self.value = None, -math.inf
    record = os.path.join(read_from or self.directory, "best.json")
    if os.path.exists(record):
      with open(record) as f:
        saved = json.load(f)
      self.step, self.value = saved["step"], saved["value"]

  def update(self, step, value):
    """Saves the init if `value` beats the best; returns whether it did."""
    if not value > self.value:
      return False
    with _save_errors(self.directory, step):
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
