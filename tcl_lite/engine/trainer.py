"""The training loop. Accelerate places everything on the device, autocasts (mixed precision),
scales the loss (fp16), shards data over processes and all-reduces gradients; the method declares
its networks and its epoch's phases and computes its losses; this file only orders the work.
Read ``_loop`` top to bottom for one epoch, ``_optimizer_step`` for one step.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate.utils import set_seed

from tcl_lite import signals
from tcl_lite.checkpoints.reader import TrainerState, check_method, set_rng_state
from tcl_lite.checkpoints.writer import CheckpointManager, rng_state
from tcl_lite.config import Config, flat_settings, parse_time_budget, save_config, to_dict
from tcl_lite.data import build_data
from tcl_lite.engine.epoch_data import EpochData, PhaseStep
from tcl_lite.engine.estimate import announce_estimate
from tcl_lite.engine.evaluate import eval_split_loaders, evaluate, no_best_notice, write_data_info
from tcl_lite.engine.gpu_check import check_gpu
from tcl_lite.engine.micro_batches import resolve_auto_micro_batches
from tcl_lite.engine.nonfinite import NonFiniteGuard, weights_finite
from tcl_lite.engine.oom import step_adapting_to_oom
from tcl_lite.engine.optim import lr_at, peak_lr, set_lr
from tcl_lite.engine.placement import place
from tcl_lite.engine.resume_checks import check_method_state, check_position, legacy_epoch_steps
from tcl_lite.engine.run_guard import DATA_KEYS, RunGuard
from tcl_lite.engine.run_setup import build_networks, build_optimizers, make_accelerator, prepare
from tcl_lite.engine.stopper import Stopper
from tcl_lite.engine.trust_monitor import TrustMonitor
from tcl_lite.errors import CheckpointError, NonFiniteLossError
from tcl_lite.methods import Method, StepInfo, TrainContext, get_method
from tcl_lite.models.layout import check_checkpoint_layout, layout_record
from tcl_lite.runlog.eta import EpochClock
from tcl_lite.runlog.launch import continue_command
from tcl_lite.runlog.metrics import MetricsLog, read_metrics
from tcl_lite.runlog.progress import TrainProgress
from tcl_lite.runlog.run_log import RunLog
from tcl_lite.runlog.run_status import RunStatus
from tcl_lite.runlog.trackers import step_scalars

_make_accelerator = make_accelerator  # the name tests and benchmarks use


def _flat(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v if isinstance(v, (int, float, str, bool)) else str(v)
    return out


@dataclass
class Run:
    """Everything one ``train`` call works with, once built."""

    cfg: Config
    out: Path
    accelerator: Any
    method: Method
    ctx: TrainContext
    data: EpochData
    ckpts: CheckpointManager
    state: TrainerState
    log: RunLog
    status: RunStatus
    stopper: Stopper
    max_lr: float
    eval_loaders: dict[str, Any]
    metrics_log: MetricsLog
    progress: Any = None
    nonfinite: Any = None
    trust: Any = None  # TrustMonitor
    metrics: dict[str, float] = field(default_factory=dict)
    lr: float = 0.0


def train(cfg: Config, resume: bool | str | None = None, restart: bool = False,
          allow_data_change: bool = False, allow_config_change: bool = False, estimate: bool = True
          ) -> dict[str, float]:
    """Run (or continue) one training run; returns the last evaluation's metrics. The run directory's
    status.json says how it ended (finished, stopped by the time budget or a signal, failed).

    ``resume``: True (this run directory) or a path (a checkpoint or run directory; another run's is
    forked into this one, see engine/run_fork.py); ``restart``: move an existing run's files aside and
    start afresh; ``allow_data_change`` / ``allow_config_change``: resume even though the data-defining
    settings / the settings that decide the training steps changed (engine/run_guard.py,
    engine/resume_checks.py); ``estimate``: log the expected time per epoch and peak memory before the
    first epoch (``engine/estimate.py``; off when the caller printed its own). SIGTERM and a first Ctrl-C
    stop at the next step with a checkpoint."""
    status = RunStatus(Path(cfg.output_dir))
    try:
        with signals.handled(), contextlib.ExitStack() as cleanup:
            run = _start(cfg, resume, restart, (allow_data_change, allow_config_change), cleanup, status, estimate)
            if run.stopper.signal_received():  # SIGTERM / Ctrl-C already during start-up
                return _stopped_at_start(run)
            return _loop(run)
    except BaseException as e:
        status.failed(e)  # only once this process has started the run
        raise
    finally:
        status.close()


def _start(cfg: Config, resume: bool | str | None, restart: bool, allow: tuple[bool, bool],
           cleanup: contextlib.ExitStack, status: RunStatus, estimate: bool = True) -> Run:
    """Decide fresh run, resume or fork (before anything is written), build data, networks, optimizers
    and the method, restore the checkpoint, then write the run directory's files."""
    out = Path(cfg.output_dir)
    accelerator = _make_accelerator(cfg)
    check_gpu(accelerator.device)  # a GPU this torch has no kernels for: stop now, naming one that works
    log = RunLog(accelerator.is_main_process)  # console + train.log (opened once the run may write)
    stopper = Stopper(parse_time_budget(cfg.train.time_budget), accelerator)
    guard = RunGuard(cfg, accelerator, restart, allow[0], log, allow_config_change=allow[1])
    cleanup.callback(guard.close)
    ckpts = CheckpointManager(accelerator, out / "checkpoints", cfg.checkpoint.keep_last)
    log.hold()  # the first line states where the run computes, which depends on the checkpoint resumed
    first = None
    try:
        guard.lock_existing()  # and completes or rolls back renames a crash interrupted
        resume_from = guard.find_resume_point(ckpts, resume)
        first = place(cfg, accelerator, resume_from).text()  # threads, workers, where augmentation runs
    finally:
        log.release(first)  # then the lines held (a refusal's context comes out either way)
    if resume_from is not None:  # before anything is built or written: weights of another network
        check_checkpoint_layout(resume_from, cfg.model.arch)
        check_method(resume_from, cfg.method)  # a checkpoint of another method: refused, naming both
    guard.check_resume_settings(resume_from)  # train.epochs below the position, settings that break exactness
    guard.check_data_keys(resume_from)

    resolve_auto_micro_batches(cfg, accelerator.device, resume_from, log)  # before the seed: the plan draws nothing
    set_seed(cfg.seed)
    method_cls = get_method(cfg.method)
    # a pretrained timm model sets size + mean/std; data.normalization=auto: the method's reference's mean/std
    data = build_data(cfg.data, cfg.seed, cfg.model, reference=method_cls.normalization)
    guard.check_data_labels(resume_from, data.noisy_labels)
    guard.check_normalization(resume_from, data.mean, data.std)
    networks = build_networks(cfg, method_cls, data, accelerator.num_processes, accelerator.device.type)
    max_lr = peak_lr(cfg.optim, cfg.train.batch_size * accelerator.num_processes)
    models, optimizers = prepare(accelerator, networks, build_optimizers(cfg, networks, max_lr))
    eval_loaders = eval_split_loaders(accelerator, data, cfg)  # val selects `best`; test is reported
    ctx = TrainContext(cfg, accelerator, models, optimizers, data, out, log=log)
    state = TrainerState(num_processes=accelerator.num_processes, method=cfg.method, settings=flat_settings(cfg))
    run = Run(cfg, out, accelerator, method_cls(ctx), ctx, EpochData(accelerator, cfg), ckpts, state, log, status,
              stopper, max_lr, eval_loaders, MetricsLog(out / "metrics.jsonl"))
    run.data.steps_per_epoch(run.method.epoch_plan(0))  # a batch larger than the data: stop before writing
    guard.take(ckpts, list(models.values()), optimizers)  # the lock, before anything is written
    if resume_from is not None:
        guard.fork(_restore(run, resume_from, resume, allow[1]))  # a fork: copy what B needs of A
    _write_run_files(run, guard, data, resumed=resume_from is not None)
    if estimate:
        announce_estimate(cfg, accelerator, next(iter(models.values())), len(data.train), log)  # min/epoch, peak
    run.progress = TrainProgress(accelerator.is_main_process, cfg.train.epochs, 0, accelerator.device, run_log=log)
    run.nonfinite = NonFiniteGuard(cfg.train.nonfinite, accelerator)
    run.trust = TrustMonitor(run, read_metrics(run.metrics_log.path) if accelerator.is_main_process else [])
    run.trust.warn_if_short()
    run.metrics = run.method.before_training(resumed=resume_from is not None)
    return run


