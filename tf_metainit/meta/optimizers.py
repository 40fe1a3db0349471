"""Functional optimizers for inner loops and test-time optimisation.

Inner loops must stay differentiable (MAML) and per-signal (batched params), so these
are pure functions of (grads, state, params) rather than Keras optimizers that assign
into variables. Adam follows Kingma & Ba with the optax defaults the reference used.
"""

import dataclasses

import gin
import tensorflow as tf


@gin.configurable
@dataclasses.dataclass(frozen=True)
class SGD:
  learning_rate: float = 1e-2

  def init(self, params):
    return ()

  def update(self, grads, state, params, step):
    del step
    return [p - self.learning_rate * g for p, g in zip(params, grads)], state


@gin.configurable
@dataclasses.dataclass(frozen=True)
class Adam:
  learning_rate: float = 1e-4
  beta1: float = 0.9
  beta2: float = 0.999
  epsilon: float = 1e-8

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


def make(name, learning_rate):
  """'sgd' or 'adam' at `learning_rate`: how gin files name a test-time optimizer."""
  name = name.lower()
  if name == "sgd":
    return SGD(learning_rate)
  if name == "adam":
    return Adam(learning_rate)
  raise ValueError(f"Unknown optimizer {name!r}: use 'sgd' or 'adam'.")
