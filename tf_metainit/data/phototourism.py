"""Reader for Phototourism scenes in the format of the public reference.

A scene folder holds the photos, sorted by file name, in `images/` (or IMC2020's
`dense/images/`), and one pose file per quantity, row k belonging to the k-th photo
(REFERENCE.md 1.4):
  c2w_mats.npy   (N, 3|4, 4) camera-to-world [R | t], OpenGL camera (x right, y up,
                 looking along -z)
  kinv_mats.npy  (N, 3, 3) inverse intrinsics with the OpenGL sign flips, so that
                 d_cam = K^-1 [i, j, 1] for integer pixel (i = column, j = row)
  bds.npy        (N, 2) near/far depths of the static scene

The reference's conventions are applied here, once: translations and bounds are
scaled by 0.05 and the bounds widened by [0.9, 1.2]. Splits are by sorted index:
photos 0-19 are the test split, 20-24 validation, the rest training. The procedural
landmark (`procedural_landmark.write_landmark`) writes the same format, so this
reader serves both it and the real IMC2020 photos with the authors' pose files.
"""

import os

import numpy as np
from PIL import Image
import tensorflow as tf

from tf_metainit.data.shapenet import DataFormatError

SCALE = 0.05
BOUNDS_WIDENING = (0.9, 1.2)
SPLIT_RANGES = {'test': (0, 20), 'val': (20, 25), 'train': (25, None)}
IMAGE_DIRS = ('images', os.path.join('dense', 'images'))
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png')
POSE_FILES = ('c2w_mats.npy', 'kinv_mats.npy', 'bds.npy')
ROTATION_TOLERANCE = 1e-3

_FIX = ('point the reader at a scene folder holding images/ (or dense/images/) '
        'and c2w_mats.npy, kinv_mats.npy, bds.npy (REFERENCE.md 1.4), or write '
        'the procedural landmark with tf_metainit.data.procedural_landmark')


def image_paths(scene_dir):
  """The scene's photos, sorted by file name (the reference's order)."""
  if not os.path.isdir(scene_dir):
    raise FileNotFoundError(f'Phototourism scene folder {scene_dir} does not '
                            f'exist; {_FIX}.')
  for sub in IMAGE_DIRS:
    folder = os.path.join(scene_dir, sub)
    if os.path.isdir(folder):
      names = sorted(n for n in os.listdir(folder)
                     if n.lower().endswith(IMAGE_EXTENSIONS))
      if names:
        return [os.path.join(folder, n) for n in names]
  raise FileNotFoundError(
      f'{scene_dir} holds no photos in {" or ".join(IMAGE_DIRS)}; {_FIX}.')


def _load_array(path):
  if not os.path.isfile(path):
    raise FileNotFoundError(f'{path} does not exist; {_FIX}.')
  try:
    return np.load(path, allow_pickle=False)  # Pickled arrays could run code.
  except ValueError as e:
    raise DataFormatError(f'{path} is not a plain numeric .npy array ({e}); '
                          're-download or regenerate it.') from e


def read_cameras(scene_dir, num_photos):
  """The scene's cameras, with the reference's scaling applied.

  Returns:
    dict(c2w=(N, 3, 4) float64 with translations scaled by 0.05, kinv=(N, 3, 3),
    bounds=(N, 2) near/far scaled by 0.05 and widened by [0.9, 1.2]).
  """
  c2w, kinv, bds = (_load_array(os.path.join(scene_dir, name))
                    for name in POSE_FILES)
  expected = {'c2w_mats.npy': (c2w, ((3, 4), (4, 4))),
              'kinv_mats.npy': (kinv, ((3, 3),)),
              'bds.npy': (bds, ((2,),))}
  for name, (array, shapes) in expected.items():
    path = os.path.join(scene_dir, name)
    if array.ndim < 1 or tuple(array.shape[1:]) not in shapes:
      raise DataFormatError(
          f'{path} has shape {array.shape}; expected (N, ' +
          ' or (N, '.join(', '.join(map(str, s)) + ')' for s in shapes) + '.')
    if len(array) != num_photos:
      raise DataFormatError(
          f'{path} has {len(array)} rows but {scene_dir} has {num_photos} photos; '
          'each pose file needs one row per photo, in sorted file-name order.')
    if not np.all(np.isfinite(array)):
      raise DataFormatError(f'{path} holds NaN or inf entries; fix or re-download it.')
  c2w = np.asarray(c2w, np.float64)[:, :3]
  _check_rotations(c2w, os.path.join(scene_dir, 'c2w_mats.npy'))
  bds = np.asarray(bds, np.float64)
  bad = np.flatnonzero((bds[:, 0] <= 0) | (bds[:, 0] >= bds[:, 1]))
  if len(bad):
    raise DataFormatError(
        f'{os.path.join(scene_dir, "bds.npy")} row {bad[0]} is {bds[bad[0]].tolist()}; '
        'each row must be [near, far] with 0 < near < far.')
  c2w = c2w.copy()
  c2w[:, :, 3] *= SCALE
  bounds = bds * np.asarray(BOUNDS_WIDENING) * SCALE
  return {'c2w': c2w, 'kinv': np.asarray(kinv, np.float64), 'bounds': bounds}


