r"""Speed and memory benchmark: workloads, FLOP counting, timing and BENCHMARKS.md.

Every workload runs the package's own code path (meta/outer.py's step inside
train.function, inner.adapt for test-time optimisation, task.render) on the paper's
fields, in its own process so that its peak resident memory is its own:

  python -m tf_metainit.benchmark --one=maml_so_r64_graph [--quick]

prints one JSON line (prefixed RESULT_PREFIX). The driver (cli/benchmark.py) runs the
selected workloads one after another and writes the markdown report with
`markdown()`. Times are medians over repeated calls after warm-up; the first call
(tracing, graph optimisation or XLA compilation, and one execution) is reported
separately.

FLOPs are counted analytically, dense matmuls only (see `FLOP_RULES`).
"""

import argparse
import dataclasses
import datetime
import functools
import itertools
import json
import os
import platform
import resource
import shutil
import statistics
import sys
import tempfile
import time

import numpy as np
import tensorflow as tf

from tf_metainit import train
from tf_metainit.data import tfds_images
from tf_metainit.fields import functional
from tf_metainit.fields import mlp
from tf_metainit.fields import siren
from tf_metainit.meta import inner
from tf_metainit.meta import learned_lr
from tf_metainit.meta import optimizers
from tf_metainit.meta import outer
from tf_metainit.tasks import ct
from tf_metainit.tasks import image
from tf_metainit.tasks import shapenet

RESULT_PREFIX = "BENCHMARK_RESULT "
GPU_MEMORY_GB = 80.0

FLOP_RULES = """\
Only dense matmuls are counted, as 2*m*n*k FLOPs each; elementwise work (sin, ReLU,
the SGD/Adam updates, volume-rendering compositing), the CT projector's gathers and
splats and the fixed Fourier-feature / positional encodings are ignored, so the
figures are a lower bound on the work done.

Per point, let F = sum over the field's weight layers of 2*fan_in*fan_out (one forward
pass) and F1 the first layer's share. In a backward pass every matmul costs one more
matmul of its size for each input that needs a gradient; the field's inputs never need
one, so the first layer skips its input gradient:
  forward + backward (one inner / test-time step)   T = 3F - F1
  second-order backward through one inner step      one matmul per (matmul of T,
                                                    input depending on theta0):
                                                    6F - 4*F1
Per call, with P = points per step (signals x pixels, or rays x samples):
  MAML, second order, K steps   P * [K(3F - F1) + F + K(6F - 4F1) + (2F - F1) + F]
                                = P * [K(9F - 5F1) + 4F - F1]
                                (inner steps, query forward, their backward, and the
                                 loss before adaptation that the step also reports)
  MAML, first order             P * [K(3F - F1) + F + (2F - F1) + F]
  Reptile                       P * [K(3F - F1) + 2F]   (K steps, losses before/after)
  test-time optimisation        P * S(3F - F1) for S steps
  rendering                     P * F
With F1 = 0 the second-order count is 9FK + 4F = 3(3FK + F) + F: a forward graph of
3FK + F whose backward costs about twice as much, plus the reported loss before."""

# How each paper configuration would hold second-order MAML activations (points per
# inner step, inner steps, field); used to extrapolate the measured bytes per point-step.
PAPER_CONFIGS = (
    ("Images (CelebA 178², batch 3, K=2): the paper's MAML run", 3 * 178 * 178, 2,
     "siren"),
    ("CT (256², batch 1, K=12) if meta-trained with MAML", 256 * 256, 12, "fourier"),
    ("ShapeNet (128 rays x 128 samples, K=32) with MAML", 128 * 128, 32, "nerf"),
    ("Phototourism (64 rays x 128 samples, K=64) with MAML", 64 * 128, 64, "nerf"),
)


# ------------------------------------------------------------------------------------
# FLOP counting.


def layer_flops(field):
  """Forward matmul FLOPs per point of each weight layer: 2 * fan_in * fan_out."""
  return [2 * int(v.shape[0]) * int(v.shape[1]) for v in field.trainable_variables
          if len(v.shape) == 2]


def flops(field, points, kind, steps=1):
  """Dense-matmul FLOPs of one call of a workload (see FLOP_RULES).

  Args:
    field: a fields.functional.Field (only its kernel shapes are read).
    points: field evaluations per step (signals x pixels, rays x samples, ...).
    kind: 'maml_so', 'maml_fo', 'reptile', 'adapt' (test-time steps) or 'forward'.
    steps: inner steps K, or test-time steps S.
  """
  per_layer = layer_flops(field)
  f, f1 = sum(per_layer), per_layer[0]
  train = 3 * f - f1
  per_point = {
      "maml_so": steps * (train + 6 * f - 4 * f1) + f + (2 * f - f1) + f,
      "maml_fo": steps * train + f + (2 * f - f1) + f,
      "reptile": steps * train + 2 * f,
      "adapt": steps * train,
      "forward": f,
  }
  if kind not in per_point:
    raise ValueError(f"Unknown FLOP kind {kind!r}; use one of {sorted(per_point)}.")
  return int(points) * per_point[kind]


# ------------------------------------------------------------------------------------
# Workload specs: name -> how to build it. The quick mode shrinks sizes, not structure.


def _modes(name, group, kind, **kwargs):
  return {f"{name}_{mode}": dict(group=group, kind=kind, jit=(mode == "xla"), **kwargs)
          for mode in ("graph", "xla")}


