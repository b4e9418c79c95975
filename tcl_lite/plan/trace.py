"""Tracing under fake tensors: the memory alive at the peak of a callable, by category
(``torch.distributed._tools.mem_tracker.MemTracker``), and its FLOPs (``torch.utils.flop_counter``'s
formulas, which count matrix products and convolutions, forward and backward).

Fake tensors (``torch._subclasses.fake_tensor.FakeTensorMode``) have shapes, dtypes and devices but
no data, so nothing is computed and nothing is allocated: a trace costs the Python dispatch of its ops,
whatever the batch. The autograd engine needs a real device for a backward, so memory is traced on the
fake CPU device; a trace on the fake ``cuda`` device runs forwards only (``TraceAccelerator(backward=
False)``), which is what the device-placement check needs.

Categories: ``weights`` (parameters and buffers of every network), ``gradients``, ``optimizer state``,
``activations`` (what a forward creates, including recomputation under activation checkpointing),
``gradient cache`` (the buffers ``methods/gradient_cache.py`` keeps between its passes),
``temporaries`` (what a backward creates besides gradients), ``batch`` and ``method state`` (tensors
the method holds between steps, on the device or the host: an upper bound for the device).
"""

from __future__ import annotations

import contextlib
import math
import weakref
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import torch
from accelerate.utils import convert_outputs_to_fp32
from torch import Tensor, nn
from torch._subclasses.fake_tensor import FakeTensor
from torch.distributed._tools.common_utils import get_untyped_storages
from torch.distributed._tools.mem_tracker import MemTracker
from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook
from torch.utils.flop_counter import flop_registry

from tcl_lite.algorithms import gradient_cache

CATEGORIES = ("weights", "gradients", "optimizer state", "activations", "gradient cache", "temporaries", "batch",
              "method state")
PRECISIONS = {"fp16": torch.float16, "bf16": torch.bfloat16}
INITIAL_LOSS_SCALE = 65536.0  # torch.amp.GradScaler's initial scale: what fp16 multiplies the loss by


class _Ref(str, Enum):
    """MemTracker's reference types (same names and values, so its own lookups find them) and ours."""

    PARAM = "Parameter"
    BUFFER = "Buffer"
    GRAD = "Gradient"
    ACT = "Activation"
    TEMP = "Temp"
    OPT = "Optstate"
    OTH = "Other"
    CACHE = "Gradient cache"
    BATCH = "Batch"
    STATE = "Method state"


_CATEGORY = {_Ref.PARAM: "weights", _Ref.BUFFER: "weights", _Ref.GRAD: "gradients", _Ref.OPT: "optimizer state",
             _Ref.ACT: "activations", _Ref.CACHE: "gradient cache", _Ref.TEMP: "temporaries", _Ref.BATCH: "batch",
             _Ref.OTH: "method state", _Ref.STATE: "method state"}


def _plausible(t: Tensor) -> Any:
    """A stand-in for a value read back from a fake tensor (a drawn mixup lambda, a validity check):
    the traced shapes never depend on it."""
    if t.dtype == torch.bool:
        return True
    return 0.5 if t.is_floating_point() else 1


