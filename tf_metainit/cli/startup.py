"""A quiet start: TensorFlow's start-up messages only when the user asks for them.

TensorFlow writes a dozen lines to stderr as it loads, on every run of every binary
(oneDNN, "Could not find cuda drivers", "This TensorFlow binary is optimized...",
"failed call to cuInit", absl's "All log messages before absl::InitializeLog()").
TF_CPP_MIN_LOG_LEVEL=2 silences TensorFlow's later INFO and WARNING lines, but the
first ones are written before any level applies. So the binaries load TensorFlow and
find its devices with stderr held back in a temporary file, shown only if that fails.

--verbosity=1 (-v 1), or a TF_CPP_MIN_LOG_LEVEL the user set, keeps TensorFlow's own
behaviour: every line, or the level they chose.
"""

import contextlib
import logging as std_logging
import os
import sys
import tempfile

from absl import logging

# INFO lines of libraries that tell a user nothing: gin's config file look-ups and
# TensorFlow's timing of every checkpoint write.
_CHATTER = frozenset(("system_path_file_exists:%s", "gin-config opened resource file:%s",
                      "Sharding callback duration: %s microseconds"))


def _wants_messages(verbosity):
  return verbosity >= 1 or "TF_CPP_MIN_LOG_LEVEL" in os.environ


def load_tensorflow(verbosity):
  """Imports TensorFlow, quietly unless the user asked for its messages."""
  if _wants_messages(verbosity):
    return  # TensorFlow loads as it always does, when the binary first imports it
  os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
  with _stderr_held_back():
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    tf.config.list_physical_devices()  # CUDA's start (cuInit) logs here
  logging.get_absl_handler().addFilter(_NoChatter())


@contextlib.contextmanager
def _stderr_held_back():
  """Sends file descriptor 2 (where C++ writes) to a temporary file for the block; its
  contents reach stderr after all if the block fails."""
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile() as held:
    os.dup2(held.fileno(), 2)
    try:
      yield
    except BaseException:
      _restore(saved)
      held.seek(0)
      os.write(2, held.read())
      raise
    _restore(saved)


def _restore(saved):
  sys.stderr.flush()
  os.dup2(saved, 2)
  os.close(saved)


class _NoChatter(std_logging.Filter):

  def filter(self, record):
    return not (isinstance(record.msg, str) and record.msg in _CHATTER)
