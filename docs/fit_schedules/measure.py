"""Which test-time schedule should tf-metainit-fit use past a few steps?

Fits the default job's held-out Text images (16, 64x64) from its learned init and
from the Standard init for up to 1000 steps, and writes the mean PSNR curves to
schedules.json and schedules.png:

  python docs/fit_schedules/measure.py --root_dir=runs/text --out_dir=docs/fit_schedules

The learned init's own test-time optimizer is tuned for 2 steps; the candidates are
that optimizer throughout, SGD 1e-2, Adam 1e-4, and its 2 steps followed by Adam 1e-4
(optimizers.Switch). Standard uses Table 1's Adam 1e-4.
"""

import argparse
import os
import time

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np

from tf_metainit import files
from tf_metainit import runs as tf_runs
from tf_metainit import testtime
from tf_metainit.cli import common
from tf_metainit.meta import optimizers
from tf_metainit.tasks import image

# Traced steps only (multiples of --trace_every): no interpolated values.
BUDGETS = (5, 10, 20, 50, 100, 200, 500, 1000)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--root_dir", required=True)
  parser.add_argument("--out_dir", default="docs/fit_schedules")
  parser.add_argument("--steps", type=int, default=1000)
  parser.add_argument("--trace_every", type=int, default=5)
  args = parser.parse_args()
  common.parse_run_config(args.root_dir, [], [])
  task = image.ImageRegression()  # the run's own, from its config.gin
  init = tf_runs.load_init(task, args.root_dir)
  signals = task.test_signals()
  standard = task.field.params()  # load_init leaves the field's own weights
  learned, adam = init.optimizer, optimizers.Adam(1e-4)
  runs = {
      "meta, its own 2-step rates throughout": (init.params, learned),
      "meta, SGD 1e-2": (init.params, optimizers.SGD(1e-2)),
      "meta, Adam 1e-4": (init.params, adam),
      "meta, its 2 steps then Adam 1e-4": (init.params,
                                           optimizers.Switch(learned, adam, at=2)),
      "standard, Adam 1e-4": (standard, adam),
  }
  tto = testtime.TestTimeOptimizer(task)
  curves = {}
  steps = testtime.traced_steps(args.steps, args.trace_every)
  for name, (params, optimizer) in runs.items():
    t0 = time.time()
    trace, _ = tto.run(params, signals, optimizer, args.steps, "full",
                       trace_every=args.trace_every)
    curves[name] = trace.mean(1)
    print(f"{name}: {time.time() - t0:.0f} s; " + ", ".join(
        f"{b}: {curves[name][list(steps).index(b)]:.2f}" for b in BUDGETS), flush=True)
  table = {name: {str(b): float(c[list(steps).index(b)]) for b in (0,) + BUDGETS}
           for name, c in curves.items()}
  files.write_json(os.path.join(args.out_dir, "schedules.json"), {
      "root_dir": os.path.abspath(args.root_dir), "num_signals": len(signals["image"]),
      "steps": steps.tolist(), "curves": {k: v.tolist() for k, v in curves.items()},
      "at_budget": table})
  figure, axis = plt.subplots(figsize=(7, 4.5))
  for name, curve in curves.items():
    axis.plot(np.maximum(steps, 0.8), curve, label=name)
  axis.set_xscale("log")
  axis.set_xlabel("test-time steps")
  axis.set_ylabel("mean PSNR (dB), 16 held-out Text images")
  axis.legend(fontsize=8)
  axis.grid(alpha=0.3)
  files.save_figure(figure, os.path.join(args.out_dir, "schedules.png"))


if __name__ == "__main__":
  main()
