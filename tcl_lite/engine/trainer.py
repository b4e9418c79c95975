"""The training loop. Accelerate places everything on the device, autocasts (mixed precision),
scales the loss (fp16), shards data over processes and all-reduces gradients; the method
computes its losses; this file only orders the work. Read ``train`` top to bottom.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, set_seed

from tcl_lite.cli import continue_command
from tcl_lite.config import Config, ConfigError, parse_time_budget, save_config, to_dict
from tcl_lite.data import build_data
from tcl_lite.engine.checkpoint import CheckpointError, CheckpointManager, TrainerState
from tcl_lite.engine.evaluate import eval_split_loaders, evaluate, write_data_info
from tcl_lite.engine.gpu_check import check_gpu
from tcl_lite.engine.nonfinite import NonFiniteGuard, NonFiniteLossError, weights_finite
from tcl_lite.engine.oom import step_adapting_to_oom
from tcl_lite.engine.optim import build_optimizer, lr_at, peak_lr, set_lr
from tcl_lite.engine.run_guard import RunGuard
from tcl_lite.engine.run_status import RunStatus
from tcl_lite.engine.stopper import Stopper
from tcl_lite.methods import StepInfo, TrainContext, get_method
from tcl_lite.models import build_model
from tcl_lite.models.layout import check_checkpoint_layout, layout_record
from tcl_lite.reporting.eta import EpochClock
from tcl_lite.reporting.metrics import MetricsLog
from tcl_lite.reporting.progress import TrainProgress
from tcl_lite.reporting.run_log import RunLog
from tcl_lite.reporting.trackers import resolve_trackers, step_scalars


def split_batch(batch: dict[str, Any], n: int) -> list[dict[str, Any]]:
    """One batch -> ``n`` equal micro-batches (multi-view images are lists of tensors)."""
    if n == 1:
        return [batch]

    def chunks(v: Any) -> list[Any]:
        if isinstance(v, torch.Tensor):
            return list(v.chunk(n))
        if isinstance(v, (list, tuple)):
            return [list(parts) for parts in zip(*(chunks(x) for x in v))]
        raise TypeError(f"cannot split a batch entry of type {type(v).__name__}")

    split = {k: chunks(v) for k, v in batch.items()}
    return [{k: split[k][i] for k in batch} for i in range(n)]


def _make_accelerator(cfg: Config) -> Accelerator:
    if cfg.train.mixed_precision == "fp16" and (cfg.train.cpu or not torch.cuda.is_available()):
        raise ConfigError("config key 'train.mixed_precision': fp16 needs a GPU; use bf16 (also on CPU) or no")
    return Accelerator(
        cpu=cfg.train.cpu, mixed_precision=cfg.train.mixed_precision,
        log_with=resolve_trackers(cfg.train.log_with) or None, project_dir=cfg.output_dir,
        # The sampler reseeds from (seed + epoch) every epoch: the data order needs no saved state.
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=cfg.seed),
    )


def _flat(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v if isinstance(v, (int, float, str, bool)) else str(v)
    return out


def train(cfg: Config, resume: bool | str | None = None, restart: bool = False,
          allow_data_change: bool = False) -> dict[str, float]:
    """Run (or continue) one training run; returns the last evaluation's metrics. The run directory's
    status.json says how it ended (finished, stopped by the time budget or a signal, failed).

    ``restart``: move an existing run's files aside and start afresh; ``allow_data_change``: resume
    even though the data-defining settings changed (see engine/run_guard.py)."""
    status = RunStatus(Path(cfg.output_dir))
    try:
        with contextlib.ExitStack() as cleanup:
            return _train(cfg, resume, restart, allow_data_change, cleanup, status)
    except BaseException as e:
        status.failed(e)  # only once this process has started the run
        raise
    finally:
        status.close()


def _train(cfg: Config, resume: bool | str | None, restart: bool, allow_data_change: bool,
           cleanup: contextlib.ExitStack, status: RunStatus) -> dict[str, float]:
    out = Path(cfg.output_dir)
    accelerator = _make_accelerator(cfg)
    check_gpu(accelerator.device)  # a GPU this torch has no kernels for: stop now, naming one that works
    log = RunLog(accelerator.is_main_process)  # console + train.log (opened once the run may write)
    budget = parse_time_budget(cfg.train.time_budget)
    stopper = Stopper(budget, accelerator)  # the SIGTERM handler is in place before data loading
    guard = RunGuard(cfg, accelerator, restart, allow_data_change, log)
    cleanup.callback(guard.close)
    ckpts = CheckpointManager(accelerator, out / "checkpoints", cfg.checkpoint.keep_last)
    guard.lock_existing()
    resume_from = guard.find_resume_point(ckpts, resume)
    if resume_from is not None:  # before anything is built or written: weights of another network
        check_checkpoint_layout(resume_from, cfg.model.arch)
    guard.check_data_keys(resume_from)

    # -- data, model, optimizer ---------------------------------------------------------------
    set_seed(cfg.seed)
    data = build_data(cfg.data, cfg.seed, cfg.model)  # a pretrained timm model sets size + mean/std
    guard.check_data_labels(resume_from, data.noisy_labels)
    method_cls = get_method(cfg.method)
    model = build_model(cfg.model, data.num_classes, in_channels=data.channels, image_size=data.image_size,
                        with_projector=method_cls.needs_projector,
                        activation_checkpointing=cfg.train.activation_checkpointing)
    global_batch = cfg.train.batch_size * accelerator.num_processes
    max_lr = peak_lr(cfg.optim, global_batch)
    optimizer = build_optimizer(cfg.optim, model, max_lr)
    train_set = data.train_views(method_cls.views, accelerator.device)  # data.augment_on decides where
    if len(train_set) < global_batch:
        raise ConfigError(f"config key 'train.batch_size': {cfg.train.batch_size} x {accelerator.num_processes} "
                          f"processes exceeds the {len(train_set)} training samples; lower it")
    train_loader = torch.utils.data.DataLoader(
        train_set, batch_size=cfg.train.batch_size, shuffle=True, drop_last=True,
        num_workers=cfg.data.num_workers, pin_memory=accelerator.device.type == "cuda",
        # A private generator: creating the iterator must not consume the global RNG.
        generator=torch.Generator().manual_seed(cfg.seed))
    model, optimizer, train_loader = accelerator.prepare(model, optimizer, train_loader)
    # Validation selects `best`; the test set is only reported. Either may be absent.
    eval_loaders = eval_split_loaders(accelerator, data, cfg, log)
    method = method_cls(TrainContext(cfg, accelerator, model, optimizer, data, out))
    guard.take(ckpts, model, optimizer)  # the lock, before anything is written

    # -- fresh run or resume ------------------------------------------------------------------
    state = TrainerState(num_processes=accelerator.num_processes)
    metrics_log = MetricsLog(out / "metrics.jsonl")
    if resume_from is not None:
        resume_from, state, method_state = ckpts.load_with_fallback(
            resume_from, model, optimizer, log, steps_per_epoch=len(train_loader),
            fallback=resume is True or Path(resume) != resume_from)  # not for a checkpoint named explicitly
        method.load_state_dict(method_state)
        if state.num_processes != accelerator.num_processes:
            raise CheckpointError(f"{resume_from} was saved by {state.num_processes} processes; resume "
                                  f"with the same number (now {accelerator.num_processes})")
        log(f"resumed from {resume_from} (epoch {state.epoch + 1}, step {state.step_in_epoch} of the epoch, "
            f"global step {state.global_step})")
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")
        guard.write_fingerprint(data.noisy_labels)
        log.open(out / "train.log")
        status.start(cfg.train.epochs, log, epoch=state.epoch, step=state.global_step)
        np.save(out / "noisy_labels.npy", data.noisy_labels)
        write_data_info(out, data)  # classes and normalisation, for predict / export-model
        if data.true_labels is not None:
            np.save(out / "true_labels.npy", data.true_labels)
        if resume_from is None:
            metrics_log.path.unlink(missing_ok=True)
        else:
            metrics_log.truncate_after(state.global_step)
    accelerator.init_trackers("tcl_lite", config=_flat(to_dict(cfg)),
                              init_kwargs={"wandb": {"name": out.name, "dir": str(out)}})
    accelerator.wait_for_everyone()

    gas = cfg.train.gradient_accumulation_steps
    steps_per_epoch = len(train_loader)
    progress = TrainProgress(accelerator.is_main_process, cfg.train.epochs, steps_per_epoch, accelerator.device,
                             run_log=log)
    nonfinite = NonFiniteGuard(cfg.train.nonfinite, accelerator)
    metrics: dict[str, float] = method.before_training(resumed=resume_from is not None)
    if stopper.signal_received():  # SIGTERM already during start-up
        log(f"Stopping before the first step (SIGTERM during start-up); nothing new to save. "
            f"Continue with: {continue_command(out)}")
        status.update("stopped_signal", epoch=state.epoch, step=state.global_step)
        accelerator.end_training()
        return metrics
    stopper.start_clock()

    def save(name: str) -> None:
        if not weights_finite(model):
            raise NonFiniteLossError(f"the weights became NaN/inf by optimizer step {state.global_step} (a "
                                     "non-finite gradient under a finite loss); not saving them. Set "
                                     "optim.grad_clip > 0 to have the gradient norm checked at every step, "
                                     "lower optim.lr, and continue with --resume from the last checkpoint")
        t0 = time.monotonic()
        ckpts.save(name, model, optimizer, method.state_dict(), state, extra=layout_record(cfg.model.arch))
        stopper.save_seconds = time.monotonic() - t0

    lr = optimizer.param_groups[0]["lr"]
    clock = EpochClock(cfg.train.epochs)  # time per epoch and ETA, printed from the first epoch on
    # -- the loop -----------------------------------------------------------------------------
    for epoch in range(state.epoch, cfg.train.epochs):
        train_set.set_epoch(epoch)  # augmentations are a function of (seed, epoch, index)
        train_loader.set_epoch(epoch)  # data order is a function of (seed, epoch)
        batches = (accelerator.skip_first_batches(train_loader, state.step_in_epoch)
                   if state.step_in_epoch else train_loader)
        model.train()
        progress.start_epoch(epoch, state.step_in_epoch)
        first_step = state.step_in_epoch  # > 0 in an epoch resumed midway
        loss_sum, loss_n = torch.zeros((), device=accelerator.device), 0
        for batch in batches:
            t0 = time.monotonic()
            batch = train_set.finish_batch(batch)  # augment_on=device: the views, made for the whole batch
            info = StepInfo(epoch, state.step_in_epoch, state.global_step, steps_per_epoch)
            lr = lr_at(cfg.optim, max_lr, info.fractional_epoch, cfg.train.epochs)
            set_lr(optimizer, lr)
            logs, gas = step_adapting_to_oom(
                lambda n, b=batch, i=info: method.training_step(split_batch(b, n), i), cfg.train.batch_size, gas,
                enabled=cfg.train.auto_micro_batch and accelerator.num_processes == 1,
                on_retry=lambda: optimizer.zero_grad(set_to_none=True), log=progress.print)
            grad_norm = (accelerator.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
                         if cfg.optim.grad_clip > 0 else None)
            finite = nonfinite.finite(logs, grad_norm)
            if not finite and cfg.train.nonfinite == "stop":
                progress.close()
                raise nonfinite.error(state.global_step + 1, epoch, state.step_in_epoch, steps_per_epoch, logs,
                                      grad_norm, lr, cfg, ckpts.list_steps()[-1].name if ckpts.list_steps()
                                      else "(none yet)")
            state.nonfinite_steps += not finite
            if nonfinite.step_allowed(finite):
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            state.step_in_epoch += 1
            state.global_step += 1
            method.after_optimizer_step(StepInfo(epoch, state.step_in_epoch, state.global_step, steps_per_epoch))

            show = state.global_step % cfg.train.log_every == 0 or state.step_in_epoch == steps_per_epoch
            shown = {k: float(v) for k, v in logs.items()} if show else None  # .item() only when shown
            if finite:  # a skipped step's NaN would make the epoch's mean loss NaN
                loss_sum, loss_n = loss_sum + logs["loss"].detach().float(), loss_n + 1
            progress.step(len(batch["index"]) * accelerator.num_processes, shown, lr, state.global_step)
            if shown is not None:  # trackers: the step's loss terms, lr and throughput
                accelerator.log(step_scalars(shown, lr, progress.images_per_second), step=state.global_step)
            stopper.observe_step(time.monotonic() - t0)
            epoch_ends = state.step_in_epoch == steps_per_epoch
            if cfg.checkpoint.every_steps and state.global_step % cfg.checkpoint.every_steps == 0 and not epoch_ends:
                save(f"step_{state.global_step:08d}")
            if stopper.should_stop(epoch_ends):
                save(f"step_{state.global_step:08d}")
                progress.close()
                log(f"Stopping after {stopper.elapsed() / 60:.1f} min (time budget or SIGTERM) at epoch "
                    f"{epoch + 1}, step {state.step_in_epoch}/{steps_per_epoch}; saved {ckpts.root}. "
                    f"Continue with: {continue_command(out)}")
                status.update("stopped_signal" if stopper.signalled else "stopped_time_budget",
                              epoch=state.epoch, step=state.global_step)
                accelerator.end_training()
                return metrics

        # -- end of epoch: the method's pass (e.g. noise detection), evaluation, checkpoint -------
        t0 = time.monotonic()
        metrics = method.after_epoch(epoch)
        state.epoch, state.step_in_epoch = epoch + 1, 0
        timing = clock.text(state.epoch, (steps_per_epoch - first_step) / steps_per_epoch)
        if state.epoch % cfg.train.eval_every == 0 or state.epoch == cfg.train.epochs:
            for split, loader in eval_loaders.items():
                metrics.update(evaluate(accelerator, method.eval_models(), loader, split))
            metrics.update(method.after_evaluation(metrics))
            record = {"epoch": state.epoch, "step": state.global_step, **metrics,
                      "train_loss": loss_sum.item() / max(1, loss_n), "lr": lr, "time": round(stopper.elapsed(), 2),
                      "nonfinite_steps": state.nonfinite_steps}
            if accelerator.is_main_process:
                metrics_log.append(record)
            accelerator.log(record, step=state.global_step)
            progress.print(f"epoch {state.epoch}/{cfg.train.epochs}: "
                           + " ".join(f"{k} {v:.4f}" for k, v in record.items()
                                      if isinstance(v, float) and k not in ("lr", "time")) + f" | {timing}")
            key = cfg.checkpoint.best_metric
            if key and key in metrics:
                better = (state.best_value is None
                          or (metrics[key] > state.best_value if cfg.checkpoint.best_mode == "max"
                              else metrics[key] < state.best_value))
                if better:
                    state.best_value, state.best_step = metrics[key], state.global_step
                    ckpts.save("best", model, None, method.state_dict(), state,
                               extra={"metrics": record, **layout_record(cfg.model.arch)})
        else:
            progress.print(f"epoch {state.epoch}/{cfg.train.epochs} (no evaluation this epoch) | {timing}")
        save(f"step_{state.global_step:08d}")
        stopper.epoch_end_seconds = time.monotonic() - t0
        status.update("running", epoch=state.epoch, step=state.global_step,
                      seconds_per_epoch=round(clock.per_epoch, 1), seconds_left=round(clock.left))
        model.train()

    progress.close()
    status.update("finished", epoch=state.epoch, step=state.global_step)
    accelerator.end_training()
    return metrics
