"""The format of everything a run directory holds, declared in one place and checked before use.

Each JSON file of a checkpoint (and of the run directory around it) has a schema below: types,
shapes, ranges, and the cross-field rules between its counters. ``reader.verify`` checks every
file of a checkpoint against them before any of it is loaded; a violation is an ``Invalid`` naming
the file and the field (``trainer.json: epoch_steps[2]: ...``), which the reader turns into a
CheckpointError, so resuming falls back to the previous checkpoint as for a checksum mismatch.

The files written through ``state_io`` (optimizer, method, RNG) are JSON trees whose tensors live in
a ``.safetensors`` sibling: ``decode_tree`` checks the tree's encoding and replaces each tensor by a
``TensorInfo`` (dtype and shape, read from the safetensors header without loading any data), so
the schemas below see shapes and dtypes at the cost of reading a few bytes.

The specs are small classes with ``check(value, where)``; a file's schema is a ``Record`` of them.
"""

from __future__ import annotations

import json
import math
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tcl_lite.config import check_setting, key_fields
from tcl_lite.errors import ConfigError
from tcl_lite.registry import METHODS


class Invalid(ValueError):
    """One violation, with where it is (``file: field.path``)."""


@dataclass(frozen=True)
class TensorInfo:
    """A tensor as its safetensors header describes it."""

    dtype: str  # safetensors' name: F32, I64, U8, BF16...
    shape: tuple[int, ...]
    source: str = field(default="", compare=False)  # FILE['key'], for messages

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


# -- the specs ------------------------------------------------------------------------------------

class Spec:
    def check(self, value: Any, where: str) -> None:
        raise NotImplementedError

    def __or__(self, other: Spec) -> Spec:
        return AnyOf(self, other)


def _fail(where: str, why: str, value: Any) -> Invalid:
    """``file: field.path=value: why`` (the value shortened)."""
    shown = repr(value)
    return Invalid(f"{where}={shown[:80] + '...' if len(shown) > 80 else shown}: {why}")


def _child(where: str, key: Any) -> str:
    """The path of a field: ``trainer.json: epoch``, then ``optimizer.json: param_groups[0].lr``."""
    return f"{where}: {key}" if ": " not in where else f"{where}.{key}"


class Int(Spec):
    def __init__(self, ge: int | None = None, le: int | None = None) -> None:
        self.ge, self.le = ge, le

    def check(self, value: Any, where: str) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _fail(where, "expected an integer", value)
        if self.ge is not None and value < self.ge:
            raise _fail(where, f"must be >= {self.ge}", value)
        if self.le is not None and value > self.le:
            raise _fail(where, f"must be <= {self.le}", value)


class Num(Spec):
    """A number (an int is one too); ``finite`` refuses NaN and infinities."""

    def __init__(self, finite: bool = True, ge: float | None = None, gt: float | None = None) -> None:
        self.finite, self.ge, self.gt = finite, ge, gt

    def check(self, value: Any, where: str) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _fail(where, "expected a number", value)
        if self.finite and not math.isfinite(value):
            raise _fail(where, "must be finite", value)
        if self.ge is not None and value < self.ge:
            raise _fail(where, f"must be >= {self.ge}", value)
        if self.gt is not None and not value > self.gt:
            raise _fail(where, f"must be > {self.gt}", value)


class Bool(Spec):
    def check(self, value: Any, where: str) -> None:
        if not isinstance(value, bool):
            raise _fail(where, "expected true or false", value)


class Null(Spec):
    def check(self, value: Any, where: str) -> None:
        if value is not None:
            raise _fail(where, "expected null", value)


class Str(Spec):
    def __init__(self, pattern: str | None = None, choices: tuple[str, ...] | None = None) -> None:
        self.pattern = re.compile(pattern) if pattern else None
        self.choices = choices

    def check(self, value: Any, where: str) -> None:
        if not isinstance(value, str):
            raise _fail(where, "expected a string", value)
        if self.pattern is not None and not self.pattern.fullmatch(value):
            raise _fail(where, f"does not match {self.pattern.pattern}", value)
        if self.choices is not None and value not in self.choices:
            raise _fail(where, f"must be one of {', '.join(self.choices)}", value)


