"""The Colab/Kaggle notebook, executed top to bottom on this CPU with nbclient, twice: it trains, the
second Run all resumes the same run instead of restarting it, and the report (plots, cleaned labels)
is written and shown. The Drive and Kaggle branches are skipped by detection, as on any non-Colab,
non-Kaggle machine; nothing in the notebook is edited for the test, parameters are injected after
the ``parameters`` cell as papermill does.
"""

from __future__ import annotations

import ast
import csv
import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, run_env

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOK = ROOT / "notebooks" / "tcl_lite_colab.ipynb"
# The CPU preset made smaller still: 320 training samples (5 steps of 64), a narrower CNN.
TINY_PARAMS = {"DATASET": "digits", "METHOD": "tcl", "NOISE_TYPE": "symmetric", "NOISE_RATE": 0.4, "PRESET": "tiny",
               "INSTALL": False, "USE_DRIVE": True, "RUN_NAME": "nb_run", "TIME_BUDGET": "",
               "EXTRA_ARGS": "data.train_subset=320 model.width=8 train.batch_size=64 train.log_every=1"}


def _generator():
    spec = importlib.util.spec_from_file_location("build_notebook", ROOT / "notebooks" / "build_notebook.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _ensure_python3_kernel() -> None:
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        KernelSpecManager().get_kernel_spec("python3")
    except NoSuchKernel:
        subprocess.run([sys.executable, "-m", "ipykernel", "install", "--user"], check=True, capture_output=True)


def _execute(params: dict, monkeypatch: pytest.MonkeyPatch) -> tuple[nbformat.NotebookNode, str]:
    """Run the notebook with ``params`` injected after its parameters cell; returns it and its text output."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    at = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    source = "\n".join(f"{k} = {v!r}" for k, v in params.items())
    nb.cells.insert(at + 1, nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]}))
    for key, value in run_env().items():  # the kernel (and train.py under it) inherit this environment
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("ACCELERATE_USE_CPU", raising=False)
    client = nbclient.NotebookClient(nb, kernel_name="python3", timeout=600,
                                     resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    client.execute()
    text = "".join(out.get("text", "") for cell in nb.cells if cell.cell_type == "code"
                   for out in cell.get("outputs", []) if out.get("output_type") == "stream")
    return nb, text


def test_notebook_is_the_generators_output():
    assert NOTEBOOK.read_text() == _generator().render(), "run: python notebooks/build_notebook.py"


def test_parameters_cell_is_a_colab_form_and_tagged():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1
    source = cells[0].source
    for name in ("DATASET", "NOISE_TYPE", "NOISE_RATE", "METHOD", "EPOCHS", "TIME_BUDGET", "USE_DRIVE", "RUN_NAME",
                 "REPO_URL", "INSTALL"):
        assert re.search(rf"^{name} = .*#@param", source, re.M), name
    assert 'INSTALL = True' in source  # Colab installs by default; only CI turns it off


@pytest.mark.skipif(shutil.which("ruff") is None and importlib.util.find_spec("ruff") is None, reason="no ruff")
def test_notebook_code_is_ruff_clean():
    # pyproject excludes notebooks from the repository-wide check; a path given explicitly is still linted.
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", str(NOTEBOOK)], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _cell_functions(*names: str, **namespace) -> dict:
    """Functions defined in the notebook's cells, without running the cells (``namespace``: their globals)."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    funcs = [n for c in nb.cells if c.cell_type == "code" for n in ast.parse(c.source).body
             if isinstance(n, ast.FunctionDef) and n.name in names]
    assert sorted(f.name for f in funcs) == sorted(names)
    exec(compile(ast.Module(body=funcs, type_ignores=[]), "notebook", "exec"), namespace)
    return namespace


def test_platform_detection_without_a_google_package(monkeypatch):
    # CI machines have no "google" namespace package; find_spec("google.colab") raised there.
    monkeypatch.setitem(sys.modules, "google", None)  # makes "import google..." fail, as where it is absent
    assert _cell_functions("on_colab")["on_colab"]() is False


def _device_settings():
    from tcl_lite.config import load_config

    return _cell_functions("device_settings", re=re, load_config=load_config)["device_settings"]


TINY_MODEL = ["model.arch=tiny_cnn", "model.width=8", "data.image_size=8", "train.eval_batch_size=64"]


