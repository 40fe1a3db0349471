"""CT `reconstruct`, ShapeNet `render_view` / `adapt` and the image `adapt` input
checks, called from TensorFlow alone in a fresh process against the in-package results.

Tiny fields (width 16), 8-16 px signals and few steps. One subprocess, with tf_metainit,
gin and keras unimportable, runs every signature while the in-package references are
computed: the SavedModel must reproduce the task's own evaluation path (the same
observation, the same fitted weights) to float tolerance.
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from tf_metainit.data import procedural_shapes
from tf_metainit.fields import functional
from tf_metainit.fields import mlp
from tf_metainit.fields import siren
from tf_metainit.meta import optimizers
from tf_metainit.tasks import contract
from tf_metainit.tasks import ct
from tf_metainit.tasks import image
from tf_metainit.tasks import shapenet
from tf_metainit import exports
from tf_metainit import testtime

CT_RES, CT_VIEWS, CT_STEPS = 16, 4, 20
NERF_RES, NERF_VIEWS, NERF_STEPS = 8, 3, 30
# SGD: Adam's normalised steps would grow the two graphs' float round-off (1e-7
# after one step) to 2e-3 in 30 steps.
CT_OPTIMIZER, NERF_OPTIMIZER = optimizers.SGD(10.0), optimizers.SGD(1.0)

FRESH = textwrap.dedent("""
    import json
    import sys
    for blocked in ("tf_metainit", "gin", "keras"):
      sys.modules[blocked] = None
    import numpy as np
    import tensorflow as tf

    ct_dir, nerf_dir, image_dir, inputs, outputs = sys.argv[1:]
    d = {k: tf.constant(v) for k, v in np.load(inputs).items()}
    reconstruct = tf.saved_model.load(ct_dir).signatures["reconstruct"]
    nerf = tf.saved_model.load(nerf_dir).signatures
    image_adapt = tf.saved_model.load(image_dir).signatures["adapt"]
    one, three = tf.constant(1), tf.constant(3)

    def message(fn, **kwargs):
      try:
        fn(**kwargs)
      except tf.errors.InvalidArgumentError as e:
        lines = e.message.splitlines()
        return next((line for line in lines if "assertion" in line), e.message)
      return ""

    ct = reconstruct(sinogram=d["sinogram"], angles=d["angles"],
                     num_steps=tf.constant(int(d["ct_steps"])))
    view = nerf["render_view"](camera_to_world=d["cameras"][0], focal=d["focal"],
                               height=tf.constant(8), width=tf.constant(8))
    wide = nerf["render_view"](camera_to_world=d["cameras"][1, :3], focal=d["focal"],
                               height=tf.constant(6), width=tf.constant(10))
    fitted = nerf["adapt"](images=d["views"], cameras=d["cameras"], focal=d["focal"],
                           num_steps=tf.constant(int(d["nerf_steps"])))
    # Good calls before the bad ones: the checks must hold after the runtime has
    # seen a good call (it once specialised a reduction to the first call's rank).
    image_adapt(image=d["picture"], num_steps=one)
    sino, angles = d["sinogram"], d["angles"]
    views, cameras, focal = d["views"], d["cameras"], d["focal"]
    rgb = d["picture"]
    rgba = lambda x: tf.concat([x, x[..., :1]], -1)
    errors = {
        "ct_rank": message(reconstruct, sinogram=sino[0], angles=angles, num_steps=one),
        "ct_rows": message(reconstruct, sinogram=sino, angles=angles[:3],
                           num_steps=one),
        "ct_bins": message(reconstruct, sinogram=sino[:, :8], angles=angles,
                           num_steps=one),
        "ct_nan": message(reconstruct, sinogram=sino * np.nan, angles=angles,
                          num_steps=one),
        "ct_steps": message(reconstruct, sinogram=sino, angles=angles,
                            num_steps=tf.constant(-3)),
        "view_rank": message(nerf["render_view"], camera_to_world=cameras,
                             focal=focal, height=three, width=three),
        "view_focal": message(nerf["render_view"], camera_to_world=cameras[0],
                              focal=-focal, height=three, width=three),
        "nerf_rank": message(nerf["adapt"], images=views[0], cameras=cameras,
                             focal=focal, num_steps=one),
        "nerf_rgba": message(nerf["adapt"], images=rgba(views), cameras=cameras,
                             focal=focal, num_steps=one),
        "nerf_count": message(nerf["adapt"], images=views[:2], cameras=cameras,
                              focal=focal, num_steps=one),
        "nerf_bytes": message(nerf["adapt"], images=views * 255, cameras=cameras,
                              focal=focal, num_steps=one),
        "nerf_steps": message(nerf["adapt"], images=views, cameras=cameras,
                              focal=focal, num_steps=tf.constant(-3)),
        "image_gray": message(image_adapt, image=rgb[..., :1], num_steps=one),
        "image_rgba": message(image_adapt, image=rgba(rgb), num_steps=one),
        "image_batch": message(image_adapt, image=rgb[None], num_steps=one),
        "image_bytes": message(image_adapt, image=rgb * 255, num_steps=one),
        "image_steps": message(image_adapt, image=rgb, num_steps=tf.constant(-3)),
    }
    np.savez(outputs, **{"ct_" + k: v.numpy() for k, v in ct.items()},
             **{"view_" + k: v.numpy() for k, v in view.items()},
             **{"wide_" + k: v.numpy() for k, v in wide.items()},
             **{"nerf_" + k: v.numpy() for k, v in fitted.items()})
    print(json.dumps(errors))
