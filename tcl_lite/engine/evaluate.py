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


def eval_split_loaders(accelerator: Any, data: Any, cfg: Any) -> dict[str, Any]:
    """``{"val": loader, "test": loader}`` for the splits the data has, prepared (sharded) by Accelerate.

    Validation comes first so that its metrics are there when ``checkpoint.best_metric`` is read;
    without a validation split no `best` checkpoint is kept (the test set never selects one): the
    run's end-of-run summary says so (``no_best_notice``)."""
    loaders = {}
    for split in ("val", "test"):
        dataset = getattr(data, split)
        if dataset is not None:
            dl = torch.utils.data.DataLoader(dataset, batch_size=cfg.train.eval_batch_size,
                                             num_workers=cfg.data.num_workers)
            loaders[split] = accelerator.prepare(dl)
    return loaders


def no_best_notice(cfg: Any, has_val: bool) -> str | None:
    """The notice for a run whose ``checkpoint.best_metric`` asks for a `best` checkpoint that no validation
    split can select (None when there is a validation split, or the user asked for no `best`)."""
    if has_val or not cfg.checkpoint.best_metric:
        return None
    return (f"no validation split, so no `best` checkpoint was kept (checkpoint.best_metric="
            f"{cfg.checkpoint.best_metric}): predict and export-model use the final one. To select "
            "one, set data.val_fraction=0.1 (or data.val_list, or add a val/ folder); checkpoint.best_metric= "
            "silences this")


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
