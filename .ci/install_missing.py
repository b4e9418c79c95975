"""Install only the requirements that are not already satisfied (make install / make install-dev).

``pip install -r`` on every ``make test`` costs a resolver run (and, offline, a failure) although nothing is
missing; this reads the requirement files, asks the installed distributions' metadata whether each line is
satisfied, and calls pip once with the unsatisfied lines only, or not at all.

Usage: python .ci/install_missing.py [--dry-run] requirements.txt [requirements-dev.txt ...]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from importlib import metadata
from pathlib import Path

try:
    from packaging.requirements import InvalidRequirement, Requirement
except ImportError:  # a bare interpreter: pip vendors the same module
    from pip._vendor.packaging.requirements import InvalidRequirement, Requirement


def requirement_lines(path: Path) -> list[str]:
    """The requirement lines of a file, comments and blank lines dropped."""
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]


def is_satisfied(line: str) -> bool:
    """Whether an installed distribution satisfies ``line`` (a line pip does not take as a plain requirement,
    such as ``-e .``, counts as unsatisfied: pip is asked)."""
    try:
        req = Requirement(line)
    except InvalidRequirement:
        return False
    if req.marker is not None and not req.marker.evaluate():
        return True  # not for this interpreter or platform
    try:
        installed = metadata.version(req.name)
    except metadata.PackageNotFoundError:
        return False
    return req.specifier.contains(installed, prereleases=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path, help="requirement files")
    parser.add_argument("--dry-run", action="store_true", help="print the unsatisfied lines, install nothing")
    args = parser.parse_args(argv)
    missing = [line for path in args.files for line in requirement_lines(path) if not is_satisfied(line)]
    names = " ".join(str(p) for p in args.files)
    if not missing:
        print(f"{names}: every requirement is installed")
        return 0
    print(f"{names}: installing {' '.join(missing)}")
    if args.dry_run:
        return 0
    return subprocess.call([sys.executable, "-m", "pip", "install", "-q", *missing])


if __name__ == "__main__":
    sys.exit(main())
