"""Atomic text writes."""

import os

from tf_metainit import files


def test_write_text_creates_parents_replaces_and_leaves_no_temp(tmp_path):
  path = os.path.join(str(tmp_path), "a", "b", "results.md")
  files.write_text(path, "first")
  files.write_text(path, "second")
  with open(path) as f:
    assert f.read() == "second"
  assert os.listdir(os.path.dirname(path)) == ["results.md"]
