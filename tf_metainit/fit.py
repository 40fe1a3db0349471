"""A learned init fitted to one of your own signals: an image file of any size (here),
a CT sinogram (fit_ct.py) or posed views (fit_views.py).

  Init           a field, its start weights, the test-time optimizer and steps its
                 run was made for and its task's description (from a run directory,
                 an export or a shipped pretrained init)
  check_kind     refuses an init made for another kind of signal
  fit_image      test-time optimisation on every pixel, with the PSNR after each step
  fit_signals    the same for any task's signals, through its own observation
  fit            the tf-metainit-fit job for an image: writes reconstruction.png,
                 fit.json (the curve) and export/ (the fitted field) into a new folder
  finish         the outputs every kind of fit writes, fit.json last

The field is resolution-free: the image's pixel (r, c) is at (r / H, c / W), the
reference's convention, whatever H and W are.
"""

import collections
import contextlib
import itertools
import os

from absl import logging
import gin
import numpy as np
from PIL import Image
import tensorflow as tf

from tf_metainit import evaluate
from tf_metainit import export
from tf_metainit import files
from tf_metainit import progress
from tf_metainit import runs
from tf_metainit.data import image_folder
from tf_metainit.fields import functional
from tf_metainit.meta import inner
from tf_metainit.meta import optimizers
from tf_metainit.tasks import contract
from tf_metainit.tasks import image as image_task

# `task` is the task's description (manifest["task"]): which signals the init is for.
Init = collections.namedtuple("Init", ["field", "params", "optimizer", "num_steps",
                                       "source", "task"])
RESULT = "fit.json"
# Table 1's optimizer for the Standard init (seed supplement).
STANDARD_OPTIMIZER = optimizers.Adam(1e-4)


@gin.configurable(denylist=["root_dir", "checkpoint"])
def init_from_run(root_dir, checkpoint="best", task=gin.REQUIRED):
  """The Meta init of a run; `task` is the run's (the binary binds it from its
  config.gin)."""
  if task is gin.REQUIRED:
    raise ValueError("init_from_run.task is not set: parse the run's config.gin first "
                     "(tf-metainit-fit does).")
  optimizer, num_steps = export.adapt_settings(task)
  params, learned, path = runs.load_meta_init(task, root_dir, checkpoint)
  return Init(task.field, params, learned or optimizer, num_steps, path,
              task.describe())


def init_from_export(export_dir):
  field, params, manifest, learned = export.load(export_dir)
  test_time = manifest.get("test_time") or {}
  optimizer = learned
  if optimizer is None:
    adapt = manifest.get("signatures", {}).get("adapt", {}).get("optimizer")
    description = adapt or {"name": test_time.get("optimizer", "sgd"),
                            "learning_rate": test_time.get("learning_rate", 1e-2)}
    optimizer = optimizers.from_description(description)
  return Init(field, params, optimizer, test_time.get("num_steps"),
              os.path.abspath(export_dir), manifest.get("task") or {})


def check_kind(init, kind, flag):
  """Refuses an init made for another kind of signal, naming the flag that fits it."""
  found = init.task.get("task")
  if found and found != kind:
    raise ValueError(f"{flag} needs an init of a {kind} task; this one ({init.source}) "
                     f"is a {found} init. Give --{INPUT_FLAGS[found]} instead, or an "
                     f"init made for {kind}.")


INPUT_FLAGS = {"image": "image", "ct": "sinogram and --angles",
               "shapenet": "views", "phototourism": "views"}


def _pixels(field, image):
  if field.out_dim not in (1, 3):
    raise ValueError(f"This init's field outputs {field.out_dim} values per point; an "
                     "image fit needs 1 (gray) or 3 (RGB): it was made for another task "
                     "(CT, NeRF).")
  if field.in_dim != 2:
    raise ValueError(f"This init's field takes {field.in_dim}-D points; an image fit "
                     "needs 2-D (an image init).")
  return image.mean(-1, keepdims=True) if field.out_dim == 1 else image


def fit_image(field, params, image, optimizer, num_steps, on_step=None):
  """(fitted params, PSNR before step 0..num_steps) of `params` fitted to `image`
  (H, W, C) on every pixel; on_step(steps done, PSNR) is called as the PSNRs come."""
  height, width, channels = image.shape
  coords = image_task.pixel_grid_tensor(height, width)[None]
  pixels = tf.constant(np.reshape(image, [1, -1, channels]), tf.float32)

  def loss(params, inputs, targets):
    return tf.reduce_mean(tf.square(field.apply(params, inputs) - targets), [1, 2])

  def psnr(params):
    return contract.psnr_from_mse(loss(params, coords, pixels))

  @tf.function
  def run(params):
    return inner.adapt(loss, params, lambda i: (coords, pixels), num_steps, optimizer,
                       trace_fn=psnr if on_step is None else _reporting(psnr, on_step))

  fitted, trace = run(functional.batch_params(params, 1))
  return [p[0] for p in fitted], trace[:, 0].numpy()


