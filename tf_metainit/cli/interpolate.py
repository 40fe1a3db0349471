r"""Weight-space interpolation between fields fitted from Standard and Meta inits.

  tf-metainit-interpolate --root_dir=/tmp/text \
      --gin_bindings='interpolate.num_steps = {"standard": 100, "meta": 10}'
"""

from absl import flags

from tf_metainit.cli import common

common.define_figure_binary()
flags.adopt_module_key_flags(common)  # --help lists them
main = common.figure_main("interpolate")


def run():
  common.run(main, __name__)


if __name__ == "__main__":
  run()
