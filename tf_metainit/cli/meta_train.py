r"""Meta-trains an initialization.

  tf-metainit-train --root_dir=/tmp/text --gin_file=image/text_cpu.gin \
      --gin_bindings='meta_train.num_iterations = 100'
"""

from absl import app
from absl import flags

from tf_metainit.cli import common

flags.DEFINE_string("root_dir", None, "Run directory (checkpoints, summaries, configs).")
common.define_gin_flags()
flags.mark_flag_as_required("root_dir")
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  from tf_metainit import train  # pylint: disable=g-import-not-at-top
  common.run_and_report(lambda: common.parse_gin(FLAGS.gin_file, FLAGS.gin_bindings))
  common.run_and_report(lambda: train.meta_train(FLAGS.root_dir))


def run():
  app.run(main)


if __name__ == "__main__":
  run()
