"""Every atomic write of the package: a reader (or a resumed run) never sees half a file.

A file (text, JSON, PNG) is written beside its target and renamed onto it; a directory
is built beside its target and swapped in (see `atomic_directory`). Temps get new names,
so no one's file is mistaken for one, and a killed writer's leftovers are told apart by
the marker it wrote inside them.
"""

import contextlib
import glob
import json
import os
import secrets
import shutil
import socket

from absl import logging


def _unused(prefix, exists=os.path.lexists):
  """A path `prefix` + random letters that nothing holds yet."""
  while True:
    path = prefix + secrets.token_hex(4)
    if not exists(path):
      return path


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
  # A new name per write: two writers of one file (a dataset's splits) never share a
  # temp, and a user's file of that name is never written over or removed.
  tmp = _unused(f"{path}.tmp-{os.getpid()}-", tf.io.gfile.exists)
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


def write_bytes(path, data):
  with _replacing(path, "wb") as f:
    f.write(data)


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

# Inside a directory being written (and, for a moment after its swap, the new
# directory): JSON naming the writer and its target, so a leftover is told from a
# user's folder by what the package wrote into it, never by its name.
MARKER = ".tf_metainit_writing"


class TargetError(ValueError):
  """A path that names no output directory (`problem` is the phrase after the path)."""

  def __init__(self, path, problem):
    super().__init__(f"{path!r} {problem}")
    self.problem = problem


def resolve_target(path):
  """The absolute path at which an output directory `path` is checked and swapped in.

  A leading '~' is expanded (os.path.expanduser): a shell leaves it alone in
  --flag=~/out. Symlinks are resolved (os.path.realpath), so the swap replaces what a
  link points at and keeps the link; a dangling link resolves to the path it names,
  which is created there, as the link's owner said the output goes there. Raises
  TargetError for an empty path (it would be the working folder) or a symlink loop.
  """
  if not path:
    raise TargetError(path, "is empty; give a directory path (it is created).")
  target = os.path.realpath(os.path.expanduser(path))
  if os.path.islink(target):  # realpath stops at a loop, on a link
    raise TargetError(path, "is a symlink loop; give a directory path.")
  return target


def target_dir_problem(path, owned, what):
  """Why a command may not write its outputs into `path`, or None: no usable path
  (resolve_target), a file, or a folder holding anything but what `owned(folder)`
  recognises as its own earlier output (`what` names it). New and empty folders are
  fine."""
  try:
    path = resolve_target(path)
  except TargetError as e:
    return e.problem
  if os.path.exists(path) and not os.path.isdir(path):
    return "is a file; give a directory path (it is created)."
  if os.path.isdir(path) and os.listdir(path) and not owned(path):
    return f"holds files that are not {what}; give a new or empty directory."
  return None


def holds_record(folder, name, keys):
  """Whether `folder`/`name` is a JSON object with every one of `keys`: the record a
  command of this package writes last, which marks the folder as its output."""
  try:
    with open(os.path.join(folder, name)) as f:
      record = json.load(f)
  except (OSError, ValueError):
    return False
  return isinstance(record, dict) and all(k in record for k in keys)


def pid_alive(pid):
  """Whether process `pid` runs, so what it is writing is not taken for a leftover."""
  try:
    os.kill(pid, 0)  # signal 0 only probes for the process
  except ProcessLookupError:
    return False
  except PermissionError:
    return True  # someone else's live process
  return True


def _writer(target):
  return {"pid": os.getpid(), "host": socket.gethostname(), "target": target}


def _write_marker(directory, writer):
  """Replaces the marker in one rename, so it is never seen half written."""
  path = os.path.join(directory, MARKER)
  with open(path + ".new", "w") as f:
    json.dump(writer, f)
    f.flush()
    os.fsync(f.fileno())
  os.replace(path + ".new", path)


def _dead_writer(path, target):
  """The marker in directory `path` if a writer of `target` on this host left it and
  is gone, else None (no marker, another target or host, or a live writer)."""
  if os.path.islink(path) or not os.path.isdir(path):
    return None
  try:
    with open(os.path.join(path, MARKER)) as f:
      writer = json.load(f)
  except (OSError, ValueError):
    return None
  if not (isinstance(writer, dict) and writer.get("target") == target
          and writer.get("host") == socket.gethostname()):
    return None
  pid, aside = writer.get("pid"), writer.get("aside")
  if type(pid) is not int or pid_alive(pid):  # pylint: disable=unidiomatic-typecheck
    return None
  if aside is not None and not _names_an_aside(aside, target):
    return None
  return writer


