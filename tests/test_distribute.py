"""Meta-training under tf.distribute gives the one-device numbers.

Each run is the real binary in its own process: logical CPU devices and the worker
cluster can only be set up before TensorFlow starts. The reference is the default
strategy with the same global batch.
"""

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from tf_metainit import distribute

REPO = pathlib.Path(__file__).resolve().parents[1]
BINARY = REPO / "bin" / "meta_train.py"
SMALL = (
    "ImageRegression.resolution = 8",
    "ImageRegression.num_train = 8",
    "ImageRegression.num_test = 2",
    "Siren.width = 16",
    "Siren.depth = 3",
    "meta_train.outer_batch_size = 4",
    "meta_train.num_val_signals = 2",
)
ALGORITHMS = {
    "maml": ("meta_train.algorithm = 'maml'", "meta_train.first_order = False"),
    "reptile": ("meta_train.algorithm = 'reptile'", "meta_train.inner_optimizer = @inner/SGD()",
                "meta_train.inner_steps = 3"),
}


def _command(root, bindings):
  return ([sys.executable, str(BINARY), f"--root_dir={root}",
           "--gin_file=image/text_cpu.gin"] +
          [f"--gin_bindings={b}" for b in SMALL + tuple(bindings)])


def _env(tmp_path, tf_config=None):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="",
             TMPDIR=str(tmp_path / "tmp"))
  (tmp_path / "tmp").mkdir(exist_ok=True)
  if tf_config is not None:
    env["TF_CONFIG"] = json.dumps(tf_config)
  return env


def _start(root, bindings, env):
  return subprocess.Popen(_command(root, bindings), stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True, env=env)


def _finish(proc, timeout=300):
  _, err = proc.communicate(timeout=timeout)
  assert proc.returncode == 0, err[-3000:]
  return err


def _weights(root, step):
  reader = tf.train.load_checkpoint(str(root / "train" / "checkpoints" / f"ckpt-{step}"))
  return {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map()
          if k.startswith(("field/", "inner_lr/"))}


def _max_difference(a, b):
  assert a.keys() == b.keys() and a
  return max(float(np.abs(a[k] - b[k]).max()) for k in a)


def _ports(n):
  sockets = [socket.socket() for _ in range(n)]
  for s in sockets:
    s.bind(("127.0.0.1", 0))
  ports = [s.getsockname()[1] for s in sockets]
  for s in sockets:
    s.close()
  return ports


def _cluster(index, ports):
  return {"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
          "task": {"type": "worker", "index": index}}


# Reptile's replica path is MAML's with another step: slow-marked, MAML kept by default.
@pytest.mark.parametrize("algorithm", [
    "maml", pytest.param("reptile", marks=pytest.mark.slow)])
def test_mirrored_over_two_cpus_matches_one_device(tmp_path, algorithm):
  bindings = ALGORITHMS[algorithm] + ("meta_train.num_iterations = 3",)
  procs = {name: _start(tmp_path / name, bindings + (
      f"train/distribute.strategy = '{name}'",), _env(tmp_path)) for name in ("default",
                                                                       "mirrored")}
  errors = {name: _finish(p) for name, p in procs.items()}
  assert "replica:0/task:0/device:CPU:1" in errors["mirrored"]  # two devices in use
  difference = _max_difference(_weights(tmp_path / "default", 3),
                               _weights(tmp_path / "mirrored", 3))
  print(f"{algorithm}: max |mirrored - default| = {difference:.3g}")
  assert difference <= 1e-5


@pytest.mark.slow  # over 35 s on 2 cores; run with --runslow
def test_two_workers_match_one_device_and_only_the_chief_writes(tmp_path):
  bindings = ALGORITHMS["maml"] + ("meta_train.num_iterations = 3",
                                   "train/distribute.strategy = 'multi_worker'")
  ports = _ports(2)
  workers = [_start(tmp_path / "run", bindings, _env(tmp_path, _cluster(i, ports)))
             for i in range(2)]
  reference = _start(tmp_path / "default", ALGORITHMS["maml"] + (
      "meta_train.num_iterations = 3",), _env(tmp_path))
  for proc in workers + [reference]:
    _finish(proc)
  assert _max_difference(_weights(tmp_path / "default", 3),
                         _weights(tmp_path / "run", 3)) <= 1e-5
  events = list((tmp_path / "run" / "train").glob("events.*"))
  assert len(events) == 1  # one writer: the chief
  assert os.listdir(tmp_path / "run" / "config_history") == ["step-00000000.gin"]
  assert os.listdir(tmp_path / "tmp") == []  # the other worker's folder is removed


