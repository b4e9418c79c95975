"""Typed configuration: dataclasses, YAML presets and ``key=value`` overrides.

Every field carries its documentation and its allowed values in ``metadata`` so that one
table (``python -m tcl_lite config-docs``) documents every key, and every bad value is
rejected before anything runs, with the key and what is allowed named in the error.

This module is a leaf of the package: it imports only ``errors``, ``registry`` and ``presets``. What
higher layers own reaches the loader by registration, never by an import from here: the methods'
config sections and names come from ``registry.METHODS`` (filled by ``tcl_lite.methods``); ``method``,
``model.arch`` and ``data.dataset`` name entries of ``METHODS``, ``ARCHS`` (filled by ``tcl_lite.models``)
and ``DATASETS`` (filled by ``tcl_lite.data``), which check them, list them in errors and in
``config_docs``; and a key whose check lives with its owner (``data`` with the datasets, ``train.log_with``
with the trackers) is checked by the function that owner passed to ``register_check`` when it was
imported. ``tcl_lite.load_config`` imports every built-in owner, then calls ``load_config`` here.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tcl_lite.errors import ConfigError
from tcl_lite.presets import find_base, find_preset
from tcl_lite.registry import ARCHS, DATASETS, METHODS, REGISTERS_BUILTINS, Registry


class _Yaml12Loader(yaml.SafeLoader):
    """PyYAML's safe loader plus YAML 1.2's floats: ``1e-3``, ``1E6`` (YAML 1.1 needs a dot there)."""


_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?$"), list("-+0123456789."))


def load_yaml(text: str) -> Any:
    """YAML text -> Python values, with every float a user would type read as a float."""
    return yaml.load(text, Loader=_Yaml12Loader)  # a SafeLoader subclass: builds plain values only


def opt(default: Any, help: str, *, choices: tuple | None = None, ge: float | None = None,
        gt: float | None = None, le: float | None = None, registry: Registry | None = None,
        path: str | None = None, words: tuple[str, ...] | None = None) -> Any:
    """A dataclass field with its documentation and its constraints (``registry``: the value names one of
    its entries). ``path``: the key names a file or folder (``file``, ``folder``, ``checkpoint``,
    ``output``): the CLI checks it before training and tests/test_paths.py gives it damaged files.
    ``words``: the strings a numeric key also takes (``auto``); its type is then a union of the number and
    ``str``."""
    meta = {"help": help, "choices": choices, "ge": ge, "gt": gt, "le": le, "registry": registry, "path": path,
            "words": words}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class DataConfig:
    dataset: str = opt("digits", "Dataset: a registered dataset's name (the Datasets table of docs/config.md; "
                       "`digits` is scikit-learn's bundled 8x8 digits, no download).", registry=DATASETS)
    root: str = opt("./data", "Folder holding the dataset (CIFAR: torchvision's layout; imagefolder: "
                    "train/<class>/..., optional val/<class>/... and test/<class>/...; filelist: the image root "
                    "of the lists).", path="folder")
    download: bool = opt(True, "Let torchvision download CIFAR when it is missing and the network allows.")
    image_size: int = opt(16, "Side length images are trained at (digits are resized to it; "
                          "folders are resized/cropped to it).", ge=4)
    digits_test_fraction: float = opt(0.3, "Fraction of the 1,797 digits held out as the test set.",
                                      gt=0.0, le=0.9)
    train_list: str = opt("", "filelist: text file of `relative/path.jpg label` lines for training "
                          "(Clothing1M's noisy_train_key_list + noisy_label_kv form also accepted).", path="file")
    test_list: str = opt("", "filelist: the clean test list, same format as `train_list` (optional).", path="file")
    val_list: str = opt("", "filelist: a validation list, same format, labels as you have them (optional).",
                        path="file")
    val_fraction: float = opt(0.0, "Hold out this fraction of the training set (stratified by its noisy labels, "
                              "fixed by the seed) for validation; it selects the `best` checkpoint.",
                              ge=0.0, le=0.5)
    num_classes: int = opt(0, "filelist: number of classes (0 = infer from the labels).", ge=0)
    noise_type: str = opt("symmetric", "Synthetic label noise applied to the training labels. `file` "
                          "reads `noise_file`.", choices=("none", "symmetric", "asymmetric", "pairflip", "file"))
    noise_rate: float = opt(0.4, "Fraction r of training samples whose label is resampled "
                            "(symmetric: uniform over all classes; asymmetric: mapped; pairflip: y -> (y+1) mod K).",
                            ge=0.0, le=1.0)
    noise_file: str = opt("", "Label file for noise_type=file: .npy, .csv (one label per row or an "
                          "`index,label` table) or a CIFAR-N .pt dictionary.", path="file")
    noise_key: str = opt("worse_label", "Key to read from a CIFAR-N .pt dictionary "
                         "(aggre_label, worse_label, random_label1..3).")
    normalization: str = opt("auto", "Mean/std the images are normalised with: `auto` = the constants the "
                             "method's reference used on this dataset (CIFAR: TCL's, DivideMix's, ProMix's own "
                             "sets, which differ in the std's decimals), else the dataset's own; `dataset` = the "
                             "dataset's own statistics (digits: computed from the training images; CIFAR: the "
                             "exact per-channel ones; folders: ImageNet's); or a set the dataset names (CIFAR: "
                             "`tcl`, `dividemix`, `promix`). Pretrained timm weights with "
                             "model.pretrained_transforms use theirs.")
    train_subset: int = opt(0, "Use only this many training samples (class-balanced, fixed by the "
                            "seed); 0 = all.", ge=0)
    test_subset: int = opt(0, "Use only this many test samples (class-balanced); 0 = all.", ge=0)
    num_workers: int = opt(0, "DataLoader worker processes (2 on Colab/Kaggle).", ge=0)
    verify_images: int = opt(100000, "Image folders and file lists with at most this many images (after "
                             "the subsets) have every image opened before the run directory is created, "
                             "so a corrupt file stops the run at once; 0 = never.", ge=0)
    augment_on: str = opt("auto", "Where training views are made: `workers` (each sample in the DataLoader "
                          "workers, torchvision v2), `device` (workers only decode; the whole batch on the "
                          "training device, same parameter distributions); `auto` = device wherever the "
                          "method's views have a batched form (faster on the CPU too: BENCHMARKS.md), else "
                          "workers.", choices=("auto", "device", "workers"))
    cache_decoded: str = opt("auto", "Image folders / file lists: decode every image once into memory "
                             "(uint8 at image_size) before training instead of on every access; `auto` "
                             "when that takes at most a quarter of the available memory.",
                             choices=("auto", "on", "off"))


@dataclass
class ModelConfig:
    arch: str = opt("tiny_cnn", "Encoder: a registered architecture's name (the Architectures table of "
                    "docs/config.md), or `timm:<name>` for any timm.list_models() name.", registry=ARCHS)
    width: int = opt(32, "tiny_cnn: channels of the first stage (doubled per stage).", ge=1)
    norm: str = opt("batch", "Normalisation layers: batch (reference), group (encoder GroupNorm, "
                    "heads LayerNorm: batch-independent), none.", choices=("batch", "group", "none"))
    sync_bn: str = opt("auto", "BatchNorm statistics under data parallelism (more than one process): `on` = over "
                       "every process's samples (SyncBatchNorm, as the TCL reference converts its network), `off` = "
                       "each process's own samples (per-process BatchNorm), `auto` = `on` for the methods whose "
                       "reference synchronises (TCL), `off` for the others. One process: no effect.",
                       choices=("auto", "on", "off"))
    head: str = opt("mlp", "Classifier head: the reference's MLP (Linear-BN-ReLU-Dropout-Linear-BN) "
                    "or a single linear layer.", choices=("mlp", "linear"))
    proj_dim: int = opt(256, "Projector output size (methods that need a projector).", ge=1)
    dropout: float = opt(0.25, "Dropout in the MLP classifier head.", ge=0.0, le=1.0)
    pretrained: bool = opt(False, "torchvision ResNets and timm models: start from ImageNet weights (needs "
                           "network or a filled torch hub / Hugging Face cache).")
    pretrained_path: str = opt("", "timm models: a local .safetensors weights file to start from (offline "
                               "machines, Kaggle datasets); implies pretrained weights.", path="file")
    pretrained_transforms: bool = opt(True, "timm with pretrained weights: train at the weights' input size "
                                      "and normalise with their mean/std (false: data.image_size and the "
                                      "dataset's statistics).")


@dataclass
class OptimConfig:
    name: str = opt("sgd", "Optimizer; the 8bit forms are bitsandbytes' (32-bit form with a warning "
                    "when bitsandbytes cannot load).", choices=("sgd", "adamw", "sgd8bit", "adamw8bit"))
    lr: float = opt(0.03, "Peak learning rate per 256 samples of global batch (see `scale_lr`).", gt=0.0)
    scale_lr: bool = opt(True, "Multiply `lr` by global_batch/256, as the reference does.")
    momentum: float = opt(0.9, "SGD momentum.", ge=0.0, le=1.0)
    weight_decay: float = opt(1e-3, "Weight decay on all parameters (reference: 1e-3).", ge=0.0)
    betas: list = opt([0.9, 0.999], "AdamW betas.")
    schedule: str = opt("cosine", "Schedule: linear warm-up then the reference cosine; "
                        "`step` multiplies by `gamma` at each epoch in `milestones`.",
                        choices=("cosine", "step", "constant"))
    schedule_unit: str = opt("iteration", "When the schedule sets the lr: every `iteration`, at the fractional "
                             "epoch (TCL's reference), or once per `epoch`, at the epoch's index (e.g. ProMix's "
                             "reference: lr = min + (max - min)(1 + cos(pi e / epochs)) / 2 for e = 0, 1, ...).",
                             choices=("iteration", "epoch"))
    warmup_epochs: float = opt(0.0, "Linear warm-up from 0 over this many (fractional) epochs.", ge=0.0)
    min_lr_ratio: float = opt(0.01, "Cosine floor as a fraction of the peak (reference: 0.01).",
                              ge=0.0, le=1.0)
    milestones: list = opt([], "step schedule: epochs at which the lr is multiplied by `gamma`.")
    gamma: float = opt(0.1, "step schedule factor.", gt=0.0)
    grad_clip: float = opt(0.0, "Clip the global gradient norm to this value (0 = off).", ge=0.0)


@dataclass
class TrainConfig:
    epochs: int = opt(30, "Training epochs.", ge=1)
    batch_size: int = opt(64, "Samples per optimizer step on each process (the global batch is "
                          "batch_size x processes).", ge=1)
    gradient_accumulation_steps: int | str = opt(
        1, "The number of micro-batches each batch is split into (memory / accumulation; Accelerate's name for it); "
        "must divide batch_size. `auto`: the fewest whose predicted peak (`tcl-lite plan`'s trace, before the first "
        "step) fits `memory_budget`; a resumed run keeps the count it started with.", ge=1, words=("auto",))
    memory_budget: str = opt("", "Memory `gradient_accumulation_steps: auto` plans for, e.g. `14GiB` or `900MiB`; "
                             "empty = the GPU's memory less the CUDA context, on the CPU the available RAM.")
    auto_micro_batch: bool = opt(True, "On a GPU out-of-memory error, retry the step split into more "
                                 "micro-batches (same effective batch); single process only.")
    mixed_precision: str = opt("no", "Autocast through Accelerate. fp16 needs a GPU; bf16 also runs "
                               "on CPU.", choices=("no", "fp16", "bf16"))
    activation_checkpointing: bool = opt(False, "Recompute each encoder stage in backward instead "
                                         "of storing its activations.")
    eval_batch_size: int = opt(256, "Batch size of evaluation and full passes over the data.", ge=1)
    eval_every: int = opt(1, "Evaluate on the test set every this many epochs (and at the end).", ge=1)
    time_budget: str = opt("", "Stop cleanly (checkpoint, exit 0) before this much wall time, "
                           "e.g. `11h30m` on Kaggle; empty = no limit.")
    log_every: int = opt(10, "Refresh the progress line every this many steps.", ge=1)
    log_with: str = opt("auto", "Experiment trackers (through Accelerate): tensorboard, wandb, a comma-separated "
                        "list of them, none, or auto (= tensorboard when it is installed). They get per-step "
                        "loss terms, lr and throughput every `log_every` steps and every evaluation.")
    cpu: bool = opt(False, "Force the CPU even when a GPU is visible.")
    nonfinite: str = opt("stop", "A step whose loss (or clipped gradient norm) is NaN/inf: `stop` with an "
                         "error, keeping the last good checkpoint newest; `skip` the optimizer step and count "
                         "it (metric `nonfinite_steps`).", choices=("stop", "skip"))


@dataclass
class CheckpointConfig:
    keep_last: int = opt(3, "Rolling checkpoints kept in OUTPUT/checkpoints (older ones deleted).", ge=1)
    every_steps: int = opt(0, "Also checkpoint every this many optimizer steps (0 = epoch ends only).",
                           ge=0)
    best_metric: str = opt("val_acc", "Validation metric that selects the `best` checkpoint ('' = none; kept "
                           "only with a validation split; test metrics are refused).")
    best_mode: str = opt("max", "Whether a higher or lower `best_metric` is better.",
                         choices=("max", "min"))


@dataclass
class Config:
    method: str = opt("ce", "Training method: a registered method's name (`tcl_lite/methods/`; each has its own "
                      "config section named after it).", registry=METHODS)
    seed: int = opt(0, "Seed of everything: noise, data order, augmentations, initialisation.", ge=0)
    output_dir: str = opt("runs/default", "Run directory: config, labels, metrics, checkpoints.", path="output")
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    # The methods' own sections (``cfg.tcl``, ``cfg.mlnt``...), declared by the method modules
    # (``Method.config``) and read from the top level of the YAML like the sections above.
    sections: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for name, section in method_sections().items():
            self.sections.setdefault(name, section())

    def __getattr__(self, name: str) -> Any:
        sections = self.__dict__.get("sections")
        if sections is not None and name in sections:
            return sections[name]
        raise AttributeError(f"{type(self).__name__!r} has no attribute or method section {name!r}")


# ---------------------------------------------------------------------------------------------
# Building a Config from YAML and overrides

def _is_section(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


class _BoolWord(str):
    """An override such as ``no`` or ``on``: a string for str keys, a boolean for bool keys."""

    def as_bool(self) -> bool:
        return self.lower() in ("yes", "on", "y")


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Check ``value`` against the annotated type ``tp``; ints are accepted where floats are."""
    if isinstance(value, _BoolWord):
        value = value.as_bool() if tp is bool else str(value)
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        if isinstance(value, str) and str in args[1:]:  # a word a numeric key takes (``words``)
            return _coerce(key, value, str)
        return _coerce(key, value, args[0])
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():  # `checkpoint.every_steps=1e3`
            return int(value)
    elif tp is float:
        value = _number_text(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ConfigError(f"config key '{key}': {value!r} is not a finite number")
            return float(value)
    elif tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value) if value is not None else ""
        if value is None:
            return ""
        if isinstance(value, bool):  # YAML 1.1 reads a bare no/yes/off as a boolean
            raise ConfigError(f"config key '{key}': expected a string, got {value!r} (YAML reads a bare "
                              f"no/yes/on/off as a boolean); quote it, e.g. {key}: \"no\"")
    elif tp is list or origin is list:
        if isinstance(value, (list, tuple)):
            return list(value)
    else:  # pragma: no cover - every field type is listed above
        return value
    name = getattr(tp, "__name__", str(tp))
    raise ConfigError(f"config key '{key}': expected {name}, got {value!r} ({type(value).__name__})")


