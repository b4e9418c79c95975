"""``tcl-lite config-docs [--readme FILE]``: the table of every config key, and those of the registered
datasets, architectures and views (the README's, rewritten in place between their markers)."""

from __future__ import annotations

import argparse
from pathlib import Path

from tcl_lite import register_builtins
from tcl_lite.cli import paths
from tcl_lite.cli.dispatch import run_command
from tcl_lite.config import config_docs
from tcl_lite.errors import PathError
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
    text = Path(args.readme).read_text(encoding="utf-8")
    if "<!-- config-docs:start -->" not in text:
        raise PathError(f"--readme {args.readme}: it has no <!-- config-docs:start --> ... <!-- config-docs:end --> "
                        "markers to put the table between; add them where the table goes")
    Path(args.readme).write_text(rewrite(text), encoding="utf-8")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command("config-docs", run, argv)
