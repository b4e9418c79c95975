"""``tcl-lite gpu-check``: exit 0 when the GPU (or no GPU) is usable, 2 with the reason otherwise."""

from __future__ import annotations

import argparse

from tcl_lite.cli.dispatch import run_command

DESCRIPTION = "whether the installed torch can use the visible GPU"


def parser() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(prog="tcl-lite gpu-check", description=DESCRIPTION.capitalize() + ".")


def run(argv: list[str]) -> int:
    parser().parse_args(argv)
    import torch

    from tcl_lite.engine.gpu_check import check_gpu  # torch: after the arguments are parsed

    if not torch.cuda.is_available():
        print("no CUDA GPU visible: training runs on the CPU")
        return 0
    device = torch.device("cuda", 0)
    check_gpu(device)
    major, minor = torch.cuda.get_device_capability(device)
    print(f"GPU ok: {torch.cuda.get_device_name(device)} (compute capability {major}.{minor}) is supported by "
          f"torch {torch.__version__} ({', '.join(torch.cuda.get_arch_list())})")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command("gpu-check", run, argv)
