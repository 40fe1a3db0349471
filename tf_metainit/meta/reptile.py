"""Reptile (Nichol et al. 2018) as the paper's reference notebooks run it.

Each signal of the outer batch is adapted K steps from theta0; (theta0 - mean adapted
theta) is handed to the outer optimiser (Adam in the reference) as if it were a
gradient. No gradient flows through the inner loop, so it runs as a tf.while_loop and
memory is flat in K.

Learned inner rates (meta/learned_lr.py) get a first-order gradient: each inner step's
gradient g_k is held constant, so theta_K = theta_0 - sum_k rate_k g_k and
d loss(theta_K) / d rate_k = -<grad loss(theta_K), g_k> (per weight tensor, and per
step for LSLR). For K = 1 this is the exact derivative; for longer loops it drops the
Hessian terms, as first-order MAML does for theta0. The loop is then unrolled under a
tape (memory grows with K) but never differentiated twice.
"""

import tensorflow as tf

from tf_metainit.fields import functional
from tf_metainit.meta import inner
from tf_metainit.meta import learned_lr
from tf_metainit.tasks import contract


class _HeldGradients:
  """An inner optimizer whose update treats the gradients as constants."""

  def __init__(self, optimizer):
    self.optimizer = optimizer

  def init(self, params):
    return self.optimizer.init(params)

  def update(self, grads, state, params, step):
    return self.optimizer.update([tf.stop_gradient(g) for g in grads], state, params,
                                 step)


def reptile_grads(task, theta0, signals, seed, inner_steps, inner_optimizer):
  """Returns (loss before (B,), loss after (B,), theta0 - mean adapted theta), the
  last followed by the first-order gradients of the learned inner rates, if any."""
  theta0 = [tf.convert_to_tensor(t) for t in theta0]
  params = functional.batch_params(theta0, contract.batch_size_of(signals))
  rates = learned_lr.rates_of(inner_optimizer)
  if rates:
    with tf.GradientTape() as tape:
      fitted = inner.fit(task, [tf.stop_gradient(p) for p in params], signals,
                         inner_steps, _HeldGradients(inner_optimizer), seed, unroll=True)
      after = task.loss(fitted.params, *fitted.query)
      meta_loss = tf.reduce_mean(after)
    rate_grads = tape.gradient(meta_loss, rates)
  else:
    fitted = inner.fit(task, params, signals, inner_steps, inner_optimizer, seed)
    after, rate_grads = task.loss(fitted.params, *fitted.query), []
  before = task.loss(params, *fitted.query)
  grads = [t - tf.reduce_mean(a, 0) for t, a in zip(theta0, fitted.params)]
  return before, after, grads + rate_grads
