"""The training engine: loop, optimizers and schedule, checkpoints, evaluation, time budget."""

from tcl_lite.engine.trainer import train

__all__ = ["train"]
