"""A run's stored config.gin is read as data (stored_config.py): what training writes
is read back to the same bindings; an import, dynamic registration, an include from
outside the shipped configs or a reference to a callable outside the package is refused
with one line naming the file and the line, before anything it names runs."""

import os
import shutil
import subprocess
import sys

import gin
import pytest

from tf_metainit import layout
from tf_metainit import stored_config
from tf_metainit import train
from tf_metainit.cli import common
from tf_metainit.meta import optimizers

from test_faults import ENV

TINY = "testing/tiny.gin"
# Ends the line each hostile config must be refused at.
REFUSED = "# <- refused here"

# Payloads that run code when gin reads them with full power: a called reference
# (dynamic registration), and an import of a module that runs code (the `planted`
# module, which creates {marker}).
DYNAMIC = (f"from __gin__ import dynamic_registration  {REFUSED}\n"
           "import subprocess\n"
           "import tf_metainit.meta.optimizers as opt\n"
           "opt.SGD.learning_rate = @subprocess.call()\n"
           "subprocess.call.args = ['touch', '{marker}']\n")
IMPORT_PLANTED = f"{{stored}}import planted  {REFUSED}\n"
# (config text, what the one line says); {stored} is what training wrote for the tiny
# run, {marker} the file a payload creates if it runs, {evil} an existing config
# outside the shipped ones whose `import planted` creates the marker.
CASES = [
    pytest.param(DYNAMIC, "would let the config import and call any Python code",
                 id="dynamic_registration"),
    pytest.param(IMPORT_PLANTED, "imports planted", id="import_of_a_module_that_runs_code"),
    pytest.param(f"{{stored}}import os  {REFUSED}\n", "imports os, not a module of "
                 "tf_metainit", id="import_os"),
    pytest.param(f"{{stored}}from os import system  {REFUSED}\n", "imports os.system",
                 id="from_import"),
    pytest.param(f"{{stored}}import tf_metainit.nope  {REFUSED}\n",
                 "imports tf_metainit.nope, not a module of tf_metainit", id="no_such_module"),
    pytest.param(f"{{stored}}import subprocess  {REFUSED}\n"
                 "meta_train.seed = @subprocess.call()\n", "`import subprocess`",
                 id="import_subprocess_and_call"),
    pytest.param(f"{{stored}}meta_train.seed = @subprocess.call()  {REFUSED}\n",
                 "`@subprocess.call()` is not a tf_metainit configurable", id="reference"),
    pytest.param("{stored}evaluate.inits = [\n    'standard',\n"
                 f"    @ subprocess.call(),  {REFUSED}\n]\n",
                 "`@subprocess.call()` is not a tf_metainit configurable",
                 id="reference_on_the_third_line_of_a_list"),
    pytest.param(f"{{stored}}meta_train.seed = @gin.singleton()  {REFUSED}\n",
                 "`@gin.singleton()` is not a tf_metainit configurable",
                 id="registered_but_not_the_package's"),
    pytest.param(f"{{stored}}os.system.command = 'touch {{marker}}'  {REFUSED}\n",
                 "`os.system.command` binds os.system, which is not a tf_metainit "
                 "configurable", id="unregistered_binding"),
    pytest.param(f"{{stored}}os.system:  {REFUSED}\n    command = 'touch {{marker}}'\n",
                 "binds os.system", id="unregistered_block"),
    pytest.param(f"include '/tmp/evil.gin'  {REFUSED}\n{{stored}}",
                 "is not one of the shipped configs", id="include_of_tmp_evil"),
    pytest.param(f"{{stored}}include '{{evil}}'  {REFUSED}\n",
                 "is not one of the shipped configs", id="include_of_an_existing_file"),
    pytest.param(f"include 'image/../../../../../tmp/evil.gin'  {REFUSED}\n",
                 "is not one of the shipped configs", id="include_out_of_the_gin_dir"),
    pytest.param(f"include 'image/nope.gin'  {REFUSED}\n{{stored}}",
                 "names no shipped config", id="include_of_a_missing_file"),
    pytest.param(f"{{stored}}evaluate.inits = [  {REFUSED}\n    'standard',\n",
                 "cannot be read as gin", id="unclosed_list"),
]


