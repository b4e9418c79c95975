"""Checkpoints of an earlier network never load silently into the network an arch name builds now."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import TINY

from tcl_lite.cli.train import main_train
from tcl_lite.engine import trainer
from tcl_lite.models.layout import ModelLayoutError, check_checkpoint_layout, layout_record

# 2 steps of 32 per epoch: the layout is what matters, not the training.
SMALL = [*TINY, "model.arch=preact_resnet18_he", "data.train_subset=64", "data.test_subset=64", "train.epochs=1"]


def _snapshot(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def test_resuming_an_old_layout_checkpoint_fails_clearly_and_changes_nothing(tmp_path, capsys, monkeypatch,
                                                                              fresh_accelerate):
    run = tmp_path / "old_run"
    # A run of tcl_lite before layout 2: preact_resnet18 was He et al.'s network (preact_resnet18_he builds
    # it, with the same state-dict keys) and checkpoints recorded no layout.
    with monkeypatch.context() as m:
        m.setattr(trainer, "layout_record", lambda arch: {})
        assert main_train([*SMALL, f"output_dir={run}"]) == 0
    config = run / "config.yaml"
    config.write_text(config.read_text().replace("arch: preact_resnet18_he", "arch: preact_resnet18"))
    ckpt = sorted((run / "checkpoints").glob("step_*"))[-1]
    assert "model_layout" not in json.loads((ckpt / "trainer.json").read_text())
    before = _snapshot(run)
    capsys.readouterr()

    assert main_train(["--resume", "--output-dir", str(run), "train.epochs=2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tcl-lite train: error:") and "Traceback" not in err
    for words in ("model layout 1 of preact_resnet18", "TCL reference", "He et al.",
                  "model.arch=preact_resnet18_he", "start a new run"):
        assert words in err, f"{words!r} not in {err!r}"
    assert _snapshot(run) == before, "the run directory changed"

    # The fix the message names: the earlier network, resumed exactly where it stopped.
    assert main_train(["--resume", "--output-dir", str(run), "train.epochs=2", "model.arch=preact_resnet18_he"]) == 0
    newest = sorted((run / "checkpoints").glob("step_*"))[-1]
    info = json.loads((newest / "trainer.json").read_text())
    assert info["epoch"] == 2 and info["model_arch"] == "preact_resnet18_he" and info["model_layout"] == 1


def test_layout_records_and_checks(tmp_path):
    assert layout_record("preact_resnet18") == {"model_arch": "preact_resnet18", "model_layout": 2}
    assert layout_record("tiny_cnn") == {"model_arch": "tiny_cnn", "model_layout": 1}
    ckpt = tmp_path / "step_00000001"
    ckpt.mkdir()
    check_checkpoint_layout(ckpt, "preact_resnet18")  # no trainer.json (bare weights): nothing to check
    (ckpt / "trainer.json").write_text(json.dumps({"epoch": 1}))
    check_checkpoint_layout(ckpt, "tiny_cnn")  # unchanged archs: old checkpoints still resume
    with pytest.raises(ModelLayoutError, match="model.arch=preact_resnet18_he"):
        check_checkpoint_layout(ckpt, "preact_resnet18")
    (ckpt / "trainer.json").write_text(json.dumps(layout_record("preact_resnet18")))
    check_checkpoint_layout(ckpt, "preact_resnet18")
    with pytest.raises(ModelLayoutError, match="written with model.arch=preact_resnet18, but this run builds "
                                               "model.arch=preact_resnet18_he"):
        check_checkpoint_layout(ckpt, "preact_resnet18_he")
    (ckpt / "trainer.json").write_text(json.dumps({"model_arch": "preact_resnet18", "model_layout": 3}))
    with pytest.raises(ModelLayoutError, match="tcl_lite version that wrote it"):
        check_checkpoint_layout(ckpt, "preact_resnet18")
