"""The installable package: a wheel built from the working tree, installed into a fresh virtual environment,
and used from a directory outside the checkout as a user of `pip install` would (`tcl-lite train` with a
preset by name, `tcl-lite report`, `accelerate launch -m tcl_lite train --resume`). Also: pyproject and
requirements.txt agree, and presets resolve by name from anywhere."""

from __future__ import annotations

import json
import re
import threading
import zipfile
from pathlib import Path

import pytest
from conftest import ROOT
from install_helpers import build_wheel, clean_env, make_venv, run, snapshot_repository
from packaging.requirements import Requirement

from tcl_lite.config import load_config
from tcl_lite.errors import ConfigError

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

# digits_tcl made small: 320 training images at 8 px, a narrow CNN: 10 steps of 32 per epoch.
SMALL = ["data.train_subset=320", "data.image_size=8", "model.width=8", "data.num_workers=0", "train.log_every=5"]


def _requirements(path: Path) -> set[str]:
    lines = (line.split("#")[0].strip() for line in path.read_text().splitlines())
    return {str(Requirement(line)) for line in lines if line}


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_requirements_txt_agrees_with_pyproject():
    project = _pyproject()
    assert _requirements(ROOT / "requirements.txt") == {str(Requirement(r)) for r in project["dependencies"]}
    assert _requirements(ROOT / "requirements-dev.txt") == {
        str(Requirement(r)) for r in project["optional-dependencies"]["dev"]}
    assert project["scripts"] == {"tcl-lite": "tcl_lite.__main__:main"}
    # the lower bounds the code needs (torch.serialization.safe_globals arrived in torch 2.5)
    by_name = {Requirement(r).name: Requirement(r) for r in project["dependencies"]}
    assert "2.4.1" not in by_name["torch"].specifier and "2.5.0" in by_name["torch"].specifier
    import torch

    assert hasattr(torch.serialization, "safe_globals")


def test_presets_by_name_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # not the checkout: configs/ is not here
    expected = load_config(ROOT / "configs" / "cifar10_tcl_sym50.yaml")
    for spec in ("cifar10_tcl_sym50", "cifar10_tcl_sym50.yaml", "configs/cifar10_tcl_sym50.yaml"):
        assert load_config(spec) == expected, spec
    assert expected.data.noise_rate == 0.5 and expected.method == "tcl"  # its `base:` was read too
    # a user's file naming a preset as its base, by name, from another folder
    (tmp_path / "mine.yaml").write_text("base: cifar10_tcl\ntrain: {epochs: 3}\n")
    mine = load_config(tmp_path / "mine.yaml")
    assert mine.train.epochs == 3 and mine.model == load_config("cifar10_tcl").model
    with pytest.raises(ConfigError, match=r"no_such_preset.*cifar10_tcl_sym50.*digits_tcl"):
        load_config("no_such_preset")


def wheel_installed_and_run(tmp_path: Path, stop: threading.Event) -> None:
    """The whole check; started with the session, in the background (conftest's early_results): it is a
    minute of pip, interpreters and a short run that need nothing else of the suite."""
    wheel = build_wheel(snapshot_repository(tmp_path / "src"), tmp_path / "dist")

    # The metadata: the dependencies of requirements.txt, the console script, the presets as package data.
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        meta = zf.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
        entry_points = zf.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
    requires = {str(Requirement(line.split(":", 1)[1].strip())) for line in meta.splitlines()
                if line.startswith("Requires-Dist:") and "extra ==" not in line}
    assert requires == _requirements(ROOT / "requirements.txt")
    assert re.search(r"^\[console_scripts\]\ntcl-lite = tcl_lite\.__main__:main$", entry_points, re.M)
    presets = {p.name for p in (ROOT / "configs").glob("*.yaml")}
    assert presets and {f"tcl_lite/configs/{p}" for p in presets} <= names

    python = make_venv(tmp_path / "venv")
    run([python, "-m", "pip", "install", "-q", wheel], cwd=tmp_path, env=clean_env())  # deps: already installed
    bin_dir, work = python.parent, tmp_path / "elsewhere"
    work.mkdir()
    env = clean_env(PATH=f"{bin_dir}:{clean_env()['PATH']}")
    where = run([python, "-c", "import tcl_lite; print(tcl_lite.__file__)"], cwd=work, env=env).stdout
    assert Path(where.strip()).is_relative_to(tmp_path / "venv") and not Path(where.strip()).is_relative_to(ROOT)

    # tcl-lite train with a preset by name, from a folder that has no configs/
    trained = run([bin_dir / "tcl-lite", "train", "--config", "digits_tcl", "train.epochs=2", *SMALL,
                   "--output-dir", "run"], cwd=work, env=env)
    run_dir = work / "run"
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2] and records[-1]["step"] == 20
    assert "epoch 2/2: " in trained.stdout and "/epoch, done" in trained.stdout
    assert json.loads((run_dir / "status.json").read_text())["state"] == "finished"
    assert "epoch 2/2: " in (run_dir / "train.log").read_text()
    assert load_config(run_dir / "config.yaml").tcl.warmup_epochs == 10  # digits_tcl's own value

    report = run([bin_dir / "tcl-lite", "report", "run"], cwd=work, env=env)
    assert "report" in report.stdout + report.stderr
    assert "tcl" in (run_dir / "report" / "report.md").read_text()
    # 2 epochs end inside digits_tcl's 10-epoch warm-up: the verdict says so and no relabelled file is offered
    assert "not usable" in (run_dir / "report" / "report.md").read_text()
    assert not (run_dir / "report" / "cleaned_labels.csv").exists()

    # accelerate launch -m tcl_lite: the installed module, resuming the run for a third epoch
    resumed = run([python, "-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1",
                   "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "tcl_lite", "train", "--resume",
                   "--output-dir", "run", "train.epochs=3"], cwd=work, env=env)
    assert "resumed from" in resumed.stdout and "epoch 3/3: " in resumed.stdout
    assert [json.loads(x)["epoch"] for x in (run_dir / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]


@pytest.mark.early(run=wheel_installed_and_run)
def test_wheel_installs_and_runs_outside_the_checkout(early_results):
    early_results[wheel_installed_and_run].result()


def test_command_table_lists_every_command(capsys):
    from tcl_lite.cli import COMMANDS, main

    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in COMMANDS)
    assert main(["no-such-command"]) == 2
    assert "unknown command 'no-such-command'" in capsys.readouterr().err
    # a preset name that does not exist: exit 2 (before anything is imported or written), the presets named
    assert main(["train", "--config", "digits_tlc"]) == 2
    err = capsys.readouterr().err
    assert "'digits_tlc' does not exist and is not a preset name" in err and "digits_tcl" in err
