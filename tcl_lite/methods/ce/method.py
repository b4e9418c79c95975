"""Plain cross-entropy on the noisy labels: the baseline every method is compared against."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from tcl_lite.methods.base import Batch, Method, StepInfo


class CrossEntropy(Method):
    name = "ce"
    presets = ("digits_ce", "cifar10_ce", "cifar10_jpeg_ce", "cifar10n_ce_aggre", "cifar10n_ce_rand1",
               "cifar10n_ce_worst", "cifar100n_ce")
    views = ("weak",)

    def loss(self, batch: Batch, info: StepInfo) -> tuple[Tensor, dict[str, Tensor]]:
        logits = self.ctx.model(batch["image"]).logits
        loss = F.cross_entropy(logits.float(), batch["label"])
        acc = (logits.argmax(1) == batch["label"]).float().mean()
        return loss, {"noisy_acc": acc}
