"""Ctrl-C and SIGTERM stop a binary within seconds, inside a long graph call too."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import PIL.Image
import pytest

# A process that installs the watchdog and then blocks: in a TensorFlow while_loop
# that would run for minutes (Python never gets control back), or in Python's sleep
# (the handler runs at once). It prints READY first.
_CHILD = textwrap.dedent("""
    import sys, time
    from tf_metainit.cli import stopping
    mode = sys.argv[1]
    if mode == "graph":
      import tensorflow as tf
      @tf.function
      def spin():
        x = tf.random.normal([256, 256])
        return tf.while_loop(lambda i, x: i < 10**9,
                             lambda i, x: (i + 1, tf.tanh(x @ x)), (0, x))
      spin.get_concrete_function()
    stopping.install(grace=1.0)
    print("READY", flush=True)
    try:
      spin() if mode == "graph" else time.sleep(600)
    except stopping.Stopped as e:
      print(f"ERROR: {e}", file=sys.stderr)
      sys.exit(128 + e.signum)
""")


def _run_and_signal(mode, signum, count=1):
  child = subprocess.Popen([sys.executable, "-c", _CHILD, mode], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
  assert child.stdout.readline().strip() == "READY"
  time.sleep(0.5)
  start = time.monotonic()
  for _ in range(count):
    child.send_signal(signum)
    time.sleep(0.1)
  try:
    _, err = child.communicate(timeout=30)
  except subprocess.TimeoutExpired:
    child.kill()
    pytest.fail(f"{mode}: still running 30 s after {signal.Signals(signum).name}")
  return child.returncode, err, time.monotonic() - start


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_long_graph_call_stops_after_the_grace_period(signum):
  code, err, seconds = _run_and_signal("graph", signum)
  assert code == 128 + signum
  lines = [l for l in err.splitlines() if l.startswith("ERROR:")]
  assert len(lines) == 1 and signal.Signals(signum).name in lines[0]
  assert "within 1 s" in lines[0] and "Traceback" not in err
  assert 0.9 < seconds < 10  # the 1 s grace, then the exit


def test_a_second_signal_stops_at_once():
  code, err, seconds = _run_and_signal("graph", signal.SIGINT, count=2)
  assert code == 128 + signal.SIGINT and "Traceback" not in err
  assert seconds < 0.9  # before the 1 s grace is over


def test_python_code_stops_through_its_own_handler():
  code, err, seconds = _run_and_signal("python", signal.SIGTERM)
  assert code == 128 + signal.SIGTERM
  lines = [l for l in err.splitlines() if l.startswith("ERROR:")]
  # The main thread's own line, not the watchdog's ("did not return within").
  assert len(lines) == 1 and "SIGTERM" in lines[0] and "within" not in lines[0]
  assert seconds < 0.9


def test_ctrl_c_stops_a_long_fit_in_seconds_and_writes_nothing(tmp_path):
  image = tmp_path / "photo.png"
  PIL.Image.fromarray(np.random.default_rng(0).integers(
      0, 255, (64, 64, 3), dtype=np.uint8)).save(image)
  out = tmp_path / "fit"
  child = subprocess.Popen(["tf-metainit-fit", "--init=text", f"--image={image}",
                            "--steps=1000000", f"--out_dir={out}"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  time.sleep(15)  # start-up, then inside the compiled fit
  assert child.poll() is None, child.communicate()
  start = time.monotonic()
  child.send_signal(signal.SIGINT)
  _, err = child.communicate(timeout=60)
  assert time.monotonic() - start < 3 + 5  # the 3 s grace, then the exit
  assert child.returncode == 128 + signal.SIGINT
  lines = [l for l in err.splitlines() if l.startswith("ERROR:")]
  assert len(lines) == 1 and "SIGINT" in lines[0] and "Traceback" not in err
  assert not out.exists()


def test_a_stop_while_tensorflow_traces_reaches_the_binary_unwrapped():
  # autograph wraps what the code it converts raises in its StagingError; a stop
  # must arrive as itself, so the binary prints its one line, not a traceback.
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tf_metainit.cli import stopping  # pylint: disable=g-import-not-at-top

  def step(x):
    if x > 0:  # a tensor condition: autograph converts this function
      raise stopping.Stopped(signal.SIGTERM)
    return x

  with pytest.raises(stopping.Stopped):
    tf.function(step)(tf.constant(1.0))
