"""The BENCHMARKS.md text: one function per section, joined by `markdown()`."""

from tf_metainit.benchmark import analysis
from tf_metainit.benchmark import flops
from tf_metainit.benchmark import formatting
from tf_metainit.benchmark import goals
from tf_metainit.benchmark import specs


def markdown(results, machine, command, quick=False, notes=None):
  """The BENCHMARKS.md text for a dict {workload name: result}."""
  peak = analysis.peak_gflops(results)
  lines = (_introduction(command, quick) + _machine(results, machine)
           + _matmul_peak(results, peak) + _goals(results, quick, notes)
           + _outer_steps(results, peak) + _profile(results, peak)
           + _nerf(results, peak)
           + _test_time(results, peak) + _time_to_psnr(results)
           + _photo_to_psnr(results) + _folder_throughput(results)
           + _scaling_k(results, peak)
           + _scaling_resolution(results, peak) + _pipelines(results)
           + _paper_wall_time(results, peak) + _flop_counting())
  return "\n".join(lines)


def _introduction(command, quick):
  lines = ["# Benchmarks", ""]
  if quick:
    lines += ["**Quick mode**: tiny sizes for checking the tool, not the figures the "
              "goals refer to.", ""]
  return lines + [
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
      "difference.", ""]


def _machine(results, machine):
  lines = [
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
  return lines


def _matmul_peak(results, peak):
  lines = ["## Matmul peak", ""]
  for n, r in results.items():
    if r.get("kind") == "matmul" and "error" not in r:
      when = "end" if n.endswith("_end") else "start"
      lines.append(f"- {r['title']}, at the {when} of the run: {r['gflops']:.0f} GFLOP/s "
                   f"(median {formatting.ms(r['median_s'])} ms); numpy: "
                   f"{r['config']['numpy_gflops']:.0f} GFLOP/s.")
  for r in results.values():
    if r.get("kind") == "matmul_shapes" and "error" not in r:
      frac = f" ({r['gflops'] / peak:.0%} of peak)" if peak else ""
      lines.append(f"- {r['title']}: {r['gflops']:.0f} GFLOP/s{frac} with per-signal "
                   f"weights (batched matmul); {r['config']['unbatched_gflops']:.0f} "
                   "GFLOP/s as separate 2-D matmuls.")
  return lines + [
      "", f"Peak used for the fractions below: **{formatting.fmt(peak, 0)} GFLOP/s**, "
      "the highest of these 4096² measurements (TensorFlow's and numpy's, at the "
      "start and end of the run): what this machine's cores deliver in a dense "
      "matmul, whichever library gets there.", ""]


def _goals(results, quick, notes):
  lines = ["## Goals", "", "| goal | measured | met |", "|---|---|---|"]
  for goal, figure, met in goals.goals(results, quick):
    lines.append(f"| {goal} | {figure} | {'yes' if met else '**no**'} |")
  return lines + [""] + list(notes or goals.explain(results, quick)) + [""]


def _outer_steps(results, peak):
  sections = [
      ("MAML outer steps (SIREN 5x256, batch 3, K=2, second order)", "maml"),
      ("Hand-written MAML baseline (same math, unbatched weights, Python loop)",
       "plain"),
      ("The same MAML step in JAX, the reference's framework (jax.jit; the signals "
       "in a Python loop unrolled under jit, or vmap; the optional `compare` extra)",
       "jax"),
      ("MAML over tf.distribute replicas (MirroredStrategy on logical CPU devices of "
       "the same 2 cores: the cost of the split and the all-reduce)", "replicas"),
      ("Reptile outer steps", "reptile"), ("CT Reptile outer steps", "ct"),
  ]
  lines = []
  for title, group in sections:
    names = _names(results, group)
    if names:
      lines += [f"## {title}", ""] + _workload_rows(results, names, peak) + [""]
  return lines


def _profile(results, peak):
  lines = []
  for n in _names(results, "profile"):
    r = results[n]
    if "error" in r:
      lines += [f"## Profile: {n}", "", f"failed: {r['error'].splitlines()[-1][:200]}",
                ""]
      continue
    total = sum(r["kinds_s"].values())
    matmul = r["kinds_s"].get("matmuls", 0.0)
    lines += [
        f"## Where the time goes: {r['title']}", "",
        f"TensorFlow's profiler over {r['config']['calls']} calls after warm-up; each "
        "kernel's duration summed by kind (two inter-op threads can run kernels at "
        "once, so the sum can exceed the wall time). Under the profiler a step took "
        f"{formatting.ms(r['step_s'])} ms, and some kernel was running for "
        f"{r['busy_s'] / r['step_s']:.0%} of it (the rest: scheduling between "
        "kernels and the profiler's own cost).", "",
        "| kind | kernel ms per step | share of kernel time |", "|---|---|---|"]
    for kind, seconds in sorted(r["kinds_s"].items(), key=lambda kv: -kv[1]):
      lines.append(f"| {kind} | {formatting.ms(seconds)} | {seconds / total:.0%} |")
    rate = r["flops"] / matmul / 1e9 if matmul else None
    lines += ["", f"The matmul kernels do all {r['flops'] / 1e9:.1f} GFLOP the step "
              f"counts in {formatting.ms(matmul)} ms of kernel time: "
              f"{formatting.fmt(rate, 0)} GFLOP/s"
              + (f" ({rate / peak:.0%} of peak)" if rate and peak else "")
              + "; the other kinds are the time a step spends beyond them. "
              "Largest op types: " + ", ".join(
                  f"{t} {formatting.ms(s)} ms" for t, s in r["top_ops_s"].items())
              + ".", ""]
  return lines


def _nerf(results, peak):
  names = _names(results, "nerf")
  if not names:
    return []
  steps = [n for n in names if "render" not in n]
  renders = [n for n in names if "render" in n]
  rays_per_s = ("rays/s", lambda r: r["per_call"]["rays"] / r["median_s"])
  return (["## NeRF (ShapeNet and Phototourism)", ""] + _workload_rows(results, steps, peak) + [""]
          + _workload_rows(results, renders, peak, rays_per_s) + [""])


def _time_to_psnr(results):
  names = _names(results, "time_to_psnr")
  if not names:
    return []
  lines = ["## From an image file to 25 and 30 dB", "",
           "What `tf-metainit-fit` costs a user on this CPU: decoding a held-out Text "
           "image's PNG, building the fit (tracing included) and running the steps it "
           "needs, from the shipped 'text' init (its learned rates) and from the "
           "Standard init (Adam 1e-4); TensorFlow's import (about 5 s) excluded. The "
           "steps are found once, then the whole call is timed.", "",
           "| image | init | target | steps | median s (min–max) |", "|---|---|---|---|---|"]
  for n in names:
    r = results[n]
    if "error" in r:
      lines.append(f"| {n} | failed: {r['error'].splitlines()[-1][:120]} | | | |")
      continue
    c = r["config"]
    steps = str(c["steps"]) if c["reached"] else f">{c['max_steps']} (not reached)"
    init = "shipped 'text'" if c["init"] == "meta" else "Standard"
    lines.append(f"| {c['resolution']}² | {init} | {c['target_db']:g} dB | {steps} | "
                 f"{r['median_s']:.2f} ({r['min_s']:.2f}–{r['max_s']:.2f}) |")
  return lines + [""]


def _photo_to_psnr(results):
  names = _names(results, "photo_to_psnr")
  if not names:
    return []
  lines = ["## From a photograph to 25 and 30 dB", "",
           "What `tf-metainit-fit` costs a user on this CPU, one run each in a fresh "
           "process: from a held-out photograph's file (scikit-image's samples, "
           "centre-cropped and resized, or at its own size) to the step whose PSNR "
           "reaches each target, decoding and the fit's build and tracing included "
           "(TensorFlow's import not); peak RSS is the process's. Meta: a shipped "
           "init, its learned steps, then Adam or its last learned rates; "
           "Standard: Adam; each as chosen on validation photographs "
           "(docs/any_size/choices.json). '>N' = not reached in the N steps run.", "",
           "| photo | size | init | Adam rate | 25 dB: s (steps) | 30 dB: s (steps) | "
           "PSNR at the last step | peak RSS MB |", "|---|---|---|---|---|---|---|---|"]
  for n in names:
    r = results[n]
    if "error" in r:
      lines.append(f"| {n} | failed: {r['error'].splitlines()[-1][:120]} | | | | | | |")
      continue
    c = r["config"]
    cells = []
    for target in ("25", "30"):
      hit = r["reached"][target]
      cells.append(f">{r['run_s']:.1f} (>{c['max_steps']})" if hit is None else
                   f"{hit['seconds']:.1f} ({hit['steps']})")
    init = "Standard" if c["init"] == "standard" else f"Meta ('{c['init']}')"
    rate = "its learned rates" if c["rate"] is None else f"{c['rate']:g}"
    lines.append(f"| {c['photo']} | {c['size'][0]}x{c['size'][1]} | {init} | "
                 f"{rate} | {cells[0]} | {cells[1]} | "
                 f"{r['final_psnr']:.2f} dB after {c['max_steps']} | "
                 f"{r['peak_rss_mb']:,.0f} |")
  return lines + [""]


def _folder_throughput(results):
  names = _names(results, "folder_throughput")
  if not names:
    return []
  lines = ["## Many images at once: images per second to 30 dB", "",
           "What `tf-metainit-fit-folder` sustains: a batch of held-out dead leaves "
           "images fitted together (one set of weights per image) until every one "
           "reaches 30 dB, the compiled fit reused as a folder's later batches reuse "
           "it; tracing excluded. Meta: a shipped init with its own test-time "
           "optimizer, or its learned steps then Adam (`--adam_rate`); Standard: "
           "Adam. Each takes the candidate that needs the fewest steps on a "
           "validation batch (another seed); a 2-replica row reuses its 1-replica "
           "row's choice (the same math). Replicas: logical CPU devices under "
           "MirroredStrategy sharing each batch (on a GPU machine, GPUs).", "",
           "| size | init | replicas | batch | Adam rate | steps to 30 dB | s per batch | "
           "images/s | peak RSS MB |", "|---|---|---|---|---|---|---|---|---|"]
  for n in names:
    r = results[n]
    if "error" in r:
      lines.append(f"| {n} | failed: {r['error'].splitlines()[-1][:120]} | | | | | | | |")
      continue
    c = r["config"]
    init = "Standard" if c["init"] == "standard" else f"Meta ('{c['init']}')"
    rate = ("none reached" if "rate" not in c else "its own" if c["rate"] is None
            else f"{c['rate']:g}" if c["init"] == "standard"
            else f"its own, then {c['rate']:g}")
    if r["steps"] is None:
      cells = f"> {c['max_steps']} (not reached) | | "
    else:
      cells = f"{r['steps']} | {r['seconds']:.2f} | {r['images_per_s']:.3g}"
    lines.append(f"| {c['resolution']}² | {init} | {c['replicas']} | {c['batch']} | "
                 f"{rate} | {cells} | {r['peak_rss_mb']:,.0f} |")
  return lines + [""]


def _test_time(results, peak):
  names = _names(results, "tto")
  if not names:
    return []
  steps_per_s = ("steps/s", lambda r: r["per_call"]["steps"] / r["median_s"])
  return (["## Test-time optimisation (Adam, one signal, steps per call as listed)", ""]
          + _workload_rows(results, names, peak, steps_per_s) + [""])


def _scaling_k(results, peak):
  if not _names(results, "scaling_k"):
    return []
  verdicts = analysis.memory_verdicts(results)
  rows = [(a, r["config"]["inner_steps"], r) for a in specs.ALGORITHM_TITLES
          for r in analysis.k_sweep(results, a)]
  lines = ["## Scaling with inner steps K (SIREN 5x256, batch 3, graph mode)", ""]
  lines += _sweep_rows("K", rows, peak) + [""]
  for algorithm, v in verdicts.items():
    lines.append(f"- {specs.ALGORITHM_TITLES[algorithm]}: least-squares slope "
                 f"{formatting.signed(v['slope_mb_per_step'])} MB per inner step at "
                 f"{v['points']:,} points per step "
                 f"({formatting.signed(v['bytes_per_point_step'] / 1024, 2)} KiB per "
                 "point and step).")
  return lines + [""] + _paper_memory(verdicts)


def _paper_memory(verdicts):
  estimates = analysis.paper_memory_estimates(verdicts)
  if not estimates:
    return []
  lines = [
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
  if not all(e["fits"] for e in estimates):
    return lines + ["Some configuration does not fit: a memory-bounded inner loop "
                    "(recomputing inner steps in the backward pass) is needed for it.",
                    ""]
  flat = [specs.ALGORITHM_TITLES[a] for a in ("reptile", "maml_fo")
          if verdicts.get(a, {}).get("flat")]
  return lines + ["Every paper-scale configuration fits, so no memory-bounded "
                  "(recomputing) variant of the inner loop was added: it would cost "
                  "about one more forward and backward pass per inner step to save "
                  "memory that is not short." +
                  (f" {' and '.join(flat)} stay flat in K." if flat else ""), ""]


def _scaling_resolution(results, peak):
  if not _names(results, "scaling_res"):
    return []
  order = list(specs.ALGORITHM_TITLES)
  # The second-order points are the main MAML workloads (graph mode).
  rows = sorted(((r["config"]["algorithm"], r["config"]["resolution"], r)
                 for n, r in results.items() if "error" not in r and (
                     n.startswith("res_") or (n.startswith("maml_so_r") and
                                              n.endswith("_graph")))),
                key=lambda x: (order.index(x[0]), x[1]))
  return (["## Scaling with resolution (SIREN 5x256, batch 3, K=2, graph mode)", ""]
          + _sweep_rows("resolution", [(a, f"{v}²", r) for a, v, r in rows], peak)
          + [""])


def _pipelines(results):
  names = _names(results, "pipeline")
  if not names:
    return []
  lines = [
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
  return lines + [_pipeline_row(results, n) for n in names] + [""]


def _pipeline_row(results, name):
  r = results[name]
  if "error" in r:
    return f"| {name} | failed: {r['error'].splitlines()[-1][:120]} |"
  consumer, rate = _consumer(results, name, r)
  load = rate / r["signals_per_second"] if rate else None
  return (f"| {r['dataset']} ({r['note']}) | {r['resolution']}² | "
          f"{r['num_prepared'] or '–'} "
          f"| {formatting.fmt(r['prepare_seconds'], 1)} | "
          f"{formatting.fmt(r['signals_per_second'], 0)} | "
          f"{consumer or '–'} | {formatting.fmt(rate, 2)} | "
          f"{formatting.fmt(load * 100, 2) + '%' if load is not None else '–'} |")


def _consumer(results, name, r):
  """(title, signals/s) of the fastest training workload that consumes pipeline
  `name`'s signals, or (None, None)."""
  key = name[len("pipeline_"):]
  best = (None, None)
  for pattern in specs.PIPELINE_CONSUMERS.get(key, ()):
    c = analysis.ok(results, pattern.format(r=r["resolution"]))
    if not c:
      continue
    batch = c["config"].get("batch", 1)
    rate = batch / c["median_s"]
    if best[1] is None or rate > best[1]:
      best = (c["title"].split(",")[0] + f" ({c.get('mode', '')})", rate)
  return best


def _paper_wall_time(results, peak):
  rows = analysis.paper_wall_times(results, peak)
  if not rows:
    return []
  lines = ["## Paper-scale wall time on GPUs (an estimate on paper)", "",
           f"From each run's measured FLOPs per outer step, on a GPU of "
           f"{analysis.GPU_FP32_TFLOPS:g} TFLOP/s float32 (A100, no tensor cores) "
           "reaching the fraction of its peak this CPU reaches of its own. On 8 GPUs "
           "(train/distribute.strategy = 'mirrored') each GPU takes the paper's batch, so a "
           "step sees 8x the signals and the paper's signals are seen in 1/8 of the "
           "steps; the all-reduce of the weights is negligible beside a step. Not "
           "measured: no GPU here.", "",
           "| run | GFLOP/step | steps | fraction of peak (here) | 1 GPU h | "
           "8 GPUs h (batch) |", "|---|---|---|---|---|---|"]
  for r in rows:
    lines.append(f"| {r['run']} | {r['gflop_per_step']:.0f} | {r['steps']:,} | "
                 f"{r['efficiency']:.0%} | {r['hours_1']:.1f} | "
                 f"{r['hours_8']:.1f} ({r['batch_8']}) |")
  return lines + [""]


def _flop_counting():
  return ["## How FLOPs are counted", "", "```", flops.FLOP_RULES, "```", "",
          "GFLOP/s = counted FLOPs of one call / median call time. Per-point FLOPs of "
          "the paper fields: SIREN 5x256 (2->256->256->256->256->3) F = 395,776, "
          "F1 = 1,024; CT Fourier MLP (512->256x4->1) F = 655,872, F1 = 262,144; "
          "NeRF MLP (120->256x5->4) F = 587,776, F1 = 61,440.", ""]


# ------------------------------------------------------------------------------------
# Tables.


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
    extra = f" {formatting.fmt(rate[1](r), 1)} |" if rate else ""
    median = (f"{formatting.ms(r['median_s'])} ({formatting.ms(r['min_s'])}–"
              f"{formatting.ms(r['max_s'])})")
    lines.append(
        f"| {r['title']} | {r['mode']} | {formatting.fmt(r['compile_s'], 1)} | "
        f"{median} | {formatting.fmt(r['flops'] / 1e9, 1)} | "
        f"{formatting.fmt(r['gflops'], 0)} | {formatting.fmt(frac, 0)}% |{extra} "
        f"{formatting.fmt(r['baseline_rss_mb'], 0)} | "
        f"{formatting.fmt(r['peak_rss_mb'], 0)} | "
        f"{formatting.fmt(r['workload_mb'], 0)} |")
  return lines


def _sweep_rows(variable, rows, peak):
  """Table of (algorithm, value of `variable`, result) rows."""
  lines = [f"| algorithm | {variable} | median ms | GFLOP/s | % of peak | peak RSS MB | "
           "workload MB |", "|---|---|---|---|---|---|---|"]
  for algorithm, value, r in rows:
    frac = r["gflops"] / peak * 100 if peak else None
    lines.append(f"| {specs.ALGORITHM_TITLES[algorithm]} | {value} | "
                 f"{formatting.ms(r['median_s'])} | "
                 f"{formatting.fmt(r['gflops'], 0)} | {formatting.fmt(frac, 0)}% | "
                 f"{formatting.fmt(r['peak_rss_mb'], 0)} | "
                 f"{formatting.fmt(r['workload_mb'], 0)} |")
  return lines


def _names(results, group):
  return [n for n, r in results.items() if r.get("group") == group]
