"""Datasets, label noise and views for tcl_lite; ``build_data(cfg.data, seed)`` is the entry point."""

from .build import DataBundle, balanced_subset, build_data
from .datasets import IndexedDataset, mix_seed
from .noise import asymmetric_map, asymmetric_noise, load_label_file, pairflip_noise, read_label_file, symmetric_noise
from .transforms import VIEW_KINDS, MultiView, make_transform

__all__ = [
    "VIEW_KINDS",
    "DataBundle",
    "IndexedDataset",
    "MultiView",
    "asymmetric_map",
    "asymmetric_noise",
    "balanced_subset",
    "build_data",
    "load_label_file",
    "make_transform",
    "mix_seed",
    "pairflip_noise",
    "read_label_file",
    "symmetric_noise",
]
