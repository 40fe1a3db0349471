import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# What the binaries run with (tf_metainit/__init__.py), whichever module imports
# TensorFlow first.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")


def pytest_addoption(parser):
  parser.addoption("--runslow", action="store_true", default=False,
                   help="also run tests marked slow")


def pytest_configure(config):
  config.addinivalue_line("markers", "slow: long test; run with --runslow")


def pytest_collection_modifyitems(config, items):
  if config.getoption("--runslow"):
    return
  import pytest
  skip = pytest.mark.skip(reason="slow; run with --runslow")
  for item in items:
    if "slow" in item.keywords:
      item.add_marker(skip)
