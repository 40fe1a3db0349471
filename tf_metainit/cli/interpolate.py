r"""Weight-space interpolation between fields fitted from Standard and Meta inits.

  tf-metainit-interpolate --root_dir=/tmp/text \
      --gin_bindings='interpolate.num_steps = {"standard": 100, "meta": 10}'
"""

from absl import flags

from tf_metainit.cli import common

common.define_run_flags()
common.define_checkpoint_flag()
flags.adopt_module_key_flags(common)  # --help lists them
FLAGS = flags.FLAGS


def main(argv):
  common.check_no_args(argv)
  from tf_metainit import interpolate  # pylint: disable=g-import-not-at-top
  common.run_and_report(lambda: common.parse_run_config(
      FLAGS.root_dir, FLAGS.gin_file, FLAGS.gin_bindings, task_for=("interpolate",)))
  print(common.run_and_report(lambda: interpolate.interpolate(FLAGS.root_dir, checkpoint=FLAGS.checkpoint)))


def run():
  common.run(main, __name__)


if __name__ == "__main__":
  run()
