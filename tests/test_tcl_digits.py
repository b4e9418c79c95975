"""End to end on the embedded digits with 50% symmetric noise: TCL against CE on the same budget.

Both runs use configs/digits_tcl.yaml (same data, noise, model, optimizer, epochs, seed); the CE run
only overrides ``method=ce``. They run side by side, so the test takes as long as the TCL run.
"""

from __future__ import annotations

import json
import subprocess

from conftest import ROOT, run_env, train_cmd

PRESET = ["--config", str(ROOT / "configs" / "digits_tcl.yaml")]


def _last_record(run_dir) -> dict:
    return json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])


def test_tcl_beats_ce_on_noisy_digits(tmp_path, capsys):
    runs = {"tcl": tmp_path / "tcl", "ce": tmp_path / "ce"}
    procs = {name: subprocess.Popen(train_cmd(*PRESET, *(["method=ce"] if name == "ce" else []),
                                              f"output_dir={out}"),
                                    cwd=ROOT, env=run_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                    text=True)
             for name, out in runs.items()}
    for name, proc in procs.items():
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, f"{name} run failed:\n{err[-4000:]}"
    tcl, ce = _last_record(runs["tcl"]), _last_record(runs["ce"])
    with capsys.disabled():
        print(f"\n[digits, 50% symmetric noise, {tcl['epoch']} epochs] CE test_acc {ce['test_acc']:.4f} | "
              f"TCL test_acc {tcl['test_acc']:.4f}, detection_auc {tcl['detection_auc']:.4f}, "
              f"knn_acc {tcl['knn_acc']:.4f}, label_correction_acc {tcl['label_correction_acc']:.4f}, "
              f"est_clean_fraction {tcl['est_clean_fraction']:.3f}")
    assert tcl["epoch"] == ce["epoch"]
    assert tcl["test_acc"] > ce["test_acc"] + 0.03
    assert tcl["detection_auc"] > 0.9
