"""The tf-metainit-fit-folder job: every image of a folder fitted from one init into a
field, many images at a time through the same batched per-signal weights the inner
loop uses (testtime.TestTimeOptimizer), into one fitted_set.py folder.

The folder's sorted files are cut into fixed batches; each finished batch is written
as its own part, so a fit killed at any moment and run again redoes only the
batches without a part, and ends with the weights an uninterrupted fit gives (the
same batches, the same computation). Shards (--num_shards, --shard) take every n-th
batch into the same output, for several processes or machines on a shared folder;
whichever finishes last merges the parts. A strategy's replicas share each batch.
"""

import json
import os
import time

from absl import logging
import numpy as np

from tf_metainit import checks
from tf_metainit import exports
from tf_metainit import files
from tf_metainit import fitted_set
from tf_metainit import fitting
from tf_metainit import memory
from tf_metainit import progress
from tf_metainit import testtime
from tf_metainit.data import image_folder
from tf_metainit.meta import optimizers
from tf_metainit.tasks import image as image_task

LOG_SECONDS = 10.0  # without a terminal, a progress line at most this often


def fit_folder(init, folder, out_dir, resolution=None, num_steps=None, batch=None,
               shard=0, num_shards=1, strategy=None, adam_rate=None):
  """Fits `init` (testtime.Init) to every image of `folder`, centre-cropped and resized
  to `resolution` (default: the init's own), `num_steps` steps each (default: the
  init's), `batch` images at once (default: as many as half the free memory holds, up
  to 32); after the init's own steps, Adam at `adam_rate` if given (else its own
  optimizer goes on); returns the record (record.json's contents)."""
  fitting.check_kind(init, "image", "--folder")
  task = image_task.ImageRegression.for_field(init.field)
  resolution = int(resolution or fitting.described(init, "resolution"))
  num_steps = int(num_steps or init.num_steps or 2)
  optimizer = init.optimizer
  if adam_rate is not None:
    optimizer = optimizers.Switch(first=optimizer, second=optimizers.Adam(
        checks.positive("--adam_rate", adam_rate)), at=init.num_steps or 2)
  if not 0 <= shard < num_shards:
    raise ValueError(f"--shard={shard} must be in 0..{num_shards - 1} "
                     f"(--num_shards={num_shards}).")
  problem = files.target_dir_problem(out_dir, fitted_set.is_fitted_set,
                                     "a tf-metainit-fit-folder output")
  if problem:
    raise ValueError(f"--out_dir={out_dir} {problem}")
  out_dir = files.resolve_target(out_dir)
  names = [os.path.relpath(f, folder) for f in image_folder.list_images(folder)]
  # A resume keeps the batch the fit started with: the memory-based default moves
  # with the free memory, and another batch would be refused as another setting.
  earlier = (fitted_set.read_record(out_dir) if fitted_set.is_fitted_set(out_dir)
             else {})
  batch = int(batch or earlier.get("batch") or memory.images_per_batch(
      resolution, resolution, init.field, task.chunk_pixels))
  memory.check_image_fit(resolution, resolution, init.field, task.chunk_pixels,
                         count=batch)
  settings = {"init": init.source, "folder": os.path.abspath(folder),
              "resolution": resolution, "num_steps": num_steps, "batch": batch,
              "optimizer": optimizer.describe(), "files": names}
  settings = _start_or_resume(out_dir, json.loads(json.dumps(settings)), init, task)
  if settings.get("state") == "complete":
    logging.info("%s is complete: nothing to fit.", out_dir)
    return settings
  names = settings["files"]
  batches = [names[i:i + batch] for i in range(0, len(names), batch)]
  mine = [i for i in range(len(batches)) if i % num_shards == shard]
  todo = [i for i in mine if i not in fitted_set.finished_parts(out_dir, len(batches))]
  if len(todo) < len(mine):
    logging.info("Resuming: %d of this shard's %d batches are done.",
                 len(mine) - len(todo), len(mine))
  total = sum(len(batches[i]) for i in todo)
  fitting.announce_duration(init.params, resolution * resolution, num_steps * total)
  tto = testtime.TestTimeOptimizer(task, strategy=strategy)
  keys = exports.param_names(init.field)
  start = time.time()
  with progress.Bar(total, "image", f"Fitting {folder}") as bar:
    done, fitted, last_log = 0, 0, start
    for i in todo:
      images, skipped = _load(folder, batches[i], resolution, task.channels)
      kept = [n for n in batches[i] if n not in dict(skipped)]
      before, after, weights = _fit(tto, init, optimizer, images, num_steps, keys)
      fitted_set.write_part(out_dir, i, kept, before, after, weights, skipped)
      done, fitted = done + len(batches[i]), fitted + len(kept)
      bar.update(done, psnr=float(np.mean(after)) if len(after) else float("nan"))
      if not bar.active and (time.time() - last_log > LOG_SECONDS or i == todo[-1]):
        last_log = time.time()
        logging.info("%d of %d files done, %d fitted (%.1f images/s)", done, total,
                     fitted, fitted / (last_log - start))
  return _finish(out_dir, settings, len(batches), time.time() - start, fitted)