def _restore(run: Run, resume_from: Path, resume: bool | str | None, allow_config_change: bool) -> Path:
    """Load the checkpoint (or, when it fails, the previous one); returns the one restored."""
    acc = run.accelerator
    resume_from, state, _ = run.ckpts.load_with_fallback(
        resume_from, run.ctx.models, run.ctx.optimizers, run.log, validate=lambda s, m: _fits(run, s, m),
        fallback=resume is True or Path(resume) != resume_from,  # not for a checkpoint named explicitly
        keep_hyperparameters=allow_config_change)
    if state.num_processes != acc.num_processes:
        raise CheckpointError(f"{resume_from} was saved by {state.num_processes} processes; resume "
                              f"with the same number (now {acc.num_processes})")
    if state.legacy:
        state.epoch_steps = legacy_epoch_steps(state, str(resume_from))
    state.method = run.cfg.method  # recorded from now on (older checkpoints lack it)
    state.settings = run.state.settings  # this start's config (changes were checked or allowed)
    run.state = state
    run.log(f"resumed from {resume_from} (epoch {state.epoch + 1}, step {state.step_in_epoch} of the "
            f"epoch, global step {state.global_step})")
    return resume_from


def _fits(run: Run, state: TrainerState, method_state: dict[str, Any]) -> None:
    """The method's state loads, and the counters fit this run: its train.epochs, and the steps of the
    epochs of this data (else the previous checkpoint is tried)."""
    try:
        check_method_state(type(run.method), method_state)
        run.method.load_state_dict(method_state)
    except CheckpointError:
        raise
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, RuntimeError) as e:
        raise CheckpointError(f"method.json / method.safetensors do not hold a state of method {run.cfg.method!r} "
                              f"that fits this run ({type(e).__name__}: {str(e)[:200]})") from None
    check_position(state, run.cfg.train.epochs, "the run")
    if state.epoch < run.cfg.train.epochs:
        steps = run.data.steps_per_epoch(run.method.epoch_plan(state.epoch))
        if state.step_in_epoch >= steps:
            raise CheckpointError(f"trainer.json: step_in_epoch={state.step_in_epoch} but epoch {state.epoch + 1} "
                                  f"of this data has {steps} steps (data length / global batch)")
    now = run.state.settings  # this start's config; ``state.settings``: the checkpoint's
    same_steps = all(state.settings.get(k) == now.get(k) for k in ("train.batch_size", *DATA_KEYS))
    if type(run.method).fixed_epoch_plan() and same_steps and state.epoch_steps:
        steps = run.data.steps_per_epoch(run.method.epoch_plan(0))
        wrong = [(e, n) for e, n in enumerate(state.epoch_steps) if n != steps]
        if wrong:
            raise CheckpointError(f"trainer.json: epoch_steps[{wrong[0][0]}]={wrong[0][1]}, but an epoch of this data "
                                  f"has {steps} steps (data length / global batch): the counters do not belong to "
                                  "this run")


