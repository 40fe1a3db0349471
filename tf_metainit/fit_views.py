"""A learned NeRF init fitted to your own posed views (tf-metainit-fit --views).

Two folder formats, the two NeRF tasks' own:
  ShapeNet      one object: transforms.json (NeRF-Blender) and its PNGs. The first 25
                views (or all, if fewer) are fitted, as the task's test-time observation
                does; views from the 26th on are held out and scored. Renders: the
                fitted views, the held-out ones and a turntable of new cameras.
  Phototourism  a scene: images/ and c2w_mats.npy, kinv_mats.npy, bds.npy. One photo
                (--photo) is fitted whole, transferring its appearance; renders: that
                photo and the cameras of the others with its appearance.
"""

import os

import numpy as np
import tensorflow as tf

from tf_metainit import fitting
from tf_metainit import testtime
from tf_metainit.data import phototourism as phototourism_data
from tf_metainit.data import procedural_shapes
from tf_metainit.data import shapenet as shapenet_data
from tf_metainit.tasks import phototourism
from tf_metainit.tasks import shapenet

NUM_NEW_CAMERAS = 8
NUM_OTHER_PHOTOS = 4


def views_format(folder):
  """'shapenet' or 'phototourism': which task's format the folder holds."""
  if os.path.isfile(os.path.join(folder, "transforms.json")):
    return "shapenet"
  if all(os.path.isfile(os.path.join(folder, name))
         for name in phototourism_data.POSE_FILES):
    return "phototourism"
  raise ValueError(
      f"--views={folder} is in neither format: a ShapeNet object folder holds "
      "transforms.json and its PNGs; a Phototourism scene holds images/ (or "
      "dense/images/) with c2w_mats.npy, kinv_mats.npy and bds.npy.")


def _fit(task, params, signals, optimizer, num_steps, setting, metric, rays):
  """The fit of `rays` rays per step, said beforehand if it is long."""
  fitting.announce_duration(params, rays * task.renderer.num_samples, num_steps)
  return testtime.fit_signals(task, params, signals, optimizer, num_steps, setting,
                              metric, trace_every=_trace_every(num_steps))


