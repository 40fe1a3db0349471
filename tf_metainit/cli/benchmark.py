r"""Benchmarks meta-training and test-time speed and memory; writes BENCHMARKS.md.

  tf-metainit-benchmark --output=BENCHMARKS.md            # everything: ~30 min on an
                                                          # idle 2-core CPU
  tf-metainit-benchmark --quick --output=/tmp/bench.md    # tiny sizes: checks the tool
  tf-metainit-benchmark --workloads=maml,tto --output=/tmp/bench.md
  tf-metainit-benchmark --workloads=maml,jax --output=/tmp/bench.md  # against JAX:
                                                          # pip install -e ".[compare]"
  tf-metainit-benchmark --list

Workloads run one at a time, each in its own process (its peak memory is its own);
see tf_metainit/benchmark/ for what each measures (specs.py, *_workloads.py) and how
FLOPs are counted (flops.py).
"""

import json
import os
import shlex
import subprocess
import sys
import time

from absl import app
from absl import flags

from tf_metainit import files
from tf_metainit import progress
from tf_metainit.benchmark import report
from tf_metainit.benchmark import specs
from tf_metainit.cli import common

flags.DEFINE_string("output", "BENCHMARKS.md", "Markdown report to write.")
flags.DEFINE_string("workloads", "all", "Comma list of groups (" +
                    ", ".join(specs.GROUPS) + ") and/or workload names, or 'all'.")
flags.DEFINE_bool("quick", False, "Tiny sizes and few repeats: checks the tool in "
                  "minutes; the figures are not the ones the goals refer to.")
flags.DEFINE_integer("repeats", None, "Timed calls per workload (default 5, quick 2).")
flags.DEFINE_integer("warmup", None, "Untimed calls after the first (default 1).")
flags.DEFINE_integer("timeout", 3600, "Seconds before a workload is abandoned.")
flags.DEFINE_string("results_json", None, "Also write the raw results here "
                    "(default: the output path with .json).")
flags.DEFINE_string("from_json", None, "Only rewrite the report from a results JSON.")
flags.DEFINE_bool("list", False, "List the workloads and exit.")
FLAGS = flags.FLAGS


def _child(name, given=None):
  # measure imports TensorFlow: imported where used, so that --help does not load it.
  from tf_metainit.benchmark import measure  # pylint: disable=g-import-not-at-top
  cmd = [sys.executable, "-m", "tf_metainit.benchmark", f"--one={name}"]
  if given:
    cmd.append(f"--given={json.dumps(given)}")
  if FLAGS.quick:
    cmd.append("--quick")
  if FLAGS.repeats:
    cmd.append(f"--repeats={FLAGS.repeats}")
  if FLAGS.warmup is not None:
    cmd.append(f"--warmup={FLAGS.warmup}")
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  t0 = time.time()
  try:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=FLAGS.timeout,
                          env=env, check=False)
  except subprocess.TimeoutExpired:
    return {"error": f"timed out after {FLAGS.timeout} s", "wall_s": time.time() - t0}
  result = measure.parse_result(proc.stdout)
  if result is None:
    tail = (proc.stderr or proc.stdout or "no output").strip().splitlines()[-20:]
    return {"error": "\n".join(tail) or f"exit status {proc.returncode}",
            "wall_s": time.time() - t0}
  result["process_s"] = time.time() - t0  # includes the TensorFlow import
  return result


def _command():
  args = [a for a in sys.argv[1:] if not a.startswith(("--from_json", "--results_json"))]
  return " ".join(["tf-metainit-benchmark"] + [shlex.quote(a) for a in args])


def _report(data):
  return report.markdown(data["results"], data["machine"], data["command"],
                         data["quick"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  from tf_metainit.benchmark import measure  # pylint: disable=g-import-not-at-top
  if FLAGS.from_json:
    with open(FLAGS.from_json) as f:
      data = json.load(f)
    files.write_text(FLAGS.output, _report(data))
    print(f"Wrote {FLAGS.output}")
    return
  all_specs = specs.workload_specs(FLAGS.quick)
  try:
    names = specs.select(FLAGS.workloads, FLAGS.quick)
  except ValueError as e:
    raise app.UsageError(str(e))
  if FLAGS.workloads.strip() in ("", "all") and not specs.has_jax():
    print('The jax group (the same MAML step in JAX) is left out: pip install -e '
          '".[compare]" to measure it too.')
  if FLAGS.list:
    for name in names:
      print(f"{all_specs[name]['group']:12s} {name}")
    return
  # The peak is measured again at the end: other jobs may load the CPU unevenly.
  names.append("matmul_peak_end")
  json_path = FLAGS.results_json or os.path.splitext(FLAGS.output)[0] + ".json"
  data = {"machine": measure.machine_facts(), "command": _command(),
          "quick": FLAGS.quick, "results": {}}
  measured = {}
  t0 = time.time()
  with progress.Bar(len(names), "workload", "Benchmark") as bar:
    for i, name in enumerate(names):
      bar.update(i, running=name)
      data["results"][name] = _measure(name, f"[{i + 1}/{len(names)}] {name}",
                                       all_specs, measured, bar, data["results"])
      data["machine"]["run_minutes"] = (time.time() - t0) / 60
      # Rewritten after every workload so an interrupted run keeps what it measured.
      files.write_text(json_path, json.dumps(data, indent=1))
      files.write_text(FLAGS.output, _report(data))
  print(f"Wrote {FLAGS.output} and {json_path} in {(time.time() - t0) / 60:.1f} min")


def _measure(name, title, all_specs, measured, bar, results):
  """The result of workload `name` (the same spec's earlier one if `measured` has it);
  prints `title ... outcome`. A spec whose `choice_of` names a workload in `results`
  reuses that one's choice (folder_workloads.choice)."""
  run_name = "matmul_peak" if name == "matmul_peak_end" else name
  key = specs.spec_key(all_specs[run_name])
  if key in measured and name != "matmul_peak_end":
    bar.clear()
    print(f"{title}: same as {measured[key]['name']}", flush=True)
    return dict(measured[key], name=name, group=all_specs[name]["group"], alias=True)
  # In a log the title shows which workload is running; on a terminal the bar does,
  # and the whole line comes at the end.
  if not bar.active:
    print(f"{title} ...", end=" ", flush=True)
  source = results.get(all_specs[run_name].get("choice_of"), {})
  result = _child(run_name, source.get("choice"))
  result.setdefault("name", name)
  result.setdefault("group", all_specs[run_name]["group"])
  if name == "matmul_peak_end":
    result["name"] = name
  if "error" in result:
    outcome = f"FAILED ({result['wall_s']:.0f} s): {result['error'].splitlines()[-1]}"
  else:
    measured.setdefault(key, result)
    outcome = f"{result['process_s']:.0f} s ({_figure(result)})"
  bar.clear()
  print(f"{title} ... {outcome}" if bar.active else outcome, flush=True)
  return result


def _figure(result):
  """The one figure of a result the progress line shows."""
  if result.get("gflops") is not None:
    return f"{result['gflops']:.0f} GFLOP/s"
  if result.get("kind") == "folder_throughput":
    if result.get("steps") is None:
      return "30 dB not reached"
    return f"{result['images_per_s']:.2f} images/s, {result['steps']} steps"
  if result.get("kind") == "photo_to_psnr":
    return f"{result['final_psnr']:.1f} dB after {result['run_s']:.0f} s"
  return "done"


def run():
  common.run(main, __name__)


if __name__ == "__main__":
  run()
