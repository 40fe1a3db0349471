"""The inits a comparison starts from: runs' Meta inits and the paper's baselines
derived from the first (meta/inits.py), each with its own test-time optimizer."""

import time

from absl import logging

from tf_metainit import exports
from tf_metainit import runs
from tf_metainit import testtime
from tf_metainit.meta import inits as inits_lib


def build(task, root_dir, names, extra_runs=None, fit_steps=1000,
          fit_optimizer=testtime.STANDARD_OPTIMIZER, seed=0, checkpoint="best",
          fits=None):
  """Returns ({name: unbatched params} in table order, {name: testtime.Init} of the
  Meta inits, extra runs included as 'meta:<label>'). `fits`, a dict, gets the fitted
  baselines' (Mean, Matched) final metrics against what they were fitted to."""
  fits = {} if fits is None else fits
  standard = task.field.params()
  meta = runs.load_init(task, root_dir, checkpoint)
  out, metas = {}, {"meta": meta}
  for name in names:
    t0 = time.time()
    if name == "standard":
      out[name] = standard
    elif name == "meta":
      out[name] = meta.params
    elif name == "shuffled":
      out[name] = inits_lib.shuffled(meta.params, seed)
    elif name in ("mean", "matched"):
      out[name], m = (inits_lib.mean(task, standard, fit_steps, fit_optimizer)
                      if name == "mean" else
                      inits_lib.matched(task, standard, meta.params, fit_steps,
                                        fit_optimizer))
      fits[name] = dict(m, steps=fit_steps, optimizer=fit_optimizer.describe(),
                        seconds=time.time() - t0)
      logging.info("%s init fitted in %.1fs: %s", name, time.time() - t0, m)
    else:
      raise ValueError(f"Unknown init {name!r}: use {testtime.BASELINES + ('meta',)} "
                       "or a key of evaluate.extra_runs.")
  for label, run_dir in (extra_runs or {}).items():
    name = f"meta:{label}"
    metas[name] = _extra_init(task, run_dir, checkpoint)
    out[name] = metas[name].params
  return out, {k: v for k, v in metas.items() if k in out}


def _extra_init(task, folder, checkpoint):
  """A run's Meta init, or an exported one (e.g. a shipped init) in `task`'s field."""
  if not exports.is_export(folder):
    return runs.load_init(task, folder, checkpoint)
  init = exports.load_init(folder)
  want = [tuple(v.shape) for v in task.field.trainable_variables]
  have = [tuple(p.shape) for p in init.params]
  if want != have:
    raise ValueError(f"The export {folder} holds weights of shapes {have}, but this "
                     f"task's field has {want}: give an init exported for this field.")
  return init._replace(field=task.field)
