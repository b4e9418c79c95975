"""BatchNorm with batch statistics over every process (``model.sync_bn``), as the TCL reference converts its
network (``nn.SyncBatchNorm.convert_sync_batchnorm``).

On a GPU this is PyTorch's ``nn.SyncBatchNorm``. Its kernels exist for GPUs only, and data parallelism
refuses it on the CPU; there ``AllReduceBatchNorm`` below computes the same statistics (gloo): the
per-channel sums, sums of squares and counts of every process, all-reduced in float64 through the
differentiable ``tcl_lite.distributed.all_reduce_sum_with_grad``, whose backward sums the gradients of
every process's loss as ``nn.SyncBatchNorm``'s backward does. Outside training, or in one process, both are plain
BatchNorm.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from tcl_lite.distributed import all_reduce_sum_with_grad, world_size

KERNEL_DEVICES = ("cuda", "hpu", "xpu")  # where nn.SyncBatchNorm's own kernels run


class AllReduceBatchNorm(_BatchNorm):
    """BatchNorm of any dimension whose training statistics are those of every process's batch together."""

    def _check_input_dim(self, input: Tensor) -> None:  # noqa: A002 - torch's signature
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002 - torch's signature
        if not self.training or world_size() < 2:
            return super().forward(input)
        self._check_input_dim(input)
        dims = [0, *range(2, input.dim())]
        local = input.double()
        count = torch.full((1,), input.numel() // input.shape[1], dtype=torch.float64, device=input.device)
        stats = all_reduce_sum_with_grad(torch.cat([local.sum(dims), (local * local).sum(dims), count]))
        channels = input.shape[1]
        n = stats[-1].detach()
        mean = stats[:channels] / n
        var = (stats[channels:2 * channels] / n - mean * mean).clamp(min=0)  # biased, as BatchNorm normalises
        if self.track_running_stats:
            self._update_running_stats(mean.detach(), var.detach(), float(n))
        shape = [1, channels] + [1] * (input.dim() - 2)
        out = (local - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out.to(input.dtype)

    @torch.no_grad()
    def _update_running_stats(self, mean: Tensor, var: Tensor, n: float) -> None:
        """BatchNorm's update with the global statistics (the running variance unbiased, over all processes)."""
        self.num_batches_tracked.add_(1)
        factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        unbiased = var * (n / max(n - 1, 1))
        self.running_mean.mul_(1 - factor).add_(mean.to(self.running_mean.dtype), alpha=factor)
        self.running_var.mul_(1 - factor).add_(unbiased.to(self.running_var.dtype), alpha=factor)


def convert_sync_batchnorm(module: nn.Module, device_type: str) -> nn.Module:
    """Every BatchNorm of ``module`` synchronised across processes: ``nn.SyncBatchNorm`` where its kernels
    run (``device_type``: the run's), ``AllReduceBatchNorm`` elsewhere. The same parameters and buffers, so
    checkpoints are unchanged; returns the module (a new one when ``module`` itself is a BatchNorm)."""
    converted = nn.SyncBatchNorm.convert_sync_batchnorm(module)
    if device_type not in KERNEL_DEVICES:
        for m in converted.modules():
            if type(m) is nn.SyncBatchNorm:
                m.__class__ = AllReduceBatchNorm
    return converted
