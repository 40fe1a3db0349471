"""Meta-learned inner learning rates (Meta-SGD, MAML++ LSLR) against hand computations.

The reference adapts one signal at a time with explicit SGD steps whose rate is chosen
per layer and step (or per weight), in float64, and differentiates the post-adaptation
loss w.r.t. the rates by central finite differences. The package computes the same
derivative in float32 through its second-order MAML tape.
"""

import pytest
import numpy as np
import tensorflow as tf

from tf_metainit.meta import learned_lr
from tf_metainit.meta import maml
from tf_metainit.meta import optimizers
from tf_metainit.meta import outer
from tf_metainit.meta import reptile

from test_meta import TinyTask, _sgd_adapt, _signal_loss, _signals, _tiny_siren

NUM_STEPS = 2


def _setup():
  field = _tiny_siren()
  rng = np.random.default_rng(3)
  # Random biases make every rate's derivative generic (the init's are zero).
  for v in field.trainable_variables:
    if len(v.shape) == 1:
      v.assign(0.2 * rng.standard_normal(v.shape).astype(np.float32))
  return field, TinyTask(field, tf.float32), _signals()


def _reference_loss(theta, coords, signals, rate_fn):
  """Mean post-adaptation loss; rate_fn(layer, step) -> scalar or per-weight rate."""
  return tf.reduce_mean([
      _signal_loss(_sgd_adapt(theta, coords, values, NUM_STEPS, rate_fn), coords, values,
                   NUM_STEPS) for values in signals["values"].astype(np.float64)])


def _package_grads(field, task, signals, opt):
  _, after, grads = maml.meta_loss_and_grads(
      task, field.trainable_variables, signals, tf.constant([0, 0]), NUM_STEPS, opt)
  n = len(field.trainable_variables)
  # LSLR rate gradients come back as IndexedSlices (the rate is gathered by step).
  return (float(tf.reduce_mean(after)), grads[:n],
          [np.asarray(tf.convert_to_tensor(g)) for g in grads[n:]])


def test_lslr_rate_gradients_match_finite_differences():
  field, task, signals = _setup()
  theta = [tf.constant(np.asarray(v), tf.float64) for v in field.trainable_variables]
  rates = 0.05 + 0.01 * np.arange(len(theta) * NUM_STEPS).reshape(len(theta), NUM_STEPS)
  opt = learned_lr.LearnedRates("per_layer_step", list(rates.astype(np.float32)))
  after, _, rate_grads = _package_grads(field, task, signals, opt)

  reference = tf.function(lambda r: _reference_loss(
      theta, task.coords, signals, lambda i, k: r[i, k]))
  np.testing.assert_allclose(after, float(reference(tf.constant(rates))), rtol=1e-5)
  eps = 1e-6
  fd = np.zeros_like(rates)
  for i in range(rates.shape[0]):
    for k in range(NUM_STEPS):
      plus, minus = rates.copy(), rates.copy()
      plus[i, k] += eps
      minus[i, k] -= eps
      fd[i, k] = (float(reference(tf.constant(plus))) -
                  float(reference(tf.constant(minus)))) / (2 * eps)
  got = np.stack(rate_grads)
  err = np.linalg.norm(got - fd) / np.linalg.norm(fd)
  print(f"LSLR rate gradients vs central FD: relative error {err:.2e}")
  assert err < 2e-3
  # Step 1's rates matter less than step 0's only through the chain; both are nonzero.
  assert np.all(np.abs(fd) > 0)


def test_meta_sgd_rate_gradients_match_finite_differences():
  field, task, signals = _setup()
  theta = [tf.constant(np.asarray(v), tf.float64) for v in field.trainable_variables]
  rng = np.random.default_rng(0)
  rates = [0.05 + 0.01 * rng.uniform(size=t.shape) for t in theta]
  opt = learned_lr.LearnedRates("per_parameter", [r.astype(np.float32) for r in rates])
  _, _, rate_grads = _package_grads(field, task, signals, opt)

  reference = tf.function(lambda rs: _reference_loss(
      theta, task.coords, signals, lambda i, k: rs[i]))
  eps = 1e-6
  # A few weights of every tensor (all of them would be ~150 compiled evaluations).
  for i, r in enumerate(rates):
    for flat_index in rng.choice(r.size, size=min(3, r.size), replace=False):
      index = np.unravel_index(flat_index, r.shape)
      plus = [x.copy() for x in rates]
      minus = [x.copy() for x in rates]
      plus[i][index] += eps
      minus[i][index] -= eps
      fd = (float(reference([tf.constant(x) for x in plus])) -
            float(reference([tf.constant(x) for x in minus]))) / (2 * eps)
      np.testing.assert_allclose(rate_grads[i][index], fd, rtol=5e-3, atol=1e-7)


