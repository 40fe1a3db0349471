"""ShapeNet view synthesis: a NeRF fitted to the views of one object (Sec. 4.3).

A signal is one object: its 50 posed views composited on white. Frames 0-24 may be
observed (the training views of the reference), frames 25-49 are held out for the
metric. An observation is the set of camera rays of the first N views and their
pixel colours; each inner step renders a fresh random batch of those rays
(REFERENCE.md 1.3 and 4: 128 stratified samples in [2, 6], unnormalised directions,
white background, last interval 1e-3) and regresses the colours.

Settings (the number of observed views) follow the paper: meta-training sees
`num_train_views` views per object (25 = MV Meta, 1 = SV Meta); evaluation loops
over `settings` = (1, 25). The inner batch size depends on who observed: the
training observation (setting None) uses `rays_per_step` (128, the reference's
meta-training batch), an evaluation observation (an explicit setting) uses
`test_rays_per_step` (64, seed supplement 1.3). The observation carries that size,
so `inner_batch` needs no other state.

The metric is the mean over held-out views of each view's PSNR, on full renders with
evenly spaced samples clipped to [0, 1] (the reference's test function).
"""

import os

import gin
import numpy as np
import tensorflow as tf

from tf_metainit import checks
from tf_metainit.data import procedural_shapes
from tf_metainit.data import shapenet as shapenet_data
from tf_metainit.fields import functional
from tf_metainit.fields import mlp
from tf_metainit.physics import rays
from tf_metainit.physics import volume
from tf_metainit.tasks import contract
from tf_metainit.tasks import nerf

# Frames [0, 25) may be observed; [25, 50) are held out (reference np.split at 25).
NUM_INPUT_VIEWS = shapenet_data.NUM_TRAIN_VIEWS
VIEW_CHOICES = ("first", "random")
DEFAULT_CACHE = os.path.join("~", ".cache", "tf_metainit", "shapenet")