@pytest.mark.slow  # over 35 s on 2 cores; run with --runslow
def test_a_lost_worker_stops_the_other_and_both_resume(tmp_path):
  steps = 600
  bindings = ALGORITHMS["reptile"] + (f"meta_train.num_iterations = {steps}",
                                      "meta_train.checkpoint_every = 100",
                                      "train/distribute.strategy = 'multi_worker'")
  ports = _ports(2)
  for proc in [_start(tmp_path / "uninterrupted", bindings,
                      _env(tmp_path, _cluster(i, ports))) for i in range(2)]:
    _finish(proc)
  ports = _ports(2)
  root = tmp_path / "run"
  workers = [_start(root, bindings, _env(tmp_path, _cluster(i, ports))) for i in range(2)]
  checkpoint = root / "train" / "checkpoints" / "ckpt-200.index"
  deadline = time.time() + 120
  while not checkpoint.exists():
    assert time.time() < deadline, "no checkpoint written"
    time.sleep(0.05)
  workers[1].send_signal(signal.SIGKILL)
  workers[1].wait()
  killed_at = time.time()
  _, err = workers[0].communicate(timeout=120)
  assert workers[0].returncode not in (0, None)
  assert time.time() - killed_at < 90
  errors = [line for line in err.splitlines() if line.startswith("ERROR:")]
  assert len(errors) == 1 and "Relaunch every worker" in errors[0], err[-3000:]
  ports = _ports(2)
  relaunched = [_start(root, bindings, _env(tmp_path, _cluster(i, ports)))
                for i in range(2)]
  for proc in relaunched:
    _finish(proc)
  assert _max_difference(_weights(tmp_path / "uninterrupted", steps),
                         _weights(root, steps)) == 0


def _slurm_step(monkeypatch, procid, nodelist, tasks_per_node, num_tasks):
  monkeypatch.delenv("TF_CONFIG", raising=False)
  for name, value in (("PROCID", procid), ("STEP_NODELIST", nodelist),
                      ("STEP_TASKS_PER_NODE", tasks_per_node),
                      ("STEP_NUM_TASKS", num_tasks)):
    monkeypatch.setenv(f"SLURM_{name}", str(value))


def test_under_srun_the_cluster_is_the_job_step(monkeypatch):
  # srun -N2 --ntasks-per-node=2: ranks 0, 1 on gpu07, 2, 3 on gpu08; rank 2 is the
  # first task of the second node, so it listens on the base port there.
  _slurm_step(monkeypatch, 2, "gpu[07-08]", "2(x2)", 4)
  assert json.loads(distribute.tf_config_from_slurm(9000)) == {
      "cluster": {"worker": ["gpu07:9000", "gpu07:9001", "gpu08:9000", "gpu08:9001"]},
      "task": {"type": "worker", "index": 2}}
  distribute.check_tf_config(distribute.tf_config_from_slurm())


def test_a_slurm_allocation_outside_srun_gets_one_line(monkeypatch):
  _slurm_step(monkeypatch, 0, "gpu[07-08]", "2(x2)", 4)
  monkeypatch.delenv("SLURM_STEP_TASKS_PER_NODE")
  with pytest.raises(ValueError, match="run tf-metainit-train under srun") as error:
    distribute.tf_config_from_slurm()
  assert "\n" not in str(error.value)


@pytest.mark.slow  # two TensorFlow workers on loopback and a reference: about a minute
def test_two_srun_tasks_without_tf_config_match_one_device(tmp_path):
  bindings = ALGORITHMS["maml"] + ("meta_train.num_iterations = 3",
                                   "train/distribute.strategy = 'multi_worker'",
                                   f"distribute.slurm_port_base = {_ports(1)[0]}")
  slurm = dict(SLURM_STEP_NODELIST="localhost", SLURM_STEP_TASKS_PER_NODE="2",
               SLURM_STEP_NUM_TASKS="2")
  workers = [_start(tmp_path / "run", bindings,
                    dict(_env(tmp_path), SLURM_PROCID=str(i), **slurm)) for i in range(2)]
  reference = _start(tmp_path / "default", ALGORITHMS["maml"] + (
      "meta_train.num_iterations = 3",), _env(tmp_path))
  for proc in workers + [reference]:
    _finish(proc)
  assert _max_difference(_weights(tmp_path / "default", 3),
                         _weights(tmp_path / "run", 3)) <= 1e-5


