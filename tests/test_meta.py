"""MAML, Reptile and the inner loop against hand computations.

The references here are written independently of tf_metainit.meta: a per-signal SIREN
forward pass, explicit SGD steps with tf.GradientTape, finite differences, and numpy
Adam. Only the field's weight layout is shared with the package.
"""

import numpy as np
import pytest
import tensorflow as tf

from tf_metainit import train
from tf_metainit.fields import siren
from tf_metainit.meta import inner
from tf_metainit.meta import maml
from tf_metainit.meta import optimizers
from tf_metainit.meta import outer
from tf_metainit.meta import reptile
from tf_metainit.tasks import contract

W0 = 3.0
NUM_POINTS = 12
SUPPORT = 8


def _support_index(step):
  """Inner step `step` sees points (2*step + j) % 12, j < 8; step K is the query."""
  return (np.arange(SUPPORT) + 2 * step) % NUM_POINTS


class TinyTask(contract.Task):
  """Regression of a 1-channel signal at 12 fixed 2-D points, in any float dtype.

  Each inner step sees a different subset of 8 points and the query (step K) another,
  so support != query and the step index must be threaded correctly.
  """

  def __init__(self, field, dtype):
    self.field = field
    self.dtype = dtype
    rng = np.random.default_rng(123)
    self.coords = rng.uniform(0, 1, (NUM_POINTS, 2))

  def observe(self, signals, seed, setting=None):
    del seed, setting
    coords = tf.constant(self.coords[None], self.dtype)
    return {"coords": coords, "values": tf.cast(signals["values"], self.dtype)}

  def inner_batch(self, observations, step, seed):
    del seed
    idx = (tf.range(SUPPORT) + 2 * tf.cast(step, tf.int32)) % NUM_POINTS
    return (tf.gather(observations["coords"], idx, axis=1),
            tf.gather(observations["values"], idx, axis=1))

  def loss(self, params, inputs, targets):
    pred = self.field.apply(params, inputs)
    return tf.reduce_mean(tf.square(pred - targets), axis=[1, 2])


def _signals(num_signals=2, seed=7):
  rng = np.random.default_rng(seed)
  return {"values": rng.uniform(0, 1, (num_signals, NUM_POINTS, 1)).astype(np.float32)}


def _tiny_siren():
  return siren.Siren(in_dim=2, out_dim=1, width=8, depth=3, w0=W0, seed=5)


# --- Independent reference: one signal, explicit loops ---------------------------------


def _forward(params, x):
  """SIREN written out: sin(w0 (x W + b)) twice, then linear + 0.5."""
  w1, b1, w2, b2, w3, b3 = params
  h = tf.sin(W0 * (tf.matmul(x, w1) + b1))
  h = tf.sin(W0 * (tf.matmul(h, w2) + b2))
  return tf.matmul(h, w3) + b3 + 0.5


def _signal_loss(params, coords, values, step):
  idx = _support_index(step)
  dtype = params[0].dtype
  pred = _forward(params, tf.constant(coords[idx], dtype))
  return tf.reduce_mean(tf.square(pred - tf.constant(values[idx], dtype)))


def _sgd_adapt(params, coords, values, num_steps, lr):
  """K explicit SGD steps on one signal; lr may be a function (layer, step) -> rate."""
  rate = lr if callable(lr) else lambda i, k: lr
  params = list(params)
  for k in range(num_steps):
    with tf.GradientTape() as tape:
      tape.watch(params)
      loss = _signal_loss(params, coords, values, k)
    grads = tape.gradient(loss, params)
    params = [p - rate(i, k) * g for i, (p, g) in enumerate(zip(params, grads))]
  return params


def _post_adaptation_loss(theta, task, signals, num_steps, lr, dtype):
  losses = []
  for values in signals["values"]:
    adapted = _sgd_adapt(theta, task.coords, values.astype(dtype), num_steps, lr)
    losses.append(float(_signal_loss(adapted, task.coords, values.astype(dtype),
                                     num_steps)))
  return np.mean(losses)


