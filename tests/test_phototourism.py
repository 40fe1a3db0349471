"""Phototourism reader and task: the reference's conventions checked by hand."""

import os

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from tf_metainit.data import phototourism as data
from tf_metainit.data.shapenet import DataFormatError
from tf_metainit.fields import mlp
from tf_metainit.physics import rays
from tf_metainit.physics import volume
from tf_metainit.tasks import nerf
from tf_metainit.tasks import phototourism


def _rotation(angle):
  c, s = np.cos(angle), np.sin(angle)
  return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def _write_scene(root, num_photos=30, sizes=((6, 8), (8, 6), (5, 7)), fmt="png"):
  """A scene of random photos with hand-made cameras; returns the raw arrays."""
  rng = np.random.default_rng(0)
  os.makedirs(os.path.join(root, "images"))
  c2w, kinv, bds = [], [], []
  for k in range(num_photos):
    height, width = sizes[k % len(sizes)]
    pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(os.path.join(root, "images", f"{k:04d}.{fmt}"))
    focal = 5.0 + k
    kinv.append([[1 / focal, 0, -width / (2 * focal)],
                 [0, -1 / focal, height / (2 * focal)], [0, 0, -1]])
    c2w.append(np.concatenate([_rotation(0.1 * k), [[k], [2.0], [40.0 + k]]], 1))
    bds.append([10.0 + k, 40.0 + 2 * k])
  arrays = {"c2w_mats.npy": np.array(c2w), "kinv_mats.npy": np.array(kinv),
            "bds.npy": np.array(bds)}
  for name, array in arrays.items():
    np.save(os.path.join(root, name), array)
  return arrays


def test_reader_scales_translations_and_bounds_and_splits_by_sorted_index(tmp_path):
  raw = _write_scene(str(tmp_path))
  test = data.read_split(str(tmp_path), "test")
  val = data.read_split(str(tmp_path), "val")
  train = data.read_split(str(tmp_path), "train")
  assert test["index"].tolist() == list(range(20))
  assert val["index"].tolist() == [20, 21, 22, 23, 24]
  assert train["index"].tolist() == [25, 26, 27, 28, 29]
  assert os.path.basename(train["paths"][0]) == "0025.png"
  # Photo 25: t = (25, 2, 65) -> 0.05 t; bds (35, 90) -> (0.9 * 35, 1.2 * 90) * 0.05.
  np.testing.assert_allclose(train["c2w"][0][:, 3], [1.25, 0.1, 3.25])
  np.testing.assert_allclose(train["bounds"][0], [1.575, 5.4])
  np.testing.assert_allclose(train["c2w"][0][:, :3], raw["c2w_mats.npy"][25][:, :3])
  np.testing.assert_array_equal(test["sizes"][:3], [[6, 8], [8, 6], [5, 7]])


def test_dense_images_folder_of_imc2020_is_found(tmp_path):
  _write_scene(str(tmp_path))
  os.makedirs(tmp_path / "dense")
  os.rename(tmp_path / "images", tmp_path / "dense" / "images")
  assert len(data.image_paths(str(tmp_path))) == 30


@pytest.mark.parametrize("problem, message", [
    ("rows", "one row per photo"), ("pickle", "plain numeric"),
    ("bounds", "0 < near < far"), ("shape", r"expected \(N, 3, 3\)"),
    ("few", "more than 25 photos"), ("reflection", "not a camera pose")])
def test_reader_refuses_bad_pose_files_with_the_fix(tmp_path, problem, message):
  raw = _write_scene(str(tmp_path), num_photos=25 if problem == "few" else 30)
  path = lambda name: os.path.join(str(tmp_path), name)
  if problem == "rows":
    np.save(path("bds.npy"), raw["bds.npy"][:-1])
  elif problem == "pickle":
    np.save(path("bds.npy"), np.array([object()] * 30), allow_pickle=True)
  elif problem == "bounds":
    bds = raw["bds.npy"].copy()
    bds[3] = [5.0, 5.0]
    np.save(path("bds.npy"), bds)
  elif problem == "shape":
    np.save(path("kinv_mats.npy"), raw["kinv_mats.npy"][:, :2])
  elif problem == "reflection":
    c2w = raw["c2w_mats.npy"].copy()
    c2w[4, :, 0] *= -1
    np.save(path("c2w_mats.npy"), c2w)
  with pytest.raises(DataFormatError, match=message):
    data.read_split(str(tmp_path), "train")


def test_missing_scene_and_empty_images_folder_name_the_fix(tmp_path):
  with pytest.raises(FileNotFoundError, match="does not exist"):
    data.image_paths(str(tmp_path / "nowhere"))
  os.makedirs(tmp_path / "images")
  with pytest.raises(FileNotFoundError, match="holds no photos"):
    data.image_paths(str(tmp_path))


