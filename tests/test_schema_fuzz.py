"""Schema fuzz (issue 23 item 2): every field of every file of a real checkpoint, mutated in type, sign,
size and nesting and re-hashed into the manifest (so only the schema can tell), must end in a refusal that
names the file (resuming then falls back to the previous checkpoint) or in a value the run accepts
because it is valid; never in a traceback.

One real checkpoint (tests/conftest.py's small run, mid-epoch step 20) is read through the reader, with
the networks and optimizers the trainer builds, then through the checks the trainer makes next (position,
settings, the data's steps per epoch): no training run per mutation.
"""

from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from conftest import rewrite
from safetensors.torch import load_file, save_file

from tcl_lite.checkpoints import reader
from tcl_lite.config import flat_settings, load_config
from tcl_lite.engine.optim import peak_lr
from tcl_lite.engine.resume_checks import check_method_state, check_position, config_changes
from tcl_lite.engine.run_guard import DATA_KEYS
from tcl_lite.engine.run_setup import build_networks, build_optimizers
from tcl_lite.errors import CheckpointError, ConfigError
from tcl_lite.methods import get_method

STEPS_PER_EPOCH = 15  # tests/conftest.py SMALL: 480 samples / 32

# Mutations that give another valid value, which no check can (or should) refuse: named here, so that
# anything else accepted fails the test. (file, field path, kind)
VALID_VALUES = {
    ("trainer.json", "best_value", "sign"),  # a negative best metric is a metric (best_mode=min runs)
    # settings may lack keys (written before a key existed) or hold keys this version does not know (a newer
    # tcl_lite): the keys it knows are compared with the run's config
    ("trainer.json", "settings", "size"),
}


@pytest.fixture(scope="module")
def subject(small_run, tmp_path_factory) -> SimpleNamespace:
    ckpt = tmp_path_factory.mktemp("fuzz") / "step_00000020"
    shutil.copytree(small_run / "checkpoints" / "step_00000020", ckpt)
    cfg = load_config(small_run / "config.yaml")
    info = json.loads((small_run / "data.json").read_text())
    data = SimpleNamespace(num_classes=info["num_classes"], channels=info["channels"], image_size=info["image_size"])
    models = build_networks(cfg, get_method(cfg.method), data)
    optimizers = build_optimizers(cfg, models, peak_lr(cfg.optim, cfg.train.batch_size))
    return SimpleNamespace(ckpt=ckpt, cfg=cfg, models=models, optimizers=optimizers,
                           originals={p.name: p.read_bytes() for p in ckpt.iterdir()})


def outcome(s: SimpleNamespace, file: str) -> str:
    """'refused' (a CheckpointError naming ``file``, or a check of the trainer's) or 'accepted'."""
    try:
        state, method_state = reader.load_checkpoint(s.ckpt, s.models, s.optimizers, steps_per_epoch=STEPS_PER_EPOCH)
    except CheckpointError as e:
        assert file in str(e), f"the refusal does not name {file}: {e}"
        return "refused"
    try:  # what the trainer checks next (engine/run_guard.py, engine/trainer.py _fits)
        check_position(state, s.cfg.train.epochs, "the run")
        reader.check_method(s.ckpt, s.cfg.method)
        check_method_state(get_method(s.cfg.method), method_state)
    except (CheckpointError, ConfigError):
        return "refused"
    if config_changes(state.settings, flat_settings(s.cfg), skip=DATA_KEYS) or \
            any(state.settings.get(k) != v for k, v in flat_settings(s.cfg).items() if k in DATA_KEYS):
        return "refused"
    if any(n != STEPS_PER_EPOCH for n in state.epoch_steps) or state.num_processes != 1:
        return "refused"
    return "accepted"


# -- JSON files -----------------------------------------------------------------------------------

def _nodes(doc: Any, path: tuple = ()) -> Iterator[tuple[tuple, Any]]:
    yield path, doc
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _nodes(v, (*path, k))
    elif isinstance(doc, list):
        picks = range(len(doc)) if len(doc) <= 3 else (0, len(doc) - 1)  # long lists (RNG words): the ends
        for i in picks:
            yield from _nodes(doc[i], (*path, i))