""")


def _ct_task():
  field = lambda: mlp.FourierMLP(width=16, depth=2, num_features=8, sigma=5.0, seed=0)
  return ct.CTReconstruction(resolution=CT_RES, num_train=1, num_test=1, field=field)


def _nerf_task(data_dir):
  field = lambda: mlp.NerfMLP(width=16, depth=2, num_frequencies=3, seed=0)
  return shapenet.ShapeNetViews(data_dir=data_dir, resolution=NERF_RES, num_samples=6,
                                test_rays_per_step=16, num_eval_views=2,
                                render_chunk_points=60, field=field)


def _object():
  """A procedural chair's 50 views on white at NERF_RES, as one ShapeNet signal."""
  chair = procedural_shapes.generate_object("chairs", "test", 0, resolution=NERF_RES)
  rgba = chair["rgba"] / 255.0
  views = rgba[..., :3] * rgba[..., 3:] + 1.0 - rgba[..., 3:]
  return {"images": views[None].astype(np.float32),
          "c2w": chair["c2w"][None].astype(np.float32),
          "focal": np.float32([procedural_shapes.focal_length(NERF_RES)])}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  base = tmp_path_factory.mktemp("signatures")
  ct_task, nerf_task = _ct_task(), _nerf_task(str(base / "unused"))
  image_task = image.ImageRegression(
      resolution=8, field=lambda: siren.Siren(width=16, depth=3, seed=0))
  tasks = {"ct": (ct_task, CT_OPTIMIZER), "nerf": (nerf_task, NERF_OPTIMIZER),
           "image": (image_task, optimizers.SGD(1e-2))}
  params, manifests, dirs = {}, {}, {}
  for name, (task, optimizer) in tasks.items():
    params[name] = task.field.params()
    dirs[name] = str(base / name)
    manifests[name] = exports.export_params(task.field, params[name], dirs[name],
                                           task=task, optimizer=optimizer)
  # CT: the task's own evaluation observation of a held-out phantom.
  phantom = contract.take(ct_task.test_signals(), slice(0, 1))
  obs = ct_task.observe(phantom, contract.stateless_seed(0), CT_VIEWS)
  chair = _object()
  inputs = str(base / "inputs.npz")
  picture = np.random.default_rng(0).uniform(size=(8, 8, 3)).astype(np.float32)
  np.savez(inputs, sinogram=obs["targets"][0].numpy(), angles=obs["angles"][0].numpy(),
           ct_steps=CT_STEPS, views=chair["images"][0, :NERF_VIEWS],
           cameras=chair["c2w"][0, :NERF_VIEWS], focal=chair["focal"][0],
           nerf_steps=NERF_STEPS, picture=picture)
  script = base / "fresh.py"
  script.write_text(FRESH)
  outputs = str(base / "outputs.npz")
  proc = subprocess.Popen(
      [sys.executable, str(script), dirs["ct"], dirs["nerf"], dirs["image"], inputs,
       outputs], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=base,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES=""))
  state = dict(proc=proc, outputs=outputs, params=params, manifests=manifests,
               ct_task=ct_task, nerf_task=nerf_task, phantom=phantom, chair=chair,
               result=None)
  yield state
  if proc.poll() is None:
    proc.kill()
    proc.wait()


