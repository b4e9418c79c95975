"""The batches of an epoch: the method's phases, each zipping one or more loaders.

Every loader's sample order and augmentations are a function of (seed, epoch, phase, loader, pass
over the loader): the order through Accelerate's seedable sampler (``set_epoch(key)``), the
augmentations through the dataset's ``set_epoch(key)``. So the epoch's step ``k`` always sees the
same batch, and resuming at ``k`` skips the batches before it without loading them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from tcl_lite.config import Config
from tcl_lite.data.datasets import mix_seed
from tcl_lite.errors import ConfigError
from tcl_lite.methods.base import LoaderSpec, Phase


def order_key(epoch: int, phase: int, loader: int, pass_index: int) -> int:
    """The sampler / augmentation key of one pass over one loader. The first pass over the first
    loader of the first phase is keyed by the epoch alone, as a single-loader epoch always was."""
    if phase == loader == pass_index == 0:
        return epoch
    return mix_seed(epoch, (phase << 20) | (loader << 10) | 1, pass_index) >> 1


@dataclass
class PhaseStep:
    """One step of an epoch: its phase and the batch (a dict, or a dict of them per loader name)."""

    phase_index: int
    phase: Phase
    phase_step: int
    phase_steps: int
    batch: Any


class EpochData:
    """Builds (and reuses across epochs) the prepared loaders of the method's phases."""

    def __init__(self, accelerator: Any, cfg: Config) -> None:
        self.accelerator, self.cfg = accelerator, cfg
        self._cache: dict[tuple[str, str], tuple[LoaderSpec, Any]] = {}

    def loader(self, phase: Phase, name: str) -> Any:
        spec = phase.loaders[name]
        cached = self._cache.get((phase.name, name))
        if cached is not None and cached[0] == spec and cached[0].dataset is spec.dataset:
            return cached[1]
        n = self.accelerator.num_processes
        usable = len(spec.dataset) // n if spec.drop_last else -(-len(spec.dataset) // n)
        if usable < spec.batch_size and spec.drop_last:
            raise ConfigError(f"config key 'train.batch_size': a batch of {spec.batch_size} x {n} processes "
                              f"exceeds the {len(spec.dataset)} samples of phase {phase.name!r}"
                              f"{f' (loader {name!r})' if name else ''}; lower it")
        dl = torch.utils.data.DataLoader(
            spec.dataset, batch_size=spec.batch_size, shuffle=spec.shuffle, drop_last=spec.drop_last,
            num_workers=self.cfg.data.num_workers, pin_memory=self.accelerator.device.type == "cuda",
            # A private generator: creating the iterator must not consume the global RNG.
            generator=torch.Generator().manual_seed(self.cfg.seed))
        prepared = self.accelerator.prepare_data_loader(dl)
        if cached is not None:  # the replaced loader is not Accelerate's to keep
            self._forget(cached[1])
        self._cache[(phase.name, name)] = (spec, prepared)
        return prepared

    def _forget(self, loader: Any) -> None:
        if loader in self.accelerator._dataloaders:
            self.accelerator._dataloaders.remove(loader)

    def phase_steps(self, phase: Phase) -> int:
        if phase.steps is not None:
            return phase.steps
        return len(self.loader(phase, next(iter(phase.loaders))))

    def steps_per_epoch(self, plan: list[Phase]) -> int:
        return sum(self.phase_steps(p) for p in plan)

    def batches(self, plan: list[Phase], epoch: int, start: int = 0) -> Iterator[PhaseStep]:
        """Every step of the epoch from step ``start`` (counted over all phases) on."""
        offset = 0
        for index, phase in enumerate(plan):
            steps = self.phase_steps(phase)
            if start < offset + steps:
                first = max(0, start - offset)
                streams = [self._stream(epoch, index, j, phase, name, first, steps)
                           for j, name in enumerate(phase.loaders)]
                names = list(phase.loaders)
                for step in range(first, steps):
                    parts = [next(s) for s in streams]
                    batch = parts[0] if len(parts) == 1 else dict(zip(names, parts))
                    yield PhaseStep(index, phase, step, steps, batch)
            offset += steps

    def _stream(self, epoch: int, phase_index: int, loader_index: int, phase: Phase, name: str, first: int,
                steps: int) -> Iterator[Any]:
        """Batches ``first..steps-1`` of one loader, starting a new pass whenever one ends."""
        loader = self.loader(phase, name)
        per_pass = len(loader)
        if per_pass == 0:
            raise ConfigError(f"phase {phase.name!r}: loader {name or 'train'!r} has no batch")
        pass_index, skip = divmod(first, per_pass)
        dataset = phase.loaders[name].dataset
        produced = first
        while produced < steps:
            key = order_key(epoch, phase_index, loader_index, pass_index)
            if hasattr(dataset, "set_epoch"):
                dataset.set_epoch(key)  # augmentations are a function of (seed, key, index)
            loader.set_epoch(key)  # data order is a function of (seed, key)
            source = self.accelerator.skip_first_batches(loader, skip) if skip else loader
            for batch in source:
                if hasattr(dataset, "finish_batch"):  # augment_on=device: the views, made for the whole batch
                    batch = dataset.finish_batch(batch)
                yield batch
                produced += 1
                if produced == steps:
                    return
            pass_index, skip = pass_index + 1, 0
