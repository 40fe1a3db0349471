"""Measuring one workload inside its own process: machine facts, resident memory,
timing, and the one result line a child process prints for the driver."""

import datetime
import json
import os
import platform
import resource
import statistics
import sys
import time

import tensorflow as tf

from tf_metainit.benchmark import folder_workloads
from tf_metainit.benchmark import jax_workloads
from tf_metainit.benchmark import matmul_workloads
from tf_metainit.benchmark import meta_workloads
from tf_metainit.benchmark import pipelines
from tf_metainit.benchmark import profiling
from tf_metainit.benchmark import specs
from tf_metainit.benchmark import tto_workloads

RESULT_PREFIX = "BENCHMARK_RESULT "


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
# Measuring one workload.

# The builder of each spec kind (specs.workload_specs); pipelines are measured by
# pipelines.build_pipeline itself.
BUILDERS = {
    "matmul": matmul_workloads.build_matmul,
    "matmul_shapes": matmul_workloads.build_matmul_shapes,
    "image_meta": meta_workloads.build_image_meta,
    "plain_maml": meta_workloads.build_plain_maml,
    "jax_maml": jax_workloads.build_jax_maml,  # imports JAX only when built
    "replicated_meta": meta_workloads.build_replicated_meta,
    "ct_reptile": meta_workloads.build_ct_reptile,
    "nerf_reptile": meta_workloads.build_nerf_reptile,
    "nerf_render": tto_workloads.build_nerf_render,
    "landmark_reptile": meta_workloads.build_landmark_reptile,
    "landmark_render": tto_workloads.build_landmark_render,
    "time_to_psnr": tto_workloads.build_time_to_psnr,
    "tto": tto_workloads.build_tto,
}


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


def run_one(name, quick=False, repeats=None, warmup=None, given=None):
  """Builds and measures workload `name` in this process; returns its result dict.
  `given`: the choice of the workload its spec's `choice_of` names, if measured."""
  all_specs = specs.workload_specs(quick)
  if name not in all_specs:
    raise ValueError(f"Unknown workload {name!r}.")
  spec = dict(all_specs[name])
  group, kind = spec.pop("group"), spec.pop("kind")
  spec.pop("choice_of", None)
  repeats = repeats or (2 if quick else 5)
  warmup = 1 if warmup is None else warmup
  load_before = os.getloadavg()
  t0 = time.perf_counter()
  if kind == "pipeline":
    result = pipelines.build_pipeline(repeats=repeats, **spec)
    result["setup_s"] = time.perf_counter() - t0
  elif kind == "photo_to_psnr":  # one user-visible run: the first call is the figure
    result = tto_workloads.measure_photo_fit(
        **spec, peak_rss_mb=lambda: (_status_kb("VmHWM") or 0) / 1024.0)
  elif kind == "profile":  # the step under TensorFlow's profiler, by kernel kind
    result = profiling.profile_meta_step(**spec)
    result["peak_rss_mb"] = (_status_kb("VmHWM") or 0) / 1024.0
  elif kind == "folder_throughput":  # a choice on validation, then one timed batch
    result = folder_workloads.measure_folder_throughput(
        **spec, given=given, peak_rss_mb=lambda: (_status_kb("VmHWM") or 0) / 1024.0)
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


def parse_result(stdout):
  """The result dict a child printed, or None."""
  for line in reversed(stdout.splitlines()):
    if line.startswith(RESULT_PREFIX):
      return json.loads(line[len(RESULT_PREFIX):])
  return None
