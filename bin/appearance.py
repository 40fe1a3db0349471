#!/usr/bin/env python
"""Appearance binary; see tf_metainit/cli/appearance.py for flags."""
from tf_metainit.cli import appearance

if __name__ == "__main__":
  appearance.run()
