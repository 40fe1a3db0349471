"""Phototourism: a NeRF of one landmark, fitted to one tourist photo (Sec. 4.4).

A signal is one photo with its camera. Meta-training (Reptile) adapts the init to
random 64-ray batches of a whole photo, so the init holds the landmark's static
geometry and an "average" appearance; a few steps on a new photo transfer its
lighting, exposure and weather. Evaluation follows the reference (REFERENCE.md 1.4):
optimise on the LEFT half of a held-out photo (columns [0, W // 2)), score PSNR on
its RIGHT half.

Rendering is the ShapeNet NeRF's (tasks/nerf.py) with the scene's rules: per-photo
near/far, black background, last interval 1e10, stratified samples, rays
d = R K^-1 [i, j, 1] not normalised.

Photos differ in size, so a signal stores its pixels flat in two padded blocks: the
left half first (left_max slots), then the right half (right_max slots), with the
number of real pixels of each half in `counts` and the right block's first slot in
`right_start`. Every signal of the scene then has
the same shapes, and a half is a contiguous block.
"""

import os

import gin
import numpy as np
import tensorflow as tf

from tf_metainit import checks
from tf_metainit.data import phototourism as phototourism_data
from tf_metainit.data import procedural_landmark
from tf_metainit.fields import functional
from tf_metainit.fields import mlp
from tf_metainit.physics import rays
from tf_metainit.physics import volume
from tf_metainit.tasks import contract
from tf_metainit.tasks import nerf

SETTINGS = ("left", "full")
DEFAULT_CACHE = os.path.join("~", ".cache", "tf_metainit", "phototourism")


