"""A multi-worker run whose cluster does not form ends in one line, not a hang."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import tensorflow as tf

from tf_metainit import distribute

# Worker `index` of TF_CONFIG builds its strategy as tf-metainit-train does (stop
# handlers installed, then from gin in the train scope) and, once built, says whether
# its start-up watchdog is gone and whether SIGTERM still reaches those handlers.
CHILD = """
import os, signal, sys, time
import gin
from tf_metainit import distribute
from tf_metainit.cli import stopping
stopping.install(3.0)
gin.parse_config(["train/distribute.strategy = 'multi_worker'",
                  f"train/distribute.startup_timeout = {sys.argv[1]}"])
print("building", flush=True)
strategy = distribute.from_gin("train")
print("replicas", strategy.num_replicas_in_sync, flush=True)
import threading
if not any("deadline" in t.name for t in threading.enumerate()):
  print("no-watchdog", flush=True)
try:
  os.kill(os.getpid(), signal.SIGTERM)
  time.sleep(10)
except stopping.Stopped:
  print("stopped", flush=True)
"""


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _listening():
  s = socket.socket()
  s.bind(("127.0.0.1", 0))
  s.listen()
  return s


def _address(port):
  return f"127.0.0.1:{port}"


def _start_worker(tmp_path, index, workers, startup_timeout):
  tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
  env = dict(os.environ, TF_CONFIG=json.dumps(tf_config), TF_CPP_MIN_LOG_LEVEL="2",
             CUDA_VISIBLE_DEVICES="", TMPDIR=str(tmp_path))
  return subprocess.Popen([sys.executable, "-c", CHILD, str(startup_timeout)],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env=env)


def _errors(stderr):
  return [line for line in stderr.splitlines() if line.startswith("ERROR:")]


def test_a_worker_nobody_listens_on_ends_the_start_up_in_one_line(tmp_path):
  absent = _address(_free_port())
  start = time.monotonic()
  proc = _start_worker(tmp_path, 0, [_address(_free_port()), absent], 5)
  out, err = proc.communicate(timeout=120)
  elapsed = time.monotonic() - start
  assert proc.returncode == 1, err[-3000:]
  assert 5 <= elapsed < 60
  assert out.split() == ["building"]
  assert len(_errors(err)) == 1, err[-3000:]
  assert (f"workers not reachable after 5 s: {absent} (task worker 1);"
          in _errors(err)[0])
  assert "Traceback" not in err


@pytest.mark.parametrize("signum", [
    signal.SIGINT, pytest.param(signal.SIGTERM, marks=pytest.mark.slow)])
def test_a_stop_during_the_start_up_ends_the_trainer_in_one_line(tmp_path, signum):
  # TensorFlow's coordination service would hold the GIL in that wait and swallow
  # SIGTERM (its preemption notifier); the strategy is built without it.
  tf_config = {"cluster": {"worker": [_address(_free_port()) for _ in range(2)]},
               "task": {"type": "worker", "index": 0}}
  root = tmp_path / "run"
  proc = subprocess.Popen(
      ["tf-metainit-train", f"--root_dir={root}", "--gin_file=testing/tiny.gin",
       "--gin_bindings=train/distribute.strategy = 'multi_worker'"],
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
      env=dict(os.environ, TF_CONFIG=json.dumps(tf_config), TF_CPP_MIN_LOG_LEVEL="2",
               CUDA_VISIBLE_DEVICES=""))
  time.sleep(20)  # start-up, then inside the constructor's wait for worker 1
  assert proc.poll() is None, proc.communicate()
  proc.send_signal(signum)
  sent = time.monotonic()
  _, err = proc.communicate(timeout=60)
  assert proc.returncode == 128 + signum, err[-3000:]
  assert time.monotonic() - sent < 10 + 5  # at most the trainer's grace, then exit
  name = signal.Signals(signum).name
  assert len(_errors(err)) == 1 and name in _errors(err)[0], err[-3000:]
  assert "Traceback" not in err
  assert not root.exists()


@pytest.mark.slow  # two TensorFlow workers on loopback: about half a minute
def test_a_healthy_start_up_leaves_no_watchdog_and_keeps_the_stop_handlers(tmp_path):
  # The binaries' SIGTERM must still reach their handlers once the strategy exists.
  workers = [_address(_free_port()) for _ in range(2)]
  procs = [_start_worker(tmp_path, i, workers, 60) for i in range(2)]
  for proc in procs:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-3000:]
    assert out.splitlines() == ["building", "replicas 2", "no-watchdog", "stopped"]
    assert not _errors(err)


def test_the_probe_names_only_the_workers_that_do_not_answer():
  with _listening() as up:
    listening, closed = _address(up.getsockname()[1]), _address(_free_port())
    config = {"cluster": {"worker": [closed, listening, _address(_free_port())]},
              "task": {"type": "worker", "index": 2}}
    message = distribute.startup_problem(7, distribute._other_tasks(config))
  assert message.startswith(
      f"multi_worker start-up: workers not reachable after 7 s: {closed} (task worker "
      "0, the chief); check that tf-metainit-train runs on each of them")
  assert listening not in message and "\n" not in message


def test_when_every_worker_answers_the_probe_says_so():
  with _listening() as a, _listening() as b:
    peers = [(_address(s.getsockname()[1]), f"worker {i}")
             for i, s in enumerate((a, b))]
    message = distribute.startup_problem(5, peers)
  assert "every worker answers on its port, but the cluster did not form" in message


@pytest.mark.parametrize("binding", ["startup_timeout", "collective_timeout"])
def test_timeouts_must_be_positive(monkeypatch, binding):
  monkeypatch.setenv("TF_CONFIG", json.dumps({
      "cluster": {"worker": [_address(_free_port())]},
      "task": {"type": "worker", "index": 0}}))
  with pytest.raises(ValueError, match=f"distribute.{binding} must be a finite number"):
    distribute.get("multi_worker", **{binding: 0})


def test_a_collective_timeout_is_said_as_such(tmp_path):
  error = tf.errors.DeadlineExceededError(None, None, "Collective ops timed out")
  message = str(distribute.worker_lost(error, str(tmp_path)))
  assert "did not take part in a collective within distribute.collective_timeout" in (
      message)
  assert "Relaunch every worker" in message
