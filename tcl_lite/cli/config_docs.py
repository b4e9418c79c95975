"""``tcl-lite config-docs [--readme FILE]``: the table of every config key (the README's, rewritten in place)."""

from __future__ import annotations

import argparse
from pathlib import Path

import tcl_lite.methods  # noqa: F401 - registers the built-in methods, whose config sections the table lists
from tcl_lite.cli import paths
from tcl_lite.cli.dispatch import run_command
from tcl_lite.config import config_docs
from tcl_lite.errors import PathError

DESCRIPTION = "the table of every config key (--readme FILE rewrites the README's)"
START, END = "<!-- config-docs:start -->", "<!-- config-docs:end -->"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tcl-lite config-docs", description=DESCRIPTION)
    p.add_argument("--readme", nargs="?", const="README.md", metavar="FILE",
                   help="rewrite the table between the markers of FILE (default README.md)")
    return p


def run(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    if args.readme is None:
        print(config_docs())
        return 0
    paths.check_args("config-docs", [("--readme", args.readme, "file")])
    if START not in Path(args.readme).read_text(encoding="utf-8"):
        raise PathError(f"--readme {args.readme}: it has no {START} ... {END} markers to put the table between; "
                        "add them where the table goes")
    with open(args.readme) as f:
        text = f.read()
    head, _, tail = text.partition(START)
    _, _, tail = tail.partition(END)
    with open(args.readme, "w") as f:
        f.write(f"{head}{START}\n{config_docs()}\n{END}{tail}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command("config-docs", run, argv)