class AnyOf(Spec):
    def __init__(self, *options: Spec) -> None:
        self.options = options

    def check(self, value: Any, where: str) -> None:
        reasons = []
        for option in self.options:
            try:
                option.check(value, where)
                return
            except Invalid as e:
                reasons.append(str(e).removeprefix(f"{where}: "))
        raise Invalid(f"{where}: " + " / ".join(dict.fromkeys(reasons)))


def Optional(spec: Spec) -> Spec:  # noqa: N802 - reads like a type
    return AnyOf(Null(), spec)


class ListOf(Spec):
    """A list (or, with ``tuple_ok``, a tuple) of ``item``; ``length`` fixes its length."""

    def __init__(self, item: Spec, *, length: int | None = None, min_len: int = 0, tuple_ok: bool = False) -> None:
        self.item, self.length, self.min_len, self.tuple_ok = item, length, min_len, tuple_ok

    def check(self, value: Any, where: str) -> None:
        if not isinstance(value, (list, tuple) if self.tuple_ok else list):
            raise _fail(where, "expected a list", value)
        if self.length is not None and len(value) != self.length:
            raise _fail(where, f"expected {self.length} items, found {len(value)}", value)
        if len(value) < self.min_len:
            raise _fail(where, f"expected at least {self.min_len} items", value)
        for i, v in enumerate(value):
            self.item.check(v, f"{where}[{i}]")


class Tuple(Spec):
    """A tuple of exactly these items (what ``state_io`` decodes ``__tuple__`` to)."""

    def __init__(self, *items: Spec) -> None:
        self.items = items

    def check(self, value: Any, where: str) -> None:
        if not isinstance(value, tuple) or len(value) != len(self.items):
            raise _fail(where, f"expected a tuple of {len(self.items)} items", value)
        for i, (spec, v) in enumerate(zip(self.items, value)):
            spec.check(v, f"{where}[{i}]")


class MapOf(Spec):
    def __init__(self, key: Spec, value: Spec) -> None:
        self.key, self.value = key, value

    def check(self, value: Any, where: str) -> None:
        if not isinstance(value, dict):
            raise _fail(where, "expected a mapping", value)
        for k, v in value.items():
            self.key.check(k, f"{_child(where, k)} (its key)")
            self.value.check(v, _child(where, k))


class Record(Spec):
    """A mapping with these ``fields`` (all required), ``optional`` ones, and (``extra``) any others
    whose values match it; ``extra=None``: no other key allowed. ``rules``: cross-field checks,
    each ``rule(record) -> None | 'why'``."""

    def __init__(self, fields: dict[str, Spec], optional: dict[str, Spec] | None = None, extra: Spec | None = None,
                 rules: tuple[Callable[[dict], str | None], ...] = ()) -> None:
        self.fields, self.optional, self.extra, self.rules = fields, optional or {}, extra, rules

    def check(self, value: Any, where: str) -> None:
        if not isinstance(value, dict):
            raise _fail(where, "expected a mapping", value)
        for key, spec in self.fields.items():
            if key not in value:
                raise Invalid(f"{where}: {key} is missing")
            spec.check(value[key], _child(where, key))
        for key, v in value.items():
            if key in self.fields:
                continue
            spec = self.optional.get(key, self.extra)
            if spec is None:
                raise Invalid(f"{where}: unexpected field {key!r}")
            spec.check(v, _child(where, key))
        for rule in self.rules:
            why = rule(value)
            if why:
                raise Invalid(f"{where}: {why}")


