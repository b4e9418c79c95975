"""The measurements behind ``bench/gpu_check.py``: one function per claim, each returning plain figures.

Every function runs on CUDA when it is there and on the CPU otherwise (where the claim means something
on a CPU: bf16 autocast, bitsandbytes' CPU optimizers, the data loader, a kill-and-resume run), so the
tests exercise the same code the GPU runs. Verdicts (pass / fail) are made in ``gpu_check.py``; the
pure arithmetic (``fit_verdict``, ``starvation_verdict``) lives here so that it is tested from given
numbers.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from common import ROOT, read_metrics
from step_memory import build_step, step_overrides

# What a T4 offers (nvidia-smi: 15360 MiB); the CUDA context is counted separately, as measured.
T4_BUDGET_MIB = 15 * 1024.0
TIGHT_FRACTION = 0.05  # less headroom than this share of the budget: "tight"


# -- gradient cache exactness ---------------------------------------------------------------------------

def rel_diff(a: Sequence[Any], b: Sequence[Any]) -> float:
    """||a - b|| / ||b|| over lists of tensors taken as one vector (b: the reference)."""
    num = sum(float(((x.float() - y.float()) ** 2).sum()) for x, y in zip(a, b, strict=True))
    den = sum(float((y.float() ** 2).sum()) for y in b)
    return math.sqrt(num) / max(math.sqrt(den), 1e-30)


def one_step_gradient(overrides: list[str], num_classes: int = 10) -> dict[str, Any]:
    """Loss and (unscaled) gradient of one TCL step built by ``step_memory.build_step``.

    fp16 goes through Accelerate's GradScaler as in the trainer: the backward is scaled, the gradient
    divided by the scale here. A non-finite gradient is what makes the scaler skip a step and halve
    its scale; the step is then retried at the halved scale, as the trainer's next steps would be.
    """
    import torch

    from tcl_lite import load_config  # registers the built-ins first

    rig = build_step(load_config(None, overrides), num_classes)
    params = list(rig.model.parameters())
    for _ in range(16):
        logs = rig.step()
        scale = float(rig.acc.scaler.get_scale()) if rig.acc.scaler is not None else 1.0
        grads = [(p.grad.detach().float() / scale).cpu() if p.grad is not None else torch.zeros(p.shape)
                 for p in params]
        finite = all(bool(torch.isfinite(g).all()) for g in grads)
        if finite or rig.acc.scaler is None:
            break
        rig.optimizer.zero_grad(set_to_none=True)
        rig.acc.scaler.update(scale / 2)
    return {"loss": float(logs["loss"]), "grads": grads, "scale": scale, "finite": finite,
            "micro_batches": rig.micro_batches}


def cache_exactness(precision: str, *, arch: str, image_size: int, batch: int, micro: int, width: int = 64,
                    num_classes: int = 10, cpu: bool = False) -> dict[str, Any]:
    """TCL's loss and gradient from ``batch // micro`` micro-batches through the gradient cache against
    the single batch, both under ``precision`` autocast (GroupNorm model, so the two must agree up to
    rounding). The single batch's own difference from fp32 is the precision's rounding scale."""
    shape = SimpleNamespace(method="tcl", arch=arch, norm="group", width=width, image_size=image_size,
                            batch=batch, micro=micro)
    forced = [f"train.cpu={str(cpu).lower()}"]

    def run(config: str, p: str) -> dict[str, Any]:
        return one_step_gradient(step_overrides(shape, config) + [f'train.mixed_precision="{p}"', *forced],
                                 num_classes)

    fp32, single, cached = run("naive", "no"), run("naive", precision), run("exact", precision)
    return {
        "precision": precision, "micro_batches": cached["micro_batches"], "batch": batch,
        "finite": single["finite"] and cached["finite"], "loss_scale": cached["scale"],
        "loss_rel": abs(cached["loss"] - single["loss"]) / max(abs(single["loss"]), 1e-30),
        "grad_rel": rel_diff(cached["grads"], single["grads"]),
        "rounding_loss_rel": abs(single["loss"] - fp32["loss"]) / max(abs(fp32["loss"]), 1e-30),
        "rounding_grad_rel": rel_diff(single["grads"], fp32["grads"]),
        "cached_vs_fp32_grad_rel": rel_diff(cached["grads"], fp32["grads"]),
    }


def exactness_ok(r: dict[str, Any]) -> bool:
    """The cache adds no more than the precision's own rounding: twice it, plus a small floor."""
    return (r["finite"] and r["grad_rel"] <= 2 * r["rounding_grad_rel"] + 1e-3
            and r["loss_rel"] <= 2 * r["rounding_loss_rel"] + 1e-4)


