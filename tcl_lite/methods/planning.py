"""What a method tells the planner (``tcl_lite.plan``) about its run, through four hooks of ``Method``
with defaults, so that a new method is planned without a planner edit:

* ``plan_config(cfg)``: the config to trace, when the run's own needs files the trace cannot read
  (MLNT's feature checkpoint: its network is traced as built from ``model.*``);
* ``plan_epochs(cfg)``: the kinds of epoch the run has (TCL: warm-up and corrected epochs; DivideMix:
  warm-up and MixMatch), each with the epoch the planner traces and how many epochs are like it;
* ``prepare_plan(epoch)``: a plausible state for tracing that epoch without having trained (e.g.
  DivideMix's division, half of the samples labeled); it runs on real tensors and keeps the shapes
  of the state the method built in ``__init__``;
* ``plan_passes(epoch)``: the forward-only passes over a data set in such an epoch besides training
  and the engine's evaluation (TCL's detection pass, DivideMix's co-divide), as a callable on one
  batch that the planner scales by the pass's length.

The planner traces one step of every phase of ``epoch_plan(epoch)`` and one batch of every pass.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass
class PlanEpoch:
    """A kind of epoch: ``epoch`` is the one traced (after ``prepare_plan(epoch)``), ``count`` the
    epochs of the run like it; ``global_step`` is the traced steps' ``StepInfo.global_step``."""

    label: str
    epoch: int
    count: int
    global_step: int = 0


@dataclass
class PlanPass:
    """A forward-only pass over ``dataset`` (batches of ``batch_size``), run ``per_epoch`` times in an
    epoch of its kind. ``forward(batch)`` is the pass's work on one batch; the planner calls it
    without a graph and with every network of the method in eval mode, as the passes run."""

    label: str
    dataset: Any
    forward: Callable[[dict[str, Any]], Any]
    batch_size: int
    per_epoch: float = 1.0
