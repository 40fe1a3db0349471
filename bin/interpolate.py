#!/usr/bin/env python
"""Interpolation binary; see tf_metainit/cli/interpolate.py for flags."""
from tf_metainit.cli import interpolate

if __name__ == "__main__":
  interpolate.run()
