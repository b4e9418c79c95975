"""One ordered pass over a data set that gathers per-sample results from every process (a method's
selection or co-divide pass over the training set, the engine's trust diagnostics)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn


@torch.no_grad()
def per_sample_pass(accelerator: Any, loader: Any, net: nn.Module, fn: Callable[[nn.Module, dict], tuple[Tensor, ...]],
                    n: int) -> list[Tensor]:
    """``fn(net, batch)``'s per-sample tensors over ``loader`` (each process its share), gathered into
    ``[n, ...]`` CPU tensors in dataset order by the batches' ``index``; ``net`` in eval mode, then restored."""
    was_training = net.training
    net.eval()
    out: list[Tensor] = []
    try:
        for batch in loader:
            index, *parts = accelerator.gather_for_metrics((batch["index"], *fn(net, batch)))
            out = out or [torch.empty(n, *p.shape[1:], dtype=p.dtype) for p in parts]
            for full, part in zip(out, parts):
                full[index.cpu()] = part.cpu()
    finally:
        net.train(was_training)
    return out
