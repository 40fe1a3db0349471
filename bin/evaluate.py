#!/usr/bin/env python
"""Evaluation binary; see tf_metainit/cli/evaluate.py for flags."""
from tf_metainit.cli import evaluate

if __name__ == "__main__":
  evaluate.run()
