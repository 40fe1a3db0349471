"""Where a job runs: a tf.distribute strategy, built once by the binary and passed in.

  distribute.strategy = 'default'       one device
                        'mirrored'      every local GPU; without GPUs,
                                        distribute.cpu_replicas logical CPU devices
                                        (to run the multi-device path on a laptop or CI)
                        'multi_worker'  MultiWorkerMirroredStrategy over the workers of
                                        TF_CONFIG: one process per worker, all started
                                        with the same command (training only), all
                                        reachable within distribute.startup_timeout
                                        seconds; a collective waiting longer than
                                        distribute.collective_timeout fails. Under
                                        srun without TF_CONFIG, the cluster is
                                        Slurm's job step (tf_config_from_slurm)
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

import concurrent.futures
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
from tensorflow.python.eager import context as tf_context  # pylint: disable=g-direct-tensorflow-import

from tf_metainit import checks
from tf_metainit import layout

STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")
# Workers are started one machine after another, by hand or by a scheduler that may
# queue them, and each imports TensorFlow first: a few minutes apart is normal; past
# that, a worker is most likely missing or unreachable.
STARTUP_TIMEOUT_SECONDS = 300
# A collective that waits longer than this fails (DeadlineExceeded), so a worker that
# is alive but stuck ends the others instead of hanging them. It must outlast what a
# worker may legitimately do while another waits at the next collective (trace its
# first step, save a checkpoint); a worker that is gone is caught within seconds by
# watching_peers and TensorFlow's own health check.
COLLECTIVE_TIMEOUT_SECONDS = 300
# Under srun without TF_CONFIG, worker i of a node listens on this + i (the
# SlurmClusterResolver's default).
SLURM_PORT_BASE = 8888
# A peer whose port refuses this many probes in a row, PEER_PROBE_SECONDS apart, is
# gone: TensorFlow would otherwise abort ~20 s later with a C++ error naming nothing.
PEER_PROBE_SECONDS, PEER_MISSES = 2.0, 3

_created = {}


def check_name(name, allowed=STRATEGIES, job=None):
  if name not in allowed:
    where = f"{job}/distribute.strategy" if job else "distribute.strategy"
    raise ValueError(f"{where} must be one of {allowed}, got {name!r}.")
  return name


def get(name, cpu_replicas=2, startup_timeout=STARTUP_TIMEOUT_SECONDS,
        collective_timeout=COLLECTIVE_TIMEOUT_SECONDS, slurm_port_base=SLURM_PORT_BASE):
  """The process's strategy `name`, created on first use (the timeouts, in seconds,
  and the Slurm port are multi_worker's)."""
  if check_name(name) not in _created:
    _created[name] = _make(name, cpu_replicas, startup_timeout, collective_timeout,
                           slurm_port_base)
  return _created[name]


@gin.configurable("distribute")
def _configured(strategy="default", cpu_replicas=2,
                startup_timeout=STARTUP_TIMEOUT_SECONDS,
                collective_timeout=COLLECTIVE_TIMEOUT_SECONDS,
                slurm_port_base=SLURM_PORT_BASE):
  return strategy, (cpu_replicas, startup_timeout, collective_timeout, slurm_port_base)


def from_gin(job, allowed=STRATEGIES):
  """The strategy the gin config names for `job` ('train' or 'evaluate', the gin
  scope); call it after parsing the config, before anything else runs TensorFlow."""
  with gin.config_scope(job):
    name, options = _configured()
  check_name(name, allowed, job)
  return get(name, *options)


def _make(name, cpu_replicas, startup_timeout, collective_timeout, slurm_port_base):
  if name == "default":
    return tf.distribute.get_strategy()
  if name == "mirrored":
    return tf.distribute.MirroredStrategy(_mirrored_devices(cpu_replicas))
  if name == "multi_worker":
    return _multi_worker(startup_timeout, collective_timeout, slurm_port_base)
  resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
  tf.config.experimental_connect_to_cluster(resolver)
  tf.tpu.experimental.initialize_tpu_system(resolver)
  return tf.distribute.TPUStrategy(resolver)


def _multi_worker(startup_timeout, collective_timeout, slurm_port_base):
  if not os.environ.get("TF_CONFIG") and "SLURM_PROCID" in os.environ:
    os.environ["TF_CONFIG"] = tf_config_from_slurm(
        checks.positive_int("distribute.slurm_port_base", slurm_port_base))
    logging.info("TF_CONFIG from Slurm: %s", os.environ["TF_CONFIG"])
  config = check_tf_config(os.environ.get("TF_CONFIG"))
  startup_timeout = checks.positive("distribute.startup_timeout", startup_timeout)
  options = tf.distribute.experimental.CommunicationOptions(
      timeout_seconds=checks.positive("distribute.collective_timeout",
                                      collective_timeout))
  # Without TensorFlow's coordination service. Its agent waits for the cluster inside
  # the constructor in C++ holding the GIL, after installing a SIGTERM handler of its
  # own (a preemption notifier) that swallows SIGTERM: no Python could run, so a
  # worker that never came could be stopped by nothing but SIGKILL. Without it the
  # strategy waits for the others in an all-reduce that releases the GIL, so the
  # binaries' stop handlers (cli/stopping.py) and the deadline below are plain
  # Python, and a worker lost later is caught by the strategy's own health check and
  # by watching_peers. There is no public switch; the strategy configures the
  # service only when none is configured, and an empty type configures none.
  tf_context.context().configure_coordination_service(service_type="")
  with _startup_deadline(startup_timeout, _other_tasks(config)):
    return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)


