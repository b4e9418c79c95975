"""The notebook as a Colab user meets it: a copy of the .ipynb alone in a folder outside any checkout.

With REPO_URL set to a local bare clone of this repository (a snapshot of the working tree), Run all takes
the clone-and-install branch for real: `pip install git+...` into a fresh virtual environment (which reuses
the installed torch but not the checkout), then trains, reads status.json and shows the report. With
REPO_URL empty it stops at the install cell with the message saying what to set.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import ROOT
from install_helpers import clean_env, make_venv, run, snapshot_repository

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

PARAMS = {"DATASET": "digits", "METHOD": "tcl", "NOISE_TYPE": "symmetric", "NOISE_RATE": 0.4, "PRESET": "tiny",
          "INSTALL": True, "USE_DRIVE": False, "RUN_NAME": "url_run", "TIME_BUDGET": "", "EPOCHS": 1,
          "EXTRA_ARGS": "data.train_subset=192 model.width=8 train.batch_size=64 train.log_every=1"}


def _kernel_for(python: Path, jupyter_dir: Path) -> str:
    """A kernelspec that runs the notebook in ``python`` (the venv), found through JUPYTER_PATH."""
    spec = jupyter_dir / "kernels" / "tcl_lite_venv"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "tcl_lite test venv", "language": "python"}))
    return "tcl_lite_venv"


def _execute(notebook: Path, params: dict, kernel: str) -> tuple[nbformat.NotebookNode, str, Exception | None]:
    nb = nbformat.read(notebook, as_version=4)
    at = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    nb.cells.insert(at + 1, nbformat.v4.new_code_cell("\n".join(f"{k} = {v!r}" for k, v in params.items())))
    client = nbclient.NotebookClient(nb, kernel_name=kernel, timeout=600,
                                     resources={"metadata": {"path": str(notebook.parent)}})
    error = None
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as e:
        error = e
    text = "".join(out.get("text", "") for cell in nb.cells if cell.cell_type == "code"
                   for out in cell.get("outputs", []) if out.get("output_type") == "stream")
    return nb, text, error


def test_notebook_outside_a_checkout_installs_from_repo_url(tmp_path, monkeypatch):
    bare = tmp_path / "tcl_lite.git"
    run(["git", "clone", "-q", "--bare", snapshot_repository(tmp_path / "snapshot"), bare], cwd=tmp_path)
    python = make_venv(tmp_path / "venv")
    for key, value in clean_env(JUPYTER_PATH=str(tmp_path / "jupyter")).items():  # the kernel inherits these
        monkeypatch.setenv(key, value)
    for key in ("PYTHONPATH", "ACCELERATE_USE_CPU", "FORCE_COLOR"):
        monkeypatch.delenv(key, raising=False)
    kernel = _kernel_for(python, tmp_path / "jupyter")
    folder = tmp_path / "uploaded"  # the notebook alone, as when uploaded to Colab or opened from a link
    folder.mkdir()
    notebook = Path(shutil.copy(ROOT / "notebooks" / "tcl_lite_colab.ipynb", folder))

    # REPO_URL empty: the install cell stops with what to set, before anything else runs
    _, text, error = _execute(notebook, {**PARAMS, "REPO_URL": "", "RUNS_ROOT": str(tmp_path / "runs")}, kernel)
    assert error is not None and "No tcl_lite code found" in str(error) and "Set REPO_URL" in str(error)
    assert not (tmp_path / "runs").exists()

    # REPO_URL = the bare clone (a path): pip install git+file://..., train, report
    nb, text, error = _execute(notebook, {**PARAMS, "REPO_URL": str(bare), "RUNS_ROOT": str(tmp_path / "runs")},
                               kernel)
    assert error is None, f"{error}\n{text[-3000:]}"
    installed = python.parent.parent / "lib"
    assert f"pip install -q git+{bare.as_uri()}" in text
    assert f"code: pip install git+{bare}" in text
    location = text.split(f"code: pip install git+{bare} (")[1].split(")")[0]
    assert Path(location).is_relative_to(installed) and not Path(location).is_relative_to(ROOT)
    assert any(installed.glob("python*/site-packages/tcl_lite/configs/digits_tcl.yaml"))  # presets shipped
    assert "-m tcl_lite train --config digits_tcl" in text and "epoch 1/1: " in text and "run state: finished" in text
    run_dir = tmp_path / "runs" / "url_run"
    assert json.loads((run_dir / "status.json").read_text())["state"] == "finished"
    assert [json.loads(x)["epoch"] for x in (run_dir / "metrics.jsonl").read_text().splitlines()] == [1]
    assert (run_dir / "report" / "report.md").stat().st_size > 0
    assert sum("image/png" in out.get("data", {}) for cell in nb.cells for out in cell.get("outputs", [])) >= 1
    print(text)  # shown with pytest -s: the notebook's run, for the record
