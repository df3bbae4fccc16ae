"""The run directory and the run's safety nets: nan/inf steps are skipped and, in a row, stop
the run before a poisoned checkpoint; snapshots are kept by recency and by score; a run that
fails before its first checkpoint leaves nothing behind; progress and the stop reason are said
in a log file without a progress bar."""

from __future__ import annotations

import errno
import json
import math

import pytest
import torch

import seqlab.train as training
from seqlab.checkpoint import load_checkpoint
from seqlab.cli import main
from seqlab.config import load_config
from seqlab.problems.seq2seq import Seq2SeqProblem
from seqlab.rundir import RunError
from seqlab.train import TrainingDiverged, train

FAST = ["train.max_steps=12", "train.valid_every=4", "train.log_every=1", "train.threads=1"]


def _records(run):
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def _poison(monkeypatch, bad_calls: set[int]):
    """The problem's loss is nan on the given calls (1-based), else the real loss."""
    real, calls = Seq2SeqProblem.loss, [0]

    def loss(*args, **kwargs):
        calls[0] += 1
        summed, count = real(*args, **kwargs)
        return (summed * math.nan if calls[0] in bad_calls else summed), count

    monkeypatch.setattr(Seq2SeqProblem, "loss", loss)


def test_a_nan_step_is_skipped_and_logged(tiny_config, tmp_path, monkeypatch):
    _poison(monkeypatch, {3, 7})
    train(load_config(tiny_config, FAST), tmp_path / "run", quiet=True)
    records = _records(tmp_path / "run")
    skipped = [r for r in records if "skipped" in r]
    assert [r["step"] for r in skipped] == [2, 5]  # after 2 good steps; after 5 (one skip)
    state = load_checkpoint(tmp_path / "run" / "last.pt")
    assert state["progress"]["step"] == 12 and state["progress"]["skipped"] == 2
    assert all(torch.isfinite(t).all() for t in state["model"].values())
    assert all(math.isfinite(r["train_loss"]) for r in records if "train_loss" in r)


def test_nan_steps_in_a_row_stop_the_run_without_a_poisoned_checkpoint(tiny_config, tmp_path,
                                                                       monkeypatch, capsys):
    _poison(monkeypatch, set(range(6, 100)))  # from the 6th step on, every loss is nan
    cfg = load_config(tiny_config, [*FAST, "train.max_nonfinite_steps=3"])
    code = main(["train", str(tiny_config), "--out", str(tmp_path / "run"), "--quiet",
                 *[a for s in [*FAST, "train.max_nonfinite_steps=3"] for a in ("--set", s)]])
    err = capsys.readouterr().err
    assert code == 2 and "diverged" in err and "3 steps in a row" in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    state = load_checkpoint(tmp_path / "run" / "last.pt")  # from the validation at step 4
    assert state["progress"]["step"] == 4
    assert all(torch.isfinite(t).all() for t in state["model"].values())
    with pytest.raises(TrainingDiverged, match="no checkpoint was written"):
        train(cfg, tmp_path / "again", quiet=True)  # nan from its first step: nothing to keep
    assert not (tmp_path / "again").exists()


def test_snapshots_keep_the_most_recent_and_the_best(tiny_config, tmp_path, monkeypatch):
    """Scripted validation scores: steps 2..16 score 5, 9, 1, 7, 3, 8, 2, 4 (bleu)."""
    scores = iter([5.0, 9.0, 1.0, 7.0, 3.0, 8.0, 2.0, 4.0])

    def scripted(self, model):
        return {"bleu": next(scores), "chrf": 0.0, "exact_match": 0.0, "loss": 1.0, "ppl": 2.7}

    monkeypatch.setattr(Seq2SeqProblem, "validate", scripted)
    monkeypatch.setattr(training, "_report_validation", lambda *a: None)
    cfg = load_config(tiny_config, ["train.max_steps=16", "train.valid_every=2",
                                    "train.keep_last=2", "train.keep_best=2", "train.patience=null",
                                    "train.threads=1"])
    monkeypatch.setattr(training, "_final_report", lambda *a: {})
    train(cfg, tmp_path / "run", quiet=True)
    kept = sorted(p.name for p in (tmp_path / "run").glob("step-*.pt"))
    # the 2 most recent (14, 16) and the 2 best (4: 9.0, 12: 8.0)
    assert kept == ["step-0000004.pt", "step-0000012.pt", "step-0000014.pt", "step-0000016.pt"]
    snap = load_checkpoint(tmp_path / "run" / "step-0000012.pt")
    assert snap["progress"]["step"] == 12 and "optimizer" not in snap
    assert load_checkpoint(tmp_path / "run" / "best.pt")["progress"]["step"] == 4


