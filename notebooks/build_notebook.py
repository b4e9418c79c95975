"""Writes ``notebooks/tcl_lite_colab.ipynb`` from the cell sources below: ``python notebooks/build_notebook.py``.

The notebook is generated so that it can be reviewed as plain Python and diffs stay readable; edit
this file, not the .ipynb, and re-run it (``tests/test_notebook.py`` checks that the two agree). The form's
dataset and method choices are the registered ones (``tcl_lite.registry``: the datasets that need no files of
the user, every method), so a new dataset or method reaches the form by re-running this file.

Runtime -> Run all does everything: get the code (the checkout the notebook sits in, a copy attached as
Kaggle input, or ``pip install git+REPO_URL``), install without touching the preinstalled torch, pick
settings for the device, keep the run on Google Drive (Colab) or in /kaggle/working (Kaggle), train
with ``--resume`` and show the report.
Every platform branch is chosen by detection, so the same file runs on Colab, Kaggle, a laptop and
in CI (nbclient) unchanged.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the checkout's tcl_lite, for its registries (no torch imported)
import tcl_lite  # noqa: E402
from tcl_lite.registry import DATASETS, METHODS  # noqa: E402

NOTEBOOK = Path(__file__).with_name("tcl_lite_colab.ipynb")
tcl_lite.register_builtins()


def choices(default: str, names: list[str]) -> str:
    """A Colab form's ``#@param`` list: the default first, then the other registered names in order."""
    return "[" + ", ".join(f'"{n}"' for n in [default, *(n for n in names if n != default)]) + "]"


FORM_DATASETS = choices("cifar10", [n for n in DATASETS if DATASETS.declared(n)["self_contained"]])
FORM_METHODS = choices("tcl", list(METHODS))

INTRO = """\
# tcl_lite: noisy-label training on one free GPU (or a CPU)

**Runtime → Run all** trains an image classifier on noisily labelled data with TCL, MLNT, DivideMix, ProMix or plain
cross-entropy, then shows the report: accuracy per epoch, the clean probability per sample (TCL, DivideMix), the
estimated noise rate and where the corrected labels go, plus `cleaned_labels.csv`.

- **Set the form below**, then Run all. Nothing else needs editing: Colab, Kaggle, a local Jupyter
  and a CPU-only machine are detected and handled.
- **Disconnected or out of time?** Run all again with the same run name: training resumes from the
  last checkpoint (on Colab keep *USE_DRIVE* on, so the run survives the VM; on Kaggle attach the
  previous version's output as input).
- On a CPU the notebook trains the method's own preset on the embedded digits (a few minutes, no download).
- The report starts with the run's **trust verdict** (`trustworthy` / `doubtful` / `not usable`, with its
  reasons): only a trustworthy run writes `cleaned_labels.csv`; the others offer a ranked list for review.
- **Opened from a link or uploaded?** Then no copy of the code sits beside this notebook: set *REPO_URL*
  in the form to the address of the repository the notebook comes from (e.g. `https://github.com/<owner>/<repo>`)
  and the notebook runs `pip install "git+REPO_URL"`.
"""

PARAMETERS = """\
#@title Settings { display-mode: "form" }
# This is the "parameters" cell (papermill convention): CI and papermill inject overrides after it.
DATASET = "cifar10"  #@param FORM_DATASETS
NOISE_TYPE = "symmetric"  #@param ["symmetric", "asymmetric", "none"]
NOISE_RATE = 0.5  #@param {type:"slider", min:0.0, max:0.9, step:0.05}
METHOD = "tcl"  #@param FORM_METHODS
EPOCHS = 0  #@param {type:"integer"}
TIME_BUDGET = ""  #@param {type:"string"}
USE_DRIVE = True  #@param {type:"boolean"}
RUN_NAME = "run1"  #@param {type:"string"}
#@markdown ---
#@markdown **Advanced.** EPOCHS 0 = the preset's (200 on CIFAR, 30 on the digits): the time per epoch and
#@markdown an ETA are printed after the first epoch. TIME_BUDGET e.g. `5h` stops cleanly with a checkpoint
#@markdown (empty: none, on Kaggle the time left in the session). REPO_URL: where to `pip install` the code from
#@markdown when this notebook is not inside a checkout (the repository's address, e.g. from the Colab badge).
#@markdown PRESET `tiny` forces the CPU presets (digits) anywhere; EXTRA_ARGS are more `key=value` config overrides.
REPO_URL = ""  #@param {type:"string"}
INSTALL = True  #@param {type:"boolean"}
PRESET = "auto"  #@param ["auto", "tiny"]
EXTRA_ARGS = ""  #@param {type:"string"}
RUNS_ROOT = ""  #@param {type:"string"}
""".replace("FORM_DATASETS", FORM_DATASETS).replace("FORM_METHODS", FORM_METHODS)

