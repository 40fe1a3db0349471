r"""Appearance transfer, the appearance grid (seed Fig. 2) and camera-path GIFs of a
Phototourism run.

  tf-metainit-appearance --root_dir=runs/landmark_cpu \
      --gin_bindings="appearance.num_steps = 150"
"""

from absl import flags

from tf_metainit.cli import common

common.define_run_flags()
common.define_checkpoint_flag()
flags.adopt_module_key_flags(common)  # --help lists them
FLAGS = flags.FLAGS


def main(argv):
  common.check_no_args(argv)
  from tf_metainit import appearance  # pylint: disable=g-import-not-at-top
  common.run_and_report(lambda: common.parse_run_config(
      FLAGS.root_dir, FLAGS.gin_file, FLAGS.gin_bindings, task_for=("appearance",)))
  print(common.run_and_report(lambda: appearance.appearance(
      FLAGS.root_dir, checkpoint=FLAGS.checkpoint)))


def run():
  common.run(main, __name__)


if __name__ == "__main__":
  run()
