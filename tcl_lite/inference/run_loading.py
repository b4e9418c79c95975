"""A finished (or stopped) run directory as objects: its config, its data, a checkpoint's network.

Everything is read from safetensors, JSON and YAML; nothing is unpickled. Used by label issues,
``predict`` and ``export-model``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file
from torch import nn

from tcl_lite.config import Config, load_config


class RunError(RuntimeError):
    """A path that is not a usable run directory or checkpoint; the message says what is expected."""


def run_config(run_dir: str | Path) -> Config:
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise RunError(f"{run_dir} holds no config.yaml: expected a run directory written by train.py "
                       "(e.g. runs/default after `python train.py`)")
    # Model selection plays no part in using a run; runs from before validation splits named test_acc.
    return load_config(run_dir / "config.yaml", ["checkpoint.best_metric="])


def choose_checkpoint(run_dir: str | Path, which: str = "final") -> Path:
    """``final``: the newest valid rolling checkpoint; ``best``: checkpoints/best; ``auto``: best when the
    run kept one, else final; anything else: a checkpoint folder path."""
    from tcl_lite.engine.checkpoint import CheckpointError, CheckpointManager

    run_dir = Path(run_dir)
    best = run_dir / "checkpoints" / "best"
    if which == "auto":
        which = "best" if (best / "model.safetensors").is_file() else "final"
    if which == "best":
        if not (best / "model.safetensors").is_file():
            raise RunError(f"{best} does not exist: the run kept no `best` checkpoint (it needs a validation "
                           "split, data.val_fraction); use --checkpoint final")
        path = best
    elif which == "final":
        path = CheckpointManager(None, run_dir / "checkpoints", keep_last=1).newest_valid(lambda m: None)
        if path is None:
            raise RunError(f"{run_dir / 'checkpoints'} holds no valid checkpoint yet: train (or resume) the run "
                           "until it saves one")
    else:
        path = Path(which)
        if not (path / "model.safetensors").is_file():
            raise RunError(f"--checkpoint {which}: not a checkpoint folder (with model.safetensors); give best, "
                           "final or a folder under RUN/checkpoints/")
    try:
        CheckpointManager.verify(path)
    except CheckpointError as e:
        raise RunError(str(e)) from None
    return path


def run_data(run_dir: str | Path, cfg: Config) -> Any:
    """The run's DataBundle, rebuilt from its config; the noisy labels must be those it trained on."""
    from tcl_lite.data import build_data

    data = build_data(cfg.data, cfg.seed, cfg.model)
    saved = Path(run_dir) / "noisy_labels.npy"
    if saved.is_file() and not np.array_equal(np.load(saved, allow_pickle=False), data.noisy_labels):
        raise RunError(f"the data rebuilt from {Path(run_dir) / 'config.yaml'} does not have the labels the run "
                       f"trained on ({saved}): the dataset under data.root={cfg.data.root!r} changed")
    return data


def load_network(cfg: Config, ckpt: Path, num_classes: int, image_size: int, *,
                 state: dict[str, torch.Tensor] | None = None) -> nn.Module:
    """The run's network with the checkpoint's weights (or ``state``), in eval mode, on the CPU."""
    from tcl_lite.methods import get_method
    from tcl_lite.models import build_model

    model_cfg = cfg.model
    if model_cfg.pretrained or model_cfg.pretrained_path:  # the checkpoint holds every weight
        import dataclasses

        model_cfg = dataclasses.replace(model_cfg, pretrained=False, pretrained_path="")
    net = build_model(model_cfg, num_classes, image_size=image_size,
                      with_projector=get_method(cfg.method).needs_projector)
    weights = state if state is not None else load_file(str(ckpt / "model.safetensors"))
    try:
        net.load_state_dict(weights)
    except RuntimeError as e:
        raise RunError(f"{ckpt}: the weights do not fit the run's model ({str(e)[:300]})") from None
    return net.eval()


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@torch.no_grad()
def predict_probabilities(net: nn.Module, dataset: Any, batch_size: int = 256,
                          device: torch.device | None = None) -> np.ndarray:
    """Softmax outputs [N, K] over an indexed dataset (its own transform), batched, on ``device``."""
    device = device or default_device()
    net = net.to(device).eval()
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)
    out = [net(batch["image"].to(device)).logits.float().softmax(dim=1).cpu() for batch in loader]
    return torch.cat(out).numpy()
