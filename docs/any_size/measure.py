"""The any-size figures of docs/images.md ("Any size"): learned inits fitted to real
photographs at 64², 256², 512² and at a photo's own size, against the bicubic
upsampling of their own 64² fit and against Standard with its best Adam rate.

  python docs/any_size/measure.py choose --init=natural --out=docs/any_size/choices.json
  python docs/any_size/measure.py validate --init=natural --init=/tmp/natural_any/export \
      --out=docs/any_size/validation.json
  python docs/any_size/measure.py test --init=natural --init=/tmp/natural_any/export \
      --out=docs/any_size/results.json

The photographs are scikit-image's sample images (pip install scikit-image), split
once: VALIDATION chooses every setting (Standard's Adam rate, the Adam rate a Meta
fit switches to after its learned steps); TEST is scored only, never used to choose.
"""

import argparse
import json
import os

import numpy as np
import tensorflow as tf

from tf_metainit import exports
from tf_metainit import pretrained
from tf_metainit import testtime
from tf_metainit.data import image_folder
from tf_metainit.fields import functional
from tf_metainit.meta import optimizers
from tf_metainit.tasks import contract
from tf_metainit.tasks import image as image_task

VALIDATION = ("camera.png", "coffee.png", "motorcycle_right.png")
TEST = ("astronaut.png", "ihc.png", "retina.jpg", "hubble_deep_field.jpg",
        "motorcycle_left.png", "rocket.jpg", "chelsea.png", "brick.png", "cell.png")
RATES = (1e-4, 3e-4, 1e-3, 3e-3)


def photo(name, size=None):
  """A sample photograph, RGB in [0, 1]; centre-cropped and resized to size² unless
  size is None (its own size)."""
  import skimage  # pylint: disable=g-import-not-at-top
  image = image_folder.load_image(os.path.join(os.path.dirname(skimage.__file__),
                                               "data", name))
  return image if size is None else image_folder.center_crop_resize(image, size).numpy()


def load(init):
  if os.path.exists(os.path.join(init, exports.MANIFEST)):
    return exports.load_init(init)
  return pretrained.init(init)


def standard_of(init):
  field = functional.standard_copy(init.field)
  return field, field.params()


def curve_of(field, params, image, optimizer, num_steps):
  """The PSNR curve of a fit of `image`."""
  task = image_task.ImageRegression.for_field(field)
  return np.asarray(testtime.fit_image(task, params, image, optimizer, num_steps)[1])


def psnr(a, b):
  return float(contract.psnr_from_mse(np.mean(np.square(a - b))))


def bicubic_of_64(init, name, size):
  """PSNR at size² of the init's own 64² fit of the photo, upsampled bicubically."""
  small = photo(name, 64)
  task = image_task.ImageRegression.for_field(init.field)
  fitted, _ = testtime.fit_image(task, init.params, small, init.optimizer,
                                 init.num_steps)
  coords = image_task.pixel_grid_tensor(64, 64)
  render = init.field.apply(fitted, coords).numpy().reshape(64, 64, -1)
  up = tf.clip_by_value(tf.image.resize(render, (size, size), "bicubic"), 0, 1)
  return psnr(up.numpy(), photo(name, size))


# A Meta fit's candidates after its learned steps: its last learned rates throughout
# (None: tf-metainit-fit's default) or Adam at these rates.
META_RATES = (None, 1e-5, 3e-5, 1e-4)


def meta_optimizer(init, rate):
  """The init's own learned steps, then Adam at `rate` (None: its own rates on)."""
  if rate is None:
    return init.optimizer
  return optimizers.Switch(first=init.optimizer, second=optimizers.Adam(rate),
                           at=init.num_steps)