SETUP_MD = """\
## 1. Where are we? Get the code and install it

Colab is detected by the `google.colab` module, Kaggle by `/kaggle/working` or `KAGGLE_KERNEL_RUN_TYPE`.
The code, in this order: the checkout this notebook sits in (`train.py` next to it or in its parent); a copy
of the repository attached as Kaggle input; else `pip install "git+REPO_URL"` when REPO_URL is set; else the
cell stops and says what to set. Both installs keep the torch the platform preinstalled (the dependencies'
torch entries are lower bounds). Training then runs as `python -m tcl_lite train ...`."""

SETUP = """\
import importlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path


def on_colab() -> bool:
    # Not importlib.util.find_spec("google.colab"): that raises where no "google" package exists.
    try:
        import google.colab  # noqa: F401
    except ImportError:
        return False
    return True


IN_COLAB = on_colab()
ON_KAGGLE = Path("/kaggle/working").is_dir() or "KAGGLE_KERNEL_RUN_TYPE" in os.environ
PLATFORM = "Colab" if IN_COLAB else "Kaggle" if ON_KAGGLE else "local Jupyter"


def is_checkout(folder: Path) -> bool:
    return (folder / "train.py").is_file() and (folder / "tcl_lite").is_dir()


def find_checkout() -> Path | None:
    candidates = [Path.cwd(), Path.cwd().parent]
    if ON_KAGGLE:  # the repository attached as a Kaggle dataset (read-only is fine: runs write elsewhere)
        candidates += sorted(Path("/kaggle/input").glob("*")) + sorted(Path("/kaggle/input").glob("*/*"))
    return next((c.resolve() for c in candidates if is_checkout(c)), None)


def shown(cmd: list) -> str:
    \"\"\"cmd as one shell line a person can read and paste: an argument holding single quotes (e.g.
    train.mixed_precision='no') goes in double quotes instead of shlex's '"'"' escapes.\"\"\"
    def quote(arg: str) -> str:
        if "'" in arg and not any(c in arg for c in '"$`\\\\!'):
            return f'"{arg}"'
        return shlex.quote(arg)

    return " ".join(quote(str(c)) for c in cmd)


def stream(cmd: list, cwd: Path) -> str:
    \"\"\"Run cmd and print its output line by line as it comes: live progress in Colab, Kaggle and nbclient.\"\"\"
    cmd = [str(c) for c in cmd]
    print("$", shown(cmd), flush=True)
    # Unbuffered so lines arrive when printed; wide so the progress lines do not wrap. Jupyter kernels
    # set FORCE_COLOR, which would make the child draw a live terminal bar (cursor codes that pile up
    # in a cell's output): without it the trainer prints plain progress lines. The kernel's inline
    # matplotlib backend means nothing to a child process.
    env = dict(os.environ, PYTHONUNBUFFERED="1", COLUMNS="400", TTY_COMPATIBLE="0")
    for key in ("FORCE_COLOR", "CLICOLOR_FORCE", "MPLBACKEND"):
        env.pop(key, None)
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            bufsize=1)
    lines = []
    try:
        for line in proc.stdout:
            print(line, end="", flush=True)
            lines.append(line)
    except KeyboardInterrupt:
        # Interrupting the cell sends SIGTERM, on which train.py saves a checkpoint and exits:
        # running the cell again continues from there.
        proc.send_signal(signal.SIGTERM)
        for line in proc.stdout:
            print(line, end="", flush=True)
        proc.wait()
        raise
    if proc.wait() != 0:
        raise RuntimeError(f"{shlex.join(cmd[:4])} ... exited with code {proc.returncode}: the reason is printed above")
    return "".join(lines)


def install_from_url(url: str) -> None:
    \"\"\"pip install the repository at `url` (https://..., git+..., file://..., or a local path to a clone).\"\"\"
    if "://" not in url and not url.startswith("git+") and Path(url).expanduser().exists():
        url = Path(url).expanduser().resolve().as_uri()  # pip wants a URL: file:///path/to/clone
    stream([sys.executable, "-m", "pip", "install", "-q", url if url.startswith("git+") else f"git+{url}"],
           cwd=Path.cwd())
    importlib.invalidate_caches()  # the new package is importable in this kernel without a restart


NO_CODE = \"\"\"No tcl_lite code found: this notebook does not sit inside a checkout of the repository and no copy
is attached under /kaggle/input. Set REPO_URL in the Settings form (the first code cell) to the repository's
address, e.g. https://github.com/<owner>/<repo> (the repository this notebook comes from), then Runtime -> Run
all again; on Kaggle turn Internet on, or attach the repository as a dataset instead.\"\"\"

REPO = find_checkout()
if REPO is not None:  # a checkout (or a Kaggle input copy of one): run the code where it is
    if INSTALL:
        stream([sys.executable, "-m", "pip", "install", "-q", "-r", "requirements.txt"], cwd=REPO)
    sys.path.insert(0, str(REPO))  # only tcl_lite.config is imported here (light: no torch), to read the presets
    WORKDIR, CODE = REPO, f"the checkout {REPO}"
elif REPO_URL.strip():
    if INSTALL:
        install_from_url(REPO_URL.strip())
    WORKDIR, CODE = Path.cwd().resolve(), f"pip install git+{REPO_URL.strip()}"
else:
    raise SystemExit(NO_CODE)
import tcl_lite  # noqa: E402 - installed or found only now

print(f"platform: {PLATFORM}; code: {CODE} ({Path(tcl_lite.__file__).parent})")
"""