def _flatten(tensors):
  return np.concatenate([np.ravel(np.asarray(t)) for t in tensors])


def _unflatten(vector, like):
  out, i = [], 0
  for t in like:
    n = int(np.prod(t.shape))
    out.append(tf.constant(vector[i:i + n].reshape(t.shape)))
    i += n
  return out


def _relative_error(a, b):
  return float(np.linalg.norm(a - b) / np.linalg.norm(b))


# --- MAML ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def maml_setup():
  field = _tiny_siren()
  task = TinyTask(field, tf.float64)
  theta0 = [tf.constant(np.asarray(v), tf.float64) for v in field.trainable_variables]
  # Bias init is zero; random biases make every parameter's derivative generic.
  rng = np.random.default_rng(3)
  theta0 = [t + 0.2 * rng.standard_normal(t.shape) if t.shape.rank == 1 else t
            for t in theta0]
  return field, task, theta0, _signals()


def _maml(task, theta0, signals, first_order, lr=0.05, num_steps=2):
  return maml.meta_loss_and_grads(task, theta0, signals, tf.constant([0, 0]), num_steps,
                                  optimizers.SGD(lr), first_order=first_order)


def test_maml_meta_gradient_matches_finite_differences(maml_setup):
  _, task, theta0, signals = maml_setup
  lr, num_steps = 0.05, 2
  before, after, grads = _maml(task, theta0, signals, False, lr, num_steps)
  assert all(g.dtype == tf.float64 for g in grads)
  assert before.shape == after.shape == (2,)

  # The reported losses match the reference loop.
  ref_after = _post_adaptation_loss(theta0, task, signals, num_steps, lr, np.float64)
  np.testing.assert_allclose(float(tf.reduce_mean(after)), ref_after, rtol=1e-10)
  ref_before = np.mean([float(_signal_loss(theta0, task.coords, v.astype(np.float64),
                                           num_steps)) for v in signals["values"]])
  np.testing.assert_allclose(float(tf.reduce_mean(before)), ref_before, rtol=1e-10)
  assert ref_after < ref_before  # two SGD steps help

  # The same reference loop, compiled once so 2 x 105 evaluations stay fast.
  reference = tf.function(lambda theta: tf.reduce_mean([
      _signal_loss(_sgd_adapt(theta, task.coords, v, num_steps, lr), task.coords, v,
                   num_steps) for v in signals["values"].astype(np.float64)]))
  np.testing.assert_allclose(float(reference(theta0)), ref_after, rtol=1e-12)
  flat = _flatten(theta0)
  eps = 1e-6
  fd = np.empty_like(flat)
  for i in range(len(flat)):
    plus, minus = flat.copy(), flat.copy()
    plus[i] += eps
    minus[i] -= eps
    fd[i] = (float(reference(_unflatten(plus, theta0)))
             - float(reference(_unflatten(minus, theta0)))) / (2 * eps)
  err = _relative_error(_flatten(grads), fd)
  print(f"MAML meta-gradient vs central FD: relative error {err:.3e} "
        f"over {len(flat)} parameters")
  assert err < 1e-4
  # Every layer's gradient is right, not only the largest ones.
  for g, f in zip(grads, _unflatten(fd, theta0)):
    assert _relative_error(np.asarray(g), np.asarray(f)) < 1e-4


def test_first_order_maml(maml_setup):
  _, task, theta0, signals = maml_setup
  lr, num_steps = 0.05, 2
  _, _, second = _maml(task, theta0, signals, False, lr, num_steps)
  _, after, first = _maml(task, theta0, signals, True, lr, num_steps)
  diff = _relative_error(_flatten(first), _flatten(second))
  print(f"first- vs second-order MAML: relative difference {diff:.3e}")
  assert diff > 1e-3

  # FOMAML: mean over signals of grad L_b at the adapted weights theta_b.
  expected, losses = [tf.zeros_like(t) for t in theta0], []
  for values in signals["values"]:
    values = values.astype(np.float64)
    adapted = _sgd_adapt(theta0, task.coords, values, num_steps, lr)
    with tf.GradientTape() as tape:
      tape.watch(adapted)
      loss = _signal_loss(adapted, task.coords, values, num_steps)
    losses.append(float(loss))
    expected = [e + g / len(signals["values"])
                for e, g in zip(expected, tape.gradient(loss, adapted))]
  np.testing.assert_allclose(after.numpy(), losses, rtol=1e-10)
  err = _relative_error(_flatten(first), _flatten(expected))
  print(f"FOMAML vs gradient at adapted weights: relative error {err:.3e}")
  assert err < 1e-10


