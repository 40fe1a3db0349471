"""Reader for the ShapeNet view-synthesis data of the public reference.

Layout (REFERENCE.md section 1.3): a category folder of object folders, each
holding a NeRF-Blender `transforms.json` (`camera_angle_x`, `frames` with
`file_path` and a 4x4 camera-to-world `transform_matrix`) and RGBA PNGs
(128x128, 50 views: 0-24 for training, 25-49 held out), plus
`<category>_splits.json` = {'train': [...], 'val': [...], 'test': [...]}.

The splits file is looked for inside the category folder (the procedural
stand-in writes it there) and beside it, also under the singular name, as the
released data is arranged (`chairs/` next to `chair_splits.json`).
"""

import json
import os

from absl import logging
import numpy as np
from PIL import Image
import tensorflow as tf

NEAR = 2.0
FAR = 6.0
NUM_TRAIN_VIEWS = 25
SPLITS = ('train', 'val', 'test')
# Stored poses are rotations to float32 precision (~1e-7, the procedural ones to
# 1e-15); 1e-3 admits rounded JSON and refuses scaled or sheared matrices.
POSE_TOLERANCE = 1e-3


class DataFormatError(ValueError):
  """A file exists but does not hold what the ShapeNet format promises."""


_FIX_DATA = ('download the ShapeNet data of the learnit project (see '
             'REFERENCE.md 1.3) or write a procedural stand-in with '
             'tf_metainit.data.procedural_shapes.write_category')


def _read_json(path):
  try:
    with open(path) as f:
      return json.load(f)
  except json.JSONDecodeError as e:
    raise DataFormatError(
        f'{path} is not valid JSON ({e}); re-download or regenerate it.') from e


def _check_inside(root, path, where):
  """Refuses a path from a data file that resolves outside its folder `root`."""
  real_root = os.path.realpath(root)
  real = os.path.realpath(path)
  if real == real_root or os.path.commonpath([real_root, real]) != real_root:
    raise DataFormatError(
        f'{where} does not resolve inside {root}; paths in data files must '
        'stay inside their folder (no "..", absolute paths or outward links): '
        'fix or re-download the file.')


def _resolve_image(object_dir, file_path, where):
  """Finds a frame's PNG; NeRF-Blender paths may lack '.png' or a flat dir."""
  _check_inside(object_dir, os.path.join(object_dir, file_path), where)
  names = [file_path, os.path.basename(file_path)]
  for name in names:
    for candidate in (name, name + '.png'):
      path = os.path.join(object_dir, candidate)
      if os.path.isfile(path):
        _check_inside(object_dir, path, where)  # A link may point out.
        return os.path.normpath(path)  # Error messages name 'b/r_0.png'.
  raise FileNotFoundError(
      f'no image for frame file_path={file_path!r} in {object_dir} (tried it '
      'with and without .png and its directory); the object is incomplete: '
      're-download or regenerate it.')


def _read_rgba(path):
  """uint8 image as float RGBA in [0, 1]; opaque if the PNG has no alpha."""
  try:
    with Image.open(path) as image:
      image.load()
      rgba = np.asarray(image.convert('RGBA'), dtype=np.float32)
  except (OSError, SyntaxError, ValueError) as e:
    raise DataFormatError(
        f'cannot decode image {path} ({e}); the file is corrupt or truncated: '
        're-download or regenerate the object.') from e
  return rgba / 255.0


def composite_on_white(rgba):
  """rgb * alpha + (1 - alpha): the reference's white-background targets."""
  rgb, alpha = rgba[..., :3], rgba[..., 3:]
  return rgb * alpha + (1.0 - alpha)


def _resize(images, size):
  """Area resampling (block mean for integer factors), as cv2.INTER_AREA.

  Clipped to [0, 1]: float rounding lifts white up to 1.00001 (128 -> 89 px).
  """
  if images.shape[1:3] == tuple(size):
    return images
  return np.clip(tf.image.resize(images, size, method='area').numpy(), 0, 1)


def _target_size(resolution, height, width):
  if resolution is None:
    return height, width
  if isinstance(resolution, int):
    return resolution, resolution
  return tuple(int(r) for r in resolution)


