"""ReLU MLPs behind a fixed input encoding: the CT and NeRF fields of the paper.

Kernels start from a normal truncated at two standard deviations, biases at zero.
`kernel_init` chooses its scale:
  'keras'  Keras' VarianceScaling(1, fan_in, truncated_normal): the normal's std is
           raised so the truncated weights have std exactly 1/sqrt(fan_in);
  'haiku'  Haiku's Linear default, which the reference notebooks use:
           TruncatedNormal(stddev=1/sqrt(fan_in)) uncorrected, so the weights' std is
           0.8796/sqrt(fan_in) (REFERENCE.md; a smaller output scale at init).
"""

import keras
import numpy as np
import tensorflow as tf

from tf_metainit import checks
from tf_metainit.fields import encodings
from tf_metainit.fields import functional

KERNEL_INITS = ("keras", "haiku")
_OUTPUTS = {
    "sigmoid": tf.sigmoid,
    "linear": tf.identity,
}


class EncodedMLP(functional.Field):
  """encoding -> (depth-1) x [Linear(width) + ReLU] -> Linear(out_dim) -> output act."""

  def __init__(self, in_dim, out_dim, encoded_dim, width, depth, output, seed, name,
               kernel_init="keras"):
    super().__init__(name=name)
    kind = type(self).__name__
    for arg, value in (("in_dim", in_dim), ("out_dim", out_dim), ("width", width)):
      checks.positive_int(f"{kind}.{arg}", value)
    if output not in _OUTPUTS:
      raise ValueError(f"Unknown output activation {output!r}; use one of {sorted(_OUTPUTS)}.")
    if depth < 2:
      raise ValueError(f"MLP depth must be >= 2 linear layers, got {depth}.")
    if kernel_init not in KERNEL_INITS:
      raise ValueError(f"{kind}.kernel_init must be one of {KERNEL_INITS}, got "
                       f"{kernel_init!r}.")
    self.kernel_init = kernel_init
    self.in_dim, self.out_dim = in_dim, out_dim
    self.width, self.depth, self.output_activation = width, depth, output
    dims = [encoded_dim] + [width] * (depth - 1) + [out_dim]
    for i, (fan_in, fan_out) in enumerate(zip(dims[:-1], dims[1:])):
      self.add_weight(shape=(fan_in, fan_out), name=f"kernel_{i}",
                      initializer=_kernel_initializer(kernel_init, fan_in, seed + i))
      self.add_weight(shape=(fan_out,), name=f"bias_{i}", initializer="zeros")

  def encode(self, x):
    raise NotImplementedError

  def apply_flat(self, params, x):
    h = self.encode(x)
    for i in range(0, len(params) - 2, 2):
      h = tf.nn.relu(functional.dense(h, params[i], params[i + 1]))
    return _OUTPUTS[self.output_activation](functional.dense(h, params[-2], params[-1]))

  def layer_activation(self, last):
    return self.output_activation if last else "relu"

  def _describe_mlp(self):
    return {"type": self.TYPE, "in_dim": self.in_dim, "out_dim": self.out_dim,
            "width": self.width, "depth": self.depth,
            "output_activation": self.output_activation,
            "kernel_init": self.kernel_init}

  @classmethod
  def _mlp_arguments(cls, description):
    return dict({k: description[k] for k in ("in_dim", "out_dim", "width", "depth")},
                output=description["output_activation"],
                # Exports made before the option existed used Keras' init.
                kernel_init=description.get("kernel_init", "keras"))


def _kernel_initializer(kind, fan_in, seed):
  if kind == "haiku":
    return keras.initializers.TruncatedNormal(stddev=1.0 / np.sqrt(fan_in), seed=seed)
  return keras.initializers.VarianceScaling(1.0, "fan_in", "truncated_normal",
                                            seed=seed)


@functional.configurable
class FourierMLP(EncodedMLP):
  """Random Fourier features [sin(xB), cos(xB)], B = sigma N(0,1), then a ReLU MLP."""

  TYPE = "fourier_mlp"

  @classmethod
  def arguments_from_description(cls, description, constants):
    return dict(cls._mlp_arguments(description), sigma=description["sigma"],
                two_pi=description["two_pi"],
                num_features=int(constants["fourier_matrix"].shape[1]))

  def __init__(self, in_dim=2, out_dim=1, num_features=256, sigma=30.0, two_pi=False,
               width=256, depth=5, output="sigmoid", seed=0, name="fourier_mlp",
               kernel_init="keras"):
    checks.positive_int("FourierMLP.num_features", num_features)
    super().__init__(in_dim, out_dim, 2 * num_features, width, depth, output, seed, name,
                     kernel_init)
    self.sigma, self.two_pi = checks.positive("FourierMLP.sigma", sigma), bool(two_pi)
    self.feature_matrix = self.add_weight(
        shape=(in_dim, num_features), name="fourier_matrix", trainable=False,
        initializer=keras.initializers.Constant(
            encodings.gaussian_matrix(in_dim, num_features, sigma, seed + 1000)))

  def encode(self, x):
    matrix = tf.convert_to_tensor(self.feature_matrix)
    if x.shape.rank == 3:
      matrix = matrix[None]
    return encodings.fourier_features(x, matrix, self.two_pi)

  def describe(self):
    return dict(self._describe_mlp(), sigma=self.sigma,
                two_pi=self.two_pi,
                formula="h = [sin(x @ B), cos(x @ B)] (times 2*pi first if two_pi); "
                        "h = relu(h @ W_i + b_i) for i < depth-1; "
                        "out = act(h @ W_last + b_last)")


@functional.configurable
class NerfMLP(EncodedMLP):
  """Positional encoding (N log-spaced frequencies up to 2^f) then a ReLU MLP.

  Outputs raw values (rgb logits, density logit); the renderer applies sigmoid/relu.
  """

  TYPE = "nerf_mlp"

  @classmethod
  def arguments_from_description(cls, description, constants):
    del constants
    return dict(cls._mlp_arguments(description),
                num_frequencies=description["num_frequencies"],
                max_log_frequency=description["max_log_frequency"])

  def __init__(self, in_dim=3, out_dim=4, num_frequencies=20, max_log_frequency=8.0,
               width=256, depth=6, output="linear", seed=0, name="nerf_mlp",
               kernel_init="keras"):
    checks.positive_int("NerfMLP.num_frequencies", num_frequencies)
    super().__init__(in_dim, out_dim, 2 * num_frequencies * in_dim, width, depth,
                     output, seed, name, kernel_init)
    self.num_frequencies = num_frequencies
    self.max_log_frequency = checks.non_negative("NerfMLP.max_log_frequency",
                                                 max_log_frequency)
    self.frequencies = encodings.positional_frequencies(num_frequencies, max_log_frequency)

  def encode(self, x):
    return encodings.positional_encoding(x, tf.constant(self.frequencies))

  def describe(self):
    return dict(self._describe_mlp(),
                num_frequencies=self.num_frequencies,
                max_log_frequency=self.max_log_frequency,
                frequencies=np.asarray(self.frequencies).tolist(),
                formula="h = concat(sin(x f_k) for k, coords; cos(x f_k) for k, coords); "
                        "h = relu(h @ W_i + b_i) for i < depth-1; out = h @ W_last + b_last")
