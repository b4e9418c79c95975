"""Test- and validation-set evaluation, sharded over processes and gathered (no sample counted twice)."""

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


def evaluate(accelerator: Any, models: dict[str, nn.Module], loader: Any, split: str = "test") -> dict[str, float]:
    """``{"": model, "teacher": t}`` -> ``{"test_acc": .., "teacher_test_acc": ..}`` (``val_acc``.. for
    ``split="val"``)."""
    return {(f"{name}_" if name else "") + f"{split}_acc": accuracy(accelerator, m, loader)
            for name, m in models.items()}


def eval_split_loaders(accelerator: Any, data: Any, cfg: Any, log: Any = print) -> dict[str, Any]:
    """``{"val": loader, "test": loader}`` for the splits the data has, prepared (sharded) by Accelerate.

    Validation comes first so that its metrics are there when ``checkpoint.best_metric`` is read;
    without a validation split no `best` checkpoint is kept (the test set never selects one)."""
    loaders = {}
    for split in ("val", "test"):
        dataset = getattr(data, split)
        if dataset is not None:
            dl = torch.utils.data.DataLoader(dataset, batch_size=cfg.train.eval_batch_size,
                                             num_workers=cfg.data.num_workers)
            loaders[split] = accelerator.prepare(dl)
    if "val" not in loaders and cfg.checkpoint.best_metric:
        log(f"no validation split: checkpoints/best is not kept (checkpoint.best_metric={cfg.checkpoint.best_metric}"
            " needs one: set data.val_fraction=0.1, data.val_list, or add a val/ folder); use the final checkpoint")
    return loaders


def write_data_info(out: Any, data: Any) -> None:
    """``OUT/data.json``: what a trained model needs to be used on new images without the dataset
    (class names, image size, normalisation, split sizes)."""
    import json
    from pathlib import Path

    info = {"class_names": list(data.class_names), "num_classes": data.num_classes, "image_size": data.image_size,
            "channels": data.channels, "mean": list(data.mean), "std": list(data.std),
            "sizes": {k: (len(getattr(data, k)) if getattr(data, k) is not None else 0)
                      for k in ("train", "val", "test")}}
    Path(out, "data.json").write_text(json.dumps(info, indent=1))
