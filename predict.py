"""Score a folder, a glob, a file list or Kaggle's test.csv: `python predict.py --help`."""

import sys

from kitchenware.batch.cli import main

if __name__ == "__main__":
    sys.exit(main())
