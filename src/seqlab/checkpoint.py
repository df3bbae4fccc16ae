"""Checkpoints: written atomically, read without executing code, damage reported in one line.

A checkpoint is a dict of tensors and plain Python data (numbers, strings, lists, dicts):
model and optimizer state, schedule state, RNG state, the resolved config, vocabularies and
tokenizers. `torch.save` writes to a temporary file in the same directory, which is then
renamed over the target (`os.replace` is atomic on POSIX and Windows), so a kill mid-write
leaves the previous checkpoint intact. Loading uses `torch.load(weights_only=True)`, which
refuses pickled code.

A file that cannot be used (empty, truncated, not a torch file, holding code, missing a part,
weights that its stored config does not describe) is a CheckpointError of one line that
names the file and says what is wrong, never torch's own text (whose advice to pass
`weights_only=False` would run the file's code).
"""

from __future__ import annotations

import os
import pickle
import re
import tempfile
import zipfile
from pathlib import Path
from typing import NamedTuple

import torch

from seqlab.errors import CheckpointError  # noqa: F401  (importable from here)

FORMAT_VERSION = 2  # 2: the problem's state under "problem" (1: seq2seq only, "codec")
FOR_PREDICTION = ("model", "config", "problem")  # the parts of best.pt; last.pt has more


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


def load_checkpoint(path: str | Path, map_location="cpu", require: tuple[str, ...] = ()) -> dict:
    """The checkpoint at `path` as a dict, which must hold every part named in `require`
    (e.g. FOR_PREDICTION). Anything else is a one-line CheckpointError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated, not a torch file, or containing code
        raise CheckpointError(f"{path}: {_unreadable(path, exc)}") from None
    if not isinstance(state, dict) or "format_version" not in state:
        raise CheckpointError(f"{path}: a PyTorch file, but not a seqlab checkpoint "
                              "(no format_version)")
    if not isinstance(state["format_version"], int) or state["format_version"] > FORMAT_VERSION:
        raise CheckpointError(f"{path}: written by a newer seqlab (checkpoint format "
                              f"{state['format_version']!r}; this one reads {FORMAT_VERSION}); "
                              "upgrade seqlab")
    if state["format_version"] == 1:  # seq2seq only: its codec is the problem's state
        state["problem"] = state.pop("codec", None)
        if isinstance(state.get("rng"), dict) and "sampling" in state["rng"]:
            state["train_state"] = {"sampling": state["rng"].pop("sampling")}
    for part in require:
        if state.get(part) is None:
            raise CheckpointError(f"{path}: not a complete seqlab checkpoint: no {part!r}")
        if not isinstance(state[part], dict):
            raise CheckpointError(f"{path}: not a complete seqlab checkpoint: its {part!r} is "
                                  f"a {type(state[part]).__name__}, not a mapping")
    return state


def _unreadable(path: Path, exc: Exception) -> str:
    """Why torch.load failed, judged from the file itself (torch's text is not shown)."""
    with path.open("rb") as f:
        head = f.read(4)
    if not head:
        return "empty file, not a checkpoint (a save or copy that did not finish?)"
    if head.startswith(b"PK"):  # torch's zip format
        if not zipfile.is_zipfile(path):
            return "truncated or damaged (a save or copy that did not finish?)"
        if "Unsupported global" in str(exc):
            return _HOLDS_CODE
        return "damaged, or a zip archive that is not a PyTorch checkpoint"
    if isinstance(exc, pickle.UnpicklingError) and "Unsupported global" in str(exc):
        return _HOLDS_CODE  # the legacy (non-zip) torch format
    return "not a PyTorch checkpoint file"


_HOLDS_CODE = ("holds Python objects other than tensors and plain data; seqlab does not load "
               "it, since loading such a file can run code")


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


class ReadCheckpoint(NamedTuple):
    """A checkpoint read for prediction: the file it came from and what it holds. Pass it
    on (`problem_of`, a predictor's `from_checkpoint`) to read the file once."""

    where: Path
    state: dict


Checkpointed = str | Path | ReadCheckpoint  # a run directory, a checkpoint file, or either read


def load_for_prediction(model: Checkpointed) -> ReadCheckpoint:
    """(path, state) of a run directory's best.pt (else last.pt) or of a checkpoint file
    (a ReadCheckpoint: itself).

    A damaged best.pt is reported, not replaced by last.pt: last.pt holds other weights (the
    latest validation's, not the best), so using it silently would change the results. The
    message says whether last.pt is readable and how to use it."""
    if isinstance(model, ReadCheckpoint):
        return model
    path = resolve_checkpoint(model)
    try:
        return ReadCheckpoint(path, load_checkpoint(path, require=FOR_PREDICTION))
    except CheckpointError as exc:
        if not (Path(model).is_dir() and path.name == "best.pt"):
            raise
        raise CheckpointError(f"{exc}; {_way_out(path.with_name('last.pt'))}") from None


def _way_out(last: Path) -> str:
    """What to do when best.pt is damaged, depending on last.pt."""
    if not last.is_file():
        return f"there is no {last.name} beside it: retrain, or restore best.pt from a copy"
    try:
        load_checkpoint(last, require=FOR_PREDICTION)
    except CheckpointError as exc:
        return f"{last.name} is unusable too ({str(exc).removeprefix(f'{last}: ')})"
    return (f"{last} is readable: give {last} instead of the run directory (the weights of "
            "the last validation, not the best), or restore best.pt from a copy")


def load_weights(model: torch.nn.Module, weights: dict, path: str | Path,
                 config_note: str = "") -> None:
    """model.load_state_dict(weights); a mismatch means the checkpoint's stored config does
    not describe its weights, reported in one line (`config_note`: the config's sizes)."""
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        note = f" ({config_note})" if config_note else ""
        raise CheckpointError(f"{path}: its weights do not match its config{note}: "
                              f"{_first_mismatch(str(exc))}") from None


_SIZE = re.compile(r"size mismatch for (\S+): copying a param with shape torch\.Size\((\[.*?\])\) "
                   r"from checkpoint, the shape in current model is torch\.Size\((\[.*?\])\)")


def _first_mismatch(text: str) -> str:
    """torch's multi-line load_state_dict error -> its first problem, in a few words."""
    problems = [line.strip() for line in text.splitlines()[1:] if line.strip()]
    if not problems:
        return " ".join(text.split())
    first, more = problems[0], len(problems) - 1
    size = _SIZE.match(first)
    if size:
        first = f"{size[1]} is {size[2]} in the file but {size[3]} for the config"
    else:
        for label, words in (("Missing key(s) in state_dict:", "the file lacks"),
                             ("Unexpected key(s) in state_dict:", "the config's model has no")):
            if first.startswith(label):
                keys = re.findall(r'"([^"]+)"', first)
                shown = ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3
                                               else "")
                first = f"{words} {shown}"
    return first + (f" (and {more} more difference(s))" if more else "")


