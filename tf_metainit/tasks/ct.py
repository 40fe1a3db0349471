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
from tf_metainit.data import anatomy
from tf_metainit.data import phantoms
from tf_metainit.fields import mlp
from tf_metainit.physics import classical_ct
from tf_metainit.physics import ct
from tf_metainit.tasks import contract

SOURCES = ("procedural", "anatomy", "npz", "reference_pickle")
# The generated sources: {source: (split, count, resolution, seed, mr_fraction) ->
# (N, H, W) images}; only anatomy has MR-like contrasts.
_GENERATED = {
    "procedural": lambda *a: phantoms.phantom_arrays(*a[:4])["image"],
    "anatomy": lambda *a: anatomy.slice_arrays(*a[:4], mr_fraction=a[4])["image"],
}


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
    source: 'procedural' (random Shepp-Logan-style phantoms, no download),
      'anatomy' (procedural head, chest and abdomen slices with a body wall, organs,
      bone and air, data/anatomy.py: a prior for real anatomy), 'npz'
      (arrays data_train / data_test) or 'reference_pickle' (the reference's
      ct_256.pkl; needs --allow_pickle on the command line because unpickling can
      run code).
    path: file for 'npz' / 'reference_pickle'.
    allow_pickle: explicit opt-in to unpickle `path` (Python only; not a gin binding).
    resolution: phantom side in pixels (256 in the paper); also detector bins per view.
    num_train: training phantoms (procedural) or a cap on the file's.
    num_test: test phantoms: only ever scored.
    test_file: an .npz whose array `image` (N, H, W) in [0, 1] replaces the test
      signals, area-resized to `resolution` (held-out real slices such as
      docs/anatomy/real_slices.npz); None: the source's own test split.
    num_val: validation phantoms, disjoint from train and test (procedural: their own
      stream; files: the last num_val of data_train): they pick the best checkpoint
      and the test-time settings.
    num_projections: random views per meta-training step (20 in the paper).
    settings: test-time view counts (1, 2, 4, 8 in the paper).
    projector: the projector's resampling, 'bilinear' or the reference's 'nearest'
      (physics/ct.py).
    field: a callable building the field (gin: @FourierMLP).
    seed: data seed.
    mr_fraction: 'anatomy' only: the share of slices drawn with MR-like (T1 / T2)
      levels instead of CT ones, in every split (data/anatomy.py).
  """

  fit_setting = "image"

  def __init__(self, source="procedural", path=None, allow_pickle=False,
               resolution=256, num_train=2048, num_test=8, num_val=4, num_projections=20,
               settings=(1, 2, 4, 8), projector="bilinear", field=mlp.FourierMLP,
               seed=0, test_file=None, mr_fraction=None):
    if source not in SOURCES:
      raise ValueError(f"Unknown CT source {source!r}; use one of {SOURCES}.")
    if source in _GENERATED:
      checks.unread("CTReconstruction", {"path": path},
                    "source = 'npz' or 'reference_pickle'")
    if source != "anatomy":
      checks.unread("CTReconstruction", {"mr_fraction": mr_fraction},
                    "source = 'anatomy'")
    if mr_fraction is not None and not 0.0 <= mr_fraction <= 1.0:
      raise ValueError(f"CTReconstruction.mr_fraction must be in [0, 1], got "
                       f"{mr_fraction!r}.")
    self.mr_fraction = mr_fraction or 0.0
    self.source, self.path, self.allow_pickle = source, path, allow_pickle
    self.resolution = checks.positive_int("CTReconstruction.resolution", resolution)
    self.num_train = checks.optional(checks.positive_int, "CTReconstruction.num_train",
                                     num_train)
    self.num_test = checks.positive_int("CTReconstruction.num_test", num_test)
    self.num_val = checks.positive_int("CTReconstruction.num_val", num_val)
    self.num_projections = checks.positive_int("CTReconstruction.num_projections",
                                               num_projections)
    self.seed, self.test_file = seed, test_file
    if projector not in ct.INTERPOLATIONS:
      raise ValueError(f"CTReconstruction.projector must be one of "
                       f"{ct.INTERPOLATIONS}, got {projector!r}.")
    self.projector = projector
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
    if self.source in _GENERATED:
      made = lambda split, n: _GENERATED[self.source](split, n, res, self.seed,
                                                      self.mr_fraction)
      train, val = made("train", self.num_train), made("validation", self.num_val)
      test = None if self.test_file else made("test", self.num_test)
    else:
      if not self.path:
        raise ValueError(f"CTReconstruction.source={self.source!r} needs "
                         "CTReconstruction.path = '/path/to/file'.")
      if self.source == "npz":
        data = phantoms.load_npz(self.path)
      else:
        data = phantoms.load_reference_pickle(self.path, self.allow_pickle)
      train, test = data["data_train"], data["data_test"][:self.num_test]
      if train.shape[1:] != (res, res):
        raise ValueError(
            f"{self.path} holds {train.shape[1]}x{train.shape[2]} images but "
            f"CTReconstruction.resolution = {res}; set the resolution to match.")
      if len(train) <= self.num_val:
        raise ValueError(
            f"{self.path}: data_train holds {len(train)} images and its last "
            f"CTReconstruction.num_val = {self.num_val} are the validation set, "
            "leaving none to train on; lower num_val or add training images.")
      train, val = train[:-self.num_val][:self.num_train], train[-self.num_val:]
    if self.test_file:
      test = phantoms.load_images(self.test_file, res)[:self.num_test]
    self._arrays = {"train": train.astype(np.float32), "val": val.astype(np.float32),
                    "test": test.astype(np.float32)}
    return self._arrays

  def train_dataset(self, seed):
    return contract.shuffled_dataset({"image": self._load()["train"]}, seed)

  def test_signals(self):
    return {"image": self._load()["test"]}

  def validation_signals(self):
    return {"image": self._load()["val"]}

  def splits(self):
    if self.source in _GENERATED:
      kind = "procedural phantoms" if self.source == "procedural" else "anatomy slices"
      made = lambda split, n: f"{kind} '{split}' 0-{n - 1}"
      out = {"train": made("train", self.num_train),
             "validation": made("validation", self.num_val),
             "test": made("test", self.num_test), "seed": self.seed}
      if self.mr_fraction:
        out["mr_fraction"] = self.mr_fraction
    else:
      out = {"train": f"{self.path} data_train but its last {self.num_val}",
             "validation": f"{self.path} data_train's last {self.num_val}",
             "test": f"{self.path} data_test[:{self.num_test}]"}
    if self.test_file:
      out["test"] = f"{self.test_file} image[:{self.num_test}]"
    return out

  def mean_signals(self):
    return {"image": self._load()["train"].mean(0)}

  # --- the task seam ------------------------------------------------------------------

  def observe(self, signals, seed, setting=None):
    """Angles and projections of signals {'image'}, or as given by signals that hold
    measurements {'sinogram' (B, V, W), 'angles' (B, V)} (the exported
    `reconstruct`)."""
    if "sinogram" in signals:
      return {"angles": tf.convert_to_tensor(signals["angles"]),
              "targets": tf.convert_to_tensor(signals["sinogram"])}
    images = tf.convert_to_tensor(signals["image"])
    batch = tf.shape(images)[0]
    if setting == "image":
      return {"angles": None, "targets": images}
    if setting is None:  # meta-training: fresh random views every outer step
      angles = ct.random_angles([batch, self.num_projections], seed)
    else:
      angles = tf.tile(ct.evenly_spaced_angles(int(setting))[None], [batch, 1])
    return {"angles": angles,
            "targets": ct.project(images, angles, interpolation=self.projector)}

  def inner_batch(self, observations, step, seed):
    del step, seed  # every inner step sees all measurements, as the reference
    return observations["angles"], observations["targets"]

  def image(self, params):
    out = self.field.apply(params, self.coords[None])
    return tf.reshape(out, [-1, self.resolution, self.resolution])

  def loss(self, params, inputs, targets):
    image = self.image(params)
    predicted = image if inputs is None else ct.project(
        image, inputs, interpolation=self.projector)
    return tf.reduce_mean(tf.square(predicted - targets), axis=[1, 2])

  def metrics(self, params, signals):
    return {"psnr": _image_psnr(self.image(params), signals)}

  def render(self, params, signals):
    del signals
    return self.image(params)[..., None]

  def targets_for_display(self, signals):
    return np.asarray(signals["image"])[..., None]

  def output_as_signal(self, params):
    return {"image": self.image(params).numpy()}

  classical_methods = classical_ct.METHODS

  def classical(self, method, signals, setting, settings):
    """(images [B, H, W, 1], PSNR [B], the method's table name) of a classical
    reconstruction (classical_ct: 'fbp' or 'sart' with keyword `settings`) from the
    same views the inits see."""
    observed = self.observe(signals, seed=tf.constant([0, 0]), setting=setting)
    if observed["angles"] is None:
      raise ValueError(f"classical reconstructions need views; setting {setting!r} "
                       "supervises the pixels.")
    images = classical_ct.reconstruct(method, observed["targets"].numpy(),
                                      observed["angles"].numpy(), **settings)
    return (images[..., None], _image_psnr(images, signals).numpy(),
            classical_ct.describe(method, **settings))

  def describe(self):
    return {"task": "ct", "resolution": self.resolution,
            "coordinates": "(col / W, row / H) in [0, 1), row-major grid "
                           "(reference meshgrid 'xy')",
            "values": "attenuation in (0, 1) (sigmoid output)",
            "projector": f"parallel beam, W bins per view, mean of H {self.projector} "
                         "samples per ray (physics/ct.py)",
            "interpolation": self.projector,
            "angles": "radians; view t rotates the sample grid by t about the image "
                      "centre, pixel (H/2, W/2); test views are "
                      "linspace(0, pi, n, endpoint=False)"}

  def fit_signature(self):
    """`reconstruct`: fits the field to a measured sinogram."""
    resolution = self.resolution

    def signals(sinogram, angles, num_steps):
      sinogram, angles = _checked_measurements(sinogram, angles, num_steps, resolution)
      return {"sinogram": sinogram[None], "angles": angles[None]}

    def outputs(start, fitted, signals, inputs):
      del inputs
      loss = lambda p: self.loss(p, signals["angles"], signals["sinogram"])[0]
      before, after = loss(start), loss(fitted)
      return {"image": self.image(fitted)[0], "loss_before": before,
              "loss_after": after, "psnr_before": contract.psnr_from_mse(before),
              "psnr_after": contract.psnr_from_mse(after)}

    return contract.FitSignature(
        "reconstruct", [tf.TensorSpec(None, tf.float32, name="sinogram"),
                        tf.TensorSpec(None, tf.float32, name="angles")],
        signals, outputs, None,
        """Fits the field to sinogram [V, W] measured at angles [V] (radians, the
      manifest's task.angles; W = resolution detector bins per view) with num_steps
      steps of the test-time optimizer on all measurements, as the task's inner loop.
      Returns the image [R, R] (R = resolution; row r, column c) and the sinogram's
      mean squared error and PSNR (dB, peak 1) before and after fitting.""")


def _image_psnr(images, signals):
  """PSNR [B] of images [B, H, W] against signals {'image'}."""
  err = tf.square(tf.convert_to_tensor(images) - tf.convert_to_tensor(signals["image"]))
  return contract.psnr_from_mse(tf.reduce_mean(err, axis=[1, 2]))


def _checked_measurements(sinogram, angles, num_steps, resolution):
  """(sinogram [V, resolution], angles [V]) once they and num_steps pass checks whose
  messages say what is expected.

  Grappler may run the checks in any order, so those that index the shapes pass on a
  wrong rank and leave the message to the rank checks.
  """
  shape, angles_shape = tf.shape(sinogram), tf.shape(angles)
  ranks_ok = tf.equal(tf.size(shape), 2) & tf.equal(tf.size(angles_shape), 1)
  # Padded, so these indices exist whatever the ranks.
  padded = tf.pad(shape, [[0, 2]])
  views, bins = padded[0], padded[1]
  num_angles = tf.pad(angles_shape, [[0, 1]])[0]
  guards = [
      _require(tf.equal(tf.size(shape), 2), "sinogram must be [num_views, "
               f"num_measurements] (rank 2): one row of {resolution} detector bins per "
               "angle; got shape", shape),
      _require(tf.equal(tf.size(angles_shape), 1), "angles must be [num_views] (rank "
               "1): one angle in radians per sinogram row; got shape", angles_shape),
      _require(~ranks_ok | tf.equal(views, num_angles), "sinogram must have one row "
               "per angle; sinogram shape", shape, "angles shape", angles_shape),
      _require(~ranks_ok | (views > 0), "give at least one view; sinogram shape",
               shape),
      _require(~ranks_ok | tf.equal(bins, resolution), f"sinogram rows must hold "
               f"{resolution} measurements, the detector bins of the projector at "
               f"resolution {resolution}; sinogram shape", shape),
      _require(_all_finite(sinogram), "sinogram values must be finite"),
      _require(_all_finite(angles), "angles must be finite"),
      _require(num_steps >= 0, "num_steps must be >= 0; got", num_steps),
  ]
  with tf.control_dependencies(guards):
    return (tf.ensure_shape(sinogram, [None, resolution]),
            tf.ensure_shape(angles, [None]))


def _all_finite(x):
  # Flat first: a reduction over all axes of an input of unknown rank may be
  # specialised to the rank of an earlier call.
  return tf.reduce_all(tf.math.is_finite(tf.reshape(x, [-1])))


def _require(ok, message, *data):
  """An assert whose message shows `data` (up to 8 entries each, e.g. a shape)."""
  return tf.debugging.Assert(ok, [message, *data], summarize=8)
