"""Image regression: a SIREN fitted to the pixels of one image (Tancik et al. 2021, 4.1).

Coordinates follow the reference: (row, col) / resolution, so both lie in [0, 1).
The forward model is the identity: the field's output at a pixel's coordinate is that
pixel's RGB. Inner loops see every pixel unless `pixels_per_step` asks for a subset.
"""

import gin
import numpy as np
import tensorflow as tf

from tf_metainit import checks
from tf_metainit.data import anysize
from tf_metainit.data import dead_leaves
from tf_metainit.data import image_folder
from tf_metainit.data import text
from tf_metainit.data import tfds_images
from tf_metainit.fields import chunked
from tf_metainit.fields import siren
from tf_metainit.tasks import contract

DATASETS = ("text", "dead_leaves", "folder", "celeb_a", "imagenette")
# Float32 resampling lifts white up to 1.00001: values this far outside [0, 1] are
# round-off, clipped rather than refused.
_SLACK = 1e-5


# (H*W, 2) coordinates (row / H, col / W) in [0, 1), rows major (the reference's).
pixel_grid_tensor = anysize.pixel_coords


def pixel_grid(resolution):
  """pixel_grid_tensor of a square image, as numpy."""
  return pixel_grid_tensor(resolution, resolution).numpy()


def check_images(images, resolution, channels, where):
  """Fails early, with the fix, when a dataset's images don't fit the field.

  Values within 1e-5 outside [0, 1] are resampling round-off and are clipped.
  """
  images = np.asarray(images)
  if images.ndim != 4 or images.shape[1:3] != (resolution, resolution):
    raise ValueError(
        f"{where}: expected images of shape (N, {resolution}, {resolution}, {channels}), "
        f"got {images.shape}. Set ImageRegression.resolution to the data's size or "
        "resize the images.")
  if images.shape[-1] != channels:
    raise ValueError(
        f"{where}: images have {images.shape[-1]} channels but the field outputs "
        f"{channels}. Convert the images to {channels} channels or bind the field's "
        f"out_dim (e.g. Siren.out_dim = {images.shape[-1]}).")
  if len(images) == 0:
    raise ValueError(f"{where}: no images.")
  if (not np.all(np.isfinite(images)) or images.min() < -_SLACK
      or images.max() > 1 + _SLACK):
    raise ValueError(f"{where}: pixel values must be finite and in [0, 1]; "
                     f"got range [{images.min()}, {images.max()}]. Scale the images "
                     "to [0, 1] (e.g. divide 8-bit values by 255).")
  return np.clip(images, 0, 1).astype(np.float32)


