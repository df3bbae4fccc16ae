"""Checkpoints: written atomically, read without executing code.

A checkpoint is a dict of tensors and plain Python data (numbers, strings, lists, dicts):
model and optimizer state, schedule state, RNG state, the resolved config, vocabularies and
tokenizers. `torch.save` writes to a temporary file in the same directory, which is then
renamed over the target (`os.replace` is atomic on POSIX and Windows), so a kill mid-write
leaves the previous checkpoint intact. Loading uses `torch.load(weights_only=True)`, which
refuses pickled code.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

FORMAT_VERSION = 1


class CheckpointError(ValueError):
    pass


def save_checkpoint(state: dict, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a checkpoint is an ordinary file
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"format_version": FORMAT_VERSION, **state}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated, not a torch file, or containing code
        raise CheckpointError(f"{path}: not a readable seqlab checkpoint ({exc})") from None
    if not isinstance(state, dict) or "format_version" not in state:
        raise CheckpointError(f"{path}: not a seqlab checkpoint")
    return state


def resolve_checkpoint(model: str | Path) -> Path:
    """A run directory means its best checkpoint (else its last); a file means itself."""
    p = Path(model)
    if p.is_dir():
        for name in ("best.pt", "last.pt"):
            if (p / name).is_file():
                return p / name
        raise CheckpointError(f"{p}: run directory holds no checkpoint (best.pt or last.pt)")
    if not p.exists():
        raise CheckpointError(f"{p}: no such checkpoint or run directory")
    return p
