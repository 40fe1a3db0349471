"""The tf-metainit-interpolate job: weight-space interpolation between fitted fields
(seed Fig. 1).

Three held-out signals are fitted from the Standard init and from the Meta init; the
three fitted weight sets of each init are mixed barycentrically,
theta(a, b, c) = a theta_1 + b theta_2 + c theta_3 with a + b + c = 1, and rendered.
From the Meta init the mixtures stay meaningful images; from Standard they do not.
"""

import os

import gin
import numpy as np
from PIL import Image
from PIL import ImageDraw

from tf_metainit import baselines
from tf_metainit import checks
from tf_metainit import figures
from tf_metainit import files
from tf_metainit import layout
from tf_metainit import testtime
from tf_metainit.fields import functional
from tf_metainit.meta import optimizers
from tf_metainit.tasks import contract

# This command's entries of its output folder.
OUTPUTS = ("interpolation.png", "interpolation.json")


def barycentric_grid(subdivisions):
  """(a, b, c) = (i, j, k) / n for i + j + k = n, row by row from the top corner."""
  n = subdivisions
  return [[((n - r) / n, (r - j) / n, j / n) for j in range(r + 1)] for r in range(n + 1)]


def triangle_image(images, cell):
  """Rows of images (row r has r+1) laid out as a centred triangle."""
  rows = len(images)
  canvas = Image.new("RGB", (rows * cell, rows * cell), "white")
  for r, row in enumerate(images):
    offset = (rows - 1 - r) * cell // 2
    for j, im in enumerate(row):
      tile = Image.fromarray(figures.to_uint8(im)).resize((cell, cell), Image.NEAREST)
      canvas.paste(tile, (offset + j * cell, r * cell))
  return canvas


@gin.configurable(denylist=["root_dir", "checkpoint"])
def interpolate(root_dir, task=gin.REQUIRED, signal_indices=(0, 1, 2), num_steps=None,
                optimizer_settings=None, subdivisions=4, setting=None, cell=96,
                output_dir=None, checkpoint="best"):
  """Writes interpolation.png (top: Standard, bottom: Meta) and interpolation.json.

  Args:
    root_dir: a meta-training run (its checkpoint is the Meta init).
    task: the task (the run's own, when called through the binary).
    signal_indices: the three held-out signals at the triangle's corners.
    num_steps: {'standard': n, 'meta': n} fitting steps (default 100 each).
    optimizer_settings: {'standard': optimizer, 'meta': optimizer}, optimizers as
      objects (gin: {'meta': @meta/SGD()} with meta/SGD.learning_rate = 1e-2); default
      the Meta init's own test-time optimizer (its run record: its learned inner
      rates, if trained with them) and Table 1's Adam 1e-4 for Standard.
    subdivisions: the triangle has subdivisions + 1 rows.
    setting: observation setting used for fitting (default: the task's default).
    cell: pixel size of one rendered image in the figure.
    output_dir: default <root_dir>/eval.
    checkpoint: 'best' (held-out validation during training) or 'latest'.
  """
  if len(signal_indices) != 3:
    raise ValueError(f"interpolate.signal_indices needs 3 indices, got {signal_indices}.")
  for index in signal_indices:
    checks.non_negative_int("interpolate.signal_indices", index)
  for name, steps in (num_steps or {}).items():
    checks.non_negative_int(f"interpolate.num_steps['{name}']", steps)
  checks.positive_int("interpolate.subdivisions", subdivisions)
  checks.positive_int("interpolate.cell", cell)
  optimizer_settings = optimizers.check(dict(optimizer_settings or {}),
                                        "interpolate.optimizer_settings")
  output_dir = layout.eval_dir(root_dir, output_dir)
  layout.check_eval_dir(output_dir, "a tf-metainit-interpolate output")
  num_steps = dict({"standard": 100, "meta": 100}, **(num_steps or {}))
  setting = setting if setting is not None else task.default_setting
  signals = _corner_signals(task, signal_indices)
  inits, metas = baselines.build(task, root_dir, ("standard", "meta"),
                                 checkpoint=checkpoint)
  settings = dict({"standard": testtime.STANDARD_OPTIMIZER,
                   "meta": metas["meta"].optimizer}, **optimizer_settings)
  tto = testtime.TestTimeOptimizer(task)
  panels, report = [], {}
  for name in ("standard", "meta"):
    opt = settings[name]
    trace, finals = tto.run(inits[name], signals, opt, num_steps[name], setting,
                            num_steps[name], chunk=3)
    fitted = [[p[i] for p in finals[0]] for i in range(3)]
    report[name] = {"optimizer": opt.describe(), "num_steps": num_steps[name],
                    "corner_psnr": trace[-1].tolist()}
    rows = []
    for row in barycentric_grid(subdivisions):
      mixed = [functional.mix(fitted, w) for w in row]
      rows.append([np.clip(task.render(m, signals).numpy()[0], 0, 1) for m in mixed])
    panels.append(triangle_image(rows, cell))
  figure = Image.new("RGB", (panels[0].width * 2 + 20, panels[0].height + 20), "white")
  draw = ImageDraw.Draw(figure)
  for i, (panel, label) in enumerate(zip(panels, ("Standard init", "Meta init"))):
    figure.paste(panel, (i * (panel.width + 20), 20))
    draw.text((i * (panel.width + 20) + 4, 4), label, fill="black")
  # Swapped in whole, keeping what evaluate and appearance wrote into the folder.
  with files.atomic_directory(output_dir, replaces=OUTPUTS.__contains__) as out:
    files.save_image(figure, os.path.join(out, "interpolation.png"))
    files.write_json(os.path.join(out, "interpolation.json"), report)
  return report


def _corner_signals(task, signal_indices):
  """The held-out signals at the corners; a task with too few says which binding
  gives it more."""
  signals = task.test_signals()
  available = len(next(iter(signals.values())))
  needed = max(signal_indices) + 1
  if needed > available:
    binding = f"{type(task).__name__}.num_test"
    raise ValueError(f"interpolate.signal_indices = {tuple(signal_indices)} needs "
                     f"{needed} held-out test signals, but the task has {available} "
                     f"({binding}): set {binding} = {needed} or more "
                     "(--gin_bindings), or choose indices below the count.")
  return contract.take(signals, list(signal_indices))
