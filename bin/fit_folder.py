#!/usr/bin/env python
"""Fit-folder binary; see tf_metainit/cli/fit_folder.py for flags."""
from tf_metainit.cli import fit_folder

if __name__ == "__main__":
  fit_folder.run()
