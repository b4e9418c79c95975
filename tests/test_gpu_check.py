"""The GPU-capability check before training, with faked capabilities and torch arch lists (no GPU here)."""

from __future__ import annotations

import importlib.util
import re

import pytest
import torch
from conftest import ROOT

from tcl_lite.cli import gpu_check
from tcl_lite.engine.gpu_check import UnsupportedGPUError, arch_runs_on, check_gpu, supported
from tcl_lite.errors import ConfigError

# torch 2.7+ cu128 wheels (no sm_60): what Kaggle's P100 met.
CU128 = ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"]
CU124 = ["sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90"]


@pytest.mark.parametrize(("arch", "capability", "runs"), [
    ("sm_75", (7, 5), True),
    ("sm_70", (7, 5), True),  # SASS runs on a newer minor of the same major
    ("sm_75", (7, 0), False),  # ... not on an older one
    ("sm_86", (8, 0), False),
    ("sm_80", (8, 9), True),
    ("sm_90", (10, 0), False),  # nor on another major
    ("sm_100", (10, 3), True),
    ("sm_120", (12, 0), True),
    ("sm_90a", (9, 0), True),  # architecture-specific: that GPU only
    ("sm_90a", (9, 1), False),
    ("compute_90", (12, 0), True),  # PTX: JIT-compiled for any newer GPU
    ("compute_90", (8, 9), False),
    ("sm_60", (6, 0), True),
    ("garbage", (7, 5), False),
])
def test_arch_compatibility_rules(arch, capability, runs):
    assert arch_runs_on(arch, capability) is runs


def test_supported_by_arch_list():
    assert not supported((6, 0), CU128)  # Kaggle P100 under a CUDA 12.8 torch
    assert supported((6, 0), CU124)
    assert supported((7, 5), CU128)  # T4
    assert supported((12, 1), ["sm_120"]) and not supported((12, 1), ["sm_90"])
    assert supported((12, 1), ["sm_90", "compute_90"])  # through the PTX
    assert supported((6, 0), [])  # a build that reports nothing: no grounds to refuse


def _fake_cuda(monkeypatch, name: str, capability: tuple[int, int], arch_list: list[str]) -> None:
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: list(arch_list))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)


def test_unsupported_gpu_stops_with_the_accelerator_to_pick(monkeypatch):
    _fake_cuda(monkeypatch, "Tesla P100-PCIE-16GB", (6, 0), CU128)
    with pytest.raises(UnsupportedGPUError) as err:
        check_gpu(torch.device("cuda", 0))
    message = str(err.value)
    assert isinstance(err.value, ConfigError)  # the CLI reports it as a user error (exit 2)
    for part in ("Tesla P100-PCIE-16GB", "compute capability 6.0", "sm_75", "Kaggle 'GPU T4 x2'", "train.cpu=true"):
        assert part in message, part
    alternatives = message.split("Pick another accelerator:")[1]
    assert "P100" not in alternatives  # never recommends what this torch cannot use
    assert "L4" in alternatives and "A100" in alternatives


def test_supported_gpu_and_cpu_pass(monkeypatch):
    _fake_cuda(monkeypatch, "Tesla T4", (7, 5), CU128)
    check_gpu(torch.device("cuda", 0))  # no error
    check_gpu(torch.device("cpu"))
    _fake_cuda(monkeypatch, "Radeon", (6, 0), CU128)
    monkeypatch.setattr(torch.version, "cuda", None)  # a ROCm build: CUDA capabilities do not apply
    check_gpu(torch.device("cuda", 0))


def test_gpu_check_command(monkeypatch, capsys):
    _fake_cuda(monkeypatch, "Tesla P100-PCIE-16GB", (6, 0), CU128)
    assert gpu_check.main([]) == 2
    assert "Pick another accelerator" in capsys.readouterr().err
    _fake_cuda(monkeypatch, "Tesla T4", (7, 5), CU128)
    assert gpu_check.main([]) == 0
    assert "GPU ok: Tesla T4 (compute capability 7.5)" in capsys.readouterr().out
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main([]) == 0
    assert "CPU" in capsys.readouterr().out


def test_notebook_device_table_does_not_recommend_an_unusable_gpu():
    spec = importlib.util.spec_from_file_location("build_notebook", ROOT / "notebooks" / "build_notebook.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    # no hand-written device table any more: the settings come from `tcl-lite plan` for the GPU found
    assert not [line for line in module.SETTINGS_MD.splitlines() if line.startswith("| ")]
    assert "tcl-lite plan" in module.SETTINGS_MD and "gpu_settings" in module.SETTINGS
    assert "gpu-check" in module.SETTINGS_MD and re.search(r"P100.*compute capability 6\.0", module.SETTINGS_MD,
                                                           re.S)
    assert '"tcl_lite", "gpu-check"' in module.SETTINGS  # the notebook runs the check before training
