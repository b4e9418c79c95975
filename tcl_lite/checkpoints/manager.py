"""Rolling, atomic, verifiable checkpoints that never unpickle.

Layout of ``OUTPUT/checkpoints/``::

    step_00000120/            one complete checkpoint (the newest ``keep_last`` are kept)
        model.safetensors     weights of the method's first model (``model.NAME.safetensors``: the others)
        optimizer.{json,safetensors}   its optimizer (``optimizer.NAME.*``: the others')
        method.{json,safetensors}      the method's state (TCL's w and prototypes, MLNT's teacher...)
        trainer.json          epoch, step in epoch, global step, best metric, world size
        rng_rank{R}.json(+.safetensors)  python / numpy / torch / cuda RNG of each process
        manifest.json         sha256 of every file above; written last
    best/                     model + method state of the best evaluation so far

A checkpoint is written under ``.tmp-NAME`` and renamed when complete, so a crash mid-save leaves
the previous checkpoints untouched; a checkpoint whose manifest does not match its files is
reported and skipped on resume.

Accelerate's ``save_state``/``load_state`` is not used because it unpickles custom state with
``weights_only=False``, swallows a failure to restore the RNG (which silently breaks exact
resume) and writes in place (not atomic).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from tcl_lite.checkpoints import checks
from tcl_lite.checkpoints.checks import STEP_DIR
from tcl_lite.checkpoints.state_io import load_tree, save_tree
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


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


Models = dict[str, nn.Module]
Optimizers = dict[str, torch.optim.Optimizer]


def _named(x: Any) -> dict[str, Any]:
    """One model/optimizer (a one-network method) or a dict of them by name -> a dict."""
    if x is None:
        return {}
    return x if isinstance(x, dict) else {"model": x}


def weights_file(index: int, name: str) -> str:
    """The first model's weights are ``model.safetensors`` (what predict / export read)."""
    return "model.safetensors" if index == 0 else f"model.{name}.safetensors"


