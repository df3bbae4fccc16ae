"""Training: a resumed run equals an uninterrupted one, a tiny model overfits a small set,
every attention variant learns to reverse, checkpoints are atomic and never run code."""

import pickle

import pytest
import torch

from seqlab.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from seqlab.config import config_from_dict
from seqlab.data import ParallelText, collate, encode_pairs
from seqlab.synthetic import make_dataset
from seqlab.train import clip_gradients, train
from seqlab.translate import Translator


def _task_config(**sections):
    raw = {
        "data": {"synthetic": "reverse", "synthetic_train_size": 1500, "synthetic_eval_size": 100},
        "tokenizer": {"kind": "word"},
        "model": {"embedding_size": 16, "hidden_size": 48, "dropout": 0.0},
        "train": {"batch_tokens": 600, "lr": 0.01, "max_steps": 300, "max_epochs": 1000,
                  "log_every": 50,
                  "valid_every": 100, "early_stopping_metric": "exact_match",
                  "valid_samples": 0},
        "search": {"batch_size": 100},
    }
    for name, values in sections.items():
        raw[name].update(values)
    return config_from_dict(raw)


def test_resume_continues_the_same_run(tmp_path):
    cfg = _task_config(train={"max_steps": 24, "valid_every": 8, "log_every": 4,
                              "teacher_forcing": 0.7},  # exercises the sampling RNG
                       model={"dropout": 0.3})  # and the dropout RNG
    train(cfg, tmp_path / "straight", quiet=True)
    half = _task_config(train={"max_steps": 16, "valid_every": 8, "log_every": 4,
                               "teacher_forcing": 0.7}, model={"dropout": 0.3})
    train(half, tmp_path / "resumed", quiet=True)
    train(cfg, tmp_path / "resumed", resume=True, quiet=True)
    a = load_checkpoint(tmp_path / "straight" / "last.pt")
    b = load_checkpoint(tmp_path / "resumed" / "last.pt")
    assert a["progress"]["step"] == b["progress"]["step"] == 24
    for name, tensor in a["model"].items():
        torch.testing.assert_close(tensor, b["model"][name], atol=0, rtol=0, msg=name)


def test_tiny_model_overfits_a_small_set(tmp_path):
    """30 pairs, trained on and scored on the same pairs: it must learn them by heart.
    Measured over train.seed 1-6 x {AVX-512, avx2}: exact match 1.0, loss 0.0003-0.0005."""
    cfg = _task_config(data={"synthetic_train_size": 30},
                       train={"max_steps": 250, "batch_tokens": 400, "valid_every": 250})
    train(cfg, tmp_path / "run", quiet=True)
    pairs = make_dataset("reverse", 30, seed=cfg.train.seed, split="train")
    translator = Translator.from_checkpoint(tmp_path / "run" / "last.pt")
    result = translator.evaluate([s for s, _ in pairs], [t for _, t in pairs])
    assert result["exact_match"] == 1.0
    assert result["loss"] < 0.05


def _mirror_alignment(checkpoint, pairs) -> float:
    """Reverse: target token t (of n) is source token n-1-t. The fraction of target tokens
    whose teacher-forced attention (B, T, S) peaks on that source token."""
    translator = Translator.from_checkpoint(checkpoint, device="cpu")
    c = translator.codec
    text = ParallelText(src=[s for s, _ in pairs], tgt=[t for _, t in pairs], skipped_empty=0,
                        source="test")
    examples, _ = encode_pairs(text, c.src_tokenizer, c.tgt_tokenizer, c.src_vocab, c.tgt_vocab)
    batch = collate(examples, range(len(examples)))
    with torch.no_grad():
        _, weights = translator.model.teacher_forced(batch.src, batch.src_lengths,
                                                     batch.tgt_in)  # (B, T, S)
    n = batch.src_lengths[:, None] - 1  # (B, 1) source tokens without EOS = target tokens
    t = torch.arange(weights.shape[1])[None, :]  # (1, T)
    mirrored = (n - 1 - t).clamp(min=0)  # (B, T)
    return float((weights.argmax(-1) == mirrored)[t < n].float().mean())


