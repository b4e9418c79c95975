"""What a resume may change, decided before anything is built: the run's position against
``train.epochs``, and the settings that decide the training trajectory.

A checkpoint records the config it was trained with (``trainer.json``'s ``settings``). Resuming with
another value of a key that changes what the next steps compute (``train.batch_size``, accumulation,
precision, where augmentations run, the optimizer, the method's settings...) would silently lose the
exact continuation, so it is refused, naming each key, unless ``--allow-config-change``: then each
change is logged (train.log, status.json) and the run continues with the new values. Keys that only
change where files are, how often the run reports, or how it stops (``RESUME_FREE``) change freely;
the data-defining keys have their own check (``run_guard.DATA_KEYS``, ``--allow-data-change``).
"""

from __future__ import annotations

from typing import Any

from tcl_lite.checkpoints.reader import TrainerState
from tcl_lite.errors import CheckpointError, ConfigError
from tcl_lite.methods.base import Method

# Changing these keeps every training step as it was.
RESUME_FREE = (
    "output_dir", "data.root", "data.download", "data.num_workers", "data.verify_images", "data.cache_decoded",
    "train.time_budget", "train.log_every", "train.log_with", "train.eval_batch_size", "train.auto_micro_batch",
    "train.cpu", "train.nonfinite", "checkpoint.keep_last", "checkpoint.every_steps", "checkpoint.best_metric",
    "checkpoint.best_mode", "mlnt.feature_checkpoint",
)
# Its own rule (check_position); raising it is documented (the schedule is laid over the new length).
EPOCHS = "train.epochs"
AUTO = "auto"  # a key resolved at the first start (train.gradient_accumulation_steps=auto): the run keeps its number


def config_changes(recorded: dict[str, Any], now: dict[str, Any],
                   skip: tuple[str, ...] = ()) -> list[tuple[str, Any, Any]]:
    """``(key, run's value, new value)`` for every key whose change breaks the exact continuation
    (``skip``: keys another check owns), plus ``train.epochs`` (allowed, but stated)."""
    changes = []
    for key in sorted(set(recorded) & set(now)):
        old, new = recorded[key], now[key]
        if key in RESUME_FREE or key in skip or old == new or AUTO in (old, new):
            continue
        if isinstance(old, (int, float)) and isinstance(new, (int, float)) and not isinstance(old, bool) \
                and float(old) == float(new):
            continue
        changes.append((key, old, new))
    return changes


def describe(changes: list[tuple[str, Any, Any]]) -> str:
    return "; ".join(f"{key}: {old!r} -> {new!r}" for key, old, new in changes)


def check_config(recorded: dict[str, Any], now: dict[str, Any], allow: bool, where: str,
                 skip: tuple[str, ...] = ()) -> list[tuple[str, Any, Any]]:
    """The changes (see ``config_changes``); a CheckpointError naming them unless ``allow`` or all are
    ``train.epochs``."""
    changes = config_changes(recorded, now, skip)
    breaking = [c for c in changes if c[0] != EPOCHS]
    if breaking and not allow:
        raise ConfigError(
            f"refusing to resume {where} with settings that change its training steps: {describe(breaking)}. "
            "An exact continuation needs the run's values: drop those overrides (the run's settings are in its "
            "config.yaml), fork the checkpoint into a new run (--resume CHECKPOINT --output-dir NEW) with "
            "--allow-config-change, or pass --allow-config-change to continue here with the new values (each "
            "change is logged in train.log and status.json)")
    return changes


def check_position(state: TrainerState, epochs: int, where: str) -> None:
    """``train.epochs`` must not end the run before where it already is."""
    started = state.epoch + (1 if state.step_in_epoch else 0)
    if epochs < started:
        position = (f"{state.epoch} completed epochs" + (f" and {state.step_in_epoch} steps of epoch {state.epoch + 1}"
                                                          if state.step_in_epoch else "")
                    + f" (global step {state.global_step})")
        raise ConfigError(
            f"config key 'train.epochs': {epochs} is below where {where} is: {position}. Use train.epochs >= "
            f"{started} to continue it, or, for a shorter run, fork an earlier checkpoint into a new run "
            "(--resume RUN/checkpoints/step_N --output-dir NEW) or start afresh")


def legacy_epoch_steps(state: TrainerState, where: str) -> list[int]:
    """A checkpoint from before ``epoch_steps`` was recorded: the completed epochs' steps, split evenly
    (what the counters allow; the data check then compares them when the plan is fixed)."""
    before = state.global_step - state.step_in_epoch
    if state.epoch == 0:
        if before:
            raise CheckpointError(f"{where}: trainer.json: global_step={state.global_step} but step_in_epoch="
                                  f"{state.step_in_epoch} in the first epoch")
        return []
    if before < state.epoch:
        raise CheckpointError(f"{where}: trainer.json: {state.epoch} completed epochs cannot have {before} steps")
    per, extra = divmod(before, state.epoch)
    return [per + (1 if e >= state.epoch - extra else 0) for e in range(state.epoch)]


def check_method_state(method_cls: type[Method], loaded: dict[str, Any]) -> None:
    """A method that keeps no state (CE) has none in its checkpoints either; the others check their own
    keys and shapes in ``load_state_dict``."""
    if method_cls.state_dict is Method.state_dict and loaded:
        raise CheckpointError(f"method.json holds a state ({', '.join(sorted(map(str, loaded))[:5])}), but method "
                              f"{method_cls.name!r} keeps none: the file was altered or belongs to another method")
