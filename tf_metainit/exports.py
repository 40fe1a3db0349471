"""The export format: meta-learned inits and fitted fields for use without tf_metainit.

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

Serving signatures, by task (docs/export.md, "Serving signatures", has the table).
`render` is every field's; the task's `export_signatures` hook adds rendering ones,
and its `fit_signature` the fitting one (written here, once for every task), exported
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

import inspect
import json
import os
import platform
import re
import signal
import time
import zipfile
import zlib

from absl import logging
import keras
import numpy as np
import tensorflow as tf

import tf_metainit
from tf_metainit import files
from tf_metainit import runs
from tf_metainit import testtime
from tf_metainit.fields import functional
# Imported for their field types, which `load` rebuilds from a manifest by name.
from tf_metainit.fields import mlp  # pylint: disable=unused-import
from tf_metainit.fields import siren  # pylint: disable=unused-import
from tf_metainit.meta import inner
from tf_metainit.meta import learned_lr

FORMAT = "tf_metainit.export/1"
MANIFEST = "manifest.json"
WEIGHTS = "weights.npz"
# Signatures that run the export's test-time optimizer; the manifest records it.
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


def _layer_keys(field):
  """(layer index, npz name) of each trainable variable: kernel_i -> layer_i_kernel."""
  keys = []
  for v in field.trainable_variables:
    kernel, bias = _KERNEL.match(v.name), _BIAS.match(v.name)
    if not (kernel or bias):
      raise NotImplementedError(f"Cannot name field variable {v.name!r} in the export; "
                                "fields must use kernel_<i> / bias_<i>.")
    index = int((kernel or bias).group(1))
    keys.append((index, f"layer_{index}_{'kernel' if kernel else 'bias'}"))
  return keys


def param_names(field):
  """The export's names of the field's weights, in params order (layer_0_kernel, ...)."""
  return [key for _, key in _layer_keys(field)]


def weight_arrays(field, params):
  """npz arrays and the manifest's layer list for `params` (trainable_variables order).

  Trainable variables kernel_i / bias_i become layer_{i}_kernel / layer_{i}_bias; fixed
  (non-trainable) variables keep their name (e.g. fourier_matrix).
  """
  variables = field.trainable_variables
  if len(variables) != len(params):
    raise ValueError(f"{len(params)} params for a field with {len(variables)} variables.")
  arrays, layers = {}, {}
  for v, p, (index, key) in zip(variables, params, _layer_keys(field)):
    if tuple(p.shape) != tuple(v.shape):
      raise ValueError(f"Param {v.name} has shape {tuple(p.shape)}, the field's is "
                       f"{tuple(v.shape)}; per-signal (batched) params must be split "
                       "first (testtime.unbatch).")
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
    task: optional task: its `describe()` (coordinates) goes into the manifest, its
      `export_signatures` add signatures such as `render_view` and, with `optimizer`,
      its `fit_signature` the fitting one (`adapt`, CT's `reconstruct`).
    optimizer: functional optimizer (meta/optimizers.py) baked into the fitting
      signature; None exports none.
    manifest_extra: more manifest entries (source, hyperparameters, ...).
    config_text: the gin config of the run, stored verbatim in the manifest.
  """
  check_export_dir(export_dir)
  module = _ExportModule(field, params)
  # Meta-learned inner rates (meta/learned_lr.py) are variables `adapt` reads.
  module.inner_rates = learned_lr.rates_of(optimizer)
  signatures = {"render": module.render}
  fitting = None
  if task is not None:
    signatures.update(task.export_signatures(module.params))
    # Fitting needs an optimizer to bake in; rendering does not.
    spec = task.fit_signature() if optimizer is not None else None
    if spec is not None:
      fitting = spec.name
      signatures[fitting] = fitting_function(task, module.params, optimizer, spec)
  for name, fn in signatures.items():
    setattr(module, name, fn)
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
  if fitting is not None:
    manifest["signatures"][fitting]["optimizer"] = optimizer.describe()
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


