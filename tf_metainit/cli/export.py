r"""Exports a run's meta-learned init as a SavedModel plus weights.npz and manifest.json.

  tf-metainit-export --root_dir=/tmp/text --export_dir=/tmp/text_export

The run's own config.gin is read first, so the field is rebuilt exactly as trained;
--gin_file / --gin_bindings then override (e.g. export.optimizer = @export/Adam() with
export/Adam.learning_rate = 1e-4).
See tf_metainit/export.py for what is exported.
"""

from absl import flags

from tf_metainit.cli import common

common.define_run_flags()
common.define_checkpoint_flag()
flags.DEFINE_string("export_dir", None, "Output directory (replaced atomically).")
flags.mark_flag_as_required("export_dir")
flags.adopt_module_key_flags(common)  # --help lists them
FLAGS = flags.FLAGS


def main(argv):
  common.check_no_args(argv)
  from tf_metainit import export  # pylint: disable=g-import-not-at-top
  common.run_and_report(lambda: common.parse_run_config(
      FLAGS.root_dir, FLAGS.gin_file, FLAGS.gin_bindings, task_for=("export",)))
  common.run_and_report(lambda: export.export(FLAGS.root_dir, FLAGS.export_dir, checkpoint=FLAGS.checkpoint))
  print(f"Exported to {FLAGS.export_dir}")


def run():
  common.run(main, __name__)


if __name__ == "__main__":
  run()