def _number_text(value: Any) -> Any:
    """A quoted number (``lr: "1e-3"``) where a float is expected -> that float; anything else as is."""
    if isinstance(value, str) and not isinstance(value, _BoolWord):
        try:
            return float(value.strip().replace("_", ""))
        except ValueError:
            return value
    return value


def _check_constraints(key: str, value: Any, meta: dict) -> None:
    words = meta.get("words")
    if words and isinstance(value, str):
        if value not in words:
            raise ConfigError(f"config key '{key}': {value!r} is not allowed; give a number "
                              f"(>= {meta.get('ge')}) or {' or '.join(words)}")
        return
    if meta.get("registry") is not None:
        meta["registry"].check(value)  # a ConfigError naming the registered names
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        raise ConfigError(f"config key '{key}': {value!r} is not allowed; choose one of "
                          f"{', '.join(map(str, choices))}")
    for bound, ok, word in (("ge", lambda v, b: v >= b, ">="), ("gt", lambda v, b: v > b, ">"),
                            ("le", lambda v, b: v <= b, "<=")):
        b = meta.get(bound)
        if b is not None and value is not None and not ok(value, b):
            raise ConfigError(f"config key '{key}': {value!r} is out of range; it must be {word} {b}")


def _build(cls: type, values: dict, prefix: str = "") -> Any:
    if not isinstance(values, dict):
        raise ConfigError(f"config section '{prefix.rstrip('.') or '<top>'}' must be a mapping, "
                          f"got {values!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if not (cls is Config and f.name == "sections")}
    sections = method_sections() if cls is Config else {}
    unknown = sorted(set(values) - set(fields) - set(sections))
    if unknown:
        key = prefix + unknown[0]
        hint = "" if METHODS or cls is not Config else (" (a method's section is known once the method is "
                                                        f"registered: {REGISTERS_BUILTINS} registers the built-in "
                                                        "ones)")
        raise ConfigError(f"unknown config key '{key}'; allowed keys here: "
                          f"{', '.join(prefix + k for k in [*fields, *sections])}{hint}")
    kwargs: dict[str, Any] = {}
    for name, value in values.items():
        if name in sections:
            continue
        tp, key = hints[name], prefix + name
        if _is_section(tp):
            kwargs[name] = _build(tp, value or {}, key + ".")
        else:
            v = _coerce(key, value, tp)
            _check_constraints(key, v, fields[name].metadata)
            kwargs[name] = v
    if cls is Config:
        kwargs["sections"] = {name: _build(section, values.get(name) or {}, name + ".")
                              for name, section in sections.items()}
    return cls(**kwargs)


def method_sections() -> dict[str, type]:
    """``{method name: its config section's dataclass}``, as the methods registered them."""
    return {name: METHODS.declared(name)["config"] for name in METHODS if METHODS.declared(name).get("config")}


# Checks that live with the key's owner, registered by the owner's module: key -> check(value) (raises a
# UserError). The datasets register ``data`` (a dataset's own keys), the trackers ``train.log_with``.
_KEY_CHECKS: dict[str, Callable[[Any], Any]] = {}


def register_check(key: str, check: Callable[[Any], Any]) -> None:
    """Have ``check(value of key)`` run by ``validate`` (re-registering a key replaces its check)."""
    _KEY_CHECKS[key] = check


def _value_at(cfg: Config, key: str) -> Any:
    node: Any = cfg
    for part in key.split("."):
        node = getattr(node, part)
    return node


def parse_time_budget(text: str) -> float | None:
    """``11h30m`` / ``90m`` / ``45s`` / ``3600`` -> seconds; empty -> None."""
    text = text.strip()
    if not text:
        return None
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    m = re.fullmatch(r"(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s)?", text)
    if not m or not any(m.groups()):
        raise ConfigError(f"config key 'train.time_budget': {text!r} is not a duration; write e.g. "
                          "'11h30m', '90m', '45s' or seconds")
    h, mi, s = (float(g) if g else 0.0 for g in m.groups())
    return h * 3600 + mi * 60 + s


_SIZE_UNITS = {"": None, "b": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40, "kib": 2**10, "mib": 2**20,
               "gib": 2**30, "tib": 2**40, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}


def parse_size(text: str, key: str = "train.memory_budget") -> int | None:
    """``14GiB`` / ``900MiB`` / ``16GB`` / ``2.5G`` -> bytes (K/M/G/T and KiB..TiB are binary, KB..TB decimal);
    empty -> None."""
    text = text.strip()
    if not text:
        return None
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([A-Za-z]*)", text)
    unit = _SIZE_UNITS.get(m.group(2).lower()) if m else None
    if unit is None or float(m.group(1)) <= 0:
        raise ConfigError(f"config key '{key}': {text!r} is not a memory size; write e.g. '14GiB', '900MiB' or "
                          "'16GB' (a number and a unit)")
    return int(float(m.group(1)) * unit)


def validate(cfg: Config) -> Config:
    """Checks that span several keys (single-key constraints are checked while building)."""
    # Re-check single keys too, so that a Config built in Python is held to the same rules.
    _build(Config, to_dict(cfg))
    t = cfg.train
    if t.gradient_accumulation_steps != "auto" and t.batch_size % t.gradient_accumulation_steps:
        raise ConfigError(f"config key 'train.gradient_accumulation_steps': {t.gradient_accumulation_steps} "
                          f"does not divide train.batch_size={t.batch_size}; choose a divisor, or auto")
    parse_time_budget(t.time_budget)
    parse_size(t.memory_budget, "train.memory_budget")
    if len(cfg.optim.betas) != 2:
        raise ConfigError("config key 'optim.betas': give two numbers, e.g. [0.9, 0.999]")
    if "test" in cfg.checkpoint.best_metric:
        raise ConfigError(f"config key 'checkpoint.best_metric': {cfg.checkpoint.best_metric!r} would select "
                          "checkpoints on the test set; use a validation metric (val_acc) with data.val_fraction, "
                          "data.val_list or a val/ folder")
    if cfg.data.noise_type == "file" and not cfg.data.noise_file:
        raise ConfigError("config key 'data.noise_file' is required with data.noise_type=file")
    for key, check in _KEY_CHECKS.items():
        check(_value_at(cfg, key))
    for section in cfg.sections.values():  # checks across a method's own keys
        if hasattr(section, "validate"):
            section.validate()
    return cfg


def key_fields() -> dict[str, tuple[Any, dict]]:
    """Every dotted key (method sections too) -> (its annotated type, its metadata)."""
    out: dict[str, tuple[Any, dict]] = {}

    def walk(cls: type, prefix: str) -> None:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if cls is Config and f.name == "sections":
                continue
            if _is_section(hints[f.name]):
                walk(hints[f.name], prefix + f.name + ".")
            else:
                out[prefix + f.name] = (hints[f.name], dict(f.metadata))

    walk(Config, "")
    for name, section in method_sections().items():
        walk(section, name + ".")
    return out


def flat_settings(cfg: Config) -> dict[str, Any]:
    """The config as ``{"train.batch_size": 64, ...}`` (what a checkpoint records of its run)."""
    out: dict[str, Any] = {}

    def walk(node: dict, prefix: str) -> None:
        for k, v in node.items():
            if isinstance(v, dict):
                walk(v, f"{prefix}{k}.")
            else:
                out[prefix + k] = v

    walk(to_dict(cfg), "")
    return out


def check_setting(key: str, value: Any, fields: dict[str, tuple[Any, dict]]) -> None:
    """A recorded setting must have its key's exact type and constraints (no coercion: it was written
    from a checked config). ConfigError otherwise; a key this version does not know passes."""
    if key not in fields:
        return
    tp, meta = fields[key]
    options = [a for a in typing.get_args(tp) if a is not type(None)] \
        if typing.get_origin(tp) in (typing.Union, types.UnionType) else [tp]
    if value is None and len(options) < len(typing.get_args(tp) or (tp,)):
        return  # an Optional key left unset
    exact = {bool: lambda v: isinstance(v, bool), int: lambda v: isinstance(v, int) and not isinstance(v, bool),
             float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v),
             str: lambda v: isinstance(v, str)}
    if not any(exact.get(option, _number_list)(value) for option in options):
        names = " or ".join(getattr(o, "__name__", str(o)) for o in options)
        raise ConfigError(f"config key '{key}': {value!r} is not a {names}")
    if not isinstance(value, str) or all(o is str for o in options):  # a number's range; "auto" has none
        # Whether a name is registered is the loader's question (this may run before anything registers).
        _check_constraints(key, value, {k: v for k, v in meta.items() if k != "registry"})