class Tensor(Spec):
    """A tensor (``TensorInfo`` from a header, or a loaded torch tensor) of one of ``dtypes``."""

    FLOATS = ("F64", "F32", "F16", "BF16")
    INTS = ("I64", "I32", "I16", "I8", "U8")

    def __init__(self, dtypes: tuple[str, ...] = FLOATS + INTS + ("BOOL",), ndim: int | None = None,
                 shape: tuple[int, ...] | None = None) -> None:
        self.dtypes, self.ndim, self.shape = dtypes, ndim, shape

    def check(self, value: Any, where: str) -> None:
        info = value if isinstance(value, TensorInfo) else _torch_info(value)
        if info is None:
            raise _fail(where, "expected a tensor", value)
        if info.source:
            where = f"{where} ({info.source})"
        if info.dtype not in self.dtypes:
            raise _fail(where, f"tensor dtype must be one of {', '.join(self.dtypes)}", info.dtype)
        if self.ndim is not None and len(info.shape) != self.ndim:
            raise _fail(where, f"expected a {self.ndim}-d tensor", info.shape)
        if self.shape is not None and info.shape != self.shape:
            raise _fail(where, f"expected shape {self.shape}", info.shape)


class Array(Spec):
    """A numpy array (``__ndarray__`` in a tree) of one of ``dtypes`` and, optionally, one shape."""

    def __init__(self, dtypes: tuple[str, ...], shape: tuple[int, ...] | None = None) -> None:
        self.dtypes, self.shape = dtypes, shape

    def check(self, value: Any, where: str) -> None:
        if not isinstance(value, np.ndarray):
            raise _fail(where, "expected an array", value)
        if str(value.dtype) not in self.dtypes:
            raise _fail(where, f"array dtype must be one of {', '.join(self.dtypes)}", str(value.dtype))
        if self.shape is not None and value.shape != self.shape:
            raise _fail(where, f"expected shape {self.shape}", value.shape)


class Anything(Spec):
    def check(self, value: Any, where: str) -> None:
        return None


def _torch_info(value: Any) -> TensorInfo | None:
    dtype = getattr(value, "dtype", None)
    if dtype is None or not hasattr(value, "shape") or isinstance(value, np.ndarray):
        return None
    names = {"float64": "F64", "float32": "F32", "float16": "F16", "bfloat16": "BF16", "int64": "I64",
             "int32": "I32", "int16": "I16", "int8": "I8", "uint8": "U8", "bool": "BOOL"}
    return TensorInfo(names.get(str(dtype).removeprefix("torch."), str(dtype)), tuple(value.shape))


JSON_VALUE = AnyOf(Null(), Bool(), Num(finite=False), Str())
JSON_VALUE = AnyOf(JSON_VALUE, ListOf(JSON_VALUE))  # one level of lists (e.g. optim.betas) is enough
HEX64 = Str(pattern=r"[0-9a-f]{64}")
FILE_NAME = Str(pattern=r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")


# -- safetensors headers and state_io trees --------------------------------------------------------

_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
                "BOOL": 1, "U16": 2, "U32": 4, "U64": 8, "F8_E4M3": 1, "F8_E5M2": 1}


