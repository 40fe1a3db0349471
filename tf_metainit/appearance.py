"""The tf-metainit-appearance job: appearance transfer and interpolation for a
Phototourism init (seed Fig. 2).

From the meta-learned NeRF of a landmark, a few steps on one new photo transfer its
appearance (lighting, exposure, weather); rendering the transferred field from other
cameras shows the photo's appearance on views it never saw. Fields fitted to four
photos sit at the corners of a grid rendered from one fixed camera; the cells mix
their weights, and the centre is the meta-learned init itself:

  theta(u, v) = theta_0 + r(u, v) sum_c b_c(u, v) (theta_c - theta_0),  u, v in [-1, 1]

with b_c the bilinear weights of the corners and r = max(|u|, |v|): each edge
interpolates linearly between its two corners, and every ray from the centre to the
border interpolates linearly from the init outwards.
"""

import os

import gin
import numpy as np
from PIL import Image

from tf_metainit import baselines
from tf_metainit import checks
from tf_metainit import figures
from tf_metainit import files
from tf_metainit import layout
from tf_metainit import testtime
from tf_metainit.fields import functional
from tf_metainit.meta import optimizers
from tf_metainit.tasks import contract

FIT_SETTING = "full"
# This command's entries of its output folder (the module doc of `appearance`).
OUTPUTS = ("appearance_transfer.png", "appearance_grid.png", "init_path.gif",
           "transfer_path.gif", "appearance.json")


def corner_weights(u, v):
  """Weights of (init, corner 00, 01, 10, 11) at grid position u, v in [-1, 1]."""
  radius = max(abs(u), abs(v))
  bilinear = [(1 - u) * (1 - v) / 4, (1 - u) * (1 + v) / 4,
              (1 + u) * (1 - v) / 4, (1 + u) * (1 + v) / 4]
  return [1.0 - radius] + [radius * b for b in bilinear]


def camera_path(c2w, frames_per_segment):
  """Poses along the cameras `c2w` (K, 3, 4): translations linear, rotations linear
  then re-orthonormalised (fine for the nearby cameras of one landmark)."""
  poses = []
  for a, b in zip(c2w[:-1], c2w[1:]):
    for t in np.linspace(0.0, 1.0, frames_per_segment, endpoint=False):
      pose = (1 - t) * a + t * b
      u, _, vt = np.linalg.svd(pose[:, :3])
      poses.append(np.concatenate([u @ vt, pose[:, 3:]], 1))
  poses.append(np.asarray(c2w[-1], float))
  return np.stack(poses)


def _scale(images, cell):
  """The integer zoom that brings the largest image's long side near `cell` pixels."""
  return max(1, round(cell / max(max(np.shape(im)[:2]) for im in images)))


def _camera(signals, k):
  height, width = (int(v) for v in signals["size"][k])
  return (signals["c2w"][k], signals["kinv"][k], signals["bounds"][k], height, width)