def fit_signals(task, params, signals, optimizer, num_steps, setting, metric,
                trace_every=1):
  """(fitted batch-of-1 params, metric traced before step 0 and every trace_every
  steps) of unbatched `params` fitted to a task's batch-of-1 `signals` through the
  task's own observation and inner batches (meta/inner.py's fit, seed 0)."""

  @tf.function
  def run(p):
    fitted = inner.fit(task, p, signals, num_steps, optimizer, 0, setting,
                       trace_fn=metric, trace_every=trace_every)
    return fitted.params, fitted.trace

  fitted, trace = run(functional.batch_params(params, 1))
  return fitted, trace[:, 0].numpy()


def _reporting(trace_fn, on_step):
  """trace_fn that also hands each value to on_step(steps done, value) from inside the
  compiled loop (the trace runs before every step and after the last)."""
  steps_done = itertools.count()

  def report(value):
    on_step(next(steps_done), float(value[0]))
    return value

  def traced(params):
    value = trace_fn(params)
    reported = tf.numpy_function(report, [value], value.dtype, stateful=True)
    return tf.ensure_shape(reported, value.shape)

  return traced


def render(field, params, height, width):
  coords = image_task.pixel_grid_tensor(height, width)
  out = field.apply(params, coords).numpy().reshape(height, width, field.out_dim)
  return np.clip(out, 0.0, 1.0)


def check_out_dir(out_dir):
  """A new or empty folder, or an earlier fit's (its fit.json), so nothing else is
  overwritten."""
  problem = files.target_dir_problem(
      out_dir, lambda d: os.path.exists(os.path.join(d, RESULT)),
      "a tf-metainit-fit output")
  if problem:
    raise ValueError(f"--out_dir={out_dir} {problem}")


def save_picture(picture, path):
  """A float picture in [0, 1], (H, W) or (H, W, C), as an 8-bit PNG."""
  picture = np.squeeze(np.clip(np.asarray(picture), 0.0, 1.0))
  files.save_image(Image.fromarray(np.round(picture * 255).astype(np.uint8)), path)


def finish(out_dir, field, fitted, result, pictures, task=None):
  """Writes a fit's pictures ({file name: picture}), the fitted field as an export
  (with `task`'s rendering signatures) and fit.json (last, so a folder with fit.json
  is a complete fit)."""
  os.makedirs(out_dir, exist_ok=True)
  for name, picture in pictures.items():
    save_picture(picture, os.path.join(out_dir, name))
  export.export_params(field, fitted, os.path.join(out_dir, "export"), task=task,
                       manifest_extra={"kind": "fitted", "fit": {
                           k: v for k, v in result.items() if k != "standard"}})
  files.write_json(os.path.join(out_dir, RESULT), result)


def fit(init, image_path, out_dir, num_steps=None, resolution=None, compare=False):
  """Fits `init` to the image file; writes the outputs; returns the fit.json dict."""
  check_out_dir(out_dir)
  check_kind(init, "image", "--image")
  num_steps = int(num_steps or init.num_steps or 2)
  image = _pixels(init.field, image_folder.load_image(image_path))
  with _bar(num_steps, "Fitting the learned init") as on_step:
    fitted, curve = fit_image(init.field, init.params, image, init.optimizer, num_steps,
                              on_step)
  logging.info("Meta init: PSNR %.2f -> %.2f dB in %d steps", curve[0], curve[-1],
               num_steps)
  height, width = ((resolution, resolution) if resolution else image.shape[:2])
  result = {"image": os.path.abspath(image_path), "init": init.source,
            "size": list(image.shape[:2]), "num_steps": num_steps,
            "optimizer": init.optimizer.describe(), "psnr": curve.tolist()}
  if compare:
    result["standard"] = _compare(init.field, image, num_steps, curve[-1])
  finish(out_dir, init.field, fitted, result,
         {"reconstruction.png": render(init.field, fitted, height, width)})
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
  standard = functional.from_description(field.describe(), {
      v.name: v.numpy() for v in field.non_trainable_variables})
  with _bar(num_steps, "Fitting the Standard init") as on_step:
    _, curve = fit_image(standard, standard.params(), image, STANDARD_OPTIMIZER,
                         num_steps, on_step)
  match = evaluate.steps_to_reach(curve[:, None], np.asarray([meta_final]),
                                  np.arange(num_steps + 1))[0]
  return {"optimizer": STANDARD_OPTIMIZER.describe(), "psnr": curve.tolist(),
          "steps_to_match_meta": None if not np.isfinite(match) else float(match)}
