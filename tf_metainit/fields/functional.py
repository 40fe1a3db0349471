"""The seam between Keras and the meta-learning code.

A field is a Keras model that owns its variables, initialisation and saving, and also
exposes `apply(params, inputs)`: the same forward pass over a plain list of tensors in
`trainable_variables` order. The meta code only ever calls `apply`, so inner loops never
assign into Keras variables (which would cut second-order gradients).

Params may carry a leading batch dimension (one set of weights per signal); then inputs
are (B, ..., in_dim) and each signal is evaluated with its own weights by batched matmul.
"""

import inspect

import gin
import keras
import tensorflow as tf


def configurable(cls):
  """gin.configurable for Keras classes.

  gin replaces `__init__` by a (*args, **kwargs) wrapper; Keras' Operation.__new__
  reads the argspec of `__init__`, so the original signature is put back.
  """
  signature = inspect.signature(cls.__init__)
  cls = gin.configurable(cls)
  cls.__init__.__signature__ = signature
  return cls


def dense(x, kernel, bias):
  """x @ kernel + bias, for shared (in, out) or per-signal (B, in, out) kernels."""
  if kernel.shape.rank == 3:
    return tf.matmul(x, kernel) + bias[:, None, :]
  return tf.matmul(x, kernel) + bias


# {describe()['type']: field class}: each subclass that names its TYPE registers, so an
# export's manifest rebuilds its field (from_description) with no table to edit.
TYPES = {}


class Field(keras.Model):
  """Base class: subclasses create weights in `__init__` and implement `apply_flat`."""

  in_dim: int
  out_dim: int
  TYPE = None

  def __init_subclass__(cls, **kwargs):
    super().__init_subclass__(**kwargs)
    if cls.__dict__.get("TYPE"):
      TYPES[cls.TYPE] = cls

  @classmethod
  def arguments_from_description(cls, description, constants):
    """Constructor arguments that rebuild the field `describe()` described;
    `constants` are its fixed (non-trainable) arrays by name."""
    raise NotImplementedError

  def apply(self, params, inputs):
    """Evaluates the field at `inputs` (..., in_dim) with weights `params`."""
    params = [tf.convert_to_tensor(p) for p in params]
    inputs = tf.convert_to_tensor(inputs)
    shape = tf.shape(inputs)
    if params[0].shape.rank == 3:
      # Inputs may have a batch dim of 1, shared by all signals (e.g. a pixel grid).
      flat = tf.reshape(inputs, [shape[0], -1, self.in_dim])
      out_shape = tf.concat([tf.shape(params[0])[:1], shape[1:-1], [self.out_dim]], 0)
    else:
      flat = tf.reshape(inputs, [-1, self.in_dim])
      out_shape = tf.concat([shape[:-1], [self.out_dim]], 0)
    return tf.reshape(self.apply_flat(params, flat), out_shape)

  def apply_flat(self, params, x):
    raise NotImplementedError

  def call(self, inputs):
    return self.apply(self.trainable_variables, inputs)

  def params(self):
    """The current weights as a list of tensors (a snapshot, not the variables)."""
    return [tf.identity(v) for v in self.trainable_variables]

  def set_params(self, params):
    for v, p in zip(self.trainable_variables, params, strict=True):
      v.assign(p)

  def describe(self):
    """Architecture facts a re-implementation needs (used by export manifests)."""
    raise NotImplementedError

  def layer_activation(self, last):
    """The nonlinearity after a hidden (or the `last`) layer, as text for export
    manifests; None when only describe()['formula'] can say it."""
    del last
    return None


def batch_params(params, batch_size):
  """Copies shared params once per signal: (shape) -> (B, shape)."""
  return [tf.broadcast_to(p[None], tf.concat([[batch_size], tf.shape(p)], 0))
          for p in params]


def mix(params_list, weights):
  """The weight-space mixture sum_k weights[k] params_list[k] of fitted fields."""
  return [sum(w * p[i] for w, p in zip(weights, params_list))
          for i in range(len(params_list[0]))]


def standard_copy(field):
  """A new field of `field`'s architecture with its fixed arrays (e.g. a Fourier
  matrix) kept and its own initial weights: the Standard init of the same field."""
  return from_description(field.describe(), {
      v.name: v.numpy() for v in field.non_trainable_variables})


def from_description(description, constants):
  """The field an export's manifest describes, its fixed arrays set from `constants`
  ({name: array}); its trainable weights are left to the caller."""
  kind = description.get("type")
  if kind not in TYPES:
    raise ValueError(f"Unknown field type {kind!r} in the manifest; this tf_metainit "
                     f"knows {sorted(TYPES)}.")
  field = TYPES[kind](**TYPES[kind].arguments_from_description(description, constants))
  for v in field.non_trainable_variables:
    v.assign(constants[v.name])
  return field
