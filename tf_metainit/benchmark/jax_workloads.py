"""The reference's framework beside ours: the second-order MAML outer step of
meta_workloads.build_plain_maml written in JAX and compiled with jax.jit, as the
authors' notebooks run it, so every benchmark run measures the ratio on its machine.

Optional: needs `pip install -e ".[compare]"` (JAX on CPU). The weights and the
batch are the TensorFlow workload's own, so both frameworks run the same numbers.
"""

import numpy as np

from tf_metainit.benchmark import flops
from tf_metainit.benchmark import workloads

INSTALL_HINT = 'pip install -e ".[compare]"'


def _jax():
  try:
    import jax  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(f"The jax workloads need JAX: {INSTALL_HINT}.") from e
  return jax


def meta_loss_and_gradient(jax, weights, coords, images, w0, offset, inner_lr,
                           inner_steps, batching):
  """(mean loss before adaptation, meta-loss, its gradient in `weights`) of
  second-order MAML: `inner_steps` SGD steps at `inner_lr` from `weights` on each
  image, the meta-loss the mean of the adapted losses. `weights` is the flat list
  [W1, b1, ..., Wn, bn] of the SIREN; `batching` 'loop' (a Python loop over the
  images, unrolled under jit) or 'vmap'."""
  jnp = jax.numpy

  def loss(params, target):
    h = coords
    for i in range(0, len(params) - 2, 2):
      h = jnp.sin(w0 * (h @ params[i] + params[i + 1]))
    return jnp.mean(jnp.square(h @ params[-2] + params[-1] + offset - target))

  def adapted_loss(params, target):
    for _ in range(inner_steps):
      grads = jax.grad(loss)(params, target)
      params = [p - inner_lr * g for p, g in zip(params, grads)]
    return loss(params, target)

  def meta_loss(params):
    if batching == "vmap":
      return jnp.mean(jax.vmap(adapted_loss, in_axes=(None, 0))(params, images))
    return sum(adapted_loss(params, images[b]) for b in range(images.shape[0])) / (
        images.shape[0])

  before = jnp.mean(jnp.stack([loss(weights, images[b])
                               for b in range(images.shape[0])]))
  value, grads = jax.value_and_grad(meta_loss)(weights)
  return before, value, grads


def build_jax_maml(resolution, batch, inner_steps, batching, jit=True):
  """One jitted outer step (meta-gradient and a hand-written Adam at 1e-5, as the
  TensorFlow baseline) per call; `batching` 'loop' or 'vmap'."""
  if not jit:
    raise ValueError("The JAX workloads run under jax.jit only (spec jit=True).")
  jax = _jax()
  jnp = jax.numpy
  task = workloads.image_task(resolution, batch)
  signals = next(iter(task.train_dataset(0).batch(batch, drop_remainder=True)))
  field = task.field
  images = jnp.asarray(np.reshape(signals["image"].numpy(), [batch, -1, 3]))
  coords = jnp.asarray(task.coords.numpy())
  w0, offset = float(field.w0), float(field.output_offset)

  @jax.jit
  def step(weights, moments, count, images):
    before, value, grads = meta_loss_and_gradient(
        jax, weights, coords, images, w0, offset, 1e-2, inner_steps, batching)
    count = count + 1.0
    c1, c2 = 1.0 - 0.9 ** count, 1.0 - 0.999 ** count
    new_weights, new_moments = [], []
    for w, (m, v), g in zip(weights, moments, grads):
      m, v = 0.9 * m + 0.1 * g, 0.999 * v + 0.001 * jnp.square(g)
      new_weights.append(w - 1e-5 * (m / c1) / (jnp.sqrt(v / c2) + 1e-8))
      new_moments.append((m, v))
    return new_weights, new_moments, count, before, value

  weights = [jnp.asarray(v.numpy()) for v in field.trainable_variables]
  state = [weights, [(jnp.zeros_like(w), jnp.zeros_like(w)) for w in weights],
           jnp.float32(0.0)]

  def call():
    weights, moments, count, before, value = step(*state, images)
    state[:] = [weights, moments, count]
    return np.asarray(before), np.asarray(value)  # waits for the step

  points = batch * resolution ** 2
  return workloads.Workload(
      f"JAX jit MAML (2nd order) outer step, {batching} over signals, "
      f"{resolution}², batch {batch}, K={inner_steps} (jax {jax.__version__})", call,
      flops.flops(field, points, "maml_so", inner_steps),
      {"algorithm": "maml_so", "field": "siren", "resolution": resolution,
       "batch": batch, "inner_steps": inner_steps, "points": points,
       "batching": batching, "jax": jax.__version__})
