"""ShapeNet reader on hand-written files, and the procedural generator."""

import json
import logging
import math
import os

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from tf_metainit.data import procedural_shapes
from tf_metainit.data import shapenet
from tf_metainit.physics import rays

# A 2x2 RGBA image: opaque red, transparent blue, half green, 20% grey-blue.
PIXELS = np.array([[[255, 0, 0, 255], [0, 0, 255, 0]],
                   [[0, 255, 0, 128], [51, 102, 204, 51]]], np.uint8)
# rgb * a + (1 - a), worked by hand.
COMPOSITED = np.array([[[1.0, 0.0, 0.0], [1.0, 1.0, 1.0]],
                       [[127 / 255, 1.0, 127 / 255],
                        [0.84, 0.88, 0.96]]])
MATRIX = [[0.0, -1.0, 0.0, 1.0], [1.0, 0.0, 0.0, 2.0], [0.0, 0.0, 1.0, 3.0],
          [0.0, 0.0, 0.0, 1.0]]


def _write_object(object_dir, num_views=4, pixels=PIXELS, shift=0):
  """Frames k < 2 show PIXELS, others a tinted copy; mixed path styles.

  shift tells objects apart: it offsets the camera height and the green channel.
  """
  os.makedirs(os.path.join(object_dir), exist_ok=True)
  styles = ['./r_{}', 'r_{}.png', './train/r_{}', 'r_{}']
  frames = []
  for k in range(num_views):
    image = pixels.copy()
    image[..., 0] = k * 10 if k >= 2 else image[..., 0]
    image[..., 1] += shift
    Image.fromarray(image, 'RGBA').save(os.path.join(object_dir, f'r_{k}.png'))
    matrix = np.array(MATRIX)
    matrix[0, 3] += k
    matrix[1, 3] += shift
    frames.append({'file_path': styles[k % 4].format(k),
                   'transform_matrix': matrix.tolist()})
  # camera_angle_x = pi/2 gives focal = 0.5 W / tan(pi/4) = W/2.
  with open(os.path.join(object_dir, 'transforms.json'), 'w') as f:
    json.dump({'camera_angle_x': math.pi / 2, 'frames': frames}, f)


def _write_category(root, ids=('b', 'a', 'c'), splits=None):
  category = os.path.join(root, 'chairs')
  for object_id in ids:
    _write_object(os.path.join(category, object_id))
  splits = splits or {'train': ['b', 'a'], 'val': ['c'], 'test': []}
  with open(os.path.join(category, 'chairs_splits.json'), 'w') as f:
    json.dump(splits, f)
  return category


def test_load_object_composites_on_white_and_reads_poses(tmp_path):
  _write_object(str(tmp_path))
  obj = shapenet.load_object(str(tmp_path))
  assert obj['images'].shape == (4, 2, 2, 3)
  assert obj['images'].dtype == np.float32
  np.testing.assert_allclose(obj['images'][0], COMPOSITED, atol=1e-6)
  np.testing.assert_allclose(obj['images'][1], COMPOSITED, atol=1e-6)
  np.testing.assert_allclose(obj['c2w'][0], MATRIX)
  np.testing.assert_allclose(obj['c2w'][3, 0, 3], 4.0)  # Frame order kept.
  assert obj['focal'] == pytest.approx(1.0)


def test_downsampling_averages_blocks_and_rescales_focal(tmp_path):
  big = np.repeat(np.repeat(PIXELS, 2, axis=0), 2, axis=1)  # 4x4 blocks.
  _write_object(str(tmp_path), num_views=1, pixels=big)
  full = shapenet.load_object(str(tmp_path))
  assert full['focal'] == pytest.approx(2.0)
  half = shapenet.load_object(str(tmp_path), resolution=2)
  assert half['images'].shape == (1, 2, 2, 3)
  np.testing.assert_allclose(half['images'][0], COMPOSITED, atol=1e-6)
  assert half['focal'] == pytest.approx(1.0)


