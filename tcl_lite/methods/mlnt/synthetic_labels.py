"""MLNT's synthetic noisy labels: relabel part of a batch with the labels of feature-space neighbours."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor


class SyntheticLabels(NamedTuple):
    labels: Tensor  # [B] the new label set
    chosen: Tensor  # [n] positions that were relabelled (n = int(B * ratio)), on the labels' device
    source: Tensor  # [n] for each chosen position, the neighbour whose label it took


def neighbour_relabel(labels: Tensor, features: Tensor, ratio: float, num_neighbors: int) -> SyntheticLabels:
    """One synthetic label set, as the reference makes it.

    ``int(B * ratio)`` positions (rounded down, as the reference) are chosen at random; each takes
    the label of one of its ``num_neighbors`` nearest neighbours (squared Euclidean distance of
    ``features``, itself excluded, uniform among the k) in the *original* labels. With fewer than
    k+1 samples all others are neighbours. Randomness: the global CPU torch generator (saved and
    restored by checkpoints), so the result is a function of the seed whatever the device.
    """
    b = labels.shape[0]
    n = int(b * ratio)
    k = min(num_neighbors, b - 1)
    device = labels.device
    if n == 0 or k == 0:
        empty = torch.empty(0, dtype=torch.long, device=device)
        return SyntheticLabels(labels.clone(), empty, empty)
    chosen = torch.randperm(b)[:n].to(device)
    pick = torch.randint(k, (n,)).to(device)
    feats = features.detach().float()
    # Only the chosen rows of the distance matrix: [n, B], the same sum of squares as the reference.
    dist = (feats[chosen, None, :] - feats[None, :, :]).pow(2).sum(-1)
    # Exclude the sample itself explicitly (the reference skips the first of k+1 nearest, which is
    # not itself when another sample has identical features).
    dist[torch.arange(n, device=device), chosen] = float("inf")
    nearest = dist.topk(k, dim=1, largest=False).indices  # [n, k]
    source = nearest[torch.arange(n, device=device), pick]
    new = labels.clone()
    new[chosen] = labels[source]
    return SyntheticLabels(new, chosen, source)