def fitting_function(task, params, optimizer, spec):
  """The SavedModel function of a task's contract.FitSignature: its inputs and a
  num_steps, the signal they make fitted from `params` (tf.Variables) with
  `optimizer` through the task's own inner loop (meta/inner.py's fit, seed 0), and the
  outputs the task reports."""

  def fit(*args):
    *inputs, num_steps = args
    signals = spec.signals(*inputs, num_steps)
    start = functional.batch_params(params, 1)
    fitted = inner.fit(task, start, signals, num_steps, optimizer, seed=0,
                       setting=spec.setting).params
    return spec.outputs(start, fitted, signals, inputs)

  specs = list(spec.inputs) + [tf.TensorSpec([], tf.int32, name="num_steps")]
  # The signature's argument names are the specs' (SavedModel keys its inputs by them).
  fit.__signature__ = inspect.Signature(
      [inspect.Parameter(s.name, inspect.Parameter.POSITIONAL_OR_KEYWORD)
       for s in specs])
  fit.__doc__ = spec.doc
  return tf.function(fit, input_signature=specs)


class ExportError(ValueError):
  pass


def check_export_dir(export_dir, root_dir=None):
  """Refuses a target an export may not replace: a file, a folder holding anything but
  a previous export of this package, or (with `root_dir`) a path inside or above the
  run, whose checkpoints the swap would delete."""
  try:
    target = files.resolve_target(export_dir)
  except files.TargetError as e:
    raise ExportError(f"--export_dir={export_dir} {e.problem}") from None
  if root_dir is not None:
    run = os.path.realpath(root_dir)
    if os.path.commonpath([target, run]) in (target, run):
      raise ExportError(f"--export_dir={export_dir} is inside or above the run "
                        f"{root_dir}; export outside it (e.g. {run}_export).")
  problem = files.target_dir_problem(target, is_export, "a tf_metainit export")
  if problem:
    raise ExportError(f"--export_dir={export_dir} {problem}")


def is_export(directory):
  try:
    with open(os.path.join(directory, MANIFEST)) as f:
      return json.load(f).get("format") == FORMAT
  except (OSError, ValueError, AttributeError):
    return False


# --- reading an export -----------------------------------------------------------------
# An export may come from anywhere (a shared folder, a download, a hand edit): its two
# files are checked against each other before anything is built, so a damaged one is
# one ExportError naming the fault, not a traceback, a huge allocation or a NaN fit.

_LAYER_PARTS = ("kernel", "bias")
# {key: (JSON type, how the error names it)} every manifest has.
_REQUIRED = {"field": (dict, "an object"), "layers": (list, "a list of layers"),
             "weights": (str, "a file name"), "constants": (dict, "an object")}


def _broken(export_dir, problem):
  return ExportError(f"Export {export_dir}: {problem}. Re-export it with "
                     "tf-metainit-export (or restore its original files).")


def _show(value):
  """A value as an error quotes it: its JSON type and a short repr."""
  text = repr(value)
  return f"{type(value).__name__} {text if len(text) < 60 else text[:57] + '...'}"


def _is_size(value, low=1):
  return isinstance(value, int) and not isinstance(value, bool) and value >= low


def load(export_dir):
  """(field, params, manifest, learned inner optimizer or None) of an export of this
  package, rebuilt from weights.npz and manifest.json alone (nothing is executed).

  Both files are checked first: the manifest's keys and types, its weights file inside
  the export and a plain .npz, every array it names present, real, finite and of the
  shapes the field description implies.
  """
  if not is_export(export_dir):
    raise ExportError(f"{export_dir} is not a tf_metainit export (no {MANIFEST} of "
                      f"format {FORMAT}); give a folder tf-metainit-export wrote.")
  with open(os.path.join(export_dir, MANIFEST)) as f:
    manifest = json.load(f)
  _check_manifest(export_dir, manifest)
  arrays = _read_weights(export_dir, manifest["weights"])
  names = [layer[part] for layer in manifest["layers"] for part in _LAYER_PARTS]
  rates = _rate_names(export_dir, arrays, len(names))
  _check_arrays(export_dir, arrays, names + list(manifest["constants"]) + rates)
  _check_layer_shapes(export_dir, manifest, arrays)
  field = _build_field(export_dir, manifest, arrays)
  params = [tf.constant(arrays[name]) for name in names]
  _check_against_field(export_dir, field, params, names)
  learned = None
  if rates:
    learned = _learned(export_dir, manifest, [arrays[n] for n in rates], params)
  return field, params, manifest, learned


