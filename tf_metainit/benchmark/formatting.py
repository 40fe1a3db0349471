"""Number formats shared by the report's tables and the goals."""

import numpy as np


def fmt(x, digits=1, unit=""):
  if x is None or (isinstance(x, float) and not np.isfinite(x)):
    return "–"
  return f"{x:,.{digits}f}{unit}"


def signed(x, digits=1):
  # Rounding first keeps a fitted -0.001 from printing as "-0.0".
  return f"{round(x, digits) + 0.0:+.{digits}f}"


def ms(seconds):
  return fmt(seconds * 1e3, 0 if seconds >= 0.1 else 1)
