"""A set of fitted fields on disk (tf-metainit-fit-folder's output) and its reader.

  <out_dir>/record.json   what was fitted, how, and (once complete) the summary; the
                          marker that makes the folder this command's own
  <out_dir>/init/         the init as an export: the field the weights belong to
  <out_dir>/parts/        one .npz per batch as it finishes (kept until the merge)
  <out_dir>/fields.npz    every signal's fitted weights, float32, one array per
                          weight of the field with the signals first: the init
                          export's names (layer_0_kernel, ...), plus `names`,
                          `psnr_init` and `psnr_fitted`
  <out_dir>/psnr.csv      name, PSNR of the init and of the fitted field per signal

  dataset(out_dir)  -> tf.data.Dataset of (name, {weight name: weights})

Every file is written beside its target and renamed onto it, so a kill leaves whole
parts or none, and a resumed fit redoes only the batches without a part.
"""

import csv
import io
import json
import os
import socket

import numpy as np

from tf_metainit import files

RECORD, FIELDS, TABLE, PARTS, INIT = ("record.json", "fields.npz", "psnr.csv", "parts",
                                      "init")
MERGING = "merging.json"  # the shard that merges the parts, while it does
COMMAND = "tf-metainit-fit-folder"
# What a fit is: a rerun with the same values resumes it; other values are refused.
SETTINGS = ("init", "folder", "resolution", "num_steps", "batch", "optimizer", "files")
_META = ("names", "psnr_init", "psnr_fitted")


def part_path(out_dir, index):
  return os.path.join(out_dir, PARTS, f"batch-{index:06d}.npz")


def is_fitted_set(folder):
  return files.holds_record(folder, RECORD, ("command",) + SETTINGS)


def read_record(out_dir):
  with open(os.path.join(out_dir, RECORD)) as f:
    return json.load(f)


def write_record(out_dir, record):
  files.write_json(os.path.join(out_dir, RECORD), dict(record, command=COMMAND))


def _write_npz(path, arrays):
  buffer = io.BytesIO()
  np.savez(buffer, **arrays)
  files.write_bytes(path, buffer.getvalue())


def _read_npz(path):
  """The arrays of an .npz this package wrote (never unpickled)."""
  with np.load(path, allow_pickle=False) as data:
    return {k: data[k] for k in data.files}


def write_part(out_dir, index, names, psnr_init, psnr_fitted, weights, skipped):
  """One batch's fitted weights ({name: (n, ...)}) and its files that could not be
  read (skipped: [(file, reason)])."""
  _write_npz(part_path(out_dir, index), dict(
      weights, names=np.asarray(names, str), psnr_init=np.asarray(psnr_init, np.float32),
      psnr_fitted=np.asarray(psnr_fitted, np.float32),
      skipped_files=np.asarray([s[0] for s in skipped], str),
      skipped_reasons=np.asarray([s[1] for s in skipped], str)))


def finished_parts(out_dir, num_batches):
  """Indices of the batches whose part is on disk and readable."""
  done = set()
  for index in range(num_batches):
    path = part_path(out_dir, index)
    if os.path.exists(path):
      try:
        _read_npz(path)
      except (OSError, ValueError):  # not ours to trust: redo the batch
        continue
      done.add(index)
  return done


def merge(out_dir, num_batches):
  """fields.npz and psnr.csv from every part; returns (signals, skipped files)."""
  parts = [_read_npz(part_path(out_dir, i)) for i in range(num_batches)]
  weights = sorted(k for k in parts[0] if k not in _META and not k.startswith("skipped"))
  merged = {k: np.concatenate([p[k] for p in parts]) for k in _META + tuple(weights)}
  skipped = [(str(f), str(r)) for p in parts
             for f, r in zip(p["skipped_files"], p["skipped_reasons"])]
  _write_npz(os.path.join(out_dir, FIELDS), merged)
  table = io.StringIO()
  writer = csv.writer(table, lineterminator="\n")
  writer.writerow(["name", "psnr_init", "psnr_fitted"])
  for name, before, after in zip(*(merged[k] for k in _META)):
    writer.writerow([name, f"{before:.4f}", f"{after:.4f}"])
  files.write_text(os.path.join(out_dir, TABLE), table.getvalue())
  return merged, skipped


def claim_merge(out_dir):
  """Whether this process merges the parts: the first shard to claim it does (a
  claim left by a dead process on this host is taken over)."""
  path = os.path.join(out_dir, MERGING)
  for _ in range(2):
    try:
      descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
      try:
        with open(path) as f:
          holder = json.load(f)
      except (OSError, ValueError):
        return False  # being written by the shard that claimed it
      if holder.get("host") != socket.gethostname() or files.pid_alive(holder["pid"]):
        return False
      os.remove(path)
      continue
    with os.fdopen(descriptor, "w") as f:
      json.dump({"pid": os.getpid(), "host": socket.gethostname()}, f)
    return True
  return False


def remove_parts(out_dir, num_batches):
  """After the merge: the parts and the claim (only the files this command wrote)."""
  for index in range(num_batches):
    if os.path.exists(part_path(out_dir, index)):
      os.remove(part_path(out_dir, index))
  if os.path.isdir(os.path.join(out_dir, PARTS)) and not os.listdir(
      os.path.join(out_dir, PARTS)):
    os.rmdir(os.path.join(out_dir, PARTS))
  os.remove(os.path.join(out_dir, MERGING))


def load(out_dir):
  """{array name: array} of a complete set's fields.npz (names, psnr_*, weights)."""
  path = os.path.join(out_dir, FIELDS)
  if not os.path.exists(path):
    what = ("is still being fitted (or was stopped): rerun its tf-metainit-fit-folder "
            "command to finish it" if is_fitted_set(out_dir) else
            "is not a tf-metainit-fit-folder output")
    raise FileNotFoundError(f"{out_dir} has no {FIELDS}: it {what}.")
  return _read_npz(path)


def dataset(out_dir):
  """A tf.data.Dataset of (name, {weight name: float32 weights}) per fitted signal,
  in the folder's sorted order; the field is the export in <out_dir>/init
  (exports.load)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top; --help stays light
  arrays = load(out_dir)
  weights = {k: v for k, v in arrays.items() if k not in _META}
  return tf.data.Dataset.from_tensor_slices((arrays["names"], weights))
