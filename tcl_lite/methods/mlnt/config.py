"""The `mlnt:` config section: MLNT's settings, defaults as the reference's Clothing1M run."""

from __future__ import annotations

from dataclasses import dataclass

from tcl_lite.config import opt
from tcl_lite.errors import ConfigError


@dataclass
class MLNTConfig:
    feature_checkpoint: str = opt("", "tcl_lite CE checkpoint (folder or model.safetensors) of the "
                                  "frozen feature network; empty = the student's initial weights.",
                                  path="checkpoint")
    num_synthetic: int = opt(10, "Synthetic label sets per step.", ge=1)
    perturb_ratio: float = opt(0.5, "Fraction of the batch relabelled in each synthetic set.",
                               ge=0.0, le=1.0)
    num_neighbors: int = opt(10, "Nearest neighbours (feature space, within the batch) to draw from.",
                             ge=1)
    meta_lr: float = opt(0.02, "Learning rate of the fast (inner) step.", gt=0.0)
    alpha: float = opt(1.0, "Maximum weight of the meta (consistency) loss.", ge=0.0)
    start_iter: int = opt(500, "Iteration at which the meta loss starts (first epoch).", ge=0)
    mid_iter: int = opt(2000, "Iteration at which the alpha ramp ends and the EMA decay rises.", ge=0)
    ema_decay_rampup: float = opt(0.99, "Teacher EMA decay during the ramp.", ge=0.0, le=1.0)
    ema_decay: float = opt(0.999, "Teacher EMA decay after the ramp.", ge=0.0, le=1.0)
    first_order: bool = opt(False, "Treat the fast step's gradient as a constant (approximation).")

    def validate(self) -> None:
        if self.mid_iter < self.start_iter:
            raise ConfigError("config key 'mlnt.mid_iter' must be >= mlnt.start_iter")
