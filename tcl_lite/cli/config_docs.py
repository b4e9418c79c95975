"""``tcl-lite config-docs [--docs FILE]``: the table of every config key, and those of the registered
datasets, architectures and views (docs/config.md's, rewritten in place between their markers).

``--readme FILE`` is the option's older name: the tables lived in the README before they moved to
``docs/config.md``, so a FILE without markers beside a ``docs/config.md`` holding them means that page."""

from __future__ import annotations

import argparse
from pathlib import Path

from tcl_lite import register_builtins
from tcl_lite.cli import paths
from tcl_lite.cli.dispatch import run_command
from tcl_lite.config import config_docs
from tcl_lite.errors import PathError
from tcl_lite.registry import ARCHS, DATASETS, VIEWS

DESCRIPTION = "the table of every config key (--docs rewrites the tables of docs/config.md)"
PAGE = "docs/config.md"  # where the generated tables live (the README links it)

register_builtins()  # the table lists the built-in methods' sections, datasets, architectures and views


def tables() -> dict[str, str]:
    """The generated tables by marker name: every config key, and each registry's entries."""
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
    p.add_argument("--docs", "--readme", dest="readme", nargs="?", const=PAGE, metavar="FILE",
                   help=f"rewrite the tables between the markers of FILE (default {PAGE}; --readme: the older name)")
    return p


def target(given: str) -> Path:
    """The page to rewrite: ``given``, or the ``docs/config.md`` beside a ``given`` that has no markers (the
    tables moved there from the README; an older ``--readme README.md`` means that page)."""
    path = Path(given)
    moved = path.parent / PAGE
    if "<!-- config-docs:start -->" not in path.read_text(encoding="utf-8") and moved.is_file() \
            and "<!-- config-docs:start -->" in moved.read_text(encoding="utf-8"):
        print(f"config-docs: {given} has no table markers; the tables live in {moved}: rewriting that")
        return moved
    return path


def run(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    if args.readme is None:
        print(config_docs())
        return 0
    paths.check_args("config-docs", [("--docs", args.readme, "file")])
    page = target(args.readme)
    text = page.read_text(encoding="utf-8")
    if "<!-- config-docs:start -->" not in text:
        raise PathError(f"--docs {page}: it has no <!-- config-docs:start --> ... <!-- config-docs:end --> "
                        "markers to put the table between; add them where the table goes")
    page.write_text(rewrite(text), encoding="utf-8")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command("config-docs", run, argv)