def safetensors_header(path: Path) -> dict[str, TensorInfo]:
    """The tensors of a ``.safetensors`` file by name, from its header alone, which must describe a
    well-formed file: every tensor's bytes inside the data and adjacent, nothing left over."""
    name = path.name
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            size = path.stat().st_size
            (n,) = struct.unpack("<Q", head) if len(head) == 8 else (0,)
            raw = f.read(n) if 2 <= n <= min(size - 8, 100 << 20) else None
    except OSError as e:
        raise Invalid(f"{name}: cannot be read ({e.strerror or e})") from None
    if raw is None:
        raise Invalid(f"{name}: not a safetensors file (header length {n}, file size {size})")
    try:
        header = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise Invalid(f"{name}: not a safetensors file (its header is not JSON: {e})") from None
    if not isinstance(header, dict):
        raise Invalid(f"{name}: not a safetensors file (its header is not a mapping)")
    header.pop("__metadata__", None)
    tensors, spans = {}, []
    for key, entry in header.items():
        where = f"{name}: tensor {key!r}"
        Record({"dtype": Str(choices=tuple(_DTYPE_BYTES)), "shape": ListOf(Int(ge=0)),
                "data_offsets": ListOf(Int(ge=0), length=2)}).check(entry, where)
        info = TensorInfo(entry["dtype"], tuple(entry["shape"]), f"{name}[{key!r}]")
        start, end = entry["data_offsets"]
        if end - start != info.numel * _DTYPE_BYTES[info.dtype]:
            raise Invalid(f"{where}: its {end - start} bytes do not hold shape {info.shape} of {info.dtype}")
        tensors[key] = info
        spans.append((start, end))
    position = 0
    for start, end in sorted(spans):
        if start != position:
            raise Invalid(f"{name}: the tensors' data overlap or leave a gap at byte {position}")
        position = end
    if position != size - 8 - n:
        raise Invalid(f"{name}: the header describes {position} bytes of data, the file holds {size - 8 - n}")
    return tensors


_ARRAY_DTYPES = ("bool", "uint8", "int8", "int16", "uint16", "int32", "uint32", "int64", "uint64", "float16",
                 "float32", "float64")
_FLOATS = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def decode_tree(meta: Any, tensors: dict[str, TensorInfo], where: str, used: set[str] | None = None,
                store: str = "the .safetensors file") -> Any:
    """``state_io``'s JSON encoding -> the value it stands for, each tensor as its ``TensorInfo``;
    Invalid for anything ``state_io`` would not have written."""
    if isinstance(meta, list):
        return [decode_tree(v, tensors, f"{where}[{i}]", used, store) for i, v in enumerate(meta)]
    if not isinstance(meta, dict):
        return meta
    markers = [k for k in meta if k.startswith("__")]
    if not markers:
        return {k: decode_tree(v, tensors, _child(where, k), used, store) for k, v in meta.items()}
    kind = markers[0]
    allowed = {"__tensor__": {"__tensor__"}, "__ndarray__": {"__ndarray__", "dtype"}, "__items__": {"__items__"},
               "__tuple__": {"__tuple__"}, "__float__": {"__float__"}}.get(kind)
    if allowed is None or set(meta) != allowed:
        raise _fail(where, "not a value this format writes", sorted(meta))
    value = meta[kind]
    if kind == "__tensor__":
        if not isinstance(value, str) or value not in tensors:
            raise _fail(where, f"refers to a tensor {store} does not hold", value)
        if used is not None:
            used.add(value)
        return tensors[value]
    if kind == "__ndarray__":
        return _array(value, meta["dtype"], where)
    if kind == "__float__":
        if value not in _FLOATS:
            raise _fail(where, "expected nan, inf or -inf", value)
        return _FLOATS[value]
    if not isinstance(value, list):
        raise _fail(where, "expected a list", value)
    if kind == "__tuple__":
        return tuple(decode_tree(v, tensors, f"{where}[{i}]", used, store) for i, v in enumerate(value))
    items = {}
    for i, pair in enumerate(value):
        if not isinstance(pair, list) or len(pair) != 2:
            raise _fail(f"{where}[{i}]", "expected a [key, value] pair", pair)
        key = decode_tree(pair[0], tensors, f"{where}[{i}][0]", used, store)
        if not isinstance(key, (int, str, float, bool, tuple)) or key is None:
            raise _fail(f"{where}[{i}][0]", "not a usable key", key)
        if key in items:
            raise _fail(f"{where}[{i}][0]", "a key that appears twice", key)
        items[key] = decode_tree(pair[1], tensors, f"{where}[{i}][1]", used, store)
    return items


