"""Writing files so that a reader (or a resumed run) never sees half of one."""

import os

import tensorflow as tf


def write_text(path, text):
  """Writes `text` to a temporary file beside `path`, then renames it into place.

  Goes through tf.io.gfile, so `path` may also be a remote (e.g. gs://) path.
  """
  parent = os.path.dirname(path)
  if parent:
    tf.io.gfile.makedirs(parent)
  tmp = path + ".tmp"
  with tf.io.gfile.GFile(tmp, "w") as f:
    f.write(text)
  tf.io.gfile.rename(tmp, path, overwrite=True)
