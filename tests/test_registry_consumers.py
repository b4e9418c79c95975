"""Consumers learn methods from the registry: a method defined here, in the test, gets a report (its
clean-probability figure and its metric), an export of its own columns, label issues, an exported
model of its two networks and checkpoint discovery, without any edit to report, export, plots,
label issues or inference code. Also the one checkpoint finder on its own."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import tcl_lite
from tcl_lite.checkpoints.finder import find_checkpoint
from tcl_lite.errors import CheckpointError, NoCheckpointError
from tcl_lite.methods import METHODS, Batch, Method, ModelSpec, StepInfo, register

TOY = "toy_verdicts"
TOY_LABEL = "toy agreement with the test labels (TOY)"
# 480 samples / 32 = 15 steps; checkpoints at steps 5, 10, 15 (keep_last=3)
RUN = ["data.image_size=8", "model.width=8", "train.batch_size=32", "train.eval_batch_size=512",
       "train.log_every=1000", "train.epochs=1", "data.train_subset=480", "checkpoint.every_steps=5"]


class SumOfLogits(nn.Module):
    """What a two-network method predicts with: the sum of both networks' logits (a plain tensor)."""

    def __init__(self, models: dict[str, nn.Module]) -> None:
        super().__init__()
        self.nets = nn.ModuleDict(models)

    def forward(self, x: Tensor) -> Tensor:
        return sum(net(x).logits for net in self.nets.values())


class ToyVerdicts(Method):
    """Two networks trained with CE, a fixed clean probability and suggested label per sample, its own metric."""

    name = TOY
    views = ("weak",)
    metric_labels = {"toy_acc": TOY_LABEL}

    @classmethod
    def model_specs(cls, cfg) -> dict[str, ModelSpec]:
        return {"model": ModelSpec(), "second": ModelSpec()}

    @classmethod
    def inference_model(cls, models: dict[str, nn.Module]) -> nn.Module:
        return SumOfLogits(models)

    @classmethod
    def per_sample_outputs(cls, state: dict) -> dict[str, np.ndarray] | None:
        if "toy_clean" not in state:
            return None
        return {"clean_probability": state["toy_clean"].float().numpy(),
                "suggested_label": state["toy_suggested"].long().numpy(),
                "toy_margin": state["toy_margin"].float().numpy()}

    def loss(self, batch: Batch, info: StepInfo) -> tuple[Tensor, dict[str, Tensor]]:
        loss = sum(F.cross_entropy(m(batch["image"]).logits.float(), batch["label"]) for m in self.ctx.models.values())
        return loss, {}

    def after_evaluation(self, metrics: dict[str, float]) -> dict[str, float]:
        return {"toy_acc": metrics["test_acc"]} if "test_acc" in metrics else {}

    def state_dict(self) -> dict:
        noisy = torch.as_tensor(self.ctx.data.noisy_labels, dtype=torch.long)
        index = torch.arange(len(noisy))
        return {"toy_clean": torch.where(index % 4 == 0, 0.25, 0.75),
                "toy_suggested": (noisy + (index % 4 == 0).long()) % self.ctx.data.num_classes,
                "toy_margin": index.float() / len(noisy)}


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    """The toy method registered (with ``@register``'s function) for this module only, and a run of it."""
    from accelerate.state import AcceleratorState, GradientState

    from tcl_lite.config import load_config
    from tcl_lite.engine import train

    register(ToyVerdicts)
    out = tmp_path_factory.mktemp("toy") / "run"
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    try:
        train(load_config(None, [f"method={TOY}", *RUN, f"output_dir={out}"]))
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
    yield out
    METHODS.pop(TOY, None)  # other test modules see only the built-in methods


def _expected(run) -> dict[str, np.ndarray]:
    noisy = np.load(run / "noisy_labels.npy")
    index = np.arange(len(noisy))
    return {"clean_probability": np.where(index % 4 == 0, 0.25, 0.75),
            "suggested_label": (noisy + (index % 4 == 0)) % 10,
            "toy_margin": index.astype(np.float32) / np.float32(len(noisy))}


def test_the_run_has_one_weights_file_per_network(toy_run):
    newest = sorted((toy_run / "checkpoints").glob("step_*"))[-1]
    assert newest.name == "step_00000015"
    assert (newest / "model.safetensors").is_file() and (newest / "model.second.safetensors").is_file()