def workload_specs(quick=False):
  """Ordered {name: spec}; a spec is {'group', 'kind', builder kwargs...}."""
  q = quick
  specs = {}
  specs["matmul_peak"] = dict(group="peak", kind="matmul", jit=False,
                               n=2048 if q else 4096)
  goal_res = 32 if q else 64
  # The matmul shapes of the two goal workloads: MAML (3 images) and test-time (1).
  for batch in (3, 1):
    specs[f"matmul_siren_b{batch}"] = dict(group="peak", kind="matmul_shapes", jit=False,
                                           points=goal_res ** 2, width=256, batch=batch)
  maml_res = (16, 32) if q else (32, 64, 128, 178)
  for r in maml_res:
    specs.update(_modes(f"maml_so_r{r}", "maml", "image_meta", algorithm="maml_so",
                        resolution=r, batch=3, inner_steps=2))
  specs.update(_modes(f"plain_maml_r{goal_res}", "plain", "plain_maml",
                      resolution=goal_res, batch=3, inner_steps=2))
  specs.update(_modes(f"reptile_r{goal_res}", "reptile", "image_meta",
                      algorithm="reptile", resolution=goal_res, batch=4 if q else 10,
                      inner_steps=2))
  for r in ((32, 64) if q else (64, 256)):
    specs.update(_modes(f"ct_reptile_r{r}", "ct", "ct_reptile", resolution=r,
                        inner_steps=3 if q else 12, projections=20))
  nerf = dict(data_resolution=16 if q else 128)
  specs.update(_modes("nerf_reptile", "nerf", "nerf_reptile", rays=32 if q else 128,
                      samples=32 if q else 128, inner_steps=4 if q else 32, **nerf))
  specs.update(_modes("nerf_render", "nerf", "nerf_render", samples=32 if q else 128,
                      **nerf))
  # Steps per call: about a second of work each on the 2-core CPU.
  specs.update(_modes(f"tto_siren_r{goal_res}", "tto", "tto", field="siren",
                      resolution=goal_res, steps=5 if q else 50))
  specs.update(_modes(f"tto_ct_r{64 if q else 256}", "tto", "tto", field="fourier",
                      resolution=64 if q else 256, steps=5 if q else 10))
  specs.update(_modes("tto_nerf", "tto", "tto", field="nerf", rays=16 if q else 64,
                      samples=32 if q else 128, steps=5 if q else 20, **nerf))
  k_res = 16 if q else 64
  for algorithm in ("maml_so", "maml_fo", "reptile"):
    for k in ((1, 2, 4) if q else (1, 2, 4, 8, 16)):
      specs[f"k_{algorithm}_k{k}"] = dict(
          group="scaling_k", kind="image_meta", jit=False, algorithm=algorithm,
          resolution=k_res, batch=3, inner_steps=k)
  for algorithm in ("maml_fo", "reptile"):
    for r in maml_res:
      specs[f"res_{algorithm}_r{r}"] = dict(
          group="scaling_res", kind="image_meta", jit=False, algorithm=algorithm,
          resolution=r, batch=3, inner_steps=2)
  specs["pipeline_text"] = dict(group="pipeline", kind="pipeline", dataset="text",
                                resolution=goal_res, num=20 if q else 200, batch=3)
  specs["pipeline_text_178"] = dict(group="pipeline", kind="pipeline", dataset="text",
                                    resolution=32 if q else 178, num=20 if q else 200,
                                    batch=3)
  for name in ("celeb_a", "imagenette"):
    specs[f"pipeline_{name}"] = dict(group="pipeline", kind="pipeline", dataset=name,
                                     resolution=32 if q else 178, num=0, batch=3)
  specs["pipeline_ct"] = dict(group="pipeline", kind="pipeline", dataset="ct",
                              resolution=64 if q else 256, num=4 if q else 32, batch=1)
  specs["pipeline_shapenet"] = dict(group="pipeline", kind="pipeline",
                                    dataset="shapenet", resolution=16 if q else 128,
                                    num=2 if q else 4, batch=1)
  specs["pipeline_shapenet_disk"] = dict(group="pipeline", kind="pipeline",
                                         dataset="shapenet_disk",
                                         resolution=16 if q else 128,
                                         num=2 if q else 4, batch=1)
  return specs


GROUPS = ("peak", "maml", "plain", "reptile", "ct", "nerf", "tto", "scaling_k",
          "scaling_res", "pipeline")

# Which training workloads consume each pipeline's signals (the fastest one counts).
PIPELINE_CONSUMERS = {
    "text": ("maml_so_r{r}_graph", "reptile_r{r}_graph", "k_maml_fo_k1",
             "k_reptile_k1"),
    "text_178": ("maml_so_r{r}_graph", "res_reptile_r{r}", "res_maml_fo_r{r}"),
    "celeb_a": ("maml_so_r{r}_graph", "res_reptile_r{r}", "res_maml_fo_r{r}"),
    "imagenette": ("maml_so_r{r}_graph", "res_reptile_r{r}", "res_maml_fo_r{r}"),
    "ct": ("ct_reptile_r{r}_graph",),
    "shapenet": ("nerf_reptile_graph",),
    "shapenet_disk": ("nerf_reptile_graph",),
}


def spec_key(spec):
  """Identical configurations (e.g. a K-sweep point that is also a main workload)
  are measured once."""
  return json.dumps({k: v for k, v in spec.items() if k != "group"}, sort_keys=True)


def select(names_or_groups, quick=False):
  """Workload names for a comma list of groups / names, or 'all'."""
  specs = workload_specs(quick)
  wanted = [w.strip() for w in names_or_groups.split(",") if w.strip()]
  if not wanted or wanted == ["all"]:
    return list(specs)
  out = []
  for w in wanted:
    if w in GROUPS:
      out += [n for n, s in specs.items() if s["group"] == w]
    elif w in specs:
      out.append(w)
    else:
      raise ValueError(f"Unknown workload or group {w!r}. Groups: {', '.join(GROUPS)}; "
                       f"workloads: {', '.join(specs)}.")
  # The matmul peak is the yardstick of every fraction: always measured.
  out = ["matmul_peak"] + [n for n in out if n != "matmul_peak"]
  return list(dict.fromkeys(out))


# ------------------------------------------------------------------------------------
# Memory and machine facts.


def _status_kb(field):
  try:
    with open("/proc/self/status") as f:
      for line in f:
        if line.startswith(field + ":"):
          return int(line.split()[1])
  except OSError:
    pass
  return None


def _reset_peak_rss():
  """Resets the kernel's peak-RSS mark (VmHWM); False where that is not allowed."""
  try:
    with open("/proc/self/clear_refs", "w") as f:
      f.write("5")
    return True
  except OSError:
    return False


def _maxrss_mb():
  scale = 1024.0 * 1024.0 if sys.platform == "darwin" else 1024.0  # bytes vs KiB
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale


def _rss_mb():
  kb = _status_kb("VmRSS")
  return kb / 1024.0 if kb is not None else None


def cpu_model():
  """'model name (family f, model m; simd flags)' from /proc/cpuinfo where present."""
  info = {}
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        key, _, value = line.partition(":")
        info.setdefault(key.strip().lower(), value.strip())
  except OSError:
    return platform.processor() or platform.machine()
  flags = info.get("flags", "").split()
  simd = [f for f in ("avx512f", "avx2", "fma", "avx") if f in flags]
  return (f"{info.get('model name', platform.machine())} (family "
          f"{info.get('cpu family', '?')}, model {info.get('model', '?')}; "
          f"{' '.join(simd) or 'no AVX'})")


def machine_facts():
  mem_kb = None
  try:
    with open("/proc/meminfo") as f:
      mem_kb = int(f.readline().split()[1])
  except (OSError, ValueError, IndexError):
    pass
  return {
      "cpu": cpu_model(),
      "cores": os.cpu_count(),
      "memory_gb": round(mem_kb / 2 ** 20, 1) if mem_kb else None,
      "tensorflow": tf.__version__,
      "python": platform.python_version(),
      "platform": platform.platform(),
      "gpus": [d.name for d in tf.config.list_physical_devices("GPU")],
      "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "unset"),
      "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
  }