def _variants(value: Any) -> Iterator[tuple[str, Any]]:
    other = {bool: "x", int: "x", float: "x", str: 7, type(None): "x", list: {"k": 1}, dict: [1]}[type(value)]
    yield "type", other
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        yield "sign", -value - 1 if isinstance(value, int) else (-value if value else -1.5)
    if isinstance(value, list):
        yield "size", [*value, value[-1] if value else 0]
        if value:
            yield "size", value[:-1]
    if isinstance(value, dict):
        yield "size", {**value, "extra_field": 1}
        if value:
            yield "size", dict(list(value.items())[1:])
    yield "nesting", [value]
    yield "nesting", {"x": value}


def _set(doc: Any, path: tuple, value: Any) -> Any:
    if not path:
        return value
    out = copy.deepcopy(doc)
    node = out
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return out


JSON_FILES = ("trainer.json", "optimizer.json", "method.json", "rng_rank0.json", "manifest.json")


@pytest.mark.parametrize("file", JSON_FILES)
def test_every_field_of_a_json_file_mutated_is_refused_or_valid(subject, file):
    original = json.loads(subject.originals[file])
    results: dict[tuple[str, str], list[str]] = {}
    try:
        for path, value in _nodes(original):
            for kind, new in _variants(value):
                data = json.dumps(_set(original, path, new)).encode()
                if file == "manifest.json":
                    (subject.ckpt / file).write_bytes(data)
                else:
                    rewrite(subject.ckpt, file, data)
                field = ".".join(map(str, path))
                results.setdefault((field, kind), []).append(outcome(subject, file))
                _restore(subject)
    finally:
        _restore(subject)
    accepted = sorted({(f, k) for (f, k), r in results.items() if "accepted" in r} - {
        (f, k) for (name, f, k) in VALID_VALUES if name == file})
    assert len(results) > 2
    assert not accepted, f"{file}: mutations accepted as valid: {accepted[:20]}"
    assert outcome(subject, file) == "accepted", "the unchanged checkpoint loads"


def _restore(s: SimpleNamespace) -> None:
    for name, data in s.originals.items():
        (s.ckpt / name).write_bytes(data)


# -- tensor files -----------------------------------------------------------------------------------

def _tensor_variants(tensors: dict[str, torch.Tensor]) -> Iterator[tuple[str, dict[str, torch.Tensor]]]:
    name = next(k for k, v in tensors.items() if v.numel() > 1)
    t = tensors[name]
    yield "type: other dtype", {**tensors, name: t.double() if t.is_floating_point() else t.to(torch.int32)}
    yield "size: another shape", {**tensors, name: torch.cat([t.reshape(-1), t.reshape(-1)[:1]])}
    yield "size: a tensor missing", {k: v for k, v in tensors.items() if k != name}
    yield "nesting: an extra tensor", {**tensors, "extra.tensor": torch.zeros(2)}
    floats = [k for k, v in tensors.items() if v.is_floating_point() and v.numel()]
    if floats:
        bad = tensors[floats[0]].clone()
        bad.view(-1)[0] = float("nan")
        yield "value: NaN", {**tensors, floats[0]: bad}


@pytest.mark.parametrize("file", ["model.safetensors", "optimizer.safetensors", "rng_rank0.safetensors"])
def test_every_tensor_file_mutated_is_refused(subject, file, tmp_path):
    tensors = load_file(str(subject.ckpt / file))
    cases = [*_tensor_variants(tensors)]
    try:
        for kind, mutated in cases:
            save_file(mutated, str(tmp_path / "t.safetensors"))
            rewrite(subject.ckpt, file, (tmp_path / "t.safetensors").read_bytes())
            assert outcome(subject, file) == "refused", f"{file}: {kind} accepted"
            _restore(subject)
        data = subject.originals[file]
        for kind, cut in (("size: truncated", data[: len(data) // 2]), ("size: empty", b""),
                          ("type: not safetensors", b"\x00" * 64)):
            rewrite(subject.ckpt, file, cut)
            assert outcome(subject, file) == "refused", f"{file}: {kind} accepted"
            _restore(subject)
    finally:
        _restore(subject)
