"""``python -m tcl_lite {train,config-docs,export,report,issues,predict,export-model,audit} ...``."""

from __future__ import annotations

import sys

USE_COMMANDS = {"issues": "issues_cli", "predict": "predict", "export-model": "export_model", "audit": "audit"}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = ("train", "config-docs", "export", "report", *USE_COMMANDS)
    if not argv or argv[0] not in commands:
        print(f"usage: python -m tcl_lite {{{','.join(commands)}}} ...", file=sys.stderr)
        return 2
    command, rest = argv[0], argv[1:]
    if command in USE_COMMANDS:  # label issues, predictions, exported models, audits (tcl_lite/inference)
        import importlib

        return importlib.import_module(f"tcl_lite.inference.{USE_COMMANDS[command]}").main(rest)
    if command == "train":
        from tcl_lite.cli import main_train

        return main_train(rest)
    if command == "export":  # TCL's clean probabilities and corrected labels of a run or checkpoint
        from tcl_lite.detection.export import main as main_export

        return main_export(rest)
    if command == "report":  # figures, report.md and cleaned labels of a run directory
        from tcl_lite.reporting.report import main as main_report

        return main_report(rest)
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


if __name__ == "__main__":
    sys.exit(main())
