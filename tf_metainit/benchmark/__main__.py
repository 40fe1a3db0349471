r"""Runs one workload in this process and prints its result as one JSON line.

  python -m tf_metainit.benchmark --one=maml_so_r64_graph [--quick]

The driver (cli/benchmark.py) starts one such process per workload, so that its peak
resident memory is its own, and reads the line back with measure.parse_result.
"""

import argparse
import json

from tf_metainit.benchmark import measure


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--one", required=True, help="workload name")
  parser.add_argument("--quick", action="store_true")
  parser.add_argument("--repeats", type=int, default=None)
  parser.add_argument("--warmup", type=int, default=None)
  parser.add_argument("--given", type=json.loads, default=None,
                      help="JSON: another workload's choice to reuse (its 'choice')")
  args = parser.parse_args(argv)
  result = measure.run_one(args.one, args.quick, args.repeats, args.warmup,
                           args.given)
  print(measure.RESULT_PREFIX + json.dumps(result), flush=True)


if __name__ == "__main__":
  main()
