"""Process-level defaults the package sets before TensorFlow is imported."""

import os
import subprocess
import sys

import pytest

_PROBE = ("import tf_metainit, os; "
          "from tensorflow.python.util import _pywrap_util_port as port; "
          "print(os.environ['TF_ENABLE_ONEDNN_OPTS'], port.IsMklEnabled())")


@pytest.mark.parametrize("preset, expected", [(None, "1 True"), ("0", "0 False")])
def test_onednn_on_unless_the_user_chose(preset, expected):
  env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
  if preset is not None:
    env["TF_ENABLE_ONEDNN_OPTS"] = preset
  out = subprocess.run([sys.executable, "-c", _PROBE + "; import tensorflow"],
                       env=env, capture_output=True, text=True, check=True)
  assert out.stdout.split("\n")[0].strip() == expected