def test_maml_step_with_keras_variables():
  """The training path: theta0 are the field's Keras variables, updated in place."""
  field = _tiny_siren()
  task = TinyTask(field, tf.float32)
  theta0 = [tf.constant(v.numpy()) for v in field.trainable_variables]
  signals = _signals()
  _, _, ref = maml.meta_loss_and_grads(task, theta0, signals,
                                       contract.stateless_seed(0, 0), 2,
                                       optimizers.SGD(0.05))
  optimizer = optimizers.Adam(1e-3).keras_optimizer(1e-3)
  optimizer.build(field.trainable_variables)
  outer.build_step(field, task, optimizer, optimizers.SGD(0.05), "maml", 2)(
      signals, tf.constant(0))
  for t, g, v in zip(theta0, ref, field.trainable_variables):
    moved = t.numpy() - v.numpy()
    big = np.abs(g.numpy()) > 1e-4
    assert big.any()
    np.testing.assert_allclose(moved[big], 1e-3 * np.sign(g.numpy()[big]), rtol=1e-2)


# --- Reptile ---------------------------------------------------------------------------


def test_reptile_grads_match_explicit_sgd():
  field = _tiny_siren()
  task = TinyTask(field, tf.float64)
  theta0 = [tf.constant(np.asarray(v), tf.float64) for v in field.trainable_variables]
  signals = _signals(num_signals=3)
  lr, num_steps = 0.1, 3
  before, after, grads = reptile.reptile_grads(task, theta0, signals, tf.constant([0, 0]),
                                               num_steps, optimizers.SGD(lr))
  adapted = [_sgd_adapt(theta0, task.coords, v.astype(np.float64), num_steps, lr)
             for v in signals["values"]]
  expected = [t - np.mean([a[j] for a in adapted], axis=0)
              for j, t in enumerate(theta0)]
  for g, e in zip(grads, expected):
    np.testing.assert_allclose(g.numpy(), e, rtol=1e-9, atol=1e-14)
  assert np.abs(_flatten(grads)).max() > 1e-3
  losses = [float(_signal_loss(a, task.coords, v.astype(np.float64), num_steps))
            for a, v in zip(adapted, signals["values"])]
  np.testing.assert_allclose(after.numpy(), losses, rtol=1e-10)
  assert np.all(after.numpy() < before.numpy())


def test_reptile_step_first_adam_step():
  field = _tiny_siren()
  task = TinyTask(field, tf.float32)
  theta0 = [v.numpy().copy() for v in field.trainable_variables]
  signals = _signals(num_signals=3)
  lr, num_steps, outer_lr = 0.1, 3, 1e-3
  adapted = [_sgd_adapt([tf.constant(t) for t in theta0], task.coords, v, num_steps, lr)
             for v in signals["values"]]
  grads = [t - np.mean([a[j].numpy() for a in adapted], axis=0)
           for j, t in enumerate(theta0)]

  optimizer = optimizers.Adam(outer_lr).keras_optimizer(outer_lr)
  optimizer.build(field.trainable_variables)
  outer.build_step(field, task, optimizer, optimizers.SGD(lr), "reptile", num_steps)(
      signals, tf.constant(0))
  num_checked = 0
  for t, g, v in zip(theta0, grads, field.trainable_variables):
    moved = t - v.numpy()
    # Adam's first step moves by lr * g / (|g| + eps'): never more than lr.
    assert np.all(np.abs(moved) <= outer_lr * (1 + 1e-5))
    big = np.abs(g) > 1e-4
    np.testing.assert_allclose(moved[big], outer_lr * np.sign(g[big]), rtol=1e-2)
    num_checked += int(big.sum())
  assert num_checked > 50


