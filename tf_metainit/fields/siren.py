"""SIREN as the paper's image experiments use it (Sitzmann et al. 2020, Tancik et al. 2021).

Reference details (REFERENCE.md 1.1): w0 multiplies the pre-activation of EVERY sine
layer, not just the first; the last layer is linear with a constant +0.5 added, so a
random network outputs mid grey; coordinates live in [0, 1).
"""

import math

import keras
import tensorflow as tf

from tf_metainit import checks
from tf_metainit.fields import functional


@functional.configurable
class Siren(functional.Field):
  """`depth` linear layers of `width` units; sin(w0 * (Wx + b)) on all but the last."""

  TYPE = "siren"

  @classmethod
  def arguments_from_description(cls, description, constants):
    del constants
    return {k: description[k] for k in ("in_dim", "out_dim", "width", "depth", "w0",
                                        "output_offset")}

  def __init__(self, in_dim=2, out_dim=3, width=256, depth=5, w0=200.0,
               output_offset=0.5, seed=0, name="siren"):
    super().__init__(name=name)
    for arg, value in (("in_dim", in_dim), ("out_dim", out_dim), ("width", width)):
      checks.positive_int(f"Siren.{arg}", value)
    if checks.positive_int("Siren.depth", depth) < 2:
      raise ValueError(f"Siren.depth must be >= 2 linear layers, got {depth}.")
    self.in_dim, self.out_dim = in_dim, out_dim
    self.width, self.depth = width, depth
    self.w0 = checks.positive("Siren.w0", w0)
    self.output_offset = float(output_offset)
    dims = [in_dim] + [width] * (depth - 1) + [out_dim]
    for i, (fan_in, fan_out) in enumerate(zip(dims[:-1], dims[1:])):
      # First layer U(-1/in, 1/in); later U(+-sqrt(6/in)/w0) keeps sin inputs ~U(-pi,pi).
      bound = 1.0 / fan_in if i == 0 else math.sqrt(6.0 / fan_in) / self.w0
      self.add_weight(
          shape=(fan_in, fan_out), name=f"kernel_{i}",
          initializer=keras.initializers.RandomUniform(-bound, bound, seed=seed + i))
      self.add_weight(shape=(fan_out,), name=f"bias_{i}", initializer="zeros")

  def init_bounds(self):
    """Per-layer bound of the uniform kernel init, for tests and docs."""
    dims = [self.in_dim] + [self.width] * (self.depth - 1)
    return [1.0 / dims[0]] + [math.sqrt(6.0 / d) / self.w0 for d in dims[1:]]

  def layer_activation(self, last):
    return "identity + output_offset" if last else "sin(w0 * z)"

  def apply_flat(self, params, x):
    h = x
    for i in range(0, len(params) - 2, 2):
      h = tf.sin(self.w0 * functional.dense(h, params[i], params[i + 1]))
    return functional.dense(h, params[-2], params[-1]) + self.output_offset

  def describe(self):
    return {
        "type": self.TYPE, "in_dim": self.in_dim, "out_dim": self.out_dim,
        "width": self.width, "depth": self.depth, "w0": self.w0,
        "output_offset": self.output_offset,
        "formula": "h = sin(w0 * (h @ W_i + b_i)) for i < depth-1; "
                   "out = h @ W_last + b_last + output_offset",
    }
