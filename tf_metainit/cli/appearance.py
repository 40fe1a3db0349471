r"""Appearance transfer, the appearance grid (seed Fig. 2) and camera-path GIFs of a
Phototourism run.

  tf-metainit-appearance --root_dir=runs/landmark_cpu \
      --gin_bindings="appearance.num_steps = 150"
"""

from absl import flags

from tf_metainit.cli import common

common.define_figure_binary()
flags.adopt_module_key_flags(common)  # --help lists them
main = common.figure_main("appearance")


def run():
  common.run(main, __name__)


if __name__ == "__main__":
  run()
