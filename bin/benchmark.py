#!/usr/bin/env python
"""Benchmark binary; see tf_metainit/cli/benchmark.py for flags."""
from tf_metainit.cli import benchmark

if __name__ == "__main__":
  benchmark.run()