@gin.configurable
class ImageRegression(contract.Task):
  """Meta-learns a field over a class of images.

  Args:
    dataset: 'text' or 'dead_leaves' (procedural, no download; dead leaves are
      occluding textured shapes with the scale statistics of natural images),
      'folder', 'celeb_a' or 'imagenette'.
    resolution: images are square, resolution x resolution (178 in the paper).
    num_train: training images (None = all for folders/TFDS).
    num_test: held-out test images: only ever scored.
    num_val: validation images, disjoint from train and test: they pick the best
      checkpoint, watch for collapse and choose test-time settings.
    folder: image folder for dataset='folder' (the last num_test files are the test
      images unless test_folder is given, the num_val before them validation).
    test_folder: optional folder of test images (validation: the folder's last
      num_val).
    data_dir: TFDS data directory.
    download: let TFDS download and prepare celeb_a/imagenette into data_dir (needs
      network); off, data that is not there already is an error.
    pixels_per_step: inner-batch size in pixels; None = all pixels (the paper).
    field: a callable building the field (gin: @Siren).
    seed: data seed (text rendering, shuffling).
    train_resolutions: (low, high): meta-train on random crops at random
      resolutions in this range, seen as points (data/anysize.py), so the init is
      not tied to one grid; None = every pixel of `resolution`-sized images (the
      paper). `resolution` stays the size of the held-out images.
    source_resolution: size the training images are made at, from which the crops
      are cut (None = the range's high end; larger allows zooms at high r).
    support_pixels: pixels of each training view the inner loop fits.
    query_pixels: points of each training view the meta-loss scores.
    off_grid_fraction: share of the query points that fall between pixels.
    sampling: 'window' (the support is every pixel of a random window of a view: a
      dense grid, as a user's fit sees) or 'scatter' (support and query scattered
      over the whole view: the meta-loss then scores pixels the inner loop never saw).
    chunk_pixels: test-time fits, metrics and renders of more pixels than this go
      through the field this many pixels at a time (fields/chunked.py), so memory
      stays bounded whatever the image's size; larger is faster until the chunk's
      activations crowd memory (memory.py's estimate).
  """

  def __init__(self, dataset="text", resolution=64, num_train=2000, num_test=16,
               num_val=4, folder=None, test_folder=None, data_dir=None, download=False,
               pixels_per_step=None, field=siren.Siren, seed=0, train_resolutions=None,
               source_resolution=None, support_pixels=4096, query_pixels=4096,
               off_grid_fraction=0.25, sampling="window", chunk_pixels=32768):
    if dataset not in DATASETS:
      raise ValueError(f"Unknown image dataset {dataset!r}; use one of {DATASETS}.")
    if dataset != "folder":
      checks.unread("ImageRegression", {"folder": folder, "test_folder": test_folder},
                    "dataset = 'folder'")
    if dataset in ("text", "dead_leaves", "folder"):
      checks.unread("ImageRegression", {"data_dir": data_dir, "download": download},
                    "dataset = 'celeb_a' or 'imagenette' (TFDS)")
    self.dataset = dataset
    self.resolution = checks.positive_int("ImageRegression.resolution", resolution)
    self.num_train = checks.optional(checks.positive_int, "ImageRegression.num_train",
                                     num_train)
    self.num_test = checks.positive_int("ImageRegression.num_test", num_test)
    self.num_val = checks.positive_int("ImageRegression.num_val", num_val)
    checks.optional(checks.positive_int, "ImageRegression.pixels_per_step",
                    pixels_per_step)
    self.folder, self.test_folder, self.data_dir = folder, test_folder, data_dir
    self.download = bool(download)
    self.pixels_per_step, self.seed = pixels_per_step, seed
    self.train_resolutions = self.source_resolution = None
    if train_resolutions is None:
      checks.unread("ImageRegression", {"source_resolution": source_resolution},
                    "train_resolutions = (low, high)")
    else:
      name = "ImageRegression.train_resolutions"
      high = anysize.check_range(name, train_resolutions, float("inf"))[1]
      self.source_resolution = checks.positive_int(
          "ImageRegression.source_resolution", source_resolution or high)
      self.train_resolutions = anysize.check_range(name, train_resolutions,
                                                   self.source_resolution)
    self.support_pixels = checks.positive_int("ImageRegression.support_pixels",
                                              support_pixels)
    self.query_pixels = checks.positive_int("ImageRegression.query_pixels",
                                            query_pixels)
    if not 0 <= off_grid_fraction <= 1:
      raise ValueError("ImageRegression.off_grid_fraction must be in [0, 1]; got "
                       f"{off_grid_fraction}.")
    self.off_grid_fraction = float(off_grid_fraction)
    if sampling not in anysize.SAMPLINGS:
      raise ValueError(f"ImageRegression.sampling must be one of "
                       f"{sorted(anysize.SAMPLINGS)}; got {sampling!r}.")
    self.sampling = sampling
    self.chunk_pixels = checks.positive_int("ImageRegression.chunk_pixels", chunk_pixels)
    self.field = field()
    if self.field.in_dim != 2:
      raise ValueError(f"Image fields take 2-D coordinates; the field has in_dim "
                       f"{self.field.in_dim}.")
    self.channels = self.field.out_dim
    self.coords = tf.constant(pixel_grid(self.resolution))
    self._train_images = None
    self._test_images = None
    self._val_images = None

  @classmethod
  def for_field(cls, field):
    """A task over `field` with no data of its own: the signals are a user's (of any
    size: the grid follows each image)."""
    if field.in_dim != 2 or field.out_dim not in (1, 3):
      raise ValueError(f"This init's field maps {field.in_dim}-D points to "
                       f"{field.out_dim} values; an image fit needs 2-D points to 1 "
                       "(gray) or 3 (RGB) values: it was made for another task (CT, "
                       "NeRF).")
    return cls(resolution=1, num_train=1, num_test=1, field=lambda: field)

  # --- data ---------------------------------------------------------------------------

  def _load_arrays(self):
    if self._test_images is not None:
      return
    res, where = self.resolution, f"ImageRegression(dataset={self.dataset!r})"
    source = self._source_size()
    if self.dataset in ("text", "dead_leaves"):
      make = (text.text_images if self.dataset == "text"
              else dead_leaves.dead_leaves_images)
      train = make("train", self.num_train, source, self.seed)
      val = make("validation", self.num_val, res, self.seed)
      test = make("test", self.num_test, res, self.seed)
    elif self.dataset == "folder":
      train, val, test = self._folder_splits(source)
    else:
      train = None  # streamed from TFDS
      # Both TFDS sets have a 'validation' split (the reference evaluates CelebA
      # images held out from training): its first num_test images are the test set,
      # the next num_val validation.
      val, test = (np.stack(list(tfds_images.tfds_dataset(
          self.dataset, f"validation[{start}:{start + count}]", res, self.data_dir,
          download=self.download).as_numpy_iterator()))
                   for start, count in ((self.num_test, self.num_val),
                                        (0, self.num_test)))
    if train is not None:
      train = check_images(train, source, self.channels, where + " train")
    self._train_images = train
    self._val_images = check_images(val, res, self.channels, where + " validation")
    self._test_images = check_images(test, res, self.channels, where + " test")

  def _folder_splits(self, source):
    """(train, validation, test) of a folder: test the last num_test files (or
    test_folder), validation the num_val before them, training the rest."""
    if not self.folder:
      raise ValueError("dataset='folder' needs ImageRegression.folder = '/path/to/images'.")
    images = image_folder.folder_images(self.folder, source)
    held_out = self.num_val + (0 if self.test_folder else self.num_test)
    if len(images) <= held_out:
      raise ValueError(
          f"Folder {self.folder} has {len(images)} images; with num_val={self.num_val}"
          + ("" if self.test_folder else f" and num_test={self.num_test}") +
          " none are left for training. Add images, lower ImageRegression.num_val"
          + ("" if self.test_folder else " or num_test, or give "
             "ImageRegression.test_folder") + ".")
    train, val = images[:-held_out], images[-held_out:][:self.num_val]
    if self.test_folder:
      test = image_folder.folder_images(self.test_folder, self.resolution, self.num_test)
    else:
      test = images[-self.num_test:]
    resize = lambda ims: np.stack([image_folder.center_crop_resize(t, self.resolution)
                                   .numpy() for t in ims])
    if source != self.resolution:
      val = resize(val)
      if not self.test_folder:
        test = resize(test)
    return train[:self.num_train], val, test

  def _source_size(self):
    """The size training images are made at."""
    return self.source_resolution or self.resolution

  def train_dataset(self, seed):
    self._load_arrays()
    if self._train_images is not None:
      ds = contract.shuffled_dataset({"image": self._train_images}, seed)
    else:
      split = "train" if self.num_train is None else f"train[:{self.num_train}]"
      ds = tfds_images.tfds_dataset(self.dataset, split, self._source_size(),
                                    self.data_dir, shuffle_files=True,
                                    download=self.download)
      ds = ds.repeat().shuffle(256, seed=seed).map(lambda im: {"image": im})
    if self.train_resolutions is None:
      return ds
    return anysize.training_points(ds, self.train_resolutions, self.support_pixels,
                                   self.query_pixels, self.off_grid_fraction, seed,
                                   self.sampling)

  def test_signals(self):
    self._load_arrays()
    return {"image": self._test_images}

  def validation_signals(self):
    self._load_arrays()
    return {"image": self._val_images}

  def splits(self):
    if self.dataset in ("text", "dead_leaves"):
      made = lambda split, n, res: f"{self.dataset} '{split}' images 0-{n - 1} at {res} px"
      train = made("train", self.num_train, self._source_size())
      val = made("validation", self.num_val, self.resolution)
      test = made("test", self.num_test, self.resolution)
    elif self.dataset == "folder":
      kept = self.num_val + (0 if self.test_folder else self.num_test)
      train = f"{self.folder}: files in sorted order but the last {kept}"
      val = f"{self.folder}: the {self.num_val} files before " + (
          "the end" if self.test_folder else f"the last {self.num_test}")
      test = (f"{self.test_folder}: the first {self.num_test} files" if self.test_folder
              else f"{self.folder}: the last {self.num_test} files")
    else:
      train = f"TFDS {self.dataset} 'train'" + (
          "" if self.num_train is None else f"[:{self.num_train}]")
      val = f"TFDS {self.dataset} 'validation[{self.num_test}:{self.num_test + self.num_val}]'"
      test = f"TFDS {self.dataset} 'validation[:{self.num_test}]'"
    seed = {"seed": self.seed} if self.dataset in ("text", "dead_leaves") else {}
    return {"train": train, "validation": val, "test": test, **seed}

  def mean_signals(self):
    self._load_arrays()
    if self._train_images is not None:
      mean = self._train_images.mean(0)
    else:
      source = self._source_size()
      images = tfds_images.tfds_dataset(self.dataset, "train[:2000]", source,
                                        self.data_dir, download=self.download)
      mean = (images.reduce(tf.zeros([source] * 2 + [3]), lambda a, b: a + b)
              / 2000.0).numpy()
    if mean.shape[0] != self.resolution:  # made at the source size
      mean = tf.image.resize(mean, [self.resolution] * 2, "bilinear",
                             antialias=True).numpy()
    return {"image": mean}

  # --- the task seam ------------------------------------------------------------------

  def observe(self, signals, seed, setting=None):
    del seed, setting  # every pixel is observed
    if "coords" in signals:  # training points (data/anysize.py): already observed
      return signals
    images = tf.convert_to_tensor(signals["image"])
    shape = tf.shape(images)
    # The grid follows the images' own size: the field is resolution-free, and the
    # exported `adapt` fits images of any size through this same path.
    coords = pixel_grid_tensor(shape[1], shape[2])
    pixels = tf.reshape(images, [shape[0], -1, self.channels])
    return {"coords": coords[None], "pixels": pixels}

  def inner_batch(self, observations, step, seed):
    coords, pixels = observations["coords"], observations["pixels"]
    if self.pixels_per_step is None:
      return coords, pixels
    idx = tf.random.stateless_uniform(
        [self.pixels_per_step], contract.stateless_seed(seed, step, 7),
        maxval=tf.shape(pixels)[1], dtype=tf.int32)
    return tf.gather(coords, idx, axis=1), tf.gather(pixels, idx, axis=1)

  def query_batch(self, observations, step, seed):
    if "query_coords" in observations:
      return observations["query_coords"], observations["query_pixels"]
    return self.inner_batch(observations, step, seed)

  def loss(self, params, inputs, targets):
    pred = self.field.apply(params, inputs)
    return tf.reduce_mean(tf.square(pred - targets), axis=[1, 2])

  def bounded_loss(self, params, inputs, targets):
    if targets.shape[1] is not None and targets.shape[1] <= self.chunk_pixels:
      return self.loss(params, inputs, targets)
    return chunked.mean_loss(self.loss, params, inputs, targets, self.chunk_pixels)

  def metrics(self, params, signals):
    obs = self.observe(signals, None)
    mse = self.bounded_loss(params, obs["coords"], obs["pixels"])
    return {"psnr": contract.psnr_from_mse(mse)}

  def render(self, params, signals):
    del signals
    out = chunked.apply(self.field, params, self.coords[None], self.chunk_pixels)
    return tf.reshape(out, [-1, self.resolution, self.resolution, self.channels])

  def targets_for_display(self, signals):
    return np.asarray(signals["image"])

  def output_as_signal(self, params):
    return {"image": self.render(params, None).numpy()}

  def fit_signature(self):
    """`adapt`: fits a new image from the exported weights."""
    channels = self.channels

    def signals(image, num_steps):
      return {"image": _checked_image(image, num_steps, channels)[None]}

    def outputs(start, fitted, signals, inputs):
      obs = self.observe(signals, None)
      recon = tf.reshape(chunked.apply(self.field, fitted, obs["coords"],
                                       self.chunk_pixels), tf.shape(inputs[0]))
      psnr = lambda p: contract.psnr_from_mse(
          self.bounded_loss(p, obs["coords"], obs["pixels"]))[0]
      return {"reconstruction": tf.ensure_shape(recon, [None, None, channels]),
              "psnr_before": psnr(start), "psnr_after": psnr(fitted)}

    return contract.FitSignature(
        # Unknown rank: a rank known to the graph would fold the rank check away.
        "adapt", [tf.TensorSpec(None, tf.float32, name="image")], signals, outputs,
        "full",
        """Fits image [H, W, C] (values in [0, 1]) from the exported weights.

      Runs num_steps steps of the test-time optimizer on the pixels the run's inner
      loop sees (all of them unless it trained with pixels_per_step); pixel (r, c) is
      at (r / H, c / W). Returns the reconstruction [H, W, C] and the PSNR (dB) of
      the field before and after fitting, over all pixels. Prepare images as the
      manifest's task.preprocessing says.
      """)

  def describe(self):
    return {"task": "image", "resolution": self.resolution,
            "coordinates": "(row, col) / resolution in [0, 1), row-major grid",
            "values": f"{self.channels}-channel pixel values in [0, 1]",
            "preprocessing": preprocessing(self.dataset, self.resolution),
            **({} if self.train_resolutions is None else {
                "trained_on": f"random crops resized to {self.train_resolutions[0]}-"
                              f"{self.train_resolutions[1]} px squares, as point sets; "
                              "fits images of any size"})}


