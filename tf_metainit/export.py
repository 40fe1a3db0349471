"""Export of meta-learned inits and fitted fields for use without tf_metainit.

An export directory is a SavedModel with two framework-neutral files beside it:

  <export_dir>/saved_model.pb, variables/  tf.saved_model.load(export_dir); needs
                                           neither tf_metainit nor gin
  <export_dir>/weights.npz                 layer_{i}_kernel (fan_in, fan_out) and
                                           layer_{i}_bias (fan_out,), plus fixed
                                           encodings such as fourier_matrix
  <export_dir>/manifest.json               architecture, activation constants,
                                           coordinate convention, layer order, training
                                           hyperparameters, versions, signatures;
                                           written last

Serving signatures, by task (README "Exporting an init or a fitted field" has the
table). All but `render` come from the task's `export_signatures` hook, which runs
only when an optimizer is given:
  every field   render(coords float32 [N, in_dim]) -> {'values': [N, out_dim]}: the
                field's raw output (NeRF: rgb logits and density logit per point)
  image         adapt(image [H, W, C], num_steps) -> reconstruction, PSNR before/after
  ct            reconstruct(sinogram [V, R], angles [V], num_steps) -> image [R, R],
                sinogram loss and PSNR before/after
  shapenet      render_view(camera_to_world, focal, height, width) -> rgb, depth, acc;
                adapt(images [V, H, W, 3], cameras [V, 4, 4], focal, num_steps) ->
                renders [V, H, W, 3], PSNR before/after
  phototourism  render_rays(origins, directions, near, far), adapt(photo, ...)

Exports are atomic: everything is written to <export_dir>.tmp-<pid> beside the target,
which then replaces <export_dir> by two renames (the old export is moved aside first
and deleted once the new one is in place). A killed export leaves the previous one
intact; its leftovers are cleaned (or a moved-aside export restored) by the next
export to the same path (files.atomic_directory). Paths must be on a local filesystem
(os.rename).
"""

import copy
import inspect
import json
import os
import platform
import re
import signal
import time

from absl import logging
import gin
import keras
import numpy as np
import tensorflow as tf

import tf_metainit
from tf_metainit import checks
from tf_metainit import files
from tf_metainit import layout
from tf_metainit import provenance
from tf_metainit import runs
from tf_metainit import train
from tf_metainit.fields import functional
# Imported for their field types, which `load` rebuilds from a manifest by name.
from tf_metainit.fields import mlp  # pylint: disable=unused-import
from tf_metainit.fields import siren  # pylint: disable=unused-import
from tf_metainit.meta import inner
from tf_metainit.meta import learned_lr
from tf_metainit.meta import optimizers

FORMAT = "tf_metainit.export/1"
MANIFEST = "manifest.json"
WEIGHTS = "weights.npz"
# Signatures that run the export's test-time optimizer; the manifest records it.
FITTING_SIGNATURES = ("adapt", "reconstruct")
# Test hook: kill the process after this stage ('saved_model' or 'weights') to check
# that an interrupted export leaves the previous one intact.
CRASH_ENV = "TF_METAINIT_EXPORT_CRASH_AFTER"

_KERNEL = re.compile(r"^kernel_(\d+)$")
_BIAS = re.compile(r"^bias_(\d+)$")


def _maybe_crash(stage):
  if os.environ.get(CRASH_ENV) == stage:
    logging.warning("%s=%s: killing the export on purpose.", CRASH_ENV, stage)
    os.kill(os.getpid(), signal.SIGKILL)


# --- weights and manifest --------------------------------------------------------------


def weight_arrays(field, params):
  """npz arrays and the manifest's layer list for `params` (trainable_variables order).

  Trainable variables kernel_i / bias_i become layer_{i}_kernel / layer_{i}_bias; fixed
  (non-trainable) variables keep their name (e.g. fourier_matrix).
  """
  variables = field.trainable_variables
  if len(variables) != len(params):
    raise ValueError(f"{len(params)} params for a field with {len(variables)} variables.")
  arrays, layers = {}, {}
  for v, p in zip(variables, params):
    name = v.name
    if tuple(p.shape) != tuple(v.shape):
      raise ValueError(f"Param {name} has shape {tuple(p.shape)}, the field's is "
                       f"{tuple(v.shape)}; per-signal (batched) params must be split "
                       "first (export.unbatch).")
    kernel, bias = _KERNEL.match(name), _BIAS.match(name)
    if not (kernel or bias):
      raise NotImplementedError(f"Cannot name field variable {name!r} in the export; "
                                "fields must use kernel_<i> / bias_<i>.")
    index = int((kernel or bias).group(1))
    key = f"layer_{index}_{'kernel' if kernel else 'bias'}"
    arrays[key] = np.asarray(p, np.float32)
    layers.setdefault(index, {})[key.rsplit("_", 1)[-1]] = key
  constants = {}
  for v in field.non_trainable_variables:
    arrays[v.name] = np.asarray(v, np.float32)
    constants[v.name] = list(arrays[v.name].shape)
  order = []
  for i in sorted(layers):
    kernel = arrays[layers[i]["kernel"]]
    order.append({"kernel": layers[i]["kernel"], "bias": layers[i]["bias"],
                  "shape": list(kernel.shape),
                  "activation": field.layer_activation(i == len(layers) - 1)})
  return arrays, order, constants