def _number_list(value: Any) -> bool:
    """The list keys (optim.betas, optim.milestones...) hold numbers."""
    return isinstance(value, list) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)


def to_dict(cfg: Any) -> dict:
    """A config (or section) as plain nested dicts; the method sections at the top level, as in YAML."""
    out = dataclasses.asdict(cfg)
    if isinstance(cfg, Config):
        out.update(out.pop("sections"))
    return out


def parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form key=value (e.g. train.epochs=5)")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {text!r} has no key")
    try:
        value = load_yaml(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    if isinstance(value, bool) and raw.strip().lower() not in ("true", "false"):
        value = _BoolWord(raw.strip())  # `train.mixed_precision=no`: a string where a string is expected
    return key.split("."), value


def merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for k, v in update.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> Config:
    """Defaults <- YAML file (which may name a ``base:`` preset) <- ``key=value`` overrides.

    The names of methods, architectures and datasets are those registered so far: ``tcl_lite.load_config``
    registers the built-in ones first (this function alone does not, being the package's ground floor)."""
    values: dict = {}
    if path:
        values = _read_yaml(find_preset(path))
    for text in overrides:
        keys, value = parse_override(text)
        node = values
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {text!r}: '{k}' is not a section")
        node[keys[-1]] = value
    return validate(_build(Config, values))


def _read_yaml(path: Path, _seen: tuple = ()) -> dict:
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist; presets live in configs/ "
                          "(e.g. --config configs/digits_ce.yaml)")
    try:
        values = load_yaml(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {e}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"config file {str(path)!r} cannot be read as YAML text ({e})") from None
    if not isinstance(values, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping of keys")
    base = values.pop("base", None)
    if base:
        base_path = find_base(base, path)
        if base_path in _seen:
            raise ConfigError(f"config file {str(path)!r}: 'base' chain loops at {base}")
        values = merge(_read_yaml(base_path, _seen + (base_path,)), values)
    return values


def save_config(cfg: Config, path: Path) -> None:
    path.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


def config_docs() -> str:
    """A Markdown table of every key, its default, allowed values and meaning."""
    rows = ["| key | default | allowed | meaning |", "| --- | --- | --- | --- |"]

    def walk(cls: type, prefix: str) -> None:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if cls is Config and f.name == "sections":
                continue
            if _is_section(hints[f.name]):
                walk(hints[f.name], prefix + f.name + ".")
                continue
            m = f.metadata
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            allowed = ", ".join(map(str, m["choices"])) if m.get("choices") else " ".join(
                f"{w} {m[b]}" for b, w in (("ge", ">="), ("gt", ">"), ("le", "<=")) if m.get(b) is not None)
            if m.get("words"):
                allowed += " or " + ", ".join(m["words"])
            if m.get("registry") is not None:
                allowed = ", ".join(m["registry"].shown())
            rows.append(f"| `{prefix}{f.name}` | `{json.dumps(default)}` | {allowed} | {m['help']} |")

    walk(Config, "")
    for name, section in method_sections().items():
        walk(section, name + ".")
    return "\n".join(rows)
