"""Gradient cache: the exact gradient of a full-batch loss, computed micro-batch by micro-batch.

A loss that couples samples (contrastive negatives, mixup partners, a batch-mean entropy) is not
the sum of per-micro-batch losses, so plain gradient accumulation changes the objective. The
gradient cache (Gao et al., "Scaling Deep Contrastive Learning Batch Size under Memory Limited
Setup", 2021) keeps it exact with one extra forward:

1. forward every micro-batch **without a graph** and keep only its (small) outputs;
2. concatenate the outputs, compute the full-batch loss on them as leaf tensors and its gradient
   ``g = dL/d(outputs)``: the only place the whole batch meets, at the cost of B x (K + d) floats;
3. forward each micro-batch again **with** a graph and back-propagate ``g``'s slice through it, via
   the surrogate ``sum(out * g)``, whose gradient w.r.t. the parameters is ``J^T g``.

Summed over the micro-batches, step 3 gives ``dL/dtheta`` exactly (chain rule), while only one
micro-batch's activations are alive at a time. Two things must not differ between the passes:

* randomness (dropout): the RNG state is captured before each first-pass forward and restored
  before its replay, so the graph is built on the very function whose outputs gave ``L``;
* stateful layers: BatchNorm updates its running statistics in every training forward. The first
  pass updates them (once per micro-batch, as without the cache); the replays run inside the same
  save-and-restore context that activation checkpointing uses (``models.encoder.KeepBuffers``), so
  they leave them untouched. The replay's outputs depend only on batch statistics, so the gradients
  are unaffected.

The backward goes through the caller's ``backward`` (e.g. ``accelerator.backward``, which applies
the fp16 loss scale to the surrogate) under the caller's ``sync_gradients(last)`` (DDP all-reduces
only on the last micro-batch). Nothing here knows about TCL: ``forward`` returns a tuple of tensors
with the micro-batch on dim 0, ``loss_fn`` takes the tuple of their concatenations.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from tcl_lite.models.encoder import KeepBuffers, batchnorm_buffers

Outputs = tuple[Tensor, ...]
LossFn = Callable[[Outputs], tuple[Tensor, dict[str, Tensor]]]

#: Called with each buffer the cache keeps between its passes (the first pass's outputs, their
#: concatenation and its gradient), so that a memory trace (``tcl_lite.plan``) can name them.
BUFFER_OBSERVERS: list[Callable[[Tensor], None]] = []


def _kept(*tensors: Tensor) -> None:
    for observe in BUFFER_OBSERVERS:
        for t in tensors:
            observe(t)


def _rng_state(device: torch.device | None) -> tuple[Tensor, Tensor | None]:
    cuda = torch.cuda.get_rng_state(device) if device is not None and device.type == "cuda" else None
    return torch.get_rng_state(), cuda


def _set_rng_state(state: tuple[Tensor, Tensor | None], device: torch.device | None) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)


def cached_backward(
    micro_inputs: Sequence[Any],
    forward: Callable[[Any], Outputs],
    loss_fn: LossFn,
    *,
    backward: Callable[[Tensor], None] = Tensor.backward,
    sync_gradients: Callable[[bool], contextlib.AbstractContextManager] = lambda last: contextlib.nullcontext(),
    stateful: nn.Module | None = None,
    device: torch.device | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Accumulate into ``.grad`` the gradient of ``loss_fn(cat(forward(m) for m in micro_inputs))``.

    ``stateful``: the module whose BatchNorm statistics must be updated once per micro-batch (the
    model). ``device``: whose CUDA RNG to replay besides the CPU one. Returns the detached loss and
    the detached logs of ``loss_fn``.
    """
    # 1. first pass: outputs only, and the RNG state each forward started from.
    states, parts = [], []
    for inputs in micro_inputs:
        states.append(_rng_state(device))
        with torch.no_grad():
            outs = forward(inputs)
        parts.append(tuple(o.detach() for o in outs))
        _kept(*parts[-1])
    after_first_pass = _rng_state(device)

    # 2. the full-batch loss on the gathered outputs, and its gradient w.r.t. them.
    leaves = tuple(torch.cat([p[j] for p in parts]).requires_grad_(True) for j in range(len(parts[0])))
    with torch.enable_grad():
        loss, logs = loss_fn(leaves)
        grads = torch.autograd.grad(loss, leaves, allow_unused=True)
    grads = tuple(torch.zeros_like(x) if g is None else g for x, g in zip(leaves, grads))
    _kept(*leaves, *grads)
    sizes = [p[0].shape[0] for p in parts]
    grad_slices = [g.split(sizes) for g in grads]
    del leaves, parts

    # 3. replay each micro-batch with a graph and push its slice of the cached gradient through it.
    # The statistics are restored once, after the last replay's backward: training-mode BatchNorm
    # saves its running buffers for backward, so writing them between a forward and its backward
    # would trip autograd's in-place check.
    keep = KeepBuffers(batchnorm_buffers(stateful)) if stateful is not None else contextlib.nullcontext()
    n = len(micro_inputs)
    with keep:
        for i, inputs in enumerate(micro_inputs):
            _set_rng_state(states[i], device)
            with sync_gradients(i == n - 1):
                outs = forward(inputs)
                surrogate = sum((o * gs[i].to(o.dtype)).sum() for o, gs in zip(outs, grad_slices)
                                if o.requires_grad)
                backward(surrogate)
    # Leave the generator where a single pass would have: the replays are invisible to what follows.
    _set_rng_state(after_first_pass, device)
    return loss.detach(), {k: v.detach() for k, v in logs.items()}
