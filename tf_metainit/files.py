"""Every atomic write of the package: a reader (or a resumed run) never sees half a file.

A file (text, JSON, PNG) is written beside its target and renamed onto it; a directory
is built beside its target and swapped in (see `atomic_directory`).
"""

import contextlib
import glob
import json
import os
import shutil

from absl import logging


@contextlib.contextmanager
def _replacing(path, mode):
  """Yields a file whose contents replace `path` once the block ends without error.

  Goes through tf.io.gfile, so `path` may also be a remote (e.g. gs://) path.
  """
  # Imported here: the binaries import this module for --help, which must not load
  # TensorFlow.
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  parent = os.path.dirname(path)
  if parent:
    tf.io.gfile.makedirs(parent)
  # Per process, so two writers of one file (a dataset's splits) never share a temp.
  tmp = f"{path}.tmp-{os.getpid()}"
  try:
    with tf.io.gfile.GFile(tmp, mode) as f:
      yield f
  except BaseException:
    if tf.io.gfile.exists(tmp):
      tf.io.gfile.remove(tmp)
    raise
  tf.io.gfile.rename(tmp, path, overwrite=True)


def write_text(path, text):
  with _replacing(path, "w") as f:
    f.write(text)


def write_json(path, value):
  write_text(path, json.dumps(value, indent=1))


def save_image(image, path):
  """Saves a PIL image as PNG (the format is explicit: the temp name has no .png)."""
  with _replacing(path, "wb") as f:
    image.save(f, format="PNG")


def save_gif(frames, path, milliseconds=120):
  """Saves PIL images as a looping animated GIF."""
  with _replacing(path, "wb") as f:
    frames[0].save(f, format="GIF", save_all=True, append_images=frames[1:],
                   duration=milliseconds, loop=0)


def save_figure(figure, path):
  """Saves a matplotlib figure as PNG."""
  with _replacing(path, "wb") as f:
    figure.savefig(f, format="png")


# --- directories -----------------------------------------------------------------------


def target_dir_problem(path, owned, what):
  """Why a command may not write its outputs into `path`, or None: it is a file, or a
  folder holding anything but what `owned(path)` recognises as its own earlier output
  (`what` names it). New and empty folders are fine."""
  if os.path.exists(path) and not os.path.isdir(path):
    return "is a file; give a directory path (it is created)."
  if os.path.isdir(path) and os.listdir(path) and not owned(path):
    return f"holds files that are not {what}; give a new or empty directory."
  return None


def pid_alive(pid):
  """Whether process `pid` runs, so a temp named after it is not a dead writer's."""
  try:
    os.kill(pid, 0)  # signal 0 only probes for the process
  except ProcessLookupError:
    return False
  except PermissionError:
    return True  # someone else's live process
  return True


def _clean_stale(target):
  """Removes leftovers of killed writers; restores a moved-aside directory if needed."""
  for kind in ("old", "tmp"):  # restore before deleting anything
    for path in sorted(glob.glob(f"{glob.escape(target)}.{kind}-*")):
      suffix = path.rsplit("-", 1)[-1]
      if not suffix.isdigit() or pid_alive(int(suffix)):
        continue
      if kind == "old" and not os.path.exists(target):
        # Killed between its two renames: the moved-aside directory is the good one.
        os.rename(path, target)
        logging.warning("Restored %s from an interrupted write.", target)
      else:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def atomic_directory(target):
  """Yields a temporary directory that replaces `target` on success.

  Everything is written to <target>.tmp-<pid>, which then replaces <target> by two
  renames (the old directory is moved aside first and deleted once the new one is in
  place). A killed writer leaves the previous directory intact; its leftovers are
  cleaned (or a moved-aside directory restored) by the next write to the same path.
  Local filesystems only (os.rename).
  """
  target = os.path.abspath(target)
  os.makedirs(os.path.dirname(target), exist_ok=True)
  _clean_stale(target)
  pid = os.getpid()
  tmp, old = f"{target}.tmp-{pid}", f"{target}.old-{pid}"
  shutil.rmtree(tmp, ignore_errors=True)
  os.makedirs(tmp)
  try:
    yield tmp
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  _fsync_tree(tmp)
  # Directories can't be renamed over a non-empty one, hence the move aside.
  if os.path.exists(target):
    os.rename(target, old)
  os.rename(tmp, target)
  shutil.rmtree(old, ignore_errors=True)


def _fsync_tree(directory):
  """Flushes every file to disk, so a renamed directory is complete after a power cut."""
  for dirpath, _, filenames in os.walk(directory):
    for name in filenames:
      fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
      try:
        os.fsync(fd)
      finally:
        os.close(fd)