@pytest.fixture(scope="module")
def stored():
  """What training writes to config.gin for the tiny run: gin.config_str()."""
  gin.clear_config()
  common.parse_gin([TINY], [])
  text = gin.config_str()
  gin.clear_config()
  return text


def _plant(site, marker):
  """Writes the module `planted` into `site`: importing it creates `marker`."""
  site.mkdir(exist_ok=True)
  (site / "planted.py").write_text(f"open({str(marker)!r}, 'w').close()\n")


@pytest.fixture
def planted(tmp_path, monkeypatch):
  """The marker file; `planted`, which creates it, is importable."""
  marker = tmp_path / "MARKER"
  _plant(tmp_path / "site", marker)
  monkeypatch.syspath_prepend(str(tmp_path / "site"))
  yield marker
  sys.modules.pop("planted", None)


def _write(path, template, stored, marker):
  evil = path.parent / "evil.gin"
  evil.write_text("import planted\n")
  path.write_text(template.format(stored=stored, marker=marker, evil=evil))
  return path


def _refused_line(path):
  lines = path.read_text().splitlines()
  return 1 + next(i for i, line in enumerate(lines) if line.endswith(REFUSED))


@pytest.mark.parametrize("template,says", CASES)
def test_a_hostile_config_is_refused_in_one_line_and_runs_nothing(
    template, says, stored, planted, tmp_path, clean_gin):
  config = _write(tmp_path / "config.gin", template, stored, planted)
  with pytest.raises(stored_config.StoredConfigError) as refused:
    common.parse_stored_config(str(config))
  message = str(refused.value)
  assert "\n" not in message
  assert message.startswith(f"{config} line {_refused_line(config)}: "), message
  assert says in message
  assert "Restore the file from the run's config_history/ or retrain." in message
  optimizers.SGD()  # would run the dynamic-registration payload, had it been bound
  assert not planted.exists()


