"""Work is never lost: Ctrl-C / SIGTERM save a resumable checkpoint at the current step, and a
run killed (SIGKILL) at any moment, checkpoint writes included, resumes to the very result of a
run that was never interrupted."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from seqlab.checkpoint import load_checkpoint
from seqlab.config import load_config
from seqlab.train import train

# Prints SAVING to stdout when a checkpoint write starts and holds the half-written temporary
# file open for a moment, so that the test can kill the process in the middle of a write.
DRIVER = """\
import sys, time
import torch
real_save = torch.save

def slow_save(obj, f, *args, **kwargs):
    print("SAVING", flush=True)
    real_save(obj, f, *args, **kwargs)
    time.sleep(0.15)  # the new checkpoint is still only a temporary file

torch.save = slow_save
from seqlab.cli import main
sys.exit(main(sys.argv[1:]))
"""

SETTINGS = ["train.threads=1", "train.max_steps=60", "train.valid_every=10", "train.log_every=1",
            "model.dropout=0.3", "train.teacher_forcing=0.8"]  # both RNG streams in use


def _sets(extra=()):
    return [a for item in [*SETTINGS, *extra] for a in ("--set", item)]


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _reference(tiny_config, tmp_path) -> Path:
    out = tmp_path / "straight"
    train(load_config(tiny_config, SETTINGS), out, quiet=True)
    return out


def _same_run(a: Path, b: Path) -> None:
    """Equal weights, progress and validation history, bit for bit."""
    x, y = load_checkpoint(a / "last.pt"), load_checkpoint(b / "last.pt")
    assert x["progress"]["step"] == y["progress"]["step"]
    for name, tensor in x["model"].items():
        torch.testing.assert_close(tensor, y["model"][name], atol=0, rtol=0, msg=name)

    def validations(run):
        lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        return [{k: v for k, v in x.items() if k.startswith("valid_") or k == "step"}
                for x in lines if "valid_loss" in x]

    assert validations(a) == validations(b)
    assert json.loads((a / "results.json").read_text())["test"] == \
        json.loads((b / "results.json").read_text())["test"]


def _wait_for_step(run: Path, step: int, proc, timeout=60.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        log = run / "metrics.jsonl"
        if log.exists() and any(json.loads(x).get("step", 0) >= step
                                for x in log.read_text().splitlines() if x.strip()):
            return
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        time.sleep(0.05)
    raise AssertionError(f"step {step} not reached")


def test_ctrl_c_saves_the_current_step_and_resume_equals_no_interruption(tiny_config, tmp_path):
    reference = _reference(tiny_config, tmp_path)
    out = tmp_path / "interrupted"
    cmd = [sys.executable, "-m", "seqlab", "train", str(tiny_config), "--out", str(out),
           *_sets()]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_env())
    _wait_for_step(out, 13, proc)  # past the validation at step 10, before the one at 20
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    saved = load_checkpoint(out / "last.pt")
    step = saved["progress"]["step"]
    logged = [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()
              if "train_loss" in json.loads(x)]
    # the current step (every step is logged), not the last validation's checkpoint; the
    # signal may land on a validation step (20, 30, ...), where the two are the same
    assert 13 <= step < 60 and step == logged[-1], (step, logged[-3:])
    assert f"stopped at step {step}" in err and "Traceback" not in err
    resume = err.split("resume with:")[1].split()
    assert resume[:2] == ["seqlab", "train"] and "--resume" in resume and str(out) in resume
    code = subprocess.run([sys.executable, "-m", *resume], capture_output=True, text=True,
                          env=_env())
    assert code.returncode == 0, code.stderr[-2000:]
    _same_run(reference, out)


def test_sigterm_exits_143_with_a_resumable_checkpoint(tiny_config, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "seqlab", "train", str(tiny_config), "--out",
                             str(out), *_sets(["train.max_steps=100000"])],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    _wait_for_step(out, 3, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err[-2000:]
    assert load_checkpoint(out / "last.pt")["progress"]["step"] >= 3
    assert "--resume" in err


def test_killed_again_and_again_resumes_to_the_uninterrupted_result(tiny_config, tmp_path):
    """SIGKILL at random steps, and twice in the middle of a checkpoint write; after every
    kill the directory loads and --resume goes on; the end equals the uninterrupted run."""
    reference = _reference(tiny_config, tmp_path)
    out = tmp_path / "killed"
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    rng = random.Random(0)
    plan = ["step", "write", "step", "step", "write", "step"]  # six kills, then run to the end
    resumed = 0
    for how in [*plan, "finish"]:
        saved = load_checkpoint(out / "last.pt")["progress"]["step"] \
            if (out / "last.pt").exists() else 0  # never a damaged last.pt
        resume = ["--resume"] if (out / "last.pt").exists() else []
        resumed += bool(resume)
        proc = subprocess.Popen([sys.executable, str(driver), "train", str(tiny_config), "--out",
                                 str(out), "--quiet", *resume, *_sets()],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=_env())
        if how == "finish":
            _, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, err[-2000:]
            break
        if how == "write":  # the checkpoint of the next validation is half written
            while proc.stdout.readline().strip() != "SAVING":
                assert proc.poll() is None, proc.communicate()[1][-2000:]
            time.sleep(0.05)
        else:  # a random step before the end, between or at validations
            _wait_for_step(out, min(saved + rng.randint(4, 16), 55), proc)
        assert proc.poll() is None, "the run ended before it could be killed"
        proc.kill()
        proc.communicate()
    assert resumed >= 4, f"only {resumed} of the runs resumed a checkpoint"
    assert not list(out.glob(".*.tmp")), "a stale temporary checkpoint was left behind"
    _same_run(reference, out)
