"""What the meta code needs to know about a task, and nothing else.

A task hides its signal type (image, CT phantom, 3D object) behind a field and seven
functions: two that give data and the five the meta-training loop, the evaluation
tool and the benchmark call (through meta/inner.py's fit). Every tensor carries a
leading signal batch dimension B, and `params` are per-signal (B, ...) weight lists.

  train_dataset(seed)               endless tf.data stream of training signals (dicts)
  test_signals()                    held-out test signals, dict of numpy arrays
                                     (N, ...): only ever scored
  observe(signals, seed, setting)   raw signals -> what the optimiser may see
                                     (all pixels; N projections; rays of some views)
  inner_batch(obs, step, seed)      -> (inputs, targets) for one inner step
  loss(params, inputs, targets)     -> per-signal loss (B,)
  metrics(params, signals)          -> {'psnr': (B,), ...} on the full held-out signal
  render(params, signals)           -> (B, H, W, C) pictures for summaries and grids

Meta-training also needs validation_signals(), signals disjoint from train and test
that pick the best checkpoint, watch for collapse and choose test-time settings, and
splits(), which data each split holds, for the run record and the model cards; the
base class refuses to train without them rather than peek at the test set.

Optional abilities are declared here with working defaults: display (targets_for_display, inputs_for_display), the Mean and Matched
baselines (mean_signals, output_as_signal), export (describe, export_signatures,
fit_signature), classical reconstructions (classical_methods, classical), pictures
from any camera (render_camera) and a procedural scene's truth (true_view).
"""

import collections

import numpy as np
import tensorflow as tf


def psnr_from_mse(mse):
  """PSNR in dB for signals with peak 1: -10 log10(MSE)."""
  return -10.0 * tf.math.log(mse) / tf.math.log(10.0)


def stateless_seed(seed, *salts):
  """A (2,) int32 stateless-random seed derived from a base seed and integer salts."""
  seed = tf.cast(tf.reshape(seed, [-1])[:2], tf.int32) if tf.is_tensor(seed) else (
      tf.constant([seed, 0], tf.int32))
  if seed.shape[0] == 1:
    seed = tf.concat([seed, [0]], 0)
  for salt in salts:
    seed = tf.random.experimental.stateless_fold_in(seed, tf.cast(salt, tf.int32))
  return seed


def shuffled_dataset(arrays, seed):
  """Endless shuffled stream of the rows of in-memory `arrays` (a dict).

  Only indices pass through the shuffle buffer, so a checkpointed iterator stays small
  and resumes exactly where it stopped.
  """
  n = len(next(iter(arrays.values())))
  tensors = {k: tf.constant(v) for k, v in arrays.items()}
  return (tf.data.Dataset.range(n).repeat().shuffle(n, seed=seed)
          .map(lambda i: {k: tf.gather(v, i) for k, v in tensors.items()}))


# What a task's exported fitting signature takes and gives (exports.py writes the
# function once for every task): `inputs`, TensorSpecs (num_steps is added);
# signals(*inputs, num_steps) -> the batch-of-one signal they make, checked;
# outputs(start, fitted, signals, inputs) -> the signature's dict of tensors, from the
# batch-of-one weights before and after fitting; `setting`, the observation fitted;
# `doc`, the signature's docstring (recorded in the manifest).
FitSignature = collections.namedtuple(
    "FitSignature", ["name", "inputs", "signals", "outputs", "setting", "doc"])


class Task:
  """Base class; see the module docstring for the contract."""

  field = None
  # Observation settings the evaluation tool loops over (e.g. CT view counts).
  settings = ("full",)
  default_setting = "full"
  # Observation used to fit the Mean and Matched baselines to a known signal.
  fit_setting = "full"

  # --- required -------------------------------------------------------------------------

  def train_dataset(self, seed):
    raise NotImplementedError

  def test_signals(self):
    raise NotImplementedError

  def observe(self, signals, seed, setting=None):
    raise NotImplementedError

  def inner_batch(self, observations, step, seed):
    raise NotImplementedError

  def loss(self, params, inputs, targets):
    raise NotImplementedError

  def metrics(self, params, signals):
    raise NotImplementedError

  def render(self, params, signals):
    raise NotImplementedError

  # --- optional hooks -------------------------------------------------------------------

  def bounded_loss(self, params, inputs, targets):
    """`loss` in memory bounded whatever the signal's size, first-order gradients only
    (test-time fits, validation, Reptile; second-order MAML uses `loss`); default:
    `loss`."""
    return self.loss(params, inputs, targets)

  def query_batch(self, observations, step, seed):
    """(inputs, targets) on which meta-training scores the weights adapted in `step`
    inner steps; default: the batch inner step `step` would see."""
    return self.inner_batch(observations, step, seed)

  def targets_for_display(self, signals):
    """(B, H, W, C) images of the held-out targets beside the renders; None = none."""
    del signals
    return None

  def inputs_for_display(self, signals, setting):
    """(B, H, W, C) images of what a setting observes, for the evaluation grid; None
    when the observation is not an image of the target's size (full images, CT
    sinograms)."""
    del signals, setting
    return None

  def validation_signals(self):
    """Signals disjoint from train and test, like test_signals in form."""
    raise NotImplementedError(
        f"{type(self).__name__} has no validation split: implement "
        "validation_signals() with signals disjoint from its training and test sets "
        "(the best checkpoint and every tuned setting are chosen on them, never on "
        "the test signals).")

  def splits(self):
    """{'train', 'validation', 'test': which data each split holds, in words}."""
    return {}

  def mean_signals(self):
    """The training set's mean signal, shaped like one element of test_signals."""
    raise NotImplementedError(
        f"{type(self).__name__} has no Mean baseline: implement mean_signals() or drop "
        "'mean' from evaluate.inits.")

  def output_as_signal(self, params):
    """A batch-of-1 signal equal to what unbatched `params` output (for Matched)."""
    del params
    raise NotImplementedError(
        f"{type(self).__name__} has no Matched baseline: implement output_as_signal() "
        "or drop 'matched' from evaluate.inits.")

  def describe(self):
    """Conventions a re-implementation needs (coordinates, value range)."""
    return {}

  def export_signatures(self, params):
    """Rendering SavedModel signatures beyond `render` (exports.py), as {name:
    tf.function}: each has an input_signature, returns a dict of tensors and reads the
    weights only from `params` (tf.Variables in trainable_variables order). Default:
    none."""
    del params
    return {}

  def fit_signature(self):
    """The exported fitting signature as a FitSignature, or None (default)."""
    return None

  # Classical reconstructions scored beside the inits (CT: 'fbp', 'sart').
  classical_methods = ()

  def classical(self, method, signals, setting, settings):
    """(images, PSNR per signal, the method's table name) of a classical method."""
    raise NotImplementedError(f"{type(self).__name__} has no classical reconstructions.")

  # Whether render_camera draws the field from any camera (appearance figures).
  renders_cameras = False

  def render_camera(self, params, c2w, kinv, bounds, height, width):
    raise NotImplementedError(f"{type(self).__name__} renders no camera views.")

  # For a procedural scene, (photo k, camera j) -> the true view; else None.
  true_view = None


def batch_size_of(signals):
  return tf.shape(next(iter(signals.values())))[0]


def take(signals, index):
  """Rows `index` of a dict of numpy arrays."""
  return {k: np.asarray(v)[index] for k, v in signals.items()}
