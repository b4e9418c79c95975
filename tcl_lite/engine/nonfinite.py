"""Stop (or skip) at the optimizer step whose loss or clipped gradient norm is NaN/inf.

One fused check per step: the logged loss terms (and the gradient norm that clipping already
computed) are stacked into one tensor, tested with one ``isfinite(...).all()`` and read with one
``.item()``. On the CPU that read costs nothing (everything already ran); on a GPU it makes the
host wait for the step's kernels before it queues the next step, the same synchronisation
Accelerate's fp16 GradScaler already does every step.
Under data parallelism the ranks agree through one tiny all-reduce, so all stop at the same step.

fp16: an inf gradient norm is GradScaler's business (it skips the step and lowers the scale), so
only the loss is checked then, and the optimizer step always runs (the scaler decides).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from tcl_lite.errors import NonFiniteLossError


class NonFiniteGuard:
    def __init__(self, policy: str, accelerator: Any) -> None:
        self.policy = policy
        self.accelerator = accelerator
        self.fp16 = getattr(accelerator, "scaler", None) is not None

    def finite(self, logs: dict[str, Any], grad_norm: torch.Tensor | None) -> bool:
        """Whether this step's loss terms (and gradient norm, outside fp16) are all finite."""
        device = self.accelerator.device
        values = [torch.as_tensor(v, device=device).detach().float().reshape(-1) for v in logs.values()]
        if grad_norm is not None and not self.fp16:
            values.append(torch.as_tensor(grad_norm, device=device).detach().float().reshape(-1))
        ok = torch.isfinite(torch.cat(values)).all().float()
        if self.accelerator.num_processes > 1:
            ok = self.accelerator.reduce(ok, reduction="sum") / self.accelerator.num_processes
        return bool(ok.item() == 1.0)

    def step_allowed(self, finite: bool) -> bool:
        """Whether to run optimizer.step() after a check (fp16: the scaler skips bad steps itself)."""
        return finite or self.fp16

    def error(self, step: int, epoch: int, step_in_epoch: int, steps_per_epoch: int, logs: dict[str, Any],
              grad_norm: torch.Tensor | None, lr: float, cfg: Any, last_checkpoint: str) -> NonFiniteLossError:
        terms = ", ".join(f"{k}={float(v):.6g}" for k, v in logs.items())
        if grad_norm is not None:
            terms += f", grad_norm={float(grad_norm):.6g}"
        precision = cfg.train.mixed_precision
        causes = [f"a learning rate too high (optim.lr={cfg.optim.lr:g}, {lr:.4g} at this step): lower "
                  "optim.lr, add optim.warmup_epochs or set optim.grad_clip"]
        if precision == "fp16":
            causes.append("fp16 overflow in the forward pass: use train.mixed_precision=bf16 or no")
        causes.append("a bad input batch (e.g. an image that decodes to NaN) or a loss weight out of range")
        return NonFiniteLossError(
            f"non-finite loss at optimizer step {step} (epoch {epoch + 1}, step {step_in_epoch + 1}/{steps_per_epoch}"
            f"): {terms}. Likely causes: " + "; ".join(causes) + ". Nothing was saved after it: the newest "
            f"checkpoint is {last_checkpoint}; fix the cause and continue with --resume, or set "
            "train.nonfinite=skip to skip such steps (counted as `nonfinite_steps` in metrics.jsonl).")


def weights_finite(model: nn.Module) -> bool:
    """Whether every parameter is finite: checked before each save, so that NaN weights (e.g. from a
    NaN gradient with a finite loss and no clipping) never become a checkpoint."""
    flags = [torch.isfinite(p.detach()).all() for p in model.parameters()]
    return bool(torch.stack(flags).all().item()) if flags else True
