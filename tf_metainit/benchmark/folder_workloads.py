"""Fitting many signals at once, as tf-metainit-fit-folder does: images per second to
a target PSNR, a shipped init against Standard with its best Adam rate.

The images are dead leaves (the shipped image inits' training distribution) from two
seeds the inits never saw: a validation batch chooses Standard's Adam rate (the
fewest steps until every image reaches the target), a test batch is then timed.
"""

import time

import numpy as np

from tf_metainit import distribute
from tf_metainit import pretrained
from tf_metainit import testtime
from tf_metainit.data import dead_leaves
from tf_metainit.fields import functional
from tf_metainit.meta import optimizers
from tf_metainit.tasks import image as image_task

VALIDATION_SEED, TEST_SEED = 11, 12  # training used seed 0


def measure_folder_throughput(init, resolution, batch, replicas, target_db, max_steps,
                              rates, after_rates, peak_rss_mb, given=None):
  """One measurement in a fresh process: the steps until every image of a batch of
  `batch` reaches `target_db` (at most `max_steps`), then the seconds of fitting the
  batch for those steps with the compiled fit reused, over `replicas` (logical CPU)
  replicas. `init`: a shipped init's name (its own test-time optimizer) or
  'standard' (the field's own init, Adam at the best of `rates` on validation). A
  shipped init's candidates are its own optimizer throughout and, as
  tf-metainit-fit-folder --adam_rate gives, its learned steps then Adam at each of
  `after_rates`: the best on validation is timed. `given`: the 'choice' of another
  measurement of the same math (e.g. on 1 replica), reused instead of choosing."""
  strategy = (distribute.get("mirrored", cpu_replicas=replicas) if replicas > 1
              else None)  # before TensorFlow starts: logical devices
  loaded = pretrained.init("natural" if init == "standard" else init)
  if init == "standard":
    field = functional.standard_copy(loaded.field)
    params, candidates = field.params(), {rate: optimizers.Adam(rate) for rate in rates}
  else:
    field, params, candidates = loaded.field, loaded.params, {None: loaded.optimizer}
    for rate in after_rates:
      candidates[rate] = optimizers.Switch(first=loaded.optimizer,
                                           second=optimizers.Adam(rate),
                                           at=loaded.num_steps or 2)
  tto = testtime.TestTimeOptimizer(image_task.ImageRegression.for_field(field),
                                   strategy=strategy)

  def steps_to_target(images, optimizer):
    # Growing budgets: a learned init reaches the target in a few steps, so tracing
    # all max_steps would cost more than the measurement; none above half the cap,
    # which would cost nearly as much as the cap itself.
    for budget in [b for b in (5, 20, 80) if b <= max_steps / 2] + [max_steps]:
      trace, _ = tto.run(params, {"image": images}, optimizer, budget, "full",
                         chunk=batch)
      every = (trace >= target_db).all(axis=1)
      if every.any():
        return int(np.argmax(every))
    return None

  test = {"image": dead_leaves.dead_leaves_images("test", batch, resolution, TEST_SEED)}
  validation = dead_leaves.dead_leaves_images("test", batch, resolution, VALIDATION_SEED)
  choice = given or _choose(candidates, steps_to_target, validation, test["image"])
  config = {"init": init, "resolution": resolution, "batch": batch,
            "replicas": replicas, "target_db": target_db, "max_steps": max_steps,
            "validation_steps": choice["validation_steps"],
            "choice_reused": given is not None}
  if "rate" in choice:
    config["rate"] = choice["rate"]
  title = (f"{batch} images of {resolution}², {init}, {replicas} replica"
           f"{'s' if replicas > 1 else ''}")
  result = {"title": title, "config": config, "choice": choice}
  steps = choice["steps"]
  if steps is None:
    return dict(result, steps=None, peak_rss_mb=peak_rss_mb())
  optimizer = candidates[choice["rate"]]
  steps = max(steps, 1)
  run = lambda: tto.run(params, test, optimizer, steps, "full", trace_every=steps,
                        chunk=batch)
  run()  # traced here; the timed call reuses it, as a folder's later batches do
  t0 = time.perf_counter()
  trace, _ = run()
  seconds = time.perf_counter() - t0
  return dict(result, steps=steps, seconds=seconds, images_per_s=batch / seconds,
              final_psnr_min=float(trace[-1].min()), peak_rss_mb=peak_rss_mb())


def _choose(candidates, steps_to_target, validation, test):
  """{'validation_steps', 'rate' (if any candidate reached), 'steps' on `test` (None
  if not reached)}: the candidate that needs the fewest steps on `validation`."""
  found = {rate: steps_to_target(validation, o) for rate, o in candidates.items()}
  choice = {"validation_steps": {str(k): v for k, v in found.items()}, "steps": None}
  reached = {rate: s for rate, s in found.items() if s is not None}
  if reached:
    choice["rate"] = min(reached, key=reached.get)
    choice["steps"] = steps_to_target(test, candidates[choice["rate"]])
  return choice
