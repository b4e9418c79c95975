"""``tcl-lite COMMAND ...`` (installed) or ``python -m tcl_lite COMMAND ...`` (also ``accelerate launch -m
tcl_lite train ...``): the top layer. Each command is a module here with ``run(argv)`` (raises the
user's errors) and ``main(argv)`` (``run`` through ``dispatch.run_command``, the one map from errors to
exit codes). A command module parses its arguments before it imports anything heavy, so ``--help``,
argument and config errors answer without importing torch."""

from __future__ import annotations

import sys
from types import ModuleType

from tcl_lite.cli import (
    audit,
    config_docs,
    export,
    export_model,
    gpu_check,
    issues,
    launch,
    plan,
    predict,
    report,
    train,
)
from tcl_lite.cli.train import main_train

# name -> command module: a new command is one module and one line here.
COMMANDS: dict[str, ModuleType] = {
    "train": train, "report": report, "export": export, "config-docs": config_docs, "gpu-check": gpu_check,
    "issues": issues, "predict": predict, "export-model": export_model, "audit": audit, "launch": launch,
    "plan": plan,
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {module.DESCRIPTION}" for name, module in COMMANDS.items()]
    return "usage: tcl-lite COMMAND [options]   (or: python -m tcl_lite COMMAND ...)\ncommands:\n" + "\n".join(
        lines) + "\n'tcl-lite COMMAND --help' shows a command's options."


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] in (["-h"], ["--help"]):
        print(usage())
        return 0
    if not argv or argv[0] not in COMMANDS:
        if argv:
            print(f"tcl-lite: unknown command {argv[0]!r}", file=sys.stderr)
        print(usage(), file=sys.stderr)
        return 2
    return COMMANDS[argv[0]].main(argv[1:])


__all__ = ["COMMANDS", "main", "main_train", "usage"]