def test_list_objects_dataset_and_empty_folder_warning(tmp_path, caplog):
  category = _write_category(str(tmp_path), ids=('b', 'a', 'c', 'empty'))
  os.remove(os.path.join(category, 'empty', 'transforms.json'))
  with open(os.path.join(category, 'chairs_splits.json'), 'w') as f:
    json.dump({'train': ['b', 'empty', 'a'], 'val': ['c'], 'test': []}, f)
  with caplog.at_level(logging.WARNING):
    paths = shapenet.list_objects(category, 'train')
  assert [os.path.basename(p) for p in paths] == ['a', 'b']  # Sorted.
  assert 'empty' in caplog.text
  index = shapenet.index_split(category, 'train')
  assert index['object_id'] == ['a', 'b'] and index['paths'].shape == (2, 4)
  assert index['focal'] == pytest.approx([1.0, 1.0])  # W/2 at the stored 2 px.
  stacked = shapenet.load_split(category, 'val')
  assert stacked['images'].shape == (1, 4, 2, 2, 3)


@pytest.mark.parametrize('resolution', [None, 1])
def test_streamed_objects_equal_the_in_memory_ones(tmp_path, resolution):
  category = _write_category(str(tmp_path))
  _write_object(os.path.join(category, 'b'), shift=7)
  stacked = shapenet.load_split(category, 'train', resolution)
  index = shapenet.index_split(category, 'train', resolution)
  np.testing.assert_allclose(index['focal'], stacked['focal'])
  np.testing.assert_array_equal(index['c2w'], stacked['c2w'])
  stream = iter(shapenet.streamed_dataset(index, seed=5))
  for _ in range(4):  # Two epochs: every object, as load_split decodes it.
    obj = next(stream)
    row = [k for k in range(2)
           if np.array_equal(obj['c2w'].numpy(), stacked['c2w'][k])]
    assert len(row) == 1
    np.testing.assert_allclose(obj['images'], stacked['images'][row[0]], atol=1e-6)
    assert float(obj['focal']) == pytest.approx(stacked['focal'][row[0]])
  if resolution == 1:  # The 2x2 -> 1x1 area mean of frame 0, by hand.
    np.testing.assert_allclose(stacked['images'][0, 0, 0, 0],
                               COMPOSITED.mean(axis=(0, 1)), atol=1e-6)


def test_streamed_iterator_resumes_from_a_checkpoint(tmp_path):
  category = _write_category(str(tmp_path), ids=('a', 'b', 'c'),
                             splits={'train': ['a', 'b', 'c'], 'val': [], 'test': []})
  for shift, object_id in enumerate('abc'):
    _write_object(os.path.join(category, object_id), shift=shift)
  index = shapenet.index_split(category, 'train')
  iterator = iter(shapenet.streamed_dataset(index, seed=1))
  for _ in range(2):
    next(iterator)
  ckpt = tf.train.Checkpoint(iterator=iterator)
  path = ckpt.save(os.path.join(str(tmp_path), 'ckpt'))
  ahead = [next(iterator)['c2w'][0, 1, 3].numpy() for _ in range(5)]
  ckpt.restore(path)
  again = [next(iterator)['c2w'][0, 1, 3].numpy() for _ in range(5)]
  assert ahead == again and len(set(ahead)) == 3  # Objects differ: resumed exactly.


def test_streamed_index_rejects_mismatched_view_counts(tmp_path):
  category = _write_category(str(tmp_path))
  _write_object(os.path.join(category, 'b'), num_views=3)
  os.remove(os.path.join(category, 'b', 'r_3.png'))
  with pytest.raises(shapenet.DataFormatError, match='same number of views'):
    shapenet.index_split(category, 'train')


def test_splits_file_beside_category_with_singular_name(tmp_path):
  category = _write_category(str(tmp_path))
  os.rename(os.path.join(category, 'chairs_splits.json'),
            os.path.join(str(tmp_path), 'chair_splits.json'))
  assert len(shapenet.list_objects(category, 'train')) == 2


