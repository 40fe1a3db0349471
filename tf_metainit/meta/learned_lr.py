"""Inner-loop SGD whose learning rates are meta-learned with theta0.

Two granularities, both started at the plain inner learning rate:
  'per_parameter'   Meta-SGD (Li et al. 2017): one rate per weight, the same every step.
  'per_layer_step'  MAML++ LSLR (Antoniou et al. 2019): one rate per weight tensor and
                    inner step; steps past the trained K reuse the last step's rates.

gin: meta_train.inner_optimizer = @inner/LearnedSGD() with inner/LearnedSGD.mode and
inner/LearnedSGD.learning_rate (where the rates start). `build` makes the rates:
tf.Variables, so second-order MAML's outer tape reaches them through the unrolled
inner loop and the outer optimizer updates them beside theta0; they are checkpointed
with the run and exported with the init. Rates are not sign-constrained (as in
Meta-SGD): a negative rate is a learned step against the gradient.
"""

import dataclasses

import gin
import keras
import numpy as np
import tensorflow as tf

from tf_metainit import checks
from tf_metainit.meta import optimizers

MODES = ("per_parameter", "per_layer_step")
LABELS = {"per_parameter": "Meta-SGD", "per_layer_step": "Meta (LSLR)"}


def rates_of(optimizer):
  """The meta-learned rates of a built inner optimizer: [] for a fixed-rate one."""
  return list(getattr(optimizer, "rates", ()))


def meta_variables(field, inner_optimizer):
  """What the outer optimizer updates: theta0, plus the learned inner rates if any."""
  return field.trainable_variables + rates_of(inner_optimizer)


@gin.configurable
@dataclasses.dataclass(frozen=True)
class LearnedSGD(optimizers._Optimizer):  # pylint: disable=protected-access
  """The gin object: which rates to learn and where they start."""
  learning_rate: float = 1e-2
  mode: str = "per_layer_step"
  name = "learned_sgd"

  def __post_init__(self):
    checks.positive("LearnedSGD.learning_rate (e.g. inner/LearnedSGD)",
                    self.learning_rate)
    if self.mode not in MODES:
      raise ValueError(f"LearnedSGD.mode must be one of {MODES}, got {self.mode!r}.")

  def build(self, shapes, num_steps):
    """The rates for weights of `shapes` and `num_steps` inner steps."""
    if self.mode == "per_parameter":
      start = [np.full(s, self.learning_rate, np.float32) for s in shapes]
    else:
      start = [np.full([num_steps], self.learning_rate, np.float32) for _ in shapes]
    return LearnedRates(self.mode, start, self.learning_rate)


class LearnedRates:
  """A functional optimizer (meta/optimizers.py interface) over variable rates."""

  def __init__(self, mode, rates, start_learning_rate=None):
    """rates: one array per weight tensor (its shape, or (K,) for LSLR);
    start_learning_rate: where training started them (None: not recorded)."""
    self.mode, self.start_learning_rate = mode, start_learning_rate
    self.rates = [keras.Variable(np.asarray(r, np.float32), name=f"inner_lr_{i}")
                  for i, r in enumerate(rates)]
    self.num_steps = int(self.rates[0].shape[0]) if self.mode == "per_layer_step" else None

  def build(self, shapes, num_steps):
    del shapes, num_steps
    return self

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
    return {"name": LearnedSGD.name, "mode": self.mode,
            "start_learning_rate": self.start_learning_rate, "mean_rates": means}

  def mean_rate(self):
    return float(np.mean([np.mean(np.asarray(v)) for v in self.rates]))


def from_arrays(description, rates):
  """A trained optimizer rebuilt from its saved rates and its `describe()` (from the
  run record or an export's manifest: the mode is read, never guessed from shapes)."""
  mode = description.get("mode")
  if mode not in MODES:
    raise ValueError(f"Learned inner rates of unknown mode {mode!r} (known: {MODES}).")
  return LearnedRates(mode, rates, description.get("start_learning_rate"))
