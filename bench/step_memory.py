"""Peak memory and time of ONE optimizer step at effective batch B, per memory-saving configuration, and
the planner's prediction of that peak (``tcl-lite plan``'s trace of the same step, fake tensors, CPU device).

    python bench/step_memory.py --quick          # B=32, micro-batch 8, tiny_cnn 16 px: ~1 min on 2 cores
    python bench/step_memory.py                  # B=256 (1,536 encoder images), micro 32, PreAct ResNet-18 32 px
    python bench/step_memory.py --method mlnt    # the same table for MLNT (its own naive = no accumulation)
    python bench/step_memory.py --method dividemix --batch 64 --micro 16   # DivideMix's MixMatch step
    python bench/step_memory.py --method promix --arch resnet18_cifar --batch 32 --micro 8 \
        --configs one-graph,naive,exact,+ckpt,+bf16    # ProMix: the reference's one-graph step vs tcl_lite's

Each configuration runs in a fresh subprocess (no allocator state carried over):

* ``naive``      one forward/backward over the whole batch (gradient_accumulation_steps = 1);
* ``exact``      B/m micro-batches of m through TCL's gradient cache (``tcl.gradient_mode=exact``);
* ``+ckpt``      the same with per-stage activation checkpointing;
* ``+8bit``      the same with bitsandbytes' SGD8bit (smaller optimizer state: it shows in the baseline
                 column, not in the peak above it);
* ``+bf16``      the same in bf16 autocast;
* ``+fp16``      (GPU only, ``--configs ...,+fp16``) ``+8bit`` in fp16 autocast with Accelerate's loss scaler;
* ``one-graph``  (ProMix only, ``--configs one-graph,...``) the reference's arrangement of its step
                 (``bench/promix_one_graph.py``): every forward of both networks in one graph, one backward;
                 naive's settings otherwise. ProMix's step is measured with every sample of the batch clean
                 (the planner's assumption: the mixup and FMix forwards take the whole batch, the largest step).

Memory: peak above the pre-step baseline -- on the CPU the process peak RSS (VmHWM reset with
clear_refs after malloc_trim, as ``bench/mlnt_memory.py``), on a GPU ``torch.cuda.max_memory_allocated``.
The baseline holds the model, the optimizer state (one warm-up step has run) and the gradient buffers
(zeroed, not freed, so every configuration's peak counts activations and temporaries only). The step
is forward + backward + ``optimizer.step``. Time: median of ``--steps`` measured steps. ``allocated``: the
peak of the step's tensor allocations (on the CPU from the profiler's allocation events, one more step
after the timed ones; on a GPU the same figure as the peak): what the prediction is, without the rest
of the process's memory (allocator and heap overheads, the autograd graph's own objects) that RSS holds.

Predicted: the same step traced by the planner (``tcl_lite.plan.runs.RunTracer``) under fake tensors on
the CPU device, in this (parent) process, gradients kept between steps as here, with the CPU
convolutions' internal buffers estimated; its peak above what was alive before the step.

Agreement: the warm-up step starts from the same weights, inputs, mixup lambda and permutation in every
configuration, so its loss and gradient norm are compared with naive's. The model uses
``model.norm=group`` by default: with BatchNorm each micro-batch normalises by its own statistics, so
accumulation would not reproduce the single-batch gradient even in exact mode (``--norm batch`` shows
that difference).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from common import OUT, ROOT, markdown_table, print_header, reset_cpu_peak, status_kib

CONFIGS = ("naive", "exact", "+ckpt", "+8bit", "+bf16")
# fp16 needs CUDA: not in the default list; ``+fp16`` is ``+8bit`` in fp16 autocast (an alternative to +bf16).
GPU_CONFIGS = ("+fp16",)


ONE_GRAPH = "one-graph"  # ProMix's reference step (bench/promix_one_graph.py), at naive's settings


def _settings(name: str) -> dict[str, Any]:
    """Cumulative settings: each configuration adds one saving to the one before it."""
    if name == ONE_GRAPH:
        return _settings("naive")
    if name in GPU_CONFIGS:
        return {**_settings("+bf16"), "precision": name.removeprefix("+")}
    order = CONFIGS.index(name)
    return {"accumulate": order >= 1, "checkpointing": order >= 2, "optim": "sgd8bit" if order >= 3 else "sgd",
            "precision": "bf16" if order >= 4 else "no"}


def step_overrides(args: argparse.Namespace, config: str) -> list[str]:
    """The config overrides of one configuration (``args``: this script's options)."""
    import torch

    s = _settings(config)
    cuda = torch.cuda.is_available()
    micro_batches = args.batch // args.micro if s["accumulate"] else 1
    return [
        f"method={args.method}", f"model.arch={args.arch}", f"model.norm={args.norm}", "model.dropout=0",
        f"model.width={args.width}", f"data.image_size={args.image_size}", f"optim.name={s['optim']}",
        f"train.batch_size={args.batch}", f"train.gradient_accumulation_steps={micro_batches}",
        f"train.activation_checkpointing={str(s['checkpointing']).lower()}",
        f'train.mixed_precision="{s["precision"]}"', f"train.cpu={str(not cuda).lower()}", "tcl.gradient_mode=exact",
        *(["model.head=linear"] if args.method == "promix" else [])]  # ProMix's reference heads


def bench_meta(cfg: Any, num_classes: int) -> Any:
    """The data set's shape for one bench step: ``num_classes`` classes, enough samples for every loader."""
    from tcl_lite.plan.dataset_meta import DatasetMeta

    n = max(4 * cfg.train.batch_size, 1024)
    return DatasetMeta("synthetic", n, 0, 0, num_classes, 3, cfg.data.image_size, {})


def bench_kind(method_cls: Any, cfg: Any) -> Any:
    """The step the bench measures: the method's last kind of epoch (past the warm-ups: TCL's corrected
    step, DivideMix's MixMatch, MLNT's meta step), its first phase."""
    return method_cls.plan_epochs(cfg)[-1]


def bench_batch(phase: Any, num_classes: int, device: Any) -> Any:
    """A batch of ``phase``'s shapes (``tcl_lite.plan.runs.first_batch``) with normal images, labels over the
    classes and distinct indices, on ``device``: a loss worth comparing between configurations."""
    import torch

    from tcl_lite.plan.runs import first_batch

    g = torch.Generator().manual_seed(1)

    def fill(obj: Any) -> Any:
        if isinstance(obj, dict) and "index" in obj:
            n = len(obj["index"])
            return {**{k: fill(v) for k, v in obj.items()}, "index": torch.arange(n, device=device),
                    "label": torch.randint(0, num_classes, (n,), generator=g).to(device)}
        if isinstance(obj, dict):
            return {k: fill(v) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return [fill(v) for v in obj]
        return torch.randn(obj.shape, generator=g).to(device) if obj.is_floating_point() else obj.to(device)

    parts = {name: fill(first_batch(spec)) for name, spec in phase.loaders.items()}
    return parts[""] if list(parts) == [""] else parts


def build_step(cfg: Any, num_classes: int, one_graph: bool = False) -> SimpleNamespace:
    """Networks, optimizers, method and one fixed batch as ``cfg`` says, on Accelerate's device, built as
    the engine builds them (``methods/build.py``); the batch has the shapes of the method's first phase
    in the bench's kind of epoch (``bench_kind``), its images drawn from a seeded normal distribution.

    Returns ``acc, model`` (the first network), ``models, optimizer`` (the first network's),
    ``optimizers, method, micro_batches, kind, phase`` and ``step()`` (forward + backward of the whole batch,
    no optimizer step). A fresh Accelerator each time: in-process callers (``gpu_check.py``, tests)
    build several with different precisions. ``one_graph``: ProMix's step as its reference arranges it.
    """
    import torch
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    from tcl_lite.methods import get_method
    from tcl_lite.methods.base import StepInfo, TrainContext
    from tcl_lite.methods.build import build_networks, build_optimizers
    from tcl_lite.plan.synthetic import synthetic_data

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    acc = Accelerator(cpu=cfg.train.cpu, mixed_precision=cfg.train.mixed_precision)
    torch.manual_seed(0)
    method_cls = get_method(cfg.method)
    meta = bench_meta(cfg, num_classes)
    networks = build_networks(cfg, method_cls, meta)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # bitsandbytes on CPU may warn about its build
        optimizers = build_optimizers(cfg, networks, 1e-3)
    prepared = acc.prepare(*networks.values(), *optimizers.values())
    models, optimizers = dict(zip(networks, prepared[:len(networks)])), dict(zip(networks, prepared[len(networks):]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MLNT without a feature checkpoint: the student's initial weights
        method = method_cls(TrainContext(cfg, acc, models, optimizers, synthetic_data(meta), OUT / "step_memory"))
    kind = bench_kind(method_cls, cfg)
    method.prepare_plan(kind.epoch)
    phase = method.epoch_plan(kind.epoch)[0]
    batch = bench_batch(phase, num_classes, acc.device)
    info = StepInfo(kind.epoch, 0, kind.global_step, 10**6, phase.name, 0, 10**6, phase.role, phase.info)

    def step() -> dict[str, Any]:
        torch.manual_seed(2)  # the same mixup lambda and permutation (and MLNT synthetic labels) everywhere
        for net in models.values():
            net.train()
        if one_graph:
            from promix_one_graph import one_graph_step  # bench/, beside this script

            return one_graph_step(method, batch, info)
        return method.training_step(batch, info)  # split into train.gradient_accumulation_steps by the method

    names = phase.optimizers or tuple(optimizers)
    return SimpleNamespace(acc=acc, model=models[names[0]], models=models, optimizer=optimizers[names[0]],
                           optimizers={n: optimizers[n] for n in names}, method=method,
                           micro_batches=cfg.train.gradient_accumulation_steps, kind=kind, phase=phase, step=step)


def predicted_step(cfg: Any, num_classes: int, cpu_workspace: bool = True) -> dict[str, Any]:
    """The planner's prediction of ``measure_step``'s peak: the same step traced under fake tensors on the
    CPU device, gradients kept between steps as here (``tcl_lite.plan``). ``cpu_workspace``: with the CPU
    convolutions' own buffers (a prediction of a CPU run; for a GPU's, False)."""
    from tcl_lite.methods import get_method
    from tcl_lite.plan.runs import RunTracer

    kind = bench_kind(get_method(cfg.method), cfg)
    run = RunTracer(cfg, bench_meta(cfg, num_classes), keep_grads=True, cpu_workspace=cpu_workspace).run()
    step = next(s for s in run.steps if s.kind == kind.label)
    return {"predicted_mib": step.trace.above_resident / 2**20, "predicted_step": f"{step.kind}: {step.phase}",
            "predicted_gflop": step.trace.flops / 1e9,
            "predicted_categories_mib": {k: v / 2**20 for k, v in step.trace.peak.items() if v}}


def allocated_peak(fn: Any) -> int:
    """Peak bytes of tensor memory ``fn`` allocates on the CPU above what was allocated before it (the
    profiler's allocation events, in time order): the CPU's counterpart of
    ``torch.cuda.max_memory_allocated``, without the process's other memory that its RSS holds."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
                    key=lambda e: e.start_ns())
    current = peak = 0
    for e in events:
        current += e.nbytes()
        peak = max(peak, current)
    return peak


def measure_step(cfg: Any, *, steps: int, num_classes: int, label: str) -> dict[str, Any]:
    """Peak memory above the pre-step baseline and median time of ``steps`` optimizer steps of ``cfg``."""
    import torch

    rig = build_step(cfg, num_classes, one_graph=label == ONE_GRAPH)
    model, optimizer, step = rig.model, rig.optimizer, rig.step
    cuda = rig.acc.device.type == "cuda"
    # Warm-up step from the initial weights: its loss and gradient norm are the agreement check; it
    # also allocates the optimizer state, so the baseline below holds it.
    logs = step()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    grad_norm = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(x.float()) for x in grads])))
    if rig.acc.scaler is not None:  # fp16: the gradients carry the loss scale
        grad_norm /= float(rig.acc.scaler.get_scale())
    loss = float(logs["loss"])
    optimizer.step()
    for _ in range(8):  # fp16: a step skipped for an overflow allocates no state; repeat at the lowered scale
        if not getattr(optimizer, "step_was_skipped", False):
            break
        optimizer.zero_grad(set_to_none=False)
        step()
        optimizer.step()
    optimizer.zero_grad(set_to_none=False)
    states = [t for st in optimizer.state.values() for t in st.values() if torch.is_tensor(t)]
    state_bytes = sum(t.numel() * t.element_size() for t in states)

    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = reset_cpu_peak()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        optimizer.step()
        optimizer.zero_grad(set_to_none=False)
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    peak = (torch.cuda.max_memory_allocated() if cuda else status_kib("VmHWM") * 1024) - base

    def one_step() -> None:
        step()
        optimizer.step()
        optimizer.zero_grad(set_to_none=False)

    allocated = peak if cuda else allocated_peak(one_step)  # after the timed steps: the profiler slows a step
    out = {"config": label, "micro_batches": rig.micro_batches, "peak_mib": peak / 2**20, "base_mib": base / 2**20,
           "allocated_mib": allocated / 2**20,
           "optim_state_mib": state_bytes / 2**20, "seconds": statistics.median(times), "loss": loss,
           "grad_norm": grad_norm, "device": f"cuda:{torch.cuda.get_device_name()}" if cuda else "cpu (peak RSS)",
           "batch": cfg.train.batch_size, "optimizer": type(getattr(optimizer, "optimizer", optimizer)).__name__,
           "state_dtypes": sorted({str(t.dtype).removeprefix("torch.") for t in states})}
    if cuda:  # what a whole GPU must hold: the allocator's reserve at the peak and the CUDA context
        free, total = torch.cuda.mem_get_info()
        out |= {"reserved_peak_mib": torch.cuda.max_memory_reserved() / 2**20,
                "context_mib": (total - free - torch.cuda.memory_reserved()) / 2**20,
                "device_total_mib": total / 2**20}
    return out


def prediction_cells(r: dict[str, Any]) -> list[str]:
    """Predicted MiB and its relative error against the allocated and the peak-RSS measurements."""
    if "predicted_mib" not in r:
        return ["-", "-", "-"]
    p = r["predicted_mib"]
    return [f"{p:.1f}", *(f"{p / r[k] - 1:+.1%}" if r[k] > 0 else "-" for k in ("allocated_mib", "peak_mib"))]


def child(args: argparse.Namespace) -> dict[str, Any]:
    from tcl_lite import load_config  # registers the built-ins first

    cfg = load_config(None, step_overrides(args, args.config))
    return measure_step(cfg, steps=args.steps, num_classes=args.num_classes, label=args.config)


def _run(args: argparse.Namespace, config: str) -> dict[str, Any]:
    passed = [f"--method={args.method}", f"--arch={args.arch}", f"--width={args.width}", f"--norm={args.norm}",
              f"--image-size={args.image_size}", f"--batch={args.batch}", f"--micro={args.micro}",
              f"--steps={args.steps}", f"--num-classes={args.num_classes}", f"--config={config}"]
    env = dict(os.environ, **({"MALLOC_MMAP_THRESHOLD_": str(args.mmap_threshold)} if args.mmap_threshold else {}))
    proc = subprocess.run([sys.executable, __file__, *passed, "--child"], capture_output=True, text=True, cwd=ROOT,
                          env=env)
    if proc.returncode != 0:
        return {"config": config, "error": (proc.stderr.strip().splitlines() or ["killed (out of memory?)"])[-1]}
    measured = json.loads(proc.stdout.strip().splitlines()[-1])
    if args.no_predict or config == ONE_GRAPH:  # the planner traces the method's own step only
        return measured
    from tcl_lite import load_config  # registers the built-ins first

    # In this process, not the measured one: the trace's own bookkeeping would count in its peak.
    return measured | predicted_step(load_config(None, step_overrides(args, config)), args.num_classes)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="B=32, micro 8, tiny_cnn width 16 at 16 px, 3 steps")
    p.add_argument("--method", default="tcl", choices=("tcl", "mlnt", "dividemix", "ce", "promix"))
    p.add_argument("--arch", default="preact_resnet18")
    p.add_argument("--width", type=int, default=64, help="model.width (tiny_cnn only)")
    p.add_argument("--norm", default="group", choices=("group", "batch"),
                   help="group: exact configurations reproduce naive's gradient; batch: per-micro-batch statistics")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--batch", type=int, default=256, help="effective batch B (TCL's encoder sees 6B images)")
    p.add_argument("--micro", type=int, default=32, help="micro-batch size m (B/m micro-batches)")
    p.add_argument("--steps", type=int, default=2, help="measured steps per configuration (median time)")
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--configs", default=",".join(CONFIGS),
                   help=f"subset of {','.join(CONFIGS + GPU_CONFIGS)}; ProMix also {ONE_GRAPH}")
    p.add_argument("--no-predict", action="store_true", help="skip the planner's prediction (tcl_lite.plan)")
    p.add_argument("--mmap-threshold", type=int, default=0, metavar="BYTES",
                   help="glibc's M_MMAP_THRESHOLD in the measured processes (e.g. 65536): freed tensors go back to "
                        "the OS at once, so the peak RSS counts what is alive rather than what glibc's heap keeps")
    p.add_argument("--json", type=Path, help="also write the results here (default bench/out/step_memory_*.json)")
    p.add_argument("--config", help=argparse.SUPPRESS)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return
    if args.quick:
        args.arch, args.width, args.image_size, args.batch, args.micro, args.steps = "tiny_cnn", 16, 16, 32, 8, 3
    configs = args.configs.split(",")
    if ONE_GRAPH in configs and args.method != "promix":
        p.error(f"--configs {ONE_GRAPH} is ProMix's reference step: use it with --method promix")
    print_header(f"step_memory: one {args.method.upper()} step, B={args.batch}, micro-batch {args.micro}, "
                 f"{args.arch} {args.image_size}px, norm={args.norm}" + (" (QUICK)" if args.quick else ""))
    results = []
    for config in configs:
        r = _run(args, config)
        results.append(r)
        print(f"  {config}: " + (r["error"] if "error" in r else f"{r['peak_mib']:.1f} MiB, {r['seconds']:.2f} s"),
              file=sys.stderr, flush=True)
    naive = next((r for r in results if r["config"] == "naive" and "error" not in r), None)
    rows = []
    for r in results:
        if "error" in r:
            rows.append([r["config"], "failed: " + r["error"][:80], *[""] * 11])
            continue
        mem_ratio = f"{r['peak_mib'] / naive['peak_mib']:.3f}" if naive and naive["peak_mib"] > 0 else "-"
        t_ratio = f"{r['seconds'] / naive['seconds']:.2f}" if naive else "-"
        d_loss = f"{abs(r['loss'] - naive['loss']):.1e}" if naive else "-"
        d_gn = f"{abs(r['grad_norm'] - naive['grad_norm']) / naive['grad_norm']:.1e}" if naive else "-"
        rows.append([r["config"], r["micro_batches"], f"{r['base_mib']:.0f} ({r['optim_state_mib']:.1f})",
                     f"{r['peak_mib']:.1f}", f"{r['allocated_mib']:.1f}", *prediction_cells(r), mem_ratio,
                     f"{r['seconds']:.2f}", t_ratio, f"{r['loss']:.6f} ({d_loss})", f"{r['grad_norm']:.6f} ({d_gn})"])
    device = (naive or results[0]).get("device", "?")
    traced = next((r["predicted_step"] for r in results if "predicted_step" in r), "-")
    print(f"device: {device}; configurations are cumulative (each adds one saving to the row above); step: "
          f"{traced}; predicted: the same step traced under fake tensors on the CPU device (tcl_lite.plan)\n")
    print(markdown_table(["config", "micro-batches", "baseline MiB (optim state)", "peak above baseline MiB",
                          "allocated MiB", "predicted MiB", "predicted vs allocated", "predicted vs peak", "/ naive",
                          "step s (median)", "/ naive", "loss (abs diff)", "grad norm (rel diff)"], rows))
    one = next((r for r in results if r["config"] == ONE_GRAPH and "error" not in r), None)
    if one and one["peak_mib"] > 0:  # the reference's step against each of tcl_lite's, side by side
        print("\n" + "; ".join(f"{r['config']} {r['peak_mib'] / one['peak_mib']:.3f} (allocated "
                                f"{r['allocated_mib'] / one['allocated_mib']:.3f})" for r in results
                                if "error" not in r and r is not one) + f" of {ONE_GRAPH}'s peak")
    out = args.json or OUT / f"step_memory_{args.method}_B{args.batch}_{args.arch}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
