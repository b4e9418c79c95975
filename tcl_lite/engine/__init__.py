"""The training engine: loop, optimizers and schedule, checkpoints, evaluation, time budget."""

from tcl_lite.checkpoints.manager import CheckpointManager, TrainerState
from tcl_lite.engine.trainer import train
from tcl_lite.errors import CheckpointError

__all__ = ["CheckpointError", "CheckpointManager", "TrainerState", "train"]