class _ForwardHooks:
    """What MemTracker needs of its ``ModTracker``: global module forward hooks, and whether a backward is
    running. ModTracker also hooks every module's backward, through multi-grad hooks on its inputs and
    outputs; those keep tensors alive that a second-order backward (MLNT's fast step) would free, so
    they would change the very memory being measured. The per-module backward snapshots they feed are
    not used here."""

    def __init__(self) -> None:
        self._pre: Callable | None = None
        self._post: Callable | None = None
        self._handles: list[Any] = []

    @property
    def is_bw(self) -> bool:
        return torch._C._current_graph_task_id() != -1

    def register_user_hooks(self, pre_fw: Callable | None = None, post_fw: Callable | None = None,
                            pre_bw: Callable | None = None, post_bw: Callable | None = None) -> None:
        self._pre, self._post = pre_fw, post_fw

    def clear_user_hooks(self) -> None:
        self._pre = self._post = None

    def __enter__(self) -> _ForwardHooks:
        self._handles = [
            register_module_forward_pre_hook(lambda m, args: self._pre(m, args) if self._pre else None),
            register_module_forward_hook(lambda m, args, out: self._post(m, args, out) if self._post else None)]
        return self

    def __exit__(self, *exc_info: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


class _Tracker(MemTracker):
    """MemTracker with our categories, forward hooks only (``_ForwardHooks``), repeated calls of a
    module in one trace (micro-batches, the gradient cache's replays; MemTracker refuses them because it
    keeps per-module statistics, which are not used here) and plausible values for scalars read back
    to Python."""

    def __init__(self, cpu_workspace: bool = False) -> None:
        super().__init__()
        self._ref_class = _Ref
        self._mod_tracker = _ForwardHooks()
        self.flops = 0
        self.cpu_workspace = cpu_workspace

    def tag(self, ref: _Ref, tensors: Iterable[Tensor]) -> None:
        for t in tensors:
            self._update_and_maybe_create_winfos(t, ref)

    def tracked(self, t: Tensor) -> bool:
        return any(st in self._WINFO for st in get_untyped_storages(t))

    def _track_module_params_and_buffers(self, module: nn.Module, install_grad_hooks: bool = True) -> tuple[int, int]:
        # MemTracker hooks every parameter; a frozen network's (MLNT's teacher) cannot take a hook.
        sizes = super()._track_module_params_and_buffers(module, install_grad_hooks=False)
        for p in module.parameters() if install_grad_hooks else ():
            if p.requires_grad and p not in self._param_to_grad_hook_handles:
                self._param_to_grad_hook_handles[p] = (
                    p.register_hook(self._grad), p.register_post_accumulate_grad_hook(lambda q: self._grad(q.grad)))
        return sizes

    def _grad(self, grad: Tensor) -> None:
        self._update_and_maybe_create_winfos(grad, _Ref.GRAD)

    # Per-module snapshots are not used here: the hooks keep only what the global peak needs (a
    # module's parameters tracked at its first call; the activation-checkpointing region in backward,
    # whose recomputed tensors are activations), which makes a trace several times faster.
    def _pre_fw_hook(self, module: nn.Module, inputs: Any) -> None:
        if module not in self.memory_tracking:
            self._track_module_params_and_buffers(module)
            self.memory_tracking[module] = True
        elif self._mod_tracker.is_bw and self._ac_mod is None:
            self._ac_mod, self._in_ac = weakref.ref(module), True

    def _post_fw_hook(self, module: nn.Module, inputs: Any, outputs: Any) -> None:
        if self._mod_tracker.is_bw and self._ac_mod is not None and self._ac_mod() is module:
            self._ac_mod, self._in_ac = None, False

    def _pre_bw_hook(self, module: nn.Module, args: Any) -> None:
        pass

    def _post_bw_hook(self, module: nn.Module, args: Any) -> None:
        pass

    def _update_peak_stats(self, peak_state: Any) -> None:
        for dev, snap in self._curr_mem_snap.items():
            if self._peak_mem.get(dev, 0) < snap["Total"]:
                self._peak_mem[dev], self._peak_mem_snap[dev] = snap["Total"], dict(snap)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204 - torch's signature
        if func is torch.ops.aten._local_scalar_dense.default and isinstance(args[0], FakeTensor):
            return _plausible(args[0])
        out = super().__torch_dispatch__(func, types, args, kwargs)
        # FLOPs by torch.utils.flop_counter's formulas, counted here: FlopCounterMode's own module
        # tracker keeps activations alive that activation checkpointing frees, which would skew the memory.
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            self.flops += formula(*args, **(kwargs or {}), out_val=out)
        if self.cpu_workspace and func in _CPU_CONV_WORKSPACE and args[0].device.type == "cpu":
            self._transient(args[0].device, _CPU_CONV_WORKSPACE[func](args, out))
        return out

    def _transient(self, device: torch.device, size: int) -> None:
        """``size`` bytes alive only inside the op just run: counted towards the peak, then released."""
        snap = self._curr_mem_snap.setdefault(device, {**dict.fromkeys(_Ref, 0), "Total": 0})
        snap[_Ref.TEMP] += size
        snap["Total"] += size
        self._update_peak_stats(None)
        snap[_Ref.TEMP] -= size
        snap["Total"] -= size


def _nbytes(t: Any) -> int:
    return t.numel() * t.element_size() if isinstance(t, Tensor) else 0


# Buffers oneDNN allocates inside a CPU convolution, which no tensor shows (measured on this CPU with the
# profiler's allocation events: the forward reorders its input or its output into a blocked layout; the
# backward its input and the larger of input and output gradient). A CPU-only estimate, for traces that
# predict a CPU run (``bench/step_memory.py``, ``auto`` on the CPU); a GPU's cuDNN workspace is a
# constant of ``gpus.py`` instead.
_CPU_CONV_WORKSPACE: dict[Any, Callable[[tuple, Any], int]] = {
    torch.ops.aten.convolution.default: lambda args, out: max(_nbytes(args[0]), _nbytes(out)),
    torch.ops.aten.convolution_backward.default: lambda args, out: _nbytes(args[1]) + max(_nbytes(args[0]),
                                                                                           _nbytes(args[1])),
}


@dataclass
class Trace:
    """One traced callable: bytes by category at its peak, the bytes alive when it started (weights,
    optimizer state, batch, method state; gradients if kept) and its FLOPs."""

    label: str
    peak: dict[str, int] = field(default_factory=dict)
    resident: int = 0
    flops: int = 0

    @property
    def peak_bytes(self) -> int:
        return sum(self.peak.values())

    @property
    def above_resident(self) -> int:
        return self.peak_bytes - self.resident


def tensors_in(obj: Any, depth: int = 3) -> Iterator[Tensor]:
    """Every tensor in ``obj`` (nested dicts, lists, tuples; ``depth`` levels)."""
    if isinstance(obj, Tensor):
        yield obj
    elif depth > 0 and isinstance(obj, dict):
        for v in obj.values():
            yield from tensors_in(v, depth - 1)
    elif depth > 0 and isinstance(obj, (list, tuple)):
        for v in obj:
            yield from tensors_in(v, depth - 1)


def trace(label: str, fn: Callable[[], Any], *, modules: Iterable[nn.Module], optimizers: Iterable[Any],
          batch: Any, state: Iterable[Tensor] = (), cpu_workspace: bool = False) -> Trace:
    """Run ``fn`` (on fake tensors) under the memory tracker and the FLOP counter. ``cpu_workspace``: count
    the CPU convolutions' internal buffers (a trace that predicts a CPU run)."""
    tracker = _Tracker(cpu_workspace)
    tracker.track_external(*modules, *optimizers)
    tracker.tag(_Ref.BATCH, tensors_in(batch))
    tracker.tag(_Ref.STATE, [t for t in state if not tracker.tracked(t)])
    resident = sum(snap["Total"] for snap in tracker.get_tracker_snapshot().values())

    def observe(t: Tensor) -> None:
        tracker.tag(_Ref.CACHE, [t])

    gradient_cache.BUFFER_OBSERVERS.append(observe)
    try:
        with tracker:
            fn()
    finally:
        gradient_cache.BUFFER_OBSERVERS.remove(observe)
    peak = dict.fromkeys(CATEGORIES, 0)
    for snap in tracker.get_tracker_snapshot("peak").values():
        for ref, size in snap.items():
            if ref != "Total":
                peak[_CATEGORY[_Ref(ref)]] += size
    return Trace(label, peak, resident, tracker.flops)


# ---------------------------------------------------------------------------------------------
# What a method uses of Accelerate, on a fake device


class _LossScale:
    """What MLNT reads of Accelerate's GradScaler under fp16: its current scale."""

    def get_scale(self) -> float:
        return INITIAL_LOSS_SCALE


class TraceAccelerator:
    """The part of Accelerate's ``Accelerator`` a method uses, for one process on a traced device.

    Accelerate's own cannot stand in: it is one per process (the engine's, when the engine asks for a
    plan) and refuses fp16 without a GPU, where a trace runs a GPU's fp16 autocast on the fake CPU.
    ``backward=False``: backwards (and ``TrainContext.grad``) are skipped, for a trace on a fake GPU.
    """

    num_processes = 1
    process_index = local_process_index = 0
    is_main_process = is_local_main_process = True

    def __init__(self, device: torch.device | str, mixed_precision: str = "no", backward: bool = True) -> None:
        self.device = torch.device(device)
        self.mixed_precision = mixed_precision
        self.run_backward = backward
        self.scaler = _LossScale() if mixed_precision == "fp16" else None

    def autocast(self) -> contextlib.AbstractContextManager:
        dtype = PRECISIONS.get(self.mixed_precision)
        if dtype is None or (self.device.type == "cuda" and not torch.cuda.is_available()):
            return contextlib.nullcontext()  # a fake GPU's autocast is off without CUDA: dtypes then fp32
        return torch.autocast(self.device.type, dtype=dtype)

    def prepare_model(self, model: nn.Module) -> nn.Module:
        """As ``Accelerator.prepare`` under mixed precision: the forward autocast, its outputs in fp32."""
        if self.mixed_precision in PRECISIONS:
            forward = model.forward

            def autocast_forward(*args: Any, **kwargs: Any) -> Any:
                with self.autocast():
                    return forward(*args, **kwargs)

            model.forward = convert_outputs_to_fp32(autocast_forward)
        return model

    def backward(self, loss: Tensor, **kwargs: Any) -> None:
        if self.run_backward:
            (loss * self.scaler.get_scale() if self.scaler is not None else loss).backward(**kwargs)

    def clip_grad_norm_(self, parameters: Iterable[Tensor], max_norm: float) -> Tensor:
        return nn.utils.clip_grad_norm_(list(parameters), max_norm)

    def unwrap_model(self, model: nn.Module, **_: Any) -> nn.Module:
        return model

    def no_sync(self, model: nn.Module) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()

    def gather_for_metrics(self, data: Any) -> Any:
        return data

    def reduce(self, tensor: Any, reduction: str = "mean") -> Any:
        return tensor

    def prepare_data_loader(self, loader: Any) -> Any:
        return loader

    def print(self, *args: Any) -> None:
        pass


def skipped_grad(outputs: Tensor, inputs: Any, **kwargs: Any) -> tuple[Tensor, ...]:
    """``TrainContext.grad`` when the trace runs no backward: gradients of the inputs' shapes, zeros."""
    return tuple(torch.zeros_like(x) for x in ([inputs] if isinstance(inputs, Tensor) else inputs))


@contextlib.contextmanager
def fake_module_moves() -> Iterator[None]:
    """``Module.to(device)`` for networks of fake tensors (a method moving a copy it built, e.g. MLNT's
    teacher): torch moves parameters by swapping them in place, which fake tensors do not allow, so
    here each parameter and buffer is replaced by its moved copy. Other modules move as usual."""
    original = nn.Module.to

    def to(module: nn.Module, *args: Any, **kwargs: Any) -> nn.Module:
        device, dtype, *_ = torch._C._nn._parse_to(*args, **kwargs)
        tensors = [*module.parameters(), *module.buffers()]
        if device is None or dtype is not None or not tensors or not all(isinstance(t, FakeTensor) for t in tensors):
            return original(module, *args, **kwargs)
        for sub in module.modules():
            for key, p in sub._parameters.items():
                if p is not None and p.device != device:
                    sub._parameters[key] = nn.Parameter(p.detach().to(device), p.requires_grad)
            for key, b in sub._buffers.items():
                if b is not None and b.device != device:
                    sub._buffers[key] = b.to(device)
        return module

    nn.Module.to = to
    try:
        yield
    finally:
        nn.Module.to = original


def mib(n: float) -> float:
    return n / 2**20


def gib_text(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 or n == 0 else f"{math.ceil(n / 2**20)} MiB"
