"""``tcl-lite predict RUN_DIR|EXPORT_DIR IMAGES...|FOLDER --out preds.csv``.

One CSV row per image: path, predicted label and class name, its probability, and the top-k classes
with their probabilities. Images are decoded and resized exactly as in training (Pillow, RGB,
shorter side to the model's size, centre crop), batched, on the GPU when there is one.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image

from tcl_lite.data.datasets import IMAGE_EXTENSIONS, FileImages, _images_under, resize_center_crop
from tcl_lite.errors import DataError
from tcl_lite.inference.export_model import classifier_from_run, load_model
from tcl_lite.inference.run_loading import default_device


def image_files(inputs: Sequence[str]) -> list[str]:
    """Files as given, and every image under a folder (recursive, sorted); an error for anything else."""
    files: list[str] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = _images_under(path)
            if not found:
                raise DataError(f"{item} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
            files += found
        elif path.is_file():
            files.append(str(path))
        else:
            raise DataError(f"{item}: no such image file or folder")
    return files


def load_classifier(source: str, checkpoint: str = "auto") -> Any:
    """An exported model folder (model.json) or a run directory's checkpoint."""
    return load_model(source) if (Path(source) / "model.json").is_file() else classifier_from_run(source, checkpoint)


GREY_MODES = ("1", "L", "LA", "I", "I;16", "F")  # Pillow modes of single-channel images


def model_is_greyscale(model: Any) -> bool:
    """Whether ``model`` was trained on greyscale images: one input channel, or three that share one mean and
    standard deviation (grey replicated into RGB, as the digits are)."""
    meta = model.meta
    mean, std = list(meta.get("mean", [])), list(meta.get("std", []))
    return int(meta.get("channels", 3)) == 1 or (len(mean) == 3 and len(set(mean)) == 1 and len(set(std)) == 1)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' * (n != 1)}"


def check_inputs(model: Any, files: Sequence[str]) -> list[str]:
    """What ``predict`` converts so that the images fit ``model`` (colour, size), one sentence each; a
    DataError for a model whose channel count no image decodes to. Reads the files' headers only."""
    channels, size, grey = int(model.meta.get("channels", 3)), model.image_size, model_is_greyscale(model)
    if channels not in (1, 3):
        raise DataError(f"the model takes {channels}-channel images; predict decodes images as greyscale (1 channel) "
                        "or RGB (3) only")
    colour, mono, other_size = [], [], []
    for path in files:
        try:
            with Image.open(path) as img:
                (mono if img.mode in GREY_MODES else colour).append(path)
                if img.size != (size, size):
                    other_size.append((path, img.size))
        except (OSError, ValueError) as e:
            raise DataError(f"cannot read image {path!r} ({e}); replace or remove the file") from None
    notes = []
    if grey and colour:
        notes.append(f"{_plural(len(colour), 'colour image')} (e.g. {colour[0]}) for a model trained on greyscale "
                     "images: converted to greyscale (luma, ITU-R 601) before predicting")
    if not grey and mono:
        notes.append(f"{_plural(len(mono), 'greyscale image')} (e.g. {mono[0]}) for a colour model: the grey value "
                     "is repeated in R, G and B, as training does")
    if other_size:
        (path, (w, h)) = other_size[0]
        notes.append(f"{_plural(len(other_size), 'image')} not {size}x{size} (e.g. {path}: {w}x{h}): shorter side "
                     f"resized to {size} px and centre-cropped, as in training")
    return notes


def _decode(path: str, size: int, grey: bool, channels: int) -> torch.Tensor:
    """uint8 [channels, size, size] as the model takes it (greyscale for a greyscale model)."""
    with Image.open(path) as img:
        img = img.convert("L").convert("RGB") if grey else img.convert("RGB")
        image = resize_center_crop(TF.pil_to_tensor(img), size)
    return image[:channels]


@torch.no_grad()
def predict(model: Any, files: Sequence[str], *, batch_size: int = 64, device: Any = None) -> np.ndarray:
    """Softmax probabilities [N, K] of ``model`` (an ExportedClassifier) on the image files, each converted
    as ``check_inputs`` says (to greyscale for a greyscale model; to the model's size)."""
    device = torch.device(device) if device is not None else default_device()
    model = model.to(device).eval()
    grey, channels = model_is_greyscale(model), int(model.meta.get("channels", 3))
    images = FileImages(files, model.image_size)
    out = []
    for start in range(0, len(files), batch_size):
        chunk = range(start, min(start + batch_size, len(files)))
        decoded = [_decode(files[i], model.image_size, True, channels) if grey else images[i] for i in chunk]
        batch = torch.stack([model.transform(x) for x in decoded])
        out.append(model(batch.to(device)).float().softmax(dim=1).cpu())
    return torch.cat(out).numpy()


def write_predictions(path: str | Path, files: Sequence[str], probs: np.ndarray, class_names: Sequence[str],
                      top_k: int = 3) -> Path:
    k = min(top_k, probs.shape[1])
    top = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "predicted_label", "predicted_class", "probability", f"top{k}"])
        for file, p, t in zip(files, probs, top):
            topk = "; ".join(f"{class_names[j]}:{p[j]:.4f}" for j in t)
            writer.writerow([file, int(t[0]), class_names[t[0]], format(float(p[t[0]]), ".6g"), topk])
    return Path(path)
