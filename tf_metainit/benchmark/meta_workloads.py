"""Outer steps of meta-training: MAML and Reptile as train.py compiles them, and a
hand-written MAML step of the same math as a baseline."""

import itertools

import tensorflow as tf

from tf_metainit import distribute
from tf_metainit.benchmark import flops
from tf_metainit.benchmark import specs
from tf_metainit.benchmark import workloads
from tf_metainit.meta import optimizers
from tf_metainit.meta import outer


def _first_batch(task, batch):
  """One outer batch from the training pipeline, as meta_train receives it."""
  return next(iter(task.train_dataset(0).batch(batch, drop_remainder=True)))


def _outer_step(task, algorithm, inner_steps, inner_lr, outer_lr, signals, jit):
  """The meta-training loop's compiled step (meta/outer.py's assemble, as train.py)."""
  fn = outer.assemble(task, "reptile" if algorithm == "reptile" else "maml",
                      inner_steps, optimizers.SGD(inner_lr), optimizers.Adam(outer_lr),
                      first_order=(algorithm == "maml_fo"), jit_compile=jit).step
  counter = itertools.count()
  # The two losses, as the loop reads them each step.
  return lambda: workloads.sync(fn(signals, tf.constant(next(counter), tf.int64))[:2])


def build_image_meta(algorithm, resolution, batch, inner_steps, jit):
  task = workloads.image_task(resolution, batch)
  signals = _first_batch(task, batch)
  call = _outer_step(task, algorithm, inner_steps, 1e-2, 1e-5, signals, jit)
  points = batch * resolution ** 2
  return workloads.Workload(
      f"{specs.ALGORITHM_TITLES[algorithm]} outer step, SIREN 5x256, {resolution}², "
      f"batch {batch}, K={inner_steps}", call,
      flops.flops(task.field, points, algorithm, inner_steps),
      {"algorithm": algorithm, "field": "siren", "resolution": resolution,
       "batch": batch, "inner_steps": inner_steps, "points": points})


def build_plain_maml(resolution, batch, inner_steps, jit):
  """Hand-written second-order MAML of the same math: unbatched weights, a Python
  loop over the signals, nested tapes, hand-written Adam; nothing from tf_metainit.meta.
  """
  task = workloads.image_task(resolution, batch)
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
  return workloads.Workload(
      f"hand-written MAML (2nd order) outer step, {resolution}², batch {batch}, "
      f"K={inner_steps}", lambda: workloads.sync(fn(images)),
      flops.flops(field, points, "maml_so", inner_steps),
      {"algorithm": "maml_so", "field": "siren", "resolution": resolution,
       "batch": batch, "inner_steps": inner_steps, "points": points})


def build_ct_reptile(resolution, inner_steps, projections, jit):
  task = workloads.ct_task(resolution, projections=projections)
  signals = _first_batch(task, 1)
  call = _outer_step(task, "reptile", inner_steps, 10.0, 5e-5, signals, jit)
  points = resolution ** 2
  return workloads.Workload(
      f"CT Reptile outer step, Fourier MLP 5x256, {resolution}², {projections} "
      f"projections, K={inner_steps}", call,
      flops.flops(task.field, points, "reptile", inner_steps),
      {"algorithm": "reptile", "field": "fourier", "resolution": resolution,
       "batch": 1, "inner_steps": inner_steps, "projections": projections,
       "points": points})


def _nerf_reptile(task, title, inner_steps, inner_lr, rays, samples, jit, **config):
  """A NeRF task's Reptile outer step: `inner_steps` SGD steps on `rays`-ray batches."""
  signals = _first_batch(task, 1)
  call = _outer_step(task, "reptile", inner_steps, inner_lr, 5e-4, signals, jit)
  points = rays * samples
  return workloads.Workload(
      f"{title} Reptile outer step, NeRF MLP 6x256, {inner_steps} steps x {rays} rays "
      f"x {samples} samples", call,
      flops.flops(task.field, points, "reptile", inner_steps),
      {"algorithm": "reptile", "field": "nerf", "rays": rays, "samples": samples,
       "inner_steps": inner_steps, "points": points, **config})


@workloads.nerf_data_dir
def build_nerf_reptile(data_dir, rays, samples, inner_steps, data_resolution, jit):
  task = workloads.shapenet_task(data_dir, data_resolution, rays=rays,
                                 samples=samples)
  return _nerf_reptile(task, "NeRF", inner_steps, 0.5, rays, samples, jit,
                       data_resolution=data_resolution)


@workloads.nerf_data_dir
def build_landmark_reptile(data_dir, rays, samples, inner_steps, long_side, jit):
  task = workloads.landmark_task(data_dir, long_side, rays=rays, samples=samples)
  return _nerf_reptile(task, "Phototourism", inner_steps, 1.0, rays, samples, jit,
                       long_side=long_side)


def build_replicated_meta(resolution, batch, inner_steps, replicas, jit):
  """Second-order MAML under MirroredStrategy over `replicas` logical CPU devices (the
  split of the outer batch and the all-reduce), as train.py runs it."""
  strategy = distribute.get("mirrored", cpu_replicas=replicas)  # before TF starts
  with strategy.scope():
    task = workloads.image_task(resolution, batch)
    fn = outer.assemble(task, "maml", inner_steps, optimizers.SGD(1e-2),
                        optimizers.Adam(1e-5), jit_compile=jit, strategy=strategy).step
  signals = next(iter(strategy.experimental_distribute_dataset(
      task.train_dataset(0).batch(batch, drop_remainder=True))))
  counter = itertools.count()
  points = batch * resolution ** 2
  return workloads.Workload(
      f"MAML (2nd order) outer step over {replicas} logical CPU replica"
      f"{'s' if replicas > 1 else ''}, {resolution}², global batch {batch}, "
      f"K={inner_steps}",
      lambda: workloads.sync(fn(signals, tf.constant(next(counter), tf.int64))),
      flops.flops(task.field, points, "maml_so", inner_steps),
      {"algorithm": "maml_so", "field": "siren", "resolution": resolution,
       "batch": batch, "inner_steps": inner_steps, "points": points,
       "replicas": replicas})