def test_downsampled_photo_keeps_each_pixel_on_its_ray(tmp_path):
  path = str(tmp_path / "p.png")
  Image.fromarray(np.zeros((40, 60, 3), np.uint8)).save(path)
  kinv = np.array([[1 / 50, 0, -30 / 50], [0, -1 / 50, 20 / 50], [0, 0, -1]])
  image, scaled = data.read_photo(path, kinv, max_side=15)
  assert image.shape == (10, 15, 3)
  # Pixel (i', j') of the 4x smaller photo sits where pixel (4 i', 4 j') was.
  for i, j in ((0, 0), (7, 3), (14, 9)):
    np.testing.assert_allclose(scaled @ [i, j, 1], kinv @ [4 * i, 4 * j, 1])


def test_photo_signal_puts_left_half_then_right_half_in_padded_blocks():
  image = np.arange(3 * 5 * 3, dtype=np.float32).reshape(3, 5, 3)
  left_max, right_max = phototourism.halves_layout([[3, 5], [4, 4]])
  assert (left_max, right_max) == (8, 9)  # left 3*2 | 4*2, right 3*3 | 4*2.
  signal = phototourism.photo_signal(image, np.eye(3, 4), np.eye(3), [1, 2], 8, 9)
  assert signal["counts"].tolist() == [6, 9]
  # Left block: columns 0-1 row by row, then 2 empty slots; right: columns 2-4.
  assert signal["pixels"][:6].tolist() == [[0, 0], [1, 0], [0, 1], [1, 1], [0, 2],
                                           [1, 2]]
  np.testing.assert_array_equal(signal["colours"][1], image[0, 1])
  np.testing.assert_array_equal(signal["colours"][6:8], 0)
  assert signal["pixels"][8].tolist() == [2, 0]
  np.testing.assert_array_equal(signal["colours"][8 + 4], image[1, 3])


def _task(tmp_path, **kwargs):
  _write_scene(str(tmp_path))
  field = lambda: mlp.NerfMLP(width=8, depth=2, num_frequencies=2, seed=0)
  return phototourism.Phototourism(scene="mine", scene_dir=str(tmp_path), num_samples=8,
                                   field=field, **kwargs)


