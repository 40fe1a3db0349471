"""The paper's baseline initializations (Tancik et al. 2021, Sec. 4.1).

Standard: the architecture's own init. Mean: Standard fitted to output the training
set's mean signal. Matched: Standard fitted to output what the Meta init outputs (same
function, different weights). Shuffled: Meta's weights permuted within each tensor (same
per-layer statistics, different arrangement).
"""

import numpy as np
import tensorflow as tf

from tf_metainit.fields import functional
from tf_metainit.meta import inner


def shuffled(params, seed=0):
  """Each weight tensor (kernels and biases separately) randomly permuted."""
  rng = np.random.default_rng(seed)
  out = []
  for p in params:
    flat = np.asarray(p).reshape(-1)
    out.append(tf.constant(rng.permutation(flat).reshape(np.shape(p))))
  return out


def fit(task, params, signals, num_steps, optimizer):
  """Fits unbatched `params` with `optimizer` to the one signal in `signals` (a batch
  of 1).

  Returns (fitted params, final per-signal metrics).
  """
  batched = functional.batch_params(params, 1)

  @tf.function
  def run(batched):
    return inner.fit(task, batched, signals, num_steps, optimizer, seed=0,
                     setting=task.fit_setting).params

  fitted = run(batched)
  metrics = task.metrics(fitted, signals)
  return [f[0] for f in fitted], {k: float(v[0]) for k, v in metrics.items()}


def mean(task, standard, num_steps, optimizer):
  """Standard fitted to the training set's mean signal."""
  signal = {k: np.asarray(v)[None] for k, v in task.mean_signals().items()}
  return fit(task, standard, signal, num_steps, optimizer)


def matched(task, standard, meta, num_steps, optimizer):
  """Standard fitted to the output of the Meta init."""
  return fit(task, standard, task.output_as_signal(meta), num_steps, optimizer)
