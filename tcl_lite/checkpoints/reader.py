"""Reading checkpoints: list, verify, diagnose and load them, with no accelerator (``writer.py``
writes them). Everything is read from safetensors and JSON; nothing is unpickled.

Layout of one checkpoint folder (``OUTPUT/checkpoints/step_XXXXXXXX`` or ``best``)::

    model.safetensors     weights of the method's first model (``model.NAME.safetensors``: the others)
    optimizer.{json,safetensors}   its optimizer (``optimizer.NAME.*``: the others')
    method.{json,safetensors}      the method's state (TCL's w and prototypes, MLNT's teacher...)
    trainer.json          epoch, step in epoch, global step, best metric, world size, the method's name
    rng_rank{R}.json(+.safetensors)  python / numpy / torch / cuda RNG of each process
    manifest.json         sha256 of every file above; written last

The method's name is in ``trainer.json`` (written by the engine); checkpoints from before that carry
it, for TCL and DivideMix, in their method state, and CE/MLNT ones not at all.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from tcl_lite.checkpoints import checks
from tcl_lite.checkpoints.checks import STEP_DIR
from tcl_lite.checkpoints.state_io import load_tree
from tcl_lite.errors import CheckpointError


@dataclass
class TrainerState:
    epoch: int = 0  # epochs completed
    step_in_epoch: int = 0  # optimizer steps already taken in the current epoch
    global_step: int = 0
    best_value: float | None = None
    best_step: int = -1
    num_processes: int = 1
    nonfinite_steps: int = 0  # optimizer steps skipped for a NaN/inf loss (train.nonfinite=skip)
    method: str = ""  # the method that wrote the checkpoint ('' in checkpoints from before it was recorded)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def weights_file(index: int, name: str) -> str:
    """The first model's weights are ``model.safetensors`` (what predict / export read)."""
    return "model.safetensors" if index == 0 else f"model.{name}.safetensors"


def optimizer_tree(index: int, name: str) -> str:
    return "optimizer" if index == 0 else f"optimizer.{name}"


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# -- finding -------------------------------------------------------------------------------------
def list_steps(root: Path) -> list[Path]:
    """The rolling checkpoints (``step_*``) under ``root``, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted((p for p in root.iterdir() if p.is_dir() and STEP_DIR.match(p.name)),
                  key=lambda p: int(STEP_DIR.match(p.name).group(1)))


def verify(path: Path) -> None:
    """Raise CheckpointError unless the checkpoint is complete, intact and plausible: the manifest
    lists every file a checkpoint of its kind needs, each matches its checksum, its JSON parses
    and its counters are sane."""
    manifest_path = path / "manifest.json"
    if not manifest_path.is_file():
        raise CheckpointError(f"{path}: no manifest.json (the save did not finish)")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: manifest.json is unreadable ({e})") from None
    if not isinstance(manifest, dict) or not all(isinstance(v, str) for v in manifest.values()):
        raise CheckpointError(f"{path}: manifest.json is not a mapping of file names to checksums")
    for name, digest in manifest.items():
        f = path / name
        if "/" in name or not f.is_file():
            raise CheckpointError(f"{path}: {name} is missing")
        try:
            intact = sha256(f) == digest
        except OSError as e:  # unreadable, or removed meanwhile
            raise CheckpointError(f"{path}: {name} cannot be read ({e.strerror or e})") from None
        if not intact:
            raise CheckpointError(f"{path}: {name} is corrupt (checksum mismatch)")
    try:
        parsed = checks.parse_json_files(path, manifest)
        unlisted = sorted(checks.required_files(path, manifest, parsed) - set(manifest))
        if unlisted:
            raise checks.InvalidCheckpoint(f"manifest.json does not list {', '.join(unlisted)}, which this "
                                           "kind of checkpoint needs (an incomplete save or copy)")
        checks.check_counters(path, parsed["trainer.json"])
    except checks.InvalidCheckpoint as e:
        raise CheckpointError(f"{path}: {e}") from None


def diagnose(root: Path) -> list[tuple[Path, str]]:
    """Every rolling checkpoint under ``root``, newest first, with why it is unusable ('' when it verifies)."""
    report = []
    for path in reversed(list_steps(root)):
        try:
            verify(path)
            report.append((path, ""))
        except CheckpointError as e:
            report.append((path, str(e).removeprefix(f"{path}: ")))
    return report


def newest_valid(root: Path, log: Callable[[str], Any] = print) -> Path | None:
    """The newest checkpoint under ``root`` that verifies; each corrupt newer one is reported and skipped."""
    for path in reversed(list_steps(root)):
        try:
            verify(path)
            return path
        except CheckpointError as e:
            log(f"WARNING: skipping checkpoint {path.name}: {e}; trying the previous one")
    return None


# -- reading -------------------------------------------------------------------------------------
def read_method_state(path: Path) -> dict[str, Any]:
    """The checkpoint's method state (``Method.state_dict()`` as saved; tensors on the CPU)."""
    return _read_tree(path, "method")