def halves_layout(sizes):
  """(left_max, right_max): the slots each half needs for photos of `sizes` (H, W)."""
  sizes = np.asarray(sizes)
  left = sizes[:, 0] * (sizes[:, 1] // 2)
  return int(left.max()), int((sizes[:, 0] * sizes[:, 1] - left).max())


def photo_signal(image, c2w, kinv, bounds, left_max, right_max):
  """One photo as a padded signal (see the module docstring), numpy float32."""
  height, width = image.shape[:2]
  half = width // 2
  cols, rows = np.meshgrid(np.arange(width), np.arange(height), indexing="xy")
  pixels = np.stack([cols, rows], -1).astype(np.float32)
  blocks = []
  for columns, slots in ((slice(0, half), left_max), (slice(half, None), right_max)):
    colours = image[:, columns].reshape(-1, 3)
    coords = pixels[:, columns].reshape(-1, 2)
    pad = [(0, slots - len(colours)), (0, 0)]
    blocks.append((np.pad(colours, pad), np.pad(coords, pad), len(colours)))
  (left_c, left_p, num_left), (right_c, right_p, num_right) = blocks
  return {"colours": np.concatenate([left_c, right_c]).astype(np.float32),
          "pixels": np.concatenate([left_p, right_p]),
          "counts": np.asarray([num_left, num_right], np.int32),
          "right_start": np.int32(left_max),
          "size": np.asarray([height, width], np.int32),
          "c2w": np.asarray(c2w, np.float32), "kinv": np.asarray(kinv, np.float32),
          "bounds": np.asarray(bounds, np.float32)}


def photo_rays(signals):
  """World rays (B, P, 3) origins and directions of every pixel slot."""
  pixels = tf.convert_to_tensor(signals["pixels"])
  homogeneous = tf.concat([pixels, tf.ones_like(pixels[..., :1])], -1)
  kinv = tf.convert_to_tensor(signals["kinv"])
  c2w = tf.convert_to_tensor(signals["c2w"])
  dirs_cam = tf.einsum("bij,bpj->bpi", kinv, homogeneous)
  directions = tf.einsum("bij,bpj->bpi", c2w[:, :, :3], dirs_cam)
  origins = tf.broadcast_to(c2w[:, None, :, 3], tf.shape(directions))
  return origins, directions


def photo_psnr(colours, signals):
  """PSNR (B,) of rendered slot colours (B, P, 3) against unpadded whole-photo
  signals, every slot a pixel (adapt's and tf-metainit-fit's one photo)."""
  return contract.psnr_from_mse(tf.reduce_mean(
      tf.square(colours - tf.convert_to_tensor(signals["colours"])), axis=[1, 2]))


def _photo_as_signal(photo, camera_to_world, kinv, bounds, num_steps):
  """A batch-of-1 signal of a whole photo (every pixel in the left block), checked."""
  guards = [
      tf.debugging.assert_equal(tf.rank(photo), 3, message=(
          "photo must be one [H, W, 3] image (no batch dimension)")),
      tf.debugging.assert_equal(tf.shape(photo)[-1], 3, message=(
          "photo must have 3 channels (RGB); convert grayscale or RGBA first")),
      tf.debugging.assert_greater_equal(tf.reduce_min(photo), 0.0, message=(
          "photo values must lie in [0, 1]; divide 8-bit values by 255")),
      tf.debugging.assert_less_equal(tf.reduce_max(photo), 1.0, message=(
          "photo values must lie in [0, 1]; divide 8-bit values by 255")),
      tf.debugging.assert_less(bounds[0], bounds[1], message=(
          "bounds must be (near, far) with near < far")),
      tf.debugging.assert_non_negative(num_steps, message=(
          "num_steps must be >= 0")),
  ]
  with tf.control_dependencies(guards):
    shape = tf.shape(photo)
    cols, rows = tf.meshgrid(tf.range(shape[1]), tf.range(shape[0]), indexing="xy")
    pixels = tf.cast(tf.reshape(tf.stack([cols, rows], -1), [1, -1, 2]), tf.float32)
    return {"colours": tf.reshape(photo, [1, -1, 3]), "pixels": pixels,
            "counts": tf.stack([shape[0] * shape[1], 0])[None],
            "right_start": (shape[0] * shape[1])[None],
            "c2w": camera_to_world[None], "kinv": kinv[None], "bounds": bounds[None]}


@gin.configurable
class Phototourism(contract.Task):
  """Meta-learns a NeRF initialization over the photos of one landmark.

  Args:
    scene: the scene's name: 'procedural' (the generated landmark, no download) or
      a real scene's label ('trevi', 'brandenburg', 'sacre_coeur').
    scene_dir: folder of a real scene (images/ + c2w_mats.npy, kinv_mats.npy,
      bds.npy); procedural data is written to ~/.cache/tf_metainit/phototourism
      unless this names a folder.
    num_photos, long_side: procedural photos to generate and their long side (px).
    max_side: read photos larger than this at a long side of max_side (None: as
      stored; the reference meta-trains at full resolution).
    num_train: training photos read (None = all from index 25 on).
    num_test: held-out photos of the test split (at most 20).
    num_val: validation photos (indices 20-24) that monitor meta-training.
    rays_per_step: rays per inner step (64 in the paper, meta-training and test time).
    num_samples: samples per ray (128).
    render_chunk_points: points evaluated at once when rendering whole halves.
    in_memory: hold the training photos in RAM (True) or decode each drawn photo
      from disk (False). None = RAM for procedural data, disk otherwise.
    field: a callable building the field (gin: @NerfMLP).
    seed: procedural data seed.
  """

  settings = ("left",)
  default_setting = "left"
  fit_setting = "full"  # Matched fits the Meta renders of a whole training photo.

  def __init__(self, scene="procedural", scene_dir=None, num_photos=300, long_side=64,
               max_side=None, num_train=None, num_test=20, num_val=5, rays_per_step=64,
               num_samples=128, render_chunk_points=2 ** 17, in_memory=None,
               field=mlp.NerfMLP, seed=0):
    self.procedural = scene == "procedural"
    if not self.procedural and not scene_dir:
      raise ValueError(
          f"Phototourism scene {scene!r} needs Phototourism.scene_dir, the folder "
          "holding images/ (or dense/images/) and the authors' c2w_mats.npy, "
          "kinv_mats.npy and bds.npy (REFERENCE.md 1.4); or bind "
          "Phototourism.scene = 'procedural' for the generated landmark.")
    name = lambda arg: f"Phototourism.{arg}"
    for arg, value in (("num_photos", num_photos), ("long_side", long_side),
                       ("rays_per_step", rays_per_step), ("num_samples", num_samples),
                       ("render_chunk_points", render_chunk_points)):
      checks.positive_int(name(arg), value)
    for arg, value in (("max_side", max_side), ("num_train", num_train)):
      checks.optional(checks.positive_int, name(arg), value)
    if not 1 <= checks.positive_int(name("num_test"), num_test) <= 20:
      raise ValueError(f"Phototourism.num_test must be 1 to 20 (photos 0-19 are the "
                       f"test split), got {num_test}.")
    if not 1 <= checks.positive_int(name("num_val"), num_val) <= 5:
      raise ValueError(f"Phototourism.num_val must be 1 to 5 (photos 20-24 are the "
                       f"validation split), got {num_val}.")
    self.scene, self.scene_dir, self.seed = scene, scene_dir, seed
    self.num_photos, self.long_side = int(num_photos), int(long_side)
    self.max_side, self.num_train = max_side, num_train
    self.num_test, self.num_val = int(num_test), int(num_val)
    self.rays_per_step = int(rays_per_step)
    self.in_memory = self.procedural if in_memory is None else bool(in_memory)
    self.field = field()
    self.renderer = nerf.Renderer(self.field, num_samples,
                                  volume.PHOTOTOURISM_LAST_DELTA,
                                  white_background=False,
                                  chunk_points=render_chunk_points)
    self._splits = None
    self._render_fn = tf.function(self.render_slots, reduce_retracing=True)
    self._render_list_fn = tf.function(self.renderer.render_ray_list,
                                       reduce_retracing=True)

  # --- data ---------------------------------------------------------------------------

  def data_dir(self):
    """The scene folder, generated first for procedural data (idempotent)."""
    if not self.procedural:
      return os.path.expanduser(self.scene_dir)
    folder = os.path.expanduser(self.scene_dir or os.path.join(
        DEFAULT_CACHE, f"procedural_n{self.num_photos}_l{self.long_side}_s{self.seed}"))
    return procedural_landmark.write_landmark(
        folder, num_photos=self.num_photos, long_side=self.long_side, seed=self.seed)

  def _load(self):
    if self._splits is not None:
      return
    folder = self.data_dir()
    limits = {"train": self.num_train, "val": self.num_val, "test": self.num_test}
    splits = {s: phototourism_data.read_split(folder, s, self.max_side, limits[s])
              for s in limits}
    self.left_max, self.right_max = halves_layout(
        np.concatenate([s["sizes"] for s in splits.values()]))
    self.canvas = tuple(int(v) for v in np.concatenate(
        [s["sizes"] for s in splits.values()]).max(axis=0))
    self._splits = splits
    self._arrays = {}

  def split_signals(self, split):
    """A split's photos as padded signals, dict of numpy arrays (N, ...)."""
    self._load()
    if split not in self._arrays:
      index = self._splits[split]
      photos = [self._read(index, k) for k in range(len(index["paths"]))]
      self._arrays[split] = {key: np.stack([p[key] for p in photos])
                             for key in photos[0]}
    return dict(self._arrays[split])

  def _read(self, index, k):
    image, kinv = phototourism_data.read_photo(index["paths"][k], index["kinv"][k],
                                               self.max_side)
    return photo_signal(image, index["c2w"][k], kinv, index["bounds"][k],
                        self.left_max, self.right_max)

  def train_dataset(self, seed):
    if self.in_memory:
      return contract.shuffled_dataset(self.split_signals("train"), seed)
    self._load()
    return self._streamed(self._splits["train"], seed)

  def _streamed(self, index, seed):
    """Shuffled photos decoded when drawn; a stateless decoder, so it checkpoints."""
    example = self._read(index, 0)
    specs = {k: tf.TensorSpec(v.shape, tf.as_dtype(v.dtype)) for k, v in example.items()}
    keys = sorted(specs)

    def decode(k):
      photo = self._read(index, int(k))
      return [photo[key] for key in keys]

    def load(k):
      values = tf.py_function(decode, [k], [specs[key].dtype for key in keys])
      return {key: tf.ensure_shape(v, specs[key].shape) for key, v in zip(keys, values)}

    options = tf.data.Options()
    options.experimental_external_state_policy = (
        tf.data.experimental.ExternalStatePolicy.IGNORE)
    n = len(index["paths"])
    return (tf.data.Dataset.range(n).repeat().shuffle(n, seed=seed)
            .map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            .with_options(options))

  def test_signals(self):
    return self.split_signals("test")

  def validation_signals(self):
    return self.split_signals("val")

  def splits(self):
    where = f"{self.scene} photos"
    train = "all from 25 on" if self.num_train is None else f"{self.num_train} from 25 on"
    return {"train": f"{where}: {train}", "validation": f"{where} 20-{19 + self.num_val}",
            "test": f"{where} 0-{self.num_test - 1}"}

  def mean_signals(self):
    raise NotImplementedError(
        "Phototourism has no Mean baseline (the paper compares Basic NeRF, Standard "
        "and Meta): drop 'mean' from evaluate.inits.")

  # --- the task seam ------------------------------------------------------------------

  def observe(self, signals, seed, setting=None):
    """Rays and colours of the pixels the optimiser may see.

    setting None (meta-training) and 'full' observe the whole photo, 'left' its left
    half; the right half of a 'left' observation is kept but never drawn.
    """
    del seed
    if setting not in (None,) + SETTINGS:
      raise ValueError(f"Phototourism settings are {SETTINGS}, got {setting!r}.")
    origins, directions = photo_rays(signals)
    counts = tf.convert_to_tensor(signals["counts"])
    if setting == "left":
      counts = counts * tf.constant([1, 0], tf.int32)
    bounds = tf.convert_to_tensor(signals["bounds"])
    return {"origins": origins, "directions": directions,
            "colours": tf.convert_to_tensor(signals["colours"]), "counts": counts,
            "right_start": tf.convert_to_tensor(signals["right_start"])[:, None],
            "near": bounds[:, 0], "far": bounds[:, 1]}

  def inner_batch(self, observations, step, seed):
    """rays_per_step random observed pixels (with replacement), stratified samples."""
    counts = observations["counts"]
    total = tf.cast(tf.reduce_sum(counts, -1, keepdims=True), tf.float32)
    u = tf.random.stateless_uniform([tf.shape(counts)[0], self.rays_per_step],
                                    contract.stateless_seed(seed, step, 1))
    k = tf.minimum(tf.cast(u * total, tf.int32), tf.cast(total, tf.int32) - 1)
    num_left = counts[:, :1]
    index = tf.where(k < num_left, k, observations["right_start"] + k - num_left)
    gather = lambda x: tf.gather(x, index, batch_dims=1)
    near = tf.broadcast_to(observations["near"][:, None], tf.shape(index))
    far = tf.broadcast_to(observations["far"][:, None], tf.shape(index))
    inputs = self.renderer.sample(gather(observations["origins"]),
                                  gather(observations["directions"]), near, far,
                                  contract.stateless_seed(seed, step, 2))
    return inputs, gather(observations["colours"])

  def loss(self, params, inputs, targets):
    pred = self.renderer.composite(params, inputs["points"], inputs["z_vals"])
    return tf.reduce_mean(tf.square(pred - targets), axis=[1, 2])

  def metrics(self, params, signals):
    """PSNR over the real pixels of the right half, renders clipped to [0, 1]."""
    self._load()
    colours = self.render_slots(params, signals, "right")
    targets = tf.convert_to_tensor(signals["colours"])[:, self.left_max:]
    num_right = tf.convert_to_tensor(signals["counts"])[:, 1]
    mask = tf.cast(tf.range(self.right_max)[None] < num_right[:, None], tf.float32)
    sq = tf.reduce_sum(tf.square(colours - targets), -1) * mask
    mse = tf.reduce_sum(sq, -1) / (3.0 * tf.cast(num_right, tf.float32))
    return {"psnr": contract.psnr_from_mse(mse)}

  def render(self, params, signals):
    """Whole photos (B, H_max, W_max, 3), each at the top left of a black canvas."""
    return self.to_canvas(self._render_fn(params, signals, "all"), signals)

  def targets_for_display(self, signals):
    return self.to_canvas(signals["colours"], signals).numpy()

  def inputs_for_display(self, signals, setting):
    colours = np.array(signals["colours"])
    if setting == "left":
      self._load()
      colours[:, self.left_max:] = 0.0
    return self.to_canvas(colours, signals).numpy()

  def output_as_signal(self, params):
    """The init rendered from the first training photo's camera, as a photo."""
    signal = contract.take(self.split_signals("train"), slice(0, 1))
    signal["colours"] = self._render_fn(functional.batch_params(params, 1), signal,
                                        "all").numpy()
    return signal

  def describe(self):
    return {"task": "phototourism", "scene": self.scene,
            "num_samples": self.renderer.num_samples,
            "rays_per_step": self.rays_per_step,
            "rays": "d = R K^-1 [i, j, 1] at integer pixel (i = column, j = row), not "
                    "normalised; o = 0.05 t (the reference's scale)",
            "bounds": "near/far per photo = bds * [0.9, 1.2] * 0.05",
            "sampling": f"{self.renderer.num_samples} samples in [near, far], "
                        "stratified for fitting, even for renders",
            "rendering": "rgb = sigmoid(raw[:3]), sigma = relu(raw[3]); last interval "
                         f"{volume.PHOTOTOURISM_LAST_DELTA}; black background",
            "evaluation": "fit the left half (columns < W // 2), PSNR on the right",
            "values": "rgb in [0, 1]"}

  def export_signatures(self, params):
    """`render_rays`: volume rendering with per-ray bounds."""
    renderer = self.renderer

    @tf.function(input_signature=[
        tf.TensorSpec([None, 3], tf.float32, name="origins"),
        tf.TensorSpec([None, 3], tf.float32, name="directions"),
        tf.TensorSpec([None], tf.float32, name="near"),
        tf.TensorSpec([None], tf.float32, name="far")])
    def render_rays(origins, directions, near, far):
      """Colours (R, 3) in [0, 1], depth and opacity (R,) of rays in the field's world
      (translations and bounds already scaled by 0.05), unnormalised directions."""
      return renderer.render_ray_list(params, origins, directions, near, far)

    return {"render_rays": render_rays}

  def fit_signature(self):
    """`adapt`: fits a whole photo, transferring its appearance."""

    def outputs(start, fitted, signals, inputs):
      before = self.render_slots(start, signals)
      after = self.render_slots(fitted, signals)
      return {"reconstruction": tf.reshape(after[0], tf.shape(inputs[0])),
              "psnr_before": photo_psnr(before, signals)[0],
              "psnr_after": photo_psnr(after, signals)[0]}

    return contract.FitSignature(
        "adapt", [
            # Rank left open, so a batched photo reaches the rank check's message.
            tf.TensorSpec(None, tf.float32, name="photo"),
            tf.TensorSpec([3, 4], tf.float32, name="camera_to_world"),
            tf.TensorSpec([3, 3], tf.float32, name="kinv"),
            tf.TensorSpec([2], tf.float32, name="bounds")],
        _photo_as_signal, outputs, "full",
        """Fits a photo [H, W, 3] (values in [0, 1]) seen by camera_to_world (its
      translation scaled by 0.05), inverse intrinsics kinv (pixel (i, j) = (column,
      row) at integer coordinates) and (near, far) bounds (scaled by 0.05), with
      num_steps steps of the test-time optimizer on random 64-ray batches of all its
      pixels. Returns the rendered reconstruction [H, W, 3] and the PSNR (dB) over
      all pixels before and after fitting.""")

  # --- rendering ----------------------------------------------------------------------

  def render_slots(self, params, signals, part="all"):
    """Colours (B, P', 3) of 'all' pixel slots or the 'right' half's, in [0, 1]."""
    slots = slice(self.left_max, None) if part == "right" else slice(None)
    origins, directions = photo_rays(signals)
    bounds = tf.convert_to_tensor(signals["bounds"])
    colours = self.renderer.render_rays(params, origins[:, slots],
                                        directions[:, slots], bounds[:, 0],
                                        bounds[:, 1])
    return tf.clip_by_value(colours, 0.0, 1.0)

  renders_cameras = True

  def render_camera(self, params, c2w, kinv, bounds, height, width):
    """(H, W, 3) numpy render of one field (unbatched params) from any camera in the
    field's world (translation and bounds scaled by 0.05)."""
    origins, directions = rays.rays_from_kinv(np.asarray(c2w, np.float32),
                                              np.asarray(kinv, np.float32),
                                              int(height), int(width))
    count = int(height) * int(width)
    out = self._render_list_fn(
        params, tf.reshape(origins, [-1, 3]), tf.reshape(directions, [-1, 3]),
        tf.fill([count], float(bounds[0])), tf.fill([count], float(bounds[1])))
    return out["rgb"].numpy().reshape(int(height), int(width), 3)

  @property
  def true_view(self):
    """For the procedural scene, a function (photo k, camera j) -> the true landmark
    with held-out photo k's appearance seen by held-out photo j's camera, without
    transient occluders (what a perfect appearance transfer renders); else None."""
    if not self.procedural:
      return None
    signals = self.test_signals()
    scene_index = self._splits["test"]["index"]

    def view(k, j):
      c2w = np.array(signals["c2w"][j], np.float64)
      c2w[:, 3] /= phototourism_data.SCALE
      height, width = (int(v) for v in signals["size"][j])
      look = procedural_landmark.photo_appearance(int(scene_index[k]), seed=self.seed)
      return procedural_landmark.render(c2w, np.float64(signals["kinv"][j]), height,
                                        width, look)["rgb"]

    return view

  def to_canvas(self, colours, signals):
    """Scatters (B, P, 3) slot colours into (B, H_max, W_max, 3) pictures."""
    self._load()
    colours = tf.convert_to_tensor(colours, tf.float32)
    counts = tf.convert_to_tensor(signals["counts"])
    batch = tf.shape(colours)[0]
    slots = tf.range(self.left_max + self.right_max)[None]
    real = tf.where(slots < self.left_max, slots < counts[:, :1],
                    slots - self.left_max < counts[:, 1:])
    pixels = tf.cast(tf.convert_to_tensor(signals["pixels"]), tf.int32)
    signal = tf.broadcast_to(tf.range(batch)[:, None], tf.shape(real))
    where = tf.stack([signal, pixels[..., 1], pixels[..., 0]], -1)
    return tf.scatter_nd(tf.boolean_mask(where, real), tf.boolean_mask(colours, real),
                         [batch, *self.canvas, 3])
