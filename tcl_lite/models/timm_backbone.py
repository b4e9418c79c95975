"""Any timm model as the encoder: ``model.arch=timm:<name>`` (a ``timm.list_models()`` name).

The encoder is ``timm.create_model(name, num_classes=0)``: timm's own pooling, features of
``num_features`` dimensions; tcl_lite's heads go on top. Weights: ``model.pretrained=true`` asks
timm (Hugging Face hub or its cache), ``model.pretrained_path`` reads a local ``.safetensors``
file through timm's loader (which drops a classifier of another size), so offline machines and
Kaggle datasets work. Activation checkpointing is timm's ``set_grad_checkpointing``.
"""

from __future__ import annotations

import difflib
import os
from typing import Any

from torch import Tensor, nn

from tcl_lite.errors import ModelError


def timm_name(arch: str) -> str:
    """``timm:resnet10t`` -> ``resnet10t`` (the member of the family ``models.archs`` registers); an unknown
    name is a ModelError with close matches."""
    import timm

    family, _, name = arch.partition(":")
    if not name or name not in timm.list_models():
        # list_models() without pretrained tags is ~1.4k names: close matches are cheap to find.
        close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.5)
        hint = f"close matches: {', '.join(f'{family}:{c}' for c in close)}" if close else \
            f"see timm.list_models() (e.g. {family}:resnet50, {family}:convnext_tiny)"
        raise ModelError(f"model.arch={arch!r}: {name!r} is not a timm model name; {hint}")
    return name


def pretrained_config(arch: str) -> dict[str, Any]:
    """timm's default pretrained config of the model (input_size, mean, std, hf_hub_id, ...), read
    without building the model or downloading anything."""
    import timm

    cfg = timm.get_pretrained_cfg(timm_name(arch))
    return cfg.to_dict() if cfg is not None else {}


def _weights_help(name: str, cfg: dict[str, Any]) -> str:
    hub = cfg.get("hf_hub_id")
    where = (f"https://huggingface.co/{hub} (file model.safetensors)" if hub else cfg.get("url") or "timm's sources")
    return (f"on a machine with network, download the weights from {where} (or attach them to a Kaggle notebook "
            f"as a dataset) and set model.pretrained_path=/path/to/model.safetensors; or set "
            f"model.pretrained=false to start from random weights")


def _check_file_covers(model: nn.Module, path: str, name: str) -> None:
    """timm loads a classifier-less model non-strictly (it only warns): require every tensor of the
    encoder to be in the file, so a file of another model is an error rather than random weights."""
    from safetensors import safe_open

    with safe_open(path, framework="pt") as f:
        in_file = set(f.keys())
    missing = [k for k in model.state_dict() if k not in in_file and not k.endswith("num_batches_tracked")]
    if missing:
        raise ModelError(f"model.pretrained_path={path!r} does not hold weights of {name}: {len(missing)} of its "
                         f"tensors are missing (e.g. {missing[:3]}); give the .safetensors file of that model")


class TimmEncoder(nn.Module):
    """A timm model without its classifier: images [B, C, H, W] -> pooled features [B, out_dim].

    ``activation_checkpointing`` (settable, like ``Encoder``'s) switches timm's
    ``set_grad_checkpointing``, which recomputes blocks in backward (non-reentrant). Unlike the
    built-in encoders, BatchNorm layers inside a recomputed block update their running statistics a
    second time during recomputation (timm offers no hook to undo that); models with LayerNorm
    (ViTs, ConvNeXt) are unaffected.
    """

    def __init__(self, arch: str, *, in_channels: int = 3, image_size: int = 224, pretrained: bool = False,
                 pretrained_path: str = "") -> None:
        super().__init__()
        import timm

        name = timm_name(arch)
        cfg = pretrained_config(arch)
        kwargs: dict[str, Any] = {"num_classes": 0, "in_chans": in_channels}
        if cfg.get("fixed_input_size"):  # ViT-like: the position embedding is built for one size
            kwargs["img_size"] = image_size
        if pretrained_path:
            if not os.path.isfile(pretrained_path):
                raise ModelError(f"model.pretrained_path={pretrained_path!r} does not exist; give the path of a "
                                 f"local .safetensors weights file of {name} ({_weights_help(name, cfg)})")
            if not pretrained_path.endswith(".safetensors"):
                raise ModelError(f"model.pretrained_path={pretrained_path!r}: only .safetensors files are read "
                                 "(loading never unpickles); convert the file or download timm's model.safetensors")
            kwargs["pretrained_cfg_overlay"] = {"file": pretrained_path}
        try:
            self.model = timm.create_model(name, pretrained=bool(pretrained or pretrained_path), **kwargs)
        except ModelError:
            raise
        except Exception as err:  # offline, missing cache, wrong file: all have a fix to name
            if pretrained_path:
                raise ModelError(f"model.pretrained_path={pretrained_path!r} does not hold weights of {name} "
                                 f"({type(err).__name__}: {str(err)[:300]})") from err
            if pretrained:
                raise ModelError(f"model.arch={arch} with model.pretrained=true: cannot get timm's weights "
                                 f"({type(err).__name__}: {str(err)[:200]}). To work offline, "
                                 f"{_weights_help(name, cfg)}") from err
            raise ModelError(f"model.arch={arch}: timm cannot build it with {kwargs} "
                             f"({type(err).__name__}: {err})") from err
        if pretrained_path:
            _check_file_covers(self.model, pretrained_path, name)
        self.arch = arch
        self.out_dim = int(self.model.num_features)
        self._checkpointing = False

    @property
    def activation_checkpointing(self) -> bool:
        return self._checkpointing

    @activation_checkpointing.setter
    def activation_checkpointing(self, enable: bool) -> None:
        if enable and not hasattr(self.model, "set_grad_checkpointing"):
            raise ModelError(f"model.arch={self.arch} has no set_grad_checkpointing in timm; set "
                             "train.activation_checkpointing=false")
        if hasattr(self.model, "set_grad_checkpointing"):
            self.model.set_grad_checkpointing(bool(enable))
        self._checkpointing = bool(enable)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


def data_settings(arch: str) -> tuple[int, tuple[float, ...], tuple[float, ...]]:
    """(image size, mean, std) of the model's pretrained config, for the data transforms."""
    cfg = pretrained_config(arch)
    size = int(cfg.get("input_size", (3, 224, 224))[-1])
    return size, tuple(float(v) for v in cfg.get("mean", (0.485, 0.456, 0.406))), \
        tuple(float(v) for v in cfg.get("std", (0.229, 0.224, 0.225)))
