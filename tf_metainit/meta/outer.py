"""One outer step of meta-training (MAML or Reptile): the unit train.py schedules.

The step is pure TensorFlow (no Python side effects), so it traces once into a
tf.function and can be handed to a tf.distribute strategy unchanged; logging,
validation and checkpoints stay in train.py.
"""

import tensorflow as tf

from tf_metainit.meta import learned_lr
from tf_metainit.meta import maml
from tf_metainit.meta import reptile
from tf_metainit.tasks import contract

ALGORITHMS = ("maml", "reptile")


def build_step(field, task, optimizer, inner_optimizer, algorithm="maml", inner_steps=2,
               first_order=False, seed=0):
  """Returns step(signals, step) -> (mean loss before the inner loop, mean loss after,
  outer-gradient global norm, whether every updated weight is finite).

  Each step's randomness (inner batches) is derived from (seed, step), so a resumed
  run repeats it exactly.
  """
  if algorithm not in ALGORITHMS:
    raise ValueError(f"meta_train.algorithm must be one of {ALGORITHMS}, got {algorithm!r}.")
  variables = learned_lr.meta_variables(field, inner_optimizer)

  def step(signals, step_index):
    step_seed = contract.stateless_seed(seed, step_index)
    if algorithm == "maml":
      before, after, grad_norm = maml.step(field, task, optimizer, signals, step_seed,
                                           inner_steps, inner_optimizer, first_order)
    else:
      before, after, grad_norm = reptile.step(field, task, optimizer, signals, step_seed,
                                              inner_steps, inner_optimizer)
    # The losses are those of the weights before this update; the update itself can
    # still produce inf/NaN weights, which must not be checkpointed either.
    finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(v)) for v in variables])
    return tf.reduce_mean(before), tf.reduce_mean(after), grad_norm, finite

  return step
