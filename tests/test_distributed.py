"""Distributed training through PyTorch's own engine: torchrun + DDP (gloo on CPU).

One 2-process run of `seqlab train` under a driver that records, on each rank, the example
indices of every training step (a wrapper around the seq2seq problem's `collate`) and the model it
trains, as first built and at the end (a wrapper around its `build_model`). Then:

* both ranks start from and end with the same weights;
* at every step the ranks train on disjoint batches whose union is the two global batches
  the sampler deals out for that step (batches 2k and 2k+1 of the epoch);
* one process replaying the run, each step on the union of both ranks' examples as one
  batch with the mean token loss (total loss / total tokens), ends with the same weights.
"""

import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.distributed
from torch.nn import functional as F

from seqlab.checkpoint import load_checkpoint
from seqlab.config import load_config
from seqlab.data import Example, TokenBatchSampler, collate
from seqlab.model import build_model
from seqlab.vocab import PAD

STEPS = 10  # two epochs of 5 steps here: set_epoch is exercised too
WORLD = 2
# SGD without clipping: the update is linear in the gradient, so a wrongly scaled or weighted
# loss shows in the weights (Adam's normalization and clipping would partly hide it)
SETTINGS = [f"train.max_steps={STEPS}", "train.valid_every=5", "train.log_every=5",
            "model.dropout=0.0", "train.optimizer=sgd", "train.lr=0.5", "train.momentum=0.9",
            "train.clip_norm=null"]

DRIVER = textwrap.dedent('''
    """seqlab train under torchrun, recording what each rank trains on and its model."""
    import os
    import sys

    import torch

    import seqlab.problems.seq2seq as problem
    from seqlab.cli import main

    seen = {"indices": []}
    collate, build_model = problem.collate, problem.build_model


    def recording_build_model(*args, **kwargs):
        seen["module"] = build_model(*args, **kwargs)
        return seen["module"]


    def recording_collate(examples, indices):
        if not seen["indices"]:  # before the first step (and after DDP's broadcast)
            seen["examples"] = [(e.src, e.tgt) for e in examples]
            seen["init"] = {k: v.clone() for k, v in seen["module"].state_dict().items()}
        seen["indices"].append(list(indices))
        return collate(examples, indices)


    problem.collate, problem.build_model = recording_collate, recording_build_model
    code = main(sys.argv[2:])
    seen["final"] = seen.pop("module").state_dict()
    torch.save(seen, os.path.join(sys.argv[1], f"rank{os.environ['RANK']}.pt"))
    sys.exit(code)
''')