def test_no_snapshots_by_default(tiny_config, tmp_path):
    train(load_config(tiny_config, FAST), tmp_path / "run", quiet=True)
    assert not list((tmp_path / "run").glob("step-*.pt"))


def _train_cli(tiny_config, out, *extra, capsys):
    code = main(["train", str(tiny_config), "--out", str(out), "--quiet", *extra])
    return code, capsys.readouterr().err


def test_out_that_is_a_file_or_under_a_file(tiny_config, tmp_path, capsys):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("keep me\n")
    for out, says in ((a_file, "is a file"), (a_file / "run", "is a file")):
        code, err = _train_cli(tiny_config, out, capsys=capsys)
        assert code == 2 and says in err and len(err.strip().splitlines()) == 1, err
    assert a_file.read_text() == "keep me\n"


def test_out_on_a_read_only_filesystem(tiny_config, tmp_path, capsys, monkeypatch):
    from pathlib import Path

    def read_only(self, *args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(self))

    monkeypatch.setattr(Path, "mkdir", read_only)
    code, err = _train_cli(tiny_config, tmp_path / "ro" / "run", capsys=capsys)
    assert code == 2 and "Read-only file system" in err and "--out" in err, err


def test_a_failed_run_leaves_no_trace_and_a_rerun_starts_a_fresh_log(tiny_config, tiny_files,
                                                                     tmp_path, capsys):
    out = tmp_path / "deep" / "er" / "run"
    with open(f"{tiny_files['train']}.tgt", "a") as f:
        f.write("one line too many\n")
    code, err = _train_cli(tiny_config, out, capsys=capsys)
    assert code == 2 and "lines" in err
    assert not (tmp_path / "deep").exists()  # no empty directories left behind
    stale = tmp_path / "run2"
    stale.mkdir()
    (stale / "metrics.jsonl").write_text('{"step": 999, "train_loss": 9.9}\n')
    generated = load_config(None, ["data.synthetic=reverse", "data.synthetic_train_size=200",
                                   "data.synthetic_eval_size=20", "tokenizer.kind=word",
                                   "model.hidden_size=16", "model.embedding_size=8", *FAST])
    with pytest.raises(RunError, match="nothing to resume"):
        train(generated, stale, resume=True, quiet=True)
    assert (stale / "metrics.jsonl").exists()  # what was there is not deleted by a failure
    train(generated, stale, quiet=True)
    assert 999 not in [r["step"] for r in _records(stale)]


def test_log_file_gets_progress_lines_and_the_stop_reason(tiny_config, tmp_path, capsys):
    """stderr is not a terminal here (pytest captures it): no bar, a line per log_every."""
    cfg = load_config(tiny_config, ["train.max_steps=9", "train.valid_every=100",
                                    "train.log_every=3", "train.threads=1"])
    train(cfg, tmp_path / "run")
    err = capsys.readouterr().err
    assert "\r" not in err
    progress = [line for line in err.splitlines() if line.startswith("step ") and "loss" in line
                and "valid" not in line]
    assert [line.split()[1] for line in progress] == ["3/9", "6/9", "9/9"]
    assert "training stopped at step 9: max_steps (9) reached" in err
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["stopped"] == "max_steps (9) reached"


def test_stop_reason_patience(tiny_config, tmp_path, monkeypatch):
    monkeypatch.setattr(Seq2SeqProblem, "validate", lambda *a: {
        "bleu": 1.0, "chrf": 0.0, "loss": 1.0, "exact_match": 0.0, "ppl": 2.7})
    monkeypatch.setattr(training, "_report_validation", lambda *a: None)
    monkeypatch.setattr(training, "_final_report", lambda *a: {"stopped": a[-1]})
    cfg = load_config(tiny_config, ["train.max_steps=100", "train.valid_every=2",
                                    "train.patience=2", "train.threads=1"])
    result = train(cfg, tmp_path / "run", quiet=True)
    assert result["stopped"].startswith("early stopping: valid bleu did not improve in 3")
    assert load_checkpoint(tmp_path / "run" / "last.pt")["progress"]["step"] == 8
