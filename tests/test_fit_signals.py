"""tf-metainit-fit on CT sinograms and posed views: the fit improves what it measures,
writes its outputs, and refuses bad input with the fix."""

import json
import os

import numpy as np
import PIL.Image
import pytest
import tensorflow as tf

from tf_metainit import fit_ct
from tf_metainit import fit_views
from tf_metainit.data import phantoms
from tf_metainit.data import procedural_landmark
from tf_metainit.data import procedural_shapes
from tf_metainit.data import shapenet as shapenet_data
from tf_metainit.fields import mlp
from tf_metainit.meta import optimizers
from tf_metainit.physics import ct as ct_physics
from tf_metainit.tasks import ct
from tf_metainit.tasks import phototourism
from tf_metainit.tasks import shapenet
from tf_metainit import fitting
from tf_metainit import exports


def _export(task, tmp_path, name, optimizer):
  """An export of the task's Standard init, fitted with `optimizer`."""
  path = str(tmp_path / name)
  exports.export_params(task.field, task.field.params(), path, task=task,
                        manifest_extra={"test_time": {"optimizer": optimizer.describe()}})
  return exports.load_init(path)._replace(optimizer=optimizer)


@pytest.fixture(scope="module")
def ct_init(tmp_path_factory):
  task = ct.CTReconstruction(
      resolution=16, num_train=1, num_test=1,
      field=lambda: mlp.FourierMLP(num_features=16, width=32, depth=3, sigma=3.0))
  return _export(task, tmp_path_factory.mktemp("ct"), "init", optimizers.Adam(3e-3))


def _sinogram(tmp_path, views=8, bins=16):
  phantom = phantoms.phantom_arrays("test", 1, bins, 0)["image"][0]
  angles = np.linspace(0, np.pi, views, endpoint=False).astype(np.float32)
  sinogram = ct_physics.project(phantom.astype(np.float32), angles).numpy()
  np.save(tmp_path / "sino.npy", sinogram)
  np.save(tmp_path / "angles.npy", angles)
  return str(tmp_path / "sino.npy"), str(tmp_path / "angles.npy")


def test_sinogram_fit_raises_its_psnr_and_writes_the_image(ct_init, tmp_path):
  sino, angles = _sinogram(tmp_path)
  out = str(tmp_path / "out")
  result = fit_ct.fit(ct_init, sino, angles, out, num_steps=40)
  assert result["sinogram_psnr"][-1] > result["sinogram_psnr"][0] + 5
  assert np.asarray(__import__("PIL.Image").Image.open(
      os.path.join(out, "reconstruction.png"))).shape == (16, 16)
  assert json.load(open(os.path.join(out, fitting.RESULT)))["views"] == 8
  assert os.path.isfile(os.path.join(out, "export", exports.MANIFEST))


def test_a_sinogram_of_another_bin_count_reconstructs_at_its_own_size(ct_init,
                                                                       tmp_path):
  # The init is a 16-px one; the sinogram has 24 bins: the projector is built at 24.
  sino, angles = _sinogram(tmp_path, views=12, bins=24)
  out = str(tmp_path / "out")
  result = fit_ct.fit(ct_init, sino, angles, out, num_steps=60)
  assert result["resolution"] == 24
  assert result["sinogram_psnr"][-1] > result["sinogram_psnr"][0] + 5
  picture = np.asarray(__import__("PIL.Image").Image.open(
      os.path.join(out, "reconstruction.png")), np.float32) / 255
  assert picture.shape == (24, 24)
  # The picture is this phantom (a 60-step fit of 12 views: rough), not another one.
  truth, other = phantoms.phantom_arrays("test", 2, 24, 0)["image"]
  match = lambda image: np.corrcoef(picture.ravel(), image.ravel())[0, 1]
  assert match(truth) > 0.4 and match(truth) > match(other) + 0.1


@pytest.mark.parametrize("problem, message", [
    ("rows", "has 8 rows .* but --angles has 7"), ("bins", "at least 2 per view"),
    ("pickle", "plain numeric"), ("rank", r"expected \(views, detector bins\)")])
def test_bad_sinograms_are_refused_with_the_fix(ct_init, tmp_path, problem, message):
  sino, angles = _sinogram(tmp_path)
  if problem == "rows":
    np.save(angles, np.load(angles)[:7])
  elif problem == "bins":
    np.save(sino, np.load(sino)[:, :1])
  elif problem == "pickle":
    np.save(sino, np.array([object()]), allow_pickle=True)
  else:
    np.save(sino, np.load(sino)[None])
  with pytest.raises(ValueError, match=message):
    fit_ct.fit(ct_init, sino, angles, str(tmp_path / "out"), num_steps=1)


