"""Writes ``notebooks/tcl_lite_colab.ipynb`` from the cell sources below: ``python notebooks/build_notebook.py``.

The notebook is generated so that it can be reviewed as plain Python and diffs stay readable; edit
this file, not the .ipynb, and re-run it (``tests/test_notebook.py`` checks that the two agree).

Runtime -> Run all does everything: get the code (a checkout next to the notebook, or a clone),
install without touching the preinstalled torch, pick settings for the device, keep the run on
Google Drive (Colab) or in /kaggle/working (Kaggle), train with ``--resume`` and show the report.
Every platform branch is chosen by detection, so the same file runs on Colab, Kaggle, a laptop and
in CI (nbclient) unchanged.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import nbformat

NOTEBOOK = Path(__file__).with_name("tcl_lite_colab.ipynb")
# Where Colab/Kaggle clone the code from when the notebook does not sit inside a checkout.
REPO_URL = "https://github.com/tcl-lite/tcl_lite.git"

INTRO = f"""\
# tcl_lite: noisy-label training on one free GPU (or a CPU)

**Runtime → Run all** trains an image classifier on noisily labelled data with TCL, MLNT or plain
cross-entropy, then shows the report: accuracy per epoch, TCL's clean probability per sample, the
estimated noise rate and where the corrected labels go, plus `cleaned_labels.csv`.

- **Set the form below**, then Run all. Nothing else needs editing: Colab, Kaggle, a local Jupyter
  and a CPU-only machine are detected and handled.
