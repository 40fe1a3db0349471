"""CT inits on real anatomy: sparse-view reconstructions of real CT and MR slices.

  python docs/ct/real_anatomy.py --slices=../shared/anatomy/real_slices.npz \
      --inits=ct_anatomy,ct64 [--resolution=64] [--out=docs/ct/real_anatomy.md]

The slices (an .npz `image` array, e.g. the held-out set described in
../shared/anatomy/SOURCES.md, not shipped: their terms are not all ours to pass on) are
area-resized to the inits' grid and observed by the package's own projector at 1, 2, 4
and 8 evenly spaced views. Each init is fitted with its own test-time optimizer for
Table 2's budgets (50, 100, 1000, 1000 steps); SART and FBP reconstruct from the same
views with ct/classical.gin's settings. Nothing here was chosen on these slices: they
are only scored. Writes the table (mean PSNR over the slices, and per slice) as
markdown.
"""

import argparse
import json
import os

import numpy as np

from tf_metainit import exports
from tf_metainit import pretrained
from tf_metainit import testtime
from tf_metainit.tasks import ct

VIEWS = (1, 2, 4, 8)
BUDGETS = {1: 50, 2: 100, 4: 1000, 8: 1000}  # seed Table 2, Meta
SART_ITERATIONS = {1: 1, 2: 50, 4: 200, 8: 200}  # gin/ct/classical.gin


def _init(name):
  folder = pretrained.path(name) if name in pretrained.list() else name
  return exports.load_init(folder)


def measure(slices, names, resolution):
  rows, per_slice = {}, {}
  task = None
  for name in names:
    init = _init(name)
    task = ct.CTReconstruction(resolution=resolution, num_train=1, num_val=1,
                               num_test=10 ** 6, test_file=slices,
                               field=lambda f=init.field: f)
    signals = task.test_signals()
    tto = testtime.TestTimeOptimizer(task)
    for views in VIEWS:
      steps = BUDGETS[views]
      trace, _ = tto.run(init.params, signals, init.optimizer, steps, views,
                         trace_every=steps, chunk=16)
      per_slice.setdefault(name, {})[views] = trace[-1].tolist()
      print(f"{name} {views} views: {trace[-1].mean():.2f} dB", flush=True)
  for method, kwargs in (("sart", SART_ITERATIONS), ("fbp", None)):
    for views in VIEWS:
      settings = {} if kwargs is None else {"iterations": kwargs[views]}
      psnr = task.classical(method, signals, views, settings)[1]
      per_slice.setdefault(method.upper(), {})[views] = psnr.tolist()
      print(f"{method} {views} views: {psnr.mean():.2f} dB", flush=True)
  for row, values in per_slice.items():
    rows[row] = {v: float(np.mean(p)) for v, p in values.items()}
  return rows, per_slice


def table(rows, per_slice, names, slices, resolution):
  with np.load(slices) as data:
    labels = [str(n) for n in data["name"]] if "name" in data.files else None
  lines = [f"Real slices ({len(names)} inits; {os.path.basename(slices)}, area-resized to "
           f"{resolution}x{resolution}), mean PSNR (dB) over the slices:", "",
           "| | " + " | ".join(f"{v} views" for v in VIEWS) + " |",
           "|---|" + "---|" * len(VIEWS)]
  for row, values in rows.items():
    lines.append(f"| {row} | " + " | ".join(f"{values[v]:.2f}" for v in VIEWS) + " |")
  lines += ["", "Per slice (dB), views 1 / 2 / 4 / 8:", "",
            "| slice | " + " | ".join(per_slice) + " |",
            "|---|" + "---|" * len(per_slice)]
  count = len(next(iter(next(iter(per_slice.values())).values())))
  for k in range(count):
    cells = [" / ".join(f"{per_slice[r][v][k]:.1f}" for v in VIEWS) for r in per_slice]
    lines.append(f"| {labels[k] if labels else k} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--slices", required=True)
  parser.add_argument("--inits", default="ct_anatomy,ct64")
  parser.add_argument("--resolution", type=int, default=64)
  parser.add_argument("--out", default=None)
  args = parser.parse_args()
  names = args.inits.split(",")
  rows, per_slice = measure(args.slices, names, args.resolution)
  text = table(rows, per_slice, names, args.slices, args.resolution)
  print(text)
  if args.out:
    with open(args.out, "w") as f:
      f.write(text)
    with open(os.path.splitext(args.out)[0] + ".json", "w") as f:
      json.dump({"rows": rows, "per_slice": per_slice}, f, indent=1)


if __name__ == "__main__":
  main()