@pytest.mark.parametrize(("gpu", "expected"), [
    (("Tesla T4", 15.0, 7.5), ("T4", "fp16")),
    (("Tesla P100-PCIE-16GB", 16.0, 6.0), ("P100", "fp16")),
    (("NVIDIA L4", 22.5, 8.9), ("L4", "bf16")),
    (("NVIDIA A100-SXM4-40GB", 40.0, 8.0), ("A100 40", "bf16")),
    (("NVIDIA L40S", 45.0, 8.9), ("NVIDIA L40S", "bf16")),  # not an L4: a GPU the plan knows by its memory only
    (("Quadro P4000", 8.0, 6.1), ("Quadro P4000", "fp16")),
    (None, ("CPU", "'no'")),
])
def test_device_settings_come_from_the_plan(gpu, expected, capsys):
    label, overrides = _device_settings()(gpu, "cifar10_tcl", TINY_MODEL)
    kind, precision = expected
    assert label.startswith(kind)
    assert f"train.mixed_precision={precision}" in overrides
    assert "PREDICTED" in capsys.readouterr().out  # the plan is printed
    if gpu is not None:  # a tiny model fits as is: one micro-batch, no checkpointing
        assert "train.gradient_accumulation_steps=1" in overrides
        assert "train.activation_checkpointing=false" in overrides


def test_device_settings_take_the_plans_micro_batches_when_the_run_does_not_fit():
    big = ["model.arch=tiny_cnn", "model.width=64", "data.image_size=32", "train.batch_size=1024"]
    _, overrides = _device_settings()(("Small GPU", 2.0, 8.0), "cifar10_tcl", big)
    micro = int(next(o for o in overrides if o.startswith("train.gradient_accumulation_steps=")).split("=")[1])
    assert micro > 1 and 1024 % micro == 0 and "train.mixed_precision=bf16" in overrides


def test_kaggle_helpers_continue_the_previous_version_and_find_the_data(tmp_path):
    kaggle_input, working = tmp_path / "input", tmp_path / "working" / "runs"
    for version, steps in (("old-version", 100), ("last-version", 200)):  # outputs of two earlier versions
        ckpt = kaggle_input / version / "runs" / "r1" / "checkpoints" / f"step_{steps:08d}"
        ckpt.mkdir(parents=True)
        (ckpt / "manifest.json").write_text("{}")
    (kaggle_input / "cifar10-python" / "cifar-10-batches-py").mkdir(parents=True)
    ns = _cell_functions("newest_step", "restore_from_kaggle_input", "find_input_dataset", "time_budget",
                         Path=Path, shutil=shutil, time=__import__("time"), KAGGLE_INPUT=kaggle_input,
                         ON_KAGGLE=True, TIME_BUDGET="")
    ns["restore_from_kaggle_input"](working / "r1")
    assert ns["newest_step"](working / "r1") == "step_00000200"  # the newest of the attached outputs
    ns["restore_from_kaggle_input"](working / "r2")  # nothing attached under that name: nothing copied
    assert not (working / "r2").exists()
    assert ns["find_input_dataset"]("cifar-10-batches-py") == kaggle_input / "cifar10-python"
    assert ns["find_input_dataset"]("cifar-100-python") is None
    budget = ns["time_budget"]()  # the 12 h session minus what this process has used, minus 30 min
    assert budget.endswith("m") and 10 <= int(budget[:-1]) <= 690
    ns["TIME_BUDGET"] = "2h"
    assert ns["time_budget"]() == "2h"


def test_run_all_trains_resumes_and_reports(tmp_path, monkeypatch):
    _ensure_python3_kernel()
    run_dir = tmp_path / "nb_run"
    params = {**TINY_PARAMS, "RUNS_ROOT": str(tmp_path), "EPOCHS": 1}

    _, first = _execute(params, monkeypatch)
    assert "platform: local Jupyter" in first
    assert "USE_DRIVE: not on Colab" in first  # the Drive branch is skipped by detection
    assert "epoch 1/1" in first and "resumed from" not in first
    assert [r["epoch"] for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())] == [1]

    # Run all again (as after a disconnect), asking for one more epoch: it must continue, not restart.
    nb, second = _execute({**params, "EPOCHS": 2}, monkeypatch)
    assert "will resume" in second and "resumed from" in second
    assert "epoch 1/2" not in second and "epoch 2/2" in second
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    assert records[1]["step"] == 2 * records[0]["step"]

    report = run_dir / "report"
    for name in ("accuracy.png", "clean_probability.png", "noise_rate.png", "confusion.png", "report.md"):
        assert (report / name).stat().st_size > 0, name
    with open(report / "cleaned_labels.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(np.load(run_dir / "noisy_labels.npy")) == 320
    # the report cell shows the figures inline
    images = [out for cell in nb.cells if cell.cell_type == "code" for out in cell.get("outputs", [])
              if "image/png" in out.get("data", {})]
    assert len(images) == 4