def test_clear_errors(tmp_path):
  root = str(tmp_path)
  with pytest.raises(FileNotFoundError, match='category folder .* does not'):
    shapenet.list_objects(os.path.join(root, 'nowhere'), 'train')
  category = _write_category(root)
  with pytest.raises(shapenet.DataFormatError, match="no split 'training'"):
    shapenet.list_objects(category, 'training')
  with open(os.path.join(category, 'chairs_splits.json'), 'w') as f:
    json.dump({'train': ['a', 'ghost'], 'val': [], 'test': []}, f)
  with pytest.raises(FileNotFoundError, match=r"ghost.*splits file belongs"):
    shapenet.list_objects(category, 'train')
  with open(os.path.join(category, 'chairs_splits.json'), 'w') as f:
    f.write('{"train": [')
  with pytest.raises(shapenet.DataFormatError, match='not valid JSON'):
    shapenet.list_objects(category, 'train')
  os.remove(os.path.join(category, 'chairs_splits.json'))
  with pytest.raises(FileNotFoundError, match='no splits file'):
    shapenet.list_objects(category, 'train')
  with open(os.path.join(category, 'a', 'r_1.png'), 'wb') as f:
    f.write(b'\x89PNG\r\n\x1a\nnot really')
  with pytest.raises(shapenet.DataFormatError, match=r'r_1\.png.*corrupt'):
    shapenet.load_object(os.path.join(category, 'a'))
  os.remove(os.path.join(category, 'b', 'r_0.png'))
  with pytest.raises(FileNotFoundError, match='no image for frame'):
    shapenet.load_object(os.path.join(category, 'b'))
  with open(os.path.join(category, 'c', 'transforms.json'), 'w') as f:
    f.write('{"camera_angle_x": 0.5, "frames": [{"file_path": "r_0"}]}')
  with pytest.raises(shapenet.DataFormatError, match='transform_matrix'):
    shapenet.load_object(os.path.join(category, 'c'))


def _set_frame(object_dir, index, **fields):
  path = os.path.join(object_dir, 'transforms.json')
  with open(path) as f:
    meta = json.load(f)
  meta['frames'][index].update(fields)
  with open(path, 'w') as f:
    json.dump(meta, f)


@pytest.mark.parametrize('file_path', ['../b/r_1', '../b/r_1.png', 'ABS'])
def test_frame_paths_outside_the_object_are_refused(tmp_path, file_path):
  category = _write_category(str(tmp_path))
  object_a = os.path.join(category, 'a')
  if file_path == 'ABS':
    file_path = os.path.join(category, 'b', 'r_1.png')
  os.remove(os.path.join(object_a, 'r_1.png'))  # Only the outside file exists.
  _set_frame(object_a, 1, file_path=file_path)
  with pytest.raises(shapenet.DataFormatError) as error:
    shapenet.load_object(object_a)
  message = str(error.value)
  assert 'frame 1 of' in message and 'transforms.json' in message
  assert repr(file_path) in message and 'must stay inside' in message


def test_frame_link_pointing_out_of_the_object_is_refused(tmp_path):
  category = _write_category(str(tmp_path))
  object_a = os.path.join(category, 'a')
  outside = os.path.join(str(tmp_path), 'elsewhere.png')
  os.rename(os.path.join(object_a, 'r_2.png'), outside)
  os.symlink(outside, os.path.join(object_a, 'r_2.png'))
  with pytest.raises(shapenet.DataFormatError, match=r"frame 2 .*'\./train/r_2'"):
    shapenet.read_transforms(object_a)


@pytest.mark.parametrize('object_id', ['../outside', '..', '.', 'ABS', 'a/b'])
def test_object_ids_outside_the_category_are_refused(tmp_path, object_id):
  category = _write_category(str(tmp_path))
  _write_object(os.path.join(str(tmp_path), 'outside'))
  _write_object(os.path.join(category, 'a', 'b'))
  if object_id == 'ABS':
    object_id = os.path.join(str(tmp_path), 'outside')
  with open(os.path.join(category, 'chairs_splits.json'), 'w') as f:
    json.dump({'train': ['a', object_id], 'val': [], 'test': []}, f)
  with pytest.raises(shapenet.DataFormatError) as error:
    shapenet.list_objects(category, 'train')
  message = str(error.value)
  assert 'chairs_splits.json' in message and repr(object_id) in message
  assert 'splits file' in message or 'must stay inside' in message


