"""What the procedural image sets (text.py, dead_leaves.py) share."""

import numpy as np


def images(render, split, num_images, resolution, seed, start, **render_kwargs):
  """Images start..start+num_images-1 of `render(index, split, resolution, seed,
  **render_kwargs)` as float32 (N, H, W, 3) in memory."""
  out = np.empty((num_images, resolution, resolution, 3), np.float32)
  for i in range(num_images):
    out[i] = render(start + i, split, resolution, seed, **render_kwargs)
  return out