# ------------------------------------------------------------------------------------
# Workloads. A builder returns a Workload whose `call()` runs one timed unit and
# blocks until its results are computed.


@dataclasses.dataclass
class Workload:
  title: str
  call: callable
  flops: int
  config: dict
  # What one call does, for rates: e.g. {'steps': 50} or {'rays': 16384}.
  per_call: dict = dataclasses.field(default_factory=dict)


def _sync(outputs):
  """Waits for `outputs` by copying them to numpy (also what tests compare)."""
  return tf.nest.map_structure(lambda t: t.numpy() if hasattr(t, "numpy") else t,
                               outputs)


def _image_task(resolution, num_train):
  return image.ImageRegression(dataset="text", resolution=resolution,
                               num_train=num_train, num_test=1, field=siren.Siren)


def _ct_task(resolution, num_train=2, projections=20):
  return ct.CTReconstruction(source="procedural", resolution=resolution,
                             num_train=num_train, num_test=1,
                             num_projections=projections, field=mlp.FourierMLP)


def _shapenet_task(data_dir, data_resolution, num_train=1, rays=128, test_rays=64,
                   samples=128, in_memory=True):
  return shapenet.ShapeNetViews(
      category="chairs", data_dir=data_dir, procedural=True, in_memory=in_memory,
      resolution=data_resolution, num_train=num_train, num_test=1, num_views=50,
      rays_per_step=rays, test_rays_per_step=test_rays, num_samples=samples,
      num_eval_views=1, field=mlp.NerfMLP,
      # The default chunk, unless a whole (tiny, quick-mode) view is smaller: padded
      # rays would be rendered but not counted.
      render_chunk_points=min(2 ** 17, data_resolution ** 2 * samples))


def _first_batch(task, batch):
  """One outer batch from the training pipeline, as meta_train receives it."""
  return next(iter(task.train_dataset(0).batch(batch, drop_remainder=True)))


def _outer_step(task, algorithm, inner_steps, inner_lr, outer_lr, signals, jit):
  """The meta-training loop's compiled step (meta/outer.py, as train.py builds it)."""
  inner_opt = optimizers.SGD(inner_lr)
  optimizer = train.outer_optimizer(outer_lr)
  optimizer.build(learned_lr.meta_variables(task.field, inner_opt))
  step = outer.build_step(task.field, task, optimizer, inner_opt,
                          "reptile" if algorithm == "reptile" else "maml", inner_steps,
                          first_order=(algorithm == "maml_fo"))
  fn = train.function(lambda s, i: step(s, i)[:2], jit)
  counter = itertools.count()
  return lambda: _sync(fn(signals, tf.constant(next(counter), tf.int64)))


ALGORITHM_TITLES = {"maml_so": "MAML (2nd order)", "maml_fo": "MAML (1st order)",
                    "reptile": "Reptile"}


def build_matmul(n, jit):
  a = tf.random.stateless_normal([n, n], [1, 2])
  b = tf.random.stateless_normal([n, n], [3, 4])
  fn = tf.function(tf.matmul, jit_compile=jit)
  an, bn = a.numpy(), b.numpy()
  times = []
  for _ in range(4):  # the first call warms up the BLAS threads; the best of 3 counts
    t0 = time.perf_counter()
    an @ bn  # pylint: disable=pointless-statement
    times.append(time.perf_counter() - t0)
  numpy_gflops = 2 * n ** 3 / min(times[1:]) / 1e9
  return Workload(f"float32 matmul {n}x{n} (TensorFlow)", lambda: _sync(fn(a, b)),
                  2 * n ** 3, {"n": n, "numpy_gflops": round(numpy_gflops, 1)})


def build_image_meta(algorithm, resolution, batch, inner_steps, jit):
  task = _image_task(resolution, batch)
  signals = _first_batch(task, batch)
  call = _outer_step(task, algorithm, inner_steps, 1e-2, 1e-5, signals, jit)
  points = batch * resolution ** 2
  return Workload(
      f"{ALGORITHM_TITLES[algorithm]} outer step, SIREN 5x256, {resolution}², "
      f"batch {batch}, K={inner_steps}", call,
      flops(task.field, points, algorithm, inner_steps),
      {"algorithm": algorithm, "field": "siren", "resolution": resolution,
       "batch": batch, "inner_steps": inner_steps, "points": points})


def build_plain_maml(resolution, batch, inner_steps, jit):
  """Hand-written second-order MAML of the same math: unbatched weights, a Python
  loop over the signals, nested tapes, hand-written Adam; nothing from tf_metainit.meta.
  """
  task = _image_task(resolution, batch)
  signals = _first_batch(task, batch)
  field = task.field
  images = tf.reshape(signals["image"], [batch, -1, 3])
  coords = task.coords
  w0, offset, inner_lr = field.w0, field.output_offset, 1e-2
  weights = [tf.Variable(v.numpy()) for v in field.trainable_variables]
  moments = [(tf.Variable(tf.zeros_like(w)), tf.Variable(tf.zeros_like(w)))
             for w in weights]
  count = tf.Variable(0.0)

  def forward(params):
    h = coords
    for i in range(0, len(params) - 2, 2):
      h = tf.sin(w0 * (tf.matmul(h, params[i]) + params[i + 1]))
    return tf.matmul(h, params[-2]) + params[-1] + offset

  def loss(params, target):
    return tf.reduce_mean(tf.square(forward(params) - target))

  def step(images):
    with tf.GradientTape() as outer_tape:
      after = []
      for b in range(batch):
        params = [tf.identity(w) for w in weights]
        for _ in range(inner_steps):
          with tf.GradientTape() as tape:
            tape.watch(params)
            inner_loss = loss(params, images[b])
          grads = tape.gradient(inner_loss, params)
          params = [p - inner_lr * g for p, g in zip(params, grads)]
        after.append(loss(params, images[b]))
      meta_loss = tf.add_n(after) / batch
    grads = outer_tape.gradient(meta_loss, weights)
    before = tf.add_n([loss(weights, images[b]) for b in range(batch)]) / batch
    count.assign_add(1.0)
    c1, c2 = 1.0 - 0.9 ** count, 1.0 - 0.999 ** count
    for w, (m, v), g in zip(weights, moments, grads):
      m.assign(0.9 * m + 0.1 * g)
      v.assign(0.999 * v + 0.001 * tf.square(g))
      w.assign_sub(1e-5 * (m / c1) / (tf.sqrt(v / c2) + 1e-8))
    return before, meta_loss

  fn = tf.function(step, jit_compile=jit)
  points = batch * resolution ** 2
  return Workload(
      f"hand-written MAML (2nd order) outer step, {resolution}², batch {batch}, "
      f"K={inner_steps}", lambda: _sync(fn(images)),
      flops(field, points, "maml_so", inner_steps),
      {"algorithm": "maml_so", "field": "siren", "resolution": resolution,
       "batch": batch, "inner_steps": inner_steps, "points": points})


