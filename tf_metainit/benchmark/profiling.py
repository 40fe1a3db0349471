"""Where an outer step's time goes: the step run under TensorFlow's profiler, its
kernels' times summed by kind (matmuls, sin/cos, other elementwise ops, reductions,
copies) from the trace the profiler writes (an XSpace protobuf, read with the message
class TensorFlow ships)."""

import glob
import os
import shutil
import tempfile
import time

import tensorflow as tf

from tf_metainit.benchmark import meta_workloads

# Kernel kinds by op type (the text after ':' in a kernel event's name); oneDNN's
# variants carry a _Mkl prefix.
KINDS = (
    ("matmuls", lambda t: "MatMul" in t),
    ("sin and cos", lambda t: t in ("Sin", "Cos")),
    ("reductions", lambda t: t in ("Sum", "Mean", "Max", "Min", "Prod", "All", "Any",
                                   "BiasAddGrad")),
    ("copies and shapes", lambda t: t in (
        "Identity", "Reshape", "Transpose", "ConcatV2", "Pack", "Unpack", "Slice",
        "StridedSlice", "Tile", "BroadcastTo", "Fill", "ZerosLike", "OnesLike",
        "Const", "Shape", "ShapeN", "Squeeze", "ExpandDims", "Cast", "GatherV2",
        "BroadcastGradientArgs", "Range", "_EagerConst", "StridedSliceGrad")),
    ("variables and optimizer", lambda t: "Variable" in t or t.startswith(
        "ResourceApply")),
    ("other elementwise", lambda t: True),
)


def kind_of(op_type):
  base = op_type[len("_Mkl"):] if op_type.startswith("_Mkl") else op_type
  return next(name for name, test in KINDS if test(base))


def _space(logdir):
  # Imported here: the message class is TensorFlow's own, not part of its public API.
  from tensorflow.tsl.profiler.protobuf import xplane_pb2  # pylint: disable=g-import-not-at-top
  paths = glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)
  if not paths:
    raise RuntimeError(f"The profiler wrote no trace under {logdir}.")
  space = xplane_pb2.XSpace()
  with open(max(paths, key=os.path.getmtime), "rb") as f:
    space.ParseFromString(f.read())
  return space


def kernel_times(logdir):
  """({op type: seconds summed over its kernels}, seconds some kernel ran) on the
  host CPU: kernel events are 'node:OpType' on the executor's threads (tf_Compute);
  the second figure is the union of their intervals, so gaps are scheduling."""
  plane = next((p for p in _space(logdir).planes if p.name == "/host:CPU"), None)
  if plane is None:
    raise RuntimeError("The profiler's trace has no /host:CPU plane.")
  names = {k: v.name for k, v in plane.event_metadata.items()}
  by_type, intervals = {}, []
  for line in plane.lines:
    if not line.name.startswith("tf_Compute"):
      continue
    for event in line.events:
      name = names[event.metadata_id]
      if ":" not in name or name.startswith(("ExecutorState", "Threadpool")):
        continue
      op_type = name.rsplit(":", 1)[1]
      by_type[op_type] = by_type.get(op_type, 0.0) + event.duration_ps * 1e-12
      start = line.timestamp_ns * 1e3 + event.offset_ps
      intervals.append((start, start + event.duration_ps))
  return by_type, covered(intervals) * 1e-12


def covered(intervals):
  """The length of the union of (start, end) intervals."""
  total, end = 0.0, float("-inf")
  for a, b in sorted(intervals):
    if b > end:
      total += b - max(a, end)
      end = b
  return total


def profile_meta_step(algorithm, resolution, batch, inner_steps, calls=3, jit=False):
  """The package's outer step (meta_workloads.build_image_meta) warmed up, then
  `calls` calls under the profiler: per-call wall time (the profiler's own cost
  included), kernel time by kind and by op type, and how much of the wall time some
  kernel ran."""
  workload = meta_workloads.build_image_meta(algorithm, resolution, batch,
                                             inner_steps, jit)
  for _ in range(2):
    workload.call()
  logdir = tempfile.mkdtemp(prefix="tf_metainit_profile_")
  tf.profiler.experimental.start(logdir)
  t0 = time.perf_counter()
  for _ in range(calls):
    workload.call()
  wall = (time.perf_counter() - t0) / calls
  tf.profiler.experimental.stop()
  try:
    by_type, busy = kernel_times(logdir)
  finally:
    shutil.rmtree(logdir, ignore_errors=True)  # ours, and only read here
  kinds = {}
  for op_type, seconds in by_type.items():
    kinds[kind_of(op_type)] = kinds.get(kind_of(op_type), 0.0) + seconds / calls
  top = sorted(by_type.items(), key=lambda kv: -kv[1])[:12]
  return {"title": workload.title, "config": dict(workload.config, calls=calls),
          "flops": workload.flops, "step_s": wall, "busy_s": busy / calls,
          "kinds_s": kinds, "top_ops_s": {t: s / calls for t, s in top}}
