"""The training loop. Accelerate places everything on the device, autocasts (mixed precision),
scales the loss (fp16), shards data over processes and all-reduces gradients; the method
computes its losses; this file only orders the work. Read ``train`` top to bottom.
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, set_seed

from tcl_lite.config import Config, ConfigError, parse_time_budget, save_config, to_dict
from tcl_lite.data import build_data
from tcl_lite.engine.checkpoint import CheckpointError, CheckpointManager, TrainerState
from tcl_lite.engine.evaluate import eval_split_loaders, evaluate, write_data_info
from tcl_lite.engine.oom import step_adapting_to_oom
from tcl_lite.engine.optim import build_optimizer, lr_at, peak_lr, set_lr
from tcl_lite.engine.stopper import Stopper
from tcl_lite.methods import StepInfo, TrainContext, get_method
from tcl_lite.models import build_model
from tcl_lite.reporting.metrics import MetricsLog
from tcl_lite.reporting.progress import TrainProgress


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
    tensorboard = importlib.util.find_spec("tensorboard") is not None
    return Accelerator(
        cpu=cfg.train.cpu, mixed_precision=cfg.train.mixed_precision,
        log_with="tensorboard" if tensorboard else None, project_dir=cfg.output_dir,
        # The sampler reseeds from (seed + epoch) every epoch: the data order needs no saved state.
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=cfg.seed),
    )


def _find_resume_point(ckpts: CheckpointManager, resume: bool | str | None, log: Any) -> Path | None:
    """Nothing is written before this: a wrong --resume loses nothing."""
    if not resume:
        if ckpts.list_steps():
            raise CheckpointError(f"{ckpts.root.parent} already holds checkpoints "
                                  f"({ckpts.list_steps()[-1].name}); pass --resume to continue that run, "
                                  "or choose another --output-dir")
        return None
    if resume is True:
        path = ckpts.newest_valid(log)
        if path is None:
            log(f"no valid checkpoint in {ckpts.root}: starting a new run")
        return path
    path = Path(resume)
    if (path / "checkpoints").is_dir():
        path = CheckpointManager(ckpts.accelerator, path / "checkpoints", ckpts.keep_last).newest_valid(log)
        if path is None:
            raise CheckpointError(f"no valid checkpoint under {resume}/checkpoints")
        return path
    if not path.is_dir():
        raise CheckpointError(f"--resume {resume}: no such checkpoint or run directory")
    CheckpointManager.verify(path)  # a checkpoint named explicitly must be intact
    return path


def _flat(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v if isinstance(v, (int, float, str, bool)) else str(v)
    return out


def train(cfg: Config, resume: bool | str | None = None) -> dict[str, float]:
    """Run (or continue) one training run; returns the last evaluation's metrics."""
    out = Path(cfg.output_dir)
    accelerator = _make_accelerator(cfg)
    log = accelerator.print
    ckpts = CheckpointManager(accelerator, out / "checkpoints", cfg.checkpoint.keep_last)
    resume_from = _find_resume_point(ckpts, resume, log)
    budget = parse_time_budget(cfg.train.time_budget)

    # -- data, model, optimizer ---------------------------------------------------------------
    set_seed(cfg.seed)
    data = build_data(cfg.data, cfg.seed, cfg.model)  # a pretrained timm model sets size + mean/std
    method_cls = get_method(cfg.method)
    model = build_model(cfg.model, data.num_classes, in_channels=data.channels, image_size=data.image_size,
                        with_projector=method_cls.needs_projector,
                        activation_checkpointing=cfg.train.activation_checkpointing)
    global_batch = cfg.train.batch_size * accelerator.num_processes
    max_lr = peak_lr(cfg.optim, global_batch)
    optimizer = build_optimizer(cfg.optim, model, max_lr)
    train_set = data.train_views(method_cls.views)
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

    # -- fresh run or resume ------------------------------------------------------------------
    state = TrainerState(num_processes=accelerator.num_processes)
    metrics_log = MetricsLog(out / "metrics.jsonl")
    if resume_from is not None:
        state, method_state = ckpts.load(resume_from, model, optimizer)
        method.load_state_dict(method_state)
        if state.num_processes != accelerator.num_processes:
            raise CheckpointError(f"{resume_from} was saved by {state.num_processes} processes; resume "
                                  f"with the same number (now {accelerator.num_processes})")
        log(f"resumed from {resume_from} (epoch {state.epoch + 1}, step {state.step_in_epoch} of the epoch, "
            f"global step {state.global_step})")
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")
        np.save(out / "noisy_labels.npy", data.noisy_labels)
        write_data_info(out, data)  # classes and normalisation, for predict / export-model
        if data.true_labels is not None:
            np.save(out / "true_labels.npy", data.true_labels)
        if resume_from is None:
            metrics_log.path.unlink(missing_ok=True)
        else:
            metrics_log.truncate_after(state.global_step)
    accelerator.init_trackers("tensorboard", config=_flat(to_dict(cfg)))
    accelerator.wait_for_everyone()

    gas = cfg.train.gradient_accumulation_steps
    steps_per_epoch = len(train_loader)
    progress = TrainProgress(accelerator.is_main_process, cfg.train.epochs, steps_per_epoch, accelerator.device)
    stopper = Stopper(budget, accelerator)
    metrics: dict[str, float] = method.before_training(resumed=resume_from is not None)

    def save(name: str) -> None:
        t0 = time.monotonic()
        ckpts.save(name, model, optimizer, method.state_dict(), state)
        stopper.save_seconds = time.monotonic() - t0

    lr = optimizer.param_groups[0]["lr"]
    # -- the loop -----------------------------------------------------------------------------
    for epoch in range(state.epoch, cfg.train.epochs):
        train_set.set_epoch(epoch)  # augmentations are a function of (seed, epoch, index)
        train_loader.set_epoch(epoch)  # data order is a function of (seed, epoch)
        batches = (accelerator.skip_first_batches(train_loader, state.step_in_epoch)
                   if state.step_in_epoch else train_loader)
        model.train()
        progress.start_epoch(epoch, state.step_in_epoch)
        loss_sum, loss_n = torch.zeros((), device=accelerator.device), 0
        for batch in batches:
            t0 = time.monotonic()
            info = StepInfo(epoch, state.step_in_epoch, state.global_step, steps_per_epoch)
            lr = lr_at(cfg.optim, max_lr, info.fractional_epoch, cfg.train.epochs)
            set_lr(optimizer, lr)
            logs, gas = step_adapting_to_oom(
                lambda n, b=batch, i=info: method.training_step(split_batch(b, n), i), cfg.train.batch_size, gas,
                enabled=cfg.train.auto_micro_batch and accelerator.num_processes == 1,
                on_retry=lambda: optimizer.zero_grad(set_to_none=True), log=progress.print)
            if cfg.optim.grad_clip > 0:
                accelerator.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            state.step_in_epoch += 1
            state.global_step += 1
            method.after_optimizer_step(StepInfo(epoch, state.step_in_epoch, state.global_step, steps_per_epoch))

            show = state.global_step % cfg.train.log_every == 0 or state.step_in_epoch == steps_per_epoch
            shown = {k: float(v) for k, v in logs.items()} if show else None  # .item() only when shown
            loss_sum, loss_n = loss_sum + logs["loss"].detach().float(), loss_n + 1
            progress.step(len(batch["index"]) * accelerator.num_processes, shown, lr, state.global_step)
            stopper.observe_step(time.monotonic() - t0)
            epoch_ends = state.step_in_epoch == steps_per_epoch
            if cfg.checkpoint.every_steps and state.global_step % cfg.checkpoint.every_steps == 0 and not epoch_ends:
                save(f"step_{state.global_step:08d}")
            if stopper.should_stop(epoch_ends):
                save(f"step_{state.global_step:08d}")
                progress.close()
                log(f"Stopping after {stopper.elapsed() / 60:.1f} min (time budget or SIGTERM) at epoch "
                    f"{epoch + 1}, step {state.step_in_epoch}/{steps_per_epoch}; saved {ckpts.root}. "
                    f"Continue with: accelerate launch train.py --resume --output-dir {out}")
                accelerator.end_training()
                return metrics

        # -- end of epoch: the method's pass (e.g. noise detection), evaluation, checkpoint -------
        t0 = time.monotonic()
        metrics = method.after_epoch(epoch)
        state.epoch, state.step_in_epoch = epoch + 1, 0
        if state.epoch % cfg.train.eval_every == 0 or state.epoch == cfg.train.epochs:
            for split, loader in eval_loaders.items():
                metrics.update(evaluate(accelerator, method.eval_models(), loader, split))
            metrics.update(method.after_evaluation(metrics))
            record = {"epoch": state.epoch, "step": state.global_step, **metrics,
                      "train_loss": loss_sum.item() / max(1, loss_n), "lr": lr, "time": round(stopper.elapsed(), 2)}
            if accelerator.is_main_process:
                metrics_log.append(record)
            accelerator.log(record, step=state.global_step)
            progress.print(f"epoch {state.epoch}/{cfg.train.epochs}: "
                           + " ".join(f"{k} {v:.4f}" for k, v in record.items()
                                      if isinstance(v, float) and k not in ("lr", "time")))
            key = cfg.checkpoint.best_metric
            if key and key in metrics:
                better = (state.best_value is None
                          or (metrics[key] > state.best_value if cfg.checkpoint.best_mode == "max"
                              else metrics[key] < state.best_value))
                if better:
                    state.best_value, state.best_step = metrics[key], state.global_step
                    ckpts.save("best", model, None, method.state_dict(), state, extra={"metrics": record})
        save(f"step_{state.global_step:08d}")
        stopper.epoch_end_seconds = time.monotonic() - t0
        model.train()

    progress.close()
    accelerator.end_training()
    return metrics
