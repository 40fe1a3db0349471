"""What makes a run directory trustworthy: one trainer at a time, and a resume that
trains what config.gin says.

  RunLock           <root_dir>/train.lock holds the trainer's PID and host; a lock
                    whose process is gone is taken over with a warning
  check_resume      a rerun's gin config against the stored one: anything but the
                    resumable bindings (train.TrainConfig.resumable) is refused,
                    listing the differences, unless accepted
  unread_bindings   bindings the chosen configuration never reads
  record_config     config.gin plus config_history/step-<N>.gin, the config in force
                    from step N on
"""

import json
import os
import socket
import time

from absl import logging

from tf_metainit import files
from tf_metainit import layout

# Configurables (and gin scopes) of other commands: a training config may carry them,
# training never reads them.
OTHER_COMMANDS = ("evaluate", "export", "interpolate", "appearance")
ACCEPT_FLAG = "--accept_config_changes"


class RunDirectoryError(ValueError):
  pass


class RunLock:
  """Context manager: holds <root_dir>/train.lock while a trainer runs."""

  def __init__(self, root_dir):
    self.path = layout.lock_path(root_dir)
    self.owner = {"pid": os.getpid(), "host": socket.gethostname()}

  def __enter__(self):
    os.makedirs(os.path.dirname(self.path), exist_ok=True)
    for _ in range(2):
      try:
        fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
      except FileExistsError:
        self._take_over_if_stale()
        continue
      with os.fdopen(fd, "w") as f:
        json.dump(dict(self.owner, started=time.strftime("%Y-%m-%dT%H:%M:%S")), f)
      return self
    raise RunDirectoryError(f"Could not take {self.path}: another trainer took it "
                            "at the same moment.")

  def _take_over_if_stale(self):
    holder = _read_lock(self.path)
    if holder is not None:
      same_host = holder.get("host") == self.owner["host"]
      if not same_host or files.pid_alive(int(holder.get("pid", -1))):
        raise RunDirectoryError(
            f"{os.path.dirname(self.path)} is in use by another trainer (pid "
            f"{holder.get('pid')} on {holder.get('host')}, since "
            f"{holder.get('started')}). Wait for it to finish, or delete {self.path} if "
            "that process is gone.")
      logging.warning("Taking over %s: its trainer (pid %s) is gone.", self.path,
                      holder.get("pid"))
    else:
      logging.warning("Taking over %s: unreadable, left by a trainer killed as it "
                      "started.", self.path)
    try:
      os.remove(self.path)
    except FileNotFoundError:
      pass

  def __exit__(self, *exc):
    holder = _read_lock(self.path)
    if holder is not None and holder.get("pid") == self.owner["pid"]:
      os.remove(self.path)


def _read_lock(path):
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def bindings(config_text):
  """{selector: value text} of a gin.config_str() text (values may span lines)."""
  out, key = {}, None
  for line in config_text.splitlines():
    if not line.strip() or line.lstrip().startswith("#"):
      continue
    if not line[0].isspace() and " = " in line:
      key, value = line.split(" = ", 1)
      out[key.strip()] = value.strip()
    elif key is not None:
      out[key] += " " + line.strip()
  return out


def unread_bindings(config_text, operative_text):
  """Bindings of a training config that training never read (a CT option on an image
  run, a misspelt scope): gin's config minus its operative config, except for the
  other commands' configurables."""
  read = set(bindings(operative_text))
  # gin's operative config names a binding by the scope it was read in: an unscoped
  # distribute.startup_timeout read inside train/ shows as train/distribute...
  read_unscoped = {k.rsplit("/", 1)[-1] for k in read}
  unread = {k for k in bindings(config_text) if k not in read
            and ("/" in k or k not in read_unscoped)}
  return sorted(k for k in unread if not _other_command(k) and "." in k)


def _other_command(selector):
  """evaluate.num_steps, or a binding scoped to another command (evaluate/...)."""
  *scopes, name = selector.split("/")
  return any(part in OTHER_COMMANDS for part in scopes + [name.split(".")[0]])


def _macros_resolved(found):
  """Bindings with each `%MACRO` value replaced by the macro's value, macros dropped:
  a changed macro is the change of the bindings that use it (BASIC_ITERATIONS is
  meta_train.num_iterations), and an unused one changes nothing."""
  macros = {k: v for k, v in found.items() if "." not in k}
  return {k: macros.get(v[1:], v) if v.startswith("%") else v
          for k, v in found.items() if "." in k}


def config_changes(stored_text, new_text, resumable=None):
  """['selector: stored -> new', ...] for the bindings that differ (with
  `resumable`, a set of selectors, not those nor the other commands')."""
  stored = _macros_resolved(bindings(stored_text))
  new = _macros_resolved(bindings(new_text))
  changes = []
  for key in sorted(set(stored) | set(new)):
    free = resumable is not None and (key in resumable or _other_command(key))
    if stored.get(key) != new.get(key) and not free:
      changes.append(f"{key}: {stored.get(key, '(unset)')} -> {new.get(key, '(unset)')}")
  return changes


def check_resume(root_dir, new_text, accept, resumable):
  """Refuses a resume whose training config differs from config.gin beyond the
  `resumable` selectors, unless `accept`.

  Returns every binding that differs, so that even a free change (a longer run) is
  recorded in config.gin and config_history/."""
  path = layout.config_path(root_dir)
  if not os.path.exists(path):
    return []
  stored = read_config(path)
  changes = config_changes(stored, new_text, resumable)
  if changes and not accept:
    raise RunDirectoryError(
        f"{root_dir} was trained with another config; resuming would mix the two. "
        f"Differences: {'; '.join(changes)}. Restore the original bindings, point "
        f"--root_dir elsewhere, or pass {ACCEPT_FLAG} to continue under the new ones "
        "(config_history/ keeps both).")
  for change in changes:
    logging.warning("Resuming with a changed binding (accepted): %s", change)
  return config_changes(stored, new_text)


def read_config(path):
  """A run's stored gin config, or an error that names the file."""
  try:
    with open(path, encoding="utf-8") as f:
      return f.read()
  except UnicodeDecodeError as e:
    raise RunDirectoryError(f"{path} is not a gin config (not UTF-8 text: {e.reason} at "
                            f"byte {e.start}); restore it from config_history/ or the "
                            "run's operative_config.gin.") from e


def record_config(root_dir, text, step):
  """Writes config.gin and config_history/step-<step>.gin (the config from `step`)."""
  files.write_text(os.path.join(layout.config_history_dir(root_dir),
                                f"step-{step:08d}.gin"), text)
  files.write_text(layout.config_path(root_dir), text)
