"""The export snippet of docs/export.md (moved there from the README) runs as printed,
in a fresh process, on a tiny export."""

import os
import pathlib
import re
import subprocess
import sys

from tf_metainit.fields import siren
from tf_metainit.meta import optimizers
from tf_metainit.tasks import image
from tf_metainit import exports

EXPORT_DOC = pathlib.Path(__file__).resolve().parents[1] / "docs" / "export.md"
STEPS = 10


def readme_snippet():
  """The python block between the export-snippet markers of docs/export.md."""
  text = EXPORT_DOC.read_text()
  found = re.search(r"<!-- export-snippet:start -->\n```python\n(.*?)```\n"
                    r"<!-- export-snippet:end -->", text, re.S)
  assert found, "docs/export.md lost its export-snippet markers"
  return found.group(1)


def test_readme_export_snippet_runs_and_fits_a_real_image(tmp_path):
  task = image.ImageRegression(resolution=8,
                               field=lambda: siren.Siren(width=16, depth=3, seed=0))
  export_dir = tmp_path / "runs" / "text_export"
  manifest = exports.export_params(
      task.field, task.field.params(), str(export_dir), task=task,
      optimizer=optimizers.SGD(0.1),
      manifest_extra={"test_time": {"optimizer": {"name": "sgd", "learning_rate": 0.1},
                                    "num_steps": STEPS}})
  assert "centre crop to a square" in manifest["task"]["preprocessing"]
  proc = subprocess.run([sys.executable, "-c", readme_snippet()], cwd=tmp_path,
                        capture_output=True, text=True, timeout=300,
                        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
  assert proc.returncode == 0, proc.stderr[-3000:]
  print(proc.stdout)
  diff = re.search(r"max \|numpy - SavedModel\|: (\S+)", proc.stdout)
  assert float(diff.group(1)) < 1e-5
  psnr = re.search(r"PSNR (\S+) -> (\S+) dB in (\d+) steps", proc.stdout)
  before, after, steps = float(psnr.group(1)), float(psnr.group(2)), int(psnr.group(3))
  assert steps == STEPS
  # The snippet fits a picture, not the field's own output (which gave inf -> inf).
  assert 0 < before < after < 100, proc.stdout
