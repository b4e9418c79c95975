"""The GPUs the planner knows and the CUDA-specific parts a trace on the CPU cannot see.

Every figure here is an ESTIMATE until ``bench/gpu_check.py`` measures it on the GPU (it records the
ratio of measured to predicted memory and time; BENCHMARKS.md keeps the calibration):

* memory: what ``torch.cuda.get_device_properties(0).total_memory`` reports for the card (a little
  under the marketing figure);
* peaks: the vendor's dense TFLOPS (no sparsity) for fp32 and for fp16 / bf16 tensor cores (0: unknown,
  no time estimate);
* ``fraction_fp32`` / ``fraction_half``: the share of that peak a small-image training step reaches
  (convolutions over 32 px CIFAR maps keep tensor cores far from their peak).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

GIB = 2**30
MIB = 2**20

# CUDA-specific memory the fake-tensor trace does not see (estimates, see the module docstring):
CUDA_CONTEXT_BYTES = 450 * MIB  # the CUDA context with cuBLAS / cuDNN loaded (lazy module loading)
ALLOCATOR_MARGIN = 0.10  # caching allocator: block rounding, size-class pools and fragmentation, x peak
CUDNN_WORKSPACE_BYTES = 128 * MIB  # convolution algorithms' workspace, allocated through the caching allocator


@dataclass(frozen=True)
class GPU:
    key: str
    name: str
    memory_gib: float
    fp32_tflops: float
    fp16_tflops: float
    bf16_tflops: float
    fraction_fp32: float
    fraction_half: float
    note: str = ""
    bf16: bool = True  # False: no bf16 (the planner says so and proposes fp16)

    @property
    def memory_bytes(self) -> int:
        return int(self.memory_gib * GIB)

    def tflops(self, precision: str) -> float:
        """The peak for ``train.mixed_precision`` (no / fp16 / bf16); 0 where the GPU lacks it."""
        return {"no": self.fp32_tflops, "fp16": self.fp16_tflops, "bf16": self.bf16_tflops}[precision]

    def achieved_tflops(self, precision: str) -> float:
        """The estimated sustained rate of a training step (peak x the stated fraction)."""
        fraction = self.fraction_fp32 if precision == "no" else self.fraction_half
        return self.tflops(precision) * fraction

    @property
    def half_precision(self) -> str:
        """The mixed precision to propose on this GPU: bf16 where it has it, else fp16."""
        return "bf16" if self.bf16 else "fp16"


GPUS: dict[str, GPU] = {g.key: g for g in (
    GPU("t4", "T4 (Colab, Kaggle)", 14.74, 8.1, 65.0, 0.0, 0.25, 0.06,
        "no bf16 (Turing): mixed precision is fp16 with loss scaling", bf16=False),
    GPU("l4", "L4 (Colab)", 22.03, 30.3, 121.0, 121.0, 0.25, 0.08),
    GPU("a100-40", "A100 40 GB", 39.39, 19.5, 312.0, 312.0, 0.40, 0.08,
        "fp32 convolutions run as TF32 under cuDNN's default"),
    GPU("a100-80", "A100 80 GB", 79.15, 19.5, 312.0, 312.0, 0.40, 0.08,
        "fp32 convolutions run as TF32 under cuDNN's default"),
    GPU("h100", "H100 80 GB (SXM)", 79.19, 67.0, 989.0, 989.0, 0.30, 0.06),
    GPU("p100", "P100 16 GB (Kaggle)", 15.89, 9.3, 18.7, 0.0, 0.35, 0.25,
        "no bf16, no tensor cores; current torch builds (CUDA >= 12.8) have no kernels for it", bf16=False),
)}


def gpu_for(name: str, memory_gib: float, capability: float = 0.0) -> GPU:
    """The known GPU ``name`` (as nvidia-smi or torch name it) is, else one of ``memory_gib`` whose rates are
    unknown (no time estimate); ``capability`` (compute capability) says whether it has bf16."""
    upper = name.upper()
    for key, pattern in (("h100", "H100"), ("l4", "L4"), ("t4", "T4"), ("p100", "P100")):
        if re.search(rf"\b{pattern}\b", upper):  # \b: an L40 is not an L4
            return GPUS[key]
    if re.search(r"\bA100\b", upper):
        return GPUS["a100-80" if memory_gib > 48 else "a100-40"]
    return GPU("other", name, memory_gib, 0.0, 0.0, 0.0, 0.0, 0.0,
               "not in the planner's table: memory only, no time estimate", bf16=capability >= 8)
