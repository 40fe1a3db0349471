"""What every tf-metainit-fit job shares (fit.py: an image, fit_ct.py: a sinogram,
fit_views.py: posed views): the kind check of the init, the output folder and how a
fit's outputs are written.

  check_kind     refuses an init made for another kind of signal
  check_out_dir  a new or empty folder, or an earlier fit's
  announce_duration  says before a long fit starts how long it will take
  finish         the pictures, the fitted field as an export and fit.json, swapped in
                 whole
"""

import os

from absl import logging
import numpy as np
from PIL import Image

from tf_metainit import exports
from tf_metainit import files

RESULT = "fit.json"
# A modest CPU's sustained matmul rate (about what 2 cores reach): the estimate only
# guides; the progress bar on a terminal shows the real rate.
ASSUMED_FLOPS = 5e10
LONG_SECONDS = 180
INPUT_FLAGS = {"image": "image", "ct": "sinogram and --angles",
               "shapenet": "views", "phototourism": "views"}


def check_kind(init, kind, flag):
  """Refuses an init made for another kind of signal, naming the flag that fits it."""
  found = init.task.get("task")
  if found and found != kind:
    raise ValueError(f"{flag} needs an init of a {kind} task; this one ({init.source}) "
                     f"is a {found} init. Give --{INPUT_FLAGS[found]} instead, or an "
                     f"init made for {kind}.")


def announce_duration(params, points, num_steps):
  """Estimated seconds of `num_steps` steps over `points` points per step, said as a
  warning when more than a few minutes: a forward and backward pass cost about three
  times a forward's matmuls, 2 fan_in fan_out per weight matrix and point."""
  per_point = 6 * sum(int(np.prod(p.shape)) for p in params if len(p.shape) == 2)
  seconds = float(num_steps) * points * per_point / ASSUMED_FLOPS
  if seconds > LONG_SECONDS:
    logging.warning("%d steps over %d points per step: about %s at %g GFLOP/s (2 CPU "
                    "cores; a GPU is much faster). Ctrl-C stops it; --steps sets "
                    "fewer.", num_steps, points, _duration(seconds),
                    ASSUMED_FLOPS / 1e9)
  return seconds


def _duration(seconds):
  for unit, size in (("days", 86400), ("hours", 3600), ("minutes", 60)):
    if seconds >= 2 * size:
      return f"{seconds / size:.0f} {unit}"
  return f"{seconds:.0f} s"


def described(init, key):
  """A number of the init's task description, or an error saying how to get it."""
  value = init.task.get(key)
  if value is None:
    raise ValueError(f"{init.source} does not record its task's {key}; export it again "
                     "with this version of tf_metainit.")
  return value


def check_out_dir(out_dir):
  """A new or empty folder, or an earlier fit's (its fit.json), so nothing else is
  overwritten."""
  problem = files.target_dir_problem(out_dir, _is_fit, "a tf-metainit-fit output")
  if problem:
    raise ValueError(f"--out_dir={out_dir} {problem}")


def _is_fit(folder):
  # Keys every fit (image, sinogram, views) writes into its fit.json.
  return files.holds_record(folder, RESULT, ("init", "num_steps", "optimizer"))


def save_picture(picture, path):
  """A float picture in [0, 1], (H, W) or (H, W, C), as an 8-bit PNG."""
  picture = np.squeeze(np.clip(np.asarray(picture), 0.0, 1.0))
  files.save_image(Image.fromarray(np.round(picture * 255).astype(np.uint8)), path)


def finish(out_dir, field, fitted, result, pictures, task=None):
  """Writes a fit's pictures ({file name: picture}), the fitted field as an export
  (with `task`'s rendering signatures, if given) and fit.json into a new folder that
  replaces `out_dir` whole (files.atomic_directory): a fit that fails, on a full disk
  say, leaves the earlier one or none."""
  with files.atomic_directory(out_dir) as folder:
    for name, picture in pictures.items():
      save_picture(picture, os.path.join(folder, name))
    exports.export_params(field, fitted, os.path.join(folder, "export"), task=task,
                          manifest_extra={"kind": "fitted", "fit": {
                              k: v for k, v in result.items() if k != "standard"}})
    files.write_json(os.path.join(folder, RESULT), result)
