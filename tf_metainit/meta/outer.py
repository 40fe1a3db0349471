"""One outer step of meta-training (MAML or Reptile): the unit train.py schedules.

The step is pure TensorFlow (no Python side effects), so it traces once into a
tf.function, and a tf.distribute strategy runs it unchanged on every replica
(`strategy.run`): each replica takes its share of the outer batch, the meta-gradients
are averaged over the global batch by one all-reduce, and every replica applies the
same Adam update as one device would with the whole batch. Logging, validation and
checkpoints stay in train.py.
"""

import collections
import math

import keras
import tensorflow as tf

from tf_metainit.meta import learned_lr
from tf_metainit.meta import maml
from tf_metainit.meta import reptile
from tf_metainit.tasks import contract

ALGORITHMS = ("maml", "reptile")


def function(fn, jit_compile=False):
  """tf.function with XLA as a switch: on CPU plain graphs are ~2x faster here."""
  return tf.function(fn, jit_compile=jit_compile, reduce_retracing=True)


class OuterSchedule(keras.optimizers.schedules.LearningRateSchedule):
  """Linear warm-up to `peak`, then constant or cosine decay to final_fraction * peak."""

  def __init__(self, peak, num_iterations, warmup_steps=0, decay="constant",
               final_fraction=0.0):
    if decay not in ("constant", "cosine"):
      raise ValueError(f"meta_train.outer_lr_decay must be 'constant' or 'cosine', got "
                       f"{decay!r}.")
    self.peak, self.num_iterations = float(peak), int(num_iterations)
    self.warmup_steps, self.decay = int(warmup_steps), decay
    self.final_fraction = float(final_fraction)

  def __call__(self, step):
    step = tf.cast(step, tf.float32)
    warm = (tf.minimum(1.0, (step + 1.0) / self.warmup_steps) if self.warmup_steps
            else tf.constant(1.0))
    if self.decay == "constant":
      return self.peak * warm
    span = max(self.num_iterations - self.warmup_steps, 1)
    progress = tf.clip_by_value((step - self.warmup_steps) / span, 0.0, 1.0)
    cosine = 0.5 * (1.0 + tf.cos(math.pi * progress))
    return self.peak * warm * (self.final_fraction + (1 - self.final_fraction) * cosine)

  def get_config(self):
    return dict(peak=self.peak, num_iterations=self.num_iterations,
                warmup_steps=self.warmup_steps, decay=self.decay,
                final_fraction=self.final_fraction)


# What meta-training runs: the built inner optimizer (its learned rates, if any), the
# outer Keras optimizer (built over theta0, and those rates unless they have their
# own), the rates' own Keras optimizer (Reptile; else None) and the compiled step.
Assembly = collections.namedtuple("Assembly", ["inner_optimizer", "optimizer",
                                               "rates_optimizer", "step"])


def assemble(task, algorithm, inner_steps, inner_optimizer, outer_optimizer,
             schedule=None, first_order=False, seed=0, clip_global_norm=None,
             jit_compile=False, strategy=None, rates_optimizer=None, rates_schedule=None):
  """The outer step of meta-training `task.field`, ready to run.

  inner_optimizer / outer_optimizer: gin objects (meta/optimizers.py, learned_lr.py);
  schedule: the outer learning rate (default: outer_optimizer's, constant);
  rates_optimizer / rates_schedule: the learned inner rates' own optimizer and rate
    (Reptile, whose outer step for theta0 is not a gradient step);
  strategy: run the step on its replicas (None: one device). Build it in the
  strategy's scope, as the field.
  """
  field = task.field
  inner = inner_optimizer.build([v.shape for v in field.trainable_variables],
                                inner_steps)
  optimizer = outer_optimizer.keras_optimizer(
      outer_optimizer.learning_rate if schedule is None else schedule)
  rates = None
  if rates_optimizer is not None:
    rates = rates_optimizer.keras_optimizer(
        rates_optimizer.learning_rate if rates_schedule is None else rates_schedule)
    rates.build(learned_lr.rates_of(inner))
    optimizer.build(field.trainable_variables)
  else:
    optimizer.build(learned_lr.meta_variables(field, inner))
  step = build_step(field, task, optimizer, inner, algorithm, inner_steps, first_order,
                    seed, clip_global_norm, rates)
  return Assembly(inner, optimizer, rates, compiled_step(step, jit_compile, strategy))


def compiled_step(step, jit_compile, strategy=None):
  """The outer step as one tf.function; with a strategy, run on every replica (their
  results agree after the all-reduce, so the first is returned)."""
  if strategy is None:
    return function(step, jit_compile)

  def replicated(signals, step_index):
    outputs = strategy.run(step, args=(signals, step_index))
    return tuple(strategy.experimental_local_results(x)[0] for x in outputs)

  return function(replicated, jit_compile)


def build_step(field, task, optimizer, inner_optimizer, algorithm="maml", inner_steps=2,
               first_order=False, seed=0, clip_global_norm=None, rates_optimizer=None):
  """Returns step(signals, step) -> (mean loss before the inner loop, mean loss after,
  outer-gradient global norm, whether every updated weight is finite), each the same
  on every replica.

  Each step's randomness (inner batches) is derived from (seed, step), so a resumed
  run repeats it exactly. `clip_global_norm` clips the averaged meta-gradient;
  `rates_optimizer` (a built Keras optimizer) updates the learned inner rates instead
  of `optimizer`.
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
    grads = [g / count for g in grads]
    if rates_optimizer is None:
      optimizer.apply_gradients(zip(grads, variables))
    else:
      split = len(field.trainable_variables)
      optimizer.apply_gradients(zip(grads[:split], variables[:split]))
      rates_optimizer.apply_gradients(zip(grads[split:], variables[split:]))
    # The losses are those of the weights before this update; the update itself can
    # still produce inf/NaN weights, which must not be checkpointed either.
    finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(v)) for v in variables])
    mean = lambda x: replicas.all_reduce(tf.distribute.ReduceOp.MEAN, tf.reduce_mean(x))
    return mean(before), mean(after), tf.linalg.global_norm(grads), finite

  return step