def optimizer_tree(index: int, name: str) -> str:
    return "optimizer" if index == 0 else f"optimizer.{name}"


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class CheckpointManager:
    """Writes, prunes, finds and restores checkpoints of one run directory."""

    def __init__(self, accelerator: Any, root: Path, keep_last: int) -> None:
        self.accelerator = accelerator
        self.root = Path(root)
        self.keep_last = keep_last
        self.estimated_bytes: int | None = None  # of one checkpoint, for the out-of-space message

    # -- writing -------------------------------------------------------------------------------
    def save(self, name: str, model: nn.Module | Models, optimizer: torch.optim.Optimizer | Optimizers | None,
             method_state: dict[str, Any], trainer: TrainerState, extra: dict[str, Any] | None = None) -> Path:
        """Write checkpoint ``name`` atomically (collective: every process must call it).

        A full disk or a read-only folder is a CheckpointError that names the path and the size a
        checkpoint needs; the partial save is removed and the previous checkpoints stay intact."""
        try:
            return self._write(name, _named(model), _named(optimizer), method_state, trainer, extra)
        except (OSError, SafetensorError) as e:  # safetensors reports a failed write as its own error
            shutil.rmtree(self.root / f".tmp-{name}", ignore_errors=True)
            why = getattr(e, "strerror", None) or str(e)
            size = (f"about {self.estimated_bytes / 2**20:.1f} MiB" if self.estimated_bytes
                    else "as much as the previous one")
            raise CheckpointError(f"cannot write checkpoint {self.root / name}: {why}. A checkpoint of this "
                                  f"run needs {size}; free space there (or make it writable) and continue "
                                  "with --resume: the previous checkpoints are intact") from None

    def _write(self, name: str, models: Models, optimizers: Optimizers, method_state: dict[str, Any],
               trainer: TrainerState, extra: dict[str, Any] | None) -> Path:
        acc = self.accelerator
        final, tmp = self.root / name, self.root / f".tmp-{name}"
        if acc.is_main_process:
            self.root.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
        acc.wait_for_everyone()
        if optimizers:  # full (resumable) checkpoints carry every process's RNG
            save_tree(tmp, f"rng_rank{acc.process_index}", rng_state())
        for i, (model_name, model) in enumerate(models.items()):
            weights = acc.get_state_dict(model)  # collective under some distributed backends
            if acc.is_main_process:
                save_file({k: v.detach().to("cpu", copy=True).contiguous() for k, v in weights.items()},
                          str(tmp / weights_file(i, model_name)))
        if acc.is_main_process:
            for i, (opt_name, optimizer) in enumerate(optimizers.items()):
                save_tree(tmp, optimizer_tree(i, opt_name), optimizer.state_dict())
            save_tree(tmp, "method", method_state)
            (tmp / "trainer.json").write_text(json.dumps({**asdict(trainer), **(extra or {})}, indent=1))
        acc.wait_for_everyone()
        if acc.is_main_process:
            files = sorted(p for p in tmp.iterdir() if p.is_file())
            manifest = {p.name: _sha256(p) for p in files}
            (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
            for p in tmp.iterdir():
                with open(p, "rb") as f:
                    os.fsync(f.fileno())
            if final.exists():  # re-saving the same name (e.g. `best`): move the old one aside first
                old = self.root / f".old-{name}"
                shutil.rmtree(old, ignore_errors=True)
                os.replace(final, old)
                os.replace(tmp, final)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, final)
            _fsync_dir(self.root)
            self._prune()
        acc.wait_for_everyone()
        return final

    def _prune(self) -> None:
        steps = self.list_steps()
        for path in steps[:-self.keep_last]:
            shutil.rmtree(path, ignore_errors=True)
        for stale in self.root.glob(".tmp-*"):  # left by a crash mid-save
            shutil.rmtree(stale, ignore_errors=True)

    # -- finding -------------------------------------------------------------------------------
    def list_steps(self) -> list[Path]:
        """Rolling checkpoints, oldest first."""
        if not self.root.is_dir():
            return []
        return sorted((p for p in self.root.iterdir() if p.is_dir() and STEP_DIR.match(p.name)),
                      key=lambda p: int(STEP_DIR.match(p.name).group(1)))

    @staticmethod
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
                intact = _sha256(f) == digest
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

    def diagnose(self) -> list[tuple[Path, str]]:
        """Every rolling checkpoint, newest first, with why it is unusable ('' when it verifies)."""
        report = []
        for path in reversed(self.list_steps()):
            try:
                self.verify(path)
                report.append((path, ""))
            except CheckpointError as e:
                report.append((path, str(e).removeprefix(f"{path}: ")))
        return report

    def newest_valid(self, log: Any = print) -> Path | None:
        """The newest checkpoint that verifies; each corrupt newer one is reported and skipped."""
        for path in reversed(self.list_steps()):
            try:
                self.verify(path)
                return path
            except CheckpointError as e:
                log(f"WARNING: skipping checkpoint {path.name}: {e}; trying the previous one")
        return None

    # -- restoring -----------------------------------------------------------------------------
    def load(self, path: Path, model: nn.Module | Models, optimizer: torch.optim.Optimizer | Optimizers | None,
             steps_per_epoch: int | None = None) -> tuple[TrainerState, dict[str, Any]]:
        """Restore the models, optimizers and this process's RNG; return trainer and method state.

        Any failure to read a file (a damaged safetensors header, a truncated JSON...) is a
        CheckpointError naming the file."""
        self.verify(path)
        acc = self.accelerator
        for i, (name, net) in enumerate(_named(model).items()):
            _load_weights(path, weights_file(i, name), acc.unwrap_model(net))
        trainer_json = _read(path / "trainer.json", lambda f: json.loads(f.read_text()))
        if steps_per_epoch is not None:
            try:
                checks.check_fits_data(trainer_json, steps_per_epoch)
            except checks.InvalidCheckpoint as e:
                raise CheckpointError(f"{path}: {e}") from None
        fields = TrainerState.__dataclass_fields__
        trainer = TrainerState(**{k: v for k, v in trainer_json.items() if k in fields})
        optimizers = _named(optimizer)
        for i, (name, opt) in enumerate(optimizers.items()):
            _load_optimizer(path, optimizer_tree(i, name), opt)
        if optimizers:
            rank_file = path / f"rng_rank{acc.process_index}.json"
            if rank_file.exists():
                rng = _read_tree(path, f"rng_rank{acc.process_index}")
                _read(rank_file, set_rng_state, rng)
            else:
                raise CheckpointError(f"{path}: no RNG state for process {acc.process_index} (saved with "
                                      f"{trainer.num_processes} processes); resume with that many processes")
        return trainer, _read_tree(path, "method")

    def load_with_fallback(self, path: Path, model: nn.Module | Models,
                           optimizer: torch.optim.Optimizer | Optimizers | None, log: Any,
                           steps_per_epoch: int | None = None, fallback: bool = True,
                           validate: Any = None) -> tuple[Path, TrainerState, dict[str, Any]]:
        """``load(path)``; when that fails and ``fallback``, each older sibling checkpoint in turn,
        with a warning naming what failed. ``validate(trainer, method_state)`` may reject a loaded
        checkpoint with a CheckpointError too. Returns the checkpoint actually restored."""
        older = [p for p in reversed(self.list_steps_in(path.parent)) if _step_of(p) < _step_of(path)]
        candidates = [path] + (older if fallback and STEP_DIR.match(path.name) else [])
        failures = []
        for candidate in candidates:
            try:
                trainer, method_state = self.load(candidate, model, optimizer, steps_per_epoch)
                if validate is not None:
                    try:
                        validate(trainer, method_state)
                    except CheckpointError as e:
                        raise CheckpointError(f"{candidate}: {e}") from None
                return candidate, trainer, method_state
            except CheckpointError as e:
                failures.append(str(e))
                if candidate is not candidates[-1]:
                    log(f"WARNING: cannot load checkpoint {candidate.name}: {e}; trying the previous one")
        if len(failures) == 1:
            raise CheckpointError(failures[0])
        raise CheckpointError("no checkpoint could be loaded:\n  " + "\n  ".join(failures))

    def list_steps_in(self, folder: Path) -> list[Path]:
        return CheckpointManager(self.accelerator, folder, self.keep_last).list_steps()


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


def _step_of(path: Path) -> int:
    m = STEP_DIR.match(path.name)
    return int(m.group(1)) if m else -1


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
