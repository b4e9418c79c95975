"""Test-set evaluation, sharded over processes and gathered (no sample counted twice)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


@torch.no_grad()
def accuracy(accelerator: Any, model: nn.Module, loader: Any) -> float:
    was_training = model.training
    model.eval()
    correct = total = 0
    for batch in loader:
        logits = model(batch["image"]).logits
        preds, labels = accelerator.gather_for_metrics((logits.argmax(1), batch["label"]))
        correct += (preds == labels).sum().item()
        total += labels.numel()
    model.train(was_training)
    return correct / max(1, total)


def evaluate(accelerator: Any, models: dict[str, nn.Module], loader: Any) -> dict[str, float]:
    """``{"": model, "teacher": t}`` -> ``{"test_acc": .., "teacher_test_acc": ..}``."""
    return {(f"{name}_" if name else "") + "test_acc": accuracy(accelerator, m, loader)
            for name, m in models.items()}
