"""The encoders ``model.arch`` names: ``@register_arch`` and the built-in declarations, without torch.

An architecture is a builder ``(model config, in_channels, image_size) -> encoder`` (an ``nn.Module`` with
``out_dim`` and a settable ``activation_checkpointing``; ``models.encoder.Encoder`` gives both) registered in
``tcl_lite.registry.ARCHS`` with what is known before it is built:

* ``help``: one line for ``config-docs`` and the README's table;
* ``weights``: what ``model.pretrained=true`` loads ("" = nothing: the key is refused);
* ``weights_file``: which models read ``model.pretrained_path`` (a local .safetensors file), in words
  ("" = none: the key is refused);
* ``input_settings(arch) -> (image size, mean, std)``: the pretrained weights' own input, which the data
  follow (``model.pretrained_transforms``);
* a family (``timm:``) serves every ``timm:<name>``; its ``member_check`` refuses an unknown name.

The built-in ones are declared here with a loader that imports their module (torch) when a network is first
built, so ``model.arch=...`` is checked (and listed) by the config loader without torch. A user's or a test's
encoder uses ``@register_arch`` in its own module: no file of the package changes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tcl_lite.errors import ConfigError, ModelError
from tcl_lite.registry import ARCHS

if TYPE_CHECKING:
    from torch import nn

    from tcl_lite.config import ModelConfig

ArchBuilder = Callable[["ModelConfig", int, int], "nn.Module"]  # (model config, in_channels, image_size)
InputSettings = tuple[int, tuple[float, ...], tuple[float, ...]]  # (image size, mean, std)


def register_arch(name: str, *, help: str = "", weights: str = "", weights_file: str = "",
                  input_settings: Callable[[str], InputSettings] | None = None,
                  member_check: Callable[[str], None] | None = None) -> Callable[[ArchBuilder], ArchBuilder]:
    """Decorator: make ``model.arch=name`` build with the decorated builder (a name ending in ``:`` is a
    family: ``name<member>``, the builder reading the member from ``cfg.arch``)."""

    def add(builder: ArchBuilder) -> ArchBuilder:
        ARCHS.add(name, builder, family=name.endswith(":"), help=help, weights=weights, weights_file=weights_file,
                  input_settings=input_settings, member_check=member_check)
        return builder

    return add


def declare_arch(name: str, load: Callable[[], ArchBuilder], **declared: Any) -> None:
    """``register_arch`` for a builder that ``load()`` imports when first needed."""
    declared = {"help": "", "weights": "", "weights_file": "", "input_settings": None, "member_check": None,
                **declared}
    ARCHS.add(name, load=load, family=name.endswith(":"), **declared)


def check_weights(cfg: ModelConfig) -> None:
    """A ModelError unless the architecture reads the weights ``model.pretrained``/``pretrained_path`` ask for."""
    def having(what: str) -> str:
        return ", ".join(shown for name, shown in zip(ARCHS, ARCHS.shown()) if ARCHS.declared(name)[what]) or "none"

    declared = ARCHS.declared(cfg.arch)
    if cfg.pretrained_path and not declared["weights_file"]:
        readers = {ARCHS.declared(name)["weights_file"] for name in ARCHS} - {""}
        raise ModelError(f"model.pretrained_path is for {' and '.join(sorted(readers))} (model.arch="
                         f"{having('weights_file')}), not model.arch={cfg.arch}; clear it")
    if cfg.pretrained and not declared["weights"]:
        raise ModelError(f"model.pretrained=true is only available for {having('weights')}, not "
                         f"model.arch={cfg.arch}; set model.pretrained=false")


def weights_input(cfg: ModelConfig) -> InputSettings | None:
    """The image size and normalisation of the pretrained weights ``cfg`` starts from, when the data follow
    them (``model.pretrained_transforms`` and an architecture that declares them); else None."""
    settings = ARCHS.declared(cfg.arch).get("input_settings") if ARCHS.find(cfg.arch) else None
    if settings is None or not cfg.pretrained_transforms or not (cfg.pretrained or cfg.pretrained_path):
        return None
    return settings(cfg.arch)


# ---------------------------------------------------------------------------------------------
# The built-in architectures. Each loader imports the encoder's module (torch) when a network is first built.

def _tiny_cnn() -> ArchBuilder:
    from tcl_lite.models.tiny_cnn import TinyCNN  # torch: loaded on first use (see the docstring)

    return lambda cfg, in_channels, image_size: TinyCNN(width=cfg.width, norm=cfg.norm, in_channels=in_channels)


def _preact(form: str) -> Callable[[], ArchBuilder]:
    def load() -> ArchBuilder:
        from tcl_lite.models import preact_resnet  # torch: loaded on first use

        build = getattr(preact_resnet, form)
        return lambda cfg, in_channels, image_size: build(norm=cfg.norm, in_channels=in_channels)

    return load


def _torchvision(arch: str) -> Callable[[], ArchBuilder]:
    def load() -> ArchBuilder:
        from tcl_lite.models.torchvision_resnet import TorchvisionResNet  # torch: loaded on first use

        return lambda cfg, in_channels, image_size: TorchvisionResNet(arch, norm=cfg.norm, in_channels=in_channels,
                                                                      pretrained=cfg.pretrained)

    return load


def _resnet18_cifar() -> ArchBuilder:
    from tcl_lite.models.resnet_cifar import build_resnet18_cifar  # torch: loaded on first use

    return lambda cfg, in_channels, image_size: build_resnet18_cifar(in_channels=in_channels, norm=cfg.norm)


def _timm() -> ArchBuilder:
    from tcl_lite.models.timm_backbone import TimmEncoder  # torch and timm: loaded on first use

    return lambda cfg, in_channels, image_size: TimmEncoder(cfg.arch, in_channels=in_channels, image_size=image_size,
                                                            pretrained=cfg.pretrained,
                                                            pretrained_path=cfg.pretrained_path)


def _timm_member_check(arch: str) -> None:
    from tcl_lite.models.timm_backbone import timm_name  # optional heavy dependency (timm): only for timm archs

    try:
        timm_name(arch)
    except ValueError as e:
        raise ConfigError(f"config key 'model.arch': {e}") from None


def _timm_input(arch: str) -> InputSettings:
    from tcl_lite.models.timm_backbone import data_settings  # optional heavy dependency (timm): only for timm archs

    return data_settings(arch)


declare_arch("tiny_cnn", _tiny_cnn, help="a small CNN (stem + 3 stages, `model.width` channels doubled per stage): "
             "the default, for the digits and tests")
declare_arch("preact_resnet18", _preact("preact_resnet18"),
             help="the TCL reference's own PreAct ResNet-18 (stem BN, identity branch = the pre-activated tensor), "
                  "the CIFAR encoder the paper trained")
declare_arch("preact_resnet18_he", _preact("preact_resnet18_he"),
             help="He et al.'s PreAct ResNet-18 (tcl_lite's `preact_resnet18` before model layout 2)")
declare_arch("preact_resnet18_dividemix", _preact("preact_resnet18_dividemix"),
             help="DivideMix's encoder: `preact_resnet18` without the final BN + ReLU, PyTorch's default "
                  "initialisation (with `model.head=linear` as in DivideMix)")
for _name in ("resnet18", "resnet34", "resnet50"):
    declare_arch(_name, _torchvision(_name), weights="ImageNet (torchvision)",
                 help=f"torchvision's {_name} (ImageNet stem, for larger images; `model.pretrained`: ImageNet weights)")
declare_arch("resnet18_cifar", _resnet18_cifar,
             help="ProMix's post-activation ResNet-18 with the CIFAR stem (3x3 conv, no max-pool)")
declare_arch("timm:", _timm, weights="timm's (Hugging Face hub)", weights_file="timm models",
             input_settings=_timm_input, member_check=_timm_member_check,
             help="any `timm.list_models()` name, e.g. `timm:convnext_tiny`: timm's pooled features, tcl_lite's "
                  "heads (`model.norm` sets theirs); `model.pretrained` / `model.pretrained_path` weights")