@gin.configurable(denylist=["root_dir", "checkpoint"])
def appearance(root_dir, task=gin.REQUIRED, photo_index=0, corner_indices=(0, 1, 2, 3),
               camera_indices=(4, 5, 6), num_steps=150, optimizer=None, grid_size=5,
               path_frames=8, cell=96, output_dir=None, checkpoint="best"):
  """Writes the appearance figures of a Phototourism run and returns their figures.

  Files in output_dir: appearance_transfer.png (the photo, then the transferred field
  from camera_indices' cameras, and below, where the scene is procedural, the true
  landmark under the photo's appearance from those cameras), appearance_grid.png
  (seed Fig. 2), init_path.gif and transfer_path.gif (the init and the transferred
  field along a path through the test cameras), appearance.json.

  Args:
    root_dir: a Phototourism meta-training run.
    task: the task (the run's own, when called through the binary).
    photo_index: the held-out photo whose appearance is transferred.
    corner_indices: four held-out photos fitted for the grid's corners.
    camera_indices: held-out photos whose cameras show the transferred field.
    num_steps: fitting steps on each whole photo (paper: 150).
    optimizer: the fitting optimizer (default: the init's own test-time optimizer,
      from its run record).
    grid_size: cells per side of the interpolation grid (odd, so the init is a cell).
    path_frames: frames between consecutive cameras of the path.
    cell: long side in pixels of one tile.
    output_dir: default <root_dir>/eval.
    checkpoint: 'best' (held-out validation during training) or 'latest'.
  """
  _check(task, photo_index, corner_indices, camera_indices, num_steps, grid_size,
         path_frames, cell)
  output_dir = layout.eval_dir(root_dir, output_dir)
  layout.check_eval_dir(output_dir, "a tf-metainit-appearance output")
  signals = task.test_signals()
  inits, metas = baselines.build(task, root_dir, ("meta",), checkpoint=checkpoint)
  init = [np.asarray(p) for p in inits["meta"]]
  optimizer = optimizers.check(optimizer or metas["meta"].optimizer,
                               "appearance.optimizer")
  fit_rows = [photo_index, *corner_indices]
  trace, finals = testtime.TestTimeOptimizer(task).run(
      init, contract.take(signals, fit_rows), optimizer, num_steps, FIT_SETTING,
      max(num_steps, 1), chunk=len(fit_rows))
  fitted = [[np.asarray(p) for p in f] for f in testtime.unbatch(finals)]
  transferred, corners = fitted[0], fitted[1:]
  # Written into a new folder that replaces the old one whole, carrying over what
  # evaluate and interpolate wrote there: a kill leaves the old figures or the new.
  with files.atomic_directory(output_dir, replaces=OUTPUTS.__contains__) as out:
    _transfer_figure(task, signals, init, transferred, photo_index, camera_indices,
                     cell, os.path.join(out, "appearance_transfer.png"))
    # Seed Fig. 2: one fixed camera, corners fitted to four photos, the init at the
    # centre.
    fixed = _camera(signals, photo_index)
    steps = np.linspace(-1.0, 1.0, grid_size)
    grid = [[task.render_camera(functional.mix([init, *corners],
                                               corner_weights(float(u), float(v))),
                                *fixed) for u in steps] for v in steps]
    files.save_image(figures.image_grid(grid, scale=_scale(grid[0], cell)),
                     os.path.join(out, "appearance_grid.png"))
    # Camera path through the test cameras, with the first photo's intrinsics.
    path = camera_path(np.asarray([signals["c2w"][k] for k in camera_indices]),
                       path_frames)
    for name, params in (("init_path.gif", init), ("transfer_path.gif", transferred)):
      _path_gif(task, params, path, fixed, cell, os.path.join(out, name))
    report = {"photo_index": photo_index, "corner_indices": list(corner_indices),
              "camera_indices": list(camera_indices), "num_steps": num_steps,
              "optimizer": optimizer.describe(), "setting": FIT_SETTING,
              # The whole photo was fitted: its right half is not held out here.
              "fitted_right_half_psnr": {
                  "transfer": float(trace[-1][0]),
                  "corners": trace[-1][1:].astype(float).tolist()}}
    files.write_json(os.path.join(out, "appearance.json"), report)
  return report


def _check(task, photo_index, corner_indices, camera_indices, num_steps, grid_size,
           path_frames, cell):
  if not task.renders_cameras:
    raise ValueError(f"appearance figures need a Phototourism task, not "
                     f"{type(task).__name__}.")
  count = len(task.test_signals()["size"])
  for index in [photo_index, *corner_indices, *camera_indices]:
    if not 0 <= checks.non_negative_int("appearance photo index", index) < count:
      raise ValueError(f"appearance photo indices must be below {count} (the held-out "
                       f"photos), got {index}.")
  if len(corner_indices) != 4:
    raise ValueError(f"appearance.corner_indices needs 4 photos, got {corner_indices}.")
  checks.non_negative_int("appearance.num_steps", num_steps)
  if checks.positive_int("appearance.grid_size", grid_size) % 2 == 0:
    raise ValueError(f"appearance.grid_size must be odd so the init is the centre "
                     f"cell, got {grid_size}.")
  checks.positive_int("appearance.path_frames", path_frames)
  checks.positive_int("appearance.cell", cell)


def _transfer_figure(task, signals, init, transferred, photo_index, camera_indices,
                     cell, path):
  """The photo, then its appearance seen from other cameras; below, the init from
  the same cameras and, where the scene is procedural, the truth."""
  photo = task.targets_for_display(contract.take(signals, [photo_index]))[0]
  height, width = (int(v) for v in signals["size"][photo_index])
  top = [photo[:height, :width]] + [task.render_camera(transferred, *_camera(signals, k))
                                    for k in camera_indices]
  rows = [top, [task.render_camera(init, *_camera(signals, photo_index))] +
          [task.render_camera(init, *_camera(signals, k)) for k in camera_indices]]
  if task.true_view is not None:
    rows.append([photo[:height, :width]] +
                [task.true_view(photo_index, k) for k in camera_indices])
  labels = ["photo"] + [f"camera of {k}" for k in camera_indices]
  row_labels = ["transferred", "init"] + (["truth"] if task.true_view is not None else [])
  files.save_image(figures.image_grid(rows, labels, row_labels, scale=_scale(top, cell)),
                   path)


def _path_gif(task, params, path, camera, cell, out):
  _, kinv, bounds, height, width = camera
  frames = [task.render_camera(params, pose, kinv, bounds, height, width)
            for pose in path]
  zoom = _scale(frames, 2 * cell)
  files.save_gif([Image.fromarray(figures.to_uint8(f)).resize(
      (width * zoom, height * zoom), Image.NEAREST) for f in frames], out)
