"""Small collective helpers that degrade to no-ops in a single process.

The one subtle piece is ``all_gather_with_grad``. TCL's contrastive loss takes its negatives from
the global batch, so every rank concatenates the projections of all ranks and computes the same
global loss ``L``. The backward of ``torch.distributed.nn.functional.all_gather`` *sums* the
gradients that all ranks computed for each slice, so rank ``r`` receives ``W * dL/dz_r`` for its
own projections ``z_r`` (``W`` = world size). DDP then *averages* the parameter gradients over the
``W`` ranks, which cancels the factor: the update is exactly ``dL/dtheta`` of the global loss, the
same as one process holding the whole global batch. (``tests/test_tcl_distributed.py`` checks it.)
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def is_distributed() -> bool:
    """True inside an initialised process group with more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def all_gather_with_grad(tensor: Tensor) -> Tensor:
    """Concatenate ``tensor`` of every rank along dim 0 (rank order), differentiably.

    Every rank must pass a tensor of the same shape. In one process this is the identity.
    """
    if not is_distributed():
        return tensor
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(tensor.contiguous()), dim=0)


def broadcast_(tensor: Tensor, src: int = 0) -> Tensor:
    """Overwrite ``tensor`` in place with rank ``src``'s copy (so every rank holds identical state)."""
    if is_distributed():
        dist.broadcast(tensor, src=src)
    return tensor


def all_reduce_sum_(tensor: Tensor) -> Tensor:
    """In-place sum over ranks (no gradient)."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks; its backward is the sum over ranks of every rank's gradient (each rank's loss depends
    on every rank's input through the sum)."""

    @staticmethod
    def forward(ctx: object, tensor: Tensor) -> Tensor:
        out = tensor.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out

    @staticmethod
    def backward(ctx: object, grad: Tensor) -> Tensor:
        return _AllReduceSum.apply(grad)


def all_reduce_sum_with_grad(tensor: Tensor) -> Tensor:
    """The sum of ``tensor`` over ranks, differentiably (a new tensor); the identity in one process."""
    return _AllReduceSum.apply(tensor) if is_distributed() else tensor
