"""The yardsticks: the machine's float32 matmul peak, and matmuls at a workload's
shapes (the ceiling for a step made only of them)."""

import statistics
import time

import tensorflow as tf

from tf_metainit.benchmark import workloads


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
  return workloads.Workload(f"float32 matmul {n}x{n} (TensorFlow)",
                            lambda: workloads.sync(fn(a, b)), 2 * n ** 3,
                            {"n": n, "numpy_gflops": round(numpy_gflops, 1)})


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
  workloads.sync(unbatched(x, w, d))
  times = []
  for _ in range(5):
    t0 = time.perf_counter()
    workloads.sync(unbatched(x, w, d))
    times.append(time.perf_counter() - t0)
  return workloads.Workload(
      f"one 256-wide layer's forward + backward matmuls, {batch} x {points:,} points",
      lambda: workloads.sync(batched(x, w, d)), work,
      {"points": points, "width": width, "batch": batch,
       "unbatched_gflops": round(work / statistics.median(times) / 1e9, 1)})
