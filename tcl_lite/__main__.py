"""``python -m tcl_lite COMMAND ...`` (and ``accelerate launch -m tcl_lite train ...``): the CLI's dispatcher."""

import sys

from tcl_lite import signals

if sys.argv[1:2] == ["train"]:
    signals.install()  # before the CLI (and torch) loads: a SIGTERM / Ctrl-C during start-up asks for a clean stop

from tcl_lite.cli import main  # noqa: E402 - after the handlers, on purpose

if __name__ == "__main__":
    sys.exit(main())
