"""Weighted k-nearest-neighbour classification of test features against train features.

The reference's kNN monitor (InstDisc's weighted vote): the k most cosine-similar train features
vote for their labels with weight ``exp(sim / t)``; the class with the largest total wins.

Streaming: the train features (the "bank", N x d) stay wherever the caller keeps them (TCL keeps
them on the CPU) and are moved to the device ``bank_chunk`` rows at a time; each query chunk keeps
a running top-k, so the device holds ``query_chunk x (k + bank_chunk)`` similarities at most,
never an N x d or Q x N matrix.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


@torch.no_grad()
def knn_predict(queries: Tensor, bank: Tensor, bank_labels: Tensor, num_classes: int, k: int = 200,
                t: float = 0.1, *, device: torch.device | None = None, query_chunk: int = 1024,
                bank_chunk: int = 16384) -> Tensor:
    """Predicted labels [Q] (on the CPU) of L2-normalised ``queries`` [Q, d] against ``bank`` [N, d]."""
    device = device or queries.device
    k = min(k, bank.shape[0])
    bank_labels = bank_labels.to(device)
    preds = []
    for q in queries.split(query_chunk):
        q = q.to(device, torch.float32)
        top_sim = torch.empty(q.shape[0], 0, device=device)
        top_idx = torch.empty(q.shape[0], 0, dtype=torch.long, device=device)
        for start in range(0, bank.shape[0], bank_chunk):
            chunk = bank[start:start + bank_chunk].to(device, torch.float32)
            sim = torch.cat([top_sim, q @ chunk.T], dim=1)
            ids = torch.arange(start, start + chunk.shape[0], device=device).expand(q.shape[0], -1)
            idx = torch.cat([top_idx, ids], dim=1)
            top_sim, pos = sim.topk(min(k, sim.shape[1]), dim=1)
            top_idx = idx.gather(1, pos)
        labels = bank_labels[top_idx]  # [q, k]
        weights = (top_sim / t).exp()
        scores = (F.one_hot(labels, num_classes).float() * weights.unsqueeze(-1)).sum(dim=1)
        preds.append(scores.argmax(dim=1).cpu())
    return torch.cat(preds) if preds else torch.empty(0, dtype=torch.long)


def knn_accuracy(queries: Tensor, query_labels: Tensor, bank: Tensor, bank_labels: Tensor, num_classes: int,
                 k: int = 200, t: float = 0.1, *, device: torch.device | None = None) -> float:
    """Fraction of ``queries`` whose weighted kNN vote equals ``query_labels``."""
    pred = knn_predict(queries, bank, bank_labels, num_classes, k, t, device=device)
    return float((pred == query_labels.cpu()).float().mean()) if len(pred) else 0.0