def _write_run_files(run: Run, guard: RunGuard, data: Any, resumed: bool) -> None:
    out, acc = run.out, run.accelerator
    if acc.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        save_config(run.cfg, out / "config.yaml")
        guard.write_fingerprint(data.noisy_labels)
        run.log.open(out / "train.log")
        allowed = [c for c in guard.config_changes if c[0] != "train.epochs"]  # extending a run is no exception
        changes = {"config_changes": [{"key": k, "from": a, "to": b, "step": run.state.global_step}
                                      for k, a, b in allowed]} if allowed else {}
        run.status.start(run.cfg.train.epochs, run.log, epoch=run.state.epoch, step=run.state.global_step, **changes)
        np.save(out / "noisy_labels.npy", data.noisy_labels)
        write_data_info(out, data)  # classes and normalisation, for predict / export-model
        if data.true_labels is not None:
            np.save(out / "true_labels.npy", data.true_labels)
        if not resumed:
            run.metrics_log.path.unlink(missing_ok=True)
        else:
            run.metrics_log.truncate_after(run.state.global_step)
    acc.init_trackers("tcl_lite", config=_flat(to_dict(run.cfg)),
                      init_kwargs={"wandb": {"name": out.name, "dir": str(out)}})
    acc.wait_for_everyone()


