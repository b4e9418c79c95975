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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from tcl_lite.checkpoints import checks, schema
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
    epoch_steps: list[int] = field(default_factory=list)  # optimizer steps of each completed epoch
    settings: dict[str, Any] = field(default_factory=dict)  # the run's config, flat (config.flat_settings)
    legacy: bool = False  # read from a trainer.json without "format" (no epoch_steps or settings recorded)

    def record(self) -> dict[str, Any]:
        """What trainer.json holds (``schema.TRAINER``)."""
        out = {"format": schema.TRAINER_FORMAT, **asdict(self)}
        out.pop("legacy")
        return out


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
    lists every file a checkpoint of its kind needs, each matches its checksum, and every file fits
    its schema (``schema.py``: types, shapes, ranges, counters that agree with each other)."""
    _verified(path)


def _verified(path: Path) -> dict[str, Any]:
    """``verify``; returns trainer.json's (checked) content."""
    manifest_path = path / "manifest.json"
    if not manifest_path.is_file():
        raise CheckpointError(f"{path}: no manifest.json (the save did not finish)")
    try:
        manifest = schema.read_json(manifest_path)
        schema.MANIFEST.check(manifest, "manifest.json")
    except schema.Invalid as e:
        raise CheckpointError(f"{path}: {e}") from None
    for name, digest in manifest.items():
        f = path / name
        if not f.is_file():
            raise CheckpointError(f"{path}: {name} is missing")
        try:
            intact = sha256(f) == digest
        except OSError as e:  # unreadable, or removed meanwhile
            raise CheckpointError(f"{path}: {name} cannot be read ({e.strerror or e})") from None
        if not intact:
            raise CheckpointError(f"{path}: {name} is corrupt (checksum mismatch)")
    try:
        return checks.check_files(path, manifest)
    except schema.Invalid as e:
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
                    process_index: int = 0, steps_per_epoch: int | None = None, keep_hyperparameters: bool = False,
                    ) -> tuple[TrainerState, dict[str, Any]]:
    """Restore ``models`` (unwrapped), ``optimizers`` and, when there are optimizers, the RNG of process
    ``process_index``; return the trainer and method state.

    Everything is read and checked before anything is restored: the files against their schemas
    (``verify``), the weights against the models (names, shapes, finite values), the optimizer state
    against the optimizers (groups, shapes, hyperparameters). Any failure is a CheckpointError naming
    the file, and leaves the models and optimizers as they were. ``keep_hyperparameters``: the
    optimizers' own hyperparameters (a config change the user allowed) replace the checkpoint's."""
    trainer_json = _verified(path)
    if steps_per_epoch is not None:
        try:
            checks.check_fits_data(trainer_json, steps_per_epoch)
        except checks.InvalidCheckpoint as e:
            raise CheckpointError(f"{path}: {e}") from None
    weights = {name: _read_weights(path, weights_file(i, name), net) for i, (name, net) in enumerate(models.items())}
    trainer = trainer_state(trainer_json)
    states = {name: _read_optimizer(path, optimizer_tree(i, name), opt, keep_hyperparameters,
                                    trainer_json.get("optimizer_states", {}).get(optimizer_tree(i, name)))
              for i, (name, opt) in enumerate(optimizers.items())}
    rng = None
    if optimizers:
        rank_file = path / f"rng_rank{process_index}.json"
        if not rank_file.exists():
            raise CheckpointError(f"{path}: no RNG state for process {process_index} (saved with "
                                  f"{trainer.num_processes} processes); resume with that many processes")
        rng = _read_tree(path, f"rng_rank{process_index}")
    method_state = read_method_state(path)
    for name, net in models.items():
        net.load_state_dict(weights[name])
    for name, opt in optimizers.items():
        opt.load_state_dict(states[name])
    if rng is not None:
        _read(path / f"rng_rank{process_index}.json", set_rng_state, rng)
    return trainer, method_state


def read_trainer(path: Path) -> TrainerState:
    """The trainer state of a checkpoint, verified (the whole checkpoint is checked first)."""
    return trainer_state(_verified(path))


def trainer_state(record: dict[str, Any]) -> TrainerState:
    """A checked trainer.json -> TrainerState (older records lack the newer fields)."""
    fields = TrainerState.__dataclass_fields__
    state = TrainerState(**{k: v for k, v in record.items() if k in fields and k != "legacy"})
    state.legacy = "format" not in record
    return state


def step_of(path: Path) -> int:
    m = STEP_DIR.match(path.name)
    return int(m.group(1)) if m else -1