STORAGE_MD = """\
## 2. Where the run lives

- **Colab** with `USE_DRIVE`: Google Drive is mounted and the run directory is
  `MyDrive/tcl_lite_runs/RUN_NAME`, so a disconnect or a new VM loses nothing; without Drive,
  `/content/tcl_lite_runs`.
- **Kaggle**: data from `/kaggle/input` (a folder holding `cifar-10-batches-py` / `cifar-100-python`),
  the run in `/kaggle/working/runs/RUN_NAME`. A previous version's output attached as input is copied
  there first, so the new version continues it. `train.time_budget` (by default the session's time left,
  minus 30 minutes) makes training checkpoint and exit before Kaggle's limit can kill it mid-save.
- Elsewhere: `runs/RUN_NAME` in the checkout, or in the current folder after a pip install (or under
  `RUNS_ROOT`)."""

STORAGE = """\
if IN_COLAB and USE_DRIVE:
    from google.colab import drive

    drive.mount("/content/drive")
elif USE_DRIVE:
    print(f"USE_DRIVE: not on Colab ({PLATFORM}), the run stays on this machine")

if RUNS_ROOT:
    runs_root = Path(RUNS_ROOT)
elif IN_COLAB:
    runs_root = Path("/content/drive/MyDrive/tcl_lite_runs" if USE_DRIVE else "/content/tcl_lite_runs")
elif ON_KAGGLE:
    runs_root = Path("/kaggle/working/runs")
else:
    runs_root = WORKDIR / "runs"
runs_root = runs_root.resolve()
runs_root.mkdir(parents=True, exist_ok=True)
RUN_DIR = runs_root / RUN_NAME
KAGGLE_INPUT = Path("/kaggle/input")  # attached datasets and previous versions' outputs (read-only)


def newest_step(run_dir: Path) -> str:
    return max((p.name for p in (run_dir / "checkpoints").glob("step_*")), default="")


def restore_from_kaggle_input(run_dir: Path) -> None:
    \"\"\"Copy a previous version's output (/kaggle/input/<notebook>/runs/<name>) into the working dir.\"\"\"
    if newest_step(run_dir):
        return
    found = [d for depth in ("*", "*/*", "*/*/*") for d in KAGGLE_INPUT.glob(f"{depth}/runs/{run_dir.name}")
             if newest_step(d)]
    if found:
        source = max(found, key=newest_step)
        print(f"continuing the previous version's run: copying {source} -> {run_dir}")
        shutil.copytree(source, run_dir, dirs_exist_ok=True)


def find_input_dataset(marker: str) -> Path | None:
    \"\"\"The folder under /kaggle/input that holds torchvision's CIFAR folder `marker`.\"\"\"
    for depth in ("*", "*/*", "*/*/*"):
        for hit in sorted(KAGGLE_INPUT.glob(f"{depth}/{marker}")):
            return hit.parent
    return None


def time_budget() -> str:
    \"\"\"TIME_BUDGET, or on Kaggle the 12 h session's time left minus 30 min for saving and the report.\"\"\"
    if TIME_BUDGET or not ON_KAGGLE:
        return TIME_BUDGET
    import psutil

    used = time.time() - psutil.Process().create_time()  # the kernel started with the session
    return f"{max(10, int((12 * 3600 - used) / 60) - 30)}m"


data_overrides = []
if ON_KAGGLE:
    for name in (RUN_NAME, f"{RUN_NAME}-features"):
        restore_from_kaggle_input(runs_root / name)
    marker = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}.get(DATASET)
    found = find_input_dataset(marker) if marker else None
    data_overrides = [f"data.root={found}", "data.download=false"] if found else ["data.root=/tmp/data"]
elif IN_COLAB:
    data_overrides = ["data.root=/content/data"]  # local disk: much faster to read than Drive
print(f"run directory: {RUN_DIR}" + (f" (has {newest_step(RUN_DIR)}: will resume)" if newest_step(RUN_DIR) else ""))
"""