def _stopped_at_start(run: Run) -> dict[str, float]:
    """SIGTERM already during start-up: nothing new to save."""
    run.log(f"Stopping before the first step ({signals.describe(signals.stop_requested())} during start-up); "
            f"nothing new to save. Continue with: {continue_command(run.out)}")
    run.status.update("stopped_signal", epoch=run.state.epoch, step=run.state.global_step)
    run.accelerator.end_training()
    return run.metrics


def _loop(run: Run) -> dict[str, float]:
    cfg, state, method = run.cfg, run.state, run.method
    run.stopper.start_clock()
    clock = EpochClock(cfg.train.epochs)  # time per epoch and ETA, printed from the first epoch on
    run.lr = run.ctx.optimizer.param_groups[0]["lr"]
    for epoch in range(state.epoch, cfg.train.epochs):
        if state.step_in_epoch == 0:
            method.begin_epoch(epoch)
        plan = method.epoch_plan(epoch)
        steps_per_epoch = run.data.steps_per_epoch(plan)
        first_step = state.step_in_epoch  # > 0 in an epoch resumed midway
        for model in run.ctx.models.values():
            model.train()
        run.progress.steps_per_epoch = steps_per_epoch
        run.progress.start_epoch(epoch, state.step_in_epoch)
        loss_sum, loss_n = torch.zeros((), device=run.accelerator.device), 0
        for step in run.data.batches(plan, epoch, state.step_in_epoch):
            t0 = time.monotonic()
            logs, finite = _optimizer_step(run, step, epoch, steps_per_epoch)
            if finite:  # a skipped step's NaN would make the epoch's mean loss NaN
                loss_sum, loss_n = loss_sum + logs["loss"].detach().float(), loss_n + 1
            run.stopper.observe_step(time.monotonic() - t0)
            epoch_ends = state.step_in_epoch == steps_per_epoch
            if cfg.checkpoint.every_steps and state.global_step % cfg.checkpoint.every_steps == 0 and not epoch_ends:
                _save(run, f"step_{state.global_step:08d}")
            if run.stopper.should_stop(epoch_ends):
                return _stop(run, epoch, steps_per_epoch)
        _end_epoch(run, epoch, clock, (steps_per_epoch - first_step) / steps_per_epoch, loss_sum, loss_n)
    run.progress.close()
    _summary(run)
    run.status.update("finished", epoch=state.epoch, step=state.global_step)
    run.accelerator.end_training()
    return run.metrics


def _summary(run: Run) -> None:
    """The end-of-run lines: the time taken, the checkpoint a model is used from, and, once, what a
    missing validation split means for `best`."""
    state, root = run.state, run.ckpts.root
    model = (f"best = {root / 'best'} ({run.cfg.checkpoint.best_metric} {state.best_value:.4f} at step "
             f"{state.best_step}), final = {root / f'step_{state.global_step:08d}'}" if state.best_value is not None
             else f"final = {root / f'step_{state.global_step:08d}'}")
    run.log(f"finished: {state.epoch} epochs ({run.stopper.elapsed() / 60:.1f} min in this session); "
            f"checkpoints: {model}")
    notice = no_best_notice(run.cfg, "val" in run.eval_loaders)
    if notice:
        run.log(notice)


