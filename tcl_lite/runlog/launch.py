"""How the user launched training, for the messages a run prints (``Continue with: ...``)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

CONTINUE_ENV = "TCL_LITE_CONTINUE"  # set by `tcl-lite launch` for its ranks: the command that resumes through it


def launcher() -> str:
    """How the user started training: the installed command (or ``python -m tcl_lite``) or the checkout's script."""
    return "tcl-lite train" if Path(sys.argv[0]).name in ("tcl-lite", "__main__.py") else "train.py"


def continue_command(out: str | Path) -> str:
    """The command that resumes the run in ``out``, in the form the user started it with."""
    prog = os.environ.get(CONTINUE_ENV) or ("tcl-lite train" if launcher() == "tcl-lite train"
                                            else "accelerate launch train.py")
    return f"{prog} --resume --output-dir {out}"
