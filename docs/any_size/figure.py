"""The picture of docs/images.md ("Any size") and docs/fit.md: one held-out photograph
at 256x256 fitted with each init's default steps, beside Standard at the same steps
and the bicubic upsampling of the 64-px init's 64x64 fit.

  python docs/any_size/figure.py --out=docs/any_size/astronaut_256.png

The photo (astronaut) is one of measure.py's TEST photos: shown, never used to choose.
"""

import argparse

import numpy as np
from PIL import Image
from PIL import ImageDraw
import tensorflow as tf

from tf_metainit import fit
from tf_metainit import pretrained
from tf_metainit import testtime
from tf_metainit.fields import functional
from tf_metainit.tasks import image as image_task

import measure  # docs/any_size/measure.py: the photos and their splits


def fitted_picture(field, params, image, optimizer, num_steps):
  task = image_task.ImageRegression.for_field(field)
  fitted, curve = testtime.fit_image(task, params, image, optimizer, num_steps)
  size = image.shape[0]
  return fit.render(field, fitted, size, size), float(curve[-1])


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--photo", default="astronaut.png")
  parser.add_argument("--size", type=int, default=256)
  parser.add_argument("--out", required=True)
  args = parser.parse_args()
  assert args.photo in measure.TEST
  image = measure.photo(args.photo, args.size)
  panels = [(image, "photo")]
  for name in ("natural_any", "natural"):
    init = pretrained.init(name)
    picture, psnr = fitted_picture(init.field, init.params, image, init.optimizer,
                                   init.num_steps)
    panels.append((picture, f"'{name}', {init.num_steps} steps: {psnr:.1f} dB"))
  natural = pretrained.init("natural")
  small, _ = fitted_picture(natural.field, natural.params, measure.photo(args.photo, 64),
                            natural.optimizer, natural.num_steps)
  up = np.clip(tf.image.resize(small, (args.size, args.size), "bicubic").numpy(), 0, 1)
  panels.append((up, f"'natural' at 64, bicubic: {measure.psnr(up, image):.1f} dB"))
  standard = functional.standard_copy(natural.field)
  picture, psnr = fitted_picture(standard, standard.params(), image,
                                 testtime.STANDARD_OPTIMIZER, natural.num_steps)
  panels.append((picture, f"Standard, {natural.num_steps} steps: {psnr:.1f} dB"))
  size, label = args.size, 18
  sheet = Image.new("RGB", (len(panels) * (size + 8), size + label), "white")
  draw = ImageDraw.Draw(sheet)
  for i, (picture, text) in enumerate(panels):
    pixels = (255 * np.clip(picture, 0, 1)).astype(np.uint8)
    sheet.paste(Image.fromarray(pixels), (i * (size + 8), label))
    draw.text((i * (size + 8) + 2, 3), text, fill="black")
  sheet.save(args.out)
  print("wrote", args.out, [t for _, t in panels])


if __name__ == "__main__":
  main()
