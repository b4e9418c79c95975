"""Encoders and heads: ``models.network.build_model(cfg.model, num_classes)`` returns a ``Network`` whose
single forward gives ``NetworkOutput(logits, proj, features)``. This ``__init__`` imports nothing, so that
``models.archs`` (the architecture names and their check) is read without torch."""
