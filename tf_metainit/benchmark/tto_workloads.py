"""What a meta-learned init is used for: test-time optimisation and rendering."""

import io
import os
import time

import numpy as np
from PIL import Image
import tensorflow as tf

from tf_metainit import memory
from tf_metainit import pretrained
from tf_metainit import testtime
from tf_metainit.benchmark import flops
from tf_metainit.benchmark import workloads
from tf_metainit.data import image_folder
from tf_metainit.data import text
from tf_metainit.fields import functional
from tf_metainit.meta import inner
from tf_metainit.meta import optimizers
from tf_metainit.meta import outer
from tf_metainit.tasks import image as image_task


@workloads.nerf_data_dir
def build_nerf_render(data_dir, samples, data_resolution, jit):
  task = workloads.shapenet_task(data_dir, data_resolution, samples=samples)
  signals = {k: tf.constant(v) for k, v in task.test_signals().items()}
  params = functional.batch_params(task.field.params(), 1)
  fn = outer.function(task.render, jit)
  rays = data_resolution ** 2
  points = rays * samples
  return workloads.Workload(
      f"NeRF render of one {data_resolution}² view, {samples} samples per ray",
      lambda: workloads.sync(fn(params, signals)),
      flops.flops(task.field, points, "forward"),
      {"field": "nerf", "rays": rays, "samples": samples, "points": points},
      per_call={"rays": rays})


def build_time_to_psnr(init, resolution, target_db, max_steps, jit):
  """What a user of tf-metainit-fit waits for: from a held-out Text image's PNG bytes to
  `target_db`, from the shipped 'text' init (its own learned rates) or the Standard
  init (Adam 1e-4, Table 1). The steps needed are found once; each timed call then
  decodes the file, builds the fit (tracing included) and runs those steps, as fit
  does (TensorFlow's import excluded)."""
  del jit  # fit_image compiles its own loop, as the binary does
  field, params, _, learned = pretrained.load("text")
  optimizer = learned
  if init == "standard":
    field = functional.standard_copy(field)
    params, optimizer = field.params(), testtime.STANDARD_OPTIMIZER
  picture = text.render_text_image(0, "test", resolution, 0)
  png = io.BytesIO()  # the file's bytes, decoded by every call as fit decodes a file
  Image.fromarray(np.round(np.asarray(picture) * 255).astype(np.uint8)).save(
      png, format="PNG")
  image = image_folder.load_image(io.BytesIO(png.getvalue()))
  task = image_task.ImageRegression.for_field(field)
  _, curve = testtime.fit_image(task, params, image, optimizer, max_steps)
  reached = np.flatnonzero(curve >= target_db)
  steps = int(reached[0]) if len(reached) else max_steps

  def call():
    decoded = image_folder.load_image(io.BytesIO(png.getvalue()))
    return testtime.fit_image(task, params, decoded, optimizer, steps)[1][-1]

  points = resolution ** 2
  label = "shipped 'text' init" if init == "meta" else "Standard init, Adam 1e-4"
  return workloads.Workload(
      f"{resolution}² Text image file to {target_db:g} dB, {label}", call,
      flops.flops(field, points, "adapt", steps),
      {"init": init, "resolution": resolution, "target_db": target_db,
       "steps": steps, "reached": bool(len(reached)), "max_steps": max_steps,
       "points": points}, per_call={"steps": steps})


def photo_path(name):
  """A scikit-image sample photograph (pip install scikit-image)."""
  try:
    import skimage  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise ValueError("The photograph workloads fit scikit-image's sample photos: "
                     "pip install scikit-image.") from None
  return os.path.join(os.path.dirname(skimage.__file__), "data", name)