@gin.configurable
class ShapeNetViews(contract.Task):
  """Meta-learns a NeRF initialization over one ShapeNet category.

  Args:
    category: 'chairs', 'cars' or 'lamps' (procedural), or the category folder's
      name under data_dir for the real data.
    data_dir: folder holding the category folder. Default for procedural data:
      ~/.cache/tf_metainit/shapenet/procedural_r<res>_v<views>_s<seed>.
    procedural: generate the stand-in data (no download) before reading it.
    resolution: image side in pixels (128 in the paper; the reader resamples).
    num_train, num_val, num_test: objects per split (None = all; procedural data
      needs numbers). The validation objects pick the best checkpoint and the
      test-time settings; the test objects are only scored.
    num_views: views per procedural object (50 as in the released data).
    num_train_views: views observed per object while meta-training (25 = MV Meta,
      1 = SV Meta).
    train_view_choice: which views meta-training observes when num_train_views < 25:
      'first' (frames 0..N-1, what the reference loop does with num_views = N) or
      'random' (N of the 25 input frames, drawn per object and outer step).
    settings: view counts the evaluation loops over (paper: 1 and 25).
    rays_per_step: inner-batch rays during meta-training (128).
    test_rays_per_step: inner-batch rays for observations made with a setting
      (test-time optimisation, Matched fit; 64 in the paper).
    num_samples: samples per ray (128).
    near, far: depth bounds of the samples (2 and 6).
    num_eval_views: held-out frames (from frame 25 on) the metric renders; None =
      all of them. The reference demo renders 5.
    render_chunk_points: points evaluated at once when rendering full images (one
      signal's chunk of rays at a time), so memory stays bounded.
    in_memory: hold the training objects' images in RAM (True) or decode each drawn
      object's PNGs from disk (False; the released chairs need ~10 MB per object at
      128 px). None = in RAM for procedural data, from disk otherwise. Test objects
      are always held in RAM.
    allow_nonsquare_resize: squash non-square stored views to resolution x
      resolution (off: such views are an error naming the file). The focal length
      follows the width, so squashed views' rays are off vertically.
    field: a callable building the field (gin: @NerfMLP).
    seed: procedural data seed.
  """

  def __init__(self, category="chairs", data_dir=None, procedural=True,
               resolution=32, num_train=100, num_val=4, num_test=8, num_views=50,
               num_train_views=25, train_view_choice="first", settings=(1, 25),
               rays_per_step=128, test_rays_per_step=64, num_samples=128,
               near=shapenet_data.NEAR, far=shapenet_data.FAR, num_eval_views=None,
               render_chunk_points=2 ** 17, in_memory=None, allow_nonsquare_resize=False,
               field=mlp.NerfMLP, seed=0):
    if train_view_choice not in VIEW_CHOICES:
      raise ValueError(f"ShapeNetViews.train_view_choice must be one of "
                       f"{VIEW_CHOICES}, got {train_view_choice!r}.")
    for n in (num_train_views,) + tuple(settings):
      _check_view_count(n)
    if procedural and category not in procedural_shapes.CATEGORIES:
      raise ValueError(
          f"Procedural ShapeNet has categories {procedural_shapes.CATEGORIES}, not "
          f"{category!r}; for real data set ShapeNetViews.procedural = False and "
          "ShapeNetViews.data_dir.")
    if procedural and None in (num_train, num_val, num_test):
      raise ValueError("Procedural ShapeNet needs ShapeNetViews.num_train, num_val and "
                       "num_test as numbers of objects to generate.")
    if not procedural and not data_dir:
      raise ValueError("ShapeNetViews.procedural = False needs ShapeNetViews.data_dir, "
                       "the folder holding the category folder (REFERENCE.md 1.3).")
    self.category, self.procedural = category, bool(procedural)
    self.resolution = int(resolution)
    self.allow_nonsquare_resize = bool(allow_nonsquare_resize)
    self.num_train, self.num_val, self.num_test = num_train, num_val, num_test
    self.num_views, self.seed = int(num_views), seed
    self.data_dir = data_dir
    self.num_train_views = int(num_train_views)
    self.train_view_choice = train_view_choice
    self.settings = tuple(int(s) for s in settings)
    self.default_setting = self.settings[0]
    self.fit_setting = NUM_INPUT_VIEWS  # Matched fits the Meta renders of 25 views.
    name = lambda arg: f"ShapeNetViews.{arg}"
    for arg, value in (("resolution", resolution), ("num_views", num_views),
                       ("rays_per_step", rays_per_step),
                       ("test_rays_per_step", test_rays_per_step),
                       ("num_samples", num_samples),
                       ("render_chunk_points", render_chunk_points)):
      checks.positive_int(name(arg), value)
    for arg, value in (("num_train", num_train), ("num_test", num_test),
                       ("num_eval_views", num_eval_views)):
      checks.optional(checks.positive_int, name(arg), value)
    checks.optional(checks.positive_int, name("num_val"), num_val)
    if checks.positive(name("near"), near) >= checks.positive(name("far"), far):
      raise ValueError(f"ShapeNetViews.near ({near}) must be below ShapeNetViews.far "
                       f"({far}).")
    self.rays_per_step = int(rays_per_step)
    self.test_rays_per_step = int(test_rays_per_step)
    self.num_samples = int(num_samples)
    self.near, self.far = float(near), float(far)
    self.num_eval_views = num_eval_views
    self.render_chunk_points = int(render_chunk_points)
    self.in_memory = self.procedural if in_memory is None else bool(in_memory)
    self.field = field()
    self.renderer = nerf.Renderer(self.field, self.num_samples,
                                  volume.SHAPENET_LAST_DELTA, white_background=True,
                                  chunk_points=self.render_chunk_points)
    self._train = None
    self._test = None
    self._val = None
    # Eager callers (grids, the Matched target) would run the chunk loop op by op.
    self._render_views_fn = tf.function(self.render_views, reduce_retracing=True)

  # --- data ---------------------------------------------------------------------------

  def category_dir(self):
    """The category folder, generated first for procedural data (idempotent)."""
    if not self.procedural:
      return os.path.join(os.path.expanduser(self.data_dir), self.category)
    # The generator refuses to mix settings in one folder, so they name the cache.
    data_dir = os.path.expanduser(self.data_dir or os.path.join(
        DEFAULT_CACHE, f"procedural_r{self.resolution}_v{self.num_views}_s{self.seed}"))
    return procedural_shapes.write_category(
        data_dir, self.category, self.num_train, self.num_val, self.num_test,
        resolution=self.resolution, num_views=self.num_views, seed=self.seed)

  def _load(self):
    if self._test is not None:
      return
    category_dir = self.category_dir()
    read = dict(resolution=self.resolution,
                allow_nonsquare_resize=self.allow_nonsquare_resize)
    if self.in_memory:
      self._train = _arrays(shapenet_data.load_split(
          category_dir, "train", max_objects=self.num_train, **read))
      train_views = self._train["images"].shape[1]
    else:  # Poses and focal lengths in RAM, images decoded when drawn.
      self._train = shapenet_data.index_split(
          category_dir, "train", max_objects=self.num_train, **read)
      train_views = self._train["paths"].shape[1]
    self._test = _arrays(shapenet_data.load_split(
        category_dir, "test", max_objects=self.num_test, **read))
    for name, views in (("train", train_views),
                        ("test", self._test["images"].shape[1])):
      if views <= NUM_INPUT_VIEWS:
        raise ValueError(
            f"{category_dir} {name} objects have {views} views; ShapeNet needs more "
            f"than {NUM_INPUT_VIEWS} (frames 0-24 observed, 25+ held out).")

  def train_dataset(self, seed):
    self._load()
    if self.in_memory:
      return contract.shuffled_dataset(self._train, seed)
    return shapenet_data.streamed_dataset(self._train, seed)

  def test_signals(self):
    self._load()
    return dict(self._test)

  def validation_signals(self):
    if self._val is None:
      category_dir = self.category_dir()
      if not shapenet_data.list_objects(category_dir, "val"):
        raise ValueError(
            f"{category_dir} has no 'val' objects in its splits file: the best "
            "checkpoint is chosen on them, never on the test objects. List some "
            "object folders under 'val' (the released splits have them).")
      self._val = _arrays(shapenet_data.load_split(
          category_dir, "val", max_objects=self.num_val,
          resolution=self.resolution, allow_nonsquare_resize=self.allow_nonsquare_resize))
    return dict(self._val)

  def splits(self):
    where = ("procedural " if self.procedural else "") + f"ShapeNet {self.category}"
    count = lambda n: "all" if n is None else f"the first {n}"
    return {split: f"{where} '{name}' objects: {count(n)}" for split, name, n in (
        ("train", "train", self.num_train), ("validation", "val", self.num_val),
        ("test", "test", self.num_test))} | (
            {"seed": self.seed} if self.procedural else {})

  def mean_signals(self):
    raise NotImplementedError(
        "ShapeNet has no Mean baseline (the paper compares Standard, Matched, "
        "Shuffled, MV Meta and SV Meta, seed Table 3): drop 'mean' from "
        "evaluate.inits.")

  # --- the task seam ------------------------------------------------------------------

  def observe(self, signals, seed, setting=None):
    """Rays and colours of the observed views, flattened to (B, N*H*W, 3).

    setting None is the meta-training observation (num_train_views views, chosen by
    train_view_choice); an int is a test-time view count (frames 0..N-1).
    """
    training = setting is None
    num = self.num_train_views if training else _check_view_count(setting)
    images = tf.convert_to_tensor(signals["images"])[:, :NUM_INPUT_VIEWS]
    c2w = tf.convert_to_tensor(signals["c2w"])[:, :NUM_INPUT_VIEWS]
    if training and self.train_view_choice == "random" and num < NUM_INPUT_VIEWS:
      scores = tf.random.stateless_uniform(tf.shape(images)[:2],
                                           contract.stateless_seed(seed, 11))
      views = tf.argsort(scores, axis=1)[:, :num]
      images = tf.gather(images, views, axis=1, batch_dims=1)
      c2w = tf.gather(c2w, views, axis=1, batch_dims=1)
    else:
      images, c2w = images[:, :num], c2w[:, :num]
    origins, directions = self._rays(c2w, signals["focal"], _image_size(images))
    return {"origins": nerf.flatten_rays(origins),
            "directions": nerf.flatten_rays(directions),
            "colours": nerf.flatten_rays(images),
            # A Python int: observations never cross a tf.function boundary.
            "rays_per_step": self.rays_per_step if training else self.test_rays_per_step}

  def inner_batch(self, observations, step, seed):
    """A fresh batch of random rays (with replacement) and stratified samples."""
    colours = observations["colours"]
    shape = tf.shape(colours)
    index = tf.random.stateless_uniform(
        [shape[0], observations["rays_per_step"]], contract.stateless_seed(seed, step, 1),
        minval=0, maxval=shape[1], dtype=tf.int32)
    origins = tf.gather(observations["origins"], index, batch_dims=1)
    directions = tf.gather(observations["directions"], index, batch_dims=1)
    inputs = self.renderer.sample(origins, directions, self.near, self.far,
                                  contract.stateless_seed(seed, step, 2))
    return inputs, tf.gather(colours, index, batch_dims=1)

  def loss(self, params, inputs, targets):
    pred = self.renderer.composite(params, inputs["points"], inputs["z_vals"])
    return tf.reduce_mean(tf.square(pred - targets), axis=[1, 2])

  def metrics(self, params, signals):
    """Mean over held-out views of each view's PSNR (renders clipped to [0, 1])."""
    images, c2w = self._held_out(signals)
    pred = self.render_views(params, c2w, signals["focal"])
    return {"psnr": mean_view_psnr(pred, images)}

  def render(self, params, signals):
    """The first held-out view (frame 25) of every signal, (B, H, W, 3)."""
    c2w = tf.convert_to_tensor(signals["c2w"])[:, NUM_INPUT_VIEWS:NUM_INPUT_VIEWS + 1]
    return self._render_views_fn(params, c2w, signals["focal"])[:, 0]

  def targets_for_display(self, signals):
    return np.asarray(signals["images"])[:, NUM_INPUT_VIEWS]

  def inputs_for_display(self, signals, setting):
    """Frame 0, the one view every setting observes."""
    del setting
    return np.asarray(signals["images"])[:, 0]

  def output_as_signal(self, params):
    """The Meta init rendered from every camera of the first training object."""
    self._load()
    c2w, focal = self._train["c2w"][:1], self._train["focal"][:1]
    images = self._render_views_fn(functional.batch_params(params, 1),
                                   tf.constant(c2w), tf.constant(focal))
    return {"images": images.numpy(), "c2w": c2w, "focal": focal}

  def describe(self):
    return {"task": "shapenet", "category": self.category,
            "procedural": self.procedural, "resolution": self.resolution,
            "num_samples": self.num_samples, "near": self.near, "far": self.far,
            "test_rays_per_step": self.test_rays_per_step,
            "rays": "NeRF-Blender camera, pixel (col, row) at integer coordinates, "
                    "d = R ((i - W/2)/f, -(j - H/2)/f, -1), not normalised",
            "sampling": f"{self.num_samples} samples in [{self.near}, {self.far}], "
                        "stratified (upward jitter) for training, even for renders",
            "rendering": "rgb = sigmoid(raw[:3]), sigma = relu(raw[3]); last interval "
                         f"{volume.SHAPENET_LAST_DELTA}; white background",
            "views": f"frames 0-{NUM_INPUT_VIEWS - 1} observable, "
                     f"{NUM_INPUT_VIEWS}+ held out",
            "values": "rgb in [0, 1] composited on white"}

  def export_signatures(self, params):
    """`render_view`: one camera, as the metric renders held-out views."""
    near, far = self.near, self.far

    # Unknown ranks: a rank known to the graph would fold the rank checks away.
    @tf.function(input_signature=[
        tf.TensorSpec(None, tf.float32, name="camera_to_world"),
        tf.TensorSpec([], tf.float32, name="focal"),
        tf.TensorSpec([], tf.int32, name="height"),
        tf.TensorSpec([], tf.int32, name="width")])
    def render_view(camera_to_world, focal, height, width):
      """Renders the view [height, width] of camera_to_world [4, 4] or [3, 4]
      (NeRF-Blender: the camera looks along -z, y up) with focal length focal (px),
      as the task renders held-out views: even samples in [near, far], white
      background. Returns rgb [H, W, 3] in [0, 1], depth and acc (opacity) [H, W]."""
      c2w = _checked_poses(camera_to_world, "camera_to_world", 2)
      guards = [_checked_focal(focal),
                _require((height > 0) & (width > 0), "height and width must be > 0; "
                         "got", height, width)]
      with tf.control_dependencies(guards):
        size = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
        count = height * width
      origins, directions = rays.camera_rays(c2w, focal, *size)
      out = self.renderer.render_ray_list(
          params, tf.reshape(origins, [-1, 3]), tf.reshape(directions, [-1, 3]),
          tf.fill([count], near), tf.fill([count], far))
      return {"rgb": tf.reshape(out["rgb"], [height, width, 3]),
              "depth": tf.reshape(out["depth"], [height, width]),
              "acc": tf.reshape(out["acc"], [height, width])}

    return {"render_view": render_view}

  def fit_signature(self):
    """`adapt`: fits the field to posed views."""

    def signals(images, cameras, focal, num_steps):
      images, cameras = _checked_views(images, cameras, focal, num_steps)
      return {"images": images[None], "c2w": cameras[None], "focal": focal[None]}

    def outputs(start, fitted, signals, inputs):
      del inputs
      size = _image_size(signals["images"])
      render = lambda p: self.render_views(p, signals["c2w"], signals["focal"],
                                            size)[0]
      before, after = render(start), render(fitted)
      images = signals["images"][0]
      return {"renders": after, "psnr_before": mean_view_psnr(before, images),
              "psnr_after": mean_view_psnr(after, images)}

    return contract.FitSignature(
        "adapt", [tf.TensorSpec(None, tf.float32, name="images"),
                  tf.TensorSpec(None, tf.float32, name="cameras"),
                  tf.TensorSpec([], tf.float32, name="focal")],
        signals, outputs, NUM_INPUT_VIEWS,
        """Fits the field to 1 to 25 posed views: images [V, H, W, 3] in [0, 1]
      (composited on white), seen by cameras [V, 4, 4] or [V, 3, 4] (as in
      render_view) with focal length focal (px), with num_steps steps of the
      test-time optimizer on random batches of their rays, as the task's test-time
      observation. Returns the renders [V, H, W, 3] of the fitted field from the
      given cameras and the mean over views of each view's PSNR (dB) before and
      after fitting.""")

  # --- rendering ----------------------------------------------------------------------

  def _rays(self, c2w, focal, size=None):
    """(B, V, H, W, 3) origins and directions; focal is (B,), size (H, W) defaults
    to the task's resolution."""
    focal = tf.convert_to_tensor(focal)[:, None]
    height, width = size or (self.resolution, self.resolution)
    return rays.camera_rays(c2w, focal, height, width)

  def _held_out(self, signals):
    end = None if self.num_eval_views is None else (
        NUM_INPUT_VIEWS + int(self.num_eval_views))
    images = tf.convert_to_tensor(signals["images"])[:, NUM_INPUT_VIEWS:end]
    c2w = tf.convert_to_tensor(signals["c2w"])[:, NUM_INPUT_VIEWS:end]
    return images, c2w

  def render_views(self, params, c2w, focal, size=None):
    """Full images (B, V, H, W, 3) with evenly spaced samples, clipped to [0, 1]."""
    origins, directions = self._rays(c2w, focal, size)
    shape = tf.shape(origins)
    colours = self.renderer.render_rays(params, nerf.flatten_rays(origins),
                                        nerf.flatten_rays(directions), self.near,
                                        self.far)
    return tf.clip_by_value(tf.reshape(colours, shape), 0.0, 1.0)


