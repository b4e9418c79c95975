"""What a run leaves for a person to read: unwrapped progress lines when stdout is redirected, OUTPUT/train.log
(the same lines, timestamped, appended to on resume), the time per epoch and an ETA, per-step scalars for
the trackers of `train.log_with`, and OUTPUT/status.json saying how the run ended."""

from __future__ import annotations

import importlib.util
import json
import re

import pytest
from conftest import TINY, run_train

from tcl_lite.config import load_config
from tcl_lite.engine import train
from tcl_lite.errors import CheckpointError, ConfigError
from tcl_lite.runlog.run_status import read_status

NUM = r"-?\d+(?:\.\d+)?(?:e[+-]?\d+)?"
STEP_LINE = re.compile(rf"step (\d+): ((?:\w+ {NUM} )+)\| lr {NUM} \| \d+ img/s \| \d+\.\d\d GiB (?:rss|peak)")
EPOCH_LINE = re.compile(rf"epoch (\d+)/(\d+): ((?:\w+ {NUM} )+)\| (\w+)/epoch, "
                        r"(?:done|ETA \w+ \((\d+) epochs? left, ends ~\d\d:\d\d\))")
LOG_LINE = re.compile(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) (.*)")
# TCL on 128 digits at 8 px: 4 steps of 32 per epoch, and many loss terms: lines far wider than 80 columns.
SMALL_TCL = ["--config", "digits_tcl", "data.train_subset=128", "data.image_size=8", "model.width=8",
             "data.num_workers=0", "train.log_every=1"]


def _terms(text: str) -> dict[str, float]:
    words = text.split()
    return {k: float(v) for k, v in zip(words[::2], words[1::2])}


def test_redirected_run_prints_whole_lines_and_keeps_them_in_train_log(tmp_path, fresh_accelerate, capsys):
    run_dir = tmp_path / "a_run_directory_with_a_long_name_so_that_every_line_is_wider_than_a_terminal"
    # checkpoint.best_metric='' (no validation split here): no notice line besides the step and epoch lines
    proc = run_train(*SMALL_TCL, "train.epochs=2", "train.log_with=tensorboard", "checkpoint.best_metric=",
                     "--output-dir", str(run_dir))
    printed = [line for line in proc.stdout.splitlines() if line.strip()]
    # first where the run computes (threads, workers, augmentation), last the summary (no `best` asked: no notice)
    assert printed[0].startswith("device cpu; 1 intra-op thread (OMP_NUM_THREADS=1); 0 data-loader workers")
    assert printed[-1].startswith("finished: 2 epochs") and "no validation split" not in proc.stdout
    # the trust diagnostics' lines: the warm-up warning first, a line after each epoch's, the verdict last
    trust = [line for line in printed if line.startswith(("warning: train.epochs=", "trust ", "  - ", "  . "))]
    assert printed[1].startswith("warning: train.epochs=2 does not exceed tcl's warm-up")
    at = next(i for i, line in enumerate(printed) if line.startswith("trust verdict: "))
    assert printed[at].startswith("trust verdict: NOT USABLE") and printed[at - 1].startswith("epoch 2/2: ")
    assert all(line.startswith(("  - ", "  . ")) for line in printed[at + 1:-1])
    lines = [line for line in printed[1:-1] if line not in trust]
    steps = [STEP_LINE.fullmatch(line) for line in lines if line.startswith("step ")]
    epochs = [EPOCH_LINE.fullmatch(line) for line in lines if line.startswith("epoch ")]
    # every line is one whole event: nothing broken in the middle of a number (rich wrapped at 80 columns)
    assert len(steps) + len(epochs) == len(lines), [x for x in lines if not STEP_LINE.fullmatch(x)]
    assert all(steps) and all(epochs) and max(map(len, lines)) > 120
    assert [int(m.group(1)) for m in steps] == list(range(1, 9))  # log_every=1: every step
    assert [(m.group(1), m.group(2), m.group(5)) for m in epochs] == [("1", "2", "1"), ("2", "2", None)]
    assert lines[-1].endswith("/epoch, done")

    # train.log: the console's lines, in order, each after a timestamp; the command line first
    logged = [LOG_LINE.fullmatch(line) for line in (run_dir / "train.log").read_text().splitlines()]
    assert all(logged)
    messages = [m.group(2) for m in logged]
    assert messages[0].startswith("$ train.py --config digits_tcl")
    assert messages[1:] == printed

    # the tracker got every step's loss terms, lr and throughput, and the evaluations
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    events = event_accumulator.EventAccumulator(str(run_dir / "tcl_lite"))
    events.Reload()
    assert {"train/loss", "train/contrastive", "train/lr", "train/images_per_second", "test_acc"} <= set(
        events.Tags()["scalars"])
    loss = {e.step: e.value for e in events.Scalars("train/loss")}
    assert sorted(loss) == list(range(1, 9))
    for m in steps:
        assert loss[int(m.group(1))] == pytest.approx(_terms(m.group(2))["loss"], abs=1e-4)
    assert [e.step for e in events.Scalars("test_acc")] == [4, 8]
    assert read_status(run_dir)["state"] == "finished"

    # resuming (here in this process) appends to the same log
    train(load_config(run_dir / "config.yaml", ["train.epochs=3", "train.log_with=none"]), resume=True)
    printed = capsys.readouterr().out.strip().splitlines()
    text = (run_dir / "train.log").read_text()
    assert len(re.findall(r"^\S+ \S+ \$ ", text, re.M)) == 2 and "resumed from" in text and "epoch 3/3: " in text
    at = next(i for i, line in enumerate(printed) if line.startswith("trust verdict: "))
    assert text.splitlines()[-1].endswith(printed[-1]) and printed[at - 1].startswith("epoch 3/3: ")
    assert printed[-1].startswith("finished: 3 epochs")
    assert read_status(run_dir) | {"updated": None, "pid": None} == {
        "epochs": 3, "pid": None, "epoch": 3, "step": 12, "state": "finished", "updated": None,
        "seconds_per_epoch": read_status(run_dir)["seconds_per_epoch"], "seconds_left": 0,
        "trust": read_status(run_dir)["trust"]}


