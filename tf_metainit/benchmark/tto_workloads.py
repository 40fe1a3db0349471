"""What a meta-learned init is used for: test-time optimisation and rendering."""

import tensorflow as tf

from tf_metainit import train
from tf_metainit.benchmark import flops
from tf_metainit.benchmark import workloads
from tf_metainit.fields import functional
from tf_metainit.meta import inner
from tf_metainit.meta import optimizers


@workloads.nerf_data_dir
def build_nerf_render(data_dir, samples, data_resolution, jit):
  task = workloads.shapenet_task(data_dir, data_resolution, samples=samples)
  signals = {k: tf.constant(v) for k, v in task.test_signals().items()}
  params = functional.batch_params(task.field.params(), 1)
  fn = train.function(task.render, jit)
  rays = data_resolution ** 2
  points = rays * samples
  return workloads.Workload(
      f"NeRF render of one {data_resolution}² view, {samples} samples per ray",
      lambda: workloads.sync(fn(params, signals)),
      flops.flops(task.field, points, "forward"),
      {"field": "nerf", "rays": rays, "samples": samples, "points": points},
      per_call={"rays": rays})


@workloads.nerf_data_dir
def build_landmark_render(data_dir, samples, long_side, jit):
  """One whole held-out photo (per-photo bounds, black background), as the evaluation
  renders the right halves and the figures whole views."""
  task = workloads.landmark_task(data_dir, long_side, samples=samples)
  signals = {k: tf.constant(v) for k, v in task.test_signals().items()}
  params = functional.batch_params(task.field.params(), 1)
  fn = train.function(task.render, jit)
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
  """Test-time optimisation as evaluate.TestTimeOptimizer runs it (Adam 1e-4, one
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

  fn = train.function(run, jit)
  config = {"field": field, "steps": steps, "points": points, "optimizer": "adam"}
  config.update({k: v for k, v in (("resolution", resolution), ("rays", rays),
                                   ("samples", samples)) if v is not None})
  return workloads.Workload(
      f"test-time optimisation, {title}", lambda: workloads.sync(fn(params, signals)),
      flops.flops(task.field, points, "adapt", steps), config,
      per_call={"steps": steps})
