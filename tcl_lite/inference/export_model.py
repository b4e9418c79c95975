"""``tcl-lite export-model RUN_DIR --out DIR`` and ``tcl_lite.load_model(DIR)``.

An exported model is a folder of two files: ``model.safetensors`` and ``model.json`` (architecture,
class names, image size, normalisation, where it came from). ``load_model`` rebuilds the classifier
from these alone: no run directory, no config file, no dataset, nothing unpickled.

What predicts is the run's method's ``inference_model`` of its networks. When that is one network
(CE, TCL, MLNT's student) the file holds its encoder and classifier head (format version 1; the
training-only projector is left out). Otherwise (e.g. a method that sums two networks' logits) it
holds that module's state dict and ``model.json`` names the method and its networks (version 2);
``load_model`` rebuilds the module through the method registry, so the method must be registered
in the loading process (the built-in ones always are).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from tcl_lite.checkpoints import schema
from tcl_lite.config import ModelConfig
from tcl_lite.data.datasets import resize_center_crop
from tcl_lite.data.transforms import make_transform
from tcl_lite.errors import ConfigError, NotAnExportError, OutputExistsError, PathError, RunError
from tcl_lite.inference.run_loading import choose_checkpoint, load_network, logits_of, run_config, run_data
from tcl_lite.methods import get_method
from tcl_lite.models.network import ModelSpec, Network, build_model

FORMAT = "tcl_lite-model"
# The ModelConfig fields that shape the network (pretrained* only say where weights came from).
_ARCH_FIELDS = ("arch", "width", "norm", "head", "proj_dim", "dropout")
VERSIONS = (1, 2)  # 1: one network's encoder + classifier; 2: a method's inference module of several networks


class ExportedClassifier(nn.Module):
    """``forward(images) -> logits``: encoder + classifier head (one network), or ``module``, a method's
    inference module of several networks. ``meta`` holds class names, image size and normalisation;
    ``transform`` turns a uint8 [3, S, S] image into the model's input."""

    def __init__(self, encoder: nn.Module | None, classifier: nn.Module | None, meta: dict[str, Any],
                 module: nn.Module | None = None) -> None:
        super().__init__()
        if module is None:
            self.encoder = encoder
            self.classifier = classifier
        else:
            self.module = module
        self.meta = meta

    @property
    def class_names(self) -> list[str]:
        return list(self.meta["class_names"])

    @property
    def image_size(self) -> int:
        return int(self.meta["image_size"])

    def transform(self, image: Tensor) -> Tensor:
        tf = make_transform("test", self.image_size, self.meta["mean"], self.meta["std"])
        return tf(resize_center_crop(image, self.image_size))

    def forward(self, images: Tensor) -> Tensor:
        if "module" in self._modules:
            return logits_of(self.module(images))
        return self.classifier(self.encoder(images))


def _build(meta: dict[str, Any]) -> ExportedClassifier:
    model_cfg = ModelConfig(**{k: meta["model"][k] for k in _ARCH_FIELDS})
    size = {"in_channels": int(meta.get("channels", 3)), "image_size": int(meta["image_size"])}
    inference = meta.get("inference")
    if not inference:
        net = build_model(model_cfg, int(meta["num_classes"]), **size)
        return ExportedClassifier(net.encoder, net.classifier, meta)
    # each network's ModelSpec as exported (a spec of an earlier version lacks the later fields: defaults)
    nets = {name: build_model(model_cfg, int(meta["num_classes"]), **size, spec=ModelSpec(**spec))
            for name, spec in inference["networks"].items()}
    return ExportedClassifier(None, None, meta, module=_method(inference["method"]).inference_model(nets))


def _spec_record(spec: ModelSpec) -> dict[str, Any]:
    """A network's ``ModelSpec`` for model.json: ``projector`` and every field that is not at its default
    (so the file of a method without extra heads is as before; ``ModelSpec(**record)`` restores it)."""
    default = ModelSpec()
    return {f.name: getattr(spec, f.name) for f in dataclasses.fields(spec)
            if f.name == "projector" or getattr(spec, f.name) != getattr(default, f.name)}


def _method(name: str) -> Any:
    try:
        return get_method(name)
    except ConfigError as e:
        raise ConfigError(f"the model was exported from a run of method {name!r}, which predicts with several "
                          f"networks through that method's inference_model; import the module that registers "
                          f"{name!r} before loading it ({e})") from None


def _meta_agrees(meta: dict) -> str | None:
    if len(meta["class_names"]) != meta["num_classes"]:
        return f"{len(meta['class_names'])} class_names for num_classes={meta['num_classes']}"
    if not len(meta["mean"]) == len(meta["std"]) == meta["channels"]:
        return f"mean and std need one value per channel (channels={meta['channels']})"
    return None


