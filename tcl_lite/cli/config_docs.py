"""``tcl-lite config-docs [--readme FILE]``: the table of every config key (the README's, rewritten in place)."""

from __future__ import annotations

import argparse

import tcl_lite.methods  # noqa: F401 - registers the built-in methods, whose config sections the table lists
from tcl_lite.cli.dispatch import run_command
from tcl_lite.config import config_docs

DESCRIPTION = "the table of every config key (--readme FILE rewrites the README's)"
START, END = "<!-- config-docs:start -->", "<!-- config-docs:end -->"


def run(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="tcl-lite config-docs", description=DESCRIPTION)
    p.add_argument("--readme", nargs="?", const="README.md", metavar="FILE",
                   help="rewrite the table between the markers of FILE (default README.md)")
    args = p.parse_args(argv)
    if args.readme is None:
        print(config_docs())
        return 0
    with open(args.readme) as f:
        text = f.read()
    head, _, tail = text.partition(START)
    _, _, tail = tail.partition(END)
    with open(args.readme, "w") as f:
        f.write(f"{head}{START}\n{config_docs()}\n{END}{tail}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command("config-docs", run, argv)
