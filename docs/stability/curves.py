"""Held-out validation curves of meta-training runs, from their TensorBoard events.

  python docs/stability/curves.py OUT.json OUT.png LABEL=RUN_DIR [LABEL=RUN_DIR ...]

Reads val/psnr_after_<K>_steps from <RUN_DIR>/train/events.*; writes the curves as JSON
(so the figure can be redrawn without the run folders) and a plot. A RUN_DIR ending in
.json is read as a curve file written by docs/collapse/diagnose.py.
"""
import glob
import json
import sys

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import tensorflow as tf


def read_curve(run_dir):
  if run_dir.endswith(".json"):
    records = json.load(open(run_dir))
    return [[r["step"], r["val_psnr"][-1]] for r in records]
  points = {}
  for path in glob.glob(f"{run_dir}/train/events.*"):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        if value.tag.startswith("val/psnr_after_"):
          points[event.step] = float(tf.make_ndarray(value.tensor))
  return sorted([s, v] for s, v in points.items())


def main(out_json, out_png, *runs):
  curves = {}
  for arg in runs:
    label, run_dir = arg.split("=", 1)
    curves[label] = read_curve(run_dir)
  json.dump(curves, open(out_json, "w"), indent=0)
  fig, ax = plt.subplots(figsize=(8, 4.5))
  for label, points in curves.items():
    ax.plot([p[0] for p in points], [p[1] for p in points], label=label)
  ax.set(xlabel="outer step", ylabel="held-out PSNR after the inner loop (dB)")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(out_png, dpi=90)


if __name__ == "__main__":
  main(*sys.argv[1:])
