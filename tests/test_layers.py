"""The package's layers (pyproject's [tool.importlinter], docs/architecture.md) hold, and the contract
really rejects a module that imports upward; the CLI answers --help and config errors without torch."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

from conftest import ROOT, run_env


def _lint_imports(cwd) -> subprocess.CompletedProcess:
    # lint-imports reads the contracts from cwd's pyproject.toml and finds the package on the path
    env = dict(run_env(), PYTHONPATH=str(cwd))
    return subprocess.run([sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; "
                           "sys.exit(lint_imports_command())"], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


def test_the_package_keeps_its_layers_and_has_no_cycles():
    proc = _lint_imports(ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "2 kept, 0 broken" in proc.stdout


def test_an_upward_import_is_rejected_naming_the_import(tmp_path):
    """A copy of the package with one test-local module in the models layer that imports the engine."""
    shutil.copytree(ROOT / "tcl_lite", tmp_path / "tcl_lite", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    (tmp_path / "tcl_lite" / "models" / "upward_probe.py").write_text(
        '"""Deliberately wrong: a model module importing the training engine."""\n\n'
        "from tcl_lite.engine import trainer  # noqa: F401\n")
    proc = _lint_imports(tmp_path)
    assert proc.returncode != 0, proc.stdout[-3000:]
    assert "Layers: lower layers never import higher ones BROKEN" in proc.stdout
    assert "tcl_lite.models.upward_probe -> tcl_lite.engine.trainer" in proc.stdout, proc.stdout[-3000:]


# Each line: a CLI call, then which heavy packages it imported (none may be torch).
_STARTUP = """
import contextlib, io, json, sys
from tcl_lite.cli import main
results = {}
for argv in %r:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as e:  # argparse's --help
            code = e.code
    results[" ".join(argv)] = {"code": code, "err": err.getvalue(), "out": out.getvalue()[:200]}
results["heavy"] = sorted(m for m in ("torch", "torchvision", "accelerate", "timm", "sklearn", "matplotlib")
                          if m in sys.modules)
print(json.dumps(results))
"""


def test_help_and_config_errors_answer_without_importing_torch():
    from tcl_lite.cli import COMMANDS

    calls = [["--help"], *([name, "--help"] for name in COMMANDS), ["train", "train.epochs=abc"],
             ["train", "model.arch=no_such_net"], ["train", "train.log_with=mlflow"], ["train", "method=nope"],
             ["train", "data.dataset=svhn"], ["train", "data.dataset=filelist"]]
    proc = subprocess.run([sys.executable, "-c", _STARTUP % (calls,)], cwd=ROOT, env=run_env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout)
    assert results.pop("heavy") == [], "the CLI imported a heavy package before it was needed"
    for name in COMMANDS:
        help_text = results[f"{name} --help"]
        assert help_text["code"] == 0 and "usage:" in help_text["out"], (name, help_text)
        assert name == "train" or help_text["out"].startswith(f"usage: tcl-lite {name}"), help_text["out"]
    error = results["train train.epochs=abc"]
    assert error["code"] == 2 and error["err"].startswith("tcl-lite train: error: config key 'train.epochs'")
    assert "choose one of tiny_cnn" in results["train model.arch=no_such_net"]["err"]
    assert results["train train.log_with=mlflow"]["code"] == 2
    assert "choose one of ce, tcl, mlnt, dividemix" in results["train method=nope"]["err"]
    assert "choose one of digits, cifar10, cifar100, imagefolder, filelist" in results["train data.dataset=svhn"]["err"]
    assert "'data.train_list' is required" in results["train data.dataset=filelist"]["err"]