def _bad_poses():
  good = np.array(MATRIX)
  nan, inf, scaled, flipped, sheared, row, zero = (good.copy() for _ in range(7))
  nan[1, 2] = np.nan
  inf[0, 3] = np.inf
  scaled[:3, :3] *= 2.0
  flipped[:3, 0] *= -1.0  # Orthonormal but a reflection.
  sheared[0, 2] = 0.01
  row[3] = [0.0, 0.0, 1.0, 1.0]
  zero[:3, :3] = 0.0
  return {'nan': nan, 'inf': inf, 'scaled': scaled, 'reflection': flipped,
          'sheared': sheared, 'last row': row, 'degenerate': zero}


@pytest.mark.parametrize('name', sorted(_bad_poses()))
def test_poses_must_be_finite_rigid_transforms(tmp_path, name):
  _write_object(str(tmp_path))
  _set_frame(str(tmp_path), 2, transform_matrix=_bad_poses()[name].tolist())
  with pytest.raises(shapenet.DataFormatError,
                     match=r'frame 2 of .*transforms\.json.*not a camera pose'):
    shapenet.read_transforms(str(tmp_path))


def test_poses_rounded_to_float32_still_load(tmp_path):
  """Blender writes float32 poses: rotations to ~1e-7, which must still load."""
  _write_object(str(tmp_path))
  angle = 0.3
  rotation = np.array([[np.cos(angle), -np.sin(angle), 0.0],
                       [np.sin(angle), np.cos(angle), 0.0], [0.0, 0.0, 1.0]])
  matrix = np.eye(4)
  matrix[:3, :3], matrix[:3, 3] = rotation, [1.0, -2.0, 3.5]
  rounded = np.round(matrix.astype(np.float32).astype(np.float64), 6)
  _set_frame(str(tmp_path), 0, transform_matrix=rounded[:3].tolist())  # 3x4.
  _, poses, _ = shapenet.read_transforms(str(tmp_path))
  np.testing.assert_allclose(poses[0], rounded)


WIDE = np.repeat(PIXELS, 2, axis=1)  # 2x4 (HxW) RGBA views.


@pytest.mark.parametrize('reader', ['load_split', 'index_split'])
def test_squashing_nonsquare_views_needs_an_explicit_opt_in(tmp_path, reader):
  category = _write_category(str(tmp_path))
  _write_object(os.path.join(category, 'b'), pixels=WIDE)
  read = getattr(shapenet, reader)
  with pytest.raises(shapenet.DataFormatError) as error:
    read(category, 'train', resolution=2)
  message = str(error.value)
  assert os.path.join(category, 'b', 'r_0.png') in message
  assert '2x4 (HxW)' in message and 'allow_nonsquare_resize=True' in message
  # Asked for, the views are squashed to the square resolution.
  data = read(category, 'train', resolution=2, allow_nonsquare_resize=True)
  assert data['object_id'] == ['a', 'b']
  if reader == 'load_split':
    assert data['images'].shape == (2, 4, 2, 2, 3)
  else:
    assert data['size'] == (2, 2)


def test_nonsquare_views_load_unchanged_at_their_own_aspect(tmp_path):
  _write_object(str(tmp_path), pixels=WIDE)
  assert shapenet.load_object(str(tmp_path))['images'].shape == (4, 2, 4, 3)
  half = shapenet.load_object(str(tmp_path), resolution=(1, 2))
  assert half['images'].shape == (4, 1, 2, 3)
  assert half['focal'] == pytest.approx(1.0)  # W/2 at the returned 2 px width.


def test_area_downsampling_keeps_white_at_one(tmp_path):
  white = np.full((128, 128, 4), 255, np.uint8)
  _write_object(str(tmp_path), num_views=1, pixels=white)
  # 128 -> 89 px area resampling gives 1.00001 in float32 before clipping.
  assert shapenet.load_object(str(tmp_path), resolution=89)['images'].max() == 1.0