def test_shapenet_views_fit_scores_held_out_views(tmp_path):
  # Views of 24 px fitted from an init trained on 16-px ones: at their own size.
  folder = procedural_shapes.write_category(str(tmp_path / "data"), "chairs", 0, 0, 1,
                                            resolution=24, num_views=28, seed=0)
  task = shapenet.ShapeNetViews(
      data_dir=str(tmp_path / "data"), resolution=16, num_train=1, num_test=1,
      num_views=28, num_samples=16,
      field=lambda: mlp.NerfMLP(width=32, depth=3, num_frequencies=4))
  init = _export(task, tmp_path, "init", optimizers.Adam(5e-3))
  out = str(tmp_path / "out")
  result = fit_views.fit(init, os.path.join(folder, "test_0000"), out, num_steps=60)
  assert result["format"] == "shapenet" and result["fitted_views"] == 25
  assert result["scored"] == "held-out views 26+"
  assert result["psnr"][-1] > result["psnr"][0] + 2
  for name in ("views.png", "new_views.png", fitting.RESULT):
    assert os.path.isfile(os.path.join(out, name))
  # The fitted field renders views from TensorFlow alone; fitting it again needs an
  # optimizer, which a fit's export does not bake in.
  manifest = json.load(open(os.path.join(out, "export", exports.MANIFEST)))
  assert set(manifest["signatures"]) == {"render", "render_view"}
  # The reported PSNR is evaluation's: the mean of the held-out views' own PSNRs,
  # here rebuilt by hand from the export's renders.
  obj = shapenet_data.load_object(os.path.join(folder, "test_0000"))
  assert obj["images"].shape[1:3] == (24, 24)
  views = np.asarray(PIL.Image.open(os.path.join(out, "views.png")))
  assert views.shape[:2] == (2 * 24, 3 * 24)  # truth above renders, 3 held-out views
  model = tf.saved_model.load(os.path.join(out, "export"))
  per_view = []
  for k in range(25, 28):
    render = model.render_view(camera_to_world=tf.constant(obj["c2w"][k]),
                               focal=tf.constant(obj["focal"], tf.float32),
                               height=tf.constant(24), width=tf.constant(24))
    render = np.clip(render["rgb"].numpy(), 0, 1)
    per_view.append(-10 * np.log10(np.mean(np.square(render - obj["images"][k]))))
  assert result["psnr"][-1] == pytest.approx(np.mean(per_view), abs=0.02)


def test_phototourism_views_fit_one_photo_and_render_the_others(tmp_path):
  scene = procedural_landmark.write_landmark(str(tmp_path / "scene"), num_photos=6,
                                             long_side=16, seed=0)
  task = phototourism.Phototourism(
      scene_dir=str(tmp_path / "unused"), num_samples=16,
      field=lambda: mlp.NerfMLP(width=32, depth=3, num_frequencies=4))
  init = _export(task, tmp_path, "init", optimizers.Adam(5e-3))
  out = str(tmp_path / "out")
  result = fit_views.fit(init, scene, out, num_steps=60, photo=2)
  assert result["format"] == "phototourism" and result["fitted_photo"] == "0002.jpg"
  assert result["psnr"][-1] > result["psnr"][0] + 2
  written = sorted(os.listdir(out))
  assert "reconstruction.png" in written and "camera_of_0000.png" in written
  assert "camera_of_0002.png" not in written


def test_views_in_neither_format_and_wrong_kind_of_init(ct_init, tmp_path):
  with pytest.raises(ValueError, match="in neither format"):
    fit_views.fit(ct_init, str(tmp_path), str(tmp_path / "out"))
  folder = procedural_shapes.write_category(str(tmp_path / "data"), "chairs", 0, 0, 1,
                                            resolution=8, num_views=26, seed=0)
  with pytest.raises(ValueError, match="is a ct init. Give --sinogram"):
    fit_views.fit(ct_init, os.path.join(folder, "test_0000"), str(tmp_path / "out"))


@pytest.mark.slow  # over 35 s on 2 cores; run with --runslow
def test_a_fresh_process_rebuilds_every_shipped_field_type(tmp_path):
  import subprocess, sys  # pylint: disable=g-import-not-at-top,multiple-imports
  from tf_metainit import pretrained  # pylint: disable=g-import-not-at-top
  script = ("import sys; from tf_metainit import exports; "
            "print(exports.load(sys.argv[1])[0].describe()['type'])")
  for name in pretrained.list():
    out = subprocess.run([sys.executable, "-c", script, pretrained.path(name)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-1500:]