def tf_config_from_slurm(port_base=SLURM_PORT_BASE):
  """TF_CONFIG (JSON) of this Slurm task, from tf.distribute's SlurmClusterResolver:
  one worker per task of the job step, at port_base + its slot on its node, in the
  order of the sorted host names. GPUs are left as Slurm assigned them
  (--gpus-per-task, or every GPU of the node for one task per node): the resolver
  only needs a GPU count to pack tasks, so it gets one slot per task."""
  from tensorflow.python.distribute.cluster_resolver import slurm_cluster_resolver  # pylint: disable=g-direct-tensorflow-import,import-outside-toplevel
  try:
    per_node = slurm_cluster_resolver.expand_tasks_per_node(
        os.environ["SLURM_STEP_TASKS_PER_NODE"])
    resolver = slurm_cluster_resolver.SlurmClusterResolver(
        port_base=port_base, gpus_per_node=max(per_node), gpus_per_task=1,
        auto_set_gpu=False)
    cluster = resolver.cluster_spec().as_dict()
  except (KeyError, RuntimeError, ValueError) as e:
    raise ValueError(
        f"SLURM_PROCID is set but the Slurm job step could not be read ({e}): run "
        "tf-metainit-train under srun (which sets SLURM_STEP_NODELIST and "
        "SLURM_STEP_TASKS_PER_NODE), or set TF_CONFIG yourself.") from e
  return json.dumps({"cluster": cluster,
                     "task": {"type": resolver.task_type, "index": resolver.task_id}})


@contextlib.contextmanager
def _startup_deadline(seconds, peers):
  """Ends the process (status 1) with one line (startup_problem) if the block has not
  ended within `seconds`. The binaries build the strategy before they write
  anything, so nothing is left half written."""
  ended = threading.Event()

  def watch():
    if not ended.wait(seconds):
      message = startup_problem(seconds, peers)
      if not ended.is_set():
        print(f"ERROR: {message}", file=sys.stderr, flush=True)
        os._exit(1)  # pylint: disable=protected-access; TF threads would hang exit

  thread = threading.Thread(target=watch, name="multi_worker-startup-deadline",
                            daemon=True)
  thread.start()
  try:
    yield
  finally:
    ended.set()
    thread.join()


def _other_tasks(config):
  """[(address, 'worker 1'), ...]: the tasks of a checked TF_CONFIG that take part in
  the collectives, but this process's."""
  cluster, task = config["cluster"], config["task"]
  me = (task["type"], task["index"])
  return [(address, _task_name(cluster, job, i)) for job in ("chief", "worker")
          for i, address in enumerate(cluster.get(job, ())) if (job, i) != me]


def _task_name(cluster, job, index):
  chief = ", the chief" if _is_chief_task(cluster, job, index) else ""
  return f"{job} {index}{chief}"


def startup_problem(seconds, peers):
  """What to say when the cluster has not formed after `seconds`: which of `peers`
  ((address, task) pairs) do not answer a TCP connect, and what to check."""
  addresses = [address for address, _ in peers]
  with concurrent.futures.ThreadPoolExecutor(max(1, len(peers))) as pool:
    answers = list(pool.map(_answers, addresses))  # at once: each may take its timeout
  missing = [f"{address} (task {task})"
             for (address, task), answered in zip(peers, answers) if not answered]
  later = ("and that they all start within distribute.startup_timeout "
           f"(now {seconds:g} s) of each other")
  if missing:
    return (f"multi_worker start-up: workers not reachable after {seconds:g} s: "
            f"{', '.join(missing)}; check that tf-metainit-train runs on each of them "
            "with the same TF_CONFIG (its own task index), that the addresses and ports "
            f"are right and open between the machines, {later}.")
  return (f"multi_worker start-up: every worker answers on its port, but the cluster "
          f"did not form within {seconds:g} s; check that each of those ports is "
          "tf-metainit-train's (not another program's), that every worker has the same "
          f"TF_CONFIG cluster and its own task index, {later}.")


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
  return _is_chief_task(resolver.cluster_spec().as_dict(), resolver.task_type,
                        resolver.task_id)


def _is_chief_task(cluster, job, index):
  """The chief, or without one the first worker."""
  return job == "chief" or (job == "worker" and index == 0 and "chief" not in cluster)


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
  what = ("did not take part in a collective within distribute.collective_timeout"
          if isinstance(error, tf.errors.DeadlineExceededError) else "failed or is gone")
  return WorkerLost(f"{who} of this multi-worker run {what} ({type(error).__name__}), "
                    "so this worker stops too. " + _relaunch(root_dir))


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