def _check_manifest(export_dir, manifest):
  """Required keys and their types; layers name their arrays; sizes are integers."""
  for key, (kind, what) in _REQUIRED.items():
    if key not in manifest:
      raise _broken(export_dir, f"{MANIFEST} has no '{key}'")
    if not isinstance(manifest[key], kind):
      raise _broken(export_dir, f"{MANIFEST}'s '{key}' must be {what}, got "
                                f"{_show(manifest[key])}")
  if not manifest["layers"]:
    raise _broken(export_dir, f"{MANIFEST}'s 'layers' is empty")
  for i, layer in enumerate(manifest["layers"]):
    if not (isinstance(layer, dict) and
            all(isinstance(layer.get(part), str) for part in _LAYER_PARTS)):
      raise _broken(export_dir, f"{MANIFEST}'s layers[{i}] must be an object naming "
                                f"its 'kernel' and 'bias' arrays, got {_show(layer)}")
  for name, shape in manifest["constants"].items():
    if not (isinstance(shape, list) and all(_is_size(n, 0) for n in shape)):
      raise _broken(export_dir, f"{MANIFEST}'s constants['{name}'] must be a shape "
                                f"(a list of sizes), got {_show(shape)}")
  for key in ("in_dim", "out_dim", "width", "depth"):
    value = manifest["field"].get(key)
    if value is not None and not _is_size(value):
      raise _broken(export_dir, f"{MANIFEST}'s field.{key} must be a positive integer, "
                                f"got {_show(value)}")
  test_time = manifest.get("test_time") or {}
  if not (isinstance(test_time, dict) and
          isinstance(test_time.get("optimizer", {}), dict)):
    raise _broken(export_dir, f"{MANIFEST}'s test_time must be an object such as "
                              "{'optimizer': {'name': 'sgd', 'learning_rate': 0.01}, "
                              f"'num_steps': 2}}, got {_show(test_time)}")


