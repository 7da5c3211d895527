"""Train a kitchenware classifier: `python train.py --help` lists every option."""

import sys

from kitchenware.training.cli import main

if __name__ == "__main__":
    sys.exit(main())