def test_equal_learned_rates_give_plain_maml_gradients():
  """LSLR started at lr is plain MAML at lr for theta0."""
  field, task, signals = _setup()
  shapes = [v.shape for v in field.trainable_variables]
  _, plain, _ = _package_grads(field, task, signals, optimizers.SGD(0.05))
  for mode in ("per_layer_step", "per_parameter"):
    opt = learned_lr.LearnedSGD(0.05, mode).build(shapes, NUM_STEPS)
    _, learned, _ = _package_grads(field, task, signals, opt)
    for a, b in zip(plain, learned):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-8)


def test_lslr_reuses_the_last_rates_past_the_trained_steps():
  opt = learned_lr.LearnedRates("per_layer_step", [np.array([0.1, 0.3], np.float32),
                                                   np.array([2.0, 5.0], np.float32)])
  params = [tf.ones([2, 3]), tf.ones([2])]
  grads = [tf.fill([2, 3], 2.0), tf.fill([2], 1.0)]
  for step, (r0, r1) in ((0, (0.1, 2.0)), (1, (0.3, 5.0)), (7, (0.3, 5.0))):
    new, _ = opt.update(grads, (), params, tf.constant(step))
    np.testing.assert_allclose(new[0], 1.0 - r0 * 2.0, rtol=1e-6)
    np.testing.assert_allclose(new[1], 1.0 - r1, rtol=1e-6)


def test_from_arrays_reads_the_mode_from_the_description():
  shapes = [(2, 3), (3,)]
  meta_sgd = learned_lr.LearnedSGD(0.1, "per_parameter").build(shapes, 2)
  # Rates whose shapes would pass for either mode: (3,) is a bias's shape and K = 3.
  lslr = learned_lr.LearnedSGD(0.1, "per_layer_step").build([(3,), (3,)], 3)
  rebuilt = learned_lr.from_arrays(meta_sgd.describe(),
                                   [np.asarray(r) for r in meta_sgd.rates])
  assert rebuilt.mode == "per_parameter" and rebuilt.start_learning_rate == 0.1
  rebuilt = learned_lr.from_arrays(lslr.describe(), [np.asarray(r) for r in lslr.rates])
  assert rebuilt.mode == "per_layer_step" and rebuilt.num_steps == 3
  np.testing.assert_array_equal(np.asarray(rebuilt.rates[1]), np.full(3, 0.1, np.float32))
  with pytest.raises(ValueError, match="unknown mode"):
    learned_lr.from_arrays({"name": "learned_sgd"}, [np.zeros(3)])
  with pytest.raises(ValueError, match="LearnedSGD.mode must be one of"):
    learned_lr.LearnedSGD(0.1, "fixed")


# --- Reptile's first-order rate gradients ----------------------------------------------


def _reptile_rate_grads(field, signals, opt, num_steps):
  """The package's rate gradients (float32, as the rates); theta0 in float64 for the
  float64 references."""
  task = TinyTask(field, tf.float32)
  _, after, grads = reptile.reptile_grads(task, field.trainable_variables, signals,
                                          tf.constant([0, 0]), num_steps, opt)
  theta = [tf.constant(np.asarray(v), tf.float64) for v in field.trainable_variables]
  n = len(theta)
  return theta, task, float(tf.reduce_mean(after)), [
      np.asarray(tf.convert_to_tensor(g)) for g in grads[n:]]


