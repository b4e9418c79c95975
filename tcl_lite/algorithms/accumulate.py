"""Gradient accumulation for a plain per-sample loss: the one helper every such method uses.

``accumulate(ctx, batch, loss_fn)`` splits the batch into ``ctx.micro_batches`` micro-batches,
back-propagates each micro-batch's mean loss scaled by its share of the batch, and all-reduces
gradients only on the last backward (as Accelerate's ``accumulate``). Since the loss is a mean of
per-sample terms, the gradient is the full batch's. Losses that couple samples (contrastive
negatives, mixup partners, batch means) need the gradient cache instead (``gradient_cache.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor


def split_batch(batch: dict[str, Any], n: int) -> list[dict[str, Any]]:
    """One batch -> ``n`` micro-batches along dim 0 (multi-view images are lists of tensors);
    equal when ``n`` divides the batch, else ``torch.chunk``'s sizes."""
    if n == 1:
        return [batch]

    def chunks(v: Any) -> list[Any]:
        if isinstance(v, torch.Tensor):
            return list(v.chunk(n))
        if isinstance(v, (list, tuple)):
            return [list(parts) for parts in zip(*(chunks(x) for x in v))]
        raise TypeError(f"cannot split a batch entry of type {type(v).__name__}")

    split = {k: chunks(v) for k, v in batch.items()}
    count = min(len(parts) for parts in split.values())
    return [{k: split[k][i] for k in batch} for i in range(count)]


def batch_size_of(batch: dict[str, Any]) -> int:
    return int(batch["index"].shape[0])


def accumulate(ctx: Any, batch: dict[str, Any],
               loss_fn: Callable[[dict[str, Any]], tuple[Tensor, dict[str, Tensor]]]) -> dict[str, Tensor]:
    """Forward + backward of ``batch`` in ``ctx.micro_batches`` parts; returns the batch-mean of the
    loss and of every logged term, detached."""
    parts = ctx.split(batch)
    total = batch_size_of(batch)
    logs: dict[str, Tensor] = {}
    for i, mb in enumerate(parts):
        share = batch_size_of(mb) / total
        with ctx.sync_gradients(last=i == len(parts) - 1):
            loss, terms = loss_fn(mb)
            ctx.backward(loss * share)
        for k, v in {"loss": loss, **terms}.items():
            logs[k] = logs.get(k, 0.0) + v.detach() * share
    return logs
