"""Shared flags, --help, start-up and strict gin parsing for the binaries."""

import contextlib
import functools
import importlib
import logging as std_logging
import os
import sys
import textwrap

from absl import app
from absl import flags
import gin

from tf_metainit import layout
from tf_metainit import provenance
from tf_metainit import stored_config
from tf_metainit.cli import startup
from tf_metainit.cli import stopping


def _gin_dir():
  """The shipped configs: tf_metainit/gin_configs when installed (setup.py maps the
  repo's gin/ there); an editable install runs from the checkout, so its gin/."""
  package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  installed = os.path.join(package, "gin_configs")
  if os.path.isdir(installed):
    return installed
  return os.path.join(os.path.dirname(package), "gin")


GIN_DIR = _gin_dir()


class ConfigError(ValueError):
  pass


# What asks for help. absl's own --help lists only flags defined in the file run as
# __main__ (none: they are defined here and in tf_metainit/cli/) and exits with 1.
_HELP_ARGS = ("-h", "-?", "--help", "-help", "--helpshort", "-helpshort")
_HELP_FOOTER = ("--verbosity=1 (or -v 1) also shows TensorFlow's start-up messages. "
                "--helpfull lists every flag, absl's and TensorFlow's included.")


def run(main, module_name, stop_grace=3.0):
  """app.run(main) for the binary in module `module_name`: --help (-h) prints its
  usage; TensorFlow loads quietly (startup.py) once the flags are parsed. After Ctrl-C
  or SIGTERM it has `stop_grace` seconds to stop by itself (cli/stopping.py)."""
  module = sys.modules[module_name]
  app.run(functools.partial(_main, main, module, stop_grace),
          flags_parser=functools.partial(_parse_flags, module))


def _parse_flags(module, argv):
  args = argv[1:argv.index("--")] if "--" in argv else argv[1:]
  if any(arg in _HELP_ARGS for arg in args):
    _print_to_closing_pipe(usage(module))
    sys.exit(0)
  return app.parse_flags_with_usage(argv)


def _print_to_closing_pipe(text):
  """Prints `text`; a reader that stops early (`--help | head`) is no error."""
  try:
    print(text, flush=True)
  except BrokenPipeError:
    # Python would flush stdout again at exit and fail on the pipe once more.
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _main(main, module, stop_grace, argv):
  stopping.install(stop_grace)
  startup.load_tensorflow(flags.FLAGS.verbosity)
  try:
    return main(argv)
  except app.UsageError as e:
    print(f"{usage(module)}\n{e}", file=sys.stderr)
    sys.exit(e.exitcode)
  except stopping.Stopped as e:  # between the steps run_and_report guards
    print(f"ERROR: {e}", file=sys.stderr)
    sys.exit(128 + e.signum)


def usage(module):
  """The binary's docstring (with an example), then its own flags: those it and this
  module define (tf_metainit/cli/<name>.py adopts them), not absl's or TensorFlow's."""
  name = module.__name__
  # module_help heads the list with the module's name; a user knows the command.
  own = flags.FLAGS.module_help(name).split(":\n", 1)[-1]
  return (f"{module.__doc__.strip()}\n\nflags:\n{own}\n\n"
          f"{textwrap.fill(_HELP_FOOTER, 80)}")


def define_run_flags(root_dir_help="A meta-training run directory."):
  """--root_dir (required) plus the gin flags: what every binary takes."""
  flags.DEFINE_string("root_dir", None, root_dir_help)
  define_gin_flags()
  flags.mark_flag_as_required("root_dir")


def define_figure_binary():
  """Flags of a binary that draws a run's figures (--root_dir, gin, --checkpoint)."""
  define_run_flags()
  define_checkpoint_flag()


def figure_binary(name, module_name):
  """Defines the flags of the binary in module `module_name` that draws a run's
  figures with tf_metainit.<name> (its --help lists them); returns its run()."""
  define_figure_binary()
  for flag in flags.FLAGS.get_key_flags_for_module(__name__):
    flags.FLAGS.register_key_flag_for_module(module_name, flag)
  main = figure_main(name)
  return lambda: run(main, module_name)


