#!/usr/bin/env python
"""Fit binary; see tf_metainit/cli/fit.py for flags."""
from tf_metainit.cli import fit

if __name__ == "__main__":
  fit.run()
