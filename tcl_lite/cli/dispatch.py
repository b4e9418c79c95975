"""The one place that turns a command's exceptions into exit codes, for every command.

A ``UserError`` (``tcl_lite/errors.py``: a bad config value, missing data, an unusable checkpoint...)
is printed as ``tcl-lite COMMAND: error: MESSAGE`` and exits with its ``exit_code`` (2), without a
traceback; anything else is a bug and propagates with its traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

from tcl_lite.errors import UserError


def run_command(name: str, run: Callable[[list[str]], int], argv: Sequence[str] | None) -> int:
    """``run(argv)`` (``sys.argv[1:]`` when ``argv`` is None) with user errors mapped to exit codes."""
    try:
        return run(list(sys.argv[1:] if argv is None else argv))
    except UserError as e:
        print(f"tcl-lite {name}: error: {e}", file=sys.stderr)
        return e.exit_code