def _array(values: Any, dtype: Any, where: str) -> np.ndarray:
    if dtype not in _ARRAY_DTYPES:
        raise _fail(where, f"array dtype must be one of {', '.join(_ARRAY_DTYPES)}", dtype)
    kind = np.dtype(dtype).kind
    ok = {"b": lambda v: isinstance(v, bool), "f": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
          }.get(kind, lambda v: isinstance(v, int) and not isinstance(v, bool))
    if not all(ok(v) for v in _leaves(values, where)):
        raise _fail(where, f"not an array of {dtype}", values)
    try:
        arr = np.asarray(values, dtype=dtype)
    except (ValueError, TypeError, OverflowError) as e:
        raise _fail(where, f"not an array of {dtype} ({e})", values) from None
    if kind in "iu" and arr.size and not np.array_equal(arr, np.asarray(values, dtype=object)):
        raise _fail(where, f"values out of the range of {dtype}", values)
    return arr


def _leaves(values: Any, where: str) -> list:
    if not isinstance(values, list):
        return [values]
    out = []
    for v in values:
        out.extend(_leaves(v, where))
    return out


def read_tree(folder: Path, name: str, schema: Spec) -> Any:
    """Check ``NAME.json`` (+ ``NAME.safetensors``) against ``schema``; returns the decoded tree with
    ``TensorInfo`` leaves. Tensors in the file that the tree does not use are refused too."""
    meta = read_json(folder / f"{name}.json")
    st = folder / f"{name}.safetensors"
    tensors = safetensors_header(st) if st.is_file() else {}
    used: set[str] = set()
    tree = decode_tree(meta, tensors, f"{name}.json", used, st.name)
    unused = sorted(set(tensors) - used)
    if unused:
        raise Invalid(f"{st.name}: holds tensors {name}.json does not refer to ({', '.join(unused[:3])})")
    schema.check(tree, f"{name}.json")
    return tree


def read_json(path: Path) -> Any:
    """A JSON file, strictly: NaN/Infinity refused (the writer never writes them)."""
    def constant(token: str) -> Any:
        raise ValueError(f"{token} is not JSON")

    try:
        return json.loads(path.read_text(encoding="utf-8"), parse_constant=constant)
    except (ValueError, UnicodeDecodeError) as e:
        raise Invalid(f"{path.name} is not valid JSON ({e})") from None
    except OSError as e:
        raise Invalid(f"{path.name} cannot be read ({e.strerror or e})") from None


# -- checkpoint files ------------------------------------------------------------------------------

MANIFEST = MapOf(FILE_NAME, HEX64)

TRAINER_FORMAT = 2  # trainer.json with epoch_steps and settings (earlier ones have no "format")


def _counters_agree(t: dict) -> str | None:
    if len(t["epoch_steps"]) != t["epoch"]:
        return (f"epoch={t['epoch']} but epoch_steps lists {len(t['epoch_steps'])} completed epochs "
                "(one entry per epoch)")
    total = sum(t["epoch_steps"]) + t["step_in_epoch"]
    if total != t["global_step"]:
        return (f"global_step={t['global_step']} but the completed epochs' steps ({sum(t['epoch_steps'])}) plus "
                f"step_in_epoch={t['step_in_epoch']} make {total}")
    return None


def _best_agrees(t: dict) -> str | None:
    if t.get("best_step", -1) > t["global_step"]:
        return f"best_step={t['best_step']} is after global_step={t['global_step']}"
    if (t.get("best_value") is None) != (t.get("best_step", -1) == -1):
        return f"best_value={t.get('best_value')!r} and best_step={t.get('best_step')} disagree (both set or neither)"
    if t.get("nonfinite_steps", 0) > t["global_step"]:
        return f"nonfinite_steps={t['nonfinite_steps']} exceeds global_step={t['global_step']}"
    if t["epoch"] > t["global_step"] or t["step_in_epoch"] > t["global_step"]:
        return (f"epoch={t['epoch']}, step_in_epoch={t['step_in_epoch']} do not fit global_step={t['global_step']} "
                "(every epoch has a step)")
    return None