def _read_weights(export_dir, name):
  """The arrays of the manifest's weights file: a plain .npz inside the export (a
  manifest naming '../x' or '/x' would make loading read any file)."""
  root = os.path.realpath(export_dir)
  path = os.path.realpath(os.path.join(root, name))
  if path == root or os.path.commonpath([root, path]) != root:
    raise _broken(export_dir, f"{MANIFEST}'s weights = {name!r} points outside the "
                              f"export (to {path}); it must name a file in it, e.g. "
                              f"{WEIGHTS!r}")
  if not os.path.isfile(path):
    raise _broken(export_dir, f"its weights file {name} is missing")
  # np.load takes any other file for a pickle, and says so with advice to unpickle.
  if not zipfile.is_zipfile(path):
    raise _broken(export_dir, f"its weights file {name} is not an .npz archive "
                              "(numpy.savez)")
  try:
    with np.load(path, allow_pickle=False) as npz:
      return {key: npz[key] for key in npz.files}
  except (ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
    raise _broken(export_dir, f"its weights file {name} holds something other than "
                              f"plain numeric arrays ({type(e).__name__})") from e


def _rate_names(export_dir, arrays, num_params):
  """The learned inner rates' names, inner_lr_0 .. one per weight tensor, or []."""
  found = sorted(key for key in arrays if key.startswith("inner_lr_"))
  expected = [f"inner_lr_{i}" for i in range(num_params)]
  if found and found != sorted(expected):
    raise _broken(export_dir, f"its weights file holds learned rates {found}, but the "
                              f"field has {num_params} weight tensors, each needing "
                              f"one: inner_lr_0 .. inner_lr_{num_params - 1}")
  return expected if found else []


def _check_arrays(export_dir, arrays, names):
  """Every array the manifest uses exists, holds real floats and is finite."""
  for name in names:
    if name not in arrays:
      raise _broken(export_dir, f"its weights file has no array {name!r}, which "
                                f"{MANIFEST} names (it holds "
                                f"{', '.join(sorted(arrays)) or 'none'})")
    array = arrays[name]
    if not np.issubdtype(array.dtype, np.floating):
      raise _broken(export_dir, f"array {name!r} is of dtype {array.dtype}, not real "
                                "floating point")
    bad = array.size - int(np.isfinite(array).sum())
    if bad:
      raise _broken(export_dir, f"array {name!r} holds {bad} NaN or inf values")


def _check_layer_shapes(export_dir, manifest, arrays):
  """Kernels and biases chain into the field the description declares (width, depth,
  out_dim), checked before it is built: a wrong width would build it at that size."""
  field, layers = manifest["field"], manifest["layers"]
  if "depth" in field and field["depth"] != len(layers):
    raise _broken(export_dir, f"{MANIFEST}'s field.depth is {field['depth']} but its "
                              f"'layers' lists {len(layers)}")
  fan_in = None
  for i, layer in enumerate(layers):
    kernel, bias = arrays[layer["kernel"]].shape, arrays[layer["bias"]].shape
    if len(kernel) != 2 or bias != kernel[1:]:
      raise _broken(export_dir, f"layer {i} has a kernel of shape {kernel} and a bias "
                                f"of shape {bias}; a layer needs (fan_in, fan_out) and "
                                "(fan_out,)")
    if layer.get("shape", list(kernel)) != list(kernel):
      raise _broken(export_dir, f"{MANIFEST}'s layers[{i}].shape is {layer['shape']} "
                                f"but its kernel {layer['kernel']!r} is {kernel}")
    if fan_in is not None and kernel[0] != fan_in:
      raise _broken(export_dir, f"layer {i}'s kernel {layer['kernel']!r} takes "
                                f"{kernel[0]} inputs, layer {i - 1} gives {fan_in}")
    size = "out_dim" if i == len(layers) - 1 else "width"
    if size in field and kernel[1] != field[size]:
      raise _broken(export_dir, f"{MANIFEST}'s field.{size} is {field[size]} but layer "
                                f"{i}'s kernel {layer['kernel']!r} is {kernel}")
    fan_in = kernel[1]
  for name, shape in manifest["constants"].items():
    if list(arrays[name].shape) != shape:
      raise _broken(export_dir, f"{MANIFEST}'s constants['{name}'] is {shape} but the "
                                f"array is {arrays[name].shape}")


def _build_field(export_dir, manifest, arrays):
  constants = {name: arrays[name] for name in manifest["constants"]}
  try:
    return functional.from_description(manifest["field"], constants)
  except KeyError as e:
    raise _broken(export_dir, f"{MANIFEST} lacks {e}, which its "
                              f"{manifest['field'].get('type')!r} field needs") from e
  except ValueError as e:
    raise _broken(export_dir, f"its field cannot be rebuilt: {_own_line(e)}") from e


def _check_against_field(export_dir, field, params, names):
  """The weights fit the field built: its encoding fixes the first layer's fan_in."""
  variables = field.trainable_variables
  if len(variables) != len(params):
    raise _broken(export_dir, f"its {len(params) // 2} layers do not fit the field "
                              f"described, which has {len(variables) // 2}")
  for variable, param, name in zip(variables, params, names):
    if tuple(variable.shape) != tuple(param.shape):
      raise _broken(export_dir, f"array {name!r} is {tuple(param.shape)}, the field "
                                f"described needs {tuple(variable.shape)}")


def _learned(export_dir, manifest, rates, params):
  """The learned inner optimizer: rates of the shapes their mode reads."""
  description = (manifest.get("test_time") or {}).get("optimizer")
  if description is None:
    raise _broken(export_dir, f"it holds learned rates, but {MANIFEST} has no "
                              "test_time.optimizer saying how they are used")
  mode = description.get("mode")
  if mode == "per_parameter":
    wrong = [r.shape != tuple(p.shape) for r, p in zip(rates, params)]
  elif mode == "per_layer_step":
    wrong = [r.ndim != 1 or r.shape != rates[0].shape or not r.size for r in rates]
  else:
    wrong = []  # learned_lr.from_arrays names the unknown mode
  if any(wrong):
    raise _broken(export_dir, f"learned rate inner_lr_{wrong.index(True)} has shape "
                              f"{rates[wrong.index(True)].shape}, which mode {mode!r} "
                              "cannot use (per_parameter: its weight's shape; "
                              "per_layer_step: (steps,), the same for all)")
  return _optimizer(export_dir, description, rates)


def _optimizer(export_dir, description, rates=None):
  try:
    return runs.test_time_optimizer(description, rates)
  except (TypeError, ValueError) as e:
    raise _broken(export_dir, f"its test_time.optimizer "
                              f"({description.get('name')!r}) cannot be built: "
                              f"{_own_line(e)}") from e


def _own_line(error):
  """A configurable's error without the "In call to configurable" lines gin adds."""
  return str(error).splitlines()[0]


def load_init(export_dir):
  """An export as a testtime.Init: its field, weights and test-time settings."""
  field, params, manifest, learned = load(export_dir)
  test_time = manifest.get("test_time") or {}
  if "optimizer" not in test_time:
    raise ExportError(f"{export_dir} is a fitted field, not an init (its manifest has "
                      "no test-time settings): give an init's export.")
  optimizer = learned or _optimizer(export_dir, test_time["optimizer"])
  return testtime.Init(field, params, optimizer, test_time.get("num_steps"),
                       os.path.abspath(export_dir), manifest.get("task") or {})


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
  params_list = list(params_list)
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