def test_task_rays_match_the_reference_projection(tmp_path):
  task = _task(tmp_path)
  signals = task.test_signals()
  origins, directions = phototourism.photo_rays(signals)
  k, (height, width) = 1, signals["size"][1]
  ref_o, ref_d = rays.rays_from_kinv(signals["c2w"][k], signals["kinv"][k], height,
                                     width)
  for slot in (0, 3, task.left_max + 5):
    i, j = signals["pixels"][k, slot].astype(int)
    np.testing.assert_allclose(directions[k, slot], ref_d[j, i], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(origins[k, slot], ref_o[j, i], rtol=1e-6)


def test_canvas_shows_the_photo_top_left_on_black(tmp_path):
  task = _task(tmp_path)
  signals = task.test_signals()
  shown = task.targets_for_display(signals)
  paths = data.read_split(str(tmp_path), "test")["paths"]
  assert shown.shape == (20, 8, 8, 3)
  photo = np.asarray(Image.open(paths[1]), np.float32) / 255
  np.testing.assert_allclose(shown[1, :8, :6], photo)
  np.testing.assert_array_equal(shown[0, 6:], 0)
  left = task.inputs_for_display(signals, "left")
  np.testing.assert_allclose(left[1, :, :3], photo[:, :3])
  np.testing.assert_array_equal(left[1, :, 3:], 0)


def test_left_setting_draws_left_half_pixels_only_and_training_draws_all(tmp_path):
  task = _task(tmp_path, rays_per_step=512)
  signals = task.test_signals()
  widths = signals["size"][:, 1]
  for setting, halves in (("left", {0}), (None, {0, 1})):
    obs = task.observe(signals, 0, setting)
    _, colours = task.inner_batch(obs, tf.constant(3), tf.constant([1, 2]))
    # Colours identify slots: match each drawn colour to its pixel column.
    seen = set()
    for b in (0, 1):
      table = {tuple(c): p for c, p in zip(signals["colours"][b], signals["pixels"][b])}
      for c in colours[b].numpy():
        column = table[tuple(c)][0]
        seen.add(int(column >= widths[b] // 2))
    assert seen == halves


def test_metric_is_psnr_over_the_real_right_half_pixels(tmp_path, monkeypatch):
  task = _task(tmp_path)
  signals = task.test_signals()
  # Right halves: 6x8 and 8x6 photos have 24 pixels, the 5x7 photo 20 + 4 padding.
  assert task.right_max == 24 and signals["counts"][2, 1] == 20
  fake = signals["colours"][:, task.left_max:] + 0.1  # MSE 0.01: 20 dB.
  fake[2, 20:] = 7.0  # Padding slots must not count.
  monkeypatch.setattr(task, "render_slots", lambda p, s, part: tf.constant(fake))
  psnr = task.metrics(None, signals)["psnr"].numpy()
  np.testing.assert_allclose(psnr[:3], 20.0, rtol=1e-4)


def test_opaque_last_interval_on_black_sums_weights_to_one():
  z = tf.linspace(1.0, 2.0, 8)[None]
  sigma = tf.fill([1, 8], 0.5)
  out = volume.volume_render(tf.fill([1, 8, 3], 0.3), sigma, z,
                             last_delta=volume.PHOTOTOURISM_LAST_DELTA,
                             white_background=False)
  # Closed form: w_i = exp(-0.5 (z_i - 1)) (1 - exp(-0.5 dz)), last w = exp(-0.5).
  dz = 1.0 / 7
  expected = [np.exp(-0.5 * k * dz) * (1 - np.exp(-0.5 * dz)) for k in range(7)]
  expected.append(np.exp(-0.5))
  np.testing.assert_allclose(out["weights"][0], expected, rtol=1e-5)
  np.testing.assert_allclose(out["acc"][0], 1.0, rtol=1e-6)
  np.testing.assert_allclose(out["rgb"][0], [0.3] * 3, rtol=1e-5)
  empty = volume.volume_render(tf.fill([1, 8, 3], 0.3), tf.zeros([1, 8]), z,
                               last_delta=volume.PHOTOTOURISM_LAST_DELTA,
                               white_background=False)
  np.testing.assert_array_equal(empty["rgb"][0], [0.0, 0.0, 0.0])


def test_renderer_bounds_are_per_signal():
  field = mlp.NerfMLP(width=8, depth=2, num_frequencies=2, seed=0)
  renderer = nerf.Renderer(field, 16, volume.PHOTOTOURISM_LAST_DELTA, False, 64)
  params = [tf.stack([p, p]) for p in field.params()]
  origins = tf.zeros([2, 5, 3])
  directions = tf.tile(tf.constant([[[0.1, 0.2, -1.0]]]), [2, 5, 1])
  both = renderer.render_rays(params, origins, directions, tf.constant([1.0, 2.0]),
                              tf.constant([3.0, 5.0]))
  alone = renderer.render_rays([p[1:] for p in params], origins[1:], directions[1:], 2.0, 5.0)
  np.testing.assert_allclose(both[1], alone[0], rtol=1e-5)
  assert not np.allclose(both[0], both[1])


def test_procedural_landmark_round_trips_through_the_reader(tmp_path):
  from tf_metainit.data import procedural_landmark  # pylint: disable=g-import-not-at-top
  procedural_landmark.write_landmark(str(tmp_path), num_photos=27, long_side=24, seed=3)
  val = data.read_split(str(tmp_path), "val")
  photo = procedural_landmark.generate_photo(22, long_side=24, seed=3)
  k = list(val["index"]).index(22)
  image, kinv = data.read_photo(val["paths"][k], val["kinv"][k])
  assert image.shape == photo["image"].shape
  assert np.abs(image - photo["image"] / 255.0).mean() < 0.03  # JPEG loss only.
  np.testing.assert_allclose(kinv, photo["kinv"])
  np.testing.assert_allclose(val["c2w"][k][:, 3], 0.05 * photo["c2w"][:3, 3])
  np.testing.assert_allclose(val["bounds"][k], photo["bounds"] * [0.9, 1.2] * 0.05)


def test_true_view_of_a_photos_own_camera_is_that_photo_without_people(tmp_path):
  field = lambda: mlp.NerfMLP(width=8, depth=2, num_frequencies=2, seed=0)
  task = phototourism.Phototourism(scene_dir=str(tmp_path), num_photos=27, long_side=24,
                                   num_test=4, num_samples=8, field=field, seed=3)
  signals = task.test_signals()
  shown = task.targets_for_display(signals)
  for k in range(4):
    height, width = signals["size"][k]
    truth = task.true_view(k, k)
    assert truth.shape == (height, width, 3)
    # Equal up to JPEG loss where no person stands.
    assert np.median(np.abs(truth - shown[k, :height, :width])) < 0.03
  assert np.abs(task.true_view(0, 1) - task.true_view(1, 1)).mean() > 0.01


def test_streamed_photos_match_in_memory_and_resume_from_a_checkpoint(tmp_path):
  memory = _task(tmp_path, in_memory=True)
  disk = _task(tmp_path / "again", in_memory=False)
  first = [e for _, e in zip(range(4), memory.train_dataset(seed=3))]
  iterator = iter(disk.train_dataset(seed=3))
  streamed = [next(iterator) for _ in range(2)]
  checkpoint = tf.train.Checkpoint(iterator=iterator)
  path = checkpoint.save(str(tmp_path / "ckpt"))
  streamed += [next(iterator) for _ in range(2)]
  for a, b in zip(first, streamed):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])
  checkpoint.restore(path)
  np.testing.assert_array_equal(next(iterator)["colours"], streamed[2]["colours"])