def _names_an_aside(path, target):
  """Whether `path` is a name _swap gives the old `target`: whatever a marker says,
  nothing else is ever restored or removed."""
  prefix = os.path.basename(target) + ".old-"
  return (isinstance(path, str) and os.path.dirname(path) == os.path.dirname(target)
          and os.path.basename(path).startswith(prefix))


def _clean_stale(target):
  """Finishes what killed writers of `target` left: a directory moved aside is put
  back if the new one never came, and their temps, moved-aside directories and a
  marker left in the new one are removed. Nothing without their marker is touched."""
  temps = glob.glob(glob.escape(target) + ".tmp-*")
  for path in [target] + sorted(temps):
    writer = _dead_writer(path, target)
    if writer is None:
      continue
    aside = writer.get("aside")
    if aside and not os.path.lexists(target) and os.path.isdir(aside):
      # Killed between its two renames: the moved-aside directory is the good one.
      os.rename(aside, target)
      logging.warning("Restored %s from an interrupted write.", target)
    if aside:
      shutil.rmtree(aside, ignore_errors=True)
    if path == target:  # killed just after its swap
      os.remove(os.path.join(target, MARKER))
    else:
      shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def atomic_directory(target, replaces=None):
  """Yields a temporary directory that replaces `target` on success.

  `target` goes through resolve_target (a symlink is kept and points at the new
  directory). Everything is written to a new <target>.tmp-<pid>-<random> holding a
  marker (MARKER: pid, host, target), which then replaces <target> by two renames:
  the old directory is moved aside to <target>.old-<pid>-<random> (named in the
  marker first), the new one moved in, the old one deleted, the marker removed. A
  killed writer or a failed block (a full disk) leaves the previous directory intact;
  a killed writer's leftovers are recognised by their marker and cleaned (or a
  moved-aside directory restored) by the next write to the same path.

  replaces: for a folder several commands write into, `replaces(name)` tells which
    entries of the old directory the new one replaces; the others are carried into
    it as hard links. Default: all of them.
  Local filesystems only (os.rename).
  """
  target = resolve_target(target)
  parent = os.path.dirname(target)
  os.makedirs(parent, exist_ok=True)
  _clean_stale(target)
  tmp = _new_directory(f"{target}.tmp-{os.getpid()}-")
  writer = _writer(target)
  try:
    _write_marker(tmp, writer)
    yield tmp
    if replaces is not None:
      _carry_over(target, tmp, replaces)
    _fsync_tree(tmp)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  _swap(tmp, target, writer)


def _new_directory(prefix):
  """Makes a directory `prefix` + random letters that did not exist, so nobody's folder
  is taken for a temp (unlike tempfile.mkdtemp, with the umask's permissions)."""
  while True:
    path = prefix + secrets.token_hex(4)
    try:
      os.mkdir(path)
      return path
    except FileExistsError:
      continue


def _swap(tmp, target, writer):
  """Moves `tmp` in at `target`; a directory can't be renamed over a non-empty one,
  hence the old one is moved aside first."""
  aside = None
  if os.path.lexists(target):
    aside = _unused(f"{target}.old-{os.getpid()}-")
    _write_marker(tmp, dict(writer, aside=aside))  # before the move it vouches for
    os.rename(target, aside)
  os.rename(tmp, target)
  if aside:
    shutil.rmtree(aside, ignore_errors=True)
  os.remove(os.path.join(target, MARKER))


def _carry_over(target, tmp, replaces):
  """Hard-links the entries of `target` that `tmp` does not replace into `tmp`."""
  if not os.path.isdir(target):
    return
  for name in os.listdir(target):
    source, copy = os.path.join(target, name), os.path.join(tmp, name)
    if name == MARKER or replaces(name) or os.path.lexists(copy):
      continue
    if os.path.isdir(source) and not os.path.islink(source):
      shutil.copytree(source, copy, symlinks=True, copy_function=_link)
    else:
      _link(source, copy)


def _link(source, copy):
  try:
    os.link(source, copy, follow_symlinks=False)
  except OSError:  # a filesystem without hard links
    shutil.copy2(source, copy, follow_symlinks=False)


def _fsync_tree(directory):
  """Flushes every file to disk, so a renamed directory is complete after a power cut."""
  for dirpath, _, filenames in os.walk(directory):
    for name in filenames:
      path = os.path.join(dirpath, name)
      if os.path.islink(path):  # its target is not this directory's to flush
        continue
      fd = os.open(path, os.O_RDONLY)
      try:
        os.fsync(fd)
      finally:
        os.close(fd)