def cached_gradient_fp16_cast(*, arch: str, image_size: int, batch: int, micro: int, width: int = 64,
                              num_classes: int = 10) -> dict[str, Any]:
    """A CPU estimate of the one fp16-specific step of the gradient cache: under fp16 autocast the gathered
    outputs are fp16 leaves, so the loss's gradient w.r.t. them (step 2) is rounded to fp16 *unscaled* (the
    GradScaler scales only the surrogate's backward). Captures that gradient in an fp32 TCL step and
    returns what the rounding does to it: relative error, share of subnormal and of flushed entries."""
    import torch

    import tcl_lite.methods.tcl.method as tcl_module
    from tcl_lite import load_config  # registers the built-ins first

    shape = SimpleNamespace(method="tcl", arch=arch, norm="group", width=width, image_size=image_size, batch=batch,
                            micro=micro)
    rig = build_step(load_config(None, [*step_overrides(shape, "exact"), "train.cpu=true"]), num_classes)
    captured: list[Any] = []
    original = tcl_module.cached_backward

    def capturing(micro_inputs: Any, forward: Any, loss_fn: Any, **kw: Any) -> Any:
        def loss_with_hooks(leaves: tuple[Any, ...]) -> Any:
            for leaf in leaves:
                leaf.register_hook(lambda g: captured.append(g.detach().clone()))
            return loss_fn(leaves)

        return original(micro_inputs, forward, loss_with_hooks, **kw)

    tcl_module.cached_backward = capturing
    try:
        rig.step()
    finally:
        tcl_module.cached_backward = original
    g = torch.cat([c.flatten() for c in captured])
    nonzero = g[g != 0]
    half = nonzero.half()
    return {"batch": batch, "entries": int(g.numel()), "nonzero": int(nonzero.numel()),
            "cast_rel": float((half.float() - nonzero).norm() / nonzero.norm()),
            "subnormal_share": float((nonzero.abs() < torch.finfo(torch.float16).tiny).float().mean()),
            "flushed_share": float((half == 0).float().mean())}


# -- bitsandbytes 8-bit optimizers ----------------------------------------------------------------------

def _digits_tensors(device: Any) -> tuple[Any, Any]:
    import torch
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return (torch.tensor(x / 16.0, dtype=torch.float32, device=device),
            torch.tensor(y, dtype=torch.long, device=device))


def _train_digits(optim_name: str, device: Any, steps: int) -> dict[str, Any]:
    """An MLP on the digits, ``steps`` full-batch steps of the optimizer the trainer would build."""
    import torch
    import torch.nn.functional as F

    from tcl_lite import load_config  # registers the built-ins first
    from tcl_lite.engine.optim import build_optimizer

    x, y = _digits_tensors(device)
    torch.manual_seed(0)
    # 64 -> 512 -> 10: the first weight (32k values) is above bitsandbytes' 4096-value threshold for 8-bit state.
    model = torch.nn.Sequential(torch.nn.Linear(64, 512), torch.nn.ReLU(), torch.nn.Linear(512, 10)).to(device)
    lr = 0.05 if optim_name.startswith("sgd") else 3e-3
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        optimizer = build_optimizer(load_config(None, [f"optim.name={optim_name}"]).optim, model, lr)
    losses = []
    for _ in range(steps):
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    states = [t for st in optimizer.state.values() for t in st.values() if torch.is_tensor(t)]
    big = model[0].weight
    return {"optimizer": f"{type(optimizer).__module__}.{type(optimizer).__name__}", "losses": losses,
            "state_bytes": sum(t.numel() * t.element_size() for t in states),
            "big_param_state_dtypes": sorted({str(t.dtype).removeprefix("torch.")
                                              for t in optimizer.state[big].values()
                                              if torch.is_tensor(t) and t.numel() > 1}),
            "warnings": [str(w.message)[:200] for w in caught]}


