"""A Phototourism export used from TensorFlow alone, in a fresh process."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tf_metainit.fields import mlp
from tf_metainit.meta import optimizers
from tf_metainit.tasks import phototourism
from tf_metainit import exports
from tests import test_phototourism

_SCRIPT = r"""
import json, sys
import numpy as np
import tensorflow as tf
model = tf.saved_model.load(sys.argv[1])
data = np.load(sys.argv[2])
rays = model.signatures["render_rays"](
    origins=tf.constant(data["origins"]), directions=tf.constant(data["directions"]),
    near=tf.constant(data["near"]), far=tf.constant(data["far"]))
out = model.signatures["adapt"](
    photo=tf.constant(data["photo"]), camera_to_world=tf.constant(data["c2w"]),
    kinv=tf.constant(data["kinv"]), bounds=tf.constant(data["bounds"]),
    num_steps=tf.constant(30))
np.savez(sys.argv[3], rgb=rays["rgb"].numpy(), recon=out["reconstruction"].numpy())
errors = []
for name, photo in (("rgba", np.concatenate([data["photo"], data["photo"][..., :1]], -1)),
                    ("bytes", data["photo"] * 255), ("batched", data["photo"][None])):
  try:
    model.signatures["adapt"](
        photo=tf.constant(photo), camera_to_world=tf.constant(data["c2w"]),
        kinv=tf.constant(data["kinv"]), bounds=tf.constant(data["bounds"]),
        num_steps=tf.constant(1))
    errors.append("")
  except tf.errors.InvalidArgumentError as e:
    errors.append(e.message)
print(json.dumps({"before": float(out["psnr_before"]), "after": float(out["psnr_after"]),
                  "errors": errors}))
"""


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
  root = tmp_path_factory.mktemp("scene")
  test_phototourism._write_scene(str(root))
  field = lambda: mlp.NerfMLP(width=16, depth=2, num_frequencies=3, seed=0)
  task = phototourism.Phototourism(scene="mine", scene_dir=str(root), num_samples=8,
                                   field=field)
  params = task.field.params()
  out = str(tmp_path_factory.mktemp("export") / "model")
  exports.export_params(task.field, params, out, task=task, optimizer=optimizers.SGD(1.0))
  return task, params, out


def test_render_rays_and_adapt_from_tensorflow_alone(exported, tmp_path):
  task, params, export_dir = exported
  signals = task.test_signals()
  k = 1
  height, width = signals["size"][k]
  # A plain colour: far from the init's grey, within reach of 30 steps.
  photo = np.broadcast_to(np.float32([0.9, 0.2, 0.4]), (height, width, 3))
  rng = np.random.default_rng(0)
  origins = rng.normal(size=(50, 3)).astype(np.float32)
  directions = rng.normal(size=(50, 3)).astype(np.float32)
  near = rng.uniform(0.5, 1.0, 50).astype(np.float32)
  far = near + rng.uniform(0.5, 2.0, 50).astype(np.float32)
  inputs = str(tmp_path / "in.npz")
  np.savez(inputs, origins=origins, directions=directions, near=near, far=far,
           photo=photo, c2w=signals["c2w"][k], kinv=signals["kinv"][k],
           bounds=signals["bounds"][k])
  outputs = str(tmp_path / "out.npz")
  proc = subprocess.run([sys.executable, "-c", _SCRIPT, export_dir, inputs, outputs],
                        capture_output=True, text=True, timeout=300,
                        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
  assert proc.returncode == 0, proc.stderr[-2000:]
  report = json.loads(proc.stdout.strip().splitlines()[-1])
  result = np.load(outputs)
  expected = task.renderer.render_ray_list(params, origins, directions, near, far)
  np.testing.assert_allclose(result["rgb"], expected["rgb"], atol=1e-5)
  # In-package: the same photo rendered per-signal from the same camera.
  np.testing.assert_allclose(
      task.render_camera(params, signals["c2w"][k], signals["kinv"][k],
                         signals["bounds"][k], height, width),
      task.render(tf.nest.map_structure(lambda p: p[None], params),
                  {key: v[k:k + 1] for key, v in signals.items()})[0, :height, :width],
      atol=1e-5)
  assert result["recon"].shape == photo.shape
  assert report["after"] > report["before"] + 3.0, report
  assert "3 channels" in report["errors"][0]
  assert "[0, 1]" in report["errors"][1]
  assert "one [H, W, 3] image" in report["errors"][2]