def test_reptile_with_outer_sgd_is_nichols_interpolation():
  # theta0 += eps (mean theta_K - theta0): with eps = 1 the new init is the mean of the
  # explicitly adapted weights, with eps = 0.25 a quarter of the way there.
  for eps in (1.0, 0.25):
    field = _tiny_siren()
    task = TinyTask(field, tf.float32)
    theta0 = [v.numpy().copy() for v in field.trainable_variables]
    signals = _signals(num_signals=3)
    adapted = [_sgd_adapt([tf.constant(t) for t in theta0], task.coords, v, 3, 0.1)
               for v in signals["values"]]
    optimizer = optimizers.SGD(eps).keras_optimizer(eps)
    optimizer.build(field.trainable_variables)
    outer.build_step(field, task, optimizer, optimizers.SGD(0.1), "reptile", 3)(
        signals, tf.constant(0))
    for j, (t, v) in enumerate(zip(theta0, field.trainable_variables)):
      mean = np.mean([a[j].numpy() for a in adapted], axis=0)
      assert np.abs(mean - t).max() > 1e-4
      np.testing.assert_allclose(v.numpy(), t + eps * (mean - t), rtol=1e-4, atol=1e-6)


def test_unknown_outer_optimizer_is_refused():
  with pytest.raises(ValueError, match="meta_train.outer_optimizer is 'rmsprop'"):
    train.TrainConfig(task=TinyTask(_tiny_siren(), tf.float32), outer_optimizer="rmsprop")


# --- Inner loop and functional optimizers ---------------------------------------------


def _numpy_adam(params, grad_fn, num_steps, lr, b1=0.9, b2=0.999, eps=1e-8):
  m = [np.zeros_like(p) for p in params]
  v = [np.zeros_like(p) for p in params]
  for t in range(1, num_steps + 1):
    grads = grad_fn(params)
    new = []
    for j, (p, g) in enumerate(zip(params, grads)):
      m[j] = b1 * m[j] + (1 - b1) * g
      v[j] = b2 * v[j] + (1 - b2) * g * g
      m_hat = m[j] / (1 - b1 ** t)
      v_hat = v[j] / (1 - b2 ** t)
      new.append(p - lr * m_hat / (np.sqrt(v_hat) + eps))
    params = new
  return params


def test_adam_matches_numpy():
  rng = np.random.default_rng(0)
  params = [rng.standard_normal((3, 4)), rng.standard_normal((5,))]
  # Gradients that depend on the current params (so each step uses new values), with
  # a few tiny entries where eps matters.
  grad_fn = lambda ps: [p ** 3 - 0.5 * p + 1e-9 * (np.abs(p) < 0.3) for p in ps]
  lr = 0.1
  expected = _numpy_adam(params, grad_fn, 3, lr)

  opt = optimizers.Adam(learning_rate=lr)
  tf_params = [tf.constant(p) for p in params]
  state = opt.init(tf_params)
  for i in range(3):
    grads = [tf.constant(g) for g in grad_fn([p.numpy() for p in tf_params])]
    tf_params, state = opt.update(grads, state, tf_params, tf.constant(i))
  for p, e in zip(tf_params, expected):
    np.testing.assert_allclose(p.numpy(), e, rtol=1e-12, atol=1e-14)
  # The three steps really moved every parameter.
  assert np.abs(_flatten(tf_params) - _flatten(params)).min() > 1e-3