def _crop_and_resize(resolution):
  """How image_folder.center_crop_resize prepares an image, in words."""
  return (f"centre crop to a square (the central min(H, W) rows and columns; an odd "
          f"excess goes to the bottom/right), resize to {resolution}x{resolution} with "
          "tf.image.resize(method='bilinear', antialias=True), clip to [0, 1]")


def preprocessing(dataset, resolution):
  """How the training images of `dataset` were made, precisely enough to redo."""
  crop = _crop_and_resize(resolution)
  if dataset == "text":
    return (f"procedural text drawn at {2 * resolution}x{2 * resolution} and "
            f"box-averaged 2x2 to {resolution}x{resolution}, 8-bit RGB / 255, so no "
            f"crop or resize; to prepare another image: RGB / 255, {crop}")
  if dataset == "dead_leaves":
    return (f"procedural dead leaves rendered at {2 * resolution}x{2 * resolution} "
            f"and box-averaged 2x2 to {resolution}x{resolution}, float in [0, 1], so "
            f"no crop or resize; to prepare another image: RGB / 255, {crop}")
  if dataset == "folder":
    return ("Pillow decode to RGB (grayscale repeated over 3 channels, alpha "
            "composited on white, 16-bit / 65535), 8-bit / 255, EXIF rotation "
            f"applied; {crop}")
  if dataset == "celeb_a":
    resize = "" if resolution == tfds_images.PAPER_RESOLUTION else f"; {crop}"
    return ("TFDS celeb_a 218x178 uint8 / 255, rows 20:198 (all 178 columns) -> "
            f"178x178{resize}")
  return f"TFDS imagenette uint8 / 255; {crop}"


