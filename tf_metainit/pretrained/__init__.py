"""Learned inits shipped with the package, loaded offline.

Each init is a folder beside this file holding manifest.json and weights.npz (the
format of tf-metainit-export, without its SavedModel: the field is rebuilt from the
manifest, and nothing is executed) and MODEL_CARD.md (data, config, steps, wall time,
evaluation table, held-out validation curve). docs/pretrained/build.py makes each one
with the package's own binaries from gin/pretrained/<name>.gin.

  from tf_metainit import pretrained
  pretrained.list()                                # e.g. ['chairs', 'landmark', 'text']
  field, params, manifest, learned = pretrained.load("text")
  init = pretrained.init("text")   # testtime.Init: with its test-time settings
  tf-metainit-fit --init=text --image=photo.png    # the same from the command line
                                                   # (--init=./text: a folder "text")
"""

import os

from absl import logging

from tf_metainit import exports
from tf_metainit import layout

ROOT = os.path.dirname(os.path.abspath(__file__))
CARD = "MODEL_CARD.md"


def list():  # pylint: disable=redefined-builtin
  """Names of the shipped inits, sorted."""
  return sorted(name for name in os.listdir(ROOT)
                if os.path.isfile(os.path.join(ROOT, name, exports.MANIFEST)))


def path(name):
  """The folder of the shipped init `name`."""
  names = list()
  if name not in names:
    raise ValueError(f"No pretrained init named {name!r}; the package ships "
                     f"{', '.join(names) or 'none'}. Give one of them, a run directory "
                     "or an export folder.")
  return os.path.join(ROOT, name)


def resolve(init):
  """What `init` (tf-metainit-fit --init) names: ('shipped', folder), ('export',
  folder) or ('run', folder). A shipped init's name wins over a folder of that name in
  the working directory, which ./<name> picks (said in a warning)."""
  if init in list():
    if os.path.exists(init):
      logging.warning("--init=%s is the shipped init %r, not the folder %s here; give "
                      "--init=./%s for the folder.", init, init, init, init)
    return "shipped", path(init)
  if not os.path.exists(init):
    if os.sep not in init:
      path(init)  # a bare name: says which inits ship
    raise ValueError(f"--init={init}: no such folder. Give a shipped init "
                     f"({', '.join(list())}), a run directory or an export folder.")
  if os.path.isfile(os.path.join(init, exports.MANIFEST)):
    return "export", init
  if os.path.isfile(layout.config_path(init)):
    return "run", init
  raise ValueError(f"--init={init} is neither a shipped init, an export (it has no "
                   f"{exports.MANIFEST}) nor a run directory (no config.gin): give a "
                   "folder tf-metainit-export or tf-metainit-train wrote.")


def load(name):
  """(field, params, manifest, learned inner optimizer or None) of a shipped init, as
  exports.load returns them; the manifest's test_time holds its own test-time
  optimizer and steps."""
  return exports.load(path(name))


def init(name):
  """The shipped init `name` as a testtime.Init (field, weights, test-time settings)."""
  return exports.load_init(path(name))


def card(name):
  """The init's model card (markdown)."""
  with open(os.path.join(path(name), CARD), encoding="utf-8") as f:
    return f.read()