def test_report_draws_the_methods_verdicts_and_metric(toy_run, tmp_path):
    from tcl_lite.results import plots
    from tcl_lite.results.report import make_report

    out = make_report(toy_run, tmp_path / "report")
    for name in ("accuracy.png", "clean_probability.png", "confusion.png", "report.md"):
        assert (out / name).is_file(), name
    assert not (out / "noise_rate.png").exists()  # the toy logs no estimated clean fraction
    text = (out / "report.md").read_text()
    toy_acc = json.loads((toy_run / "metrics.jsonl").read_text().splitlines()[-1])["toy_acc"]
    assert f"| final {TOY_LABEL} | {100 * toy_acc:.1f}% (epoch 1) |" in text
    assert f"`{TOY}`'s clean probability per training sample" in text and "Suggested (by" in text
    assert "The suggested label differs from the given one for" in text and "method=tcl" not in text
    assert plots.accuracy_series(TOY)["toy_acc"] == TOY_LABEL
    # The toy's verdicts are checked like any method's: its changes (the next class for every fourth sample)
    # are not what the neighbours' labels say, so its trust verdict withholds the relabelled file.
    from tcl_lite.algorithms.trust_files import load_trust

    record = load_trust(toy_run)
    assert record.level == "not usable" and record.info["final"], record.verdict.reasons
    assert f"## Trust verdict: **{record.level}**" in text and not (out / "cleaned_labels.csv").exists()
    with open(out / "review_labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    expected = _expected(toy_run)
    changed = np.flatnonzero(expected["suggested_label"] != np.load(toy_run / "noisy_labels.npy"))
    assert sorted(int(r["index"]) for r in rows) == changed.tolist()
    index = [int(r["index"]) for r in rows]
    assert [int(r["suggested_label"]) for r in rows] == expected["suggested_label"][index].tolist()
    confidence = [float(r["confidence"]) for r in rows]
    assert confidence == sorted(confidence, reverse=True)  # most confident first


def test_export_writes_the_methods_columns(toy_run, tmp_path):
    from tcl_lite.results.export import export, verdict_methods

    assert TOY in verdict_methods() and "tcl" in verdict_methods() and "ce" not in verdict_methods()
    folder = export(toy_run, tmp_path / "export")
    with open(folder / "clean_probability.csv", newline="") as f:
        header = next(csv.reader(f))
    assert header == ["index", "given_label", "suggested_label", "clean_probability", "toy_margin", "confidence",
                      "applied", "true_label"]
    assert not np.load(folder / "applied.npy").any()  # the run is not trustworthy: nothing to apply
    expected = _expected(toy_run)
    for name, values in expected.items():
        assert np.array_equal(np.load(folder / f"{name}.npy"), values), name
    assert np.array_equal(np.load(folder / "given_label.npy"), np.load(toy_run / "noisy_labels.npy"))


def test_label_issues_and_exported_model_use_both_networks(toy_run, tmp_path):
    from tcl_lite.inference.export_model import export_model
    from tcl_lite.inference.run_loading import (
        choose_checkpoint,
        load_network,
        predict_probabilities,
        run_config,
        run_data,
    )

    cfg = run_config(toy_run)
    data = run_data(toy_run, cfg)
    net = load_network(cfg, choose_checkpoint(toy_run, "final"), 10, 8)
    assert isinstance(net, SumOfLogits) and not net.training
    x = torch.stack([data.test[i]["image"] for i in range(64)])
    with torch.no_grad():
        zeroed = load_network(cfg, choose_checkpoint(toy_run), 10, 8, state={"second": {
            k: torch.zeros_like(v) for k, v in net.nets["second"].state_dict().items()}})
        assert not torch.equal(zeroed(x), net(x))  # the second network's weights count
        model = tcl_lite.load_model(export_model(toy_run, tmp_path / "model"))
        assert torch.equal(model(x), net(x))
    meta = json.loads((tmp_path / "model" / "model.json").read_text())
    assert meta["version"] == 2 and meta["inference"] == {"method": TOY, "networks": {
        "model": {"projector": False}, "second": {"projector": False}}}
    issues = tcl_lite.find_label_issues(toy_run)  # the default score: self-confidence of the summed logits
    probs = predict_probabilities(net, data.train_eval(), 256, torch.device("cpu"))
    assert np.allclose(issues.score, 1 - probs[issues.index, issues.given], atol=1e-6)


def test_find_checkpoint_takes_a_run_its_checkpoints_or_a_checkpoint(toy_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(toy_run, run)
    steps = sorted((run / "checkpoints").glob("step_*"))
    assert [p.name for p in steps] == ["step_00000005", "step_00000010", "step_00000015"]
    for path in (run, run / "checkpoints", str(run)):
        assert find_checkpoint(path, log=None) == steps[-1]
    assert find_checkpoint(steps[0], "best") == steps[0]  # a checkpoint folder names itself
    with pytest.raises(NoCheckpointError, match="kept no `best`"):
        find_checkpoint(run, "best")
    assert find_checkpoint(run, "auto", log=None) == steps[-1]
    (steps[-1] / "model.second.safetensors").write_bytes(b"broken")
    seen: list[str] = []
    assert find_checkpoint(run, log=seen.append) == steps[-2]
    assert "skipping checkpoint step_00000015" in seen[0] and "model.second.safetensors is corrupt" in seen[0]
    with pytest.raises(CheckpointError, match="model.second.safetensors is corrupt"):
        find_checkpoint(steps[-1])
    for step in steps[:-1]:
        (step / "manifest.json").unlink()
    with pytest.raises(NoCheckpointError, match=r"none is usable(.|\n)*step_00000010: no manifest.json"):
        find_checkpoint(run, log=None)
    shutil.copytree(steps[0], run / "checkpoints" / "best")
    with pytest.raises(CheckpointError, match="best: no manifest.json"):
        find_checkpoint(run, "newest-or-best", log=None)
    with pytest.raises(NoCheckpointError, match="does not exist"):
        find_checkpoint(tmp_path / "nowhere")
    with pytest.raises(NoCheckpointError, match="holds no checkpoint"):
        find_checkpoint(tmp_path)