SETTINGS_MD = """\
## 3. Device → settings, from the plan

The GPU is named by `nvidia-smi` (asking torch here would hold a CUDA context, and GPU memory, in this
kernel for the whole session). `tcl-lite gpu-check` (a separate process) then asks the platform's torch
whether it has kernels for that GPU's compute capability, and stops with the accelerator to pick instead if
not: e.g. Kaggle's P100 (compute capability 6.0) under torch builds for CUDA 12.8 and later, which have no
sm_60 kernels.

The settings then come from **`tcl-lite plan`**, printed below: every step of the run (TCL's warm-up and
corrected steps, DivideMix's warm-up and MixMatch steps, ...) and every pass (detection, co-divide,
evaluation) is traced under fake tensors on this machine's CPU, and its memory predicted by category. The
notebook trains in the GPU's mixed precision (bf16 where the GPU has it, fp16 on a T4), then takes the
plan's smallest change that fits the GPU's memory: more micro-batches, then activation checkpointing.
Micro-batches keep the effective batch (TCL and DivideMix compute the full-batch loss through a gradient
cache), and `train.auto_micro_batch` still splits a step further should the prediction be short. The plan's
time per epoch and per run are estimates (`bench/gpu_check.py` measures them on a GPU). On a CPU: no mixed
precision, and each method's own preset on the embedded digits (settings that end with a `trustworthy`
verdict there); the plan is printed all the same."""