def _check_aspect(path, height, width, size, allow_nonsquare_resize):
  """Refuses a resample that would squash the views, unless asked for."""
  if allow_nonsquare_resize or height * size[1] == width * size[0]:
    return
  raise DataFormatError(
      f'{path} is {height}x{width} (HxW) and resampling it to {size[0]}x'
      f'{size[1]} would distort it; crop the views to the aspect ratio of '
      'the resolution, or pass allow_nonsquare_resize=True (gin: '
      'ShapeNetViews.allow_nonsquare_resize = True) to squash them.')


def _frame_matrix(frame, transforms_path, index):
  try:
    matrix = np.asarray(frame['transform_matrix'], dtype=np.float64)
    file_path = frame['file_path']
  except (KeyError, TypeError, ValueError) as e:
    raise DataFormatError(
        f'frame {index} of {transforms_path} lacks a valid file_path or 4x4 '
        f'transform_matrix ({e!r}); re-download or regenerate it.') from e
  if matrix.shape not in ((4, 4), (3, 4)):
    raise DataFormatError(
        f'frame {index} of {transforms_path}: transform_matrix has shape '
        f'{matrix.shape}, expected 4x4.')
  if matrix.shape == (3, 4):
    matrix = np.concatenate([matrix, [[0.0, 0.0, 0.0, 1.0]]])
  problem = _pose_problem(matrix)
  if problem:
    raise DataFormatError(
        f'frame {index} of {transforms_path}: transform_matrix is not a camera '
        f'pose ({problem}); it must be a finite [R | t] with R a rotation and '
        'last row [0, 0, 0, 1]: fix or re-download the file.')
  return matrix, file_path


def _pose_problem(matrix):
  """What keeps a 4x4 matrix from being a rigid camera-to-world pose, or None."""
  if not np.all(np.isfinite(matrix)):
    return 'NaN or inf entries'
  if np.max(np.abs(matrix[3] - [0.0, 0.0, 0.0, 1.0])) > POSE_TOLERANCE:
    return f'last row {matrix[3].tolist()}'
  rotation = matrix[:3, :3]
  error = np.max(np.abs(rotation @ rotation.T - np.eye(3)))
  if error > POSE_TOLERANCE:
    return f'R R^T differs from the identity by {error:.3g}'
  if np.linalg.det(rotation) < 0:
    return 'R is a reflection (det -1)'
  return None


def read_transforms(object_dir):
  """(camera_angle_x, (V, 4, 4) float64 poses, V image paths) of one object."""
  transforms_path = os.path.join(object_dir, 'transforms.json')
  if not os.path.isfile(transforms_path):
    raise FileNotFoundError(f'{transforms_path} does not exist; the object '
                            'folder is empty or incomplete.')
  meta = _read_json(transforms_path)
  try:
    camera_angle_x = float(meta['camera_angle_x'])
    frames = list(meta['frames'])
  except (KeyError, TypeError, ValueError) as e:
    raise DataFormatError(
        f'{transforms_path} needs camera_angle_x and a frames list ({e!r}); '
        're-download or regenerate it.') from e
  if not frames:
    raise DataFormatError(f'{transforms_path} lists no frames.')
  poses, files = [], []
  for index, frame in enumerate(frames):
    matrix, file_path = _frame_matrix(frame, transforms_path, index)
    poses.append(matrix)
    where = f'frame {index} of {transforms_path}: file_path {file_path!r}'
    files.append(_resolve_image(object_dir, file_path, where))
  return camera_angle_x, np.stack(poses), files


def _read_views(files):
  """(V, H, W, 3) float32 views of one object, composited on white."""
  images = []
  for path in files:
    rgba = _read_rgba(path)
    if images and rgba.shape[:2] != images[0].shape[:2]:
      raise DataFormatError(
          f'{path} is {rgba.shape[:2]} but {files[0]} is '
          f'{images[0].shape[:2]}; all views of an object must match.')
    images.append(composite_on_white(rgba))
  return np.stack(images).astype(np.float32)


def load_object(object_dir, resolution=None, allow_nonsquare_resize=False):
  """Loads one object: all views composited on white, poses and focal.

  Args:
    object_dir: folder with transforms.json and the PNGs.
    resolution: None keeps the stored size; an int (square) or (H, W)
      resamples the images and rescales the focal length accordingly.
    allow_nonsquare_resize: let `resolution` change the views' aspect ratio
      (e.g. squash non-square views to square). Off, that is an error: the
      focal length follows the width, so squashed views get wrong rays.

  Returns:
    dict(images=(V, H, W, 3) float32 in [0, 1], c2w=(V, 4, 4) float32,
    focal=float pixels at the returned resolution).
  """
  camera_angle_x, poses, files = read_transforms(object_dir)
  images = _read_views(files)
  height, width = images.shape[1:3]
  focal = 0.5 * width / np.tan(0.5 * camera_angle_x)
  size = _target_size(resolution, height, width)
  _check_aspect(files[0], height, width, size, allow_nonsquare_resize)
  images = _resize(images, size)
  return {'images': images.astype(np.float32),
          'c2w': np.stack(poses).astype(np.float32),
          'focal': float(focal * size[1] / width)}