def _json_safe(value):
  """Gin values (references, tuples, numpy scalars) as JSON."""
  if isinstance(value, dict):
    return {str(k): _json_safe(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_json_safe(v) for v in value]
  if isinstance(value, np.generic):
    return value.item()
  if value is None or isinstance(value, (bool, int, float, str)):
    return value
  return str(value)


def versions():
  return {"tf_metainit": tf_metainit.__version__, "tensorflow": tf.__version__,
          "keras": keras.__version__, "numpy": np.__version__,
          "python": platform.python_version()}


def _spec_json(spec):
  """Shape None: any rank (signatures that check their inputs' rank themselves)."""
  shape = None if spec.shape.rank is None else spec.shape.as_list()
  return {"shape": shape, "dtype": spec.dtype.name}


def _signature_json(fn):
  """Inputs and outputs of a signature as the SavedModel records them."""
  concrete = fn.get_concrete_function()
  inputs = {s.name: _spec_json(s) for s in concrete.structured_input_signature[0]}
  outputs = {k: _spec_json(tf.TensorSpec.from_tensor(t))
             for k, t in concrete.structured_outputs.items()}
  doc = (fn.python_function.__doc__ or "").strip()
  return {"inputs": inputs, "outputs": outputs, "doc": " ".join(doc.split())}


# --- the SavedModel --------------------------------------------------------------------


class _ExportModule(tf.Module):
  """Variables holding the weights, and signatures that trace `field.apply` over them."""

  def __init__(self, field, params):
    super().__init__(name="field")
    self.params = [tf.Variable(np.asarray(p, np.float32), trainable=False,
                               name=f"param_{i}") for i, p in enumerate(params)]
    # Fixed encodings the field reads itself (e.g. the Fourier matrix); tracked so
    # the traced functions may capture them.
    self.constants = list(field.non_trainable_variables)
    out_dim = field.out_dim

    @tf.function(input_signature=[tf.TensorSpec([None, field.in_dim], tf.float32,
                                                name="coords")])
    def render(coords):
      """The field at coords [N, in_dim] (convention: manifest 'task') -> [N, out_dim]."""
      values = field.apply(self.params, coords)
      return {"values": tf.ensure_shape(values, [None, out_dim])}

    self.render = render


def export_params(field, params, export_dir, task=None, optimizer=None,
                  manifest_extra=None, config_text=None):
  """Exports one set of field weights; returns the manifest.

  Args:
    field: the Keras field the weights belong to (its architecture and constants).
    params: unbatched weights in `field.trainable_variables` order.
    export_dir: target directory, replaced atomically.
    task: optional task: its `describe()` (coordinates) goes into the manifest and
      its `export_signatures` hook adds signatures such as `render_view` and, with
      `optimizer`, the fitting ones (`adapt`, `reconstruct`).
    optimizer: functional optimizer (meta/optimizers.py) baked into `adapt`; None
      exports no fitting signature.
    manifest_extra: more manifest entries (source, hyperparameters, ...).
    config_text: the gin config of the run, stored verbatim in the manifest.
  """
  check_export_dir(export_dir)
  module = _ExportModule(field, params)
  # Meta-learned inner rates (meta/learned_lr.py) are variables `adapt` reads.
  module.inner_rates = learned_lr.rates_of(optimizer)
  signatures = {"render": module.render}
  hook = getattr(task, "export_signatures", None)
  if hook is not None:
    extra = hook(module.params, optimizer, inner.fit)
    # Fitting needs an optimizer to bake in; rendering does not.
    extra = {k: v for k, v in extra.items()
             if optimizer is not None or k not in FITTING_SIGNATURES}
    for name, fn in extra.items():
      setattr(module, name, fn)
    signatures.update(extra)
  arrays, layers, constants = weight_arrays(field, params)
  for i, rate in enumerate(module.inner_rates):
    arrays[f"inner_lr_{i}"] = np.asarray(rate)
  manifest = {
      "format": FORMAT,
      "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
      "field": field.describe(),
      "task": task.describe() if task is not None else {},
      "weights": WEIGHTS,
      "layers": layers,
      "constants": constants,
      "signatures": {name: _signature_json(fn) for name, fn in signatures.items()},
      "versions": versions(),
  }
  for name in FITTING_SIGNATURES:
    if name in manifest["signatures"]:
      manifest["signatures"][name]["optimizer"] = optimizer.describe()
  manifest.update(_json_safe(manifest_extra or {}))
  if config_text is not None:
    manifest["gin_config"] = config_text
  with files.atomic_directory(export_dir) as tmp:
    tf.saved_model.save(module, tmp, signatures=signatures)
    _maybe_crash("saved_model")
    np.savez(os.path.join(tmp, WEIGHTS), **arrays)
    _maybe_crash("weights")
    with open(os.path.join(tmp, MANIFEST), "w") as f:
      json.dump(_json_safe(manifest), f, indent=1)
  logging.info("Exported %s (signatures: %s)", export_dir, ", ".join(signatures))
  return manifest


class ExportError(ValueError):
  pass


def check_export_dir(export_dir, root_dir=None):
  """Refuses a target an export may not replace: a file, a folder holding anything but
  a previous export of this package, or (with `root_dir`) a path inside or above the
  run, whose checkpoints the swap would delete."""
  target = os.path.realpath(export_dir)
  if root_dir is not None:
    run = os.path.realpath(root_dir)
    if os.path.commonpath([target, run]) in (target, run):
      raise ExportError(f"--export_dir={export_dir} is inside or above the run "
                        f"{root_dir}; export outside it (e.g. {run}_export).")
  problem = files.target_dir_problem(target, _is_export, "a tf_metainit export")
  if problem:
    raise ExportError(f"--export_dir={export_dir} {problem}")


def _is_export(directory):
  try:
    with open(os.path.join(directory, MANIFEST)) as f:
      return json.load(f).get("format") == FORMAT
  except (OSError, ValueError, AttributeError):
    return False


def load(export_dir):
  """(field, params, manifest, learned inner optimizer or None) of an export of this
  package, rebuilt from weights.npz and manifest.json alone (nothing is executed)."""
  if not _is_export(export_dir):
    raise ExportError(f"{export_dir} is not a tf_metainit export (no {MANIFEST} of "
                      f"format {FORMAT}); give a folder tf-metainit-export wrote.")
  with open(os.path.join(export_dir, MANIFEST)) as f:
    manifest = json.load(f)
  with np.load(os.path.join(export_dir, manifest["weights"]), allow_pickle=False) as npz:
    arrays = {k: npz[k] for k in npz.files}
  field = functional.from_description(manifest["field"], {
      name: arrays[name] for name in manifest["constants"]})
  params = []
  for layer in manifest["layers"]:
    params += [tf.constant(arrays[layer["kernel"]]), tf.constant(arrays[layer["bias"]])]
  rates = [arrays[f"inner_lr_{i}"] for i in range(len(arrays))
           if f"inner_lr_{i}" in arrays]
  learned = (learned_lr.from_arrays(rates, [p.shape for p in params]) if rates
             else None)
  return field, params, manifest, learned


def unbatch(finals):
  """TestTimeOptimizer.run's per-chunk batched params -> one params list per signal."""
  out = []
  for chunk in finals:
    for j in range(int(chunk[0].shape[0])):
      out.append([p[j] for p in chunk])
  return out


def export_fitted(task, params_list, out_dir, names=None, manifest_extra=None,
                  per_signal_extra=None, optimizer=None):
  """Exports fitted fields, one directory per signal: <out_dir>/<name>/.

  Args:
    task: the task the fields were fitted in.
    params_list: one unbatched params list per signal (see `unbatch`).
    out_dir: parent directory of the exports.
    names: directory names (default signal_000, signal_001, ...).
    manifest_extra: manifest entries shared by all (init, optimizer, steps, ...).
    per_signal_extra: optional list of one dict per signal (e.g. its PSNR).
    optimizer: if given, also export `adapt` (fine-tuning from the fitted field).
  Returns:
    the export directories.
  """
  names = list(names or [f"signal_{k:03d}" for k in range(len(params_list))])
  per_signal_extra = list(per_signal_extra or [{}] * len(params_list))
  if not len(names) == len(per_signal_extra) == len(params_list):
    raise ValueError(f"{len(params_list)} fitted fields, {len(names)} names and "
                     f"{len(per_signal_extra)} per-signal manifest entries.")
  dirs = []
  for name, params, own in zip(names, params_list, per_signal_extra):
    extra = {"kind": "fitted", "name": name, **(manifest_extra or {}), **own}
    path = os.path.join(out_dir, name)
    export_params(task.field, params, path, task=task, optimizer=optimizer,
                  manifest_extra=extra)
    dirs.append(path)
  return dirs


# --- the run's meta-learned init -------------------------------------------------------


def adapt_settings(task, optimizer=None, num_steps=None):
  """(optimizer, suggested steps) of the Meta init.

  Defaults: evaluate's gin-bound optimizer_settings / num_steps for 'meta' if the
  config has them (e.g. an eval config given to the binary), else the run's own inner
  loop: meta_train.inner_optimizer and its inner steps.
  """
  setting = task.default_setting
  if optimizer is not None:
    optimizers.check(optimizer, "export.optimizer", "export")
  else:
    bound = optimizers.check(_built("evaluate.optimizer_settings") or {},
                             "evaluate.optimizer_settings", "")
    if "meta" in bound:
      optimizer = runs.per_setting(bound["meta"], setting)
    else:
      # The init was trained for this inner loop (CT: SGD at lr 10), not for
      # evaluate's paper default of SGD 1e-2.
      optimizer = run_inner_optimizer()
  if num_steps is None:
    steps = _bound("evaluate.num_steps")
    if isinstance(steps, dict):
      steps = runs.per_setting(steps["meta"], setting) if "meta" in steps else None
    num_steps = steps or training_hyperparameters()["inner_steps"]
  return optimizer, (int(num_steps) if num_steps else None)


def training_hyperparameters():
  """meta_train's arguments as the current gin config sets them (defaults included)."""
  params = inspect.signature(train.meta_train).parameters
  values = {k: p.default for k, p in params.items()
            if k != "root_dir" and p.default is not inspect.Parameter.empty}
  # Unresolved, so references print as '@ImageRegression()' instead of being built.
  values.update(gin.get_bindings("meta_train", resolve_references=False))
  # The inner optimizer as its name and learning rate, not its gin reference.
  values["inner_optimizer"] = run_inner_optimizer().describe()
  return values


def run_inner_optimizer():
  """meta_train.inner_optimizer as the current gin config builds it."""
  optimizer = _built("meta_train.inner_optimizer")
  if optimizer is None:
    optimizer = inspect.signature(train.meta_train).parameters["inner_optimizer"].default
  return optimizers.check(optimizer, "meta_train.inner_optimizer", "inner")


def _bound(selector):
  """A gin binding's value, or None if unbound (without evaluating references)."""
  try:
    return gin.query_parameter(selector)
  except ValueError:
    return None


def _built(selector):
  """A gin binding's value with its references evaluated, or None if unbound; for
  cheap objects such as optimizers (a deep copy evaluates them, as gin itself does)."""
  return copy.deepcopy(_bound(selector))


@gin.configurable(denylist=["root_dir", "export_dir", "checkpoint"])
def export(root_dir, export_dir, task=gin.REQUIRED, optimizer=None, num_steps=None,
           checkpoint="best"):
  """Exports the meta-learned init of the run in `root_dir` to `export_dir`.

  Args:
    root_dir: a meta-training run (its latest checkpoint is the init).
    export_dir: output directory: new, empty or a previous export, which is replaced
      atomically; anything else is refused (check_export_dir).
    task: the run's task (the binary binds the evaluated task).
    optimizer: the `adapt` signature's optimizer object (gin: @export/Adam() with
      export/Adam.learning_rate = 1e-4); default: the learned inner rates if the run
      has them, else adapt_settings (an eval config's Meta optimizer, else the run's
      own inner optimizer).
    num_steps: suggested number of adapt steps recorded in the manifest; default
      evaluate's Meta budget if bound, else the meta-training inner steps.
    checkpoint: 'best' (held-out validation during training) or 'latest'.
  A run trained with learned inner rates exports them: `adapt` uses them unless
  `optimizer` is given, and weights.npz holds them as inner_lr_<i>.
  Returns:
    the manifest.
  """
  if task is gin.REQUIRED or task is None:
    raise ValueError("export.task is not set: bind it in gin (export.task = %TASK), or "
                     "run tf-metainit-export on a root_dir written by meta_train.")
  check_export_dir(export_dir, root_dir)
  checks.optional(checks.non_negative_int, "export.num_steps", num_steps)
  adapt_optimizer, steps = adapt_settings(task, optimizer, num_steps)
  params, learned, path = runs.load_meta_init(task, root_dir, checkpoint)
  test_time = {"optimizer": adapt_optimizer.name,
               "learning_rate": float(adapt_optimizer.learning_rate), "num_steps": steps}
  if learned is not None and optimizer is None:
    adapt_optimizer = learned
    test_time = dict(learned.describe(), num_steps=steps)
  config_path = layout.config_path(root_dir)
  config_text = (provenance.read_config(config_path) if os.path.exists(config_path)
                 else None)
  extra = {
      "kind": "meta_init",
      "source": {"root_dir": os.path.abspath(root_dir),
                 "checkpoint": path},
      "test_time": test_time,
      "training": training_hyperparameters(),
  }
  return export_params(task.field, params, export_dir, task=task,
                       optimizer=adapt_optimizer,
                       manifest_extra=extra, config_text=config_text)
