"""Entry point: ``python train.py`` or ``accelerate launch train.py`` (see README)."""

import sys

from tcl_lite import signals

signals.install()  # first: a SIGTERM / Ctrl-C during start-up (imports, config, data) asks for a clean stop

from tcl_lite.cli.train import main  # noqa: E402 - after the handlers, on purpose

if __name__ == "__main__":
    sys.exit(main())