# model.json, checked before anything is built from it.
META = schema.Record(
    {"format": schema.Str(choices=(FORMAT,)), "version": schema.Int(ge=1),
     "model": schema.Record({"arch": schema.Str(pattern=r".+"), "width": schema.Int(ge=1), "norm": schema.Str(),
                             "head": schema.Str(), "proj_dim": schema.Int(ge=1), "dropout": schema.Num(ge=0)},
                            extra=schema.Anything()),
     "class_names": schema.ListOf(schema.Str(), min_len=1), "num_classes": schema.Int(ge=1),
     "image_size": schema.Int(ge=1), "channels": schema.Int(ge=1, le=4), "mean": schema.ListOf(schema.Num()),
     "std": schema.ListOf(schema.Num(gt=0))},
    optional={"inference": schema.Record({"method": schema.Str(pattern=r".+"), "networks": schema.MapOf(
        schema.Str(), schema.Record({"projector": schema.Bool()}))}), "source": schema.Anything()},
    extra=schema.Anything(), rules=(_meta_agrees,))


def load_model(path: str | Path) -> ExportedClassifier:
    """The classifier written by ``export-model`` to ``path``, in eval mode on the CPU. A damaged or
    altered export is a PathError naming the file (and the field)."""
    path = Path(path)
    if not (path / "model.json").is_file() or not (path / "model.safetensors").is_file():
        raise NotAnExportError(f"{path} is not an exported model: expected model.json and model.safetensors "
                                "written by `tcl-lite export-model RUN_DIR --out DIR`")
    try:
        meta = schema.read_json(path / "model.json")
        if isinstance(meta, dict) and meta.get("format") != FORMAT:
            raise PathError(f"{path / 'model.json'} is not a {FORMAT} file (format: {meta.get('format')!r})")
        if isinstance(meta, dict) and meta.get("version", 1) not in VERSIONS:
            raise PathError(f"{path / 'model.json'}: format version {meta.get('version')!r} is newer than this "
                            f"tcl_lite reads ({', '.join(map(str, VERSIONS))}); upgrade tcl_lite")
        META.check(meta, "model.json")
        schema.safetensors_header(path / "model.safetensors")
        weights = load_file(str(path / "model.safetensors"))
    except (schema.Invalid, SafetensorError, OSError) as e:
        raise PathError(f"{path} is a damaged export: {e}; export the run again (tcl-lite export-model)") from None
    model = _build(meta)
    try:
        model.load_state_dict(weights)
    except RuntimeError as e:
        raise PathError(f"{path / 'model.safetensors'} does not hold the weights of the model model.json describes "
                        f"({str(e)[:300]}); export the run again (tcl-lite export-model)") from None
    return model.eval()


def classifier_from_run(run_dir: str | Path, checkpoint: str = "auto") -> ExportedClassifier:
    """The run's classifier at ``checkpoint`` (auto: best when kept, else final), with its metadata."""
    run_dir = Path(run_dir)
    cfg = run_config(run_dir)
    ckpt = choose_checkpoint(run_dir, checkpoint)
    info = _data_info(run_dir, cfg)
    net = load_network(cfg, ckpt, info["num_classes"], info["image_size"])
    meta = {"format": FORMAT, "version": 1, "model": {k: getattr(cfg.model, k) for k in _ARCH_FIELDS},
            **{k: info[k] for k in ("class_names", "num_classes", "image_size", "channels", "mean", "std")},
            "source": {"run_dir": str(run_dir.resolve()), "checkpoint": ckpt.name, "method": cfg.method}}

    if isinstance(net, Network):  # one network predicts: its encoder and classifier
        return ExportedClassifier(net.encoder, net.classifier, meta).eval()
    specs = _method(cfg.method).model_specs(cfg)
    meta |= {"version": 2, "inference": {"method": cfg.method,
                                         "networks": {n: _spec_record(s) for n, s in specs.items()}}}
    model = _build(meta)
    model.module.load_state_dict(net.state_dict())
    return model.eval()


def _data_info(run_dir: Path, cfg: Any) -> dict[str, Any]:
    info_file = run_dir / "data.json"
    if info_file.is_file():
        try:
            return schema.read_checked(info_file, schema.DATA_INFO)
        except schema.Invalid as e:
            raise RunError(f"{run_dir}: {e}; it is written by train.py: resume the run once to write it "
                           "again") from None

    data = run_data(run_dir, cfg)  # a run from before data.json: rebuild the data (the dataset must still be there)
    return {"class_names": data.class_names, "num_classes": data.num_classes, "image_size": data.image_size,
            "channels": data.channels, "mean": list(data.mean), "std": list(data.std)}


def export_model(run_dir: str | Path, out: str | Path, checkpoint: str = "auto") -> Path:
    """Write ``out/model.safetensors`` and ``out/model.json``; an existing export is never overwritten."""
    out = Path(out)
    model = classifier_from_run(run_dir, checkpoint)
    if (out / "model.safetensors").exists() or (out / "model.json").exists():
        raise OutputExistsError(f"{out} already holds an exported model; choose another --out or remove it first")
    out.mkdir(parents=True, exist_ok=True)
    weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    for name, write in (("model.safetensors", lambda p: save_file(weights, p)),
                        ("model.json", lambda p: Path(p).write_text(json.dumps(model.meta, indent=1)))):
        tmp = out / f".tmp-{name}"
        write(str(tmp))
        os.replace(tmp, out / name)  # atomic: a crash leaves no half-written file under the final name
    return out



__all__ = ["ExportedClassifier", "classifier_from_run", "export_model", "load_model"]
