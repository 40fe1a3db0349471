"""Inner-loop SGD whose learning rates are meta-learned with theta0.

Two granularities, both started at the plain inner learning rate:
  'per_parameter'   Meta-SGD (Li et al. 2017): one rate per weight, the same every step.
  'per_layer_step'  MAML++ LSLR (Antoniou et al. 2019): one rate per weight tensor and
                    inner step; steps past the trained K reuse the last step's rates.

The rates are tf.Variables, so second-order MAML's outer tape reaches them through the
unrolled inner loop and the outer optimizer updates them beside theta0; they are
checkpointed with the run and exported with the init. Rates are not sign-constrained
(as in Meta-SGD): a negative rate is a learned step against the gradient.
"""

import keras
import numpy as np
import tensorflow as tf

MODES = ("fixed", "per_parameter", "per_layer_step")
LABELS = {"fixed": "Meta", "per_parameter": "Meta-SGD", "per_layer_step": "Meta (LSLR)"}


def rates_of(optimizer):
  """The meta-learned rates of an inner optimizer: [] for a fixed-rate one."""
  return list(getattr(optimizer, "rates", ()))


def meta_variables(field, inner_optimizer):
  """What the outer optimizer updates: theta0, plus the learned inner rates if any."""
  return field.trainable_variables + rates_of(inner_optimizer)


def check_mode(mode):
  if mode not in MODES:
    raise ValueError(f"meta_train.inner_lr_mode must be one of {MODES}, got {mode!r}.")
  return mode


class LearnedSGD:
  """A functional optimizer (meta/optimizers.py interface) with variable rates."""

  def __init__(self, mode, rates):
    """mode: 'per_parameter' or 'per_layer_step'; rates: starting values, one array
    per weight tensor (its shape, or (K,) for LSLR)."""
    if check_mode(mode) == "fixed":
      raise ValueError("LearnedSGD needs a learned mode; 'fixed' is plain SGD.")
    self.mode = mode
    self.rates = [keras.Variable(np.asarray(r, np.float32), name=f"inner_lr_{i}")
                  for i, r in enumerate(rates)]
    self.num_steps = int(self.rates[0].shape[0]) if mode == "per_layer_step" else None

  def init(self, params):
    del params
    return ()

  def _rate(self, i, step, rank):
    rate = tf.convert_to_tensor(self.rates[i])
    if self.mode == "per_layer_step":
      return tf.gather(rate, tf.minimum(tf.cast(step, tf.int32), self.num_steps - 1))
    # Per-parameter rates broadcast over the leading signal dimension of batched params.
    return rate if rank == rate.shape.rank else rate[None]

  def update(self, grads, state, params, step):
    new = [p - self._rate(i, step, p.shape.rank) * g
           for i, (p, g) in enumerate(zip(params, grads))]
    return new, state

  def describe(self):
    """Mode and mean rate per weight tensor (per step for LSLR), for logs and manifests."""
    if self.mode == "per_layer_step":
      means = [[float(r) for r in np.asarray(v)] for v in self.rates]
    else:
      means = [float(np.mean(np.asarray(v))) for v in self.rates]
    return {"name": "learned_sgd", "mode": self.mode, "mean_rates": means}

  def mean_rate(self):
    return float(np.mean([np.mean(np.asarray(v)) for v in self.rates]))


def make(mode, shapes, num_steps, learning_rate):
  """The inner optimizer for `mode`, rates started at `learning_rate`; None for 'fixed'."""
  if check_mode(mode) == "fixed":
    return None
  if mode == "per_parameter":
    return LearnedSGD(mode, [np.full(s, learning_rate, np.float32) for s in shapes])
  return LearnedSGD(mode, [np.full([num_steps], learning_rate, np.float32)
                           for _ in shapes])


def from_arrays(rates, shapes):
  """Rebuilds a trained LearnedSGD from its saved rates and the field's weight shapes."""
  same = all(tuple(r.shape) == tuple(s) for r, s in zip(rates, shapes))
  return LearnedSGD("per_parameter" if same else "per_layer_step", rates)