@pytest.mark.slow  # over 35 s on 2 cores; run with --runslow
def test_the_same_payloads_run_under_gin_s_full_power(stored, tmp_path):
  """What the refusals prevent: parsed as a user's own --gin_file (full power, as a
  run's config.gin was before), the payloads above create their markers."""
  dynamic, imports = (tmp_path / "dynamic", tmp_path / "imports")
  for folder, template in ((dynamic, DYNAMIC), (imports, IMPORT_PLANTED)):
    _plant(folder, folder / "MARKER")
    _write(folder / "config.gin", template, stored, folder / "MARKER")
  script = ("import sys, gin\n"
            "from tf_metainit.cli import common\n"
            "from tf_metainit.meta import optimizers\n"
            "sys.path.insert(0, sys.argv[2])\n"
            "common.parse_gin([sys.argv[1]], [])\n"
            "optimizers.SGD()\n")
  for folder in (dynamic, imports):
    result = subprocess.run([sys.executable, "-c", script, str(folder / "config.gin"),
                             str(folder)], capture_output=True, text=True, env=ENV,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (folder / "MARKER").exists()


def test_what_training_writes_is_read_to_the_same_bindings(stored, tmp_path, clean_gin):
  assert "import tf_metainit.tasks.image as " in stored  # config_str's own imports
  config = tmp_path / "config.gin"
  config.write_text(stored)
  common.parse_stored_config(str(config))
  assert gin.config_str() == stored


def test_every_shipped_config_is_accepted():
  common.register_configurables()
  shipped = [os.path.join(d, f) for d, _, names in os.walk(common.GIN_DIR)
             for f in names if f.endswith(".gin")]
  assert len(shipped) > 30
  for path in shipped:
    assert stored_config.read(path, common.GIN_DIR)


def test_values_over_several_lines_and_code_in_strings_are_data(stored, tmp_path,
                                                                 clean_gin):
  config = tmp_path / "config.gin"
  config.write_text(stored + "evaluate.inits = [\n"
                    "    'standard',  # @subprocess.call() in a comment\n"
                    "    'meta',\n"
                    "]\n"
                    "ImageRegression.dataset = '''\n"
                    "import os\n"
                    "@subprocess.call()\n"
                    "'''\n")
  common.parse_stored_config(str(config))
  assert gin.query_parameter("evaluate.inits") == ["standard", "meta"]
  assert gin.query_parameter("ImageRegression.dataset") == (
      "\nimport os\n@subprocess.call()\n")


def test_shipped_includes_are_read_in_place(tmp_path, clean_gin):
  config = tmp_path / "config.gin"
  config.write_text("Siren.depth = 9\ninclude 'testing/tiny.gin'\nSiren.width = 7\n")
  common.parse_stored_config(str(config))
  assert gin.query_parameter("Siren.depth") == 2  # tiny.gin's, read after
  assert gin.query_parameter("Siren.width") == 7  # ours, read after tiny.gin
  assert gin.query_parameter("ImageRegression.resolution") == 8


def test_gin_s_own_errors_still_name_the_file_and_line(tmp_path, clean_gin):
  config = tmp_path / "config.gin"
  config.write_text("include 'testing/tiny.gin'\n\nSiren.no_such_parameter = 1\n")
  with pytest.raises(common.ConfigError) as error:
    common.parse_stored_config(str(config))
  assert f'"{config}", line 3' in str(error.value)


def test_an_included_file_is_read_by_the_same_rules(tmp_path):
  """Shipped configs are trusted to be data only because they are checked too."""
  common.register_configurables()
  gin_dir = tmp_path / "gin"
  gin_dir.mkdir()
  (gin_dir / "a.gin").write_text("include 'b.gin'\n")
  (gin_dir / "b.gin").write_text("Siren.width = 3\ninclude 'a.gin'\n")
  (gin_dir / "c.gin").write_text("Siren.width = 3\nimport os\n")
  config = tmp_path / "config.gin"
  config.write_text("include 'a.gin'\n")
  with pytest.raises(stored_config.StoredConfigError,
                     match=f"^{gin_dir / 'b.gin'} line 2: .* already being read"):
    stored_config.read(str(config), str(gin_dir))
  config.write_text("include 'c.gin'\n")
  with pytest.raises(stored_config.StoredConfigError,
                     match=f"^{gin_dir / 'c.gin'} line 2: `import os`"):
    stored_config.read(str(config), str(gin_dir))


# --- through the installed binary -------------------------------------------------------


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """The tiny run, 2 steps."""
  root = tmp_path_factory.mktemp("stored") / "run"
  gin.clear_config()
  try:
    common.parse_gin([TINY], ["meta_train.num_iterations = 2"])
    train.meta_train(str(root))
  finally:
    gin.clear_config()
  return root


def test_a_trained_run_s_config_is_read(run, clean_gin):
  common.parse_run_config(str(run), [], [])
  assert gin.query_parameter("meta_train.num_iterations") == 2


def test_evaluate_refuses_a_run_whose_config_imports_code(run, tmp_path):
  root = tmp_path / "run"
  shutil.copytree(run, root)
  marker, site = tmp_path / "MARKER", tmp_path / "site"
  _plant(site, marker)
  config = layout.config_path(str(root))
  with open(config, "a") as f:
    f.write("import planted\n")
  line = len(open(config).read().splitlines())
  result = subprocess.run(["tf-metainit-evaluate", f"--root_dir={root}"],
                          capture_output=True, text=True, timeout=300,
                          env=dict(ENV, PYTHONPATH=str(site)))
  errors = [l for l in result.stderr.splitlines() if l.startswith("ERROR:")]
  assert result.returncode == 1, result.stderr[-2000:]
  assert errors == [f"ERROR: {config} line {line}: `import planted` imports planted, "
                    "not a module of tf_metainit that defines configurables; a run's "
                    "stored config is read as data (bindings of the package's own "
                    "configurables only). Restore the file from the run's "
                    "config_history/ or retrain."]
  assert result.stderr.count("`import planted`") == 1  # printed once, not logged too
  assert "Traceback" not in result.stderr
  assert not marker.exists()
