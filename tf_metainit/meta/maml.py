"""MAML (Finn et al. 2017) as the paper's image experiments use it.

Support = query: the meta-loss is the loss of the adapted weights on the batch the
inner loop saw (the whole image, for images). Second order by default: the inner loop
is unrolled under the outer tape, so the meta-gradient flows through every inner
gradient; `first_order` stops those gradients (FOMAML).
"""

import keras
import tensorflow as tf

from tf_metainit.fields import functional
from tf_metainit.meta import inner
from tf_metainit.meta import learned_lr
from tf_metainit.tasks import contract


def meta_loss_and_grads(task, theta0, signals, seed, inner_steps, inner_optimizer,
                        first_order=False):
  """Meta-gradient of the post-adaptation loss w.r.t. theta0 (variables or tensors).

  Returns (loss before adaptation (B,), meta-loss after (B,), grads per theta0 entry).
  When the inner optimizer has meta-learned rates (meta/learned_lr.py), their grads
  follow theta0's in the returned list.
  """
  batch = contract.batch_size_of(signals)
  rates = learned_lr.rates_of(inner_optimizer)
  if first_order and rates:
    raise ValueError("Learned inner learning rates need second-order MAML: set "
                     "meta_train.first_order = False or inner_lr_mode = 'fixed'.")
  with tf.GradientTape() as tape:
    # tape.watch rejects Keras 3 variables; trainable ones are watched automatically,
    # so only plain tensors (e.g. float64 theta0 in tests) are watched explicitly.
    tape.watch([t for t in theta0 if not isinstance(t, keras.Variable)])
    params = functional.batch_params([tf.convert_to_tensor(t) for t in theta0], batch)
    if first_order:
      # FOMAML: d(adapted)/d(theta0) taken as the identity. Nothing of the inner loop
      # is recorded (a while_loop, memory flat in K), and the query-loss gradient at
      # the adapted weights passes straight to theta0 (summed over the batch).
      fitted = inner.fit(task, [tf.stop_gradient(p) for p in params], signals,
                         inner_steps, inner_optimizer, seed)
      adapted = [p + tf.stop_gradient(a - p) for p, a in zip(params, fitted.params)]
    else:
      fitted = inner.fit(task, params, signals, inner_steps, inner_optimizer, seed,
                         unroll=True)
      adapted = fitted.params
    after = task.loss(adapted, *fitted.query)
    meta_loss = tf.reduce_mean(after)
  grads = tape.gradient(meta_loss, list(theta0) + rates)
  before = task.loss(params, *fitted.query)
  return before, after, grads