def _fresh(run):
  """(arrays, bad-input messages) of the subprocess; waited for only here."""
  if run["result"] is None:
    out, err = run["proc"].communicate(timeout=300)
    assert run["proc"].returncode == 0, f"stdout:\n{out}\nstderr:\n{err[-4000:]}"
    run["result"] = (dict(np.load(run["outputs"])),
                     json.loads(out.strip().splitlines()[-1]))
  return run["result"]


def _batched(params):
  return functional.batch_params(params, 1)


# In-process tests first: they run while the subprocess imports TensorFlow.


def test_manifests_record_the_signatures_and_the_image_preprocessing(run):
  ct_signatures = run["manifests"]["ct"]["signatures"]
  assert set(ct_signatures) == {"render", "reconstruct"}
  assert ct_signatures["reconstruct"]["optimizer"] == CT_OPTIMIZER.describe()
  # Any rank: the signature checks the rank itself.
  assert ct_signatures["reconstruct"]["inputs"]["sinogram"]["shape"] is None
  assert set(ct_signatures["reconstruct"]["outputs"]) == {
      "image", "loss_before", "loss_after", "psnr_before", "psnr_after"}
  assert "radians" in run["manifests"]["ct"]["task"]["angles"]
  nerf_signatures = run["manifests"]["nerf"]["signatures"]
  assert set(nerf_signatures) == {"render", "render_view", "adapt"}
  assert nerf_signatures["adapt"]["optimizer"] == NERF_OPTIMIZER.describe()
  assert nerf_signatures["render_view"]["outputs"]["rgb"]["shape"] == [None, None, 3]
  preprocessing = run["manifests"]["image"]["task"]["preprocessing"]
  assert preprocessing.startswith("procedural text drawn at 16x16")
  for dataset in ("folder", "imagenette"):
    text = image.preprocessing(dataset, 64)
    assert ("centre crop to a square" in text and "resize to 64x64" in text
            and "antialias=True" in text), text
  assert image.preprocessing("celeb_a", 178).endswith("rows 20:198 (all 178 columns) "
                                                      "-> 178x178")


def test_ct_reconstruct_matches_the_test_time_optimizer(run):
  task = run["ct_task"]
  trace, finals = testtime.TestTimeOptimizer(task).run(
      run["params"]["ct"], run["phantom"], CT_OPTIMIZER, CT_STEPS, CT_VIEWS,
      trace_every=CT_STEPS)
  want = task.image(finals[0]).numpy()[0]
  got, _ = _fresh(run)
  assert got["ct_image"].shape == (CT_RES, CT_RES)
  diff = np.abs(got["ct_image"] - want).max()
  psnr = float(contract.psnr_from_mse(np.mean((got["ct_image"] -
                                               run["phantom"]["image"][0]) ** 2)))
  print(f"reconstruct: sinogram PSNR {got['ct_psnr_before']:.2f} -> "
        f"{got['ct_psnr_after']:.2f} dB; image PSNR {psnr:.2f} dB, in-package "
        f"{trace[0, 0]:.2f} -> {trace[-1, 0]:.2f}; image max |diff| {diff:.1e}")
  assert diff < 1e-4
  assert psnr == pytest.approx(trace[-1, 0], abs=1e-2)
  assert got["ct_psnr_after"] > got["ct_psnr_before"] + 5
  assert got["ct_loss_after"] < got["ct_loss_before"]


def test_ct_reconstruct_refuses_bad_measurements(run):
  _, errors = _fresh(run)
  assert "sinogram must be [num_views, num_measurements] (rank 2)" in errors["ct_rank"]
  assert "got shape] [16]" in errors["ct_rank"]
  assert ("one row per angle; sinogram shape] [4 16] [angles shape] [3]"
          in errors["ct_rows"]), errors["ct_rows"]
  assert ("must hold 16 measurements" in errors["ct_bins"]
          and "[4 8]" in errors["ct_bins"]), errors["ct_bins"]
  assert "sinogram values must be finite" in errors["ct_nan"]
  assert "num_steps must be >= 0; got] [-3]" in errors["ct_steps"]