CONFIG = """\
data: {{train: {dir}/train, valid: {dir}/valid, src: src, tgt: tgt}}
tokenizer: {{kind: word}}
model: {{cell: gru, embedding_size: 16, hidden_size: 32, attention: general}}
train: {{batch_tokens: 400, valid_samples: 0}}
search: {{batch_size: 40}}
"""


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    """Run once for the module: (config, run dir, [rank 0 record, rank 1 record])."""
    from seqlab.synthetic import make_dataset

    tmp = tmp_path_factory.mktemp("ddp")
    for split, n in (("train", 600), ("valid", 40)):
        pairs = make_dataset("reverse", n, seed=0, split=split)
        (tmp / f"{split}.src").write_text("".join(s + "\n" for s, _ in pairs))
        (tmp / f"{split}.tgt").write_text("".join(t + "\n" for _, t in pairs))
    config = tmp / "tiny.yaml"
    config.write_text(CONFIG.format(dir=tmp))
    (tmp / "driver.py").write_text(DRIVER)
    out = tmp / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           "--nproc_per_node", str(WORLD), str(tmp / "driver.py"), str(tmp),
           "train", str(config), "--out", str(out), "--quiet"]
    cmd += [a for s in SETTINGS for a in ("--set", s)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    records = [torch.load(tmp / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    return load_config(config, SETTINGS), out, records


pytestmark = pytest.mark.skipif(not torch.distributed.is_available(),
                                reason="no torch.distributed")


def test_rank0_alone_logs_and_checkpoints(ddp_run):
    _, out, records = ddp_run
    assert load_checkpoint(out / "last.pt")["progress"]["step"] == STEPS
    assert [len(r["indices"]) for r in records] == [STEPS] * WORLD
    # one line per log / validation point, not one per rank: train and valid at 5 and 10
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 4


def test_ranks_start_and_end_with_identical_weights(ddp_run):
    _, _, (r0, r1) = ddp_run
    for name, tensor in r0["final"].items():
        assert torch.equal(r0["init"][name], r1["init"][name]), name
        assert torch.equal(tensor, r1["final"][name]), name


def _sampler_steps(config, examples: list[Example], steps: int):
    """The global batches of each step: batches 2k, 2k+1 of the single-process sampler's
    epoch (the last odd batch of an epoch is dropped), epochs one after another.
    -> [[batch, batch] per step], the number of epochs they span."""
    sampler = TokenBatchSampler.from_examples(examples, config.train.batch_tokens, shuffle=True,
                                              seed=config.train.seed)
    out, epoch = [], 0
    while len(out) < steps:
        sampler.set_epoch(epoch)
        batches = list(sampler)
        out += [batches[k : k + WORLD] for k in range(0, len(batches) - WORLD + 1, WORLD)]
        epoch += 1
    return out[:steps], epoch


def test_ranks_see_disjoint_batches_that_the_sampler_deals(ddp_run):
    config, _, (r0, r1) = ddp_run
    examples = [Example(src, tgt) for src, tgt in r0["examples"]]
    assert r1["examples"] == r0["examples"]
    expected, epochs = _sampler_steps(config, examples, STEPS)
    assert epochs > 1
    for step, (a, b, want) in enumerate(zip(r0["indices"], r1["indices"], expected)):
        assert a and b and not set(a) & set(b), f"step {step}: ranks share examples"
        assert sorted(a + b) == sorted(want[0] + want[1]), f"step {step}"


def _replay(config, init: dict, examples: list[Example], steps: list[list[int]]) -> dict:
    """One process: each step on all ranks' examples together, loss = total token NLL / total
    tokens; the optimizer and gradient clipping of the config."""
    tc = config.train
    model = build_model(config.model, init["encoder.embed.weight"].shape[0],
                        init["decoder.out.weight"].shape[0])
    model.load_state_dict(init)
    model.train()
    assert tc.optimizer == "sgd" and tc.lr_schedule == "constant"
    assert tc.label_smoothing == 0 and tc.weight_decay == 0
    optimizer = torch.optim.SGD(model.parameters(), lr=tc.lr, momentum=tc.momentum)
    for indices in steps:
        batch = collate(examples, indices)
        logits, _ = model.teacher_forced(batch.src, batch.src_lengths, batch.tgt_in)
        nll = F.cross_entropy(logits.flatten(0, 1), batch.tgt_out.flatten(), ignore_index=PAD,
                              reduction="sum")
        loss = nll / (batch.tgt_out != PAD).sum()
        optimizer.zero_grad()
        loss.backward()
        if tc.clip_norm:
            torch.nn.utils.clip_grad_norm_(model.parameters(), tc.clip_norm)
        optimizer.step()
    return model.state_dict()


def test_two_ranks_equal_one_process_on_the_global_batch(ddp_run):
    config, _, (r0, r1) = ddp_run
    examples = [Example(src, tgt) for src, tgt in r0["examples"]]
    steps = [a + b for a, b in zip(r0["indices"], r1["indices"])]
    replayed = _replay(config, r0["init"], examples, steps)
    worst = max(float((replayed[k] - v).abs().max()) for k, v in r0["final"].items())
    moved = max(float((r0["init"][k] - v).abs().max()) for k, v in r0["final"].items())
    assert moved > 0.1  # the run did change the weights
    assert worst < 2e-5, f"DDP and one process differ by up to {worst:.3g}"


OTHER_PROBLEMS = {
    "classify": "problem: classify\ndata: {synthetic: is_sorted, synthetic_train_size: 400, "
                "synthetic_eval_size: 40}\ntokenizer: {kind: word}\n"
                "model: {embedding_size: 8, hidden_size: 16}\n"
                "train: {batch_tokens: 200, max_steps: 6, valid_every: 3, log_every: 3}\n",
    "lm": "problem: lm\ndata: {synthetic: alphabet, synthetic_train_size: 200, "
          "synthetic_eval_size: 20}\ntokenizer: {kind: char}\n"
          "model: {bidirectional: false, embedding_size: 8, hidden_size: 16}\n"
          "lm: {bptt: 16}\n"
          "train: {batch_tokens: 64, max_steps: 6, valid_every: 3, log_every: 3}\n",
    "tag": "problem: tag\ndata: {synthetic: spacing, synthetic_train_size: 200, "
           "synthetic_eval_size: 20, format: text}\ntag: {crf: true}\n"
           "model: {embedding_size: 8, hidden_size: 16}\n"
           "train: {batch_tokens: 200, max_steps: 6, valid_every: 3, log_every: 3}\n",
}


@pytest.mark.parametrize("problem", sorted(OTHER_PROBLEMS))
def test_other_problems_train_under_torchrun(problem, tmp_path):
    """The one loop under DDP for the classifier, the tagger (with a CRF) and the language
    model (whose carried state and row layout are per rank): two processes train to the end,
    rank 0 alone logs and checkpoints. A smoke test: the DDP arithmetic of the shared loop is
    checked with seq2seq above, the language model's per-rank rows in test_lm.py."""
    config = tmp_path / f"{problem}.yaml"
    config.write_text(OTHER_PROBLEMS[problem])
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           str(WORLD), "-m", "seqlab", "train", str(config), "--out", str(out), "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert load_checkpoint(out / "last.pt")["progress"]["step"] == 6
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 4  # train and valid at steps 3 and 6, once (rank 0)
    assert (out / "results.json").exists()