_TRAINER_COMMON = {"epoch": Int(ge=0), "step_in_epoch": Int(ge=0), "global_step": Int(ge=0)}
_TRAINER_LAYOUT = {"model_arch": Str(pattern=r".+"), "model_layout": Int(ge=1),
                   "metrics": MapOf(Str(), Optional(Num(finite=False))),  # metrics: `best` only
                   # entries of each optimizer file's `state` (writer.py), so that none can go missing
                   "optimizer_states": MapOf(Str(pattern=r"optimizer(\.[A-Za-z0-9_\-]+)?"), Int(ge=0))}

TRAINER = Record(
    {**_TRAINER_COMMON, "format": Int(ge=TRAINER_FORMAT, le=TRAINER_FORMAT), "best_value": Optional(Num()),
     "best_step": Int(ge=-1), "num_processes": Int(ge=1, le=4096), "nonfinite_steps": Int(ge=0),
     "method": Str(pattern=r"[A-Za-z0-9_.\-]*"), "epoch_steps": ListOf(Int(ge=1)),
     "settings": MapOf(Str(pattern=r"[A-Za-z0-9_.]+"), JSON_VALUE)},
    optional=_TRAINER_LAYOUT, rules=(_counters_agree, _best_agrees))

# Checkpoints written before the format was recorded: fewer fields, none of the newer ones.
TRAINER_LEGACY = Record(
    _TRAINER_COMMON, optional={"best_value": Optional(Num()), "best_step": Int(ge=-1),
                               "num_processes": Int(ge=1, le=4096), "nonfinite_steps": Int(ge=0),
                               "method": Str(), **_TRAINER_LAYOUT}, rules=(_best_agrees,))


_FIELDS: dict[tuple[str, ...], dict] = {}


def _key_fields() -> dict:
    """``config.key_fields()``, once per set of registered methods (their sections are keys too)."""
    names = tuple(METHODS)
    if names not in _FIELDS:
        _FIELDS[names] = key_fields()
    return _FIELDS[names]


def check_settings(settings: dict[str, Any]) -> None:
    """trainer.json's ``settings`` (the run's config, flat): each known key with its declared type and range
    (``tcl_lite/config.py`` is the schema); keys this version does not know are left alone."""
    fields = _key_fields()
    for key, value in settings.items():
        try:
            check_setting(key, value, fields)
        except ConfigError as e:
            raise Invalid(f"trainer.json: settings.{key}: {e}") from None


def _params_unique(opt: dict) -> str | None:
    params = [p for group in opt["param_groups"] for p in group["params"]]
    if len(set(params)) != len(params):
        return "a parameter index appears in two param_groups (or twice in one)"
    stray = sorted(set(opt["state"]) - set(params))
    if stray:
        return f"state holds parameter {stray[0]}, which no param_group lists"
    return None


_HYPER = AnyOf(Num(finite=False), Bool(), Null(), Str(), ListOf(AnyOf(Num(finite=False), Null()), tuple_ok=True))
_STATE_VALUE = AnyOf(Tensor(), Num(), Bool(), Null())
OPTIMIZER = Record(
    # bitsandbytes keeps one more level (``__bnb_optimizer_quant_state__``: state1, absmax1, ...)
    {"state": MapOf(Int(ge=0), MapOf(Str(), AnyOf(_STATE_VALUE, MapOf(Str(), _STATE_VALUE)))),
     "param_groups": ListOf(Record({"params": ListOf(Int(ge=0)), "lr": Num(ge=0)}, extra=_HYPER), min_len=1)},
    rules=(_params_unique,))

METHOD_STATE = MapOf(Str(), Anything())  # each method checks its own keys (Method.load_state_dict)


def _torch_rng_size() -> int:
    import torch  # only when a checkpoint is verified: the reader imports torch anyway

    return int(torch.get_rng_state().numel())


