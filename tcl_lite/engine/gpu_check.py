"""Can the installed torch run kernels on the visible GPU? Checked before training starts.

A torch wheel carries machine code (SASS, ``sm_XY``) for some compute capabilities and possibly PTX
(``compute_XY``) that the driver compiles for newer ones. A GPU outside that set (a Kaggle P100, 6.0,
under a torch built from sm_75 on) fails at the first kernel with an obscure CUDA error, or torch
only warns; this check stops early and names an accelerator that works instead.

Compatibility rules (NVIDIA's): ``sm_XY`` runs on capability X.Z for Z >= Y (same major);
``sm_XYa`` only on exactly X.Y; ``compute_XY`` (PTX) on any capability >= X.Y.
"""

from __future__ import annotations

import re

from tcl_lite.errors import ConfigError

# The GPUs that Colab and Kaggle offer, by what their menus call them, and their compute capability.
PLATFORM_GPUS: tuple[tuple[str, tuple[int, int]], ...] = (
    ("Colab 'T4 GPU' / Kaggle 'GPU T4 x2' (T4)", (7, 5)),
    ("Colab 'L4 GPU' (L4)", (8, 9)),
    ("Colab 'A100 GPU' (A100)", (8, 0)),
    ("Colab 'H100 GPU' (H100)", (9, 0)),
    ("Kaggle 'GPU P100' (P100)", (6, 0)),
)


class UnsupportedGPUError(ConfigError):
    """The visible GPU's compute capability is not one the installed torch was built for."""


def _parse(arch: str) -> tuple[str, int, int, str] | None:
    """``sm_86`` -> ("sm", 8, 6, ""); ``compute_90`` -> ("compute", 9, 0, ""); ``sm_90a`` -> (.., "a")."""
    m = re.fullmatch(r"(sm|compute)_(\d+?)(\d)([af]?)", arch.strip())
    return (m.group(1), int(m.group(2)), int(m.group(3)), m.group(4)) if m else None


def arch_runs_on(arch: str, capability: tuple[int, int]) -> bool:
    """Whether code compiled as ``arch`` (an entry of torch.cuda.get_arch_list()) runs on ``capability``."""
    parsed = _parse(arch)
    if parsed is None:
        return False
    kind, major, minor, suffix = parsed
    if kind == "compute":  # PTX: the driver compiles it for this or any newer GPU
        return capability >= (major, minor)
    if suffix == "a":  # architecture-specific features: that exact GPU only
        return capability == (major, minor)
    return capability[0] == major and capability[1] >= minor


def supported(capability: tuple[int, int], arch_list: list[str]) -> bool:
    """An empty list (a CPU-only or ROCm build reports none) is not a reason to refuse."""
    return not arch_list or any(arch_runs_on(a, capability) for a in arch_list)


def unsupported_gpu_message(name: str, capability: tuple[int, int], arch_list: list[str],
                            torch_version: str) -> str:
    alternatives = [label for label, cap in PLATFORM_GPUS if supported(cap, arch_list)]
    cap = f"{capability[0]}.{capability[1]}"
    pick = (f"Pick another accelerator: {'; '.join(alternatives)}" if alternatives
            else "No Colab/Kaggle GPU matches this torch build")
    return (f"the GPU {name} has compute capability {cap}, which the installed torch {torch_version} has no "
            f"kernels for (it was built for {', '.join(arch_list)}). {pick}; or install a torch build with "
            f"sm_{capability[0]}{capability[1]} kernels; or train on the CPU with train.cpu=true.")


def check_gpu(device: object) -> None:
    """Raise UnsupportedGPUError when ``device`` (a torch.device) is a CUDA GPU this torch cannot use."""
    import torch

    if getattr(device, "type", None) != "cuda" or torch.version.cuda is None:  # CPU, MPS, ROCm: nothing to check
        return
    capability = tuple(torch.cuda.get_device_capability(device))
    arch_list = list(torch.cuda.get_arch_list())
    if not supported(capability, arch_list):
        raise UnsupportedGPUError(unsupported_gpu_message(torch.cuda.get_device_name(device), capability,
                                                          arch_list, torch.__version__))

