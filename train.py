"""Entry point: ``python train.py`` or ``accelerate launch train.py`` (see README)."""

import sys

from tcl_lite.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
