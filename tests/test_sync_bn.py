"""``model.sync_bn`` in one process: which networks are converted, and that the converted BatchNorm is plain
BatchNorm without other processes (the two-process statistics and gradients: tests/test_tcl_distributed.py)."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch
from conftest import TINY
from torch import nn

from tcl_lite.config import load_config
from tcl_lite.methods import METHODS
from tcl_lite.methods.build import build_networks
from tcl_lite.models.sync_norm import AllReduceBatchNorm, convert_sync_batchnorm

SHAPE = SimpleNamespace(num_classes=10, channels=3, image_size=8)


def norms(method: str, setting: str, processes: int, device_type: str = "cpu") -> set[str]:
    cfg = load_config(None, [*TINY, f"method={method}", f"model.sync_bn={setting}"])
    nets = build_networks(cfg, METHODS[method], SHAPE, processes, device_type)
    return {type(m).__name__ for net in nets.values() for m in net.modules() if "Norm" in type(m).__name__}


@pytest.mark.parametrize(("method", "setting", "processes", "device", "expected"), [
    ("tcl", "auto", 2, "cpu", {"AllReduceBatchNorm"}),  # the TCL reference synchronises
    ("tcl", "auto", 2, "cuda", {"SyncBatchNorm"}),  # PyTorch's own where its kernels run
    ("tcl", "off", 2, "cpu", {"BatchNorm1d", "BatchNorm2d"}),  # the per-process behaviour, by name
    ("ce", "auto", 2, "cpu", {"BatchNorm1d", "BatchNorm2d"}),  # no reference that synchronises
    ("ce", "on", 2, "cpu", {"AllReduceBatchNorm"}),
    ("tcl", "on", 1, "cpu", {"BatchNorm1d", "BatchNorm2d"}),  # one process: nothing to synchronise
])
def test_which_networks_are_synchronised(method, setting, processes, device, expected):
    assert norms(method, setting, processes, device) == expected


def test_without_other_processes_the_converted_norm_is_batchnorm():
    torch.manual_seed(0)
    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(144, 6), nn.BatchNorm1d(6))
    synced = convert_sync_batchnorm(copy.deepcopy(plain), "cpu")
    assert sum(isinstance(m, AllReduceBatchNorm) for m in synced.modules()) == 2
    assert synced.state_dict().keys() == plain.state_dict().keys()  # checkpoints unchanged
    x = torch.randn(8, 3, 8, 8)
    assert torch.equal(synced(x), plain(x))
    for a, b in zip(synced.state_dict().values(), plain.state_dict().values()):
        assert torch.equal(a, b)
