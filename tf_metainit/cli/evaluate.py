r"""Test-time optimisation from several inits on held-out signals; writes <root_dir>/eval.

  tf-metainit-evaluate --root_dir=/tmp/text --gin_file=image/text_cpu_eval.gin

The run's own config.gin is read first, so the task is rebuilt exactly as trained;
--gin_file / --gin_bindings then override (e.g. evaluate.num_steps = 500).
"""

from absl import flags

from tf_metainit.cli import common

common.define_run_flags()
common.define_checkpoint_flag()
flags.adopt_module_key_flags(common)  # --help lists them
FLAGS = flags.FLAGS


def main(argv):
  common.check_no_args(argv)
  from tf_metainit import distribute  # pylint: disable=g-import-not-at-top
  from tf_metainit import evaluate  # pylint: disable=g-import-not-at-top
  common.run_and_report(
      lambda: common.parse_run_config(FLAGS.root_dir, FLAGS.gin_file, FLAGS.gin_bindings))
  # 'mirrored' needs its logical devices before TensorFlow starts. Signals are
  # evaluated independently, so one machine's devices are what helps.
  strategy = common.run_and_report(
      lambda: distribute.from_gin("evaluate", allowed=("default", "mirrored")))
  common.run_and_report(lambda: evaluate.evaluate(
      FLAGS.root_dir, checkpoint=FLAGS.checkpoint, strategy=strategy))


def run():
  common.run(main, __name__)


if __name__ == "__main__":
  run()