@pytest.mark.parametrize("attention,style", [
    ("dot", "luong"), ("scaled_dot", "luong"), ("general", "luong"), ("additive", "luong"),
    ("additive", "bahdanau"),
])
def test_every_attention_variant_learns_to_reverse(tmp_path, attention, style):
    """Learned, and learned through attention. Measured (issue 9) over train.seed 1-6 x
    {AVX-512, ATEN_CPU_CAPABILITY=avx2}: test exact match 0.85-1.00 and the attention peak on
    the mirrored source token for 0.67-1.00 of target tokens (re-measured with the fused
    Adam, output layer and loss: 0.89-1.00 and 0.67-1.00; with StepLinear in the decoder's
    loop: 0.86-1.00 and 0.67-1.00; with the loss's gradient in its forward pass and the
    bucketed products: 0.86-1.00 and 0.67-1.00; with the decoder's gold input product out of
    its loop: 0.89-1.00 and 0.67-1.00). With attention broken to uniform
    weights, exact match is still 0.55-0.71 (the encoder state carries short sequences), but
    the peak is on the mirrored token for 0.19 (ties: the first token). Thresholds sit
    between: exact match >= 0.7 (it learned), alignment >= 0.45 (by attention)."""
    cfg = _task_config(model={"attention": attention, "attention_style": style})
    result = train(cfg, tmp_path / "run", quiet=True)
    assert result["test"]["exact_match"] >= 0.7, result["test"]
    pairs = make_dataset("reverse", cfg.data.synthetic_eval_size, seed=cfg.train.seed, split="test")
    alignment = _mirror_alignment(tmp_path / "run" / "best.pt", pairs)
    assert alignment >= 0.45, alignment


def test_plain_seq2seq_learns_to_copy_short_sequences(tmp_path):
    """Measured over train.seed 1-6 x {AVX-512, avx2}: test exact match 0.66-0.80 (0.61-0.79
    re-measured with the fused Adam, output layer and loss; 0.62-0.79 with StepLinear; 0.62-0.80
    with the loss's gradient in its forward pass; 0.62-0.80 with the decoder's gold input
    product out of its loop)."""
    cfg = _task_config(data={"synthetic": "copy"}, model={"attention": "none"},
                       train={"max_steps": 400})
    result = train(cfg, tmp_path / "run", quiet=True)
    assert result["test"]["exact_match"] >= 0.45, result["test"]


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint({"model": {"w": torch.ones(3)}}, path)

    def killed(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise KeyboardInterrupt  # the process is killed mid-write

    monkeypatch.setattr(torch, "save", killed)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({"model": {"w": torch.zeros(3)}}, path)
    monkeypatch.undo()
    torch.testing.assert_close(load_checkpoint(path)["model"]["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temp file left


class _Evil:
    def __reduce__(self):
        return (print, ("code ran",))


def test_loading_never_runs_pickled_code(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"format_version": 1, "x": _Evil()}, f, protocol=2)
    with pytest.raises(CheckpointError, match="evil.pt"):
        load_checkpoint(path)
    assert "code ran" not in capsys.readouterr().out


@pytest.mark.parametrize("scale", [0.3, 0.999, 1.7, 40.0])
@pytest.mark.parametrize("max_norm", [2.0, None])
def test_clip_gradients_equals_torch_clip_grad_norm(scale, max_norm):
    """clip_gradients skips the multiplication by a factor of 1 that torch always makes;
    gradients and norm as torch.nn.utils.clip_grad_norm_ gives them, either side of the
    limit (scale: the gradient norm in multiples of 2.0), and with no limit."""
    g = torch.Generator().manual_seed(0)
    grads = [torch.randn(5, 3, generator=g), torch.randn(7, generator=g)]
    norm = torch.cat([x.flatten() for x in grads]).norm()
    grads = [x * (scale * 2.0 / norm) for x in grads]
    ours = [torch.nn.Parameter(torch.zeros_like(x)) for x in grads] + [torch.nn.Parameter(
        torch.zeros(2))]  # a parameter without a gradient
    theirs = [torch.nn.Parameter(torch.zeros_like(p)) for p in ours]
    for p, q, x in zip(ours, theirs, grads):
        p.grad, q.grad = x.clone(), x.clone()
    got = clip_gradients(ours, max_norm)
    want = torch.nn.utils.clip_grad_norm_(theirs, max_norm or float("inf"))
    torch.testing.assert_close(got, want)
    for p, q in zip(ours, theirs):
        if q.grad is None:
            assert p.grad is None
        else:
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-6, atol=0)
    clipped = max_norm is not None and scale > 1
    assert clipped == (torch.cat([p.grad.flatten() for p in ours[:2]]).norm() < got * 0.99)
