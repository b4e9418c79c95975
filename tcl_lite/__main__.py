"""``python -m tcl_lite COMMAND ...`` (and ``accelerate launch -m tcl_lite train ...``): the CLI's dispatcher."""

import sys

from tcl_lite.cli import main

if __name__ == "__main__":
    sys.exit(main())
