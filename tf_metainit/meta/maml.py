"""MAML (Finn et al. 2017) as the paper's image experiments use it.

Support = query: the meta-loss is the loss of the adapted weights on the batch the
inner loop saw (the whole image, for images). Second order by default: the inner loop
is unrolled under the outer tape, so the meta-gradient flows through every inner
gradient; `first_order` stops those gradients (FOMAML).
"""

import keras
import tensorflow as tf

from tf_metainit.fields import base as fields_base
from tf_metainit.meta import inner
from tf_metainit.meta import learned_lr
from tf_metainit.tasks import base as tasks_base


def meta_loss_and_grads(task, theta0, signals, seed, inner_steps, inner_optimizer,
                        first_order=False):
  """Meta-gradient of the post-adaptation loss w.r.t. theta0 (variables or tensors).

  Returns (loss before adaptation (B,), meta-loss after (B,), grads per theta0 entry).
  When the inner optimizer has meta-learned rates (meta/learned_lr.py), their grads
  follow theta0's in the returned list.
  """
  batch = tasks_base.batch_size_of(signals)
  obs = task.observe(signals, seed)
  batch_fn = lambda i: task.inner_batch(obs, i, seed)
  query = task.inner_batch(obs, tf.constant(inner_steps), seed)
  rates = learned_lr.rates_of(inner_optimizer)
  if first_order:
    if rates:
      raise ValueError("Learned inner learning rates need second-order MAML: set "
                       "meta_train.first_order = False or inner_lr_mode = 'fixed'.")
    return _first_order(task, theta0, batch, batch_fn, query, inner_steps,
                        inner_optimizer)
  with tf.GradientTape() as tape:
    # tape.watch rejects Keras 3 variables; trainable ones are watched automatically,
    # so only plain tensors (e.g. float64 theta0 in tests) are watched explicitly.
    tape.watch([t for t in theta0 if not isinstance(t, keras.Variable)])
    params = fields_base.batch_params([tf.convert_to_tensor(t) for t in theta0], batch)
    adapted, _ = inner.adapt(task.loss, params, batch_fn, inner_steps, inner_optimizer,
                             unroll=True)
    after = task.loss(adapted, *query)
    meta_loss = tf.reduce_mean(after)
  grads = tape.gradient(meta_loss, list(theta0) + rates)
  before = task.loss(params, *query)
  return before, after, grads


def _first_order(task, theta0, batch, batch_fn, query, inner_steps, inner_optimizer):
  """FOMAML: d(adapted)/d(theta0) taken as the identity.

  The meta-gradient is then the query-loss gradient at the adapted weights, summed over
  the batch (the mean over signals is inside the loss). Nothing of the inner loop is
  recorded, so it runs as a while_loop and memory stays flat in K.
  """
  params = fields_base.batch_params([tf.convert_to_tensor(t) for t in theta0], batch)
  adapted, _ = inner.adapt(task.loss, params, batch_fn, inner_steps, inner_optimizer)
  with tf.GradientTape() as tape:
    tape.watch(adapted)
    after = task.loss(adapted, *query)
    meta_loss = tf.reduce_mean(after)
  grads = [tf.reduce_sum(g, 0) for g in tape.gradient(meta_loss, adapted)]
  return task.loss(params, *query), after, grads


def step(field, task, optimizer, signals, seed, inner_steps, inner_optimizer,
         first_order=False):
  """One outer update of theta0 (and of learned inner rates, if any)."""
  variables = learned_lr.meta_variables(field, inner_optimizer)
  before, after, grads = meta_loss_and_grads(
      task, field.trainable_variables, signals, seed, inner_steps, inner_optimizer,
      first_order)
  optimizer.apply_gradients(zip(grads, variables))
  return before, after, tf.linalg.global_norm(grads)
