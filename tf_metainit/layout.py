"""A run directory's layout, named once (existing runs are read with these very paths).

  <root_dir>/run.json              the run record: task, field, inner loop, test-time
                                   settings, best checkpoint (runs.py)
  <root_dir>/config.gin            the gin config the run was trained with
  <root_dir>/operative_config.gin  the values gin actually used in training
  <root_dir>/config_history/       every config the run trained under, by first step
  <root_dir>/train.lock            PID and host of the trainer running now
  <root_dir>/train/checkpoints/    meta-training checkpoints (the latest resumes)
  <root_dir>/train/best/           the best init by held-out validation, best.json
  <root_dir>/eval/                 evaluation and interpolation outputs (default)
  <eval_dir>/fitted/<init>/<setting>/  exported fields fitted at evaluation
"""

import os

from tf_metainit import files


def config_path(root_dir):
  return os.path.join(root_dir, "config.gin")


def record_path(root_dir):
  return os.path.join(root_dir, "run.json")


def operative_config_path(root_dir):
  return os.path.join(root_dir, "operative_config.gin")


def train_dir(root_dir):
  return os.path.join(root_dir, "train")


def checkpoints_dir(root_dir):
  return os.path.join(train_dir(root_dir), "checkpoints")


def best_dir(root_dir):
  return os.path.join(train_dir(root_dir), "best")


def eval_dir(root_dir, output_dir=None):
  """`output_dir` if given (a user's choice), else the run's own eval folder."""
  return output_dir or os.path.join(root_dir, "eval")


# The record each command writing into <root_dir>/eval leaves there, with keys it
# always writes: a folder holding one is this package's evaluation output.
EVAL_RECORDS = {"results.json": ("settings", "report_step", "inits"),
                "appearance.json": ("photo_index", "corner_indices", "camera_indices"),
                "interpolation.json": ("standard", "meta")}


def check_eval_dir(output_dir, what):
  """Refuses, before the long work, an output folder holding anything but this
  package's evaluation outputs (`what` names the command's)."""
  problem = files.target_dir_problem(output_dir, _is_eval_output, what)
  if problem:
    raise ValueError(f"{output_dir} {problem}")


def _is_eval_output(folder):
  return any(files.holds_record(folder, name, keys)
             for name, keys in EVAL_RECORDS.items())


def fitted_dir(eval_directory, init_name, setting):
  # ':' (extra runs are 'meta:<label>') is not portable in folder names.
  return os.path.join(eval_directory, "fitted", init_name.replace(":", "_"), str(setting))


def config_history_dir(root_dir):
  """config_history/step-<N>.gin: the config in force from outer step N on."""
  return os.path.join(root_dir, "config_history")


def lock_path(root_dir):
  """Held by the one trainer of the run (provenance.RunLock)."""
  return os.path.join(root_dir, "train.lock")