def optimizer_8bit(name: str, device: Any, steps: int = 30) -> dict[str, Any]:
    """bitsandbytes' 8-bit ``name`` (sgd8bit / adamw8bit) against its 32-bit form on the same problem."""
    q, full = _train_digits(name, device, steps), _train_digits(name.removesuffix("8bit"), device, steps)
    return {"name": name, "device": str(device), "optimizer": q["optimizer"],
            "is_bitsandbytes": q["optimizer"].startswith("bitsandbytes"),
            "state_dtypes": q["big_param_state_dtypes"], "loss_first": q["losses"][0], "loss_last": q["losses"][-1],
            "loss_last_32bit": full["losses"][-1], "state_mib": q["state_bytes"] / 2**20,
            "state_mib_32bit": full["state_bytes"] / 2**20, "warnings": q["warnings"]}


def optimizer_8bit_ok(r: dict[str, Any]) -> bool:
    return (r["is_bitsandbytes"] and "uint8" in r["state_dtypes"] and r["loss_last"] < 0.5 * r["loss_first"]
            and r["state_mib"] < 0.35 * r["state_mib_32bit"])


# -- will it fit on a T4 ----------------------------------------------------------------------------------

def fit_verdict(*, peak_allocated_mib: float, reserved_peak_mib: float, context_mib: float, extras_mib: float = 0.0,
                budget_mib: float = T4_BUDGET_MIB) -> dict[str, Any]:
    """Whether a measured step fits a GPU of ``budget_mib``: the CUDA context, plus what the caching
    allocator held at the step's peak (its reserve, at least the allocated peak), plus what the trainer
    keeps besides the step (``extras_mib``: e.g. TCL's detection bank). Pure arithmetic."""
    required = context_mib + max(reserved_peak_mib, peak_allocated_mib) + extras_mib
    headroom = budget_mib - required
    verdict = "does not fit" if headroom < 0 else "tight" if headroom < TIGHT_FRACTION * budget_mib else "fits"
    return {"required_mib": required, "budget_mib": budget_mib, "headroom_mib": headroom, "verdict": verdict,
            "fits": headroom >= 0}


def detection_bank_mib(n_train: int, proj_dim: int, num_classes: int) -> float:
    """TCL's per-epoch detection pass keeps N projections, N posteriors and a few N-vectors (fp32)."""
    return n_train * (proj_dim + num_classes + 4) * 4 / 2**20


# -- data loader throughput -----------------------------------------------------------------------------

def loader_throughput(dataset: Any, *, batch_size: int, num_workers: int, batches: int, pin_memory: bool = False,
                      device: Any = None) -> dict[str, Any]:
    """Samples/s that reach the training step with all their views, as the trainer feeds it: the DataLoader,
    then (``device`` given) the batch moved there and ``dataset.finish_batch`` (``data.augment_on=device``
    makes the views of the whole batch there; identity otherwise). After the first batch: worker start-up
    excluded."""
    import torch

    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True,
                                         num_workers=num_workers, pin_memory=pin_memory,
                                         generator=torch.Generator().manual_seed(0))

    def finish(batch: dict[str, Any]) -> dict[str, Any]:
        if device is None:
            return batch
        moved = {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
        return dataset.finish_batch(moved)

    it = iter(loader)
    first = finish(next(it))
    views = len(first["image"]) if isinstance(first["image"], list) else 1
    t0, n = time.perf_counter(), 0
    for _ in range(batches):
        try:
            batch = finish(next(it))
        except StopIteration:
            break
        n += len(batch["index"])
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    return {"samples": n, "seconds": seconds, "samples_per_s": n / seconds if seconds > 0 else float("nan"),
            "views": views, "image_shape": list((first["image"][0] if views > 1 else first["image"]).shape[1:]),
            "workers": num_workers, "cores": len(os.sched_getaffinity(0))}


def pin_to_cores(cores: int) -> int:
    """Restrict this process (and the loader workers it forks) to ``cores`` CPUs: a 2-vCPU VM's share."""
    available = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, available[:cores])
    return min(cores, len(available))