def _splits_candidates(category_dir):
  category_dir = os.path.normpath(category_dir)
  name = os.path.basename(category_dir)
  parent = os.path.dirname(category_dir)
  names = [name] + ([name[:-1]] if name.endswith('s') else [])
  return ([os.path.join(category_dir, f'{n}_splits.json') for n in names] +
          [os.path.join(parent, f'{n}_splits.json') for n in names])


def _check_category_dir(category_dir):
  if not os.path.isdir(category_dir):
    raise FileNotFoundError(
        f'ShapeNet category folder {category_dir} does not exist; '
        f'{_FIX_DATA}, or fix the path.')


def find_splits_file(category_dir):
  """Path of `<category>_splits.json` inside or beside the category folder."""
  _check_category_dir(category_dir)
  candidates = _splits_candidates(category_dir)
  for path in candidates:
    if os.path.isfile(path):
      return path
  raise FileNotFoundError(
      f'no splits file for {category_dir}; looked for {candidates}. Put the '
      "category's <category>_splits.json ({'train': [...], 'val': [...], "
      "'test': [...]}) in one of those places, or pass splits_file.")


def list_objects(category_dir, split, splits_file=None):
  """Sorted object folders of a split that hold a transforms.json.

  Folders without transforms.json are skipped with a warning (some released
  car folders are empty, learnit issue #13); ids without any folder are an
  error, since then the splits file and the category folder disagree.

  Args:
    category_dir: the category folder (object folders inside).
    split: 'train', 'val' or 'test'.
    splits_file: optional explicit path of the splits JSON.

  Returns:
    list of object folder paths, sorted by object id.
  """
  _check_category_dir(category_dir)
  splits_file = splits_file or find_splits_file(category_dir)
  splits = _read_json(splits_file)
  if not isinstance(splits, dict) or split not in splits:
    keys = sorted(splits) if isinstance(splits, dict) else type(splits)
    raise DataFormatError(
        f'{splits_file} has no split {split!r} (found {keys}); use one of '
        f'{SPLITS} or fix the file.')
  ids = sorted(str(i) for i in splits[split])
  for object_id in ids:
    _check_object_id(category_dir, object_id, f'{splits_file}: {split!r} id')
  missing = [i for i in ids if not os.path.isdir(os.path.join(category_dir, i))]
  if missing:
    raise FileNotFoundError(
        f'{len(missing)} of {len(ids)} {split!r} objects named in '
        f'{splits_file} have no folder in {category_dir} (e.g. {missing[:3]}); '
        'the splits file belongs to another category or the download is '
        f'incomplete: {_FIX_DATA}.')
  paths = []
  for object_id in ids:
    path = os.path.join(category_dir, object_id)
    if os.path.isfile(os.path.join(path, 'transforms.json')):
      paths.append(path)
    else:
      logging.warning('Skipping %s: no transforms.json (empty object folder).',
                      path)
  if not paths:
    raise FileNotFoundError(
        f'no {split!r} object of {category_dir} has a transforms.json; '
        f'{_FIX_DATA}.')
  return paths


def _check_object_id(category_dir, object_id, where):
  """An id names a folder directly inside the category folder, nothing else."""
  if os.sep in object_id or '/' in object_id:
    raise DataFormatError(
        f'{where} {object_id!r} holds a path separator; ids must be plain '
        f'folder names inside {category_dir}: fix the splits file.')
  _check_inside(category_dir, os.path.join(category_dir, object_id),
                f'{where} {object_id!r}')


