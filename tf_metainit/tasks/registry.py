"""Imports every task module so gin configs can name their configurables."""

import importlib

TASK_MODULES = (
    "tf_metainit.tasks.image",
    "tf_metainit.tasks.ct",
    "tf_metainit.tasks.shapenet",
    "tf_metainit.tasks.phototourism",
)


def import_all():
  for name in TASK_MODULES:
    importlib.import_module(name)