def _cfg(tmp_path, *extra: str):
    return load_config(None, [*TINY, "train.log_with=none", f"output_dir={tmp_path / 'run'}", *extra])


def test_time_budget_stop_is_in_status_json_and_a_refused_run_writes_nothing(tmp_path, fresh_accelerate):
    cfg = _cfg(tmp_path, "train.epochs=100", "train.time_budget=1s")
    train(cfg)
    run_dir = tmp_path / "run"
    status = read_status(run_dir)
    assert status["state"] == "stopped_time_budget" and status["epoch"] < 100 and status["epochs"] == 100
    log_text = (run_dir / "train.log").read_text()
    tail = log_text.splitlines()
    stop = next(i for i, line in enumerate(tail) if "Stopping after" in line)
    assert "trust verdict: DOUBTFUL" in tail[stop + 1]  # CE stopped before its end-of-training check
    # A new run (no --resume) in this directory is refused before it writes anything: status and log kept.
    with pytest.raises(CheckpointError, match="already holds checkpoints"):
        train(_cfg(tmp_path))
    assert read_status(run_dir) == status and (run_dir / "train.log").read_text() == log_text


def test_failed_run_says_so_in_status_json_and_train_log(tmp_path, fresh_accelerate, monkeypatch):
    def broken_evaluation(*args, **kwargs):
        raise RuntimeError("evaluation broke")

    monkeypatch.setattr("tcl_lite.engine.trainer.evaluate", broken_evaluation)
    with pytest.raises(RuntimeError, match="evaluation broke"):
        train(_cfg(tmp_path, "train.epochs=1"))
    status = read_status(tmp_path / "run")
    assert status["state"] == "failed" and status["message"] == "RuntimeError: evaluation broke"
    assert (tmp_path / "run" / "train.log").read_text().splitlines()[-1].endswith(
        "run failed: RuntimeError: evaluation broke")


def test_log_with_is_checked_before_anything_is_written(tmp_path, fresh_accelerate):
    with pytest.raises(ConfigError, match="'mlflow' is not a tracker; use auto, none, tensorboard, wandb"):
        load_config(None, ["train.log_with=mlflow"])
    with pytest.raises(ConfigError, match="stand alone"):
        load_config(None, ["train.log_with=none,wandb"])
    assert load_config(None, ["train.log_with=tensorboard,wandb"]).train.log_with == "tensorboard,wandb"
    if importlib.util.find_spec("wandb") is None:
        with pytest.raises(ConfigError, match="wandb is not installed; pip install wandb"):
            train(_cfg(tmp_path, "train.log_with=wandb"))
        assert not (tmp_path / "run").exists()


def test_epoch_clock_counts_a_resumed_part_epoch_as_its_fraction(monkeypatch):
    from tcl_lite.runlog import eta

    now = [100.0]
    monkeypatch.setattr(eta.time, "monotonic", lambda: now[0])
    clock = eta.EpochClock(total_epochs=10)
    now[0] += 30.0  # half an epoch (resumed midway) took 30 s: an epoch takes 60 s
    assert clock.epoch_done(epochs_finished=4, fraction_run=0.5) == (60.0, 360.0)
    now[0] += 60.0
    assert "1m00s/epoch, ETA 5m00s (5 epochs left" in clock.text(epochs_finished=5)
    assert eta.duration_text(3 * 3600 + 12 * 60) == "3h12m" and eta.duration_text(42) == "42s"
    assert json.dumps(eta.duration_text(2 * 86400 + 4 * 3600)) == '"2d04h"'
