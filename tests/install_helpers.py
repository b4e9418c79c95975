"""Helpers for the tests that install tcl_lite for real: a snapshot of the working tree (what a commit of
it would hold), a wheel built from it offline, and a fresh virtual environment that reuses the installed
torch (``--system-site-packages``) but not the checkout (no PYTHONPATH)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import ROOT

# Everything offline: the dependencies are already installed (make install), pip must not reach an index.
OFFLINE_PIP = {"PIP_NO_INDEX": "1", "PIP_NO_BUILD_ISOLATION": "0", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


def run(cmd: list, cwd: Path, env: dict | None = None, timeout: float = 300, check: bool = True
        ) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of a user's shell: no PYTHONPATH pointing at the checkout."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "ACCELERATE_USE_CPU")}
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", **OFFLINE_PIP, **extra)
    return env


def snapshot_repository(dest: Path) -> Path:
    """The checkout's tracked and untracked (not ignored) files, committed into a new git repository."""
    if shutil.which("git") is None:
        import pytest

        pytest.skip("git is not installed")
    files = run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT).stdout
    dest.mkdir(parents=True)
    for name in filter(None, files.split("\0")):
        source = ROOT / name
        if source.is_file():  # a file deleted but not yet staged is listed too
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    git = ["git", "-c", "user.name=tcl_lite tests", "-c", "user.email=tests@localhost", "-c", "init.defaultBranch=main"]
    run([*git, "init", "-q"], cwd=dest)
    run([*git, "add", "-A"], cwd=dest)
    run([*git, "commit", "-q", "-m", "snapshot of the working tree"], cwd=dest)
    return dest


def build_wheel(source: Path, dist: Path) -> Path:
    """``pip wheel`` without network or build isolation (setuptools >= 70.1 is a dev requirement)."""
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w", dist,
         source], cwd=source, env=clean_env())
    wheels = sorted(dist.glob("tcl_lite-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def make_venv(path: Path) -> Path:
    """A fresh virtual environment that sees the installed packages (torch...) but not tcl_lite; returns its
    python. Without its own pip: ``python -m pip`` is the system's pip, installing into the venv."""
    run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", path], cwd=path.parent)
    python = path / ("Scripts" if os.name == "nt" else "bin") / "python"
    probe = run([python, "-c", "import importlib.util as u; print(u.find_spec('tcl_lite'))"], cwd=path,
                env=clean_env())
    assert probe.stdout.strip() == "None", "tcl_lite must not be importable before it is installed"
    return python
