"""``OUTPUT/status.json``: how the run stands, for a notebook or a script to read instead of the log text.

``state`` is one of:

- ``running``: training (written when the run starts and after every epoch);
- ``finished``: every epoch done;
- ``stopped_time_budget``: ``train.time_budget`` reached; a checkpoint was saved, ``--resume`` continues;
- ``stopped_signal``: SIGTERM (a platform's shutdown, an interrupted notebook cell); saved likewise;
- ``interrupted``: Ctrl-C (KeyboardInterrupt): resume continues from the newest checkpoint;
- ``failed``: an error; ``message`` names it.

A stopped run exits with code 0 like a finished one (a stop is planned, not an error), so the state is
what tells them apart. Written atomically by the main process only, and only once this process has
started the run: a run that is refused (e.g. its directory belongs to another run) leaves the file alone.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from tcl_lite.checkpoints import schema
from tcl_lite.errors import RunError

STATES = schema.STATUS_STATES


def read_status(run_dir: str | Path) -> dict[str, Any] | None:
    """The run's status, or None when it has none (not started by this version, or refused); a RunError
    naming the field when the file is damaged (``schema.STATUS``)."""
    path = Path(run_dir, "status.json")
    if not path.is_file():
        return None
    try:
        return schema.read_checked(path, schema.STATUS)
    except schema.Invalid as e:
        raise RunError(f"{run_dir}: {e}") from None


class RunStatus:
    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / "status.json"
        self.enabled = False  # until start(): nothing is written for a run this process did not start
        self.fields: dict[str, Any] = {}
        self.log: Any = None

    def start(self, total_epochs: int, log: Any = None, **fields: Any) -> None:
        """The main process, once the run may write its directory: state ``running`` from now on."""
        self.enabled, self.log = True, log
        self.fields = {"epochs": total_epochs, "pid": os.getpid()}
        self.update("running", **fields)

    def update(self, state: str, **fields: Any) -> None:
        assert state in STATES, state
        if not self.enabled:
            return
        self.fields.update(fields, state=state, updated=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        tmp = self.path.with_name(".status.json.tmp")
        tmp.write_text(json.dumps(self.fields, indent=1) + "\n")
        os.replace(tmp, self.path)  # readers never see half a file

    def failed(self, error: BaseException) -> None:
        """Called on the way out of an exception: record it (train.log too), never mask the exception."""
        if not self.enabled or self.fields.get("state") != "running":
            return
        interrupted = isinstance(error, KeyboardInterrupt)
        message = "interrupted (Ctrl-C)" if interrupted else f"{type(error).__name__}: {error}"
        try:
            if self.log is not None:
                self.log(f"run {'interrupted' if interrupted else 'failed'}: {message}")
            self.update("interrupted" if interrupted else "failed", message=message)
        except Exception:  # noqa: BLE001 - the original error is what matters
            pass

    def close(self) -> None:
        if self.log is not None and hasattr(self.log, "close"):
            self.log.close()
