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

from tcl_lite.data.datasets import IMAGE_EXTENSIONS, FileImages, _images_under
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


@torch.no_grad()
def predict(model: Any, files: Sequence[str], *, batch_size: int = 64, device: Any = None) -> np.ndarray:
    """Softmax probabilities [N, K] of ``model`` (an ExportedClassifier) on the image files."""
    device = torch.device(device) if device is not None else default_device()
    model = model.to(device).eval()
    images = FileImages(files, model.image_size)
    out = []
    for start in range(0, len(files), batch_size):
        batch = torch.stack([model.transform(images[i]) for i in range(start, min(start + batch_size, len(files)))])
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