def _check_rotations(c2w, path):
  rotation = c2w[:, :, :3]
  error = np.abs(rotation @ np.swapaxes(rotation, 1, 2) - np.eye(3)).max(axis=(1, 2))
  bad = np.flatnonzero((error > ROTATION_TOLERANCE) |
                       (np.linalg.det(rotation) < 0))
  if len(bad):
    raise DataFormatError(
        f'{path} row {bad[0]} is not a camera pose (R R^T differs from the identity '
        f'by {error[bad[0]]:.3g} or R is a reflection); fix or re-download it.')


def split_indices(num_photos, split):
  """Photo indices of a split: sorted 0-19 test, 20-24 validation, 25+ training."""
  if split not in SPLIT_RANGES:
    raise ValueError(f'unknown Phototourism split {split!r}; use one of '
                     f'{tuple(SPLIT_RANGES)}.')
  start, end = SPLIT_RANGES[split]
  first_train = SPLIT_RANGES['train'][0]
  if num_photos <= first_train:
    raise DataFormatError(
        f'a Phototourism scene needs more than {first_train} photos (0-19 test, '
        f'20-24 validation, the rest training); this one has {num_photos}.')
  return np.arange(start, num_photos if end is None else end)


def photo_size(path, max_side=None):
  """(height, width) the photo will have once read with `max_side`."""
  try:
    with Image.open(path) as image:
      width, height = image.size
  except (OSError, SyntaxError, ValueError) as e:
    raise DataFormatError(f'cannot read photo {path} ({e}); the file is corrupt: '
                          're-download or regenerate the scene.') from e
  return _resized((height, width), max_side)


def _resized(size, max_side):
  height, width = size
  if max_side is None or max(height, width) <= max_side:
    return height, width
  ratio = max_side / max(height, width)
  return max(1, round(height * ratio)), max(1, round(width * ratio))


def read_photo(path, kinv, max_side=None):
  """One photo as float RGB in [0, 1], and the inverse intrinsics at its read size.

  Photos larger than `max_side` are area-resampled so the long side is `max_side`;
  the intrinsics follow the pixel grid (pixel i' = s i), so K^-1 gains diag(1/s).
  """
  try:
    with Image.open(path) as image:
      rgb = np.asarray(image.convert('RGB'), dtype=np.float32) / 255.0
  except (OSError, SyntaxError, ValueError) as e:
    raise DataFormatError(f'cannot decode photo {path} ({e}); the file is corrupt '
                          'or truncated: re-download or regenerate the scene.') from e
  size = _resized(rgb.shape[:2], max_side)
  kinv = np.asarray(kinv, np.float64)
  if size != rgb.shape[:2]:
    scale_y, scale_x = size[0] / rgb.shape[0], size[1] / rgb.shape[1]
    kinv = kinv @ np.diag([1.0 / scale_x, 1.0 / scale_y, 1.0])
    rgb = np.clip(tf.image.resize(rgb, size, method='area').numpy(), 0.0, 1.0)
  return rgb, kinv


def read_split(scene_dir, split, max_side=None, max_photos=None):
  """Cameras and file paths of a split's photos (no photo is decoded).

  Returns:
    dict(paths=list of N paths, c2w=(N, 3, 4), kinv=(N, 3, 3) at the stored size,
    bounds=(N, 2), sizes=(N, 2) int (H, W) at max_side, index=(N,) scene indices).
  """
  paths = image_paths(scene_dir)
  cameras = read_cameras(scene_dir, len(paths))
  index = split_indices(len(paths), split)[:max_photos]
  return {'paths': [paths[k] for k in index],
          'c2w': cameras['c2w'][index], 'kinv': cameras['kinv'][index],
          'bounds': cameras['bounds'][index],
          'sizes': np.asarray([photo_size(paths[k], max_side) for k in index]),
          'index': index}
