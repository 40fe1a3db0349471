#!/usr/bin/env python
"""Export binary; see tf_metainit/cli/export.py for flags."""
from tf_metainit.cli import export

if __name__ == "__main__":
  export.run()
