"""Writing checkpoints: rolling, atomic, verifiable, never unpickled (``reader.py`` reads them, with the
layout of a checkpoint folder).

A checkpoint is written under ``.tmp-NAME`` and renamed when complete, so a crash mid-save leaves
the previous checkpoints untouched; a checkpoint whose manifest does not match its files is
reported and skipped on resume. ``CheckpointManager`` is bound to the run's accelerator (collective
saves, this process's RNG); it resumes through the reader.

Accelerate's ``save_state``/``load_state`` is not used because it unpickles custom state with
``weights_only=False``, swallows a failure to restore the RNG (which silently breaks exact
resume) and writes in place (not atomic).
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import save_file
from torch import nn

from tcl_lite.checkpoints import reader
from tcl_lite.checkpoints.checks import STEP_DIR
from tcl_lite.checkpoints.reader import TrainerState, optimizer_tree, weights_file
from tcl_lite.checkpoints.state_io import save_tree
from tcl_lite.errors import CheckpointError


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


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


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
            counts = {}
            for i, (opt_name, optimizer) in enumerate(optimizers.items()):
                state = optimizer.state_dict()
                save_tree(tmp, optimizer_tree(i, opt_name), state)
                counts[optimizer_tree(i, opt_name)] = len(state["state"])
            save_tree(tmp, "method", method_state)
            record = {**trainer.record(), **(extra or {}), **({"optimizer_states": counts} if counts else {})}
            (tmp / "trainer.json").write_text(json.dumps(record, indent=1))
        acc.wait_for_everyone()
        if acc.is_main_process:
            files = sorted(p for p in tmp.iterdir() if p.is_file())
            manifest = {p.name: reader.sha256(p) for p in files}
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
        for path in steps[:-self.keep_last]:  # renamed first: a kill mid-removal leaves no half checkpoint
            doomed = self.root / f".del-{path.name}"
            os.replace(path, doomed)
            shutil.rmtree(doomed, ignore_errors=True)
        for stale in self.root.glob(".tmp-*"):  # left by a crash mid-save
            shutil.rmtree(stale, ignore_errors=True)

    # -- finding and restoring (through the reader) ------------------------------------------------
    def list_steps(self) -> list[Path]:
        """Rolling checkpoints, oldest first."""
        return reader.list_steps(self.root)

    verify = staticmethod(reader.verify)

    def diagnose(self) -> list[tuple[Path, str]]:
        """Every rolling checkpoint, newest first, with why it is unusable ('' when it verifies)."""
        return reader.diagnose(self.root)

    def newest_valid(self, log: Any = print) -> Path | None:
        """The newest checkpoint that verifies; each corrupt newer one is reported and skipped."""
        return reader.newest_valid(self.root, log)

    def load(self, path: Path, model: nn.Module | Models, optimizer: torch.optim.Optimizer | Optimizers | None,
             steps_per_epoch: int | None = None, keep_hyperparameters: bool = False,
             ) -> tuple[TrainerState, dict[str, Any]]:
        """Restore the models, optimizers and this process's RNG; return trainer and method state."""
        acc = self.accelerator
        models = {name: acc.unwrap_model(net) for name, net in _named(model).items()}
        return reader.load_checkpoint(path, models, _named(optimizer), acc.process_index, steps_per_epoch,
                                      keep_hyperparameters)

    def load_with_fallback(self, path: Path, model: nn.Module | Models,
                           optimizer: torch.optim.Optimizer | Optimizers | None, log: Any,
                           steps_per_epoch: int | None = None, fallback: bool = True,
                           validate: Any = None, keep_hyperparameters: bool = False,
                           ) -> tuple[Path, TrainerState, dict[str, Any]]:
        """``load(path)``; when that fails and ``fallback``, each older sibling checkpoint in turn,
        with a warning naming what failed. ``validate(trainer, method_state)`` may reject a loaded
        checkpoint with a CheckpointError too. Returns the checkpoint actually restored."""
        older = [p for p in reversed(reader.list_steps(path.parent)) if reader.step_of(p) < reader.step_of(path)]
        candidates = [path] + (older if fallback and STEP_DIR.match(path.name) else [])
        failures = []
        for candidate in candidates:
            try:
                trainer, method_state = self.load(candidate, model, optimizer, steps_per_epoch, keep_hyperparameters)
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

