"""Encoders and heads: ``build_model(cfg.model, num_classes)`` returns a ``Network`` whose single
forward gives ``NetworkOutput(logits, proj, features)``."""

from tcl_lite.models.network import (
    Encoder,
    ModelError,
    Network,
    NetworkOutput,
    build_encoder,
    build_model,
)

__all__ = ["Encoder", "ModelError", "Network", "NetworkOutput", "build_encoder", "build_model"]