def mean_view_psnr(renders, images):
  """Mean over views of each view's PSNR: (..., V, H, W, 3) -> (...)."""
  mse = tf.reduce_mean(tf.square(renders - images), axis=[-3, -2, -1])
  return tf.reduce_mean(contract.psnr_from_mse(mse), axis=-1)


def _check_view_count(num_views):
  num_views = int(num_views)
  if not 1 <= num_views <= NUM_INPUT_VIEWS:
    raise ValueError(f"ShapeNet observes 1 to {NUM_INPUT_VIEWS} views (frames 0-24; "
                     f"25+ are held out), got {num_views}.")
  return num_views


def _image_size(images):
  """(H, W) of (B, V, H, W, 3) images: Python ints when static (the data), float32
  tensors otherwise (the exported `adapt`, whose views may have any size)."""
  size = images.shape[2:4]
  if size.is_fully_defined():
    return tuple(size.as_list())
  return tuple(tf.unstack(tf.cast(tf.shape(images)[2:4], tf.float32)))


def _checked_poses(poses, name, rank):
  """Camera-to-world matrices [..., 3 or 4, 4] as [..., 3, 4], once checked."""
  expected = "[4, 4] or [3, 4]" if rank == 2 else "[V, 4, 4] or [V, 3, 4]"
  shape = tf.shape(poses)
  rank_ok = tf.equal(tf.size(shape), rank)
  padded = tf.pad(shape, [[0, 2]])  # so the matrix axes exist whatever the rank
  rows, cols = padded[rank - 2], padded[rank - 1]
  guards = [
      _require(rank_ok, f"{name} must be {expected} camera-to-world matrices (rank "
               f"{rank}); got shape", shape),
      _require(~rank_ok | (tf.equal(cols, 4) & (tf.equal(rows, 3) | tf.equal(rows, 4))),
               f"{name} must be {expected} camera-to-world matrices (a [3, 4] is the "
               "top three rows of a [4, 4]); got shape", shape),
      _require(_all_finite(poses), f"{name} must be finite"),
  ]
  with tf.control_dependencies(guards):
    return tf.ensure_shape(poses, [None] * rank)[..., :3, :]


