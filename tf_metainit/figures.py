"""Figures: labelled image grids (PIL, exact pixels) and metric curves (matplotlib)."""

import numpy as np
from PIL import Image
from PIL import ImageDraw
from PIL import ImageFont

from tf_metainit import files


def to_uint8(image):
  image = np.clip(np.asarray(image, np.float32), 0.0, 1.0)
  if image.ndim == 2:
    image = image[..., None]
  if image.shape[-1] == 1:
    image = np.repeat(image, 3, -1)
  return (image * 255.0 + 0.5).astype(np.uint8)


def image_grid(rows, column_labels=None, row_labels=None, scale=1, pad=2):
  """rows: list of lists of (H, W, C) images in [0, 1] -> PIL image with labels."""
  cells = [[to_uint8(im) for im in row] for row in rows]
  h = max(c.shape[0] for row in cells for c in row) * scale
  w = max(c.shape[1] for row in cells for c in row) * scale
  ncols = max(len(r) for r in cells)
  font = ImageFont.load_default()
  top = 14 if column_labels else 0
  left = 8 * max((len(s) for s in row_labels), default=0) + 4 if row_labels else 0
  canvas = Image.new("RGB", (left + ncols * (w + pad) + pad, top + len(cells) * (h + pad)
                             + pad), "white")
  draw = ImageDraw.Draw(canvas)
  for j, label in enumerate(column_labels or []):
    draw.text((left + pad + j * (w + pad), 1), str(label), fill="black", font=font)
  for i, row in enumerate(cells):
    y = top + pad + i * (h + pad)
    if row_labels:
      draw.text((2, y + h // 2 - 6), str(row_labels[i]), fill="black", font=font)
    for j, cell in enumerate(row):
      tile = Image.fromarray(cell).resize((cell.shape[1] * scale, cell.shape[0] * scale),
                                          Image.NEAREST)
      canvas.paste(tile, (left + pad + j * (w + pad), y))
  return canvas


def plot_curves(curves, path, title, ylabel="PSNR (dB)", xlabel="test-time step"):
  """curves: {label: (steps, mean, std)} -> a PNG with one line (and band) per label."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
  for label, (steps, mean, std) in curves.items():
    ax.plot(steps, mean, label=label)
    ax.fill_between(steps, mean - std, mean + std, alpha=0.15)
  ax.set_xscale("symlog", linthresh=1.0)
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.set_title(title)
  ax.grid(True, alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  files.save_figure(fig, path)
  plt.close(fig)
