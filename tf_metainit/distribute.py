"""Where a job runs: a tf.distribute strategy, built once by the binary and passed in.

  distribute.strategy = 'default'       one device
                        'mirrored'      every local GPU; without GPUs,
                                        distribute.cpu_replicas logical CPU devices
                                        (to run the multi-device path on a laptop or CI)
                        'multi_worker'  MultiWorkerMirroredStrategy over the workers of
                                        TF_CONFIG: one process per worker, all started
                                        with the same command (training only)
                        'tpu'           TPUStrategy (forces jit_compile; untested here)

The binaries build it in a gin scope named for the job, so `train/distribute.strategy`
binds training alone and `evaluate/distribute.strategy` evaluation alone (an unscoped
binding, both). Strategies must exist before TensorFlow starts its runtime (logical
devices, the multi-worker cluster), so the binaries create theirs first (`from_gin`)
and build the training config inside its scope; Python users do the same:

  strategy = distribute.get('mirrored', cpu_replicas=2)
  with strategy.scope():
    train.meta_train(root_dir, train.TrainConfig(...), strategy)
"""

import contextlib
import json
import os
import re
import shutil
import socket
import sys
import tempfile
import threading

from absl import logging
import gin
import tensorflow as tf

from tf_metainit import checks
from tf_metainit import layout

STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")
# A collective that waits longer than this for a lost worker fails, so the survivors
# exit with an error instead of hanging.
COLLECTIVE_TIMEOUT_SECONDS = 60
# A peer whose port refuses this many probes in a row, PEER_PROBE_SECONDS apart, is
# gone: TensorFlow would otherwise abort ~20 s later with a C++ error naming nothing.
PEER_PROBE_SECONDS, PEER_MISSES = 2.0, 3

_created = {}


def check_name(name, allowed=STRATEGIES, job=None):
  if name not in allowed:
    where = f"{job}/distribute.strategy" if job else "distribute.strategy"
    raise ValueError(f"{where} must be one of {allowed}, got {name!r}.")
  return name


def get(name, cpu_replicas=2):
  """The process's strategy `name`, created on first use."""
  if check_name(name) not in _created:
    _created[name] = _make(name, cpu_replicas)
  return _created[name]


@gin.configurable("distribute")
def _configured(strategy="default", cpu_replicas=2):
  return strategy, cpu_replicas


def from_gin(job, allowed=STRATEGIES):
  """The strategy the gin config names for `job` ('train' or 'evaluate', the gin
  scope); call it after parsing the config, before anything else runs TensorFlow."""
  with gin.config_scope(job):
    name, cpu_replicas = _configured()
  check_name(name, allowed, job)
  return get(name, cpu_replicas)


def _make(name, cpu_replicas):
  if name == "default":
    return tf.distribute.get_strategy()
  if name == "mirrored":
    return tf.distribute.MirroredStrategy(_mirrored_devices(cpu_replicas))
  if name == "multi_worker":
    check_tf_config(os.environ.get("TF_CONFIG"))
    options = tf.distribute.experimental.CommunicationOptions(
        timeout_seconds=COLLECTIVE_TIMEOUT_SECONDS)
    return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
  resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
  tf.config.experimental_connect_to_cluster(resolver)
  tf.tpu.experimental.initialize_tpu_system(resolver)
  return tf.distribute.TPUStrategy(resolver)


def _mirrored_devices(cpu_replicas):
  gpus = tf.config.list_physical_devices("GPU")
  if gpus:
    return [f"/gpu:{i}" for i in range(len(gpus))]
  checks.positive_int("distribute.cpu_replicas", cpu_replicas)
  cpu = tf.config.list_physical_devices("CPU")[0]
  try:
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * cpu_replicas)
  except RuntimeError as e:
    if len(tf.config.list_logical_devices("CPU")) != cpu_replicas:
      raise ValueError(
          f"distribute.strategy = 'mirrored' needs {cpu_replicas} logical CPU devices, "
          "which TensorFlow can only make before it starts: create the strategy first "
          "(distribute.get('mirrored', cpu_replicas)), as the binaries do.") from e
  return [d.name for d in tf.config.list_logical_devices("CPU")]


_TF_CONFIG_FIX = ('set TF_CONFIG to e.g. {"cluster": {"worker": ["host1:port", '
                  '"host2:port"]}, "task": {"type": "worker", "index": 0}} on each '
                  "worker")
_ADDRESS = re.compile(r"^\S+:\d{1,5}$")


def check_tf_config(text):
  """TF_CONFIG as MultiWorkerMirroredStrategy needs it, or a one-line error: a cluster
  {job name: ['host:port', ...]} with workers, and this process's task in it."""
  if not text:
    raise ValueError("distribute.strategy = 'multi_worker' needs TF_CONFIG: "
                     f"{_TF_CONFIG_FIX}.")
  try:
    config = json.loads(text)
  except ValueError as e:
    raise ValueError(f"TF_CONFIG is not valid JSON ({e}): {_TF_CONFIG_FIX}.") from e
  if not isinstance(config, dict):
    raise _tf_config_error(f"is a JSON {type(config).__name__}, not an object with "
                           "'cluster' and 'task'")
  cluster = _check_cluster(config.get("cluster"))
  _check_task(config.get("task"), cluster)
  return config


def _tf_config_error(problem):
  return ValueError(f"TF_CONFIG {problem}: {_TF_CONFIG_FIX}.")


