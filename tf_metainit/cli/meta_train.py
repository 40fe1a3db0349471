r"""Meta-trains an initialization.

  tf-metainit-train --root_dir=/tmp/text --gin_file=image/text_cpu.gin \
      --gin_bindings='meta_train.num_iterations = 100'
  # on every local GPU (or 2 logical CPUs), or on the workers of TF_CONFIG:
  tf-metainit-train ... --gin_bindings="train/distribute.strategy = 'mirrored'"
  TF_CONFIG='{...}' tf-metainit-train ... \
      --gin_bindings="train/distribute.strategy = 'multi_worker'"
"""

from absl import flags

from tf_metainit.cli import common

common.define_run_flags("Run directory (checkpoints, summaries, configs).")
flags.DEFINE_bool("accept_config_changes", False, "Resume although the training "
                  "bindings differ from the run's config.gin; the new values take "
                  "effect and config_history/ keeps both.")
flags.adopt_module_key_flags(common)  # --help lists them
FLAGS = flags.FLAGS


def main(argv):
  common.check_no_args(argv)
  from tf_metainit import distribute  # pylint: disable=g-import-not-at-top
  from tf_metainit import train  # pylint: disable=g-import-not-at-top
  common.run_and_report(lambda: common.parse_gin(FLAGS.gin_file, FLAGS.gin_bindings))
  # Before anything builds a TF op: logical devices and the worker cluster are fixed
  # when TensorFlow starts, and the field's weights must be made in the scope.
  strategy = common.run_and_report(lambda: distribute.from_gin("train"))
  with strategy.scope():
    config = common.run_and_report(train.TrainConfig)
    common.run_and_report(lambda: train.Trainer(
        FLAGS.root_dir, config, strategy, FLAGS.accept_config_changes).run())


def run():
  # The trainer stops after its step and saves a checkpoint: give it that long.
  common.run(main, __name__, stop_grace=10.0)


if __name__ == "__main__":
  run()