def test_reptile_one_step_rate_gradients_are_exact():
  # With one inner step nothing is dropped: d loss(theta0 - r g0) / d r is the
  # derivative of the true post-adaptation loss, checked by central differences.
  field, _, signals = _setup()
  rates = 0.05 + 0.01 * np.arange(len(field.trainable_variables))[:, None]
  opt = learned_lr.LearnedRates("per_layer_step", list(rates.astype(np.float32)))
  theta, task64, after, got = _reptile_rate_grads(field, signals, opt, 1)

  def reference(r):
    return np.mean([float(_signal_loss(
        _sgd_adapt(theta, task64.coords, v.astype(np.float64), 1, lambda i, k: r[i, k]),
        task64.coords, v.astype(np.float64), 1)) for v in signals["values"]])

  np.testing.assert_allclose(after, reference(rates.astype(np.float32)), rtol=1e-5)
  eps, fd = 1e-6, np.zeros_like(rates)
  for i in range(len(rates)):
    plus = rates.astype(np.float32).astype(np.float64)
    minus = plus.copy()
    plus[i, 0] += eps
    minus[i, 0] -= eps
    fd[i, 0] = (reference(plus) - reference(minus)) / (2 * eps)
  err = np.linalg.norm(np.stack(got) - fd) / np.linalg.norm(fd)
  assert err < 2e-3, err
  assert np.all(np.abs(fd) > 1e-6)


def test_reptile_rate_gradients_drop_only_the_hessian_terms():
  # K = 2 by hand: g_k the gradient at step k's weights (support k), q the query
  # gradient at theta_2; the first-order gradient of rate (layer i, step k) is
  # -<q_i, g_k,i>, averaged over the signals.
  field, _, signals = _setup()
  rates = (0.04 + 0.01 * np.arange(len(field.trainable_variables) * 2)).reshape(-1, 2)
  rates = rates.astype(np.float32)
  opt = learned_lr.LearnedRates("per_layer_step", list(rates))
  theta, task64, _, got = _reptile_rate_grads(field, signals, opt, 2)

  def grad_at(params, coords, values, step):
    with tf.GradientTape() as tape:
      tape.watch(params)
      loss = _signal_loss(params, coords, values, step)
    return tape.gradient(loss, params)

  expected = np.zeros(rates.shape)
  for values in signals["values"].astype(np.float64):
    params, history = list(theta), []
    for k in range(2):
      g = grad_at(params, task64.coords, values, k)
      history.append(g)
      params = [p - float(rates[i, k]) * gi for i, (p, gi) in enumerate(zip(params, g))]
    q = grad_at(params, task64.coords, values, 2)
    for i in range(len(theta)):
      for k in range(2):
        expected[i, k] -= float(tf.reduce_sum(q[i] * history[k][i])) / len(
            signals["values"])
  err = np.linalg.norm(np.stack(got) - expected) / np.linalg.norm(expected)
  assert err < 2e-3, err
  # It is not the exact (second-order) gradient: step 0's rates differ from MAML's.
  _, _, exact = _package_grads(field, TinyTask(field, tf.float32), signals,
                               learned_lr.LearnedRates("per_layer_step", list(rates)))
  gap = np.linalg.norm(np.stack(exact)[:, 0] - expected[:, 0])
  assert gap > 0.05 * np.linalg.norm(expected[:, 0])


def test_reptile_rates_step_their_own_optimizer():
  # The rates move by their own SGD (lr 0.5 times their gradient) while theta0 takes
  # Reptile's interpolation with the outer SGD at 1.
  field, task, signals = _setup()
  theta0 = [v.numpy().copy() for v in field.trainable_variables]
  rates = [np.full([2], 0.05, np.float32) for _ in theta0]
  inner = learned_lr.LearnedRates("per_layer_step", rates)
  _, _, grads = reptile.reptile_grads(task, field.trainable_variables, signals,
                                      outer.contract.stateless_seed(0, tf.constant(0)),
                                      2, inner)
  expected_rates = [r - 0.5 * np.asarray(tf.convert_to_tensor(g))
                    for r, g in zip(rates, grads[len(theta0):])]
  expected_theta = [t - np.asarray(g) for t, g in zip(theta0, grads[:len(theta0)])]
  theta_opt = optimizers.SGD(1.0).keras_optimizer(1.0)
  theta_opt.build(field.trainable_variables)
  rates_opt = optimizers.SGD(0.5).keras_optimizer(0.5)
  rates_opt.build(inner.rates)
  outer.build_step(field, task, theta_opt, inner, "reptile", 2,
                   rates_optimizer=rates_opt)(signals, tf.constant(0))
  for v, e in zip(inner.rates, expected_rates):
    np.testing.assert_allclose(v.numpy(), e, rtol=1e-5, atol=1e-8)
  assert max(np.abs(v.numpy() - 0.05).max() for v in inner.rates) > 1e-5
  for v, e in zip(field.trainable_variables, expected_theta):
    np.testing.assert_allclose(v.numpy(), e, rtol=1e-4, atol=1e-6)
