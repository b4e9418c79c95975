"""GPU self-check: what only a GPU can prove, in one command (a few minutes on a T4).

    python bench/gpu_check.py                         # every check; exit status 1 when one fails
    python bench/gpu_check.py --data PATH             # CIFAR-10 JPEGs: the tarball or its folder (train/, test/)
    python bench/gpu_check.py --only exactness,optim8bit

Rows, by section (``--only`` takes the section names):

* ``exactness``  TCL's gradient cache under fp16 (Accelerate's GradScaler, as the trainer) and bf16
                 autocast: 8 micro-batches against the single batch, GroupNorm PreAct ResNet-18;
* ``optim8bit``  bitsandbytes' 8-bit SGD and AdamW on CUDA: uint8 state, the loss falls, state memory;
* ``memory``     ``bench/step_memory.py``'s configurations at B=256 (naive, exact, +ckpt, +8bit, +bf16,
                 +fp16): ``torch.cuda.max_memory_allocated`` above the baseline and the step time;
* ``fit``        ``configs/cifar10_tcl_1gpu_exact.yaml``, the notebook's T4 settings and its settings for the GPU
                 at hand, measured; whether they fit a 15 GiB T4 (the last: this GPU; ``gpu_probes.fit_verdict``);
* ``throughput`` samples/s of one TCL, DivideMix (when the registry has it), MLNT and CE step;
* ``loader``     samples/s reaching the step with TCL's three views at 32 px, 2 workers pinned to 2 cores
                 (a Colab VM): per-sample views from JPEGs decoded on every access and from memory
                 (``data.augment_on=workers``), and batched views on the device (``data.augment_on=device``,
                 the trainer's default on a GPU); whether each starves the GPU, and what would fix it;
* ``resume``     a short ``cifar10_tcl_sym50`` run (1 GPU, a CIFAR subset) SIGKILLed mid-epoch and
                 resumed with ``--resume``: it must continue from its checkpoint to the last epoch;
* ``plan``       ``tcl-lite plan``'s prediction of one step of each shipped CIFAR preset against the GPU:
                 ``torch.cuda.max_memory_allocated`` above the baseline / predicted, and the measured step
                 time as TFLOPS and as a share of the GPU's peak against ``tcl_lite/plan/gpus.py``'s
                 assumption (the calibration to record in BENCHMARKS.md with the GPU named).

Without CUDA it says so, marks every row "not run" and exits 0. ``--allow-cpu`` runs the rows that mean
something on a CPU there (developing the kit; fp16 and the fit rows need CUDA), ``--toy`` shrinks every
size. Writes ``gpu_check.json`` and ``gpu_check.md`` to ``--out`` (default ``bench/out``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tarfile
import tempfile
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from common import CIFAR_TARBALL, OUT, machine_info, markdown_table
from gpu_checks import (
    CALIBRATION_PRESETS,
    FAIL,
    MEMORY_CONFIGS,
    PAYLOAD,
    SECTIONS,
    THROUGHPUT_METHODS,
    Row,
    run_child,
    run_section,
)


def sizes(toy: bool) -> SimpleNamespace:
    """The measured shapes: the reference's (PreAct ResNet-18, 32 px, B=256) or a toy's for a CPU."""
    if toy:
        return SimpleNamespace(arch="tiny_cnn", width=16, image_size=16, batch=32, micro=4, mlnt_batch=16,
                               loader_batches=4, steps=2)
    return SimpleNamespace(arch="preact_resnet18", width=64, image_size=32, batch=256, micro=32, mlnt_batch=32,
                           loader_batches=30, steps=3)


def planned_rows(s: SimpleNamespace) -> list[Row]:
    """Every row the kit reports, in order, all "not run" until a check fills it in."""
    shape = f"{s.arch} {s.image_size}px"
    rows = [Row("exactness", f"gradient cache, {p}", f"B={s.batch}, {s.batch // s.micro} micro-batches, GroupNorm "
                f"{shape}") for p in ("fp16", "bf16")]
    rows += [Row("optim8bit", f"bitsandbytes {n}", "MLP on the digits, 30 steps") for n in ("sgd8bit", "adamw8bit")]
    rows += [Row("memory", f"TCL step {c}", f"B={s.batch}, micro-batch {s.micro}, GroupNorm {shape}")
             for c in MEMORY_CONFIGS]
    rows += [Row("fit", "fits a 15 GiB T4", "configs/cifar10_tcl_1gpu_exact.yaml"),
             Row("fit", "fits a 15 GiB T4", "notebook T4 settings (configs/cifar10_tcl.yaml)"),
             Row("fit", "fits this GPU", "notebook settings for this GPU (configs/cifar10_tcl.yaml)")]
    rows += [Row("throughput", f"{m.upper()} training step", f"B={s.mlnt_batch if m == 'mlnt' else s.batch}, {shape}")
             for m in THROUGHPUT_METHODS]
    per_sample, batched = "TCL's 3 views per sample in 2 workers", "TCL's 3 views batched on the device, 2 workers"
    rows += [Row("loader", check, f"{src}, {s.image_size}px, 2 cores") for check, src in (
        (per_sample, "JPEG folder decoded on every access"), (per_sample, "decoded in memory"),
        (batched, "decoded in memory"))]
    rows += [Row("resume", "kill -9 and --resume", "cifar10_tcl_sym50, 1 GPU, CIFAR subset")]
    rows += [Row("plan", "plan vs measured step", f"{p} (its own settings, post-warm-up step)")
             for p in CALIBRATION_PRESETS]
    return rows


# -- output ------------------------------------------------------------------------------------------------

def format_table(rows: list[Row]) -> str:
    return markdown_table(["section", "check", "setting", "status", "figures", "notes"],
                          [[r.section, r.check, r.setting, r.status, r.figures, r.notes] for r in rows])


def exit_code(rows: list[Row]) -> int:
    return 1 if any(r.status == FAIL for r in rows) else 0


def write_outputs(rows: list[Row], out: Path, header: str) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    js, md = out / "gpu_check.json", out / "gpu_check.md"
    js.write_text(json.dumps({"header": header, "command": "python " + " ".join(sys.argv),
                              "failed": sum(r.status == FAIL for r in rows), "rows": [asdict(r) for r in rows]},
                             indent=1))
    md.write_text(f"## GPU self-check\n\n{header}\ncommand: python {' '.join(sys.argv)}\n\n{format_table(rows)}\n")
    return js, md


# -- child processes (started by gpu_checks.run_child): one measurement in a fresh process ---------------
# Every CUDA allocation happens in a child: the parent holds no GPU memory that a child's measurement of
# "everything else on the GPU" (the fit rows' CUDA context) would count.

def child_step(spec: dict[str, Any]) -> dict[str, Any]:
    from step_memory import measure_step

    from tcl_lite import load_config  # registers the built-ins first

    cfg = load_config(spec.get("config_file"), spec["overrides"])
    return measure_step(cfg, steps=spec["steps"], num_classes=spec.get("num_classes", 10), label=spec["label"])


def child_device(spec: dict[str, Any]) -> dict[str, Any]:
    import torch

    props = torch.cuda.get_device_properties(0)
    return {"name": props.name, "capability": [props.major, props.minor], "total_gib": props.total_memory / 2**30}


def child_exactness(spec: dict[str, Any]) -> dict[str, Any]:
    from gpu_probes import cache_exactness

    return cache_exactness(**spec)


def child_optim8bit(spec: dict[str, Any]) -> dict[str, Any]:
    import torch
    from gpu_probes import optimizer_8bit

    return optimizer_8bit(spec["name"], torch.device(spec["device"]))


def child_loader(spec: dict[str, Any]) -> dict[str, Any]:
    import torch
    from gpu_probes import loader_throughput, pin_to_cores

    from tcl_lite import load_config  # registers the built-ins first
    from tcl_lite.data import build_data
    from tcl_lite.methods.tcl.method import TCL

    cores = pin_to_cores(spec["cores"])
    torch.set_num_threads(1)
    data = build_data(load_config(None, spec["data_overrides"]).data, 0)  # cache_decoded=on: decoded here, once
    device = ("cuda" if torch.cuda.is_available() else "cpu") if spec["augment_on"] == "device" else None
    r = loader_throughput(data.train_views(TCL.views, device), batch_size=spec["batch"], num_workers=spec["workers"],
                          batches=spec["batches"], pin_memory=torch.cuda.is_available(), device=device)
    return {**r, "cores": cores}


# -- data --------------------------------------------------------------------------------------------------

def resolve_cifar(data: str | None, scratch: Path) -> Path | None:
    """A CIFAR-10 image folder (train/<class>/, test/<class>/) from --data (a folder or the tarball),
    else the tarball in bench/gpu_payload/ or ../shared/data, extracted under ``scratch``."""
    candidates = [Path(data)] if data else [PAYLOAD / CIFAR_TARBALL.name, CIFAR_TARBALL]
    for path in candidates:
        if path.is_dir():
            found = [d for d in (path, *sorted(path.iterdir())) if (d / "train").is_dir() and (d / "test").is_dir()]
            if found:
                return found[0]
        elif path.is_file() and path.name.endswith((".tar.gz", ".tgz", ".tar")):
            with tarfile.open(path) as tar:
                tar.extractall(scratch, filter="data")
            return resolve_cifar(str(scratch), scratch)
    if data:
        raise SystemExit(f"--data {data}: not a CIFAR-10 image folder (train/<class>/, test/<class>/) "
                         "nor its .tar.gz")
    return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="CIFAR-10 JPEG image folder or its .tar.gz (default: bench/gpu_payload/ or "
                                  "../shared/data/cifar10-jpeg.tar.gz)")
    p.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections of {','.join(SECTIONS)}")
    p.add_argument("--out", type=Path, default=OUT, help="where gpu_check.json/.md go (default bench/out)")
    p.add_argument("--budget-gib", type=float, default=15.0, help="GPU memory the fit rows test against")
    p.add_argument("--allow-cpu", action="store_true", help="without CUDA, run the rows that have a CPU meaning")
    p.add_argument("--toy", action="store_true", help="tiny sizes (digits, tiny_cnn): exercises the kit quickly")
    args = p.parse_args(argv)
    import torch

    cuda = torch.cuda.is_available()
    s = sizes(args.toy)
    rows = planned_rows(s)
    unknown = set(args.only.split(",")) - set(SECTIONS)
    if unknown:
        p.error(f"--only: unknown section(s) {', '.join(sorted(unknown))}; choose from {', '.join(SECTIONS)}")
    header = machine_info()
    if not cuda and not args.allow_cpu:
        print("No CUDA device here: every GPU row is marked 'not run' (run this on a GPU machine; --allow-cpu "
              "runs the CPU-meaningful rows)")
        for r in rows:
            r.notes = "no CUDA device"
    else:
        scratch = Path(tempfile.mkdtemp(prefix="tcl_gpu_check_"))
        try:
            needs_data = not args.toy and {"loader", "resume"} & set(args.only.split(","))
            ctx = SimpleNamespace(cuda=cuda, sizes=s, args=args, scratch=scratch, out=args.out.resolve(), results={},
                                  data_root=resolve_cifar(args.data, scratch) if needs_data else None,
                                  device=run_child("device", {}) if cuda else None)
            for section in SECTIONS:
                chosen = [r for r in rows if r.section == section]
                if section in args.only.split(","):
                    print(f"... {section}", file=sys.stderr, flush=True)
                    run_section(section, chosen, ctx)
                else:
                    for r in chosen:
                        r.notes = "section not selected (--only)"
        finally:
            shutil.rmtree(scratch, ignore_errors=True)  # only the extracted data: this run created it
    js, md = write_outputs(rows, args.out, header)
    print(f"\n{header}\n\n{format_table(rows)}\n\nwritten: {js}, {md}")
    failed = [f"{r.check} ({r.setting})" for r in rows if r.status == FAIL]
    print(f"{len(failed)} check(s) failed" + (": " + "; ".join(failed) if failed else ""))
    return exit_code(rows)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1].startswith("--child-"):
        child = {"--child-step": child_step, "--child-loader": child_loader, "--child-exactness": child_exactness,
                 "--child-optim8bit": child_optim8bit, "--child-device": child_device}[sys.argv[1]]
        print(json.dumps(child(json.loads(sys.argv[2]))))
        sys.exit(0)
    sys.exit(main())