def measure_photo_fit(photo, resolution, init, rate, max_steps, targets, peak_rss_mb):
  """What `tf-metainit-fit` costs a user, measured once in a fresh process: from the
  photograph's file, decoded and resized to resolution² (None: its own size), the
  seconds until each target PSNR, the fit built and traced included (TensorFlow's
  import not), and the process's peak RSS. `init` names a shipped init ('natural',
  'natural_any'): its learned steps, then Adam at `rate` (None: its last learned rates
  on); or 'standard': the field's own init, Adam at `rate` (both chosen on validation
  photographs, docs/any_size/choices.json)."""
  loaded = pretrained.init("natural" if init == "standard" else init)
  if init != "standard":
    field, params, optimizer = loaded.field, loaded.params, loaded.optimizer
    if rate is not None:  # None: its last learned rates on, tf-metainit-fit's default
      optimizer = optimizers.Switch(first=optimizer, second=optimizers.Adam(rate),
                                    at=loaded.num_steps)
  else:
    field = functional.standard_copy(loaded.field)
    params, optimizer = field.params(), optimizers.Adam(rate)
  task = image_task.ImageRegression.for_field(field)
  stamps, t0 = [], time.perf_counter()
  image = image_folder.load_image(photo_path(photo))
  if resolution:
    image = image_folder.center_crop_resize(image, resolution).numpy()
  memory.check_image_fit(*image.shape[:2], field, task.chunk_pixels)
  _, curve = testtime.fit_image(task, params, image, optimizer, max_steps,
                                lambda done, psnr: stamps.append(time.perf_counter() - t0))
  curve = np.asarray(curve)
  reached = {}
  for target in targets:
    hit = np.flatnonzero(curve >= target)
    reached[f"{target:g}"] = (None if not len(hit) else
                              {"steps": int(hit[0]), "seconds": stamps[hit[0]]})
  return {"title": f"{photo} at {resolution or 'its own size'}, {init}",
          "config": {"photo": photo, "size": list(image.shape[:2]), "init": init,
                     "rate": rate, "max_steps": max_steps},
          "reached": reached, "final_psnr": float(curve[-1]),
          "run_s": stamps[-1], "peak_rss_mb": peak_rss_mb()}


@workloads.nerf_data_dir
def build_landmark_render(data_dir, samples, long_side, jit):
  """One whole held-out photo (per-photo bounds, black background), as the evaluation
  renders the right halves and the figures whole views."""
  task = workloads.landmark_task(data_dir, long_side, samples=samples)
  signals = {k: tf.constant(v) for k, v in task.test_signals().items()}
  params = functional.batch_params(task.field.params(), 1)
  fn = outer.function(task.render, jit)
  rays = int(signals["counts"].numpy().sum())
  points = rays * samples
  return workloads.Workload(
      f"Phototourism render of one {long_side}-px photo ({rays} rays), {samples} "
      "samples per ray", lambda: workloads.sync(fn(params, signals)),
      flops.flops(task.field, points, "forward"),
      {"field": "nerf", "rays": rays, "samples": samples, "points": points},
      per_call={"rays": rays})


@workloads.nerf_data_dir
def _tto_nerf_task(data_dir, rays, samples, data_resolution):
  task = workloads.shapenet_task(data_dir, data_resolution, test_rays=rays,
                                 samples=samples)
  task.test_signals()  # loads the data before its folder is removed
  return task


def build_tto(field, steps, jit, resolution=None, rays=None, samples=None,
              data_resolution=None):
  """Test-time optimisation as testtime.TestTimeOptimizer runs it (Adam 1e-4, one
  signal), without the metric trace: `steps` steps of inner.fit per call."""
  if field == "siren":
    task, setting = workloads.image_task(resolution, 1), "full"
    points = resolution ** 2
    title = f"SIREN 5x256 on a {resolution}² image"
  elif field == "fourier":
    task, setting, points = workloads.ct_task(resolution), 8, resolution ** 2
    title = f"CT Fourier MLP 5x256, {resolution}², 8 views"
  else:
    task = _tto_nerf_task(rays=rays, samples=samples, data_resolution=data_resolution)
    setting, points = 25, rays * samples
    title = f"NeRF MLP 6x256, {rays} rays x {samples} samples, 25 views"
  signals = {k: tf.constant(v[:1]) for k, v in task.test_signals().items()}
  params = functional.batch_params(task.field.params(), 1)
  optimizer = optimizers.Adam(1e-4)

  def run(params, signals):
    return inner.fit(task, params, signals, steps, optimizer, 0, setting).params

  fn = outer.function(run, jit)
  config = {"field": field, "steps": steps, "points": points, "optimizer": "adam"}
  config.update({k: v for k, v in (("resolution", resolution), ("rays", rays),
                                   ("samples", samples)) if v is not None})
  return workloads.Workload(
      f"test-time optimisation, {title}", lambda: workloads.sync(fn(params, signals)),
      flops.flops(task.field, points, "adapt", steps), config,
      per_call={"steps": steps})