def _read_weights(path: Path, file: str, net: nn.Module) -> dict[str, torch.Tensor]:
    """The weights in ``file``, checked to fit ``net`` exactly and to be finite."""
    if not (path / file).is_file():
        raise CheckpointError(f"{path}: {file} is missing (the checkpoint is of a method with other networks); "
                              "resume with the run's own config (OUTPUT/config.yaml)")
    weights = _read(path / file, lambda f: load_file(str(f)))
    own = net.state_dict()
    problems = ([f"{k} missing" for k in own if k not in weights] + [f"{k} unexpected" for k in weights if k not in own]
                + [f"{k}: shape {tuple(weights[k].shape)}, the model has {tuple(own[k].shape)}"
                   for k in own if k in weights and weights[k].shape != own[k].shape]
                + [f"{k}: dtype {weights[k].dtype}, the model has {own[k].dtype}"
                   for k in own if k in weights and weights[k].dtype != own[k].dtype])
    if problems:
        raise CheckpointError(f"{path}: the weights in {file} do not fit this model ({'; '.join(problems[:3])}"
                              f"{'...' if len(problems) > 3 else ''}). Resume with the run's own config "
                              "(OUTPUT/config.yaml).")
    _check_finite(path, file, weights)
    return weights


def _check_finite(path: Path, file: str, tensors: dict[str, Any]) -> None:
    for key, t in tensors.items():
        if isinstance(t, torch.Tensor) and t.is_floating_point() and not torch.isfinite(t).all():
            raise CheckpointError(f"{path}: {file}: {key} holds NaN/inf values (a checkpoint is written with "
                                  "finite values only)")


# Optimizer state entries that have their parameter's shape (torch's SGD and AdamW, bitsandbytes' 8-bit forms).
_PARAM_SHAPED = ("momentum_buffer", "exp_avg", "exp_avg_sq", "max_exp_avg_sq", "state1", "state2")


def _read_optimizer(path: Path, tree: str, optimizer: torch.optim.Optimizer, keep_hyperparameters: bool,
                    entries: int | None = None) -> dict[str, Any]:
    """The optimizer state of ``tree``, checked to fit ``optimizer``: its groups and their sizes, the shapes
    of per-parameter state, finite values, and (unless ``keep_hyperparameters``: then they are replaced
    by the optimizer's own) the same hyperparameters but the learning rate, which the schedule sets."""
    if not (path / f"{tree}.json").is_file():
        raise CheckpointError(f"{path}: {tree}.json is missing; resume with the run's own config (OUTPUT/config.yaml)")
    state = _read_tree(path, tree)
    where = f"{path}: {tree}.json"
    groups, own = state["param_groups"], optimizer.param_groups
    if [len(g["params"]) for g in groups] != [len(g["params"]) for g in own]:
        raise CheckpointError(f"{where}: its param_groups hold {[len(g['params']) for g in groups]} parameters, "
                              f"this optimizer {[len(g['params']) for g in own]}; resume with the run's own config "
                              "(OUTPUT/config.yaml)")
    params = {i: p for saved, mine in zip(groups, own) for i, p in zip(saved["params"], mine["params"])}
    if entries is not None and len(state["state"]) != entries:
        raise CheckpointError(f"{where}: state holds {len(state['state'])} entries, trainer.json's optimizer_states "
                              f"says {entries}")
    if type(getattr(optimizer, "optimizer", optimizer)).__module__.startswith("torch.optim"):
        kinds = {frozenset(entry) for entry in state["state"].values()}
        if len(kinds) > 1:
            raise CheckpointError(f"{where}: its state entries hold different fields ({sorted(map(sorted, kinds))}); "
                                  "a torch optimizer keeps the same ones for every parameter")
        nested = [f"state.{i}.{k}" for i, entry in state["state"].items() for k, v in entry.items()
                  if isinstance(v, dict)]
        if nested:
            raise CheckpointError(f"{where}: {nested[0]} is a mapping; a torch optimizer keeps tensors and numbers")
    for index, entry in state["state"].items():
        for key, value in entry.items():
            if key in _PARAM_SHAPED and isinstance(value, torch.Tensor) and value.shape != params[index].shape:
                raise CheckpointError(f"{where}: state.{index}.{key} ({tree}.safetensors) has shape "
                                      f"{tuple(value.shape)}, its parameter {tuple(params[index].shape)}")
            if key in _PARAM_SHAPED[:4] and isinstance(value, torch.Tensor) and value.dtype != params[index].dtype:
                raise CheckpointError(f"{where}: state.{index}.{key} ({tree}.safetensors) has dtype {value.dtype}, "
                                      f"its parameter {params[index].dtype}")
        _check_finite(path, f"{tree}.safetensors", {f"state.{index}.{k}": v for k, v in entry.items()})
    for i, (saved, mine) in enumerate(zip(groups, own)):
        for key in sorted(set(saved) | set(mine)):
            if key in ("params", "lr", "initial_lr"):
                continue
            if keep_hyperparameters:
                if key in mine:
                    saved[key] = mine[key]
                continue
            if _plain(saved.get(key)) != _plain(mine.get(key)):
                raise CheckpointError(f"{where}: param_groups[{i}].{key}={saved.get(key)!r}, but this run's optimizer "
                                      f"has {mine.get(key)!r} (optim.* differs from the run's, or the file was "
                                      "altered)")
    return state


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


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
