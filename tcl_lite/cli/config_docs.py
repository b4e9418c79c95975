"""``tcl-lite config-docs [--readme FILE]``: the table of every config key, and those of the registered
datasets, architectures and views (the README's, rewritten in place between their markers)."""

from __future__ import annotations

import argparse

from tcl_lite import register_builtins
from tcl_lite.cli.dispatch import run_command
from tcl_lite.config import config_docs
from tcl_lite.registry import ARCHS, DATASETS, VIEWS

DESCRIPTION = "the table of every config key (--readme FILE rewrites the README's tables)"

register_builtins()  # the table lists the built-in methods' sections, datasets, architectures and views


def tables() -> dict[str, str]:
    """The README's generated tables by marker name: every config key, and each registry's entries."""
    return {"config-docs": config_docs(), "datasets": DATASETS.table("what it reads"),
            "archs": ARCHS.table("the encoder"), "views": VIEWS.table("what it does")}


def rewrite(text: str) -> str:
    """``text`` with each generated table replaced between its markers ``<!-- NAME:start/end -->``."""
    for name, table in tables().items():
        start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
        head, found, tail = text.partition(start)
        if found:
            _, _, tail = tail.partition(end)
            text = f"{head}{start}\n{table}\n{end}{tail}"
    return text


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
    with open(args.readme, "w") as f:
        f.write(rewrite(text))
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command("config-docs", run, argv)
