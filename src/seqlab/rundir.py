"""The run directory: where a training run writes; checked before any work starts, and left as
it was found when a run fails before it saved anything.

    DIR/config.yaml       the resolved config
    DIR/metrics.jsonl     one JSON object per log line and per validation
    DIR/last.pt           resumable: weights, optimizer, schedules, RNG streams, data position
    DIR/best.pt           the best validation so far: what prediction needs, not resumable
    DIR/step-NNNNNNN.pt   snapshots (the form of best.pt) kept by train.keep_last / keep_best
    DIR/results.json      the final report

Guarantees: a fresh run starts a fresh metrics.jsonl (never appends to a stale one); a resumed
run drops the log lines written after its checkpoint (they are written again, identically);
a run that fails before its first checkpoint removes what it wrote, and the directories it
created, so a failed run leaves no empty directories behind.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from seqlab.errors import RunError  # noqa: F401  (importable from here)

LAST, BEST, METRICS, CONFIG, RESULTS = "last.pt", "best.pt", "metrics.jsonl", "config.yaml", \
    "results.json"



class RunDir:
    """One training run's directory. `open()` creates it (checks it is writable); `discard()`
    removes what this run created if it never saved a checkpoint."""

    def __init__(self, path: str | Path, *, resume: bool, writer: bool = True):
        self.path, self.resume, self.writer = Path(path), resume, writer
        self._created: list[Path] = []  # directories this run created, deepest last
        self._written: list[Path] = []  # files this run created

    # ------------------------------------------------------------------ paths
    @property
    def last(self) -> Path:
        return self.path / LAST

    @property
    def best(self) -> Path:
        return self.path / BEST

    @property
    def metrics(self) -> Path:
        return self.path / METRICS

    def snapshot(self, step: int) -> Path:
        return self.path / f"step-{step:07d}.pt"

    # ------------------------------------------------------------------ checks
    def check(self) -> None:
        """Everything that can be known about the directory before any work: raises RunError."""
        p = self.path
        if p.exists() and not p.is_dir():
            raise RunError(f"--out {p}: is a file, not a directory; choose another --out")
        for parent in p.parents:
            if parent.exists():
                if not parent.is_dir():
                    raise RunError(f"--out {p}: {parent} is a file, not a directory")
                if not os.access(parent, os.W_OK | os.X_OK) and not p.exists():
                    raise RunError(f"--out {p}: cannot create it, {parent} is not writable")
                break
        if p.is_dir() and not os.access(p, os.W_OK | os.X_OK):
            raise RunError(f"--out {p}: the directory is not writable")
        if self.last.exists() and not self.resume:
            raise RunError(f"{p} already holds a run ({LAST}); pass --resume to continue it, "
                           "or choose another --out")

    def open(self) -> None:
        """Create the directory (and missing parents), and prove it can be written."""
        if not self.writer:
            return
        missing = [d for d in [self.path, *self.path.parents] if not d.exists()]
        try:
            for d in reversed(missing):
                d.mkdir()
                self._created.append(d)
            for stale in self.path.glob(".*.pt.*.tmp"):  # a write cut short by a kill
                stale.unlink()
            probe = self.path / ".seqlab-write-test"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            self.discard()
            raise RunError(f"--out {self.path}: cannot write there ({exc.strerror or exc})") \
                from None

    def created(self, path: Path) -> Path:
        """Note a file this run wrote (removed again by `discard`)."""
        if path not in self._written:
            self._written.append(path)
        return path

    def discard(self) -> None:
        """Undo this run's traces when nothing worth keeping (no last.pt) was written."""
        if self.resume or self.last.exists():  # a fresh run refuses a dir that holds last.pt
            return
        for f in self._written:
            f.unlink(missing_ok=True)
        for d in reversed(self._created):
            try:
                d.rmdir()  # only if empty: never removes anything this run did not write
            except OSError:
                break

    # ------------------------------------------------------------------ the log
    def start_log(self, resumed_at: int | None) -> None:
        """A fresh run starts an empty log; a resumed one keeps the lines up to its step."""
        if not self.writer:
            return
        if resumed_at is None:
            self.metrics.write_text("", encoding="utf-8")
            self.created(self.metrics)
            return
        if self.metrics.exists():
            kept = [line for line in self.metrics.read_text(encoding="utf-8").splitlines()
                    if (step := _step_of(line)) is not None and step <= resumed_at]
            self.metrics.write_text("".join(line + "\n" for line in kept), encoding="utf-8")

    def record(self, fields: dict) -> None:
        if self.writer:
            with self.metrics.open("a", encoding="utf-8") as f:
                f.write(json.dumps(fields, ensure_ascii=False) + "\n")

    # ------------------------------------------------------------------ snapshots
    def prune_snapshots(self, history: list[list], keep_last: int, keep_best: int,
                        higher_is_better: bool) -> list[list]:
        """history: [step, value] of every snapshot written, oldest first (value None: no
        validation). Keeps the keep_last most recent and the keep_best best; deletes the
        others' files; returns the history of the kept ones."""
        recent = {step for step, _ in history[-keep_last:]} if keep_last else set()
        scored = [(v, s) for s, v in history if v is not None]
        scored.sort(key=lambda vs: (-vs[0] if higher_is_better else vs[0], -vs[1]))
        best = {s for _, s in scored[:keep_best]}
        kept = []
        for step, value in history:
            if step in recent or step in best:
                kept.append([step, value])
            else:
                self.snapshot(step).unlink(missing_ok=True)
        return kept


def _step_of(line: str) -> int | None:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return None