def _start_or_resume(out_dir, settings, init, task):
  """Writes the record and the init's export into a new folder; in an earlier
  fit-folder output, refuses other settings and keeps its list of files."""
  if fitted_set.is_fitted_set(out_dir):
    stored = fitted_set.read_record(out_dir)
    changed = [f"{k}: {stored[k]!r} -> {settings[k]!r}"
               for k in fitted_set.SETTINGS if k != "files" and stored[k] != settings[k]]
    if changed:
      raise ValueError(f"--out_dir={out_dir} holds a fit with other settings "
                       f"({'; '.join(changed)}): run it with its own to resume, or "
                       "give a new --out_dir.")
    new = sorted(set(settings["files"]) - set(stored["files"]))
    if new:
      logging.warning("%d files came into %s after this fit started (e.g. %s); they "
                      "are left out: fit them into another --out_dir.", len(new),
                      settings["folder"], new[0])
    settings = {k: stored[k] for k in fitted_set.SETTINGS + ("state",)}
  else:
    fitted_set.write_record(out_dir, dict(settings, state="fitting"))
  init_dir = os.path.join(out_dir, fitted_set.INIT)
  if not os.path.exists(os.path.join(init_dir, exports.MANIFEST)):
    exports.export_params(init.field, init.params, init_dir, task=task,
                          optimizer=init.optimizer,
                          manifest_extra={
                              "kind": "meta_init", "source": init.source,
                              "task": init.task,  # the init's own, not the fit's
                              "test_time": {"optimizer": init.optimizer.describe(),
                                            "num_steps": init.num_steps}})
  return settings


def _load(folder, names, resolution, channels):
  """(images (n, R, R, C), [(file, reason)] of those that could not be read)."""
  images, skipped = [], []
  for name in names:
    try:
      image = image_folder.center_crop_resize(
          image_folder.load_image(os.path.join(folder, name)), resolution).numpy()
    except (ValueError, OSError) as e:
      skipped.append((name, str(e)))
      logging.warning("Skipped %s: %s", name, e)
      continue
    images.append(image.mean(-1, keepdims=True) if channels == 1 else image)
  return np.asarray(images, np.float32).reshape(-1, resolution, resolution, channels), (
      skipped)


def _fit(tto, init, optimizer, images, num_steps, keys):
  """(PSNR before, PSNR after, {weight name: (n, ...) fitted weights}) of a batch."""
  if not len(images):
    return [], [], {k: np.zeros((0,) + tuple(p.shape), np.float32)
                    for k, p in zip(keys, init.params)}
  trace, finals = tto.run(init.params, {"image": images}, optimizer, num_steps,
                          "full", trace_every=num_steps, chunk=len(images))
  fitted = testtime.joined(finals)
  return trace[0], trace[-1], {k: p.numpy() for k, p in zip(keys, fitted)}


def _finish(out_dir, settings, num_batches, seconds, fitted_now):
  """Merges the parts once every batch has one (the last shard to end does it)."""
  missing = num_batches - len(fitted_set.finished_parts(out_dir, num_batches))
  record = dict(settings, seconds_this_run=round(seconds, 1),
                images_per_second_this_run=round(fitted_now / seconds, 3)
                if seconds > 0 and fitted_now else None)
  if missing:
    logging.info("This shard is done; %d batches of other shards remain: the shard "
                 "that ends last writes %s.", missing, fitted_set.FIELDS)
    return dict(record, state="fitting", batches_missing=missing)
  if not fitted_set.claim_merge(out_dir):
    logging.info("Every batch is done; another shard is writing %s.", fitted_set.FIELDS)
    return dict(record, state="merging")
  merged, skipped = fitted_set.merge(out_dir, num_batches)
  after = merged["psnr_fitted"]
  record.update(state="complete", fitted=int(len(after)), skipped=[
      {"file": f, "reason": r} for f, r in skipped],
      psnr_fitted={"mean": float(np.mean(after)), "min": float(np.min(after)),
                   "max": float(np.max(after))} if len(after) else None,
      psnr_init_mean=float(np.mean(merged["psnr_init"])) if len(after) else None)
  fitted_set.write_record(out_dir, record)
  fitted_set.remove_parts(out_dir, num_batches)
  return record