def _checked_focal(focal):
  return _require(focal > 0, "focal must be a focal length in pixels > 0 (Blender "
                  "data: 0.5 W / tan(0.5 camera_angle_x)); got", focal)


def _checked_views(images, cameras, focal, num_steps):
  """(images [V, H, W, 3], cameras [V, 3, 4]) once they, focal and num_steps pass
  checks whose messages say what is expected.

  Grappler may run the checks in any order, so those that index a shape pass on a
  wrong rank and leave the message to the rank check.
  """
  cameras = _checked_poses(cameras, "cameras", 3)
  shape, cameras_shape = tf.shape(images), tf.shape(cameras)
  rank_ok = tf.equal(tf.size(shape), 4)
  padded = tf.pad(shape, [[0, 4]])  # so these indices exist whatever the rank
  views, channels = padded[0], padded[3]
  values = tf.reshape(images, [-1])  # see _all_finite
  low, high = tf.reduce_min(values), tf.reduce_max(values)
  guards = [
      _require(rank_ok, "images must be [V, H, W, 3] posed views (rank 4), a single "
               "view [1, H, W, 3]; got shape", shape),
      _require(~rank_ok | tf.equal(channels, 3), "images must have 3 channels (RGB): "
               "composite RGBA views on white (rgb * a + 1 - a) as in the ShapeNet "
               "data; got shape", shape),
      _require(~rank_ok | tf.equal(views, cameras_shape[0]), "images and cameras must "
               "hold the same views; images shape", shape, "cameras shape",
               cameras_shape),
      _require(~rank_ok | ((views >= 1) & (views <= NUM_INPUT_VIEWS)),
               f"give 1 to {NUM_INPUT_VIEWS} views (the task observes at most "
               f"{NUM_INPUT_VIEWS}); images shape", shape),
      _require(_all_finite(values) & (low >= 0.0) & (high <= 1.0),
               "image values must be finite and in [0, 1]: divide 8-bit values by "
               "255; got min and max", low, high),
      _checked_focal(focal),
      _require(num_steps >= 0, "num_steps must be >= 0; got", num_steps),
  ]
  with tf.control_dependencies(guards):
    return tf.ensure_shape(images, [None, None, None, 3]), tf.identity(cameras)


def _all_finite(x):
  # Flat first: a reduction over all axes of an input of unknown rank may be
  # specialised to the rank of an earlier call.
  return tf.reduce_all(tf.math.is_finite(tf.reshape(x, [-1])))


def _require(ok, message, *data):
  """An assert whose message shows `data` (up to 8 entries each, e.g. a shape)."""
  return tf.debugging.Assert(ok, [message, *data], summarize=8)


def _arrays(split):
  """Signal arrays of a split; object ids stay out (tf.data wants tensors)."""
  return {"images": split["images"].astype(np.float32),
          "c2w": split["c2w"].astype(np.float32),
          "focal": split["focal"].astype(np.float32)}
