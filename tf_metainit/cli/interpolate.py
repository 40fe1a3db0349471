r"""Weight-space interpolation between fields fitted from Standard and Meta inits.

  tf-metainit-interpolate --root_dir=/tmp/text \
      --gin_bindings='interpolate.num_steps = {"standard": 100, "meta": 10}'
"""

from tf_metainit.cli import common

run = common.figure_binary("interpolate", __name__)

if __name__ == "__main__":
  run()
