"""Builds a shipped pretrained init with the package's own binaries.

  python docs/pretrained/build.py NAME [--runs=/tmp/pretrained] [--run_dir=DIR]

1. tf-metainit-train  --root_dir=RUNS/NAME --gin_file=pretrained/NAME.gin
   (skipped with --run_dir: an existing run trained with that config is used);
2. tf-metainit-evaluate on it, with gin/pretrained/NAME_eval.gin if present (kept,
   with its wall time, for a rebuild);
3. tf-metainit-export, keeping manifest.json and weights.npz only;
4. tf_metainit/pretrained/NAME/: those two files and MODEL_CARD.md (data, config,
   steps, wall times, the evaluation table, the held-out validation curve, size).
Wall times come from the run's TensorBoard events (training) and the clock (the rest).
"""

import argparse
import glob
import json
import os
import platform
import shutil
import subprocess
import sys
import time

import numpy as np
import tensorflow as tf

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TARGET = os.path.join(REPO, "tf_metainit", "pretrained")


def _run(args):
  print("+", " ".join(args), flush=True)
  t0 = time.time()
  subprocess.run(args, check=True)
  return time.time() - t0


def _binary(name):
  return [sys.executable, os.path.join(REPO, "bin", f"{name}.py")]


def validation_curve(run_dir):
  """[(step, held-out metric)] and the training wall time (s) from the run's events."""
  points, times = {}, []
  for path in glob.glob(os.path.join(run_dir, "train", "events.*")):
    for event in tf.compat.v1.train.summary_iterator(path):
      times.append(event.wall_time)
      for value in event.summary.value:
        if value.tag.startswith("val/psnr"):
          points[event.step] = (value.tag, float(tf.make_ndarray(value.tensor)))
  curve = sorted((step, tag, v) for step, (tag, v) in points.items())
  return curve, (max(times) - min(times)) if times else None


def _curve_table(curve, rows=12):
  keep = np.unique(np.linspace(0, len(curve) - 1, min(rows, len(curve))).astype(int))
  lines = ["| outer step | held-out PSNR (dB) |", "|---|---|"]
  lines += [f"| {curve[k][0]} | {curve[k][2]:.2f} |" for k in keep]
  return "\n".join(lines)


def _collapse_verdict(best, last, margin=3.0):
  """The training loop's own rule: more than `margin` dB below the best is a collapse."""
  if last >= best - margin:
    return "no collapse"
  return f"COLLAPSED, {best - last:.1f} dB below the best (the card's init is the best)"


def _splits_line(splits):
  """Which data trained, validated and tested the init, for the card."""
  if not splits:
    return ("not recorded (built before runs recorded their splits: its best "
            "checkpoint was chosen on the first test signals).")
  return "; ".join(f"{k}: {v}" for k, v in splits.items()) + "."


def _cpu_name():
  """The CPU this build ran on, as /proc/cpuinfo names it."""
  try:
    with open("/proc/cpuinfo") as f:
      names = [l.split(":", 1)[1].strip() for l in f if l.startswith("model name")]
  except OSError:
    names = []
  return f"{os.cpu_count()}-core {names[0] if names else platform.processor()}"


