"""The inner loop: K optimizer steps from given weights, batched over signals.

`params` carry a leading signal dimension, and the loss summed over signals has
per-signal gradients, so one call adapts a whole batch of signals independently.
Short loops can be unrolled (needed for second-order MAML); long ones run as a
tf.while_loop so 12-64 Reptile steps or 1000 test-time steps stay one small graph.
"""

import collections

import tensorflow as tf

from tf_metainit.tasks import contract

# Salts of the one seed scheme: every fit derives its observation seed and its
# inner-batch seed from the caller's seed the same way (see `fit`).
OBSERVE_SALT, BATCH_SALT = 1, 2

Fit = collections.namedtuple("Fit", ["params", "trace", "query"])


def adapt(loss_fn, params, batch_fn, num_steps, optimizer, unroll=False,
          trace_fn=None, trace_every=1):
  """Runs `num_steps` optimizer steps.

  Args:
    loss_fn: (params, inputs, targets) -> per-signal losses (B,).
    params: list of tensors (B, ...) to start from.
    batch_fn: step (int32 tensor) -> (inputs, targets) for that inner step.
    num_steps: Python int number of steps (or an int32 tensor when unroll=False and
      trace_fn=None, as in the exported `adapt` signature).
    optimizer: a functional optimizer from meta/optimizers.py.
    unroll: unroll in Python (differentiable by an enclosing tape) instead of a
      tf.while_loop.
    trace_fn: optional params -> (B,) tensor recorded before steps 0, e, 2e, ...
      (e = trace_every) and after the last step; its stack
      (ceil(num_steps / e) + 1, B) is returned. Row j holds the value after j*e steps,
      the last row the value after num_steps.
    trace_every: record the trace every this many steps (it may cost a full render).

  Returns:
    (adapted params, trace or None).
  """
  params = list(params)
  state = optimizer.init(params)

  def step(i, params, state):
    inputs, targets = batch_fn(i)
    with tf.GradientTape() as tape:
      tape.watch(params)
      loss = tf.reduce_sum(loss_fn(params, inputs, targets))
    grads = tape.gradient(loss, params)
    return optimizer.update(grads, state, params, i)

  if unroll:
    trace = []
    for i in range(num_steps):
      if trace_fn is not None and i % trace_every == 0:
        trace.append(trace_fn(params))
      params, state = step(tf.constant(i), params, state)
    if trace_fn is None:
      return params, None
    trace.append(trace_fn(params))
    return params, tf.stack(trace)

  if trace_fn is None:
    trace = ()
  else:
    num_traced = -(-num_steps // trace_every)
    trace = tf.TensorArray(tf.float32, size=num_traced + 1)

  def body(i, params, state, trace):
    if trace_fn is not None:
      trace = tf.cond(
          i % trace_every == 0,
          lambda: trace.write(i // trace_every, tf.cast(trace_fn(params), tf.float32)),
          lambda: trace)
    params, state = step(i, params, state)
    return i + 1, params, state, trace

  _, params, state, trace = tf.while_loop(
      lambda i, *_: i < num_steps, body, (tf.constant(0), params, state, trace),
      parallel_iterations=1)
  if trace_fn is None:
    return params, None
  trace = trace.write(num_traced, tf.cast(trace_fn(params), tf.float32))
  return params, trace.stack()


def fit(task, params, signals, num_steps, optimizer, seed, setting=None, unroll=False,
        trace_fn=None, trace_every=1):
  """Fits batched `params` to `signals` under `task`: the one place a task's signals
  become inner-loop batches.

  Seeds: the observation (e.g. which CT angles, which ShapeNet views) is drawn with
  stateless_seed(seed, OBSERVE_SALT) and inner step i's batch with
  stateless_seed(seed, BATCH_SALT), folded with i inside the task. Meta-training
  passes (run seed, outer step), evaluation its own seed, so every caller that passes
  the same seed sees the same data.

  Returns Fit(params, trace, query): the adapted weights, the trace of `trace_fn`
  (see `adapt`), and the task's query batch (task.query_batch: by default the batch
  for step `num_steps`), on which MAML and Reptile score the adapted weights (the
  full signal for images and CT, as in the paper; other points of the view for
  images trained at any size).
  """
  obs = task.observe(signals, contract.stateless_seed(seed, OBSERVE_SALT), setting)
  batch_seed = contract.stateless_seed(seed, BATCH_SALT)
  batch_fn = lambda i: task.inner_batch(obs, i, batch_seed)
  # Unrolled loops may be differentiated twice (MAML): only the plain loss allows it.
  loss_fn = task.loss if unroll else task.bounded_loss
  adapted, trace = adapt(loss_fn, params, batch_fn, num_steps, optimizer,
                         unroll=unroll, trace_fn=trace_fn, trace_every=trace_every)
  query = task.query_batch(obs, tf.convert_to_tensor(num_steps, tf.int32), batch_seed)
  return Fit(adapted, trace, query)
