"""FLOPs of a workload call, counted analytically: dense matmuls only (`FLOP_RULES`)."""

FLOP_RULES = """\
Only dense matmuls are counted, as 2*m*n*k FLOPs each; elementwise work (sin, ReLU,
the SGD/Adam updates, volume-rendering compositing), the CT projector's gathers and
splats and the fixed Fourier-feature / positional encodings are ignored, so the
figures are a lower bound on the work done.

Per point, let F = sum over the field's weight layers of 2*fan_in*fan_out (one forward
pass) and F1 the first layer's share. In a backward pass every matmul costs one more
matmul of its size for each input that needs a gradient; the field's inputs never need
one, so the first layer skips its input gradient:
  forward + backward (one inner / test-time step)   T = 3F - F1
  second-order backward through one inner step      one matmul per (matmul of T,
                                                    input depending on theta0):
                                                    6F - 4*F1
Per call, with P = points per step (signals x pixels, or rays x samples):
  MAML, second order, K steps   P * [K(3F - F1) + F + K(6F - 4F1) + (2F - F1) + F]
                                = P * [K(9F - 5F1) + 4F - F1]
                                (inner steps, query forward, their backward, and the
                                 loss before adaptation that the step also reports)
  MAML, first order             P * [K(3F - F1) + F + (2F - F1) + F]
  Reptile                       P * [K(3F - F1) + 2F]   (K steps, losses before/after)
  test-time optimisation        P * S(3F - F1) for S steps
  rendering                     P * F
With F1 = 0 the second-order count is 9FK + 4F = 3(3FK + F) + F: a forward graph of
3FK + F whose backward costs about twice as much, plus the reported loss before."""


def layer_flops(field):
  """Forward matmul FLOPs per point of each weight layer: 2 * fan_in * fan_out."""
  return [2 * int(v.shape[0]) * int(v.shape[1]) for v in field.trainable_variables
          if len(v.shape) == 2]


def flops(field, points, kind, steps=1):
  """Dense-matmul FLOPs of one call of a workload (see FLOP_RULES).

  Args:
    field: a fields.functional.Field (only its kernel shapes are read).
    points: field evaluations per step (signals x pixels, rays x samples, ...).
    kind: 'maml_so', 'maml_fo', 'reptile', 'adapt' (test-time steps) or 'forward'.
    steps: inner steps K, or test-time steps S.
  """
  per_layer = layer_flops(field)
  f, f1 = sum(per_layer), per_layer[0]
  train = 3 * f - f1
  per_point = {
      "maml_so": steps * (train + 6 * f - 4 * f1) + f + (2 * f - f1) + f,
      "maml_fo": steps * train + f + (2 * f - f1) + f,
      "reptile": steps * train + 2 * f,
      "adapt": steps * train,
      "forward": f,
  }
  if kind not in per_point:
    raise ValueError(f"Unknown FLOP kind {kind!r}; use one of {sorted(per_point)}.")
  return int(points) * per_point[kind]