def load_split(category_dir, split, resolution=None, max_objects=None,
               splits_file=None, allow_nonsquare_resize=False):
  """All objects of a split stacked in memory (small or procedural sets).

  Args as load_object, and as list_objects for the split.

  Returns:
    dict(images=(N, V, H, W, 3), c2w=(N, V, 4, 4), focal=(N,),
    object_id=list of N ids).
  """
  paths = list_objects(category_dir, split, splits_file)[:max_objects]
  objects = [load_object(p, resolution, allow_nonsquare_resize) for p in paths]
  _check_same_shapes(objects, paths)
  return {'images': np.stack([o['images'] for o in objects]),
          'c2w': np.stack([o['c2w'] for o in objects]),
          'focal': np.asarray([o['focal'] for o in objects], np.float32),
          'object_id': [os.path.basename(p) for p in paths]}


def _check_same_shapes(objects, paths):
  for obj, path in zip(objects[1:], paths[1:]):
    if obj['images'].shape != objects[0]['images'].shape:
      raise DataFormatError(
          f'{path} has images {obj["images"].shape} but {paths[0]} has '
          f'{objects[0]["images"].shape}; pass resolution= to resample, and '
          'give every object the same number of views.')


def index_split(category_dir, split, resolution=None, max_objects=None,
                splits_file=None, allow_nonsquare_resize=False):
  """Poses, focal lengths and image paths of a split, without decoding any image.

  For splits too large for memory (the released chairs: ~10 MB per object at
  128 px): `streamed_dataset` decodes the images of one object when it is drawn.

  Args as load_split; resolution None keeps the first object's stored size.

  Returns:
    dict(paths=(N, V) str array of PNG paths, c2w=(N, V, 4, 4) float32,
    focal=(N,) float32 in pixels at the returned size, size=(H, W) the images will
    be resampled to, object_id=list of N ids).
  """
  object_dirs = list_objects(category_dir, split, splits_file)[:max_objects]
  paths, poses, focal, size = [], [], [], None
  for object_dir in object_dirs:
    camera_angle_x, matrices, files = read_transforms(object_dir)
    if paths and len(files) != len(paths[0]):
      raise DataFormatError(
          f'{object_dir} has {len(files)} frames but {object_dirs[0]} has '
          f'{len(paths[0])}; every object of a split needs the same number of views.')
    try:  # Header only: the stored size sets the focal length in pixels.
      with Image.open(files[0]) as image:
        w, h = image.size
    except (OSError, SyntaxError, ValueError) as e:
      raise DataFormatError(f'cannot read image {files[0]} ({e}); the file is '
                            'corrupt: re-download or regenerate the object.') from e
    size = size or _target_size(resolution, h, w)
    _check_aspect(files[0], h, w, size, allow_nonsquare_resize)
    paths.append(files)
    poses.append(matrices)
    focal.append(0.5 * size[1] / np.tan(0.5 * camera_angle_x))
  return {'paths': np.asarray(paths), 'c2w': np.stack(poses).astype(np.float32),
          'focal': np.asarray(focal, np.float32), 'size': size,
          'object_id': [os.path.basename(p) for p in object_dirs]}


def _decode_object(paths, size):
  """A py_function body: PIL decodes as load_object, so errors name the file."""
  files = [path.decode() for path in paths.numpy()]
  return _resize(_read_views(files), size)


def streamed_dataset(index, seed):
  """Endless shuffled objects of an `index_split` index, images read from disk.

  Only object indices pass through the shuffle buffer; the images are decoded by
  the reader's own PIL path, so a PNG that fails to decode stops the stream with a
  message naming it. The decoder holds no state (it rereads files), so the
  iterator checkpoints (and resumes exactly) like the in-memory one.

  Elements: dict(images (V, H, W, 3) at index['size'], c2w (V, 4, 4), focal ()).
  """
  paths = tf.constant(index['paths'])
  c2w = tf.constant(index['c2w'])
  focal = tf.constant(index['focal'])
  shape = [index['paths'].shape[1], *index['size'], 3]

  def load(i):
    images = tf.py_function(lambda p: _decode_object(p, index['size']),
                            [tf.gather(paths, i)], tf.float32)
    return {'images': tf.ensure_shape(images, shape),
            'c2w': tf.gather(c2w, i), 'focal': tf.gather(focal, i)}

  n = len(index['paths'])
  options = tf.data.Options()
  # py_function counts as external state; it has none, so checkpoints may skip it.
  options.experimental_external_state_policy = (
      tf.data.experimental.ExternalStatePolicy.IGNORE)
  return (tf.data.Dataset.range(n).repeat().shuffle(n, seed=seed)
          .map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
          .with_options(options))
