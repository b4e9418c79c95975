"""The extension path: a method defined here, in a test module, with its own config section and its
own per-epoch phases, is registered and trained by the engine with no engine file changed; and every
built-in method's declared presets exist and train that method."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch.nn.functional as F
import yaml
from conftest import TINY

from tcl_lite.config import load_config, opt
from tcl_lite.data.subset import SampleSubset
from tcl_lite.errors import ConfigError
from tcl_lite.methods import METHODS, LoaderSpec, Method, Phase, StepInfo, register
from tcl_lite.presets import find_preset

TOY = "toy_halves"


@dataclass
class HalvesConfig:
    smoothing: float = opt(0.0, "Label smoothing of the toy's CE.", ge=0.0, le=1.0)


class Halves(Method):
    """CE with label smoothing, each epoch in two phases: the even samples, then the odd ones."""

    name = TOY
    config = HalvesConfig

    def epoch_plan(self, epoch: int) -> list[Phase]:
        views = self.ctx.data.train_views(("weak",))
        n = len(self.ctx.data.noisy_labels)
        return [Phase(part, {"": LoaderSpec(SampleSubset(views, np.arange(start, n, 2)), self.cfg.train.batch_size)})
                for start, part in ((0, "even"), (1, "odd"))]

    def loss(self, batch: dict, info: StepInfo):
        parity = {"even": 0, "odd": 1}[info.phase]
        assert all(int(i) % 2 == parity for i in batch["index"]), "the phase's own loader"
        self.seen.append(info.phase)
        logits = self.ctx.model(batch["image"]).logits.float()
        return F.cross_entropy(logits, batch["label"], label_smoothing=self.cfg.toy_halves.smoothing), {}

    def before_training(self, resumed: bool) -> dict[str, float]:
        self.seen: list[str] = []
        Halves.last = self
        return {}


@pytest.fixture
def toy():
    register(Halves)
    yield Halves
    METHODS.pop(TOY, None)  # other tests compare in-process messages with a CLI that never saw it


def test_a_test_defined_method_with_its_own_section_and_phases_is_trained(toy, tmp_path, fresh_accelerate):
    from tcl_lite.engine import train

    cfg = load_config(None, [*TINY, f"method={TOY}", f"{TOY}.smoothing=0.1", "train.batch_size=16",
                             "optim.lr=0.1", "optim.scale_lr=false", f"output_dir={tmp_path / 'run'}"])
    metrics = train(cfg)
    assert metrics["test_acc"] > 0.15  # 10 classes, 40% noise, a tiny run: chance is 0.1
    seen, k = Halves.last.seen, len(Halves.last.seen) // 4
    assert k > 0 and seen == (["even"] * k + ["odd"] * k) * 2, "the even samples, then the odd ones, every epoch"
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved[TOY] == {"smoothing": 0.1}
    with pytest.raises(ConfigError, match=rf"'{TOY}.smoothing'.*<= 1"):
        load_config(None, [f"method={TOY}", f"{TOY}.smoothing=2"])


def test_an_unregistered_method_and_its_section_are_refused():
    with pytest.raises(ConfigError, match="choose one of ce, tcl, mlnt, dividemix"):
        load_config(None, [f"method={TOY}"])
    with pytest.raises(ConfigError, match=f"unknown config key '{TOY}'"):
        load_config(None, [f"{TOY}.smoothing=0.1"])


@pytest.mark.parametrize("name", ["ce", "tcl", "mlnt", "dividemix", "promix"])
def test_declared_presets_exist_and_train_their_method(name):
    presets = METHODS[name].presets
    assert presets, f"{name} declares no preset"
    for preset in presets:
        assert load_config(find_preset(preset)).method == name, preset