def choose(args):
  """Standard's Adam rate and Meta's follow-on rate: the highest mean PSNR on the
  VALIDATION photos at 256² after args.steps steps."""
  out = {"photos": VALIDATION, "size": 256, "steps": args.steps, "standard": {},
         "meta": {}}
  standard = load(args.init[0])
  field, params = standard_of(standard)
  for rate in RATES:
    out["standard"][rate] = [float(curve_of(field, params, photo(n, 256),
                                             optimizers.Adam(rate), args.steps)[-1])
                             for n in VALIDATION]
    print("standard", rate, out["standard"][rate], flush=True)
  for init_name in args.init:
    init = load(init_name)
    out["meta"][init_name] = {}
    for rate in META_RATES:
      out["meta"][init_name][str(rate)] = [
          float(curve_of(init.field, init.params, photo(n, 256),
                          meta_optimizer(init, rate), args.steps)[-1])
          for n in VALIDATION]
      print(init_name, rate, out["meta"][init_name][str(rate)], flush=True)
  best = lambda table: max(table, key=lambda r: np.mean(table[r]))
  out["standard_rate"] = float(best(out["standard"]))
  out["meta_rate"] = {k: best(v) for k, v in out["meta"].items()}  # 'None' or a rate
  return out


def validate(args):
  """On the VALIDATION photos: each init after its default steps at 128², 256² and
  512² (photos at least 512 px) against the bicubic upsampling of its own 64² fit:
  the figure that decides whether an any-size run is worth testing."""
  out = {"photos": VALIDATION, "inits": {}}
  for init_name in args.init:
    init = load(init_name)
    rows = out["inits"][init_name] = []
    for name in VALIDATION:
      for size in (128, 256, 512):
        if size == 512 and min(photo(name).shape[:2]) < 512:
          continue
        meta = curve_of(init.field, init.params, photo(name, size), init.optimizer,
                        init.num_steps)
        rows.append({"photo": name, "size": size, "meta": float(meta[-1]),
                     "bicubic_of_64": bicubic_of_64(init, name, size)})
        print(init_name, rows[-1], flush=True)
  return out


def test(args):
  """On the TEST photos: PSNR after the init's default steps at 64², 256², 512²
  (photos at least 512 px for 512²) beside bicubic-of-64 and Standard (its chosen
  rate) at the same steps. Seconds to 25 and 30 dB: tf-metainit-benchmark
  (BENCHMARKS.md, "From a photograph to 25 and 30 dB")."""
  if args.standard_rate:  # Table 1's Adam rate, say, when no rate was chosen yet
    out = {"standard_rate": args.standard_rate, "inits": {}}
    standard_rate = args.standard_rate
  else:
    with open(args.choices) as f:
      choices = json.load(f)
    out = {"choices": args.choices, "inits": {}}
    standard_rate = choices["standard_rate"]
  for init_name in args.init:
    init = load(init_name)
    field, params = standard_of(init)
    rows = out["inits"][init_name] = {"default_steps": init.num_steps, "psnr": []}
    for name in TEST:
      native = photo(name)
      for size in (64, 256, 512):
        if size == 512 and min(native.shape[:2]) < 512:
          continue
        image = photo(name, size)
        meta = curve_of(init.field, init.params, image, init.optimizer,
                        init.num_steps)
        std = curve_of(field, params, image, optimizers.Adam(standard_rate),
                       init.num_steps)
        row = {"photo": name, "size": size, "meta": float(meta[-1]),
               "standard": float(std[-1]),
               "bicubic_of_64": bicubic_of_64(init, name, size)}
        rows["psnr"].append(row)
        print(init_name, row, flush=True)
  return out


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("stage", choices=("choose", "validate", "test"))
  parser.add_argument("--init", action="append", required=True)
  parser.add_argument("--out", required=True)
  parser.add_argument("--choices", default="docs/any_size/choices.json")
  parser.add_argument("--steps", type=int, default=60)
  parser.add_argument("--standard_rate", type=float, default=None,
                      help="test: Standard's Adam rate instead of --choices'")
  args = parser.parse_args()
  result = {"choose": choose, "validate": validate, "test": test}[args.stage](args)
  with open(args.out, "w") as f:
    json.dump(result, f, indent=1)
  print("wrote", args.out)


if __name__ == "__main__":
  main()
