"""The tf-metainit-export job: a run's meta-learned init as an export (exports.py).

The init is fitted at test time as the run's record says (runs.py: its learned inner
rates, else its Meta optimizer), unless export.optimizer overrides it; the manifest
records the settings beside the run's hyperparameters and gin config.
"""

import os

import gin

from tf_metainit import checks
from tf_metainit import exports
from tf_metainit import layout
from tf_metainit import provenance
from tf_metainit import runs
from tf_metainit.meta import optimizers


@gin.configurable(denylist=["root_dir", "export_dir", "checkpoint"])
def export(root_dir, export_dir, task=gin.REQUIRED, optimizer=None, num_steps=None,
           checkpoint="best"):
  """Exports the meta-learned init of the run in `root_dir` to `export_dir`.

  Args:
    root_dir: a meta-training run.
    export_dir: output directory: new, empty or a previous export, which is replaced
      atomically; anything else is refused (exports.check_export_dir).
    task: the run's task (the binary binds the evaluated task).
    optimizer: the fitting signature's optimizer object (gin: @export/Adam() with
      export/Adam.learning_rate = 1e-4); default: the run record's test-time optimizer
      (its learned inner rates if it has them).
    num_steps: suggested number of fitting steps recorded in the manifest; default
      the run record's.
    checkpoint: 'best' (held-out validation during training) or 'latest'.
  A run trained with learned inner rates exports them as inner_lr_<i> in weights.npz.
  Returns:
    the manifest.
  """
  if task is gin.REQUIRED or task is None:
    raise ValueError("export.task is not set: bind it in gin (export.task = %TASK), or "
                     "run tf-metainit-export on a root_dir written by meta_train.")
  exports.check_export_dir(export_dir, root_dir)
  checks.optional(checks.non_negative_int, "export.num_steps", num_steps)
  if optimizer is not None:
    optimizers.check(optimizer, "export.optimizer")
  record = runs.read_record(root_dir)
  init = runs.load_init(task, root_dir, checkpoint)
  optimizer = optimizer or init.optimizer
  config_path = layout.config_path(root_dir)
  config_text = (provenance.read_config(config_path) if os.path.exists(config_path)
                 else None)
  extra = {
      "kind": "meta_init",
      "source": {"root_dir": os.path.abspath(root_dir), "checkpoint": init.source},
      "test_time": {"optimizer": optimizer.describe(),
                    "num_steps": num_steps or init.num_steps},
      "training": record["training"],
      # Which data trained, validated and tested the init (older runs: unrecorded).
      "splits": record.get("splits", {}),
  }
  return exports.export_params(task.field, init.params, export_dir, task=task,
                               optimizer=optimizer, manifest_extra=extra,
                               config_text=config_text)
