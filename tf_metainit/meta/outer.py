"""One outer step of meta-training (MAML or Reptile): the unit train.py schedules.

The step is pure TensorFlow (no Python side effects), so it traces once into a
tf.function, and a tf.distribute strategy runs it unchanged on every replica
(`strategy.run`): each replica takes its share of the outer batch, the meta-gradients
are averaged over the global batch by one all-reduce, and every replica applies the
same Adam update as one device would with the whole batch. Logging, validation and
checkpoints stay in train.py.
"""

import tensorflow as tf

from tf_metainit.meta import learned_lr
from tf_metainit.meta import maml
from tf_metainit.meta import reptile
from tf_metainit.tasks import contract

ALGORITHMS = ("maml", "reptile")


def build_step(field, task, optimizer, inner_optimizer, algorithm="maml", inner_steps=2,
               first_order=False, seed=0, clip_global_norm=None):
  """Returns step(signals, step) -> (mean loss before the inner loop, mean loss after,
  outer-gradient global norm, whether every updated weight is finite), each the same
  on every replica.

  Each step's randomness (inner batches) is derived from (seed, step), so a resumed
  run repeats it exactly. `clip_global_norm` clips the averaged meta-gradient.
  """
  if algorithm not in ALGORITHMS:
    raise ValueError(f"meta_train.algorithm must be one of {ALGORITHMS}, got {algorithm!r}.")
  variables = learned_lr.meta_variables(field, inner_optimizer)

  def step(signals, step_index):
    step_seed = contract.stateless_seed(seed, step_index)
    if algorithm == "maml":
      before, after, grads = maml.meta_loss_and_grads(
          task, field.trainable_variables, signals, step_seed, inner_steps,
          inner_optimizer, first_order)
    else:
      before, after, grads = reptile.reptile_grads(
          task, field.trainable_variables, signals, step_seed, inner_steps,
          inner_optimizer)
    replicas = tf.distribute.get_replica_context()
    count = replicas.num_replicas_in_sync
    # Each replica's grads are the mean over its share; the mean over the global batch
    # is their mean over replicas (the shares are equal: train.py checks it).
    grads = replicas.all_reduce(tf.distribute.ReduceOp.MEAN,
                                [tf.convert_to_tensor(g) for g in grads])
    if clip_global_norm is not None:
      grads, _ = tf.clip_by_global_norm(grads, clip_global_norm)
    # Keras sums the gradients of all replicas before it updates mirrored weights.
    optimizer.apply_gradients(zip([g / count for g in grads], variables))
    # The losses are those of the weights before this update; the update itself can
    # still produce inf/NaN weights, which must not be checkpointed either.
    finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(v)) for v in variables])
    mean = lambda x: replicas.all_reduce(tf.distribute.ReduceOp.MEAN, tf.reduce_mean(x))
    return mean(before), mean(after), tf.linalg.global_norm(grads), finite

  return step
