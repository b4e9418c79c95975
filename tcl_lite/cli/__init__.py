"""``tcl-lite COMMAND ...`` (installed) or ``python -m tcl_lite COMMAND ...`` (also ``accelerate launch -m
tcl_lite train ...``). A command is a ``main(argv) -> exit code`` function, imported only when it runs."""

from __future__ import annotations

import importlib
import sys

# name -> (module, function): a new command is one line here (and, optionally, one in DESCRIPTIONS).
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("tcl_lite.cli.train", "main_train"),
    "report": ("tcl_lite.results.report", "main"),
    "export": ("tcl_lite.results.export", "main"),
    "config-docs": ("tcl_lite.cli", "main_config_docs"),
    "gpu-check": ("tcl_lite.engine.gpu_check", "main"),
    "issues": ("tcl_lite.cli.issues", "main"),
    "predict": ("tcl_lite.inference.predict", "main"),
    "export-model": ("tcl_lite.inference.export_model", "main"),
    "audit": ("tcl_lite.cli.audit", "main"),
}
DESCRIPTIONS = {
    "train": "train or resume a run (the options of train.py)",
    "report": "figures, report.md and cleaned labels of a run directory",
    "export": "per-sample clean probabilities (and corrected/suggested labels) of a run or checkpoint",
    "config-docs": "the table of every config key (--readme FILE rewrites the README's)",
    "gpu-check": "whether the installed torch can use the visible GPU",
    "issues": "training samples ranked by how likely their label is wrong: CSV + gallery PNG",
    "predict": "classes of images or a folder with a trained run's model (CSV)",
    "export-model": "the trained classifier as safetensors + JSON (tcl_lite.load_model)",
    "audit": "check a folder's labels: a short run suited to its size, then the ranking and gallery",
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {DESCRIPTIONS.get(name, '')}" for name in COMMANDS]
    return "usage: tcl-lite COMMAND [options]   (or: python -m tcl_lite COMMAND ...)\ncommands:\n" + "\n".join(
        lines) + "\n'tcl-lite COMMAND --help' shows a command's options."


def main_config_docs(rest: list[str]) -> int:
    from tcl_lite.config import config_docs

    if rest[:1] == ["--readme"]:  # rewrite the table between the README's markers
        path = rest[1] if len(rest) > 1 else "README.md"
        with open(path) as f:
            text = f.read()
        start, end = "<!-- config-docs:start -->", "<!-- config-docs:end -->"
        head, _, tail = text.partition(start)
        _, _, tail = tail.partition(end)
        with open(path, "w") as f:
            f.write(f"{head}{start}\n{config_docs()}\n{end}{tail}")
        return 0
    print(config_docs())
    return 0


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
    module, function = COMMANDS[argv[0]]
    return getattr(importlib.import_module(module), function)(argv[1:])

