"""Stop requests (SIGTERM, Ctrl-C) recorded from the first instruction of ``train``, before anything heavy.

A platform stops a session with SIGTERM some seconds before it kills it; a notebook's interrupt and a
terminal's Ctrl-C send SIGINT. Both only *request* a stop: the trainer saves a checkpoint at the next
step boundary (or, during start-up, stops before the first step) and exits with code 0. A second
Ctrl-C raises ``KeyboardInterrupt`` at once (state ``interrupted``; the newest checkpoint stays).

``install()`` is called by ``train.py`` and ``tcl-lite train`` before they import the rest of the
package (torch, the config), so a SIGTERM during start-up is recorded rather than fatal. Standard
library only: this module sits at the bottom of the package.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

NAMES = {signal.SIGTERM: "SIGTERM", signal.SIGINT: "SIGINT"}
_requested: list[str] = []  # the stop requests received, in order
_previous: dict[int, object] = {}  # the handlers install() replaced (empty: not installed)


def _on_signal(signum: int, frame: FrameType | None) -> None:
    name = NAMES.get(signum, str(signum))
    if name == "SIGINT" and "SIGINT" in _requested:
        raise KeyboardInterrupt  # the second Ctrl-C: stop now, without the checkpoint
    _requested.append(name)


def install() -> bool:
    """Handle SIGTERM and SIGINT as stop requests from now on; False where that is impossible (not the
    main thread) or already done."""
    if _previous or threading.current_thread() is not threading.main_thread():
        return False
    for sig in NAMES:
        _previous[sig] = signal.signal(sig, _on_signal)
    return True


def uninstall() -> None:
    """Put back the handlers ``install`` replaced and forget the requests."""
    for sig, handler in _previous.items():
        signal.signal(sig, handler)  # type: ignore[arg-type]
    _previous.clear()
    _requested.clear()


@contextmanager
def handled() -> Iterator[None]:
    """Stop requests handled inside the block; the previous handlers come back after it, unless they
    were installed before (``train.py``: for the whole process)."""
    mine = install()
    try:
        yield
    finally:
        if mine:
            uninstall()


def stop_requested() -> str | None:
    """The first signal that asked for a stop (``SIGTERM``/``SIGINT``), or None."""
    return _requested[0] if _requested else None


def describe(name: str | None) -> str:
    return {"SIGINT": "SIGINT (Ctrl-C)", None: "no signal"}.get(name, name or "")
