"""What every tf-metainit-fit job shares (fit.py: an image, fit_ct.py: a sinogram,
fit_views.py: posed views): the kind check of the init, the output folder and how a
fit's outputs are written.

  check_kind     refuses an init made for another kind of signal
  check_out_dir  a new or empty folder, or an earlier fit's
  finish         the pictures, the fitted field as an export and fit.json, swapped in
                 whole
"""

import os

import numpy as np
from PIL import Image

from tf_metainit import exports
from tf_metainit import files

RESULT = "fit.json"
INPUT_FLAGS = {"image": "image", "ct": "sinogram and --angles",
               "shapenet": "views", "phototourism": "views"}


def check_kind(init, kind, flag):
  """Refuses an init made for another kind of signal, naming the flag that fits it."""
  found = init.task.get("task")
  if found and found != kind:
    raise ValueError(f"{flag} needs an init of a {kind} task; this one ({init.source}) "
                     f"is a {found} init. Give --{INPUT_FLAGS[found]} instead, or an "
                     f"init made for {kind}.")


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