def build_ct_reptile(resolution, inner_steps, projections, jit):
  task = _ct_task(resolution, projections=projections)
  signals = _first_batch(task, 1)
  call = _outer_step(task, "reptile", inner_steps, 10.0, 5e-5, signals, jit)
  points = resolution ** 2
  return Workload(
      f"CT Reptile outer step, Fourier MLP 5x256, {resolution}², {projections} "
      f"projections, K={inner_steps}", call,
      flops(task.field, points, "reptile", inner_steps),
      {"algorithm": "reptile", "field": "fourier", "resolution": resolution,
       "batch": 1, "inner_steps": inner_steps, "projections": projections,
       "points": points})


def _nerf_data_dir(builder):
  """Runs builder(data_dir) with procedural ShapeNet data in a temporary folder."""
  @functools.wraps(builder)
  def wrapped(**kwargs):
    data_dir = tempfile.mkdtemp(prefix="tf_metainit_bench_")
    try:
      return builder(data_dir=data_dir, **kwargs)
    finally:
      # Everything the workload needs is in memory by now.
      shutil.rmtree(data_dir, ignore_errors=True)
  return wrapped


@_nerf_data_dir
def build_nerf_reptile(data_dir, rays, samples, inner_steps, data_resolution, jit):
  task = _shapenet_task(data_dir, data_resolution, rays=rays, samples=samples)
  signals = _first_batch(task, 1)
  call = _outer_step(task, "reptile", inner_steps, 0.5, 5e-4, signals, jit)
  points = rays * samples
  return Workload(
      f"NeRF Reptile outer step, NeRF MLP 6x256, {inner_steps} steps x {rays} rays x "
      f"{samples} samples", call, flops(task.field, points, "reptile", inner_steps),
      {"algorithm": "reptile", "field": "nerf", "rays": rays, "samples": samples,
       "inner_steps": inner_steps, "data_resolution": data_resolution,
       "points": points})


@_nerf_data_dir
def build_nerf_render(data_dir, samples, data_resolution, jit):
  task = _shapenet_task(data_dir, data_resolution, samples=samples)
  signals = {k: tf.constant(v) for k, v in task.test_signals().items()}
  params = functional.batch_params(task.field.params(), 1)
  fn = train.function(task.render, jit)
  rays = data_resolution ** 2
  points = rays * samples
  return Workload(
      f"NeRF render of one {data_resolution}² view, {samples} samples per ray",
      lambda: _sync(fn(params, signals)), flops(task.field, points, "forward"),
      {"field": "nerf", "rays": rays, "samples": samples, "points": points},
      per_call={"rays": rays})


@_nerf_data_dir
def _tto_nerf_task(data_dir, rays, samples, data_resolution):
  task = _shapenet_task(data_dir, data_resolution, test_rays=rays, samples=samples)
  task.test_signals()  # loads the data before its folder is removed
  return task


def build_tto(field, steps, jit, resolution=None, rays=None, samples=None,
              data_resolution=None):
  """Test-time optimisation as evaluate.TestTimeOptimizer runs it (Adam 1e-4, one
  signal), without the metric trace: `steps` steps of inner.adapt per call."""
  if field == "siren":
    task, setting, points = _image_task(resolution, 1), "full", resolution ** 2
    title = f"SIREN 5x256 on a {resolution}² image"
  elif field == "fourier":
    task, setting, points = _ct_task(resolution), 8, resolution ** 2
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
  return Workload(f"test-time optimisation, {title}", lambda: _sync(fn(params, signals)),
                  flops(task.field, points, "adapt", steps), config,
                  per_call={"steps": steps})


def build_pipeline(dataset, resolution, num, batch, repeats):
  """Signals/s of the tf.data pipeline meta_train iterates (batched, prefetched)."""
  t0 = time.perf_counter()
  data_dir = None
  note = "in-memory arrays, shuffled indices (Task.train_dataset)"
  if dataset == "text":
    ds = _image_task(resolution, num).train_dataset(0)
  elif dataset == "ct":
    ds = _ct_task(resolution, num_train=num).train_dataset(0)
  elif dataset.startswith("shapenet"):
    data_dir = tempfile.mkdtemp(prefix="tf_metainit_bench_")
    in_memory = dataset == "shapenet"
    ds = _shapenet_task(data_dir, resolution, num_train=num,
                        in_memory=in_memory).train_dataset(0)
    if not in_memory:
      note = "50 PNGs per object decoded when drawn (ShapeNetViews.in_memory = False)"
  else:
    ds, note = _tfds_or_proxy(dataset, resolution)
  prep = time.perf_counter() - t0
  try:
    rate = _signals_per_second(ds, batch, repeats)
  finally:
    if data_dir:
      shutil.rmtree(data_dir, ignore_errors=True)
  return {"dataset": dataset, "resolution": resolution, "batch": batch,
          "num_prepared": num, "prepare_seconds": prep,
          "signals_per_second": rate, "note": note}


def _signals_per_second(ds, batch, repeats):
  iterator = iter(ds.batch(batch, drop_remainder=True).prefetch(2))
  for _ in range(5):
    tf.nest.map_structure(lambda t: t.numpy(), next(iterator))
  rates = []
  for _ in range(max(repeats, 2)):
    t0, n = time.perf_counter(), 0
    while time.perf_counter() - t0 < 0.5 or n < 5:
      tf.nest.map_structure(lambda t: t.numpy(), next(iterator))
      n += 1
    rates.append(n * batch / (time.perf_counter() - t0))
  return statistics.median(rates)