@pytest.mark.parametrize("dtype", [tf.float32, tf.float64])
def test_adapt_unrolled_equals_while_loop_and_traces(dtype):
  field = _tiny_siren()
  task = TinyTask(field, dtype)
  signals = _signals(num_signals=3)
  obs = task.observe(signals, None)
  theta0 = [tf.cast(tf.constant(np.asarray(v)), dtype) for v in field.trainable_variables]
  params = [tf.tile(t[None], [3] + [1] * t.shape.rank) for t in theta0]
  batch_fn = lambda i: task.inner_batch(obs, i, None)
  query = task.inner_batch(obs, tf.constant(0), None)
  trace_fn = lambda p: task.loss(p, *query)
  num_steps = 4
  opt = optimizers.Adam(learning_rate=0.01)
  results = {}
  for unroll in (True, False):
    results[unroll] = inner.adapt(task.loss, params, batch_fn, num_steps, opt,
                                  unroll=unroll, trace_fn=trace_fn)
  graph_adapt = tf.function(lambda p: inner.adapt(task.loss, p, batch_fn, num_steps, opt,
                                                  trace_fn=trace_fn))
  results["graph"] = graph_adapt(params)

  ref_params, ref_trace = results[True]
  assert ref_trace.shape == (num_steps + 1, 3)
  for key in (False, "graph"):
    adapted, trace = results[key]
    assert trace.shape == (num_steps + 1, 3)
    for a, r in zip(adapted, ref_params):
      np.testing.assert_allclose(a.numpy(), r.numpy(), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(trace.numpy(), ref_trace.numpy(), rtol=1e-6)
  np.testing.assert_allclose(ref_trace[0].numpy(), trace_fn(params).numpy(), rtol=1e-6)
  np.testing.assert_allclose(ref_trace[-1].numpy(), trace_fn(ref_params).numpy(),
                             rtol=1e-6)
  # Without trace_fn: same weights, no trace.
  for unroll in (True, False):
    adapted, trace = inner.adapt(task.loss, params, batch_fn, num_steps, opt,
                                 unroll=unroll)
    assert trace is None
    for a, r in zip(adapted, ref_params):
      np.testing.assert_allclose(a.numpy(), r.numpy(), rtol=1e-6, atol=1e-7)

  # Signals are adapted independently: signal 1 alone gives the same weights.
  one = [p[1:2] for p in params]
  obs_one = task.observe({"values": signals["values"][1:2]}, None)
  alone, _ = inner.adapt(task.loss, one, lambda i: task.inner_batch(obs_one, i, None),
                         num_steps, opt)
  for a, r in zip(alone, ref_params):
    np.testing.assert_allclose(a.numpy()[0], r.numpy()[1], rtol=1e-5, atol=1e-7)


def test_switch_runs_sgd_then_adam_from_adams_own_first_step():
  """Two SGD steps, then Adam whose first step moves each weight by its rate times
  sign(g) (bias-corrected moments at its own step 0), checked by hand."""
  field = _tiny_siren()
  task = TinyTask(field, tf.float64)
  theta0 = [tf.constant(np.asarray(v), tf.float64) for v in field.trainable_variables]
  signals = _signals(num_signals=1)
  switch = optimizers.Switch(optimizers.SGD(0.1), optimizers.Adam(1e-3), at=2)
  params = [t[None] for t in theta0]
  adapted, _ = inner.adapt(task.loss, params,
                           lambda i: task.inner_batch(task.observe(signals, None), i, None),
                           3, switch, unroll=True)
  after_sgd = _sgd_adapt(theta0, task.coords, signals["values"][0].astype(np.float64),
                         2, 0.1)
  obs = task.observe(signals, None)
  with tf.GradientTape() as tape:
    p = [tf.constant(a.numpy())[None] for a in after_sgd]
    tape.watch(p)
    loss = tf.reduce_sum(task.loss(p, *task.inner_batch(obs, tf.constant(2), None)))
  grads = tape.gradient(loss, p)
  for a, s, g in zip(adapted, after_sgd, grads):
    g = g.numpy()[0]
    expected = s.numpy() - 1e-3 * g / (np.abs(g) + 1e-8)
    np.testing.assert_allclose(a.numpy()[0], expected, rtol=1e-6, atol=1e-12)
