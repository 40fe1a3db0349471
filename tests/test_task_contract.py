"""A new field type and a new task, written against the contract alone, run through
the package's fit, outer step, test-time optimiser and export without any edit there.

The field is affine (out = x @ W + b), so one SGD step and the exported render have
closed forms to check against.
"""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_metainit.fields import functional
from tf_metainit.meta import inner
from tf_metainit.meta import optimizers
from tf_metainit.meta import outer
from tf_metainit.tasks import contract
from tf_metainit import exports
from tf_metainit import testtime

POINTS = 16


class Affine(functional.Field):
  """out = x @ kernel_0 + bias_0: a field type the package has never seen."""

  def __init__(self, in_dim=1, out_dim=1):
    super().__init__(name="affine")
    self.in_dim, self.out_dim = in_dim, out_dim
    self.add_weight(shape=(in_dim, out_dim), name="kernel_0",
                    initializer=keras.initializers.Constant(0.3))
    self.add_weight(shape=(out_dim,), name="bias_0", initializer="zeros")

  def apply_flat(self, params, x):
    return functional.dense(x, params[0], params[1])

  def describe(self):
    return {"type": "affine", "in_dim": self.in_dim, "out_dim": self.out_dim}


class Lines(contract.Task):
  """1-D signals y = a x + c at 16 points of [0, 1); only the required functions."""

  def __init__(self):
    self.field = Affine()
    self.x = np.linspace(0, 1, POINTS, endpoint=False, dtype=np.float32)[:, None]
    rng = np.random.default_rng(0)
    self._test = self._lines(rng.uniform(-1, 1, (3, 2)))

  def _lines(self, coeffs):
    return {"y": (coeffs[:, None, :1] * self.x[None] + coeffs[:, None, 1:])
            .astype(np.float32)}

  def train_dataset(self, seed):
    coeffs = np.random.default_rng(seed).uniform(-1, 1, (64, 2))
    return contract.shuffled_dataset(self._lines(coeffs), seed)

  def test_signals(self):
    return self._test

  def observe(self, signals, seed, setting=None):
    del seed, setting
    return {"x": tf.constant(self.x[None]), "y": tf.convert_to_tensor(signals["y"])}

  def inner_batch(self, observations, step, seed):
    del step, seed
    return observations["x"], observations["y"]

  def loss(self, params, inputs, targets):
    return tf.reduce_mean(tf.square(self.field.apply(params, inputs) - targets), [1, 2])

  def metrics(self, params, signals):
    obs = self.observe(signals, None)
    return {"psnr": contract.psnr_from_mse(self.loss(params, obs["x"], obs["y"]))}

  def render(self, params, signals):
    del signals
    return tf.reshape(self.field.apply(params, self.x[None]), [-1, 1, POINTS, 1])


def _sgd_step_closed_form(w, b, y, lr):
  """One SGD step on mean((x w + b - y)^2): dL/dw = 2 mean(r x), dL/db = 2 mean(r)."""
  x = np.linspace(0, 1, POINTS, endpoint=False)
  r = x * w + b - y
  return w - lr * 2 * np.mean(r * x), b - lr * 2 * np.mean(r)


def test_fit_takes_the_closed_form_sgd_step():
  task = Lines()
  signals = task.test_signals()
  params = functional.batch_params(task.field.params(), 3)
  fitted = inner.fit(task, params, signals, 1, optimizers.SGD(0.5), seed=0)
  for i in range(3):
    w, b = _sgd_step_closed_form(0.3, 0.0, signals["y"][i, :, 0], 0.5)
    np.testing.assert_allclose(fitted.params[0][i, 0, 0], w, rtol=1e-5)
    np.testing.assert_allclose(fitted.params[1][i, 0], b, rtol=1e-5, atol=1e-7)


def test_reptile_step_with_unit_outer_sgd_lands_on_the_mean_adapted_weights():
  task = Lines()
  signals = {k: tf.constant(v) for k, v in task.test_signals().items()}
  step = outer.build_step(task.field, task, keras.optimizers.SGD(1.0),
                          optimizers.SGD(0.5), "reptile", inner_steps=1)
  _, _, _, finite = step(signals, tf.constant(0, tf.int64))
  assert bool(finite)
  adapted = [_sgd_step_closed_form(0.3, 0.0, y[:, 0], 0.5) for y in signals["y"].numpy()]
  kernel, bias = task.field.trainable_variables
  np.testing.assert_allclose(float(kernel[0, 0]), np.mean([a[0] for a in adapted]),
                             rtol=1e-5)
  np.testing.assert_allclose(float(bias[0]), np.mean([a[1] for a in adapted]),
                             rtol=1e-5, atol=1e-7)


def test_test_time_optimiser_traces_the_hand_psnr():
  task = Lines()
  signals = task.test_signals()
  trace, _ = testtime.TestTimeOptimizer(task).run(
      task.field.params(), signals, optimizers.SGD(0.5), 2, "full")
  x = task.x[:, 0]
  for i, y in enumerate(signals["y"][:, :, 0]):
    mse0 = np.mean((0.3 * x - y) ** 2)
    np.testing.assert_allclose(trace[0, i], -10 * np.log10(mse0), rtol=1e-4)
    w, b = _sgd_step_closed_form(0.3, 0.0, y, 0.5)
    w, b = _sgd_step_closed_form(w, b, y, 0.5)
    np.testing.assert_allclose(trace[2, i], -10 * np.log10(np.mean((w * x + b - y) ** 2)),
                               rtol=1e-4)


def test_export_of_a_new_field_renders_x_w_plus_b(tmp_path):
  task = Lines()
  out = str(tmp_path / "export")
  manifest = exports.export_params(task.field, task.field.params(), out, task=task,
                                  optimizer=optimizers.SGD(0.5))
  assert manifest["field"]["type"] == "affine"
  assert manifest["layers"][0]["activation"] is None  # Field.layer_activation default
  loaded = tf.saved_model.load(out)
  coords = tf.constant([[0.0], [0.5], [2.0]])
  np.testing.assert_allclose(loaded.signatures["render"](coords=coords)["values"][:, 0],
                             [0.0, 0.15, 0.6], rtol=1e-6)
  with open(os.path.join(out, "manifest.json")) as f:
    assert json.load(f)["signatures"].keys() == {"render"}


def test_missing_baseline_hooks_name_the_fix():
  with pytest.raises(NotImplementedError, match="drop 'mean' from evaluate.inits"):
    Lines().mean_signals()
  with pytest.raises(NotImplementedError, match="drop 'matched'"):
    Lines().output_as_signal([])