def _optimizer_step(run: Run, step: PhaseStep, epoch: int, steps_per_epoch: int) -> tuple[dict[str, Any], bool]:
    """One optimizer step of the phase's optimizers on one batch; returns the logs and whether finite."""
    cfg, state, ctx = run.cfg, run.state, run.ctx
    info = StepInfo(epoch, state.step_in_epoch, state.global_step, steps_per_epoch, step.phase.name,
                    step.phase_step, step.phase_steps, step.phase.role, step.phase.info)
    run.lr = lr_at(cfg.optim, run.max_lr, info.fractional_epoch, cfg.train.epochs)
    for opt in ctx.optimizers.values():
        set_lr(opt, run.lr)
    names = step.phase.optimizers or tuple(ctx.optimizers)
    logs = _step_adapting_to_oom(run, step.batch, info)
    grad_norm = None
    if cfg.optim.grad_clip > 0:  # the phase's networks only: the others have no gradient this step
        params = [p for name in names for p in ctx.models[name].parameters()]
        grad_norm = run.accelerator.clip_grad_norm_(params, cfg.optim.grad_clip)
    finite = run.nonfinite.finite(logs, grad_norm)
    if not finite and cfg.train.nonfinite == "stop":
        run.progress.close()
        newest = run.ckpts.list_steps()
        raise run.nonfinite.error(state.global_step + 1, epoch, state.step_in_epoch, steps_per_epoch, logs,
                                  grad_norm, run.lr, cfg, newest[-1].name if newest else "(none yet)")
    state.nonfinite_steps += not finite
    if run.nonfinite.step_allowed(finite):
        for name in names:
            ctx.optimizers[name].step()
    for opt in ctx.optimizers.values():
        opt.zero_grad(set_to_none=True)
    state.step_in_epoch += 1
    state.global_step += 1
    run.method.after_optimizer_step(StepInfo(epoch, state.step_in_epoch, state.global_step, steps_per_epoch,
                                             step.phase.name, step.phase_step + 1, step.phase_steps,
                                             step.phase.role, step.phase.info))
    show = state.global_step % cfg.train.log_every == 0 or state.step_in_epoch == steps_per_epoch
    shown = {k: float(v) for k, v in logs.items()} if show else None  # .item() only when shown
    run.progress.step(_samples(step.batch) * run.accelerator.num_processes, shown, run.lr, state.global_step)
    if shown is not None:  # trackers: the step's loss terms, lr and throughput
        run.accelerator.log(step_scalars(shown, run.lr, run.progress.images_per_second), step=state.global_step)
    return logs, finite


def _step_adapting_to_oom(run: Run, batch: Any, info: StepInfo) -> dict[str, Any]:
    """The method's step; on a GPU out-of-memory error, again with twice the micro-batches."""
    ctx = run.ctx

    def attempt(n: int) -> dict[str, Any]:
        ctx.micro_batches = n
        return run.method.training_step(batch, info)

    def clear() -> None:
        for opt in ctx.optimizers.values():
            opt.zero_grad(set_to_none=True)

    logs, ctx.micro_batches = step_adapting_to_oom(
        attempt, _samples(batch), ctx.micro_batches,
        enabled=run.cfg.train.auto_micro_batch and run.accelerator.num_processes == 1,
        on_retry=clear, log=run.progress.print)
    return logs


def _samples(batch: Any) -> int:
    """Samples in a step's batch (a phase with several loaders: its first loader's)."""
    first = batch if "index" in batch else next(iter(batch.values()))
    return len(first["index"])


def _save(run: Run, name: str) -> None:
    models = run.ctx.models
    if not all(weights_finite(m) for m in models.values()):
        raise NonFiniteLossError(f"the weights became NaN/inf by optimizer step {run.state.global_step} (a "
                                 "non-finite gradient under a finite loss); not saving them. Set "
                                 "optim.grad_clip > 0 to have the gradient norm checked at every step, "
                                 "lower optim.lr, and continue with --resume from the last checkpoint")
    t0 = time.monotonic()
    run.ckpts.save(name, models, run.ctx.optimizers, run.method.state_dict(), run.state,
                   extra=layout_record(run.cfg.model.arch))
    run.stopper.save_seconds = time.monotonic() - t0


