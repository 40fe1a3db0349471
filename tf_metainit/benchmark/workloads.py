"""What every workload is made of: the Workload record and the paper's tasks.

A builder returns a Workload whose `call()` runs one timed unit and blocks until its
results are computed.
"""

import dataclasses
import functools
import os
import shutil
import tempfile

import tensorflow as tf

from tf_metainit.fields import mlp
from tf_metainit.fields import siren
from tf_metainit.tasks import ct
from tf_metainit.tasks import image
from tf_metainit.tasks import phototourism
from tf_metainit.tasks import shapenet


@dataclasses.dataclass
class Workload:
  title: str
  call: callable
  flops: int
  config: dict
  # What one call does, for rates: e.g. {'steps': 50} or {'rays': 16384}.
  per_call: dict = dataclasses.field(default_factory=dict)


def sync(outputs):
  """Waits for `outputs` by copying them to numpy (also what tests compare)."""
  return tf.nest.map_structure(lambda t: t.numpy() if hasattr(t, "numpy") else t,
                               outputs)


def image_task(resolution, num_train):
  return image.ImageRegression(dataset="text", resolution=resolution,
                               num_train=num_train, num_test=1, field=siren.Siren)


def ct_task(resolution, num_train=2, projections=20):
  return ct.CTReconstruction(source="procedural", resolution=resolution,
                             num_train=num_train, num_test=1,
                             num_projections=projections, field=mlp.FourierMLP)


def shapenet_task(data_dir, data_resolution, num_train=1, rays=128, test_rays=64,
                  samples=128, in_memory=True):
  return shapenet.ShapeNetViews(
      category="chairs", data_dir=data_dir, procedural=True, in_memory=in_memory,
      resolution=data_resolution, num_train=num_train, num_test=1, num_views=50,
      rays_per_step=rays, test_rays_per_step=test_rays, num_samples=samples,
      num_eval_views=1, field=mlp.NerfMLP,
      # The default chunk, unless a whole (tiny, quick-mode) view is smaller: padded
      # rays would be rendered but not counted.
      render_chunk_points=min(2 ** 17, data_resolution ** 2 * samples))


def landmark_task(data_dir, long_side, rays=64, samples=128):
  """The procedural landmark with the fewest photos a split allows (26: one to train)."""
  return phototourism.Phototourism(
      scene="procedural", scene_dir=os.path.join(data_dir, "landmark"), num_photos=26,
      long_side=long_side, num_test=1, num_val=1, rays_per_step=rays,
      num_samples=samples, field=mlp.NerfMLP,
      render_chunk_points=min(2 ** 17, long_side ** 2 * samples))


def nerf_data_dir(builder):
  """Runs builder(data_dir) with procedural NeRF data (ShapeNet objects or the
  landmark) in a temporary folder."""
  @functools.wraps(builder)
  def wrapped(**kwargs):
    data_dir = tempfile.mkdtemp(prefix="tf_metainit_bench_")
    try:
      return builder(data_dir=data_dir, **kwargs)
    finally:
      # Everything the workload needs is in memory by now.
      shutil.rmtree(data_dir, ignore_errors=True)
  return wrapped