def checkpoint_method(path: Path) -> str | None:
    """The name of the method that wrote the checkpoint: ``trainer.json``'s record, else (older
    checkpoints) the name TCL and DivideMix stamped into their state; None when neither says."""
    trainer = _read(path / "trainer.json", lambda f: json.loads(f.read_text())) if (path / "trainer.json").is_file() \
        else {}
    if isinstance(trainer, dict) and isinstance(trainer.get("method"), str) and trainer["method"]:
        return trainer["method"]
    method_json = _read(path / "method.json", lambda f: json.loads(f.read_text())) \
        if (path / "method.json").is_file() else {}
    stamp = method_json.get("method") if isinstance(method_json, dict) else None  # a plain string in the JSON
    return stamp if isinstance(stamp, str) and stamp else None


def check_method(path: Path, method: str) -> None:
    """A CheckpointError naming both methods when the checkpoint was written by another method."""
    found = checkpoint_method(path)
    if found is not None and found != method:
        raise CheckpointError(f"{path} is a checkpoint of method {found!r}, but this run trains method {method!r}: "
                              f"resume it with method={found} (the run's own config.yaml), or start the "
                              f"{method} run in another --output-dir")


def load_checkpoint(path: Path, models: dict[str, nn.Module], optimizers: dict[str, torch.optim.Optimizer],
                    process_index: int = 0, steps_per_epoch: int | None = None,
                    ) -> tuple[TrainerState, dict[str, Any]]:
    """Restore ``models`` (unwrapped), ``optimizers`` and, when there are optimizers, the RNG of process
    ``process_index``; return the trainer and method state. The checkpoint is verified first; any
    failure to read a file (a damaged safetensors header, a truncated JSON...) is a CheckpointError
    naming the file."""
    verify(path)
    for i, (name, net) in enumerate(models.items()):
        _load_weights(path, weights_file(i, name), net)
    trainer_json = _read(path / "trainer.json", lambda f: json.loads(f.read_text()))
    if steps_per_epoch is not None:
        try:
            checks.check_fits_data(trainer_json, steps_per_epoch)
        except checks.InvalidCheckpoint as e:
            raise CheckpointError(f"{path}: {e}") from None
    fields = TrainerState.__dataclass_fields__
    trainer = TrainerState(**{k: v for k, v in trainer_json.items() if k in fields})
    for i, (name, opt) in enumerate(optimizers.items()):
        _load_optimizer(path, optimizer_tree(i, name), opt)
    if optimizers:
        rank_file = path / f"rng_rank{process_index}.json"
        if not rank_file.exists():
            raise CheckpointError(f"{path}: no RNG state for process {process_index} (saved with "
                                  f"{trainer.num_processes} processes); resume with that many processes")
        rng = _read_tree(path, f"rng_rank{process_index}")
        _read(rank_file, set_rng_state, rng)
    return trainer, read_method_state(path)


def step_of(path: Path) -> int:
    m = STEP_DIR.match(path.name)
    return int(m.group(1)) if m else -1


def _load_weights(path: Path, file: str, net: nn.Module) -> None:
    if not (path / file).is_file():
        raise CheckpointError(f"{path}: {file} is missing (the checkpoint is of a method with other networks); "
                              "resume with the run's own config (OUTPUT/config.yaml)")
    weights = _read(path / file, lambda f: load_file(str(f)))
    try:
        net.load_state_dict(weights)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: the weights in {file} do not fit this model ({str(e)[:300]}...). "
                              "Resume with the run's own config (OUTPUT/config.yaml).") from None


def _load_optimizer(path: Path, tree: str, optimizer: torch.optim.Optimizer) -> None:
    if not (path / f"{tree}.json").is_file():
        raise CheckpointError(f"{path}: {tree}.json is missing; resume with the run's own config (OUTPUT/config.yaml)")
    state = _read_tree(path, tree)
    try:
        optimizer.load_state_dict(state)
    except (ValueError, KeyError, RuntimeError) as e:
        raise CheckpointError(f"{path}: the optimizer state in {tree}.json does not fit this optimizer ({e}); "
                              "resume with the run's own config (OUTPUT/config.yaml)") from None


_READ_ERRORS = (SafetensorError, OSError, ValueError, KeyError, TypeError, IndexError, AttributeError, RuntimeError)


def _read(file: Path, read: Any, arg: Any = None) -> Any:
    """``read(arg or file)``, turning any failure into a CheckpointError naming ``file``."""
    try:
        return read(file if arg is None else arg)
    except _READ_ERRORS as e:
        raise CheckpointError(f"{file}: cannot be read ({type(e).__name__}: {str(e)[:300]})") from None


def _read_tree(folder: Path, name: str) -> Any:
    try:
        return load_tree(folder, name)
    except SafetensorError as e:
        raise CheckpointError(f"{folder / (name + '.safetensors')}: cannot be read ({e})") from None
    except _READ_ERRORS as e:
        raise CheckpointError(f"{folder / (name + '.json')}: cannot be read ({type(e).__name__}: "
                              f"{str(e)[:300]})") from None
