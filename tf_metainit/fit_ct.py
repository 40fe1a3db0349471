"""A learned CT init fitted to your own sinogram (tf-metainit-fit --sinogram).

The sinogram is what the projector measures (physics/ct.py): one row per view, each row
W detector bins, the mean of the image along parallel rays at that view's angle
(radians). The field is resolution-free (pixel (r, c) of a W x W image sits at
(c / W, r / W)), so any W is fitted: the projector is built at the sinogram's own W,
whatever size the init was trained at. The fit minimises the squared error to the rows
from the init's own test-time optimizer, as evaluation does, and the field's W x W
image is the reconstruction.
"""

import os

from absl import logging
import numpy as np
import tensorflow as tf

from tf_metainit import fitting
from tf_metainit import testtime
from tf_metainit.tasks import contract
from tf_metainit.tasks import ct


def _load_array(path, what):
  """A .npy file's array of real numbers (ints or floats), or a one-line error."""
  try:
    array = np.load(path, allow_pickle=False)  # A pickled array could run code.
  except FileNotFoundError:
    raise ValueError(f"{what} file {path} does not exist.") from None
  except (ValueError, EOFError) as e:
    # numpy's text for a non-.npy file advises unpickling it: not for shared data.
    raise ValueError(f"{what} file {path} is not a plain numeric .npy array (it holds "
                     "objects, is truncated or is another format); save it with "
                     "numpy.save.") from e
  if not isinstance(array, np.ndarray):
    array.close()
    raise ValueError(f"{what} file {path} is an .npz archive; give one array saved "
                     "with numpy.save (.npy).")
  if np.iscomplexobj(array):
    raise ValueError(f"{what} file {path} holds complex numbers; a sinogram and its "
                     "angles are real: save the measured real values (numpy.real if "
                     "the imaginary part is only round-off).")
  if array.dtype.kind not in "iuf":
    raise ValueError(f"{what} file {path} holds {array.dtype} values, not numbers; "
                     "save a float array with numpy.save.")
  return array


def load_sinogram(sinogram_path, angles_path):
  """(sinogram (V, W), angles (V,)) float32, checked."""
  sinogram = _load_array(sinogram_path, "--sinogram")
  angles = _load_array(angles_path, "--angles")
  if sinogram.ndim != 2:
    raise ValueError(f"--sinogram {sinogram_path} has shape {sinogram.shape}; expected "
                     "(views, detector bins), one row per view.")
  if angles.ndim != 1:
    raise ValueError(f"--angles {angles_path} has shape {angles.shape}; expected "
                     "(views,), one angle in radians per sinogram row.")
  if len(angles) != len(sinogram):
    raise ValueError(f"--sinogram has {len(sinogram)} rows (views) but --angles has "
                     f"{len(angles)} entries; give one angle per row.")
  if not len(sinogram):
    raise ValueError(f"--sinogram {sinogram_path} has no rows: a reconstruction needs "
                     "at least one view (one row per angle).")
  if sinogram.shape[1] < 2:
    raise ValueError(f"--sinogram rows have {sinogram.shape[1]} detector bin(s); a "
                     "reconstruction needs at least 2 per view.")
  for name, array in (("--sinogram", sinogram), ("--angles", angles)):
    if not np.all(np.isfinite(array)):
      raise ValueError(f"{name} holds NaN or inf values.")
  _warn_if_degrees(angles_path, angles)
  return sinogram.astype(np.float32), angles.astype(np.float32)


def _warn_if_degrees(angles_path, angles):
  """Angles are radians; larger than a full turn either way, they are likely degrees
  (or garbage), which would fit to the wrong geometry without a word."""
  largest = float(np.max(np.abs(angles)))
  if largest > 2 * np.pi:
    logging.warning("--angles %s reaches %.4g, beyond 2*pi: angles are in radians; if "
                    "these are degrees, convert them with np.deg2rad.", angles_path,
                    largest)


def task_of(init, bins):
  """The init's CT task (its projector's interpolation, from its description) at
  `bins` pixels and detector bins, with no data."""
  fitting.check_kind(init, "ct", "--sinogram")
  return ct.CTReconstruction(
      source="procedural", resolution=int(bins), num_train=1, num_test=1,
      projector=init.task.get("interpolation", "bilinear"), field=lambda: init.field)


def fit_sinogram(task, params, sinogram, angles, optimizer, num_steps):
  """(fitted params, sinogram PSNR before step 0..num_steps), through the task's
  observation of measured signals."""
  signals = {"sinogram": tf.constant(sinogram[None]),
             "angles": tf.constant(angles[None])}

  def psnr(p):
    return contract.psnr_from_mse(task.loss(p, signals["angles"], signals["sinogram"]))

  return testtime.fit_signals(task, params, signals, optimizer, num_steps, None, psnr)


def fit(init, sinogram_path, angles_path, out_dir, num_steps=None):
  """Fits `init` to the sinogram; writes reconstruction.png, fit.json, export/."""
  fitting.check_out_dir(out_dir)
  sinogram, angles = load_sinogram(sinogram_path, angles_path)
  task = task_of(init, sinogram.shape[1])
  num_steps = int(num_steps or init.num_steps or 100)
  # The field is evaluated at every pixel of the bins x bins picture per step.
  fitting.announce_duration(init.params, sinogram.shape[1] ** 2, num_steps)
  fitted, curve = fit_sinogram(task, init.params, sinogram, angles, init.optimizer,
                               num_steps)
  result = {"sinogram": os.path.abspath(sinogram_path),
            "angles": os.path.abspath(angles_path), "init": init.source,
            "views": len(angles), "resolution": task.resolution,
            "num_steps": num_steps, "optimizer": init.optimizer.describe(),
            "sinogram_psnr": curve.tolist()}
  fitting.finish(out_dir, init.field, [p[0] for p in fitted], result,
                 {"reconstruction.png": task.image(fitted).numpy()[0]})
  return result
