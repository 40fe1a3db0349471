"""Optimizers as gin objects, each with its learning rate inside and its own scope:

  meta_train.outer_optimizer = @outer/Adam()      outer/Adam.learning_rate = 1e-5
  meta_train.inner_optimizer = @inner/SGD()       inner/SGD.learning_rate = 1e-2
  meta_train.inner_optimizer = @inner/LearnedSGD()  (rates meta-learned, learned_lr.py)
  evaluate.optimizer_settings = {'standard': @standard/Adam()}

Inner loops must stay differentiable (MAML) and per-signal (batched params), so the
inner and test-time forms are pure functions of (grads, state, params) rather than
Keras optimizers that assign into variables; the outer loop's Keras optimizer is made
from the same object (`keras_optimizer`). Adam follows Kingma & Ba with the optax
defaults the reference used (eps 1e-8; Keras' is 1e-7).

Every optimizer has `build(shapes, num_steps)`: the optimizer a run uses for weights of
those shapes and K inner steps (itself for a fixed rate; LearnedSGD makes its rate
variables there).
"""

import dataclasses

import gin
import keras
import tensorflow as tf

from tf_metainit import checks


class _Optimizer:
  name = None  # as results and manifests name it (a class attribute, not a field)

  def describe(self):
    """{'name': 'sgd', 'learning_rate': 0.01}: for results and manifests."""
    return {"name": self.name, **dataclasses.asdict(self)}

  def build(self, shapes, num_steps):
    del shapes, num_steps
    return self


@gin.configurable
@dataclasses.dataclass(frozen=True)
class SGD(_Optimizer):
  learning_rate: float = 1e-2
  name = "sgd"

  def __post_init__(self):
    # 0 is allowed: a frozen outer loop, or a fit that only scores the init.
    checks.non_negative("SGD.learning_rate (in its gin scope, e.g. inner/SGD)",
                        self.learning_rate)

  def init(self, params):
    return ()

  def update(self, grads, state, params, step):
    del step
    return [p - self.learning_rate * g for p, g in zip(params, grads)], state

  def keras_optimizer(self, learning_rate):
    """The outer loop's form, at `learning_rate` (a schedule whose peak is ours).
    With Reptile this is Nichol et al.'s own outer step, theta0 += lr (mean theta_K -
    theta0): each weight moves by its share of the inner displacement, where Adam
    moves every weight by about lr whatever its scale (docs/stability.md)."""
    return keras.optimizers.SGD(learning_rate)


@gin.configurable
@dataclasses.dataclass(frozen=True)
class Adam(_Optimizer):
  learning_rate: float = 1e-4
  beta1: float = 0.9
  beta2: float = 0.999
  epsilon: float = 1e-8
  name = "adam"

  def __post_init__(self):
    checks.non_negative("Adam.learning_rate (in its gin scope, e.g. standard/Adam)",
                        self.learning_rate)
    checks.fraction("Adam.beta1", self.beta1)
    checks.fraction("Adam.beta2", self.beta2)
    checks.positive("Adam.epsilon", self.epsilon)

  def init(self, params):
    return ([tf.zeros_like(p) for p in params], [tf.zeros_like(p) for p in params])

  def update(self, grads, state, params, step):
    m, v = state
    t = tf.cast(step, params[0].dtype) + 1.0
    m = [self.beta1 * mi + (1.0 - self.beta1) * g for mi, g in zip(m, grads)]
    v = [self.beta2 * vi + (1.0 - self.beta2) * tf.square(g) for vi, g in zip(v, grads)]
    c1 = 1.0 - self.beta1 ** t
    c2 = 1.0 - self.beta2 ** t
    new = [p - self.learning_rate * (mi / c1) / (tf.sqrt(vi / c2) + self.epsilon)
           for p, mi, vi in zip(params, m, v)]
    return new, (m, v)

  def keras_optimizer(self, learning_rate):
    """The outer loop's form (the reference's optax.adam), at `learning_rate`."""
    return keras.optimizers.Adam(learning_rate, beta_1=self.beta1, beta_2=self.beta2,
                                 epsilon=self.epsilon)


@gin.configurable
@dataclasses.dataclass(frozen=True)
class Switch(_Optimizer):
  """`first` for the first `at` steps, then `second` from its own step 0: e.g. a Meta
  init's own SGD steps, then Adam for a long fit."""
  first: object = None
  second: object = None
  at: int = 2
  name = "switch"

  def __post_init__(self):
    checks.non_negative_int("Switch.at", self.at)

  def describe(self):
    return {"name": self.name, "first": self.first.describe(),
            "second": self.second.describe(), "at": self.at}

  def init(self, params):
    return (self.first.init(params), self.second.init(params))

  def update(self, grads, state, params, step):
    first_state, second_state = state

    def first():
      new, state = self.first.update(grads, first_state, params, step)
      return new, (state, second_state)

    def second():
      new, state = self.second.update(grads, second_state, params, step - self.at)
      return new, (first_state, state)

    return tf.cond(step < self.at, first, second)


FIXED = {cls.name: cls for cls in (SGD, Adam)}


def from_description(description):
  """The fixed-rate optimizer `describe()` described ({'name': 'sgd', ...})."""
  arguments = {k: v for k, v in description.items() if k != "name"}
  if description.get("name") not in FIXED:
    raise ValueError(f"Unknown optimizer {description!r}; known: {sorted(FIXED)}.")
  return FIXED[description["name"]](**arguments)


def check(value, selector):
  """Returns `value`: an optimizer object, or dicts of them (per init, per setting);
  anything else is a one-line error showing the gin form."""
  leaves = value.values() if isinstance(value, dict) else [value]
  for leaf in leaves:
    if isinstance(leaf, dict):
      check(leaf, selector)
    elif isinstance(leaf, type) or not hasattr(leaf, "build"):
      raise ValueError(f"{selector} holds {leaf!r}, not an optimizer object: bind one "
                       "with its learning rate inside, e.g. @meta/SGD() with "
                       "meta/SGD.learning_rate = 0.01 (or Adam).")
  return value