@pytest.mark.parametrize("text, message", [
    ("", "needs TF_CONFIG"),
    ("{not json", "not valid JSON"),
    ('{"cluster": {"worker": "a:1"}, "task": {"type": "worker", "index": 0}}',
     "no cluster.worker list"),
    ('{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 2}}',
     "0 <= i < 2"),
])
def test_malformed_tf_config_gets_one_line(text, message):
  with pytest.raises(ValueError, match=message) as error:
    distribute.check_tf_config(text)
  assert "\n" not in str(error.value)


def test_malformed_tf_config_binary(tmp_path):
  env = _env(tmp_path)
  env["TF_CONFIG"] = "{not json"
  result = subprocess.run(_command(tmp_path / "run", (
      "train/distribute.strategy = 'multi_worker'",)), capture_output=True, text=True, env=env,
                          timeout=120)
  assert result.returncode == 1
  errors = [line for line in result.stderr.splitlines() if line.startswith("ERROR:")]
  assert len(errors) == 1 and "TF_CONFIG is not valid JSON" in errors[0]
  assert "Traceback" not in result.stderr
  assert not (tmp_path / "run").exists()


def test_outer_batch_must_divide_over_replicas(tmp_path):
  result = subprocess.run(_command(tmp_path / "run", (
      "train/distribute.strategy = 'mirrored'", "distribute.cpu_replicas = 3",
      "meta_train.num_iterations = 1")), capture_output=True, text=True,
                          env=_env(tmp_path), timeout=120)
  assert result.returncode == 1
  assert ("ERROR: meta_train.outer_batch_size = 4 does not divide over the 3 replicas"
          in result.stderr)


EVALUATION_SCRIPT = """
import sys
import numpy as np
import gin
from tf_metainit import distribute, evaluate
from tf_metainit.cli import common
from tf_metainit.meta import optimizers
from tf_metainit.tasks import image
from tf_metainit import testtime

strategy = distribute.get("mirrored", cpu_replicas=2)
common.parse_gin(["image/text_cpu.gin"], ["ImageRegression.resolution = 8",
                                          "ImageRegression.num_test = 5",
                                          "Siren.width = 16", "Siren.depth = 3"])
task = image.ImageRegression()
signals = task.test_signals()
params = task.field.params()
out = {}
for name, s in (("default", None), ("mirrored", strategy)):
  tto = testtime.TestTimeOptimizer(task, strategy=s)
  trace, finals = tto.run(params, signals, optimizers.Adam(1e-3), 5, "full", chunk=4)
  out[name] = (trace, np.concatenate([f[0].numpy() for f in finals]))
print("replicas", strategy.num_replicas_in_sync)
print("trace", np.abs(out["default"][0] - out["mirrored"][0]).max())
print("weights", np.abs(out["default"][1] - out["mirrored"][1]).max())
print("shape", out["mirrored"][0].shape)
"""


@pytest.mark.slow  # over 35 s on 2 cores; run with --runslow
def test_evaluation_over_replicas_gives_each_signal_its_one_device_result(tmp_path):
  # 5 signals in chunks of 4 over 2 replicas: one chunk splits 2+2, the other 1 + a pad.
  result = subprocess.run([sys.executable, "-c", EVALUATION_SCRIPT], capture_output=True,
                          text=True, env=_env(tmp_path), timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  values = dict(line.split(" ", 1) for line in result.stdout.splitlines())
  assert values["replicas"] == "2"
  assert values["shape"] == "(6, 5)"  # steps 0..5, 5 signals
  print(result.stdout)
  assert float(values["trace"]) <= 1e-5 and float(values["weights"]) <= 1e-6


@pytest.mark.slow  # the docs' script as written: two workers and a reference, 3 steps
def test_the_docs_two_worker_script_gives_the_one_device_weights(tmp_path):
  port0, port1 = _ports(2)
  env = dict(_env(tmp_path), PORT0=str(port0), PORT1=str(port1))
  result = subprocess.run(["bash", str(REPO / "docs" / "distributed" /
                                       "two_local_workers.sh"), str(tmp_path / "out"), "3"],
                          capture_output=True, text=True, env=env, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  line = result.stdout.strip().splitlines()[-1]
  assert line.startswith("largest weight difference, two workers vs one device:")
  assert float(line.rsplit(" ", 1)[1]) <= 1e-5
  assert len(list((tmp_path / "out" / "multi_worker" / "train").glob("events.*"))) == 1