def _tfds_or_proxy(name, resolution):
  """The TFDS pipeline if the data is present; else decode + preprocess of a synthetic
  JPEG of the dataset's size (TFRecord reading and file shuffling not included)."""
  try:
    ds = tfds_images.tfds_dataset(name, "train", resolution, shuffle_files=True)
    return ds.repeat().shuffle(256, seed=0), "TFDS data (tfds_images.tfds_dataset)"
  except Exception:  # pylint: disable=broad-except
    pass  # not downloaded (TFDS raises various errors): measure the proxy
  shape = (218, 178, 3) if name == "celeb_a" else (320, 426, 3)
  rng = np.random.default_rng(0)
  # Smooth content compresses like a photo; pure noise would make JPEG decoding slow.
  small = rng.integers(0, 256, (shape[0] // 8, shape[1] // 8, 3), dtype=np.uint8)
  image = tf.image.resize(small, shape[:2], method="bilinear")
  jpeg = tf.io.encode_jpeg(tf.cast(image, tf.uint8), quality=90)
  preprocess = tfds_images.PREPROCESS[name]
  ds = tf.data.Dataset.from_tensors(jpeg).repeat().map(
      lambda b: {"image": preprocess(tf.io.decode_jpeg(b, channels=3), resolution)},
      num_parallel_calls=tf.data.AUTOTUNE)
  return ds, (f"proxy: TFDS {name} not downloaded; JPEG decode + the package's "
              f"preprocessing of a {shape[0]}x{shape[1]} image")


def build_matmul_shapes(points, width, batch, jit):
  """A hidden layer's three matmuls (forward, input and weight gradients) at a
  workload's shapes: per-signal weights as the package batches them, (B, P, W) x
  (B, W, W); config['unbatched_gflops'] is the same work as B separate 2-D matmuls."""
  x = tf.random.stateless_normal([batch, points, width], [1, 2])
  w = tf.random.stateless_normal([batch, width, width], [3, 4]) / width ** 0.5
  d = tf.random.stateless_normal([batch, points, width], [5, 6])

  def layer(x, w, d):
    y = tf.matmul(x, w)
    z = tf.matmul(y, w, transpose_b=True)
    return tf.matmul(z, d, transpose_a=True)

  batched = tf.function(layer, jit_compile=jit)
  unbatched = tf.function(
      lambda x, w, d: [layer(x[b], w[b], d[b]) for b in range(batch)],
      jit_compile=jit)
  work = 3 * 2 * batch * points * width * width
  _sync(unbatched(x, w, d))
  times = []
  for _ in range(5):
    t0 = time.perf_counter()
    _sync(unbatched(x, w, d))
    times.append(time.perf_counter() - t0)
  return Workload(
      f"one 256-wide layer's forward + backward matmuls, {batch} x {points:,} points",
      lambda: _sync(batched(x, w, d)), work,
      {"points": points, "width": width, "batch": batch,
       "unbatched_gflops": round(work / statistics.median(times) / 1e9, 1)})


BUILDERS = {
    "matmul": build_matmul,
    "matmul_shapes": build_matmul_shapes,
    "image_meta": build_image_meta,
    "plain_maml": build_plain_maml,
    "ct_reptile": build_ct_reptile,
    "nerf_reptile": build_nerf_reptile,
    "nerf_render": build_nerf_render,
    "tto": build_tto,
}


# ------------------------------------------------------------------------------------
# Measuring one workload (inside its own process).


def measure(workload, repeats, warmup):
  """Times `workload.call`: first call, `warmup` untimed calls, `repeats` timed ones."""
  reset = _reset_peak_rss()
  baseline = _rss_mb()
  t0 = time.perf_counter()
  workload.call()
  first = time.perf_counter() - t0
  for _ in range(warmup):
    workload.call()
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    workload.call()
    times.append(time.perf_counter() - t0)
  hwm = _status_kb("VmHWM")
  median = statistics.median(times)
  out = {
      "title": workload.title, "config": workload.config, "per_call": workload.per_call,
      "flops": workload.flops, "first_call_s": first,
      "compile_s": max(first - median, 0.0), "median_s": median,
      "min_s": min(times), "max_s": max(times), "times_s": times,
      "gflops": workload.flops / median / 1e9,
      "baseline_rss_mb": baseline, "maxrss_mb": _maxrss_mb(),
      # With the mark reset after setup, VmHWM is the workload's own peak.
      "peak_rss_mb": max(hwm / 1024.0, baseline or 0.0) if (reset and hwm) else
                     _maxrss_mb(),
      "peak_is_workload_only": bool(reset and hwm),
  }
  out["workload_mb"] = (out["peak_rss_mb"] - baseline) if baseline else None
  if tf.config.list_physical_devices("GPU"):
    # On a GPU the activations live in device memory; RSS is only the host side.
    info = tf.config.experimental.get_memory_info("GPU:0")
    out["gpu_peak_mb"] = info["peak"] / 2 ** 20
  return out


def run_one(name, quick=False, repeats=None, warmup=None):
  """Builds and measures workload `name` in this process; returns its result dict."""
  specs = workload_specs(quick)
  if name not in specs:
    raise ValueError(f"Unknown workload {name!r}.")
  spec = dict(specs[name])
  group, kind = spec.pop("group"), spec.pop("kind")
  repeats = repeats or (2 if quick else 5)
  warmup = 1 if warmup is None else warmup
  load_before = os.getloadavg()
  t0 = time.perf_counter()
  if kind == "pipeline":
    result = build_pipeline(repeats=repeats, **spec)
    result["setup_s"] = time.perf_counter() - t0
  else:
    mode = "xla" if spec.get("jit") else "graph"
    workload = BUILDERS[kind](**spec)
    setup = time.perf_counter() - t0
    result = measure(workload, repeats, warmup)
    result.update(mode=mode, setup_s=setup)
  result.update(name=name, group=group, kind=kind, repeats=repeats, warmup=warmup,
                loadavg_before=load_before[0], loadavg_after=os.getloadavg()[0],
                wall_s=time.perf_counter() - t0)
  return result


# ------------------------------------------------------------------------------------
# The report.


def _fmt(x, digits=1, unit=""):
  if x is None or (isinstance(x, float) and not np.isfinite(x)):
    return "–"
  return f"{x:,.{digits}f}{unit}"


def _signed(x, digits=1):
  # Rounding first keeps a fitted -0.001 from printing as "-0.0".
  return f"{round(x, digits) + 0.0:+.{digits}f}"


def _ms(seconds):
  return _fmt(seconds * 1e3, 0 if seconds >= 0.1 else 1)


def peak_gflops(results):
  """The machine's float32 matmul peak: the highest of the 4096² matmuls, TensorFlow's
  and numpy's (its BLAS), taken at the start and end of a run."""
  values = [v for r in results.values() if r.get("kind") == "matmul" and "error" not in r
            for v in (r["gflops"], r["config"].get("numpy_gflops", 0.0))]
  return max(values) if values else None


def _ok(results, name):
  r = results.get(name)
  return r if r and "error" not in r else None


def _fit(ks, ys):
  """Least-squares slope and intercept of ys against ks."""
  slope, intercept = np.polyfit(np.asarray(ks, float), np.asarray(ys, float), 1)
  return float(slope), float(intercept)


def k_sweep(results, algorithm):
  rows = sorted((r["config"]["inner_steps"], r) for n, r in results.items()
                if n.startswith(f"k_{algorithm}_k") and "error" not in r)
  return [r for _, r in rows]


def memory_verdicts(results):
  """Flatness of Reptile / first-order MAML and linearity of second-order MAML in K.

  Flat: the fitted growth from the smallest to the largest K is under 10% of the
  workload's memory at the smallest K plus 32 MB (allocator noise). At most linear:
  no per-step increment exceeds 1.5x the fitted slope (plus 32 MB of noise).
  """
  out = {}
  for algorithm in ("maml_so", "maml_fo", "reptile"):
    rows = k_sweep(results, algorithm)
    if len(rows) < 2:
      continue
    ks = [r["config"]["inner_steps"] for r in rows]
    ys = [r["workload_mb"] for r in rows]
    slope, intercept = _fit(ks, ys)
    growth = slope * (ks[-1] - ks[0])
    points = rows[0]["config"]["points"]
    increments = [(y2 - y1) / (k2 - k1) for k1, k2, y1, y2 in
                  zip(ks[:-1], ks[1:], ys[:-1], ys[1:])]
    out[algorithm] = {
        "ks": ks, "mb": ys, "slope_mb_per_step": slope, "intercept_mb": intercept,
        "growth_mb": growth, "points": points,
        "bytes_per_point_step": slope * 2 ** 20 / points,
        "flat": growth <= 0.1 * max(ys[0], 0.0) + 32.0,
        "linear": all(d <= 1.5 * max(slope, 0.0) + 32.0 / max(k2 - k1, 1)
                      for d, k1, k2 in zip(increments, ks[:-1], ks[1:])),
        "increments": increments,
    }
  return out


def _activation_width(kind):
  """Sum of the hidden widths of a paper field: activations scale with it."""
  widths = {"siren": 4 * 256 + 3, "fourier": 512 + 4 * 256 + 1,
            "nerf": 120 + 5 * 256 + 4}
  return widths[kind]


def paper_memory_estimates(verdicts):
  """Second-order MAML activation memory of the paper configs, from the measured
  bytes per (point, inner step) of SIREN 5x256 scaled by each field's widths."""
  if "maml_so" not in verdicts:
    return []
  per = verdicts["maml_so"]["bytes_per_point_step"]
  rows = []
  for title, points, k, kind in PAPER_CONFIGS:
    scale = _activation_width(kind) / _activation_width("siren")
    gb = per * scale * points * k / 1e9
    rows.append({"config": title, "points": points, "inner_steps": k, "field": kind,
                 "gb": gb, "fits": gb < GPU_MEMORY_GB})
  return rows


def _workload_rows(results, names, peak, rate=None):
  header = ("| workload | mode | compile s | median ms (min–max) | GFLOP/call | "
            "GFLOP/s | % of peak |" + (f" {rate[0]} |" if rate else "") +
            " baseline RSS MB | peak RSS MB | workload MB |")
  lines = [header, "|" + "---|" * (header.count("|") - 1)]
  for n in names:
    r = results.get(n)
    if r is None:
      continue
    if "error" in r:
      lines.append(f"| {n} | – | failed: {r['error'].splitlines()[-1][:120]} |")
      continue
    frac = r["gflops"] / peak * 100 if peak else None
    extra = f" {_fmt(rate[1](r), 1)} |" if rate else ""
    lines.append(
        f"| {r['title']} | {r['mode']} | {_fmt(r['compile_s'], 1)} | "
        f"{_ms(r['median_s'])} ({_ms(r['min_s'])}–{_ms(r['max_s'])}) | "
        f"{_fmt(r['flops'] / 1e9, 1)} | {_fmt(r['gflops'], 0)} | {_fmt(frac, 0)}% |"
        f"{extra} {_fmt(r['baseline_rss_mb'], 0)} | {_fmt(r['peak_rss_mb'], 0)} | "
        f"{_fmt(r['workload_mb'], 0)} |")
  return lines


def _sweep_rows(variable, rows, peak):
  """Table of (algorithm, value of `variable`, result) rows."""
  lines = [f"| algorithm | {variable} | median ms | GFLOP/s | % of peak | peak RSS MB | "
           "workload MB |", "|---|---|---|---|---|---|---|"]
  for algorithm, value, r in rows:
    frac = r["gflops"] / peak * 100 if peak else None
    lines.append(f"| {ALGORITHM_TITLES[algorithm]} | {value} | {_ms(r['median_s'])} | "
                 f"{_fmt(r['gflops'], 0)} | {_fmt(frac, 0)}% | "
                 f"{_fmt(r['peak_rss_mb'], 0)} | {_fmt(r['workload_mb'], 0)} |")
  return lines


def _names(results, group):
  return [n for n, r in results.items() if r.get("group") == group]


def goals(results, quick=False):
  """[(goal, measured figure, met)] for the speed and memory goals."""
  peak = peak_gflops(results)
  out = []
  res = 32 if quick else 64
  target = _ok(results, f"maml_so_r{res}_graph")
  plain = _ok(results, f"plain_maml_r{res}_graph")
  if target and peak:
    frac = target["gflops"] / peak
    fig = f"{target['gflops']:.0f} GFLOP/s = {frac:.0%} of {peak:.0f}"
    if plain:
      fig += (f" (hand-written: {plain['gflops']:.0f} GFLOP/s = "
              f"{plain['gflops'] / peak:.0%})")
    out.append((f"MAML outer step at {res}² ≥ 55% of the matmul peak", fig,
                frac >= 0.55))
  tto = _ok(results, f"tto_siren_r{res}_graph")
  if tto:
    out.append((f"test-time optimisation of SIREN 5x256 on a {res}² image "
                "≥ 250 GFLOP/s", f"{tto['gflops']:.0f} GFLOP/s, "
                f"{tto['per_call']['steps'] / tto['median_s']:.1f} steps/s",
                tto["gflops"] >= 250))
  verdicts = memory_verdicts(results)
  for algorithm in ("reptile", "maml_fo"):
    v = verdicts.get(algorithm)
    if v:
      out.append((f"{ALGORITHM_TITLES[algorithm]} memory flat in K",
                  f"{_signed(v['slope_mb_per_step'])} MB per inner step "
                  f"(K={v['ks'][0]}: {v['mb'][0]:.0f} MB, K={v['ks'][-1]}: "
                  f"{v['mb'][-1]:.0f} MB)", v["flat"]))
  v = verdicts.get("maml_so")
  if v:
    out.append(("MAML (2nd order) memory at most linear in K",
                f"{v['slope_mb_per_step']:.0f} MB per inner step "
                f"({v['bytes_per_point_step'] / 1024:.1f} KiB per point and step); "
                "increments " + ", ".join(f"{d:.0f}" for d in v["increments"]) +
                " MB/step", v["linear"]))
  return out


def explain(results, quick=False):
  """Data-driven notes on each speed goal: where the time goes, and why a miss."""
  peak = peak_gflops(results)
  res = 32 if quick else 64
  notes = []
  cases = (("MAML outer step", f"maml_so_r{res}_graph", f"plain_maml_r{res}_graph",
            "matmul_siren_b3", 0.55 * peak if peak else None,
            "sin/cos of every activation with their first and second derivatives, "
            "the losses and the SGD and Adam updates"),
           ("Test-time optimisation", f"tto_siren_r{res}_graph", None,
            "matmul_siren_b1", 250.0,
            "sin/cos of every activation and their derivatives, the loss and the "
            "Adam update"))
  for what, name, plain_name, shapes_name, target, uncounted in cases:
    r, plain, shapes = _ok(results, name), _ok(results, plain_name or ""), _ok(
        results, shapes_name)
    if not (r and peak and target):
      continue
    parts = [f"**{what} at {res}²**: {r['gflops']:.0f} GFLOP/s "
             f"({r['gflops'] / peak:.0%} of peak; goal {target:.0f})"
             + (" — met." if r["gflops"] >= target else " — missed.")]
    if shapes:
      batched, unbatched = shapes["gflops"], shapes["config"]["unbatched_gflops"]
      parts.append(
          f"Matmuls at this workload's shapes alone reach {batched:.0f} GFLOP/s "
          f"({batched / peak:.0%} of peak) batched per signal as the package runs them, "
          f"{unbatched:.0f} as separate 2-D matmuls: that is the ceiling for a step "
          "made only of these matmuls.")
    if plain:
      parts.append(
          f"The hand-written step of the same math reaches {plain['gflops']:.0f} "
          f"GFLOP/s; the package's step takes {r['median_s'] / plain['median_s']:.2f}x "
          "its time.")
    if r["gflops"] < target:
      parts.append(
          f"Between the matmul ceiling and the step lies work the FLOP count leaves "
          f"out: {uncounted}, each a memory-bound pass over points x 256 floats at a "
          "small fraction of the matmul rate, plus per-op scheduling in graph mode.")
    load = max(r.get("loadavg_before", 0), r.get("loadavg_after", 0))
    cores = os.cpu_count() or 1
    # A workload's own threads load every core; only more than that means sharing.
    if load > 1.5 * cores:
      parts.append(f"The load average was {load:.1f} on {cores} cores while it ran: "
                   "other processes took CPU time and the figure is pessimistic.")
    notes += [" ".join(parts), ""]
  verdicts = memory_verdicts(results)
  for algorithm in ("reptile", "maml_fo"):
    v = verdicts.get(algorithm)
    if v and not v["flat"]:
      notes += [f"**{ALGORITHM_TITLES[algorithm]} memory** grows by "
                f"{v['slope_mb_per_step']:.1f} MB per inner step: something of each "
                "inner step is kept until the end of the outer step.", ""]
  v = verdicts.get("maml_so")
  if v and not v["linear"]:
    notes += ["**Second-order MAML memory** grows faster than linearly: per-step "
              "increments " + ", ".join(f"{d:.0f}" for d in v["increments"]) + " MB.",
              ""]
  return notes


def markdown(results, machine, command, quick=False, notes=None):
  """The BENCHMARKS.md text for a dict {workload name: result}."""
  peak = peak_gflops(results)
  lines = ["# Benchmarks", ""]
  if quick:
    lines += ["**Quick mode**: tiny sizes for checking the tool, not the figures the "
              "goals refer to.", ""]
  lines += [
      "Speed and memory of meta-training and test-time optimisation, measured on this "
      "machine against its own float32 matmul peak. Reproduce with", "",
      f"    {command}", "",
      "(`python bin/benchmark.py` is the same). Each workload runs in its own process; "
      "times are medians over repeated calls after warm-up. *Compile s* is the first "
      "call (tracing, graph optimisation or XLA compilation, and one execution) minus "
      "the median call. "
      "*Baseline RSS* is the process after importing TensorFlow, building the model "
      "and loading the data; *peak RSS* the highest resident memory while the workload "
      "ran (the kernel's high-water mark, reset after set-up); *workload MB* their "
      "difference.", "",
      "## Machine", "",
      "| | |", "|---|---|",
      f"| CPU | {machine.get('cpu')} |",
      f"| cores | {machine.get('cores')} |",
      f"| memory | {machine.get('memory_gb')} GB |",
      f"| GPUs | {', '.join(machine.get('gpus') or []) or 'none'} |",
      f"| TensorFlow | {machine.get('tensorflow')} (Python {machine.get('python')}) |",
      f"| TF_ENABLE_ONEDNN_OPTS | {machine.get('onednn', 'unset')} |",
      f"| platform | {machine.get('platform')} |",
      f"| date | {machine.get('date')} |",
      f"| run time | {machine.get('run_minutes', 0):.0f} min |", ""]
  loads = [r.get("loadavg_after", 0) for r in results.values()]
  if loads and machine.get("cores") and max(loads) > 1.5 * machine["cores"]:
    lines += [f"Note: the 1-minute load average reached {max(loads):.1f} on "
              f"{machine['cores']} cores during the run: other jobs shared the CPU and "
              "the times are pessimistic (per-workload loads are in the JSON).", ""]
  lines += ["## Matmul peak", ""]
  for n, r in results.items():
    if r.get("kind") == "matmul" and "error" not in r:
      when = "end" if n.endswith("_end") else "start"
      lines.append(f"- {r['title']}, at the {when} of the run: {r['gflops']:.0f} GFLOP/s "
                   f"(median {_ms(r['median_s'])} ms); numpy: "
                   f"{r['config']['numpy_gflops']:.0f} GFLOP/s.")
  for r in results.values():
    if r.get("kind") == "matmul_shapes" and "error" not in r:
      frac = f" ({r['gflops'] / peak:.0%} of peak)" if peak else ""
      lines.append(f"- {r['title']}: {r['gflops']:.0f} GFLOP/s{frac} with per-signal "
                   f"weights (batched matmul); {r['config']['unbatched_gflops']:.0f} "
                   "GFLOP/s as separate 2-D matmuls.")
  lines += ["", f"Peak used for the fractions below: **{_fmt(peak, 0)} GFLOP/s**, the "
            "highest of these 4096² measurements (TensorFlow's and numpy's, at the start "
            "and end of the run): what this machine's cores deliver in a dense matmul, "
            "whichever library gets there.", ""]

  lines += ["## Goals", "", "| goal | measured | met |", "|---|---|---|"]
  for goal, figure, met in goals(results, quick):
    lines.append(f"| {goal} | {figure} | {'yes' if met else '**no**'} |")
  lines += [""] + list(notes or explain(results, quick)) + [""]

  sections = [
      ("MAML outer steps (SIREN 5x256, batch 3, K=2, second order)", "maml"),
      ("Hand-written MAML baseline (same math, unbatched weights, Python loop)",
       "plain"),
      ("Reptile outer steps", "reptile"), ("CT Reptile outer steps", "ct"),
  ]
  for title, group in sections:
    names = _names(results, group)
    if names:
      lines += [f"## {title}", ""] + _workload_rows(results, names, peak) + [""]
  names = _names(results, "nerf")
  if names:
    lines += ["## NeRF (ShapeNet)", ""]
    steps = [n for n in names if "render" not in n]
    renders = [n for n in names if "render" in n]
    lines += _workload_rows(results, steps, peak) + [""]
    lines += _workload_rows(results, renders, peak,
                            ("rays/s", lambda r: r["per_call"]["rays"] / r["median_s"]))
    lines += [""]
  names = _names(results, "tto")
  if names:
    lines += ["## Test-time optimisation (Adam, one signal, steps per call as listed)",
              ""]
    lines += _workload_rows(results, names, peak,
                            ("steps/s", lambda r: r["per_call"]["steps"] / r["median_s"]))
    lines += [""]

  verdicts = memory_verdicts(results)
  if _names(results, "scaling_k"):
    rows = [(a, r["config"]["inner_steps"], r) for a in ALGORITHM_TITLES
            for r in k_sweep(results, a)]
    lines += ["## Scaling with inner steps K (SIREN 5x256, batch 3, graph mode)", ""]
    lines += _sweep_rows("K", rows, peak) + [""]
    for algorithm, v in verdicts.items():
      lines.append(f"- {ALGORITHM_TITLES[algorithm]}: least-squares slope "
                   f"{_signed(v['slope_mb_per_step'])} MB per inner step at "
                   f"{v['points']:,} points per step "
                   f"({_signed(v['bytes_per_point_step'] / 1024, 2)} KiB per point and "
                   "step).")
    lines += [""]
    estimates = paper_memory_estimates(verdicts)
    if estimates:
      lines += [
          "### Does second-order MAML fit on one 80 GB GPU at paper scale?", "",
          "Activation memory of second-order MAML = (measured bytes per point and inner "
          "step of SIREN 5x256) x (the field's summed layer widths relative to "
          "SIREN's) x points per step x K; weights and optimizer state are negligible "
          "(< 10 MB). This is a CPU graph-mode figure used as an estimate for the GPU.",
          "", "| configuration | points per step | K | estimate GB | fits in 80 GB |",
          "|---|---|---|---|---|"]
      for e in estimates:
        lines.append(f"| {e['config']} | {e['points']:,} | {e['inner_steps']} | "
                     f"{e['gb']:.1f} | {'yes' if e['fits'] else '**no**'} |")
      lines.append("")
      if all(e["fits"] for e in estimates):
        flat = [ALGORITHM_TITLES[a] for a in ("reptile", "maml_fo")
                if verdicts.get(a, {}).get("flat")]
        lines += ["Every paper-scale configuration fits, so no memory-bounded "
                  "(recomputing) variant of the inner loop was added: it would cost "
                  "about one more forward and backward pass per inner step to save "
                  "memory that is not short." +
                  (f" {' and '.join(flat)} stay flat in K." if flat else ""), ""]
      else:
        lines += ["Some configuration does not fit: a memory-bounded inner loop "
                  "(recomputing inner steps in the backward pass) is needed for it.",
                  ""]

  if _names(results, "scaling_res"):
    order = list(ALGORITHM_TITLES)
    rows = sorted(((r["config"]["algorithm"], r["config"]["resolution"], r)
                   for n, r in results.items() if "error" not in r and (
                       n.startswith("res_") or (n.startswith("maml_so_r") and
                                                n.endswith("_graph")))),
                  key=lambda x: (order.index(x[0]), x[1]))
    lines += ["## Scaling with resolution (SIREN 5x256, batch 3, K=2, graph mode)", ""]
    lines += _sweep_rows("resolution", [(a, f"{v}²", r) for a, v, r in rows], peak)
    lines += [""]

  names = _names(results, "pipeline")
  if names:
    lines += [
        "## Input pipelines", "",
        "Signals per second the training loop's `tf.data` pipeline delivers "
        "(`Task.train_dataset(seed).batch(B).prefetch(2)`, measured alone), against "
        "the fastest training step that consumes it (B / median step time). *Load* "
        "is consumption / delivery: the share of the pipeline's standalone throughput "
        "the training step needs. Preparation (rendering / generating / reading the "
        "signals into memory) happens once per run.", "",
        "| dataset | resolution | prepared signals | preparation s | pipeline "
        "signals/s | consumer | consumption signals/s | load |",
        "|---|---|---|---|---|---|---|---|"]
    for n in names:
      r = results[n]
      if "error" in r:
        lines.append(f"| {n} | failed: {r['error'].splitlines()[-1][:120]} |")
        continue
      consumer, rate = _consumer(results, n, r)
      load = rate / r["signals_per_second"] if rate else None
      lines.append(
          f"| {r['dataset']} ({r['note']}) | {r['resolution']}² | "
          f"{r['num_prepared'] or '–'} "
          f"| {_fmt(r['prepare_seconds'], 1)} | {_fmt(r['signals_per_second'], 0)} | "
          f"{consumer or '–'} | {_fmt(rate, 2)} | "
          f"{_fmt(load * 100, 2) + '%' if load is not None else '–'} |")
    lines += [""]

  lines += ["## How FLOPs are counted", "", "```", FLOP_RULES, "```", "",
            "GFLOP/s = counted FLOPs of one call / median call time. Per-point FLOPs of "
            "the paper fields: SIREN 5x256 (2->256->256->256->256->3) F = 395,776, "
            "F1 = 1,024; CT Fourier MLP (512->256x4->1) F = 655,872, F1 = 262,144; "
            "NeRF MLP (120->256x5->4) F = 587,776, F1 = 61,440.", ""]
  return "\n".join(lines)


def _consumer(results, name, r):
  key = name[len("pipeline_"):]
  best = (None, None)
  for pattern in PIPELINE_CONSUMERS.get(key, ()):
    c = _ok(results, pattern.format(r=r["resolution"]))
    if not c:
      continue
    batch = c["config"].get("batch", 1)
    rate = batch / c["median_s"]
    if best[1] is None or rate > best[1]:
      best = (c["title"].split(",")[0] + f" ({c.get('mode', '')})", rate)
  return best


# ------------------------------------------------------------------------------------
# Child-process entry point.


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--one", required=True, help="workload name")
  parser.add_argument("--quick", action="store_true")
  parser.add_argument("--repeats", type=int, default=None)
  parser.add_argument("--warmup", type=int, default=None)
  args = parser.parse_args(argv)
  result = run_one(args.one, args.quick, args.repeats, args.warmup)
  print(RESULT_PREFIX + json.dumps(result), flush=True)


def parse_result(stdout):
  """The result dict a child printed, or None."""
  for line in reversed(stdout.splitlines()):
    if line.startswith(RESULT_PREFIX):
      return json.loads(line[len(RESULT_PREFIX):])
  return None


if __name__ == "__main__":
  main()