def test_render_view_is_the_tasks_held_out_render(run):
  task, chair = run["nerf_task"], run["chair"]
  params = _batched(run["params"]["nerf"])
  got, _ = _fresh(run)
  square = task.render_views(params, chair["c2w"][:, :1], chair["focal"])[0, 0]
  wide = task.render_views(params, chair["c2w"][:, 1:2], chair["focal"], (6, 10))[0, 0]
  print(f"render_view max |diff|: {np.abs(got['view_rgb'] - square).max():.1e} (8x8), "
        f"{np.abs(got['wide_rgb'] - wide).max():.1e} (6x10, [3, 4] pose)")
  np.testing.assert_allclose(got["view_rgb"], square, atol=1e-5)
  np.testing.assert_allclose(got["wide_rgb"], wide, atol=1e-5)
  assert got["wide_depth"].shape == got["wide_acc"].shape == (6, 10)
  assert 0 <= got["view_acc"].min() and got["view_acc"].max() <= 1 + 1e-5


def test_nerf_adapt_fits_as_the_test_time_optimizer(run):
  task, chair = run["nerf_task"], run["chair"]
  _, finals = testtime.TestTimeOptimizer(task).run(
      run["params"]["nerf"], chair, NERF_OPTIMIZER, NERF_STEPS, NERF_VIEWS,
      trace_every=NERF_STEPS)
  renders = task.render_views(finals[0], chair["c2w"][:, :NERF_VIEWS],
                               chair["focal"])[0].numpy()
  mse = np.mean((renders - chair["images"][0, :NERF_VIEWS]) ** 2, axis=(1, 2, 3))
  want_psnr = float(np.mean(contract.psnr_from_mse(mse)))
  got, _ = _fresh(run)
  print(f"NeRF adapt: PSNR of the {NERF_VIEWS} views {got['nerf_psnr_before']:.2f} -> "
        f"{got['nerf_psnr_after']:.2f} dB, in-package after {want_psnr:.2f}; renders "
        f"max |diff| {np.abs(got['nerf_renders'] - renders).max():.1e}")
  assert got["nerf_renders"].shape == (NERF_VIEWS, NERF_RES, NERF_RES, 3)
  np.testing.assert_allclose(got["nerf_renders"], renders, atol=1e-4)
  assert got["nerf_psnr_after"] == pytest.approx(want_psnr, abs=1e-3)
  assert got["nerf_psnr_after"] > got["nerf_psnr_before"] + 1


def test_nerf_signatures_refuse_bad_views(run):
  _, errors = _fresh(run)
  assert "camera_to_world must be [4, 4] or [3, 4]" in errors["view_rank"]
  assert "got shape] [3 4 4]" in errors["view_rank"]
  assert "focal must be a focal length in pixels > 0" in errors["view_focal"]
  assert "images must be [V, H, W, 3] posed views (rank 4)" in errors["nerf_rank"]
  assert "images must have 3 channels" in errors["nerf_rgba"]
  assert "got shape] [3 8 8 4]" in errors["nerf_rgba"]
  assert ("same views; images shape] [2 8 8 3] [cameras shape] [3 3 4]"
          in errors["nerf_count"]), errors["nerf_count"]
  assert "divide 8-bit values by 255" in errors["nerf_bytes"]
  assert "num_steps must be >= 0" in errors["nerf_steps"]


def test_image_adapt_refuses_what_it_cannot_fit(run):
  _, errors = _fresh(run)
  for case, shape in (("gray", "[8 8 1]"), ("rgba", "[8 8 4]")):
    message = errors[f"image_{case}"]
    assert "image must have 3 channels" in message, message
    assert "tf.image.grayscale_to_rgb" in message and "on white" in message
    assert f"got shape] {shape}" in message
  assert "image must be one [H, W, 3] image (rank 3)" in errors["image_batch"]
  assert "got shape] [1 8 8 3]" in errors["image_batch"]
  assert "divide 8-bit values by 255" in errors["image_bytes"]
  assert "num_steps must be >= 0; got] [-3]" in errors["image_steps"]