SETTINGS = """\
from tcl_lite import load_config  # registers the built-in methods, datasets, architectures first (no torch)
from tcl_lite.errors import ConfigError


def gpu() -> tuple[str, float, float] | None:
    \"\"\"(name, memory GiB, compute capability) of GPU 0 from nvidia-smi, or None without a GPU.\"\"\"
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None

    def query(fields: str) -> list[str] | None:
        out = subprocess.run([smi, f"--query-gpu={fields}", "--format=csv,noheader,nounits"], capture_output=True,
                             text=True, timeout=60)
        first = out.stdout.strip().splitlines()[:1]
        return [x.strip() for x in first[0].split(",")] if out.returncode == 0 and first else None

    info = query("name,memory.total")
    if info is None:
        return None
    cap = query("compute_cap")  # older drivers do not know this field
    try:
        capability = float(cap[0]) if cap else 0.0
    except ValueError:
        capability = 0.0
    return info[0], float(info[1]) / 1024, capability


def device_settings(found: tuple[str, float, float] | None, preset: str, overrides: list) -> tuple[str, list]:
    \"\"\"(device label, overrides): the plan's precision, micro-batches and checkpointing for this GPU.\"\"\"
    from tcl_lite.plan.planner import gpu_settings, make_plan
    from tcl_lite.plan.report import plan_text

    if found is None:
        print(plan_text(make_plan(load_config(preset, overrides), [], name=preset)))
        return "CPU", ["train.mixed_precision='no'"]  # quoted: YAML reads a bare no as false
    name, mem, cap = found
    plan, settings = gpu_settings(preset, overrides, name, mem, cap)
    print(plan_text(plan))
    return f"{plan.verdicts[0].gpu.name} ({name}, {mem:.0f} GiB)", [*settings, "data.num_workers=2"]


found_gpu = gpu()
if found_gpu is not None:  # can the platform's torch use this GPU? Asked in a subprocess: no CUDA context here
    check = subprocess.run([sys.executable, "-m", "tcl_lite", "gpu-check"], cwd=WORKDIR, capture_output=True,
                           text=True)
    print(check.stdout.strip())
    if check.returncode != 0:
        raise SystemExit(check.stderr.strip() or f"tcl-lite gpu-check failed with exit code {check.returncode}")
tiny = PRESET == "tiny" or found_gpu is None
dataset = "digits" if tiny else DATASET
if dataset != DATASET:
    print(f"no GPU (or PRESET=tiny): training digits_{METHOD} on the embedded digits instead of {DATASET}, with "
          "the preset's own label noise")
# presets by name: found in a checkout's configs/ or in the installed package alike. On the digits every
# method has its own preset, whose settings end with a trustworthy verdict (configs/digits_*.yaml say why).
if dataset == "digits":
    preset = f"digits_{METHOD}"
else:
    preset = {"tcl": f"{dataset}_tcl", "dividemix": f"{dataset}_dividemix_sym50",
              "promix": f"{dataset}_promix_sym50"}.get(METHOD, "cifar10_ce")
base = load_config(preset)
epochs = EPOCHS or base.train.epochs
# The form's noise is for the dataset chosen there; a digits preset standing in for it keeps its own noise.
noise_type, noise_rate = (NOISE_TYPE, NOISE_RATE) if dataset == DATASET else (base.data.noise_type,
                                                                                base.data.noise_rate)
overrides = [f"method={METHOD}", f"data.dataset={dataset}", f"data.noise_type={noise_type}",
             f"data.noise_rate={noise_rate}", f"train.epochs={epochs}",
             f"optim.warmup_epochs={base.optim.warmup_epochs * epochs / base.train.epochs:g}"]
for name in ("tcl", "dividemix"):  # a method's warm-up keeps its preset's share of the run
    if METHOD == name:
        share = getattr(base, name).warmup_epochs / base.train.epochs
        overrides += [f"{name}.warmup_epochs={max(1, round(epochs * share))}"]
if METHOD == "mlnt":  # MLNT's frozen feature network: a CE run with the same settings, trained first
    overrides += [f"mlnt.feature_checkpoint={runs_root / f'{RUN_NAME}-features'}"]
overrides += data_overrides + shlex.split(EXTRA_ARGS)  # EXTRA_ARGS last: they win
try:  # every key and value checked now, not after the install and the data download
    load_config(preset, overrides)
    DEVICE, device_overrides = device_settings(found_gpu, preset, overrides)
    overrides = device_overrides + overrides  # what the user asked for (EXTRA_ARGS) still wins
    cfg = load_config(preset, overrides)
except ConfigError as e:
    raise SystemExit(f"bad setting: {e}") from None
print(f"device: {DEVICE}\\npreset: {preset}\\noverrides: {' '.join(overrides)}")
print(f"-> {cfg.method} on {cfg.data.dataset}, {cfg.data.noise_type} noise {cfg.data.noise_rate}, {cfg.train.epochs} "
      f"epoch(s), batch {cfg.train.batch_size} in {cfg.train.gradient_accumulation_steps} micro-batch(es), "
      f"{cfg.train.mixed_precision} precision")
if not EPOCHS:
    print(f"EPOCHS is 0: the preset's {cfg.train.epochs} epochs. The time per epoch and an ETA are printed after the "
          "first epoch; interrupt the training cell (a checkpoint is saved) and set EPOCHS to train less.")
"""

TRAIN_MD = """\
## 4. Train

Always with `--resume`: the first run starts, every later run (after a disconnect, a time budget or a
new Kaggle version) continues from the newest valid checkpoint. Interrupting this cell saves a
checkpoint too. To train longer, raise EPOCHS and run all again. Every epoch line ends with the time per
epoch and an ETA; `RUN_DIR/train.log` keeps every line with a timestamp, and `RUN_DIR/status.json` says how
the run ended (`finished`, `stopped_time_budget`, `stopped_signal`, `failed`), which is what this cell reads."""