def _check_cluster(cluster):
  """{job name: non-empty list of 'host:port'}, with a worker job."""
  if not isinstance(cluster, dict):
    raise _tf_config_error("cluster must be an object of job name -> addresses, got "
                           f"{cluster!r}")
  for job, addresses in cluster.items():
    if not (isinstance(addresses, list) and addresses and
            all(isinstance(a, str) and _ADDRESS.match(a) for a in addresses)):
      raise _tf_config_error(f"has no cluster.{job} list of 'host:port' addresses "
                             f"(it is {addresses!r})")
  if "worker" not in cluster:
    raise _tf_config_error("has no cluster.worker list of 'host:port' addresses (its "
                           f"jobs: {sorted(cluster)})")
  return cluster


def _check_task(task, cluster):
  """This process's task: a worker or the chief, by its index in the cluster."""
  kind = task.get("type") if isinstance(task, dict) else None
  if kind not in ("worker", "chief") or kind not in cluster:
    raise _tf_config_error("task must be an object {'type': 'worker', 'index': i} (or "
                           "type 'chief') naming a job of its cluster "
                           f"({sorted(cluster)}), got {task!r}")
  index, size = task.get("index"), len(cluster[kind])
  if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < size:
    raise _tf_config_error(f"task index must be an integer i with 0 <= i < {size} "
                           f"(one per cluster.{kind} address), got {index!r}")


def is_chief(strategy):
  """Whether this process writes the run directory (the first worker)."""
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None or not resolver.cluster_spec().as_dict():
    return True
  return resolver.task_type == "chief" or (
      resolver.task_type == "worker" and resolver.task_id == 0 and
      "chief" not in resolver.cluster_spec().as_dict())


def write_root(root_dir, strategy):
  """Where this process writes: root_dir for the chief; for another worker a temporary
  folder (its checkpoint and summary writes must happen, as every worker takes part,
  but only the chief's are kept). Remove it with `release`."""
  if is_chief(strategy):
    return root_dir
  return tempfile.mkdtemp(prefix="tf_metainit_worker_")


def release(path, root_dir):
  if path != root_dir:
    shutil.rmtree(path, ignore_errors=True)


def check_global_batch(global_batch, strategy):
  replicas = strategy.num_replicas_in_sync
  if global_batch % replicas:
    raise ValueError(f"meta_train.outer_batch_size = {global_batch} does not divide "
                     f"over the {replicas} replicas: use a multiple of {replicas}.")


def distributed_dataset(strategy, make_dataset, global_batch, start_batch):
  """Iterator over global batches from batch `start_batch` on, split over replicas.

  Every input pipeline builds the same global stream and keeps its workers' slice, so
  the replicas of one step see disjoint signals and step t sees the signals one
  device would (the first replica the first ones). The position comes from the step,
  not from a saved iterator state, so a resumed run continues the same order.
  """
  def dataset_fn(context):
    per_pipeline = global_batch // context.num_input_pipelines
    first = context.input_pipeline_id * per_pipeline
    ds = make_dataset().batch(global_batch, drop_remainder=True).skip(start_batch)
    ds = ds.map(lambda batch: {k: v[first:first + per_pipeline] for k, v in batch.items()})
    per_replica = context.get_per_replica_batch_size(global_batch)
    return ds.unbatch().batch(per_replica, drop_remainder=True).prefetch(2)

  return iter(strategy.distribute_datasets_from_function(dataset_fn))


class WorkerLost(RuntimeError):
  pass


def _relaunch(root_dir):
  return ("Relaunch every worker with the same command: training resumes from the "
          f"last checkpoint in {layout.checkpoints_dir(root_dir)}.")


def worker_lost(error, root_dir):
  """A collective's failure, said as what it means: another worker is gone."""
  task = re.search(r"/job:\w+/replica:\d+/task:\d+", str(error))
  who = task.group(0) if task else "another worker"
  return WorkerLost(f"{who} of this multi-worker run failed or is gone "
                    f"({type(error).__name__}), so this worker stops too. "
                    + _relaunch(root_dir))


@contextlib.contextmanager
def watching_peers(strategy, root_dir):
  """While training, probes the other workers of a multi-worker run; if one is gone,
  prints one line saying so and how to resume, and ends this worker (exit 1). A
  collective that fails first is raised as WorkerLost, saying the same."""
  peers = _peer_addresses(strategy)
  stop = threading.Event()

  def watch():
    misses = dict.fromkeys(peers, 0)
    while not stop.wait(PEER_PROBE_SECONDS):
      for peer in peers:
        misses[peer] = 0 if _answers(peer) else misses[peer] + 1
        if misses[peer] >= PEER_MISSES and not stop.is_set():
          message = (f"worker {peer} stopped answering, so this worker stops too. "
                     + _relaunch(root_dir))
          logging.error("%s", message)
          print(f"ERROR: {message}", file=sys.stderr, flush=True)
          os._exit(1)  # pylint: disable=protected-access; TF threads would hang exit

  thread = threading.Thread(target=watch, daemon=True)
  if peers:
    thread.start()
  try:
    yield
  except tf.errors.OpError as e:
    if peers:
      raise worker_lost(e, root_dir) from e
    raise
  finally:
    stop.set()


def _peer_addresses(strategy):
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None:
    return []
  cluster = resolver.cluster_spec().as_dict()
  mine = cluster.get(resolver.task_type, [])[resolver.task_id] if cluster else None
  return [a for job in cluster.values() for a in job if a != mine]


def _answers(address):
  host, port = address.rsplit(":", 1)
  try:
    with socket.create_connection((host, int(port)), timeout=1.0):
      return True
  except OSError:
    return False