def _trace_every(num_steps):
  return max(1, num_steps // 20)  # a full render per trace: about 20 of them


def _turntable(c2w, count):
  """New cameras on the circle of the first view's radius and height, facing the
  object's centre (the origin of the ShapeNet frame)."""
  eye = np.asarray(c2w[0][:3, 3], float)
  radius, height = np.linalg.norm(eye[:2]), eye[2]
  start = np.arctan2(eye[1], eye[0])
  angles = start + np.linspace(0, 2 * np.pi, count, endpoint=False)
  return np.stack([procedural_shapes.look_at(
      [radius * np.cos(a), radius * np.sin(a), height]) for a in angles]).astype(
          np.float32)


def fit_shapenet(init, folder, num_steps):
  """Fits the views at their own size, whatever the init was trained on: the field is
  a continuous 3-D one, and each step fits a fixed number of rays, so the size only
  changes what the scored renders cost."""
  number = lambda key: fitting.described(init, key)
  obj = shapenet_data.load_object(folder)
  height, width = obj["images"].shape[1:3]
  if height != width:
    raise ValueError(f"--views={folder}: the views are {width}x{height}; ShapeNet "
                     "views are square. Crop or pad them to a square (the focal length "
                     "follows the width).")
  task = shapenet.ShapeNetViews(
      procedural=False, data_dir=os.path.dirname(os.path.abspath(folder)),
      category=os.path.basename(os.path.abspath(folder)),
      resolution=height, num_samples=int(number("num_samples")),
      near=number("near"), far=number("far"),
      test_rays_per_step=int(number("test_rays_per_step")), field=lambda: init.field)
  count = len(obj["images"])
  observed = min(count, shapenet.NUM_INPUT_VIEWS)
  signals = {"images": obj["images"][None], "c2w": obj["c2w"][None],
             "focal": np.float32([obj["focal"]])}
  held_out = count > shapenet.NUM_INPUT_VIEWS
  shown = slice(shapenet.NUM_INPUT_VIEWS, None) if held_out else slice(0, observed)
  images = tf.constant(obj["images"][None, shown])
  cameras = tf.constant(obj["c2w"][None, shown])

  def metric(p):  # held-out views (the fitted ones if none), as evaluation scores them
    return shapenet.mean_view_psnr(task.render_views(p, cameras, signals["focal"]),
                                   images)

  fitted, curve = _fit(task, init.params, signals, init.optimizer, num_steps, observed,
                       metric, task.test_rays_per_step)
  render = tf.function(task.render_views)
  renders = render(fitted, cameras, signals["focal"]).numpy()[0]
  new = render(fitted, _turntable(obj["c2w"], NUM_NEW_CAMERAS)[None],
               signals["focal"]).numpy()[0]
  truth = np.concatenate(list(obj["images"][shown][:4]), 1)
  pictures = {"views.png": np.concatenate([truth, np.concatenate(list(renders[:4]), 1)],
                                          0),
              "new_views.png": np.concatenate(list(new), 1)}
  summary = {"views": count, "fitted_views": observed,
             "scored": "held-out views 26+" if held_out else "the fitted views"}
  return task, fitted, curve, pictures, summary


def fit_phototourism(init, folder, num_steps, photo):
  paths = phototourism_data.image_paths(folder)
  cameras = phototourism_data.read_cameras(folder, len(paths))
  if not 0 <= photo < len(paths):
    raise ValueError(f"--photo={photo}, but {folder} has {len(paths)} photos.")
  task = phototourism.Phototourism(
      scene="user", scene_dir=folder,
      num_samples=int(fitting.described(init, "num_samples")),
      rays_per_step=int(fitting.described(init, "rays_per_step")),
      field=lambda: init.field)
  image, kinv = phototourism_data.read_photo(paths[photo], cameras["kinv"][photo])
  height, width = image.shape[:2]
  left, right = phototourism.halves_layout([[height, width]])
  signal = phototourism.photo_signal(image, cameras["c2w"][photo], kinv,
                                     cameras["bounds"][photo], left, right)
  signals = {k: v[None] for k, v in signal.items()}
  camera = (signal["c2w"], signal["kinv"], signal["bounds"], height, width)

  def metric(p):  # PSNR of the whole fitted photo
    return phototourism.photo_psnr(task.render_slots(p, signals), signals)

  fitted, curve = _fit(task, init.params, signals, init.optimizer, num_steps, "full",
                       metric, task.rays_per_step)
  params = [p[0] for p in fitted]
  others = [k for k in range(len(paths)) if k != photo][:NUM_OTHER_PHOTOS]
  transfer = []
  for k in others:  # photos read at their stored size: K^-1 as given
    h, w = (int(v) for v in phototourism_data.photo_size(paths[k]))
    transfer.append(task.render_camera(params, cameras["c2w"][k], cameras["kinv"][k],
                                       cameras["bounds"][k], h, w))
  pictures = {"reconstruction.png": task.render_camera(params, *camera),
              **{f"camera_of_{k:04d}.png": t for k, t in zip(others, transfer)}}
  summary = {"photos": len(paths), "fitted_photo": os.path.basename(paths[photo]),
             "scored": "the whole fitted photo"}
  return task, fitted, curve, pictures, summary


def fit(init, folder, out_dir, num_steps=None, photo=0):
  """Fits `init` to the views in `folder`; writes pictures, fit.json and export/."""
  fitting.check_out_dir(out_dir)
  kind = views_format(folder)
  fitting.check_kind(init, kind, "--views")
  num_steps = int(num_steps or init.num_steps or 100)
  if kind == "shapenet":
    task, fitted, curve, pictures, summary = fit_shapenet(init, folder, num_steps)
  else:
    task, fitted, curve, pictures, summary = fit_phototourism(init, folder, num_steps,
                                                              photo)
  result = {"views": os.path.abspath(folder), "format": kind, "init": init.source,
            "num_steps": num_steps, "optimizer": init.optimizer.describe(),
            "psnr_steps": testtime.traced_steps(num_steps,
                                                _trace_every(num_steps)).tolist(),
            "psnr": curve.tolist(), **summary}
  fitting.finish(out_dir, init.field, [p[0] for p in fitted], result, pictures, task)
  return result