TRAIN = """\
def run_state(run_dir: Path) -> str:
    \"\"\"The state the trainer wrote to RUN_DIR/status.json (running, finished, stopped_time_budget, ...).\"\"\"
    try:
        return json.loads((run_dir / "status.json").read_text())["state"]
    except (OSError, ValueError, KeyError):
        return "unknown"


def train(run_dir: Path, args: list[str]) -> str:
    cmd = [sys.executable, "-m", "tcl_lite", "train", "--config", preset, *args]
    if time_budget():
        cmd.append(f"train.time_budget={time_budget()}")
    # --resume last: it takes an optional path, and would swallow a key=value that followed it
    stream([*cmd, "--output-dir", run_dir, "--resume"], cwd=WORKDIR)
    return run_state(run_dir)


state = "finished"
if METHOD == "mlnt":
    features = runs_root / f"{RUN_NAME}-features"
    print(f"MLNT's feature network first: a CE run in {features}")
    state = train(features, [*overrides, "method=ce"])
if not state.startswith("stopped"):
    state = train(RUN_DIR, overrides)
print(f"run state: {state}")
if state.startswith("stopped"):
    print("Stopped before the end (" + ("time budget" if state == "stopped_time_budget" else "signal")
          + "), with a checkpoint: run the notebook again to continue"
          + (" (Kaggle: attach this version's output as input first)." if ON_KAGGLE else "."))
"""

REPORT_MD = """\
## 5. Report

`python -m tcl_lite report RUN_DIR` writes `RUN_DIR/report/`: `report.md`, the figures and, for TCL and
DivideMix, the labels as the run's trust verdict allows: a `trustworthy` run's `cleaned_labels.csv` (per
training sample: given and corrected label, clean probability, the confidence of a proposed change, `applied`
for the changes to use, `cleaned_label`); a `doubtful` or `not usable` run's `review_labels.csv` (the proposed
changes, most confident first) and no relabelled file. The verdict and its reasons are printed last."""

REPORT = """\
from IPython.display import Image, Markdown, display

stream([sys.executable, "-m", "tcl_lite", "report", RUN_DIR], cwd=WORKDIR)
REPORT_DIR = RUN_DIR / "report"
# report.md embeds its figures by relative path, which the notebook's Markdown cannot resolve:
# show the text and the images in the report's order instead.
text = []
for line in (REPORT_DIR / "report.md").read_text().splitlines():
    figure = re.fullmatch(r"!\\[[^\\]]*\\]\\(([^)]+\\.png)\\)", line.strip())
    if figure:
        display(Markdown("\\n".join(text)))
        display(Image(filename=str(REPORT_DIR / figure.group(1))))
        text = []
    else:
        text.append(line)
display(Markdown("\\n".join(text)))
print(f"files: {REPORT_DIR}")
try:  # the run's trust verdict (RUN_DIR/trust.json, written by the trainer)
    trust = json.loads((RUN_DIR / "trust.json").read_text())
except (OSError, ValueError):
    trust = {"verdict": "not assessed", "reasons": ["the run has no trust.json"]}
print(f"trust verdict: {trust['verdict'].upper()}")
for reason in trust.get("reasons", []):
    print(f"  - {reason}")
use = "cleaned_labels.csv" if trust["verdict"] == "trustworthy" else "review_labels.csv (review; no relabelled file)"
print(f"labels: {REPORT_DIR / use}")
"""


def build() -> nbformat.NotebookNode:
    """The notebook: markdown and code cells in order, the form cell tagged ``parameters``."""
    nb = nbformat.v4.new_notebook()
    code = nbformat.v4.new_code_cell
    md = nbformat.v4.new_markdown_cell
    nb.cells = [
        md(INTRO),
        code(PARAMETERS, metadata={"tags": ["parameters"], "cellView": "form"}),
        md(SETUP_MD), code(SETUP),
        md(STORAGE_MD), code(STORAGE),
        md(SETTINGS_MD), code(SETTINGS),
        md(TRAIN_MD), code(TRAIN),
        md(REPORT_MD), code(REPORT),
    ]
    for i, cell in enumerate(nb.cells):  # stable ids: regenerating gives the same file
        cell["id"] = f"cell-{i:02d}"
        cell["source"] = textwrap.dedent(cell["source"]).rstrip("\n")
    nb.metadata = {
        "accelerator": "GPU",  # Colab: ask for a GPU runtime when opened
        "colab": {"provenance": [], "gpuType": "T4", "toc_visible": True},
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"},
    }
    return nb


def render() -> str:
    return nbformat.writes(build()) + "\n"


if __name__ == "__main__":
    NOTEBOOK.write_text(render())
    print(f"wrote {NOTEBOOK}", file=sys.stderr)
