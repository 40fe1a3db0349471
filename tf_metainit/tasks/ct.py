"""Sparse-view CT: a Fourier-feature field observed through parallel-beam projections.

(Tancik et al. 2021, Sec. 4.2.) The field maps a pixel coordinate to attenuation in
(0, 1) (sigmoid output); its image is projected with the differentiable projector of
physics/ct.py and compared with measured projections. Coordinates follow the
reference's `meshgrid(x1, x1)` ('xy' indexing): (col / W, row / H) in [0, 1).

Meta-training draws `num_projections` angles uniformly in [0, pi) per outer step;
test settings are 1/2/4/8 evenly spaced views. The setting 'image' supervises the
pixels directly; it is how the Mean and Matched baselines are fitted.
"""

import gin
import numpy as np
import tensorflow as tf

from tf_metainit import checks
from tf_metainit.data import phantoms
from tf_metainit.fields import mlp
from tf_metainit.physics import ct
from tf_metainit.tasks import contract

SOURCES = ("procedural", "npz", "reference_pickle")


def pixel_grid_xy(resolution):
  """(resolution^2, 2) coordinates (col, row) / resolution, rows major."""
  x = np.arange(resolution, dtype=np.float32) / resolution
  cols, rows = np.meshgrid(x, x)  # 'xy': cols vary along axis 1
  return np.stack([cols, rows], -1).reshape(-1, 2)


# allow_pickle is not bindable: a config file, e.g. another user's run directory,
# must never grant unpickling (the binaries' --allow_pickle does).
@gin.configurable(denylist=["allow_pickle"])
class CTReconstruction(contract.Task):
  """Meta-learns a field over a class of 2-D phantoms observed by projections.

  Args:
    source: 'procedural' (random Shepp-Logan-style phantoms, no download), 'npz'
      (arrays data_train / data_test) or 'reference_pickle' (the reference's
      ct_256.pkl; needs --allow_pickle on the command line because unpickling can
      run code).
    path: file for 'npz' / 'reference_pickle'.
    allow_pickle: explicit opt-in to unpickle `path` (Python only; not a gin binding).
    resolution: phantom side in pixels (256 in the paper); also detector bins per view.
    num_train: training phantoms (procedural) or a cap on the file's.
    num_test: held-out phantoms.
    num_projections: random views per meta-training step (20 in the paper).
    settings: test-time view counts (1, 2, 4, 8 in the paper).
    field: a callable building the field (gin: @FourierMLP).
    seed: data seed.
  """

  fit_setting = "image"

  def __init__(self, source="procedural", path=None, allow_pickle=False,
               resolution=256, num_train=2048, num_test=8, num_projections=20,
               settings=(1, 2, 4, 8), field=mlp.FourierMLP, seed=0):
    if source not in SOURCES:
      raise ValueError(f"Unknown CT source {source!r}; use one of {SOURCES}.")
    if source == "procedural":
      checks.unread("CTReconstruction", {"path": path},
                    "source = 'npz' or 'reference_pickle'")
    self.source, self.path, self.allow_pickle = source, path, allow_pickle
    self.resolution = checks.positive_int("CTReconstruction.resolution", resolution)
    self.num_train = checks.optional(checks.positive_int, "CTReconstruction.num_train",
                                     num_train)
    self.num_test = checks.positive_int("CTReconstruction.num_test", num_test)
    self.num_projections = checks.positive_int("CTReconstruction.num_projections",
                                               num_projections)
    self.seed = seed
    self.settings = tuple(checks.positive_int("CTReconstruction.settings", n)
                          for n in settings)
    self.default_setting = max(self.settings)
    self.field = field()
    if self.field.in_dim != 2 or self.field.out_dim != 1:
      raise ValueError("A CT field maps 2-D coordinates to one value; the field has "
                       f"in_dim {self.field.in_dim}, out_dim {self.field.out_dim}.")
    self.coords = tf.constant(pixel_grid_xy(self.resolution))
    self._arrays = None

  # --- data ---------------------------------------------------------------------------

  def _load(self):
    if self._arrays is not None:
      return self._arrays
    res = self.resolution
    if self.source == "procedural":
      train = phantoms.phantom_arrays("train", self.num_train, res, self.seed)["image"]
      test = phantoms.phantom_arrays("test", self.num_test, res, self.seed)["image"]
    else:
      if not self.path:
        raise ValueError(f"CTReconstruction.source={self.source!r} needs "
                         "CTReconstruction.path = '/path/to/file'.")
      if self.source == "npz":
        data = phantoms.load_npz(self.path)
      else:
        data = phantoms.load_reference_pickle(self.path, self.allow_pickle)
      train, test = data["data_train"][:self.num_train], data["data_test"][:self.num_test]
      if train.shape[1:] != (res, res):
        raise ValueError(
            f"{self.path} holds {train.shape[1]}x{train.shape[2]} images but "
            f"CTReconstruction.resolution = {res}; set the resolution to match.")
    self._arrays = {"train": train.astype(np.float32), "test": test.astype(np.float32)}
    return self._arrays

  def train_dataset(self, seed):
    return contract.shuffled_dataset({"image": self._load()["train"]}, seed)

  def test_signals(self):
    return {"image": self._load()["test"]}

  def mean_signals(self):
    return {"image": self._load()["train"].mean(0)}

  # --- the task seam ------------------------------------------------------------------

  def observe(self, signals, seed, setting=None):
    images = tf.convert_to_tensor(signals["image"])
    batch = tf.shape(images)[0]
    if setting == "image":
      return {"angles": None, "targets": images}
    if setting is None:  # meta-training: fresh random views every outer step
      angles = ct.random_angles([batch, self.num_projections], seed)
    else:
      angles = tf.tile(ct.evenly_spaced_angles(int(setting))[None], [batch, 1])
    return {"angles": angles, "targets": ct.project(images, angles)}

  def inner_batch(self, observations, step, seed):
    del step, seed  # every inner step sees all measurements, as the reference
    return observations["angles"], observations["targets"]

  def image(self, params):
    out = self.field.apply(params, self.coords[None])
    return tf.reshape(out, [-1, self.resolution, self.resolution])

  def loss(self, params, inputs, targets):
    image = self.image(params)
    predicted = image if inputs is None else ct.project(image, inputs)
    return tf.reduce_mean(tf.square(predicted - targets), axis=[1, 2])

  def metrics(self, params, signals):
    err = tf.square(self.image(params) - tf.convert_to_tensor(signals["image"]))
    return {"psnr": contract.psnr_from_mse(tf.reduce_mean(err, axis=[1, 2]))}

  def render(self, params, signals):
    del signals
    return self.image(params)[..., None]

  def targets_for_display(self, signals):
    return np.asarray(signals["image"])[..., None]

  def output_as_signal(self, params):
    return {"image": self.image(params).numpy()}

  def describe(self):
    return {"task": "ct", "resolution": self.resolution,
            "coordinates": "(col / W, row / H) in [0, 1), row-major grid "
                           "(reference meshgrid 'xy')",
            "values": "attenuation in (0, 1) (sigmoid output)",
            "projector": "parallel beam, W bins per view, mean of H bilinear samples "
                         "per ray (physics/ct.py)"}