def _checked_image(image, num_steps, channels):
  """image as [H, W, channels] once it and num_steps pass checks that say the fix.

  Grappler may run the checks in any order, so the channel check passes on a wrong
  rank and leaves the message to the rank check.
  """
  shape = tf.shape(image)
  rank_ok = tf.equal(tf.size(shape), 3)
  # Flat: a reduction over all axes of an input of unknown rank may be specialised
  # to the rank of an earlier call.
  values = tf.reshape(image, [-1])
  low, high = tf.reduce_min(values), tf.reduce_max(values)
  guards = [
      _require(rank_ok, f"image must be one [H, W, {channels}] image (rank 3); call "
               "adapt once per image of a batch; got shape", shape),
      # Padded, so index 2 exists whatever the rank.
      _require(~rank_ok | tf.equal(tf.pad(shape, [[0, 3]])[2], channels),
               f"image must have {channels} channels (its last axis): "
               f"{_conversion(channels)}; got shape", shape),
      _require(tf.reduce_all(tf.math.is_finite(values)) & (low >= -_SLACK)
               & (high <= 1.0 + _SLACK), "image values must be finite and in [0, 1]: "
               "divide 8-bit values by 255; got min and max", low, high),
      _require(num_steps >= 0, "num_steps must be >= 0; got", num_steps),
  ]
  with tf.control_dependencies(guards):
    # Resampling round-off, as check_images allows.
    return tf.ensure_shape(tf.clip_by_value(image, 0.0, 1.0), [None, None, channels])


def _require(ok, message, *data):
  """An assert whose message shows `data` (up to 8 entries each, e.g. a shape)."""
  return tf.debugging.Assert(ok, [message, *data], summarize=8)


def _conversion(channels):
  if channels != 3:
    return f"convert the image to {channels} channels"
  return ("repeat a grayscale [H, W, 1] image over 3 channels "
          "(tf.image.grayscale_to_rgb), composite an RGBA [H, W, 4] image on white "
          "(rgb * a + 1 - a, as the folder loader does)")
