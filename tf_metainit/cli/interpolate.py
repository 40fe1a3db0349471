r"""Weight-space interpolation between fields fitted from Standard and Meta inits.

  tf-metainit-interpolate --root_dir=/tmp/text \
      --gin_bindings='interpolate.num_steps = {"standard": 100, "meta": 10}'
"""

from absl import app
from absl import flags
import gin

from tf_metainit.cli import common

flags.DEFINE_string("root_dir", None, "A meta-training run directory.")
common.define_gin_flags()
flags.mark_flag_as_required("root_dir")
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  from tf_metainit import interpolate  # pylint: disable=g-import-not-at-top

  def parse():
    common.parse_run_config(FLAGS.root_dir, FLAGS.gin_file, FLAGS.gin_bindings)
    gin.bind_parameter("interpolate.task", gin.query_parameter("evaluate.task"))

  common.run_and_report(parse)
  print(common.run_and_report(lambda: interpolate.interpolate(FLAGS.root_dir)))


def run():
  app.run(main)


if __name__ == "__main__":
  run()
