"""The names ``model.arch`` accepts and their check, without torch: importing this module registers
the check with the config loader (``config.register_check``), so a bad name is a config error before
anything is built, and ``tcl-lite train model.arch=...`` answers it without importing torch."""

from __future__ import annotations

from tcl_lite.config import register_check
from tcl_lite.errors import ConfigError

ARCHS = ("tiny_cnn", "preact_resnet18", "preact_resnet18_he", "preact_resnet18_dividemix", "resnet18", "resnet34",
         "resnet50")
TIMM_PREFIX = "timm:"


def check_arch(arch: str) -> None:
    """A ConfigError unless ``arch`` is one of ``ARCHS`` or ``timm:<a timm model name>``."""
    if arch.startswith(TIMM_PREFIX):
        from tcl_lite.models.timm_backbone import timm_name  # optional heavy dependency (timm): only for timm archs

        try:
            timm_name(arch)
        except ValueError as e:
            raise ConfigError(f"config key 'model.arch': {e}") from None
    elif arch not in ARCHS:
        raise ConfigError(f"config key 'model.arch': {arch!r} is not allowed; choose one of {', '.join(ARCHS)} "
                          "or timm:<name>")


register_check("model.arch", check_arch)