def _stream_error(category, corrupt):
  index = shapenet.index_split(category, 'train')
  path = os.path.join(category, 'a', 'r_3.png')
  with open(path, 'rb') as f:
    data = f.read()
  with open(path, 'wb') as f:
    f.write(corrupt(data))
  stream = iter(shapenet.streamed_dataset(index, seed=0))
  with pytest.raises(tf.errors.OpError) as error:
    for _ in range(2):  # Both objects: one of them is 'a'.
      next(stream)
  return path, str(error.value)


@pytest.mark.parametrize('corrupt', ['truncated', 'garbage'])
def test_stream_decode_errors_name_the_file(tmp_path, corrupt):
  category = _write_category(str(tmp_path))
  damage = {'truncated': lambda data: data[:len(data) // 2],
            'garbage': lambda data: data[:8] + b'not really a png'}[corrupt]
  path, message = _stream_error(category, damage)
  assert path in message and 're-download or regenerate' in message


# ----------------------------------------------------------------------------
# Procedural stand-in.

SMALL = dict(num_train=2, num_val=1, num_test=1, resolution=16, num_views=4)


def _png_bytes(category_dir):
  out = {}
  for root, _, files in os.walk(category_dir):
    for name in files:
      if name.endswith('.png'):
        path = os.path.join(root, name)
        with open(path, 'rb') as f:
          out[os.path.relpath(path, category_dir)] = f.read()
  return out


def test_generator_is_deterministic_idempotent_and_disjoint(tmp_path):
  first = procedural_shapes.write_category(str(tmp_path / 'a'), 'cars', **SMALL)
  second = procedural_shapes.write_category(str(tmp_path / 'b'), 'cars',
                                            **SMALL)
  files = _png_bytes(first)
  assert len(files) == 4 * 4 and files == _png_bytes(second)
  with open(os.path.join(first, 'cars_splits.json')) as f:
    splits = json.load(f)
  ids = [i for s in shapenet.SPLITS for i in splits[s]]
  assert len(ids) == len(set(ids)) == 4
  # Splits come from different seed streams: different shapes and views.
  images = {i: files[os.path.join(i, 'r_0.png')] for i in ids}
  assert len(set(images.values())) == 4
  # Idempotent: a second call keeps the finished objects untouched.
  stamp = os.path.getmtime(os.path.join(first, ids[0], 'transforms.json'))
  procedural_shapes.write_category(str(tmp_path / 'a'), 'cars', **SMALL)
  assert os.path.getmtime(
      os.path.join(first, ids[0], 'transforms.json')) == stamp
  with pytest.raises(ValueError, match='generated with'):
    procedural_shapes.write_category(str(tmp_path / 'a'), 'cars',
                                     **dict(SMALL, resolution=8))
  # A different seed gives different objects.
  other = procedural_shapes.write_category(str(tmp_path / 'c'), 'cars',
                                           **dict(SMALL, seed=1))
  assert _png_bytes(other) != files


def test_interrupted_generation_leaves_no_object(tmp_path, monkeypatch):
  category = os.path.join(str(tmp_path), 'lamps')
  os.makedirs(os.path.join(category, '.tmp_train_0000_999999999'))

  def crash(*unused_args):
    raise RuntimeError("interrupted")

  monkeypatch.setattr(procedural_shapes, '_write_object', crash)
  with pytest.raises(RuntimeError, match="interrupted"):
    procedural_shapes.write_category(str(tmp_path), 'lamps', **SMALL)
  assert not any(n.startswith('train_') for n in os.listdir(category))
  assert not os.path.exists(os.path.join(category, 'lamps_splits.json'))
  monkeypatch.undo()
  procedural_shapes.write_category(str(tmp_path), 'lamps', **SMALL)
  # Stale temporaries of dead writers are cleaned up on the next run.
  assert not any(n.startswith('.tmp_') for n in os.listdir(category))
  assert len(shapenet.list_objects(category, 'train')) == 2


def test_round_trip_through_reader(tmp_path):
  category = procedural_shapes.write_category(str(tmp_path), 'chairs', **SMALL)
  data = shapenet.load_split(category, 'train')
  assert data['images'].shape == (2, 4, 16, 16, 3)
  assert data['object_id'] == ['train_0000', 'train_0001']
  np.testing.assert_allclose(data['focal'],
                             procedural_shapes.focal_length(16), rtol=1e-6)
  assert procedural_shapes.focal_length(128) == pytest.approx(177.78, abs=0.01)
  expected = procedural_shapes.generate_object('chairs', 'train', 1,
                                               resolution=16, num_views=4)
  np.testing.assert_allclose(data['c2w'][1], expected['c2w'], atol=1e-6)
  alpha = expected['rgba'][..., 3:] / 255.0
  white = expected['rgba'][..., :3] / 255.0 * alpha + 1 - alpha
  np.testing.assert_allclose(data['images'][1], white, atol=1e-6)
  # Cameras sit at radius 4.031 on the upper hemisphere facing the origin.
  centres = data['c2w'][..., :3, 3]
  np.testing.assert_allclose(np.linalg.norm(centres, axis=-1), 4.031,
                             rtol=1e-6)
  assert np.all(centres[..., 2] >= 0)
  forward = -data['c2w'][..., :3, 2]
  np.testing.assert_allclose(forward, -centres / 4.031, atol=1e-6)


def _silhouette(parts, c2w, focal, size, pixel_offset=0.0):
  """Hit mask of TF camera_rays re-intersected with the object's primitives."""
  origins, directions = rays.camera_rays(tf.constant(c2w, tf.float64),
                                         focal, size, size)
  if pixel_offset:
    # What a +0.5 pixel-centre convention would have produced instead.
    shift = np.array([pixel_offset / focal, -pixel_offset / focal, 0.0])
    directions = directions + tf.einsum('vab,b->va', c2w[:, :3, :3],
                                        shift)[:, None, None]
  o = origins.numpy().reshape(-1, 3)
  d = directions.numpy().reshape(-1, 3)
  t, _, _ = procedural_shapes.intersect(parts, o, d)
  return np.isfinite(t).reshape(len(c2w), size, size)


@pytest.mark.parametrize('category', procedural_shapes.CATEGORIES)
def test_png_silhouette_matches_camera_rays(tmp_path, category):
  size = 32
  category_dir = procedural_shapes.write_category(
      str(tmp_path), category, 1, 0, 0, resolution=size, num_views=6)
  object_dir = os.path.join(category_dir, 'train_0000')
  with open(os.path.join(object_dir, 'transforms.json')) as f:
    meta = json.load(f)
  c2w = np.array([fr['transform_matrix'] for fr in meta['frames']])
  focal = 0.5 * size / np.tan(0.5 * meta['camera_angle_x'])
  alpha = np.stack([
      np.asarray(Image.open(os.path.join(object_dir, f'r_{k}.png')))[..., 3]
      for k in range(6)]) > 127
  parts = procedural_shapes.make_object(
      category, procedural_shapes.object_rng(category, 'train', 0))
  np.testing.assert_array_equal(_silhouette(parts, c2w, focal, size), alpha)
  # The check has teeth: half-pixel-centred rays change the silhouette.
  shifted = _silhouette(parts, c2w, focal, size, pixel_offset=0.5)
  assert np.sum(shifted != alpha) > 6


@pytest.mark.parametrize('category', procedural_shapes.CATEGORIES)
def test_objects_are_non_empty_and_inside_the_image(category):
  for index in range(4):
    obj = procedural_shapes.generate_object(category, 'val', index,
                                            resolution=24, num_views=50)
    alpha = obj['rgba'][..., 3] > 0
    coverage = alpha.mean(axis=(1, 2))
    assert np.all(coverage > 0.01), coverage.min()
    border = np.concatenate([alpha[:, 0], alpha[:, -1], alpha[:, :, 0],
                             alpha[:, :, -1]], axis=1)
    assert not border.any()
    # Transparent pixels carry no colour; hit pixels are shaded, not black.
    assert np.all(obj['rgba'][~alpha][:, :3] == 0)
    assert obj['rgba'][alpha][:, :3].max() > 0
