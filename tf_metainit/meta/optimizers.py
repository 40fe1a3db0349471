"""Functional optimizers for inner loops and test-time optimisation.

Inner loops must stay differentiable (MAML) and per-signal (batched params), so these
are pure functions of (grads, state, params) rather than Keras optimizers that assign
into variables. Adam follows Kingma & Ba with the optax defaults the reference used.

Gin binds them as objects with the learning rate inside, each in its own scope:
  meta_train.inner_optimizer = @inner/SGD()
  inner/SGD.learning_rate = 1e-2
"""

import dataclasses
import re

import gin
import tensorflow as tf

from tf_metainit import checks


class _Optimizer:
  name = None  # as results and manifests name it (a class attribute, not a field)

  def describe(self):
    """{'name': 'sgd', 'learning_rate': 0.01}: for results and manifests."""
    return {"name": self.name, **dataclasses.asdict(self)}


@gin.configurable
@dataclasses.dataclass(frozen=True)
class SGD(_Optimizer):
  learning_rate: float = 1e-2
  name = "sgd"

  def __post_init__(self):
    checks.positive("SGD.learning_rate (in its gin scope, e.g. inner/SGD)",
                    self.learning_rate)

  def init(self, params):
    return ()

  def update(self, grads, state, params, step):
    del step
    return [p - self.learning_rate * g for p, g in zip(params, grads)], state


@gin.configurable
@dataclasses.dataclass(frozen=True)
class Adam(_Optimizer):
  learning_rate: float = 1e-4
  beta1: float = 0.9
  beta2: float = 0.999
  epsilon: float = 1e-8
  name = "adam"

  def __post_init__(self):
    checks.positive("Adam.learning_rate (in its gin scope, e.g. standard/Adam)",
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


_CLASSES = {cls.name: cls for cls in (SGD, Adam)}


@gin.configurable
@dataclasses.dataclass(frozen=True)
class Switch(_Optimizer):
  """`first` for the first `at` steps, then `second` from its own step 0: e.g. a Meta
  init's own SGD steps, then Adam for a long fit (tf-metainit-fit's default)."""
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


def from_description(description):
  """The optimizer `describe()` described ({'name': 'sgd', 'learning_rate': ...})."""
  classes = {cls.name: cls for cls in (SGD, Adam)}
  arguments = {k: v for k, v in description.items() if k != "name"}
  if description.get("name") not in classes:
    raise ValueError(f"Unknown optimizer {description!r}; known: {sorted(classes)}.")
  return classes[description["name"]](**arguments)


def check(value, selector, scope):
  """Returns `value`: an optimizer object, or dicts of them (per init, per setting).

  Anything else, such as the names ('sgd') and (name, learning_rate) pairs optimizers
  were bound as before, is a one-line error showing the gin binding to use instead.
  """
  leaves = _leaves(value)
  bad = [v for v in leaves if isinstance(v, type) or not hasattr(v, "update")]
  if bad:
    raise ValueError(
        f"{selector} holds {bad[0]!r}, not an optimizer object (names and (name, "
        "learning_rate) pairs are the old form). Bind objects with the learning rate "
        f"inside: {'; '.join(new_form(selector, value, scope))}")
  return value


def old_form(value):
  """Whether `value` (maybe in dicts per init / setting) holds optimizers as names or
  (name, learning_rate) pairs, as gin bound them before they were objects."""
  return any(isinstance(v, (str, tuple, list)) for v in _leaves(value))


def _leaves(value):
  if isinstance(value, dict):
    return [leaf for v in value.values() for leaf in _leaves(v)]
  return [value]


def new_form(selector, value, scope, learning_rate=1e-2):
  """The gin lines that bind `value` as optimizer objects.

  `value` holds optimizers the old way or the new (also inside per-init and
  per-setting dicts): a name (at `learning_rate`, meta_train's old default), a
  (name, learning_rate) pair, or an object. Each object gets the scope `scope`, or
  `scope`_<dict key> inside dicts. A rate given as text (read from an old config.gin)
  is kept as written.
  """
  rates = []

  def render(v, scope):
    if isinstance(v, dict):
      items = (f"{k!r}: {render(x, _scope(scope, k))}" for k, x in v.items())
      return "{" + ", ".join(items) + "}"
    if isinstance(v, str):
      v = (v, learning_rate)
    cls = v if isinstance(v, type) else type(v)
    if isinstance(v, (tuple, list)) and len(v) == 2 and str(v[0]).lower() in _CLASSES:
      cls, rate = _CLASSES[str(v[0]).lower()], v[1]
    elif cls in _CLASSES.values():
      rate = v.learning_rate  # also a class's: its default
    else:
      raise ValueError(f"{selector} holds {v!r}, not an optimizer: bind an object, "
                       f"e.g. @{scope}/SGD() with {scope}/SGD.learning_rate = 0.01 (or "
                       "Adam).")
    rates.append(f"{scope}/{cls.__name__}.learning_rate = "
                 f"{rate if isinstance(rate, str) else repr(rate)}")
    return f"@{scope}/{cls.__name__}()"

  return [f"{selector} = {render(value, scope)}"] + rates


def _scope(prefix, key):
  """A gin scope for a dict entry: 'meta:SV' -> 'meta_SV', setting 25 -> 'meta_25'."""
  name = re.sub(r"\W", "_", str(key))
  return f"{prefix}_{name}" if prefix else name
