"""``OUTPUT/train.log``: what the console shows, one line per event, each with a timestamp, never wrapped.

Lines printed before the run directory may be written (config checks, the resume decision) are held
and written when the trainer opens the file, at the point where it writes ``config.yaml``: a run that
is refused leaves no log behind. The file is appended to, so a resumed run continues the same log.
Only the main process writes it (and prints).
"""

from __future__ import annotations

import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO


def timestamp() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S")


def append_line(path: Path, text: str) -> None:
    """Append one timestamped line to a log file now (a repair made before the run's log is opened)."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(f"{timestamp()} {text}\n")


class RunLog:
    """``log("text")`` prints the text (main process only) and records it in train.log."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.echo: Callable[[str], None] = lambda text: print(text, flush=True)  # plain: never wrapped
        self._pending: list[str] = []
        self._file: TextIO | None = None

    def __call__(self, *args: Any) -> None:
        text = " ".join(str(a) for a in args)
        if self.enabled:
            self.echo(text)
        self.record(text)

    def record(self, text: str) -> None:
        """Write ``text`` to train.log only (e.g. a step line that the live bar shows on the console)."""
        if not self.enabled:
            return
        lines = [f"{timestamp()} {line}" for line in str(text).splitlines() or [""]]
        if self._file is None:
            self._pending.extend(lines)
            return
        self._file.write("\n".join(lines) + "\n")
        self._file.flush()  # a crash, a kill or `tail -f` sees every line written so far

    def open(self, path: Path) -> None:
        """Start writing ``path`` (appending); the lines held so far go first, after the command line."""
        if not self.enabled or self._file is not None:
            return
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - open for the run's lifetime
        pending, self._pending = self._pending, []
        self.record(f"$ {shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]])}")
        if pending:
            self._file.write("\n".join(pending) + "\n")
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
