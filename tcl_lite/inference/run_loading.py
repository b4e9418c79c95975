"""A finished (or stopped) run directory as objects: its config, its data, a checkpoint's network.

Everything is read from safetensors, JSON and YAML; nothing is unpickled. Used by label issues,
``predict`` and ``export-model``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from tcl_lite.checkpoints import schema
from tcl_lite.checkpoints.finder import WHICH, find_checkpoint
from tcl_lite.checkpoints.reader import weights_file
from tcl_lite.config import Config, load_config
from tcl_lite.data import build_data
from tcl_lite.errors import CheckpointError, NoCheckpointError, RunError
from tcl_lite.methods import get_method
from tcl_lite.models.network import build_model


def run_config(run_dir: str | Path) -> Config:
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise RunError(f"{run_dir} holds no config.yaml: expected a run directory written by train.py "
                       "(e.g. runs/default after `python train.py`)")
    # Model selection plays no part in using a run; runs from before validation splits named test_acc.
    return load_config(run_dir / "config.yaml", ["checkpoint.best_metric="])


def choose_checkpoint(run_dir: str | Path, which: str = "final") -> Path:
    """``final``: the newest valid rolling checkpoint; ``best``: checkpoints/best; ``auto``: best when the
    run kept one, else final; anything else: a checkpoint folder path. Through ``find_checkpoint``;
    its errors become RunError."""
    keyword = which in WHICH
    try:
        return find_checkpoint(run_dir if keyword else which, which if keyword else "final", log=None)
    except NoCheckpointError as e:
        if keyword:
            raise RunError(str(e)) from None
        raise RunError(f"--checkpoint {which}: not a checkpoint folder (with model.safetensors); give best, "
                       f"final or a folder under RUN/checkpoints/ ({e})") from None
    except CheckpointError as e:
        raise RunError(str(e)) from None


def recorded_stats(run_dir: str | Path) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """The (mean, std) a run trained with, from its data.json (None when it has none)."""
    path = Path(run_dir) / "data.json"
    try:
        info = json.loads(path.read_text())
        return tuple(info["mean"]), tuple(info["std"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def run_data(run_dir: str | Path, cfg: Config) -> Any:
    """The run's DataBundle, rebuilt from its config with the normalisation it trained with (data.json); the
    noisy labels must be those it trained on."""
    data = build_data(cfg.data, cfg.seed, cfg.model, reference=get_method(cfg.method).normalization,
                      stats=recorded_stats(run_dir))
    saved = Path(run_dir) / "noisy_labels.npy"
    try:
        given = schema.read_labels(saved) if saved.is_file() else None
    except schema.Invalid as e:
        raise RunError(f"{run_dir}: {e}") from None
    if given is not None and not np.array_equal(given, data.noisy_labels):
        raise RunError(f"the data rebuilt from {Path(run_dir) / 'config.yaml'} does not have the labels the run "
                       f"trained on ({saved}): the dataset under data.root={cfg.data.root!r} changed")
    return data


def load_network(cfg: Config, ckpt: Path, num_classes: int, image_size: int, *,
                 state: dict[str, Any] | None = None) -> nn.Module:
    """What predicts with the run's networks (``inference_model`` of its method), in eval mode, on the CPU.

    Every network of the method's ``model_specs`` is built from ``model.*`` and given the checkpoint's
    weights (``model.safetensors`` for the first, ``model.NAME.safetensors`` for each other) or those
    in ``state``: state dicts by network name (a name it lacks: from the checkpoint's files; a flat
    state dict of tensors: the first network's)."""
    method_cls = get_method(cfg.method)
    specs = method_cls.model_specs(cfg)
    if state and all(isinstance(v, torch.Tensor) for v in state.values()):
        state = {next(iter(specs)): state}
    model_cfg, nets = _weights_free(cfg.model), {}
    for i, (name, spec) in enumerate(specs.items()):
        net = build_model(model_cfg, num_classes, image_size=image_size, spec=spec)
        weights = (state or {}).get(name)
        if weights is None:
            weights = _read_weights(ckpt, weights_file(i, name))
        try:
            net.load_state_dict(weights)
        except RuntimeError as e:
            raise RunError(f"{ckpt}: the weights of network {name!r} do not fit the run's model "
                           f"({str(e)[:300]})") from None
        nets[name] = net.eval()
    return method_cls.inference_model(nets).eval()


def _weights_free(model_cfg: Any) -> Any:
    """``model.*`` without pretrained weights to fetch: the checkpoint holds every weight."""
    if model_cfg.pretrained or model_cfg.pretrained_path:
        import dataclasses

        return dataclasses.replace(model_cfg, pretrained=False, pretrained_path="")
    return model_cfg


def _read_weights(ckpt: Path, file: str) -> dict[str, torch.Tensor]:
    if not (ckpt / file).is_file():
        raise RunError(f"{ckpt} holds no {file}: a checkpoint of another method, or an incomplete copy; use the "
                       "run's own checkpoints (the run's config.yaml names its method)")
    try:
        return load_file(str(ckpt / file))
    except (SafetensorError, OSError) as e:
        raise RunError(f"{ckpt / file} cannot be read as safetensors ({e}); the checkpoint is damaged: use another "
                       "one (--checkpoint) or restore the file") from None


def logits_of(output: Any) -> torch.Tensor:
    """The logits of a model's output: a tensor, or an object with ``.logits`` (``NetworkOutput``)."""
    return output if isinstance(output, torch.Tensor) else output.logits


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@torch.no_grad()
def predict_probabilities(net: nn.Module, dataset: Any, batch_size: int = 256,
                          device: torch.device | None = None) -> np.ndarray:
    """Softmax outputs [N, K] over an indexed dataset (its own transform), batched, on ``device``."""
    device = device or default_device()
    net = net.to(device).eval()
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)
    out = [logits_of(net(batch["image"].to(device))).float().softmax(dim=1).cpu() for batch in loader]
    return torch.cat(out).numpy()
