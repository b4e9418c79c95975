"""Decisions about a run directory, made before anything in it is written.

- Resume: checkpoints present but none usable -> refused with each checkpoint and its reason; the
  directory is not touched. ``--restart`` moves the old files into ``OUTPUT/previous-<time>/``.
- Data: the keys that define the data (and a hash of the noisy labels) are kept in
  ``OUTPUT/data_fingerprint.json``; resuming with other values is refused, naming each changed key,
  unless ``--allow-data-change``.
- One writer: the main process locks ``OUTPUT/.lock`` before the first write (see run_lock.py); the
  other ranks write nothing before the barrier that follows it.
- Space: an unwritable output directory or a disk without room for a checkpoint is a clear error
  naming the path and the size of a checkpoint (estimated from the parameters).
- Forks: resuming a checkpoint of another run directory continues in an empty one (run_fork.py).
- Changes on resume: the run's position against train.epochs, and the settings that decide its
  steps, are checked against the checkpoint's record (resume_checks.py).
- Leftovers: renames a crash interrupted are completed or rolled back once the directory is locked
  (leftovers.py); a refused start removes the directory it created, so it leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from tcl_lite.checkpoints import reader, schema
from tcl_lite.checkpoints.finder import checkpoints_root, find_checkpoint
from tcl_lite.checkpoints.writer import CheckpointManager
from tcl_lite.config import Config, flat_settings, to_dict
from tcl_lite.engine import leftovers, resume_checks, run_fork
from tcl_lite.engine.run_lock import LOCK_NAME, RunLock, RunLockedError, exit_when_launcher_dies
from tcl_lite.errors import CheckpointError, ConfigError, NoCheckpointError

FINGERPRINT = "data_fingerprint.json"
# What decides which samples and labels a run trains on. data.root is left out on purpose: the data
# moves between sessions (/content/data, a Drive mount...); the noisy-label hash catches a change
# of the files themselves.
DATA_KEYS = ("seed", "data.dataset", "data.image_size", "data.digits_test_fraction", "data.train_list",
             "data.test_list", "data.num_classes", "data.noise_type", "data.noise_rate", "data.noise_file",
             "data.noise_key", "data.train_subset", "data.test_subset", "data.val_fraction", "data.val_list")
ASIDE_PREFIX = "previous-"


def data_keys(values: dict) -> dict[str, Any]:
    """The data-defining keys of a (nested) config dict; keys it lacks are left out."""
    out = {}
    for key in DATA_KEYS:
        node: Any = values
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node is not None:
            out[key] = node
    return out


def labels_sha256(labels: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(labels, dtype=np.int64).tobytes()).hexdigest()


def checkpoint_bytes(models: Any, optimizer: Any = None) -> int:
    """An upper estimate of one checkpoint: the weights of every network (one module or a list),
    optimizer state of up to two tensors per parameter (AdamW; SGD keeps one, 8-bit optimizers a
    quarter) and a method state as large as the networks (MLNT's teacher)."""
    models = models if isinstance(models, (list, tuple)) else [models]
    weights = sum(t.numel() * t.element_size() for m in models for t in m.state_dict().values())
    params = sum(p.numel() * 4 for m in models for p in m.parameters())
    return int(weights * 2 + params * 2 + (1 << 20))


def move_aside(out: Path) -> Path | None:
    """Move everything in ``out`` (but the lock and earlier asides) into ``out/previous-<time>/``."""
    entries = [e for e in out.iterdir() if e.name != LOCK_NAME and not e.name.startswith(ASIDE_PREFIX)]
    if not entries:
        return None
    dest = out / f"{ASIDE_PREFIX}{time.strftime('%Y%m%d-%H%M%S')}"
    n = 1
    while dest.exists():
        n += 1
        dest = out / f"{ASIDE_PREFIX}{time.strftime('%Y%m%d-%H%M%S')}-{n}"
    dest.mkdir()
    for e in entries:
        os.replace(e, dest / e.name)
    return dest


def all_invalid_error(root: Path) -> CheckpointError:
    """Checkpoints under ``root`` but none usable: each with its reason, and the ways out."""
    lines = "\n".join(f"  {p.name}: {why}" for p, why in reader.diagnose(root))
    run = root.parent
    return CheckpointError(
        f"{run} holds checkpoints but none is usable, so nothing was resumed and nothing there was changed:\n"
        f"{lines}\nFix: restore intact copies (e.g. sync the folder again), resume from one checkpoint with "
        f"--resume PATH, or start afresh with --restart (moves the old files to {run}/{ASIDE_PREFIX}<time>/; "
        "nothing is deleted)")


class RunGuard:
    """Holds a run directory for one ``train`` call; ``close`` releases it."""

    def __init__(self, cfg: Config, accelerator: Any, restart: bool, allow_data_change: bool, log: Any,
                 allow_config_change: bool = False) -> None:
        self.cfg, self.accelerator, self.log = cfg, accelerator, log
        self.out = Path(cfg.output_dir)
        self.restart, self.allow_data_change, self.allow_config_change = restart, allow_data_change, allow_config_change
        self.lock = RunLock(self.out) if accelerator.is_main_process else None
        self.seen: list[str] = []
        self.source: Path | None = None  # the run directory the resumed checkpoint belongs to
        self.forking = False  # resuming another directory's checkpoint here (run_fork.py)
        self.config_changes: list[tuple[str, Any, Any]] = []
        self.created = _first_missing(self.out) if accelerator.is_main_process else None
        if accelerator.num_processes > 1:
            exit_when_launcher_dies()

    def close(self) -> None:
        """Release the lock; a directory this start created and left empty (a refused start) goes again."""
        if self.lock is not None:
            self.lock.release()
        if self.created is not None:
            _remove_empty(self.out, self.created)

    # -- before data loading: read only (but the lock of an existing run directory) ------------------
    def lock_existing(self) -> None:
        """Lock a run directory that already exists, so that the resume decision is made under the
        lock (the lock file goes away again if the start is refused). A new directory is created
        and locked only after the data checks (``take``)."""
        if self.lock is not None and self.out.is_dir():
            try:
                self.lock.acquire(self.log)
            except RunLockedError:
                raise
            except OSError:
                return  # unwritable: ``take`` reports it with the size a checkpoint needs
            leftovers.recover(self.out, self.log.echo if hasattr(self.log, "echo") else self.log)

    def find_resume_point(self, ckpts: CheckpointManager, resume: bool | str | None) -> Path | None:
        """The checkpoint to resume from (None: a new run). Nothing is written before this."""
        steps = ckpts.list_steps()
        self.seen = [p.name for p in steps]
        if not resume:
            if steps and not self.restart:
                raise CheckpointError(f"{ckpts.root.parent} already holds checkpoints ({steps[-1].name}); pass "
                                      "--resume to continue that run, --restart to move its files aside and "
                                      "start afresh, or choose another --output-dir")
            return None
        if resume is True:
            self._refuse_restart()
            if not steps:
                self.log(f"no checkpoint in {ckpts.root} yet: starting a new run")
                return None
            path = ckpts.newest_valid(self.log)
            if path is None:
                raise all_invalid_error(ckpts.root)
            self.source = self.out
            return path
        path = self._named_checkpoint(Path(resume))
        self.source = run_fork.run_dir_of(path)
        if run_fork.same_dir(self.source, self.out):
            self._refuse_restart()
            return path
        self.forking = True  # another directory's checkpoint: continued in an empty one
        run_fork.refuse_busy_target(self.out, self.source or path, self.restart)
        return path

    def _refuse_restart(self) -> None:
        if self.restart:
            raise ConfigError("--restart (move the old run aside and start afresh) and --resume (continue it) "
                              "exclude each other; pass one of them (--restart with --resume only forks another "
                              "run's checkpoint into this directory)")

    def _named_checkpoint(self, path: Path) -> Path:
        if not path.is_dir():
            raise CheckpointError(f"--resume {path}: no such checkpoint or run directory")
        try:  # a run directory: its newest valid checkpoint; a checkpoint named explicitly must be intact
            return find_checkpoint(path, "final", log=self.log)
        except NoCheckpointError:
            root = checkpoints_root(path)
            if root is None:  # a folder without checkpoint files: verify says which are missing
                reader.verify(path)
                raise
            raise (all_invalid_error(root) if reader.list_steps(root) else
                   CheckpointError(f"no checkpoint under {root}")) from None

    def check_resume_settings(self, resume_from: Path | None) -> None:
        """The run's position against train.epochs, and the settings its checkpoint was trained with
        against this config (resume_checks.py); before anything is built."""
        if resume_from is None:
            return
        state = reader.read_trainer(resume_from)
        resume_checks.check_position(state, self.cfg.train.epochs, str(resume_from))
        recorded = state.settings or self._stored_config()
        self.config_changes = resume_checks.check_config(recorded, flat_settings(self.cfg), self.allow_config_change,
                                                         str(resume_from), skip=DATA_KEYS)
        for key, old, new in self.config_changes:
            self.log(f"config change on resume: {key}: {old!r} -> {new!r}"
                     + (" (the schedule is laid over the new length)" if key == resume_checks.EPOCHS else ""))

    def _stored_config(self) -> dict[str, Any]:
        """A run from before checkpoints recorded their settings: the config.yaml of its last start."""
        path = (self.source or self.out) / "config.yaml"
        try:
            values = yaml.safe_load(path.read_text()) if path.is_file() else None
        except (OSError, ValueError, yaml.YAMLError):
            return {}
        return _flatten(values) if isinstance(values, dict) else {}

    def fork(self, checkpoint: Path) -> None:
        """Copy what continuing ``checkpoint`` needs into this (empty) run directory (main process)."""
        if self.forking and self.accelerator.is_main_process:
            run_fork.fork(self.out, checkpoint, self.log)

    def check_data_keys(self, resume_from: Path | None) -> None:
        """Resuming with other data-defining values than the run's: refused, naming each key."""
        if resume_from is None or self.allow_data_change:
            return
        stored = self._stored()
        if stored is None:
            return
        now = data_keys(to_dict(self.cfg))
        changed = [f"{k}: {stored['keys'][k]!r} -> {now[k]!r}" for k in DATA_KEYS
                   if k in stored["keys"] and k in now and stored["keys"][k] != now[k]]
        if changed:
            raise CheckpointError(
                f"refusing to resume {self.out} with other data settings than the run was trained on: "
                + "; ".join(changed) + ". Resume with the run's values (drop those overrides; the run's "
                f"settings are in {self.out / 'config.yaml'}), start a new run in another --output-dir, or pass "
                "--allow-data-change to continue on the new data anyway")

    def _stored(self) -> dict | None:
        """The data settings of the run resumed (a fork: of the run it comes from)."""
        run = self.source or self.out
        path = run / FINGERPRINT
        if path.is_file():
            try:
                return schema.read_checked(path, schema.FINGERPRINT)
            except schema.Invalid as e:
                raise CheckpointError(f"{run}: {e}. Restore the file (e.g. sync the folder again), or pass "
                                      "--allow-data-change to resume without comparing the data settings") from None
        try:
            if (run / "config.yaml").is_file():  # a run from before fingerprints
                return {"keys": data_keys(yaml.safe_load((run / "config.yaml").read_text()) or {})}
        except (ValueError, yaml.YAMLError, AttributeError) as e:
            self.log(f"WARNING: cannot read the run's data settings ({e}); not comparing them")
        return None

    def check_data_labels(self, resume_from: Path | None, noisy_labels: np.ndarray) -> None:
        """Same keys but other labels (the files under data.root or data.noise_file changed): refused."""
        if resume_from is None or self.allow_data_change:
            return
        stored = self._stored() or {}
        sha = stored.get("noisy_labels_sha256")
        labels = (self.source or self.out) / "noisy_labels.npy"
        if sha is None and labels.is_file():
            try:
                sha = labels_sha256(schema.read_labels(labels))
            except schema.Invalid:
                sha = None
        if sha is not None and sha != labels_sha256(noisy_labels):
            raise CheckpointError(
                f"refusing to resume {self.out}: the training labels built now differ from the run's "
                f"({self.out / 'noisy_labels.npy'}), so the data under data.root or data.noise_file changed. "
                "Restore the run's data, start a new run in another --output-dir, or pass --allow-data-change")

    # -- the first write ---------------------------------------------------------------------------
    def check_normalization(self, resume_from: Path | None, mean: tuple, std: tuple) -> None:
        """Other mean/std than the run was trained with (OUTPUT/data.json; e.g. a run from before
        data.normalization=auto picked the method's reference constants): refused, naming the fix."""
        if resume_from is None or self.allow_data_change or not (self.out / "data.json").is_file():
            return
        try:
            info = json.loads((self.out / "data.json").read_text())
            trained = (tuple(info["mean"]), tuple(info["std"]))
        except (ValueError, KeyError, TypeError):
            return
        if all(np.allclose(a, b, rtol=0, atol=1e-9) for a, b in zip(trained, (mean, std))):
            return
        raise CheckpointError(
            f"refusing to resume {self.out}: it was trained on images normalised with mean {list(trained[0])}, std "
            f"{list(trained[1])} ({self.out / 'data.json'}), this config gives mean {list(mean)}, std {list(std)} "
            f"(data.normalization={self.cfg.data.normalization!r}). Resume with the run's constants "
            "(data.normalization=dataset for a run from before data.normalization existed, or the set it used), "
            "or pass --allow-data-change")

    def take(self, ckpts: CheckpointManager, model: Any, optimizer: Any) -> None:
        """Lock the run directory, check the space, and (``--restart``) move the old run aside."""
        need = checkpoint_bytes(model, optimizer)
        ckpts.estimated_bytes = need
        if self.lock is None:
            return
        size = f"about {need / 2**20:.1f} MiB"
        if self.lock.held:  # taken before the resume decision
            self._check_space(need, size)
            self._move_aside_on_restart()
            return
        try:
            self.lock.acquire(self.log)
        except RunLockedError:
            raise
        except OSError as e:
            raise CheckpointError(f"cannot write the run directory {self.out}: {e.strerror or e}. Choose a "
                                  f"writable --output-dir; each checkpoint of this run needs {size}") from None
        if [p.name for p in ckpts.list_steps()] != self.seen and not self.restart:
            raise CheckpointError(f"{self.out} changed while this process was starting (another process wrote "
                                  "checkpoints there); start again")
        self._check_space(need, size)
        self._move_aside_on_restart()

    def _move_aside_on_restart(self) -> None:
        if self.restart:
            moved = move_aside(self.out)
            if moved is not None:
                self.log(f"--restart: moved the previous files of {self.out} to {moved} (nothing deleted)")

    def _check_space(self, need: int, size: str) -> None:
        free = shutil.disk_usage(self.out).free
        keep = self.cfg.checkpoint.keep_last + 2  # the rolling ones, the one being written, best
        if free < need:
            raise CheckpointError(
                f"not enough free space for a checkpoint in {self.out}: {free / 2**20:.1f} MiB free, each "
                f"checkpoint of this run needs {size} ({keep} of them at once with checkpoint.keep_last="
                f"{self.cfg.checkpoint.keep_last}). Free space or choose another --output-dir")
        if free < need * keep:
            self.log(f"WARNING: {free / 2**20:.1f} MiB free in {self.out}; the run may hold {keep} checkpoints "
                     f"of {size} each")

    def write_fingerprint(self, noisy_labels: np.ndarray) -> None:
        """``OUTPUT/data_fingerprint.json``: the data-defining keys and a hash of the training labels."""
        record = {"keys": data_keys(to_dict(self.cfg)), "noisy_labels_sha256": labels_sha256(noisy_labels),
                  "train_samples": int(len(noisy_labels))}
        tmp = self.out / f".tmp-{FINGERPRINT}"
        tmp.write_text(json.dumps(record, indent=1))
        os.replace(tmp, self.out / FINGERPRINT)



def _flatten(node: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in node.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _first_missing(path: Path) -> Path | None:
    """The top-most folder of ``path`` that does not exist yet (what creating it would create), or None."""
    missing = None
    for p in [path, *path.parents]:
        if p.exists():
            break
        missing = p
    return missing


def _remove_empty(path: Path, top: Path) -> None:
    """Remove ``path`` and its parents up to ``top`` while they are empty (what a refused start created)."""
    for p in [path, *path.parents]:
        try:
            p.rmdir()
        except OSError:  # not empty (the run wrote files), or gone
            return
        if p == top:
            return
