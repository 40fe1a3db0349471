"""How long the ShapeNet Matched baseline must be fitted to match Meta's renders.

  python docs/shapenet/matched_fit.py RUN_DIR [--rates=1e-4,5e-4,1e-3] \
      [--chunks=10] [--chunk_steps=1000] [--output=docs/shapenet/matched_fit.json]

Matched is Standard fitted (Adam, `task.test_rays_per_step` rays per step, the 25
input views of the first training object rendered by Meta) to output what Meta
outputs. This fits it in chunks of `chunk_steps` Adam steps, continuing from the last
chunk (a fresh Adam state per chunk, as evaluate.fit_steps would give at that total),
and after each chunk scores its renders against Meta's on that object's held-out views
(PSNR, the number evaluate reports for the Matched fit).
"""

import argparse
import json
import os
import time

import gin

from tf_metainit import runs
from tf_metainit.meta import inits
from tf_metainit.meta import optimizers


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("run_dir")
  parser.add_argument("--rates", default="1e-4,5e-4,1e-3")
  parser.add_argument("--chunks", type=int, default=10)
  parser.add_argument("--chunk_steps", type=int, default=1000)
  parser.add_argument("--output", default="docs/shapenet/matched_fit.json")
  args = parser.parse_args()
  gin.parse_config_file(os.path.join(args.run_dir, "config.gin"))
  task = gin.query_parameter("meta_train.task").scoped_configurable_fn()
  standard = task.field.params()
  init = runs.load_init(task, args.run_dir, "best")
  meta, path = init.params, init.source
  target = task.output_as_signal(meta)
  out = {"run_dir": os.path.abspath(args.run_dir), "checkpoint": path,
         "chunk_steps": args.chunk_steps, "rates": {}}
  for rate in (float(r) for r in args.rates.split(",")):
    params, curve, t0 = standard, [], time.time()
    for k in range(args.chunks):
      params, metrics = inits.fit(task, params, target, args.chunk_steps,
                                  optimizers.Adam(rate))
      curve.append([(k + 1) * args.chunk_steps, metrics["psnr"]])
      print(f"lr {rate:g}: {(k + 1) * args.chunk_steps} steps, PSNR against Meta "
            f"{metrics['psnr']:.2f} dB ({time.time() - t0:.0f} s)", flush=True)
    out["rates"][f"{rate:g}"] = {"curve": curve, "seconds": time.time() - t0}
  with open(args.output, "w") as f:
    json.dump(out, f, indent=1)
  best = max((c[1], c[0], r) for r, v in out["rates"].items() for c in v["curve"])
  print(f"best: {best[0]:.2f} dB after {best[1]} steps at lr {best[2]}")


if __name__ == "__main__":
  main()
