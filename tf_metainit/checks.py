"""Entry checks of gin-bound numbers: one line that names the binding and the rule.

Each check returns the value (converted) so a constructor can check and store in one
go: `self.width = checks.positive_int("Siren.width", width)`.
"""

import math
import numbers


def _fail(binding, rule, value):
  raise ValueError(f"{binding} must be {rule}, got {value!r}.")


def positive_int(binding, value):
  return _integer(binding, value, 1, "a positive integer")


def non_negative_int(binding, value):
  return _integer(binding, value, 0, "an integer >= 0")


def _integer(binding, value, low, rule):
  if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
    _fail(binding, rule, value)
  return int(value)


def positive(binding, value):
  """A finite number > 0 (learning rates, scales)."""
  if not _real(value) or value <= 0:
    _fail(binding, "a finite number > 0", value)
  return float(value)


def non_negative(binding, value):
  if not _real(value) or value < 0:
    _fail(binding, "a finite number >= 0", value)
  return float(value)


def fraction(binding, value):
  if not _real(value) or not 0 <= value <= 1:
    _fail(binding, "a number in [0, 1]", value)
  return float(value)


def optional(check, binding, value):
  """`check` unless value is None (an unset option)."""
  return None if value is None else check(binding, value)


def _real(value):
  return (isinstance(value, numbers.Real) and not isinstance(value, bool)
          and math.isfinite(value))


def image_request(index, seed, resolution):
  """A procedural image's index, seed and resolution (text, dead leaves)."""
  if index < 0 or seed < 0:
    raise ValueError(f"index and seed must be >= 0, got {index}, {seed}.")
  if resolution < 1:
    raise ValueError(f"resolution must be >= 1, got {resolution}.")


def unread(owner, values, when):
  """Refuses options the configuration will not read: `values` {name: value} are
  bound (not None/False) although `when` (e.g. "dataset = 'folder'") is not so."""
  for name, value in values.items():
    if value is not None and value is not False:
      raise ValueError(f"{owner}.{name} is only read when {owner}.{when}; this run "
                       f"would ignore it. Remove the binding or set {owner}.{when}.")
