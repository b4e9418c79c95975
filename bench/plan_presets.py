"""``tcl-lite plan`` for every shipped CIFAR preset on some GPUs: one markdown table (PREDICTED figures).

    python bench/plan_presets.py                    # T4 and A100 40 GB
    python bench/plan_presets.py --gpus t4          # the README's table

Each preset is planned as ``tcl-lite plan --config PRESET --gpu ...`` plans it (its own settings), in one
process; the CIFAR-10 JPEG folder preset with CIFAR-10's sizes (its folder need not be here). Columns: the
largest traced peak and where, then per GPU what it must hold (with the CUDA context and the allocator
margin), whether the run fits or the smallest change that does, and the estimated time per epoch (of each
kind: e.g. TCL's warm-up / corrected epochs) and per run at the stated share of the GPU's peak
(``tcl_lite/plan/gpus.py``: estimates until ``bench/gpu_check.py`` measures them). Also prints how long each plan took.
"""

from __future__ import annotations

import argparse
import time

from common import markdown_table, print_header


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gpus", default="t4,a100-40", help="comma-separated keys of tcl_lite/plan/gpus.py")
    p.add_argument("--presets", default="", help="comma-separated presets (default: every cifar* preset)")
    args = p.parse_args()
    from tcl_lite import load_config  # registers the built-ins first
    from tcl_lite.plan.gpus import GPUS
    from tcl_lite.plan.planner import make_plan
    from tcl_lite.plan.report import duration
    from tcl_lite.presets import available_presets

    presets = args.presets.split(",") if args.presets else [n for n in available_presets() if n.startswith("cifar")]
    gpus = [GPUS[k] for k in args.gpus.split(",")]
    print_header(f"plan_presets: {len(presets)} presets on {', '.join(g.name for g in gpus)} (PREDICTED)")
    rows = []
    for preset in presets:
        t0 = time.perf_counter()
        samples = (50000, 10000) if preset == "cifar10_jpeg_ce" else None  # the JPEG folder is CIFAR-10
        plan = make_plan(load_config(preset), gpus, name=preset, samples=samples)
        peak, cells = plan.run.peak, []
        for v in plan.verdicts:
            if not v.runs:
                cells.append(f"cannot: {v.reason}")
                continue
            verdict = "fits" if v.fits_as_is else "fits with " + " ".join(v.overrides)
            epochs = " / ".join(duration(x) for x in v.epoch_seconds().values())
            run = duration(v.run_seconds())
            cells.append(f"{v.device_bytes / 2**30:.2f} GiB, {verdict}; epoch {epochs}; run {run}")
        rows.append([preset, f"{peak.peak_bytes / 2**30:.2f} GiB ({peak.label})", *cells,
                     f"{time.perf_counter() - t0:.1f}"])
    print(markdown_table(["preset", "traced peak (at)", *(f"{g.name}: needs, verdict, time" for g in gpus),
                          "plan s"], rows))

if __name__ == "__main__":
    main()
