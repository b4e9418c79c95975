"""Every file given by path (issue 23 item 4): damaged, empty, wrong-format or wrong-type files anywhere a
command or a config key takes a path give a named error with exit code 2, never a traceback.

The walk is derived from the commands' parsers (``tcl_lite.cli.COMMANDS[name].parser()``) and from the
config keys declared with ``opt(..., path=KIND)``: a new argument fails ``test_every_argument_is_classified``
until it is classified here, and a new path key is walked automatically (a key that looks like a path but
is not declared fails ``test_every_config_key_naming_a_path_is_declared``).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY, rewrite
from safetensors.torch import save_file

from tcl_lite.cli import COMMANDS
from tcl_lite.config import key_fields
from tcl_lite.data.noise import read_label_file
from tcl_lite.errors import DataError, PathError

# Every argument of every command (its argparse dest): the kind of path it takes, or None (not a path).
ARGUMENTS = {
    "train": {"config": "file", "output_dir": "output", "resume": "run", "restart": None, "allow_data_change": None,
              "allow_config_change": None, "overrides": None},
    "report": {"run_dir": "run", "out": "output", "write_cleaned": None},
    "export": {"path": "run", "out": "output"},
    "export-model": {"run_dir": "run", "out": "output", "checkpoint": "checkpoint"},
    "predict": {"model": "run", "images": "images", "out": "output-file", "checkpoint": "checkpoint",
                "top_k": None, "batch_size": None, "device": None},
    "issues": {"run_dir": "run", "out": "output", "top": None, "checkpoint": "checkpoint", "batch_size": None},
    "audit": {"folder": "folder", "out": "output", "top": None, "overrides": None},
    "config-docs": {"readme": "file"},
    "gpu-check": {},
    "launch": {"accelerate_args": None, "train_args": None},  # passed through: train's own checks run first
    "plan": {"config": "file", "gpu": None, "json": None, "samples": None, "overrides": None},
}
# Config keys whose names look like paths but are not (none yet).
NOT_PATHS: set[str] = set()
# What each config key needs to be read at all, and the extensions its files come in.
KEY_CONTEXT = {"data.noise_file": ["data.noise_type=file"], "data.train_list": ["data.dataset=filelist"],
               "data.test_list": ["data.dataset=filelist", "data.train_list={path}"],
               "data.val_list": ["data.dataset=filelist", "data.train_list={path}"],
               "model.pretrained_path": ["model.arch=timm:resnet18"], "mlnt.feature_checkpoint": ["method=mlnt"]}
KEY_EXTENSIONS = {"data.noise_file": (".npy", ".csv", ".pt"), "model.pretrained_path": (".safetensors",),
                  "mlnt.feature_checkpoint": (".safetensors",)}


def test_every_argument_is_classified():
    for name, module in COMMANDS.items():
        dests = {a.dest for a in module.parser()._actions if a.dest != "help"}
        assert name in ARGUMENTS, f"command {name!r}: classify its arguments in ARGUMENTS"
        assert dests == set(ARGUMENTS[name]), (f"tcl-lite {name}: arguments {sorted(dests ^ set(ARGUMENTS[name]))} "
                                               "are new or gone: classify each in ARGUMENTS (a path kind or None)")


def test_every_config_key_naming_a_path_is_declared():
    looks = re.compile(r"(_path|_file|_list|_checkpoint|_dir|root|_folder)$")
    for key, (_, meta) in key_fields().items():
        if looks.search(key) and key not in NOT_PATHS:
            assert meta.get("path"), f"config key {key!r} names a path: declare it with opt(..., path=KIND)"


# -- damaged files ------------------------------------------------------------------------------------

def _truncated(ext: str, folder: Path) -> bytes:
    """A file of the right format cut in the middle (it passes a look at its first bytes)."""
    tmp = folder / f"whole{ext}"
    if ext == ".npy":
        np.save(tmp, np.arange(1000))
    elif ext == ".safetensors":
        save_file({"w": torch.zeros(1000)}, str(tmp))
    elif ext == ".pt":
        torch.save({"worse_label": torch.zeros(1000, dtype=torch.long)}, tmp)
    else:
        return b"images/a.png 0\nimages/b.png \xff\xfe\x00 1\n"
    data = tmp.read_bytes()
    return data[: len(data) // 2 + 9]


def damaged_files(folder: Path, ext: str) -> dict[str, Path]:
    """One path per kind of damage, with the extension ``ext``."""
    folder.mkdir(parents=True, exist_ok=True)
    text = ext in (".csv", ".txt", ".yaml", ".md", ".json")
    cases = {"missing": folder / f"missing{ext}", "a folder": folder / f"folder{ext}",
             "empty": folder / f"empty{ext}", "binary": folder / f"binary{ext}",
             "wrong format": folder / f"wrong{ext}", "truncated": folder / f"cut{ext}"}
    cases["a folder"].mkdir()
    cases["empty"].write_bytes(b"")
    cases["binary"].write_bytes(bytes(range(256)) * 4)
    cases["wrong format"].write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00" if text else b"a,b\n1,2\n")
    cases["truncated"].write_bytes(_truncated(ext, folder))
    return cases


def _named_error(code: int, err: str, *words: str) -> None:
    assert code == 2, err
    assert "error:" in err and "Traceback" not in err, err
    for w in words:
        assert w in err, f"{w!r} not in {err!r}"


@pytest.mark.parametrize("key", [k for k, (_, m) in key_fields().items() if m.get("path") in ("file", "checkpoint")])
def test_every_config_key_taking_a_file_refuses_damaged_files(key, tmp_path, capsys, fresh_accelerate):
    for ext in KEY_EXTENSIONS.get(key, (".txt",)):
        for damage, path in damaged_files(tmp_path / ext.strip("."), ext).items():
            if damage == "a folder" and key_fields()[key][1]["path"] == "checkpoint":
                continue  # a folder is a checkpoint's own form (tested below through the finder)
            out = tmp_path / "run"
            context = [c.format(path=path) for c in KEY_CONTEXT.get(key, [])]
            code = COMMANDS["train"].main([*TINY, *context, f"{key}={path}", f"output_dir={out}"])
            _named_error(code, capsys.readouterr().err, path.name)
            assert not out.exists(), f"{key} {damage}: a refused start created {out}"


@pytest.mark.parametrize("kind", ["folder", "output"])
def test_config_keys_taking_folders_refuse_files(kind, tmp_path, capsys, fresh_accelerate):
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    for key in [k for k, (_, m) in key_fields().items() if m.get("path") == kind]:
        code = COMMANDS["train"].main([*TINY, f"{key}={a_file}"])
        _named_error(code, capsys.readouterr().err, key, "is a file, not a folder")


def test_label_files_read_through_the_api_give_data_errors(tmp_path):
    """The reader itself (a notebook calling train() skips the command line's checks)."""
    for ext in (".npy", ".csv", ".pt"):
        for path in damaged_files(tmp_path / ext.strip("."), ext).values():
            with pytest.raises(DataError, match=re.escape(path.name)):
                read_label_file(str(path), 1000, 10)


# -- run directories, checkpoints and exports given to the commands ----------------------------------------

def _damaged_runs(run: Path, tmp: Path) -> dict[str, Path]:
    tmp.mkdir()
    cases: dict[str, Path] = {}

    def copy(name: str) -> Path:
        dest = tmp / name.replace(" ", "_")
        shutil.copytree(run, dest)
        cases[name] = dest
        return dest

    (copy("config.yaml binary") / "config.yaml").write_bytes(bytes(range(256)))
    (copy("data.json of another structure") / "data.json").write_text(json.dumps({"class_names": 3}))
    (copy("labels cut") / "noisy_labels.npy").write_bytes(_truncated(".npy", tmp))
    for name in ("metrics.jsonl damaged",):
        (copy(name) / "metrics.jsonl").write_text('{"epoch": 1, "step": 15}\n[1, 2\n')
    for step in ("newest checkpoint damaged",):
        ckpts = copy(step) / "checkpoints"
        for ckpt in ckpts.glob("step_*"):
            data = (ckpt / "model.safetensors").read_bytes()
            rewrite(ckpt, "model.safetensors", data[:8] + b"{not json" + data[17:])
    return cases


COMMAND_ARGS = {  # how each command is given a run directory (RUN) and where it writes (OUT)
    "report": lambda run, out: [str(run), "--out", str(out)],
    "export": lambda run, out: [str(run), "--out", str(out)],
    "export-model": lambda run, out: [str(run), "--out", str(out)],
    "issues": lambda run, out: [str(run), "--out", str(out)],
    "predict": lambda run, out: [str(run), str(out.parent / "images"), "--out", str(out.parent / "p.csv")],
}


# The files of a run directory each command reads (besides the directory itself).
READS = {"report": ("config.yaml binary", "metrics.jsonl damaged", "labels cut"),
         "export": ("config.yaml binary", "labels cut", "newest checkpoint damaged"),
         "export-model": ("config.yaml binary", "data.json of another structure", "newest checkpoint damaged"),
         "predict": ("config.yaml binary", "data.json of another structure", "newest checkpoint damaged"),
         "issues": ("config.yaml binary", "labels cut", "newest checkpoint damaged")}


def test_every_command_taking_a_run_directory_refuses_damaged_ones(small_run, tmp_path, capsys):
    (tmp_path / "images").mkdir()
    from PIL import Image

    Image.new("L", (8, 8), 128).save(tmp_path / "images" / "a.png")
    runs = _damaged_runs(small_run, tmp_path / "runs")
    assert {c for c, a in ARGUMENTS.items() if "run" in a.values()} - {"train"} == set(COMMAND_ARGS) == set(READS)
    for command, make in COMMAND_ARGS.items():
        for damage in READS[command]:
            code = COMMANDS[command].main(make(runs[damage], tmp_path / "out" / command))
            _named_error(code, f"{command}, {damage}: {capsys.readouterr().err}")


def _argv(command: str, dest: str, value: Path, run: Path, tmp: Path) -> list[str]:
    """A command line of ``command`` that is valid but for ``dest`` = ``value``."""
    images, out = str(tmp / "images"), str(tmp / "out")
    lines = {
        ("train", "config"): ["--config", value, *TINY], ("train", "output_dir"): [*TINY, "--output-dir", value],
        ("train", "resume"): ["--resume", value, "--output-dir", out],
        ("report", "run_dir"): [value], ("report", "out"): [run, "--out", value],
        ("export", "path"): [value], ("export", "out"): [run, "--out", value],
        ("export-model", "run_dir"): [value, "--out", out], ("export-model", "out"): [run, "--out", value],
        ("export-model", "checkpoint"): [run, "--out", out, "--checkpoint", value],
        ("predict", "model"): [value, images], ("predict", "images"): [run, value, "--out", f"{out}.csv"],
        ("predict", "out"): [run, images, "--out", value],
        ("predict", "checkpoint"): [run, images, "--checkpoint", value],
        ("issues", "run_dir"): [value], ("issues", "out"): [run, "--out", value],
        ("issues", "checkpoint"): [run, "--checkpoint", value],
        ("audit", "folder"): [value], ("audit", "out"): [images, "--out", value],
        ("config-docs", "readme"): ["--readme", value],
        ("plan", "config"): ["--config", value, *TINY],
    }
    assert (command, dest) in lines, f"tcl-lite {command}: give {dest} a command line in _argv to walk it"
    return [str(v) for v in lines[(command, dest)]]


def _bad_inputs(kind: str, tmp: Path, dest: str) -> dict[str, Path]:
    a_file, a_folder = tmp / "a_file.txt", tmp / "a_folder"
    if not a_file.exists():
        tmp.mkdir(parents=True, exist_ok=True)
        a_file.write_text("x")
        a_folder.mkdir()
        (tmp / "not_an_image.png").write_bytes(b"\x00" * 64)
    if kind == "file":
        return damaged_files(tmp / dest, {"config": ".yaml", "readme": ".md"}.get(dest, ".txt"))
    if kind in ("run", "folder", "checkpoint"):
        return {"missing": tmp / "missing", "a file": a_file,
                **({"an empty folder": a_folder} if kind != "folder" else {})}
    if kind == "images":
        return {"missing": tmp / "missing.png", "an empty folder": a_folder, "not an image": tmp / "not_an_image.png"}
    return {"output": {"a file": a_file}, "output-file": {"a folder": a_folder}}[kind]


def test_every_path_argument_refuses_damaged_inputs(small_run, tmp_path, capsys, fresh_accelerate):
    from PIL import Image

    (tmp_path / "images").mkdir()
    Image.new("L", (8, 8), 128).save(tmp_path / "images" / "a.png")
    walked = 0
    for command, arguments in ARGUMENTS.items():
        for dest, kind in arguments.items():
            if kind is None:
                continue
            for damage, value in _bad_inputs(kind, tmp_path / "bad" / command, dest).items():
                code = COMMANDS[command].main(_argv(command, dest, value, small_run, tmp_path))
                _named_error(code, f"tcl-lite {command} {dest}={damage}: {capsys.readouterr().err}")
                walked += 1
    assert walked > 40


def test_damaged_exports_and_feature_checkpoints_give_named_errors(small_run, tmp_path, capsys, fresh_accelerate):
    from tcl_lite.inference.export_model import export_model, load_model

    export = export_model(small_run, tmp_path / "export")
    meta = json.loads((export / "model.json").read_text())
    weights = (export / "model.safetensors").read_bytes()
    two = dict(meta, version=2, inference={"method": "dividemix", "networks": {"net1": {"projector": False},
                                                                             "net2": {"projector": False}}})
    cases = {"model.json not JSON": (b"\x00\x01", weights), "model.json of another structure":
             (json.dumps(dict(meta, class_names=7)).encode(), weights),
             "weights not safetensors": (json.dumps(meta).encode(), b"PK\x03\x04 a zip, not safetensors"),
             "weights cut": (json.dumps(meta).encode(), weights[: len(weights) // 2]),
             "two networks, weights damaged": (json.dumps(two).encode(), weights[:8] + b"{" + weights[9:])}
    for model_json, model_weights in cases.values():
        (export / "model.json").write_bytes(model_json)
        (export / "model.safetensors").write_bytes(model_weights)
        with pytest.raises(PathError, match=re.escape(str(export))):
            load_model(export)
        code = COMMANDS["predict"].main([str(export), str(small_run / "data.json"), "--out", str(tmp_path / "p.csv")])
        _named_error(code, capsys.readouterr().err)

    # A two-network run whose second weights file is damaged (re-hashed: only its format can tell).
    run = tmp_path / "two"
    shutil.copytree(small_run, run)
    (run / "config.yaml").write_text((run / "config.yaml").read_text().replace("method: ce", "method: dividemix"))
    for ckpt in (run / "checkpoints").glob("step_*"):
        data = (ckpt / "model.safetensors").read_bytes()
        rewrite(ckpt, "model.net2.safetensors", data[: len(data) // 2])
    code = COMMANDS["export-model"].main([str(run), "--out", str(tmp_path / "two_export")])
    _named_error(code, capsys.readouterr().err, "model.net2.safetensors")

    # MLNT's feature checkpoint: a file whose header passes the command line's look (its data ends where the
    # header says) but whose tensors overlap: only the reader finds it.
    overlapping = tmp_path / "features" / "model.safetensors"
    overlapping.parent.mkdir()
    header = json.dumps({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                         "b": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    overlapping.write_bytes(len(header).to_bytes(8, "little") + header + bytes(8))
    code = COMMANDS["train"].main([*TINY, "method=mlnt", f"mlnt.feature_checkpoint={overlapping}",
                                   f"output_dir={tmp_path / 'mlnt'}"])
    _named_error(code, capsys.readouterr().err, "mlnt.feature_checkpoint", str(overlapping), "safetensors")
