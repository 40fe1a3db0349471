"""What the measured numbers say: the matmul peak, memory against inner steps K, and
second-order MAML's memory and wall time at the paper's scale."""

import numpy as np

GPU_MEMORY_GB = 80.0

# How each paper configuration would hold second-order MAML activations (points per
# inner step, inner steps, field); used to extrapolate the measured bytes per point-step.
PAPER_CONFIGS = (
    ("Images (CelebA 178², batch 3, K=2): the paper's MAML run", 3 * 178 * 178, 2,
     "siren"),
    ("CT (256², batch 1, K=12) if meta-trained with MAML", 256 * 256, 12, "fourier"),
    ("ShapeNet (128 rays x 128 samples, K=32) with MAML", 128 * 128, 32, "nerf"),
    ("Phototourism (64 rays x 128 samples, K=64) with MAML", 64 * 128, 64, "nerf"),
)


def peak_gflops(results):
  """The machine's float32 matmul peak: the highest of the 4096² matmuls, TensorFlow's
  and numpy's (its BLAS), taken at the start and end of a run."""
  values = [v for r in results.values() if r.get("kind") == "matmul" and "error" not in r
            for v in (r["gflops"], r["config"].get("numpy_gflops", 0.0))]
  return max(values) if values else None


def ok(results, name):
  """The result of workload `name` if it ran without error, else None."""
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


# An A100's float32 (non-tensor-core) matmul peak, the reference for the wall-time
# estimate; the paper's runs took ~40 h (image MAML) on one GPU of its time.
GPU_FP32_TFLOPS = 19.5
# (title, measured workload at the paper's size, outer steps of the paper's run,
#  signals per outer step)
PAPER_RUNS = (
    ("Images: MAML, CelebA 178², batch 3, K=2", "maml_so_r178_graph", 150_000, 3),
    ("CT: Reptile 256², batch 1, K=12", "ct_reptile_r256_graph", 100_000, 1),
    ("ShapeNet: Reptile, 128 rays x 128 samples, K=32", "nerf_reptile_graph", 100_000, 1),
)


def paper_wall_times(results, peak):
  """Hours of the paper's runs on 1 and 8 GPUs, from each workload's measured FLOPs per
  outer step, assuming a GPU reaches the fraction of its peak this CPU reaches of its
  own. 8 GPUs run 8x the signals per step (the paper's batch per GPU: its batch does
  not divide over 8), so they see the paper's signals in 1/8 of the steps; the
  all-reduce of the ~0.2M-0.6M weights is negligible beside the step."""
  rows = []
  for title, name, steps, batch in PAPER_RUNS:
    r = ok(results, name)
    if r is None or not peak:
      continue
    efficiency = r["gflops"] / peak
    seconds = r["flops"] / 1e9 / (GPU_FP32_TFLOPS * 1e3 * efficiency)
    rows.append({"run": title, "gflop_per_step": r["flops"] / 1e9, "steps": steps,
                 "efficiency": efficiency, "hours_1": steps * seconds / 3600,
                 "hours_8": steps / 8 * seconds / 3600, "batch_8": 8 * batch})
  return rows
