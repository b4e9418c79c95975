"""One writer per run directory, and no rank that outlives its launcher.

``RunLock`` is an advisory ``flock`` on ``OUTPUT/.lock``: the OS releases it when the process dies
(also on ``kill -9``), so a stale file never blocks a resume. The holder writes its PID into the
file for the error a second writer gets. On release the file is removed (a refused start leaves the
directory as it was); a writer that locked a file another one had just removed notices that the
path no longer names its file and tries again.

``exit_when_launcher_dies``: the ranks of ``accelerate launch`` are children of the launcher; when
it is killed (``kill -9``, a notebook cell interrupted hard) they would keep training and writing.
A daemon thread polls the parent PID and ends the process as soon as it changes.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

from tcl_lite.errors import CheckpointError

LOCK_NAME = ".lock"


class RunLockedError(CheckpointError):
    """Another live process holds the run directory."""


class RunLock:
    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / LOCK_NAME
        self.fd: int | None = None
        self.held = False  # also True where the file system cannot lock (warned once)

    def acquire(self, log: Any = print) -> RunLock:
        """Take the lock (creating the run directory); RunLockedError when another process holds it."""
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            log(f"WARNING: no file locks on this platform; make sure only one process writes {self.path.parent}")
            self.held = True
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise RunLockedError(
                    f"{self.path.parent} is in use by another training process (PID {holder.split()[0]}, "
                    f"lock file {self.path}: '{holder}'). Only one process may write a run directory: wait "
                    "for it to finish or stop it, or choose another --output-dir") from None
            except OSError as e:  # a file system without locks (some network mounts)
                os.close(fd)
                log(f"WARNING: cannot lock {self.path} ({e.strerror}); make sure only one process writes "
                    f"{self.path.parent}")
                self.held = True
                return self
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # removed by its previous holder between our open and flock: retry
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {socket.gethostname()} {time.strftime('%Y-%m-%dT%H:%M:%S')}\n".encode(), 0)
        self.fd, self.held = fd, True
        return self

    def release(self) -> None:
        self.held = False
        if self.fd is None:
            return
        try:
            self.path.unlink()  # while still locked, so no other process holds the removed file
        except FileNotFoundError:
            pass
        os.close(self.fd)
        self.fd = None


_watching = False


def exit_when_launcher_dies(poll_seconds: float = 0.5) -> None:
    """End this process (exit code 1, no clean-up, no more writes) once its parent process is gone."""
    global _watching
    parent = os.getppid()
    if _watching or parent <= 1:
        return
    _watching = True

    def watch() -> None:
        while True:
            time.sleep(poll_seconds)
            if os.getppid() != parent:
                os.write(2, f"tcl_lite: the launcher (PID {parent}) died; rank PID {os.getpid()} exits "
                            "without writing anything more\n".encode())
                os._exit(1)

    threading.Thread(target=watch, name="tcl-lite-launcher-watch", daemon=True).start()
