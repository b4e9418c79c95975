"""Encoders and heads: ``models.network.build_model(cfg.model, num_classes)`` returns a ``Network`` whose
single forward gives ``NetworkOutput(logits, proj, features, heads)``. This ``__init__`` imports only
``models.archs``, which declares the built-in architectures without torch: importing any module of the
package registers them, and ``model.arch`` is checked (and listed) without torch."""

from tcl_lite.models import archs  # noqa: F401 - registers the built-in architectures (no torch)