def starvation_verdict(loader_samples_per_s: float, step_samples_per_s: float, *, in_memory: bool = False,
                       on_device: bool = False) -> dict[str, Any]:
    """Whether the loader keeps up with the training step; the GPU's busy fraction it allows; the fix. Pure."""
    bound = min(1.0, loader_samples_per_s / step_samples_per_s) if step_samples_per_s > 0 else float("nan")
    starved = loader_samples_per_s < step_samples_per_s
    if not starved:
        fix = "the loader keeps up: no change needed"
    elif not on_device:
        fix = ("the per-sample CPU augmentations are the bottleneck: data.augment_on=device (the default on a "
               "GPU) makes the views for the whole batch on the GPU" + ("" if in_memory else ", and "
               "data.cache_decoded=on decodes every JPEG once instead of every epoch"))
    elif not in_memory:
        fix = "JPEG decoding is the bottleneck: data.cache_decoded=on (decode once into memory)"
    else:
        fix = ("even decoded in memory with the views made on the GPU, 2 vCPUs cannot collate fast enough: a "
               "larger batch per step or a VM with more vCPUs")
    return {"starved": starved, "gpu_busy_bound": bound, "fix": fix}


# -- a real run, killed and resumed ---------------------------------------------------------------------

def checkpoint_steps(run_dir: Path) -> list[int]:
    """Global steps of the complete rolling checkpoints (written as .tmp-* and renamed when done)."""
    return sorted(int(p.name.removeprefix("step_")) for p in (Path(run_dir) / "checkpoints").glob("step_*"))


def kill_and_resume(train_args: Sequence[str], run_dir: Path, *, kill_at_step: int, timeout: float,
                    env: dict[str, str] | None = None) -> dict[str, Any]:
    """``train.py ARGS --output-dir RUN --resume``, SIGKILLed (no chance to save) once a checkpoint of
    global step >= ``kill_at_step`` exists, then the same command again, to the end."""
    run_dir = Path(run_dir)
    cmd = [sys.executable, str(ROOT / "train.py"), *train_args, "--output-dir", str(run_dir), "--resume"]
    run_dir.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout
    with open(run_dir / "first_session.log", "w") as log:
        first = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
        killed_at = None
        while first.poll() is None and time.monotonic() < deadline:
            steps = checkpoint_steps(run_dir)
            if steps and steps[-1] >= kill_at_step:
                first.send_signal(signal.SIGKILL)
                killed_at = steps[-1]
                break
            time.sleep(0.05)
        if first.poll() is None and killed_at is None:  # out of time before a checkpoint
            first.kill()
        first.wait()
    epochs_before = [r["epoch"] for r in read_metrics(run_dir)]
    second = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env,
                            timeout=max(1.0, deadline - time.monotonic()))
    (run_dir / "second_session.log").write_text(second.stdout + "\n" + second.stderr)
    resumed = [ln for ln in (second.stdout + second.stderr).splitlines() if "resumed from" in ln]
    metrics = read_metrics(run_dir)
    return {"killed": first.returncode == -signal.SIGKILL, "killed_at_step": killed_at,
            "epochs_before_kill": epochs_before, "second_rc": second.returncode,
            "resumed_line": resumed[0].strip() if resumed else "", "epochs": [r["epoch"] for r in metrics],
            "steps": [r["step"] for r in metrics], "last": metrics[-1] if metrics else {},
            "stderr_tail": second.stderr[-1500:] if second.returncode else ""}


def resume_ok(r: dict[str, Any], epochs: int) -> bool:
    """Killed mid-run, resumed from the newest checkpoint (not from scratch), every epoch once, to the end."""
    global_step = f"global step {r['killed_at_step']})"
    return (r["killed"] and r["second_rc"] == 0 and global_step in r["resumed_line"]
            and r["epochs"] == list(range(1, epochs + 1)) and r["steps"] == sorted(set(r["steps"])))