def model_card(name, manifest, results_md, curve, train_s, eval_s, config_text):
  size = os.path.getsize(os.path.join(TARGET, name, "weights.npz"))
  training = manifest["training"]
  best = max(curve, key=lambda c: c[2]) if curve else None
  test_time = manifest.get("test_time", {})
  return f"""# Pretrained init `{name}`

**Task:** {json.dumps(manifest["task"])}

**Splits:** {_splits_line(manifest.get("splits"))}

**Field:** {manifest["field"]["type"]}, width {manifest["field"].get("width")}, depth
{manifest["field"].get("depth")}; weights float32, {size / 1e6:.2f} MB (`weights.npz`).

**Config:** `gin/pretrained/{name}.gin` (the full gin config the run used is in
`manifest.json`, key `gin_config`):

```
{config_text.strip()}
```

**Training:** {training.get("algorithm")}, {training.get("num_iterations")} outer steps,
outer batch {training.get("outer_batch_size")}, {training.get("inner_steps")} inner steps
with {json.dumps(training.get("inner_optimizer"))}; this init is the checkpoint
`{manifest["source"]["checkpoint"]}` (the best by held-out validation).
Training took {train_s / 60:.1f} min on a {_cpu_name()} CPU, no GPU;
the evaluation below {eval_s / 60:.1f} min.

**Test-time settings** (used by `tf-metainit-fit` and `adapt`): {json.dumps(test_time)}.

## Evaluation on held-out signals

Test-time optimisation from this init (Meta) and from the architecture's own (Standard)
on held-out signals; a column per setting (image: every pixel; CT and ShapeNet: the
number of views; Phototourism: the left half fitted, the right half scored).

{results_md.strip()}

## Held-out validation curve during training

The held-out metric after the run's own inner loop, every validation (a selection of
rows); best {best[2]:.2f} dB at step {best[0]}, last {curve[-1][2]:.2f} dB at step
{curve[-1][0]}: {_collapse_verdict(best[2], curve[-1][2])}.

{_curve_table(curve)}

## Use

```python
from tf_metainit import pretrained
field, params, manifest, learned = pretrained.load("{name}")
```
"""


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("name")
  parser.add_argument("--runs", default="/tmp/pretrained")
  parser.add_argument("--run_dir", default=None)
  args = parser.parse_args()
  name = args.name
  config = os.path.join(REPO, "gin", "pretrained", f"{name}.gin")
  run_dir = args.run_dir or os.path.join(args.runs, name)
  if args.run_dir is None:
    _run(_binary("meta_train") + [f"--root_dir={run_dir}", f"--gin_file={config}"])
  eval_config = os.path.join(REPO, "gin", "pretrained", f"{name}_eval.gin")
  eval_dir = os.path.join(run_dir, "eval_pretrained")
  timing = os.path.join(eval_dir, "seconds.txt")
  if os.path.exists(timing):  # evaluated by an earlier build of this run
    with open(timing) as f:
      eval_s = float(f.read())
  else:
    eval_s = _run(_binary("evaluate") + [
        f"--root_dir={run_dir}", f"--gin_bindings=evaluate.output_dir = '{eval_dir}'"]
        + ([f"--gin_file={eval_config}"] if os.path.exists(eval_config) else []))
    with open(timing, "w") as f:
      f.write(f"{eval_s:.1f}")
  export_dir = f"{run_dir.rstrip(os.sep)}_export"  # exports go outside their run
  _run(_binary("export") + [f"--root_dir={run_dir}", f"--export_dir={export_dir}"])
  target = os.path.join(TARGET, name)
  os.makedirs(target, exist_ok=True)
  shutil.copy(os.path.join(export_dir, "weights.npz"), target)
  with open(os.path.join(export_dir, "manifest.json")) as f:
    manifest = json.load(f)
  manifest["kind"] = "pretrained"
  manifest["name"] = name
  manifest["source"] = {"config": f"gin/pretrained/{name}.gin",
                        "built_by": "docs/pretrained/build.py",
                        "checkpoint": os.path.basename(manifest["source"]["checkpoint"])}
  manifest["signatures"] = {k: v for k, v in manifest["signatures"].items()
                            if k == "adapt"}  # its optimizer; no SavedModel is shipped
  with open(os.path.join(target, "manifest.json"), "w") as f:
    json.dump(manifest, f, indent=1)
  curve, train_s = validation_curve(run_dir)
  with open(os.path.join(eval_dir, "results.md")) as f:
    results_md = f.read()
  with open(config) as f:
    config_text = f.read()
  card = model_card(name, manifest, results_md, curve, train_s, eval_s, config_text)
  with open(os.path.join(target, "MODEL_CARD.md"), "w") as f:
    f.write(card)
  print(f"Wrote {target}")


if __name__ == "__main__":
  main()