def figure_main(name):
  """main() of a binary that calls tf_metainit.<name>.<name>(root_dir, checkpoint=...)
  under the run's own config and prints what it returns."""

  def main(argv):
    check_no_args(argv)
    module = importlib.import_module(f"tf_metainit.{name}")
    flag = flags.FLAGS
    run_and_report(lambda: parse_run_config(flag.root_dir, flag.gin_file,
                                            flag.gin_bindings, task_for=(name,)))
    print(run_and_report(lambda: getattr(module, name)(flag.root_dir,
                                                       checkpoint=flag.checkpoint)))

  return main


def define_checkpoint_flag():
  flags.DEFINE_enum("checkpoint", "best", ["best", "latest"],
                    "Which checkpoint of the run is the Meta init: 'best' (held-out "
                    "validation during training) or 'latest'.")


def check_no_args(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")


def define_gin_flags():
  flags.DEFINE_multi_string("gin_file", [], "gin config file; a relative path is also "
                            "looked up among the shipped configs (e.g. "
                            "image/text_cpu.gin)")
  flags.DEFINE_multi_string("gin_bindings", [], "gin binding, e.g. "
                            "'meta_train.num_iterations = 10'")
  flags.DEFINE_bool("debug", False, "Show the full traceback of an error instead of "
                    "its one-line message.")
  flags.DEFINE_bool("allow_pickle", False, "Let this command unpickle data files (the "
                    "CT reference's ct_256.pkl): unpickling can run code stored in the "
                    "file, so only for files you trust. No config can grant this.")


def register_configurables():
  """Imports every module that defines gin configurables so configs can name them."""
  # pylint: disable=g-import-not-at-top,unused-import
  from tf_metainit import appearance  # noqa: F401
  from tf_metainit import distribute  # noqa: F401
  from tf_metainit import evaluate  # noqa: F401
  from tf_metainit import export  # noqa: F401
  from tf_metainit import interpolate  # noqa: F401
  from tf_metainit import runs  # noqa: F401
  from tf_metainit import train  # noqa: F401
  from tf_metainit.fields import mlp  # noqa: F401
  from tf_metainit.fields import siren  # noqa: F401
  from tf_metainit.meta import learned_lr  # noqa: F401
  from tf_metainit.meta import optimizers  # noqa: F401
  from tf_metainit.tasks import registry
  registry.import_all()


class _QuietGinLookups(std_logging.Filter):
  """gin logs 'Path not found' at ERROR while it tries each search path for an
  include, even when a later path succeeds; a real miss still raises an error."""

  def filter(self, record):
    return not (record.msg == "Path not found: %s" and
                record.pathname.endswith("resource_reader.py"))


def _resolve(path):
  if os.path.exists(path):
    return path
  candidate = os.path.join(GIN_DIR, path)
  if os.path.exists(candidate):
    return candidate
  raise ConfigError(f"gin file {path!r} not found (also looked in {GIN_DIR}). "
                    "Check the path; shipped configs are named <task>/<name>.gin, "
                    "e.g. image/text_cpu.gin.")


def parse_gin(gin_files, gin_bindings):
  """Strict gin parsing of the user's own files and bindings, with gin's full power
  (imports, includes, dynamic registration): the user chose them."""
  _prepare_gin()
  files = [_resolve(f) for f in gin_files]
  with _explained_gin_errors():
    gin.parse_config_files_and_bindings(files, gin_bindings, finalize_config=False,
                                        skip_unknown=False)


def parse_stored_config(path):
  """Parses a run's stored config as data (tf_metainit/stored_config.py): a run
  directory may come from anyone, so nothing in it may import or call code."""
  _prepare_gin()
  provenance.read_config(path)  # names a config.gin that is no text
  pieces = stored_config.read(path, GIN_DIR)
  with _explained_gin_errors():
    for piece in pieces:
      gin.parse_config(piece, skip_unknown=False)


def _prepare_gin():
  """The package's configurables registered, unpickling as --allow_pickle says, the
  shipped configs on gin's search path."""
  register_configurables()
  from tf_metainit.data import phantoms  # pylint: disable=g-import-not-at-top
  phantoms.grant_unpickling(flags.FLAGS.is_parsed() and "allow_pickle" in flags.FLAGS
                            and flags.FLAGS.allow_pickle)
  std_logging.getLogger().addFilter(_QuietGinLookups())
  gin.add_config_file_search_path(GIN_DIR)


@contextlib.contextmanager
def _explained_gin_errors():
  """gin's errors as ConfigErrors that say what to fix (unknown names are errors)."""
  try:
    yield
  except (ValueError, KeyError, SyntaxError) as e:
    if "allow_pickle" in str(e):
      raise ConfigError(
          "CTReconstruction.allow_pickle cannot be set in a gin config: no config, "
          "such as a run's stored config.gin, may grant unpickling. Pass --allow_pickle "
          "on the command line if you trust the file.") from e
    raise ConfigError(
        f"Bad gin configuration: {e}\nFix the name or value in the gin file / "
        "--gin_bindings (names are case-sensitive: e.g. meta_train.num_iterations, "
        "ImageRegression.resolution, Siren.w0).") from e


def run_and_report(fn):
  """Runs fn(); the package's errors (and the OS's: disk full, read-only folder)
  become one line on stderr and exit status 1 (128 + the signal's number after a
  SIGTERM or Ctrl-C). --debug shows the traceback instead."""
  from tf_metainit import checkpoints  # pylint: disable=g-import-not-at-top
  from tf_metainit import distribute  # pylint: disable=g-import-not-at-top
  from tf_metainit import train  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  try:
    return fn()
  except (ValueError, OSError, MemoryError, tf.errors.OpError,
          checkpoints.CheckpointError, train.DivergenceError, train.Interrupted,
          distribute.WorkerLost, stopping.Stopped) as e:
    if flags.FLAGS.is_parsed() and "debug" in flags.FLAGS and flags.FLAGS.debug:
      raise
    # gin appends "In call to configurable ..." lines; the message already names
    # the binding.
    message = " ".join(str(e).split("\n  In call to configurable")[0].split())
    # Printed once, here: an absl log line as well would say it twice.
    print(f"ERROR: {message}", file=sys.stderr)
    # Stopped by a signal: the shell's convention, 128 + its number.
    sys.exit(128 + e.signum if isinstance(e, (train.Interrupted, stopping.Stopped))
             else 1)


def parse_run_config(root_dir, gin_files, gin_bindings, task_for=()):
  """Parses <root_dir>/config.gin, then the user's overrides.

  The evaluated task is the trained one unless a config says otherwise; `task_for`
  names more configurables (e.g. 'export') whose `task` is bound to it as well.
  """
  config = layout.config_path(root_dir)
  if not os.path.exists(config):
    raise ConfigError(
        f"{config} not found: --root_dir must be a directory written by "
        "tf-metainit-train (it saves config.gin there).")
  parse_stored_config(config)
  try:
    gin.query_parameter("evaluate.task")
  except ValueError:
    gin.bind_parameter("evaluate.task", gin.query_parameter("meta_train.task"))
  parse_gin(gin_files, gin_bindings)
  for name in task_for:
    gin.bind_parameter(f"{name}.task", gin.query_parameter("evaluate.task"))


def load_init(name, checkpoint, gin_files, gin_bindings):
  """--init as a testtime.Init: a shipped init, an export or a run."""
  from tf_metainit import exports  # pylint: disable=g-import-not-at-top
  from tf_metainit import pretrained  # pylint: disable=g-import-not-at-top
  from tf_metainit import runs  # pylint: disable=g-import-not-at-top
  kind, folder = pretrained.resolve(name)
  if kind != "run":
    return exports.load_init(folder)
  parse_run_config(folder, gin_files, gin_bindings, task_for=("init_from_run",))
  return runs.init_from_run(folder, checkpoint)
