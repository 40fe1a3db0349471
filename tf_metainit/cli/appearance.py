r"""Appearance transfer, the appearance grid (seed Fig. 2) and camera-path GIFs of a
Phototourism run.

  tf-metainit-appearance --root_dir=runs/landmark_cpu \
      --gin_bindings="appearance.num_steps = 150"
"""

from tf_metainit.cli import common

run = common.figure_binary("appearance", __name__)

if __name__ == "__main__":
  run()
