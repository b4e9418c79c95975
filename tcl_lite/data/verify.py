"""Open every image of a folder / file list before the run starts (``data.verify_images``).

Image folders and file lists decode lazily, so a corrupt or zero-byte file would otherwise stop
the run only when its batch comes up, hours in, after the run directory was created. Decoding is
done in threads (Pillow releases the GIL while it decodes) with a progress bar in a terminal.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from PIL import Image

from tcl_lite.errors import DataError

from .datasets import IMAGE_EXTENSIONS


def image_problem(path: str) -> str | None:
    """Why ``path`` cannot be used as an image, or None."""
    try:
        if os.path.getsize(path) == 0:
            return "empty file (0 bytes)"
        with Image.open(path) as img:
            img.draft("RGB", (64, 64))  # JPEG: decode at reduced size; the whole stream is still read
            img.load()
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        return str(e) or type(e).__name__
    return None


def _is_main_process() -> bool:
    return os.environ.get("RANK", "0") == "0" and os.environ.get("LOCAL_RANK", "0") == "0"


def verify_images(paths: Sequence[str], what: str) -> None:
    """DataError naming every unreadable image of ``paths`` (up to 20 listed)."""
    show = _is_main_process()
    if show:
        print(f"data.verify_images: opening the {len(paths)} images of {what} ...", flush=True)
    t0 = time.monotonic()
    bad: list[tuple[str, str]] = []
    workers = min(8, (os.cpu_count() or 1) * 2)
    with ThreadPoolExecutor(workers) as pool:
        results = pool.map(image_problem, paths, chunksize=64)
        if show:
            from rich.progress import track

            results = track(results, total=len(paths), description="verifying images", transient=True)
        for path, why in zip(paths, results):
            if why is not None:
                bad.append((path, why))
    if bad:
        raise unreadable_images_error(bad, len(paths), what)
    if show:
        print(f"data.verify_images: all {len(paths)} images open ({time.monotonic() - t0:.1f} s)", flush=True)


def unreadable_images_error(bad: Sequence[tuple[str, str]], total: int, what: str) -> DataError:
    """One error naming every unreadable image (``(path, why)`` pairs, up to 20 listed) and the fix."""
    listed = "\n".join(f"  {p}: {why}" for p, why in bad[:20])
    more = f"\n  ... and {len(bad) - 20} more" if len(bad) > 20 else ""
    return DataError(f"{len(bad)} of {total} images of {what} cannot be read (found before the run started):\n"
                     f"{listed}{more}\nReplace or remove these files (supported: {', '.join(IMAGE_EXTENSIONS)}), "
                     "or set data.verify_images=0 and data.cache_decoded=off to skip this check")
