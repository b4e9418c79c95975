"""``tcl-lite launch [ACCELERATE LAUNCH OPTIONS] -- [TRAIN OPTIONS] [key=value ...]``: training through
Accelerate's launcher (several processes, e.g. ``--multi_gpu --num_processes 2``) with the exit codes
and the stop of a single ``tcl-lite train``: 0 after a finished run or a clean stop, 2 after a
refusal (a bad config, an unusable run directory...), no launcher traceback.

Why a wrapper: under ``accelerate launch`` the launcher is torch.distributed.elastic's agent
(``torch.distributed.run``). On SIGTERM/SIGINT it raises ``SignalException``, sends SIGTERM to its
workers, SIGKILLs them 30 s later (a checkpoint being written then is lost) and exits 128+signal
(143); a worker that exits non-zero (a refusal: 2) becomes a ``ChildFailedError``, printed with a
traceback, exit code 1. The workers run in their own sessions, so a terminal's Ctrl-C reaches only
the launcher.

This command runs Accelerate's own launcher (``accelerate.commands.launch.launch_command``, so every
``accelerate launch`` option and config file works) in a thread of this process. The elastic agent
installs no signal handler outside the main thread, so SIGTERM and SIGINT stay this process's: it
forwards each one to the ranks (its child processes), which checkpoint at the next step boundary
and exit 0, exactly as a single process does; a second Ctrl-C is forwarded too and stops them at
once (exit 130). When the agent reports failed ranks, the exit code is the first failed rank's: 2
for a refusal (its message is already printed by the rank), else 1 with the agent's summary.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import signal
import subprocess
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

from tcl_lite.cli import paths
from tcl_lite.cli.dispatch import run_command
from tcl_lite.cli.train import parse_train_args, resolve_config
from tcl_lite.runlog.launch import CONTINUE_ENV

DESCRIPTION = "train through accelerate launch (several processes) with train's exit codes and clean stops"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tcl-lite launch", description=DESCRIPTION + ".",
        usage="tcl-lite launch [accelerate launch options] -- [train options] [key=value ...]",
        epilog="Example: tcl-lite launch --multi_gpu --num_processes 2 -- --config cifar10_tcl --resume "
               "--output-dir runs/c10. Exit codes: 0 finished or stopped cleanly (SIGTERM, Ctrl-C: a checkpoint "
               "is saved), 2 refused (the error is printed), 130 a second Ctrl-C, 1 anything else.")
    p.add_argument("accelerate_args", nargs="*", metavar="ACCELERATE_OPTION",
                   help="options of `accelerate launch` (before --)")
    p.add_argument("train_args", nargs="*", metavar="TRAIN_OPTION", help="options of `tcl-lite train` (after --)")
    return p


def split(argv: list[str]) -> tuple[list[str], list[str]]:
    """``accelerate options -- train options`` -> the two lists."""
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1:]
    return argv, []


def run(argv: list[str]) -> int:
    accelerate_args, train_args = split(argv)
    if accelerate_args[:1] in (["-h"], ["--help"]):
        parser().print_help()
        return 0
    args = parse_train_args(train_args)  # a bad option or config answers here, before any process starts
    paths.check_config(resolve_config(args))
    from accelerate.commands.launch import launch_command_parser  # torch: once the arguments are valid

    launch_args = launch_command_parser().parse_args([*accelerate_args, "-m", "tcl_lite", "train", *train_args])
    # The ranks print this form in "Continue with: ..." (runlog/launch.py).
    os.environ[CONTINUE_ENV] = shlex.join(["tcl-lite", "launch", *accelerate_args, "--"])
    return Launcher(launch_args).run()


class Launcher:
    """Accelerate's launcher in a thread; this (main) thread forwards stop signals to the ranks."""

    def __init__(self, launch_args: Any) -> None:
        self.launch_args = launch_args
        self.pending: list[int] = []  # the signals received, in order
        self.sent: dict[int, int] = {}  # rank PID -> how many of them it was sent
        self.outcome: dict[str, Any] = {}

    def run(self) -> int:
        # The agent warns that it cannot handle signals from a thread: this class handles them (see above).
        logging.getLogger("torch.distributed.elastic.multiprocessing.api").addFilter(
            lambda record: "running on a child thread" not in record.getMessage())
        thread = threading.Thread(target=self._launch, name="tcl-lite-launcher", daemon=True)
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            thread.start()
            while thread.is_alive():
                thread.join(0.2)
                self._deliver()  # a rank started after the signal gets it too
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return self._exit_code()

    def _launch(self) -> None:
        from accelerate.commands.launch import launch_command  # torch (see run)
        from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

        try:
            launch_command(self.launch_args)
            self.outcome["code"] = 0
        except SystemExit as e:  # accelerate's own exits (a KeyboardInterrupt in the launcher: 130)
            self.outcome["code"] = e.code if isinstance(e.code, int) else 1
        except subprocess.CalledProcessError as e:  # one process, without the elastic agent
            self.outcome["code"] = e.returncode
        except ChildFailedError as e:
            self.outcome["failed"] = e
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            self.outcome["error"] = e

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.pending.append(signum)
        self._deliver()

    def _deliver(self) -> None:
        if not self.pending:
            return
        own_group = os.getpgrp()
        for pid in _children(os.getpid()):
            done = self.sent.get(pid, 0)
            for sig in self.pending[done:]:
                # A rank in this process group already got a terminal's Ctrl-C itself (the one-process launcher).
                if sig == signal.SIGINT and _group(pid) == own_group:
                    continue
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    break
            self.sent[pid] = len(self.pending)

    def _exit_code(self) -> int:
        if "failed" in self.outcome:
            rank, failure = self.outcome["failed"].get_first_failure()
            code = failure.exitcode
            if code == 2:
                print(f"tcl-lite launch: rank {rank} refused to start (exit 2); its error is printed above",
                      file=sys.stderr)
                return 2
            if code in (130, -signal.SIGINT):
                return 130
            print(self.outcome["failed"].format_msg(), file=sys.stderr)
            return 1
        if "error" in self.outcome:
            raise self.outcome["error"]
        code = self.outcome.get("code", 1)
        return 130 if code == -signal.SIGINT else code


def _children(pid: int) -> list[int]:
    """The live child processes of ``pid`` (Linux /proc; elsewhere none are found and signals stay here)."""
    out = []
    for entry in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = entry.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 1 and int(fields[1]) == pid and fields[0] != "Z":
            out.append(int(entry.parent.name))
    return out


def _group(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def main(argv: list[str] | None = None) -> int:
    return run_command("launch", run, argv)
