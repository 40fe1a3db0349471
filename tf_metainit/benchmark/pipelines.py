"""Input pipelines: signals per second of the tf.data pipeline meta-training reads."""

import shutil
import statistics
import tempfile
import time

import numpy as np
import tensorflow as tf

from tf_metainit.benchmark import workloads
from tf_metainit.data import tfds_images


def build_pipeline(dataset, resolution, num, batch, repeats):
  """Signals/s of the tf.data pipeline meta_train iterates (batched, prefetched)."""
  t0 = time.perf_counter()
  data_dir = None
  note = "in-memory arrays, shuffled indices (Task.train_dataset)"
  if dataset == "text":
    ds = workloads.image_task(resolution, num).train_dataset(0)
  elif dataset == "ct":
    ds = workloads.ct_task(resolution, num_train=num).train_dataset(0)
  elif dataset.startswith("shapenet"):
    data_dir = tempfile.mkdtemp(prefix="tf_metainit_bench_")
    in_memory = dataset == "shapenet"
    ds = workloads.shapenet_task(data_dir, resolution, num_train=num,
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
