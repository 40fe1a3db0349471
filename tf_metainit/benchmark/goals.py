"""The speed and memory goals: whether each is met, and notes on why."""

import os

from tf_metainit.benchmark import analysis
from tf_metainit.benchmark import formatting
from tf_metainit.benchmark import specs


def goals(results, quick=False):
  """[(goal, measured figure, met)] for the speed and memory goals."""
  peak = analysis.peak_gflops(results)
  out = []
  res = 32 if quick else 64
  target = analysis.ok(results, f"maml_so_r{res}_graph")
  plain = analysis.ok(results, f"plain_maml_r{res}_graph")
  if target and peak:
    frac = target["gflops"] / peak
    fig = f"{target['gflops']:.0f} GFLOP/s = {frac:.0%} of {peak:.0f}"
    if plain:
      fig += (f" (hand-written: {plain['gflops']:.0f} GFLOP/s = "
              f"{plain['gflops'] / peak:.0%})")
    out.append((f"MAML outer step at {res}² ≥ 65% of the matmul peak", fig,
                frac >= 0.65))
  jax_loop = analysis.ok(results, f"jax_maml_r{res}_loop")
  if target and jax_loop:
    ratio = jax_loop["median_s"] / target["median_s"]
    vmap = analysis.ok(results, f"jax_maml_r{res}_vmap")
    fig = (f"{ratio:.2f}x (JAX loop {formatting.ms(jax_loop['median_s'])} ms, "
           f"package {formatting.ms(target['median_s'])} ms"
           + (f"; JAX vmap {formatting.ms(vmap['median_s'])} ms" if vmap else "") + ")")
    out.append((f"MAML outer step at {res}² ≥ 2x as fast as JAX jit (loop), same run",
                fig, ratio >= 2.0))
  tto = analysis.ok(results, f"tto_siren_r{res}_graph")
  if tto:
    out.append((f"test-time optimisation of SIREN 5x256 on a {res}² image "
                "≥ 250 GFLOP/s", f"{tto['gflops']:.0f} GFLOP/s, "
                f"{tto['per_call']['steps'] / tto['median_s']:.1f} steps/s",
                tto["gflops"] >= 250))
  verdicts = analysis.memory_verdicts(results)
  for algorithm in ("reptile", "maml_fo"):
    v = verdicts.get(algorithm)
    if v:
      out.append((f"{specs.ALGORITHM_TITLES[algorithm]} memory flat in K",
                  f"{formatting.signed(v['slope_mb_per_step'])} MB per inner step "
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
  peak = analysis.peak_gflops(results)
  res = 32 if quick else 64
  notes = []
  cases = (("MAML outer step", f"maml_so_r{res}_graph", f"plain_maml_r{res}_graph",
            "matmul_siren_b3", 0.65 * peak if peak else None,
            "sin/cos of every activation with their first and second derivatives, "
            "the losses and the SGD and Adam updates"),
           ("Test-time optimisation", f"tto_siren_r{res}_graph", None,
            "matmul_siren_b1", 250.0,
            "sin/cos of every activation and their derivatives, the loss and the "
            "Adam update"))
  for what, name, plain_name, shapes_name, target, uncounted in cases:
    r, plain, shapes = (analysis.ok(results, n)
                        for n in (name, plain_name or "", shapes_name))
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
  verdicts = analysis.memory_verdicts(results)
  for algorithm in ("reptile", "maml_fo"):
    v = verdicts.get(algorithm)
    if v and not v["flat"]:
      notes += [f"**{specs.ALGORITHM_TITLES[algorithm]} memory** grows by "
                f"{v['slope_mb_per_step']:.1f} MB per inner step: something of each "
                "inner step is kept until the end of the outer step.", ""]
  v = verdicts.get("maml_so")
  if v and not v["linear"]:
    notes += ["**Second-order MAML memory** grows faster than linearly: per-step "
              "increments " + ", ".join(f"{d:.0f}" for d in v["increments"]) + " MB.",
              ""]
  return notes
