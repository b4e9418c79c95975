"""Out-of-memory adaptation: on an OOM, split the batch into twice as many micro-batches and retry.

The effective batch (and, for methods with exact accumulation, the loss) stays the same, unlike
Accelerate's ``find_executable_batch_size`` which lowers the batch; its OOM test and cache release
are reused. The step is retried from the same RNG state, so a run stays reproducible.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from accelerate.utils.memory import clear_device_cache, should_reduce_batch_size


def next_micro_batches(batch_size: int, micro_batches: int) -> int | None:
    """The smallest divisor of ``batch_size`` above ``micro_batches`` that at least doubles it (or any above)."""
    larger = [d for d in range(micro_batches + 1, batch_size + 1) if batch_size % d == 0]
    doubled = [d for d in larger if d >= 2 * micro_batches]
    return (doubled or larger or [None])[0]


def step_adapting_to_oom(step: Callable[[int], Any], batch_size: int, micro_batches: int, enabled: bool,
                         on_retry: Callable[[], None], log: Callable[[str], None]) -> tuple[Any, int]:
    """Run ``step(micro_batches)``; on OOM (when ``enabled``) retry with more micro-batches. Returns
    (result, micro_batches used)."""
    while True:
        cpu_rng = torch.get_rng_state()
        cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
        try:
            return step(micro_batches), micro_batches
        except RuntimeError as e:
            if not (enabled and should_reduce_batch_size(e)):
                raise
            larger = next_micro_batches(batch_size, micro_batches)
            if larger is None:
                raise RuntimeError(f"out of memory even with micro-batches of 1 sample ({e}); use a smaller "
                                   "model or image size, train.mixed_precision, or "
                                   "train.activation_checkpointing=true") from e
            on_retry()
            clear_device_cache(garbage_collection=True)
            torch.set_rng_state(cpu_rng)
            if cuda_rng is not None:
                torch.cuda.set_rng_state_all(cuda_rng)
            log(f"out of memory at {batch_size // micro_batches} samples per micro-batch: retrying the step with "
                f"train.gradient_accumulation_steps={larger} ({batch_size // larger} per micro-batch)")
            micro_batches = larger
