"""The tf-metainit-fit job for an image file of any size (fit_ct.py: a sinogram,
fit_views.py: posed views): writes reconstruction.png, fit.json (the curve) and
export/ (the fitted field) into a new folder.

The image goes through the image task, as every fit goes through its task: the field
is resolution-free, so pixel (r, c) is at (r / H, c / W), the reference's
convention, whatever H and W are.
"""

import contextlib
import os

from absl import logging
import numpy as np

from tf_metainit import fitting
from tf_metainit import memory
from tf_metainit import progress
from tf_metainit import testtime
from tf_metainit.data import image_folder
from tf_metainit.fields import chunked
from tf_metainit.fields import functional
from tf_metainit.tasks import image as image_task


def render(field, params, height, width, chunk=32768):
  coords = image_task.pixel_grid_tensor(height, width)
  out = chunked.apply(field, params, coords, chunk).numpy().reshape(
      height, width, field.out_dim)
  return np.clip(out, 0.0, 1.0)


def fit(init, image_path, out_dir, num_steps=None, resolution=None, compare=False):
  """Fits `init` (testtime.Init) to the image file; writes the outputs; returns the
  fit.json dict."""
  fitting.check_out_dir(out_dir)
  fitting.check_kind(init, "image", "--image")
  task = image_task.ImageRegression.for_field(init.field)
  num_steps = int(num_steps or init.num_steps or 2)
  height, width = image_folder.image_size(image_path)
  # Refused before the decode: a fit too large for memory fails here, in one line.
  memory.check_image_fit(height, width, init.field, task.chunk_pixels)
  if resolution:
    memory.check_image_fit(resolution, resolution, init.field, task.chunk_pixels)
  image = image_folder.load_image(image_path)
  if task.channels == 1:
    image = image.mean(-1, keepdims=True)
  fitting.announce_duration(init.params, image.shape[0] * image.shape[1],
                            num_steps * (2 if compare else 1))
  with _bar(num_steps, "Fitting the learned init") as on_step:
    fitted, curve = testtime.fit_image(task, init.params, image, init.optimizer,
                                       num_steps, on_step)
  logging.info("Meta init: PSNR %.2f -> %.2f dB in %d steps", curve[0], curve[-1],
               num_steps)
  height, width = ((resolution, resolution) if resolution else image.shape[:2])
  result = {"image": os.path.abspath(image_path), "init": init.source,
            "size": list(image.shape[:2]), "num_steps": num_steps,
            "optimizer": init.optimizer.describe(), "psnr": curve.tolist()}
  if compare:
    result["standard"] = _compare(init.field, image, num_steps, curve[-1])
  fitting.finish(out_dir, init.field, fitted, result,
                 {"reconstruction.png": render(init.field, fitted, height, width,
                                               task.chunk_pixels)})
  return result


@contextlib.contextmanager
def _bar(num_steps, label):
  """Yields fit_image's on_step for a progress bar on a terminal, else None: the
  compiled fit then has no call back into Python."""
  with progress.Bar(num_steps, "step", label) as bar:
    yield (lambda done, psnr: bar.update(done, psnr=psnr)) if bar.active else None


def _compare(field, image, num_steps, meta_final):
  """The Standard init (the field's own) fitted with Table 1's Adam: its curve and the
  steps it needs to reach the Meta init's final PSNR."""
  standard = functional.standard_copy(field)
  with _bar(num_steps, "Fitting the Standard init") as on_step:
    _, curve = testtime.fit_image(image_task.ImageRegression.for_field(standard),
                                  standard.params(), image,
                                  testtime.STANDARD_OPTIMIZER, num_steps, on_step)
  match = testtime.steps_to_reach(curve[:, None], np.asarray([meta_final]),
                                  np.arange(num_steps + 1))[0]
  return {"optimizer": testtime.STANDARD_OPTIMIZER.describe(), "psnr": curve.tolist(),
          "steps_to_match_meta": None if not np.isfinite(match) else float(match)}
