#!/usr/bin/env python
"""Meta-training binary; see tf_metainit/cli/meta_train.py for flags."""
from tf_metainit.cli import meta_train

if __name__ == "__main__":
  meta_train.run()