- **Disconnected or out of time?** Run all again with the same run name: training resumes from the
  last checkpoint (on Colab keep *USE_DRIVE* on, so the run survives the VM; on Kaggle attach the
  previous version's output as input).
- On a CPU the notebook trains a tiny preset on the embedded digits (a few minutes, no download).

Code: {REPO_URL}
"""

PARAMETERS = f"""\
#@title Settings {{ display-mode: "form" }}
# This is the "parameters" cell (papermill convention): CI and papermill inject overrides after it.
DATASET = "cifar10"  #@param ["cifar10", "cifar100", "digits"]
NOISE_TYPE = "symmetric"  #@param ["symmetric", "asymmetric", "none"]
NOISE_RATE = 0.5  #@param {{type:"slider", min:0.0, max:0.9, step:0.05}}
METHOD = "tcl"  #@param ["tcl", "ce", "mlnt"]
EPOCHS = 0  #@param {{type:"integer"}}
TIME_BUDGET = ""  #@param {{type:"string"}}
USE_DRIVE = True  #@param {{type:"boolean"}}
RUN_NAME = "run1"  #@param {{type:"string"}}
#@markdown ---
#@markdown **Advanced.** EPOCHS 0 = the preset's (200 on CIFAR, 10 for the CPU preset). TIME_BUDGET e.g.
#@markdown `5h` stops cleanly with a checkpoint (empty: none, on Kaggle the time left in the session).
#@markdown PRESET `tiny` forces the small CPU preset anywhere; EXTRA_ARGS are more `key=value` config overrides.
REPO_URL = "{REPO_URL}"  #@param {{type:"string"}}
INSTALL = True  #@param {{type:"boolean"}}
PRESET = "auto"  #@param ["auto", "tiny"]
EXTRA_ARGS = ""  #@param {{type:"string"}}
RUNS_ROOT = ""  #@param {{type:"string"}}
"""

SETUP_MD = """\
## 1. Where are we? Get the code and install it

Colab is detected by the `google.colab` module, Kaggle by `/kaggle/working` or `KAGGLE_KERNEL_RUN_TYPE`.
The code is the checkout this notebook sits in (`train.py` next to it or in its parent), a copy attached
as Kaggle input, or else a clone of `REPO_URL`. `pip install -r requirements.txt` keeps the torch the
platform preinstalled (its torch entries are lower bounds)."""

SETUP = """\
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


def stream(cmd: list, cwd: Path) -> str:
    \"\"\"Run cmd and print its output line by line as it comes: live progress in Colab, Kaggle and nbclient.\"\"\"
    cmd = [str(c) for c in cmd]
    print("$", shlex.join(cmd), flush=True)
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


REPO = find_checkout()
if REPO is None:
    # Kaggle: clone outside /kaggle/working, which is saved as the notebook's output.
    REPO = Path("/tmp/tcl_lite" if ON_KAGGLE else "tcl_lite").resolve()
    if not is_checkout(REPO):  # a re-run after a disconnect on the same VM reuses the clone
        stream(["git", "clone", "--depth", "1", REPO_URL, REPO], cwd=Path.cwd())
if INSTALL:
    stream([sys.executable, "-m", "pip", "install", "-q", "-r", "requirements.txt"], cwd=REPO)
sys.path.insert(0, str(REPO))  # only tcl_lite.config is imported here (light: no torch), to read the presets
print(f"platform: {PLATFORM}; code: {REPO}")
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
- Elsewhere: `runs/RUN_NAME` in the checkout (or under `RUNS_ROOT`)."""

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
    runs_root = REPO / "runs"
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
## 3. Device → settings

The GPU is named by `nvidia-smi` (asking torch here would hold a CUDA context, and GPU memory, in this
kernel for the whole session). The CIFAR presets train a batch of 256 (TCL: 6 images per sample per step);
what changes per device is only how that batch is computed, never the objective:

| device | `train.mixed_precision` | `train.gradient_accumulation_steps` (TCL/MLNT) | `train.activation_checkpointing` |
| --- | --- | --- | --- |
| A100, L4 | bf16 | 1 | off |
| T4, P100 | fp16 (no bf16) | 2 | off |
| other GPU | bf16 if compute capability ≥ 8, else fp16 | 1 (≥ 20 GiB), 2 (≥ 12), 4 (≥ 8), else 8 | on below 12 GiB |
| CPU | no | 1 | off — and a tiny preset on the embedded digits |

Micro-batches keep the effective batch (TCL's `gradient_mode=exact` computes the full-batch loss through a
gradient cache), and `train.auto_micro_batch` splits a step further should it still run out of memory."""

SETTINGS = """\
from tcl_lite.config import ConfigError, load_config


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


def device_settings(found: tuple[str, float, float] | None, heavy: bool) -> tuple[str, list[str]]:
    \"\"\"(device label, overrides): precision, micro-batches and checkpointing that fit the GPU's memory.\"\"\"
    if found is None:
        return "CPU", ["train.mixed_precision='no'"]  # quoted: YAML reads a bare no as false
    name, mem, cap = found
    kind = re.search(r"\\b(A100|L4|T4|P100)\\b", name.upper())  # \\b: an L40 is not an L4
    kind = kind.group(1) if kind else "other GPU"
    precision = {"A100": "bf16", "L4": "bf16", "T4": "fp16", "P100": "fp16"}.get(kind, "bf16" if cap >= 8 else "fp16")
    if kind in ("A100", "L4"):
        micro, ckpt = 1, False
    elif kind in ("T4", "P100"):
        micro, ckpt = 2, False
    else:
        micro, ckpt = (1, False) if mem >= 20 else (2, False) if mem >= 12 else (4, True) if mem >= 8 else (8, True)
    if not heavy:  # CE sees one image per sample: a sixth of TCL's activations
        micro = max(1, micro // 4)
    return f"{kind} ({name}, {mem:.0f} GiB)", [
        f"train.mixed_precision={precision}", f"train.gradient_accumulation_steps={micro}",
        f"train.activation_checkpointing={str(ckpt).lower()}", "data.num_workers=2"]


found_gpu = gpu()
tiny = PRESET == "tiny" or found_gpu is None
dataset = "digits" if tiny else DATASET
if dataset != DATASET:
    print(f"no GPU (or PRESET=tiny): training the tiny preset on the embedded digits instead of {DATASET}")
if dataset == "digits":
    preset = "configs/digits_mlnt.yaml" if METHOD == "mlnt" else "configs/digits_ce.yaml"
else:
    preset = f"configs/{dataset}_tcl.yaml" if METHOD == "tcl" else "configs/cifar10_ce.yaml"
base = load_config(REPO / preset)
epochs = EPOCHS or (10 if tiny else base.train.epochs)
overrides = [f"method={METHOD}", f"data.dataset={dataset}", f"data.noise_type={NOISE_TYPE}",
             f"data.noise_rate={NOISE_RATE}", f"train.epochs={epochs}",
             # warm-ups keep their share of the run (the reference: 20 of 200 epochs)
             f"tcl.warmup_epochs={max(1, round(epochs / 10))}",
             f"optim.warmup_epochs={base.optim.warmup_epochs * epochs / base.train.epochs:g}"]
if tiny:
    overrides += ["data.image_size=8", "model.width=16"]
if METHOD == "mlnt":  # MLNT's frozen feature network: a CE run with the same settings, trained first
    overrides += [f"mlnt.feature_checkpoint={runs_root / f'{RUN_NAME}-features'}"]
DEVICE, device_overrides = device_settings(found_gpu, heavy=METHOD != "ce")
overrides += device_overrides + data_overrides + shlex.split(EXTRA_ARGS)  # EXTRA_ARGS last: they win
try:  # every key and value checked now, not after the install and the data download
    cfg = load_config(REPO / preset, overrides)
except ConfigError as e:
    raise SystemExit(f"bad setting: {e}") from None
print(f"device: {DEVICE}\\npreset: {preset}\\noverrides: {' '.join(overrides)}")
print(f"-> {cfg.method} on {cfg.data.dataset}, {cfg.data.noise_type} noise {cfg.data.noise_rate}, {cfg.train.epochs} "
      f"epoch(s), batch {cfg.train.batch_size} in {cfg.train.gradient_accumulation_steps} micro-batch(es), "
      f"{cfg.train.mixed_precision} precision")
"""

TRAIN_MD = """\
## 4. Train

Always with `--resume`: the first run starts, every later run (after a disconnect, a time budget or a
new Kaggle version) continues from the newest valid checkpoint. Interrupting this cell saves a
checkpoint too. To train longer, raise EPOCHS and run all again."""

TRAIN = """\
def train(run_dir: Path, args: list[str]) -> str:
    cmd = [sys.executable, "train.py", "--config", preset, *args]
    if time_budget():
        cmd.append(f"train.time_budget={time_budget()}")
    # --resume last: it takes an optional path, and would swallow a key=value that followed it
    return stream([*cmd, "--output-dir", run_dir, "--resume"], cwd=REPO)


log = ""
if METHOD == "mlnt":
    features = runs_root / f"{RUN_NAME}-features"
    print(f"MLNT's feature network first: a CE run in {features}")
    log = train(features, [*overrides, "method=ce"])
if "time budget or SIGTERM" not in log:
    log = train(RUN_DIR, overrides)
if "time budget or SIGTERM" in log:
    print("\\nStopped by the time budget before the end: run the notebook again to continue"
          + (" (Kaggle: attach this version's output as input first)." if ON_KAGGLE else "."))
"""

REPORT_MD = """\
## 5. Report

`python -m tcl_lite report RUN_DIR` writes `RUN_DIR/report/`: `report.md`, the figures and, for TCL,
`cleaned_labels.csv` (index, given_label, corrected_label, clean_probability per training sample)."""

REPORT = """\
from IPython.display import Image, Markdown, display

stream([sys.executable, "-m", "tcl_lite", "report", RUN_DIR], cwd=REPO)
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