def stored_config(state: dict, path: str | Path, problem: str | None = None):
    """A checkpoint's stored config as a validated Config. This machine's packages are not
    checked (translating needs no BLEU tokenizer); a config that does not validate is one line.
    With `problem`, a checkpoint of another problem shape is a CheckpointError too."""
    from seqlab.config import ConfigError, config_from_dict

    try:
        config = config_from_dict(state["config"], filename=f"{path} (stored config)",
                                  environment=False)
    except ConfigError as exc:
        raise CheckpointError(f"{path}: its stored config is not valid ({exc})") from None
    if problem is not None and config.problem != problem:
        verb = {"seq2seq": "translate", "classify": "classify", "lm": "generate",
                "tag": "tag", "forecast": "forecast"}
        raise CheckpointError(f"{path}: {with_article(config.problem)} model, not "
                              f"{with_article(problem)} one; use `seqlab "
                              f"{verb[config.problem]}` with it")
    return config


def problem_of(model: Checkpointed) -> str:
    """The problem shape a run directory or checkpoint was trained for (one line if unusable)."""
    where, state = load_for_prediction(model)
    return stored_config(state, where).problem


def with_article(problem: str) -> str:
    """"a seq2seq", "a classify", "an lm" (for messages)."""
    return f"an {problem}" if problem == "lm" else f"a {problem}"


def open_for_prediction(path: Checkpointed, device: str, problem: str, decode,
                        damaged: str):
    """What a predictor (Translator, Classifier, Generator) needs from a run directory or a
    checkpoint file: (torch device, the file read, its validated config, decode(its problem
    state), its weights). Every problem is one line, before any input is read: no such device
    (ConfigError), a damaged file or a missing part, a model of another problem, or a problem
    state that `decode` cannot read (`damaged` says what it is: "its codec ... is damaged")."""
    from seqlab.device import pick_device

    target = pick_device(device, what="--device")
    where, state = load_for_prediction(path)
    config = stored_config(state, where, problem=problem)
    try:
        parts = decode(state["problem"])
    except Exception as exc:  # KeyError, TypeError, ValueError, sentencepiece's RuntimeError
        detail = " ".join(f"{type(exc).__name__}: {exc}".split())
        raise CheckpointError(f"{where}: {damaged} ({detail})") from None
    return target, where, config, parts, state["model"]
