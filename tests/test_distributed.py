"""Distributed training through PyTorch's own engine: torchrun + DDP (gloo on CPU)."""

import os
import subprocess
import sys

import pytest
import torch
import torch.distributed

from seqlab.checkpoint import load_checkpoint


@pytest.mark.skipif(not torch.distributed.is_available(), reason="no torch.distributed")
def test_torchrun_two_processes_train_one_model(tiny_config, tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "seqlab", "train", str(tiny_config), "--out", str(out), "--quiet",
           "--set", "train.max_steps=6", "--set", "train.valid_every=3",
           "--set", "train.log_every=3"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    state = load_checkpoint(out / "last.pt")
    assert state["progress"]["step"] == 6
    # rank 0 alone writes the logs: one line per log / validation point, not two
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 4  # train at 3 and 6, valid at 3 and 6
