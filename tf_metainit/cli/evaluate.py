r"""Test-time optimisation from several inits on held-out signals; writes <root_dir>/eval.

  tf-metainit-evaluate --root_dir=/tmp/text --gin_file=image/eval.gin

The run's own config.gin is read first, so the task is rebuilt exactly as trained;
--gin_file / --gin_bindings then override (e.g. evaluate.num_steps = 500).
"""

import os

from absl import app
from absl import flags
import gin

from tf_metainit.cli import common

flags.DEFINE_string("root_dir", None, "A meta-training run directory.")
common.define_gin_flags()
flags.mark_flag_as_required("root_dir")
FLAGS = flags.FLAGS


def parse_run_config(root_dir, gin_files, gin_bindings):
  """Parses <root_dir>/config.gin, then the user's overrides."""
  config = os.path.join(root_dir, "config.gin")
  if not os.path.exists(config):
    raise common.ConfigError(
        f"{config} not found: --root_dir must be a directory written by "
        "tf-metainit-train (it saves config.gin there).")
  common.parse_gin([], [], extra_files=[config])
  try:
    gin.query_parameter("evaluate.task")
  except ValueError:
    # The evaluated task is the trained one unless a config says otherwise.
    gin.bind_parameter("evaluate.task", gin.query_parameter("meta_train.task"))
  common.parse_gin(gin_files, gin_bindings)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  from tf_metainit import evaluate  # pylint: disable=g-import-not-at-top
  common.run_and_report(
      lambda: parse_run_config(FLAGS.root_dir, FLAGS.gin_file, FLAGS.gin_bindings))
  common.run_and_report(lambda: evaluate.evaluate(FLAGS.root_dir))


def run():
  app.run(main)


if __name__ == "__main__":
  run()