def rng_schema() -> Spec:
    word = Int(ge=0, le=2**32 - 1)
    return Record({
        "python": Tuple(Int(ge=3, le=3), ListOf(word, length=625, tuple_ok=True), Optional(Num())),
        "numpy": Tuple(Str(choices=("MT19937",)), Array(("uint32",), (624,)), Int(ge=0, le=624), Int(ge=0, le=1),
                       Num()),
        "torch": Tensor(("U8",), shape=(_torch_rng_size(),))},
        optional={"cuda": ListOf(Tensor(("U8",), ndim=1))}, rules=(_python_rng_position,))


def _python_rng_position(r: dict) -> str | None:
    position = r["python"][1][-1]
    if not 0 <= position <= 624:
        return f"python: the generator's position {position} is not in 0..624"
    if r["numpy"][3] == 0 and r["numpy"][4] != 0.0:
        return f"numpy: a cached gaussian {r['numpy'][4]!r} without has_gauss (numpy writes 0.0 then)"
    return None


# -- run directory files ------------------------------------------------------------------------------

def _data_info_agrees(d: dict) -> str | None:
    if len(d["class_names"]) != d["num_classes"]:
        return f"{len(d['class_names'])} class_names for num_classes={d['num_classes']}"
    if not len(d["mean"]) == len(d["std"]) == d["channels"]:
        return f"mean and std need one value per channel (channels={d['channels']})"
    return None


DATA_INFO = Record(
    {"class_names": ListOf(Str(), min_len=1), "num_classes": Int(ge=1), "image_size": Int(ge=1),
     "channels": Int(ge=1, le=4), "mean": ListOf(Num()), "std": ListOf(Num(gt=0))},
    optional={"sizes": MapOf(Str(), Int(ge=0))}, extra=Anything(), rules=(_data_info_agrees,))

FINGERPRINT = Record({"keys": MapOf(Str(), JSON_VALUE)},
                     optional={"noisy_labels_sha256": HEX64, "train_samples": Int(ge=1)}, extra=Anything())

STATUS_STATES = ("running", "finished", "stopped_time_budget", "stopped_signal", "interrupted", "failed")
STATUS = Record({"state": Str(choices=STATUS_STATES)},
                optional={"epochs": Int(ge=1), "epoch": Int(ge=0), "step": Int(ge=0), "pid": Int(ge=0),
                          "updated": Str(), "message": Str(), "seconds_per_epoch": Num(), "seconds_left": Num()},
                extra=Anything())  # other helpers add their fields (trust, plan): typed where they declare them

PARENT = Record({"run_dir": Str(), "checkpoint": Str(), "checkpoint_name": FILE_NAME, "manifest_sha256": HEX64,
                 "global_step": Int(ge=0), "forked_at": Str()}, extra=Anything())


def read_checked(path: Path, schema: Spec) -> Any:
    """A JSON file of the run directory, checked against ``schema`` (Invalid names file and field)."""
    value = read_json(path)
    schema.check(value, path.name)
    return value


def read_labels(path: Path, num_classes: int | None = None, length: int | None = None) -> np.ndarray:
    """A run's ``noisy_labels.npy`` / ``true_labels.npy``: 1-D integer class indices (never unpickled)."""
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise Invalid(f"{path.name} is not a numpy array file ({type(e).__name__}: {str(e)[:200]})") from None
    if not isinstance(arr, np.ndarray) or arr.ndim != 1 or arr.dtype.kind not in "iu":
        raise Invalid(f"{path.name}: expected a 1-d integer array, found {getattr(arr, 'dtype', type(arr))} of "
                      f"shape {getattr(arr, 'shape', '?')}")
    if length is not None and len(arr) != length:
        raise Invalid(f"{path.name}: {len(arr)} labels, the run has {length} training samples")
    if len(arr) and (arr.min() < 0 or (num_classes is not None and arr.max() >= num_classes)):
        raise Invalid(f"{path.name}: labels outside 0..{(num_classes or 1) - 1}")
    return arr.astype(np.int64)