def _stop(run: Run, epoch: int, steps_per_epoch: int) -> dict[str, float]:
    state = run.state
    _save(run, f"step_{state.global_step:08d}")
    run.progress.close()
    run.trust.stopped(state.epoch + state.step_in_epoch / max(1, steps_per_epoch), state.global_step)
    why = f"on {signals.describe(signals.stop_requested())}" if run.stopper.signalled else "time budget"
    run.log(f"Stopping after {run.stopper.elapsed() / 60:.1f} min ({why}) at epoch "
            f"{epoch + 1}, step {state.step_in_epoch}/{steps_per_epoch}; saved {run.ckpts.root}. "
            f"Continue with: {continue_command(run.out)}")
    run.trust.flush()
    run.status.update("stopped_signal" if run.stopper.signalled else "stopped_time_budget",
                      epoch=state.epoch, step=state.global_step)
    run.accelerator.end_training()
    return run.metrics


def _end_epoch(run: Run, epoch: int, clock: EpochClock, fraction_run: float, loss_sum: torch.Tensor,
               loss_n: int) -> None:
    """The method's pass (e.g. noise detection), evaluation, `best`, the epoch's checkpoint."""
    cfg, state = run.cfg, run.state
    t0 = time.monotonic()
    run.metrics = run.method.after_epoch(epoch)
    state.epoch_steps.append(state.step_in_epoch)
    state.epoch, state.step_in_epoch = epoch + 1, 0
    timing = clock.text(state.epoch, fraction_run)
    if state.epoch % cfg.train.eval_every == 0 or state.epoch == cfg.train.epochs:
        for split, loader in run.eval_loaders.items():
            run.metrics.update(evaluate(run.accelerator, run.method.eval_models(), loader, split))
        run.metrics.update(run.method.after_evaluation(run.metrics))
        rng = rng_state()  # the trust diagnostics draw nothing training sees: a resumed run equals an uninterrupted one
        try:
            run.metrics.update(run.trust.after_epoch(state.epoch, state.global_step))
        finally:
            set_rng_state(rng)
        record = {"epoch": state.epoch, "step": state.global_step, **run.metrics,
                  "train_loss": loss_sum.item() / max(1, loss_n), "lr": run.lr,
                  "time": round(run.stopper.elapsed(), 2), "nonfinite_steps": state.nonfinite_steps}
        if run.accelerator.is_main_process:
            run.metrics_log.append(record)
        run.accelerator.log(record, step=state.global_step)
        run.progress.print(f"epoch {state.epoch}/{cfg.train.epochs}: "
                           + " ".join(f"{k} {v:.4f}" for k, v in record.items()
                                      if isinstance(v, float) and k not in ("lr", "time")
                                      and not k.startswith("trust_")) + f" | {timing}")  # trust: its own line
        run.trust.flush()
        _keep_best(run, record)
    else:
        run.progress.print(f"epoch {state.epoch}/{cfg.train.epochs} (no evaluation this epoch) | {timing}")
    _save(run, f"step_{state.global_step:08d}")
    run.stopper.epoch_end_seconds = time.monotonic() - t0
    run.status.update("running", epoch=state.epoch, step=state.global_step,
                      seconds_per_epoch=round(clock.per_epoch, 1), seconds_left=round(clock.left))


def _keep_best(run: Run, record: dict[str, Any]) -> None:
    key, state, cfg = run.cfg.checkpoint.best_metric, run.state, run.cfg
    if not key or key not in run.metrics:
        return
    value = run.metrics[key]
    if state.best_value is None or (value > state.best_value if cfg.checkpoint.best_mode == "max"
                                    else value < state.best_value):
        state.best_value, state.best_step = value, state.global_step
        run.ckpts.save("best", run.ctx.models, None, run.method.state_dict(), state,
                       extra={"metrics": record, **layout_record(cfg.model.arch)})
