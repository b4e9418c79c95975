"""Files and folders given by path, checked before anything reads them: a clear error naming the path
and what it should be, instead of a traceback from deep inside a reader.

``problem(path, kind)`` says what is wrong with a path, or None. Kinds:

- ``file``: an existing, non-empty, readable regular file whose first bytes fit its extension
  (``.npy``: numpy's magic; ``.safetensors``: an 8-byte header length and a JSON header; ``.pt``: a
  zip or pickle stream; ``.csv``/``.txt``/``.yaml``/``.yml``/``.json``/``.tsv``: UTF-8 text without NUL
  bytes). What is inside is the reader's to check (it names the file too).
- ``folder``: an existing directory.
- ``checkpoint``: a ``.safetensors`` file (as ``file``) or a folder.
- ``output``: where a command writes a folder: absent (it is created) or a folder, never a file.
- ``output-file``: where a command writes a file: absent or a file, never a folder.

Standard library only: the CLI checks its arguments with it before importing torch.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

TEXT = (".csv", ".txt", ".yaml", ".yml", ".json", ".tsv", ".md")
KINDS = ("file", "folder", "checkpoint", "output", "output-file")


def problem(path: str | Path, kind: str) -> str | None:
    """What is wrong with ``path`` as a ``kind`` (see the module docstring), or None when it is usable."""
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r}: one of {', '.join(KINDS)}")
    p = Path(path).expanduser()
    if kind == "output":
        return "is a file, not a folder" if p.exists() and not p.is_dir() else None
    if kind == "output-file":
        return "is a folder, not a file" if p.is_dir() else None
    if not p.exists():
        return "does not exist"
    if kind == "folder" or (kind == "checkpoint" and p.is_dir()):
        return None if p.is_dir() else "is a file, not a folder"
    if kind == "checkpoint" and p.suffix != ".safetensors":
        return "is neither a folder nor a .safetensors file"
    if p.is_dir():
        return "is a folder, not a file"
    if not p.is_file():
        return "is not a regular file"
    return _content_problem(p)


def _content_problem(p: Path) -> str | None:
    try:
        size = p.stat().st_size
        with open(p, "rb") as f:
            head = f.read(1 << 16)
    except OSError as e:
        return f"cannot be read ({e.strerror or e})"
    if size == 0:
        return "is empty (0 bytes)"
    suffix = p.suffix.lower()
    if suffix == ".npy" and not head.startswith(b"\x93NUMPY"):
        return "is not a numpy .npy file (no NUMPY header)"
    if suffix == ".safetensors":
        return _safetensors_problem(p, size)
    if suffix == ".pt" and not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):
        return "is not a torch .pt file (neither a zip archive nor a pickle stream)"
    if suffix in TEXT:
        if b"\x00" in head:
            return "is not a text file (it holds NUL bytes: binary data)"
        try:
            head.decode("utf-8")
        except UnicodeDecodeError as e:
            if e.start < len(head) - 4:  # not just a character cut at the end of the sample
                return f"is not UTF-8 text (byte {e.start} cannot be decoded)"
    return None


def _safetensors_problem(p: Path, size: int) -> str | None:
    """The header must parse and describe exactly the bytes that follow it (a cut file does not)."""
    with open(p, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            return "is not a safetensors file (shorter than its header)"
        (n,) = struct.unpack("<Q", head)
        if n < 2 or n > min(size - 8, 100 << 20):
            return f"is not a safetensors file (its header length {n} does not fit its {size} bytes)"
        try:
            header = json.loads(f.read(n))
        except (ValueError, UnicodeDecodeError):
            return "is not a safetensors file (its header is not JSON)"
    if not isinstance(header, dict):
        return "is not a safetensors file (its header is not a mapping)"
    ends = [e.get("data_offsets", [0, 0])[-1] for k, e in header.items() if k != "__metadata__" and isinstance(e, dict)]
    if not all(isinstance(x, int) for x in ends) or max(ends, default=0) != size - 8 - n:
        return f"is not a complete safetensors file (its header describes {max(ends, default=0)} bytes of data, " \
               f"{size - 8 - n} follow it: cut or damaged)"
    return None
