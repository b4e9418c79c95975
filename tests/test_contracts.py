"""The explicit contracts between engine, checkpoints and methods: the engine records the method in
trainer.json and refuses to resume another method's checkpoint; old checkpoints (no record, or the
name TCL/DivideMix stamped into their state) are still recognised."""

from __future__ import annotations

import json

from conftest import TINY

from tcl_lite.checkpoints.reader import checkpoint_method
from tcl_lite.cli.train import main_train


def test_another_methods_checkpoint_is_refused_naming_both(tmp_path, capsys, fresh_accelerate):
    out = tmp_path / "run"
    assert main_train([*TINY, "train.epochs=1", f"output_dir={out}"]) == 0  # method=ce
    ckpt = sorted((out / "checkpoints").glob("step_*"))[-1]
    assert json.loads((ckpt / "trainer.json").read_text())["method"] == "ce"
    assert checkpoint_method(ckpt) == "ce"
    before = {p.name: p.read_bytes() for p in ckpt.iterdir()}
    capsys.readouterr()
    assert main_train([*TINY, "train.epochs=2", f"output_dir={out}", "--resume", "method=tcl"]) == 2
    err = capsys.readouterr().err
    assert "is a checkpoint of method 'ce', but this run trains method 'tcl'" in err, err
    assert "method=ce" in err and "Traceback" not in err
    assert {p.name: p.read_bytes() for p in ckpt.iterdir()} == before, "nothing of the run was changed"


def test_the_method_of_an_old_checkpoint(tmp_path):
    old = tmp_path / "step_00000039"
    old.mkdir()
    (old / "trainer.json").write_text(json.dumps({"epoch": 1, "global_step": 39}))
    assert checkpoint_method(old) is None  # CE/MLNT checkpoints from before the record: unknown, accepted
    (old / "method.json").write_text(json.dumps({"method": "tcl", "est_clean_fraction": 0.6}))
    assert checkpoint_method(old) == "tcl"  # TCL and DivideMix stamped their name into their state
    (old / "trainer.json").write_text(json.dumps({"epoch": 1, "global_step": 39, "method": "dividemix"}))
    assert checkpoint_method(old) == "dividemix"  # the engine's record comes first
