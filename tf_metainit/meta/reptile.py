"""Reptile (Nichol et al. 2018) as the paper's reference notebooks run it.

Each signal of the outer batch is adapted K steps from theta0; (theta0 - mean adapted
theta) is handed to the outer optimiser (Adam in the reference) as if it were a
gradient. No gradient flows through the inner loop, so it runs as a tf.while_loop and
memory is flat in K.
"""

import tensorflow as tf

from tf_metainit.fields import functional
from tf_metainit.meta import inner
from tf_metainit.tasks import contract


def reptile_grads(task, theta0, signals, seed, inner_steps, inner_optimizer):
  """Returns (loss before (B,), loss after (B,), theta0 - mean adapted theta)."""
  theta0 = [tf.convert_to_tensor(t) for t in theta0]
  params = functional.batch_params(theta0, contract.batch_size_of(signals))
  fitted = inner.fit(task, params, signals, inner_steps, inner_optimizer, seed)
  before = task.loss(params, *fitted.query)
  after = task.loss(fitted.params, *fitted.query)
  grads = [t - tf.reduce_mean(a, 0) for t, a in zip(theta0, fitted.params)]
  return before, after, grads
