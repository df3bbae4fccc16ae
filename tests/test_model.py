"""The seq2seq model: the teacher-forced pass equals the loop of steps, padding changes
nothing, every arrangement runs, and masks keep padding out of attention."""

import itertools

import pytest
import torch

from seqlab.config import ModelConfig
from seqlab.model import build_model
from seqlab.vocab import PAD

V_SRC, V_TGT = 13, 11
ATTENTIONS = ["none", "dot", "scaled_dot", "general", "additive"]


def _model(**kw):
    torch.manual_seed(0)
    cfg = ModelConfig(**{"hidden_size": 8, "embedding_size": 6, "dropout": 0.0, **kw})
    return build_model(cfg, V_SRC, V_TGT).double().eval()


def _batch():
    g = torch.Generator().manual_seed(1)
    lengths = torch.tensor([6, 3, 1, 4])
    src = torch.randint(4, V_SRC, (4, 6), generator=g)
    for b, n in enumerate(lengths):
        src[b, n:] = PAD
    tgt = torch.randint(4, V_TGT, (4, 5), generator=g)
    return src, lengths, tgt


CASES = [dict(attention=a, attention_style=s, input_feeding=f, cell=c)
         for a, s, f, c in itertools.product(ATTENTIONS, ["luong", "bahdanau"], [True, False],
                                              ["gru", "lstm"])
         if not (s == "bahdanau" and f)]


@pytest.mark.parametrize("kw", CASES, ids=lambda kw: "-".join(str(v) for v in kw.values()))
def test_teacher_forced_pass_equals_stepping(kw):
    model = _model(**kw)
    src, lengths, tgt = _batch()
    logits, weights = model(src, lengths, tgt)
    memory = model.encode(src, lengths)
    state = model.init_state(memory)
    for t in range(tgt.shape[1]):
        step_logits, state, w = model.step(tgt[:, t], state, memory)
        torch.testing.assert_close(step_logits, logits[:, t], atol=1e-10, rtol=0)
        if weights is not None:
            torch.testing.assert_close(w, weights[:, t], atol=1e-10, rtol=0)


@pytest.mark.parametrize("attention", ATTENTIONS)
@pytest.mark.parametrize("bridge", ["zero", "last", "learned"])
def test_padding_changes_nothing(attention, bridge):
    """Each sentence scores the same alone as in a padded batch; attention is 0 on padding."""
    model = _model(attention=attention, bridge=bridge, encoder_layers=2, decoder_layers=2)
    src, lengths, tgt = _batch()
    wide = torch.cat([src, torch.full((4, 3), PAD)], 1)  # extra padding columns
    logits, weights = model(wide, lengths, tgt)
    for b in range(4):
        n = int(lengths[b])
        alone, alone_w = model(src[b : b + 1, :n], lengths[b : b + 1], tgt[b : b + 1])
        torch.testing.assert_close(logits[b], alone[0], atol=1e-10, rtol=0)
        if weights is not None:
            assert weights[b, :, n:].abs().max() == 0
            torch.testing.assert_close(weights[b, :, :n], alone_w[0], atol=1e-10, rtol=0)


@pytest.mark.parametrize("kw", [dict(), dict(input_feeding=True), dict(attention="none")],
                         ids=["parallel", "stepped", "plain"])
@pytest.mark.parametrize("teacher_forcing", [1.0, 0.5])
def test_keep_projects_only_the_kept_positions(kw, teacher_forcing):
    model = _model(**{"attention": "general", **kw})
    src, lengths, tgt = _batch()
    keep = torch.rand(tgt.shape, generator=torch.Generator().manual_seed(2)) < 0.6
    full, _ = model(src, lengths, tgt, teacher_forcing, torch.Generator().manual_seed(3))
    kept, _ = model(src, lengths, tgt, teacher_forcing, torch.Generator().manual_seed(3),
                    keep=keep)
    assert kept.shape == (int(keep.sum()), V_TGT)
    torch.testing.assert_close(kept, full[keep], atol=1e-12, rtol=0)


def test_scheduled_sampling_feeds_own_predictions():
    model = _model(attention="general")
    src, lengths, tgt = _batch()
    gold, _ = model(src, lengths, tgt, teacher_forcing=1.0)
    mixed, _ = model(src, lengths, tgt, teacher_forcing=0.0)
    # the first step always sees <sos>; later steps see the model's own argmax
    torch.testing.assert_close(mixed[:, 0], gold[:, 0])
    memory = model.encode(src, lengths)
    state, prev = model.init_state(memory), tgt[:, 0]
    for t in range(tgt.shape[1]):
        logits, state, _ = model.step(prev, state, memory)
        torch.testing.assert_close(logits, mixed[:, t], atol=1e-10, rtol=0)
        prev = logits.argmax(-1)


def test_tied_embeddings_share_the_matrix():
    model = _model(tie_embeddings=True, embedding_size=8)
    assert model.decoder.out.weight is model.decoder.embed.weight


def test_bad_bridge_sizes():
    from seqlab.model import Bridge

    with pytest.raises(ValueError, match="bridge 'last'"):
        Bridge("last", 6, 8, 1, lstm=False)


def test_gradients_reach_every_parameter():
    model = _model(attention="additive", cell="lstm", encoder_layers=2).train()
    src, lengths, tgt = _batch()
    logits, _ = model(src, lengths, tgt)
    logits.sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert missing == []
