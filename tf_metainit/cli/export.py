r"""Exports a run's meta-learned init as a SavedModel plus weights.npz and manifest.json.

  tf-metainit-export --root_dir=/tmp/text --export_dir=/tmp/text_export

The run's own config.gin is read first, so the field is rebuilt exactly as trained;
--gin_file / --gin_bindings then override (e.g. export.optimizer = ('adam', 1e-4)).
See tf_metainit/export.py for what is exported.
"""

from absl import app
from absl import flags
import gin

from tf_metainit.cli import common

flags.DEFINE_string("root_dir", None, "A meta-training run directory.")
flags.DEFINE_string("export_dir", None, "Output directory (replaced atomically).")
common.define_gin_flags()
flags.mark_flags_as_required(["root_dir", "export_dir"])
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  from tf_metainit import export  # pylint: disable=g-import-not-at-top

  def parse():
    common.parse_run_config(FLAGS.root_dir, FLAGS.gin_file, FLAGS.gin_bindings)
    gin.bind_parameter("export.task", gin.query_parameter("evaluate.task"))

  common.run_and_report(parse)
  common.run_and_report(lambda: export.export(FLAGS.root_dir, FLAGS.export_dir))
  print(f"Exported to {FLAGS.export_dir}")


def run():
  app.run(main)


if __name__ == "__main__":
  run()
