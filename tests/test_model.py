"""The seq2seq model against references written here from the equations in seqlab.model's
docstring (bridge, attentional vector, input feeding, Bahdanau order, encoder final state);
padding changes nothing, every arrangement runs, masks keep padding out of attention."""

import pytest
import torch

from conftest import zero_filled_in_backward
from seqlab import attention as A
from seqlab.config import ModelConfig
from seqlab.model import build_model
from seqlab.vocab import PAD

V_SRC, V_TGT = 13, 11
H = 8  # decoder state size = encoder output size M (two directions of H // 2)
ATTENTIONS = ["none", "dot", "scaled_dot", "general", "additive"]


def _model(**kw):
    torch.manual_seed(0)
    cfg = ModelConfig(**{"hidden_size": H, "embedding_size": 6, "dropout": 0.0, **kw})
    return build_model(cfg, V_SRC, V_TGT).double().eval(), cfg


def _batch():
    g = torch.Generator().manual_seed(1)
    lengths = torch.tensor([6, 3, 1, 4])
    src = torch.randint(4, V_SRC, (4, 6), generator=g)
    for b, n in enumerate(lengths):
        src[b, n:] = PAD
    tgt = torch.randint(4, V_TGT, (4, 5), generator=g)
    return src, lengths, tgt


# ---------------------------------------------------------------------------------------------
# References, from the equations (plain torch; no call into seqlab.model)


def _ref_encode(encoder, src, lengths):
    """Each sentence alone through the torch.nn.GRU / LSTM that holds the encoder's weights.

    -> states (B, S, M) zero at padding, mask (B, S), final (B, M) [or (h, c)]: the TOP layer's
    forward state at the last real position beside its backward state at position 0.
    """
    rnn, B, S = encoder.rnn.rnn, *src.shape
    d = rnn.hidden_size
    states = torch.zeros(B, S, 2 * d, dtype=torch.float64)
    final_h, final_c = [], []
    for b, n in enumerate(lengths.tolist()):
        out, fin = rnn(encoder.embed.weight[src[b : b + 1, :n]])  # out (1, n, 2d)
        states[b, :n] = out[0]
        final_h.append(torch.cat([out[0, n - 1, :d], out[0, 0, d:]]))
        if isinstance(fin, tuple):  # torch layout (L*2, 1, d): the top layer is rows -2, -1
            final_c.append(torch.cat([fin[1][-2, 0], fin[1][-1, 0]]))
    final = torch.stack(final_h)
    return states, src != PAD, (final, torch.stack(final_c)) if final_c else final


def _ref_bridge(kind, linear, final, layers):
    """(B, M) -> list of L (B, H): zero 0; last h_enc; learned tanh(W_l h_enc + b_l), W_l the
    l-th block of H rows of W."""
    if kind == "zero":
        return [torch.zeros(final.shape[0], H, dtype=final.dtype)] * layers
    if kind == "last":
        return [final] * layers
    W, b = linear.weight, linear.bias
    return [torch.tanh(final @ W[l * H : (l + 1) * H].T + b[l * H : (l + 1) * H])
            for l in range(layers)]


def _ref_attend(att, query, states, mask):
    """c = sum_j softmax_j(score(query, h_j)) h_j over the real positions j."""
    if att.kind in ("dot", "scaled_dot"):
        scores = getattr(A, att.kind)(query, states)
    elif att.kind == "general":
        scores = A.general(query, states @ att.key_proj.weight.T)
    else:
        scores = A.additive(query, states @ att.key_proj.weight.T, att.query_proj.weight, att.v)
    weights = torch.softmax(scores.masked_fill(~mask, float("-inf")), -1)  # (B, S)
    return torch.einsum("bs,bsm->bm", weights, states), weights


def _ref_cells(rnn, lstm):
    """One torch.nn.GRUCell / LSTMCell per layer with the decoder's weights."""
    cells = []
    for k in range(rnn.num_layers):
        w = {name: getattr(rnn, f"{name}_l{k}")
             for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
        cell = (torch.nn.LSTMCell if lstm else torch.nn.GRUCell)(w["weight_ih"].shape[1], H)
        cell.load_state_dict(w)
        cells.append(cell.double())
    return cells


def _ref_rnn_step(cells, x, hidden):
    """Stacked cells, one step: hidden is a list of (B, H) [or (h, c)] per layer."""
    new = []
    for cell, state in zip(cells, hidden):
        state = cell(x, state)
        new.append(state)
        x = state[0] if isinstance(state, tuple) else state
    return x, new


def reference(model, cfg, src, lengths, tgt):
    """Teacher-forced logits (B, T, V) and attention weights (B, T, S) | None:

        luong:     s_t = RNN([y_{t-1}; a_{t-1}], s_{t-1}) (a_0 = 0; a only with input feeding),
                   c_t = attend(s_t)
        bahdanau:  c_t = attend(s_{t-1}), s_t = RNN([y_{t-1}; c_t], s_{t-1})
        none:      c = encoder final h, s_t = RNN([y_{t-1}; c], s_{t-1})
        a_t = tanh(W_c [s_t; c_t] + b_c),  logits_t = W_o a_t + b_o
    """
    dec, lstm = model.decoder, cfg.cell == "lstm"
    states, mask, final = _ref_encode(model.encoder, src, lengths)
    final_h = final[0] if lstm else final
    L = cfg.decoder_layers
    hidden = _ref_bridge(cfg.bridge, getattr(model.bridge, "h", None), final_h, L)
    if lstm:
        cs = _ref_bridge(cfg.bridge, getattr(model.bridge, "c", None), final[1], L)
        hidden = list(zip(hidden, cs))
    cells = _ref_cells(dec.rnn.rnn, lstm)
    feed = torch.zeros(src.shape[0], H, dtype=torch.float64)
    logits, weights = [], []
    for t in range(tgt.shape[1]):
        y = dec.embed.weight[tgt[:, t]]
        s_prev = hidden[-1][0] if lstm else hidden[-1]
        if cfg.attention == "none":
            c, x = final_h, torch.cat([y, final_h], -1)
        elif cfg.attention_style == "bahdanau":
            c, w = _ref_attend(dec.attention, s_prev, states, mask)
            x = torch.cat([y, c], -1)
        else:
            x = torch.cat([y, feed], -1) if cfg.input_feeding else y
        s, hidden = _ref_rnn_step(cells, x, hidden)
        if cfg.attention != "none" and cfg.attention_style == "luong":
            c, w = _ref_attend(dec.attention, s, states, mask)
        feed = torch.tanh(torch.cat([s, c], -1) @ dec.combine.weight.T + dec.combine.bias)
        logits.append(feed @ dec.out.weight.T + dec.out.bias)
        if cfg.attention != "none":
            weights.append(w)
    return torch.stack(logits, 1), torch.stack(weights, 1) if weights else None


def _close(actual, expected, what):
    torch.testing.assert_close(actual, expected, atol=1e-10, rtol=0, msg=what)


def _check_against_reference(model, cfg):
    """The batched teacher-forced pass and the loop of model.step both equal the reference."""
    src, lengths, tgt = _batch()
    want, want_weights = reference(model, cfg, src, lengths, tgt)
    logits, weights = model.teacher_forced(src, lengths, tgt)
    _close(logits, want, "teacher-forced logits")
    if want_weights is None:
        assert weights is None
    else:
        _close(weights, want_weights, "teacher-forced attention weights")
    memory = model.encode(src, lengths)
    state = model.init_state(memory)
    for t in range(tgt.shape[1]):
        step_logits, state, w = model.step(tgt[:, t], state, memory)
        _close(step_logits, want[:, t], f"model.step logits at t={t}")
        if want_weights is not None:
            _close(w, want_weights[:, t], f"model.step attention at t={t}")


ARRANGEMENTS = [dict(attention="none", cell=c) for c in ("gru", "lstm")] + [
    dict(attention=a, attention_style=s, input_feeding=f, cell=c)
    for a in ATTENTIONS[1:]
    for s, f in (("luong", True), ("luong", False), ("bahdanau", False))
    for c in ("gru", "lstm")
]


@pytest.mark.parametrize("kw", ARRANGEMENTS, ids=lambda kw: "-".join(str(v) for v in kw.values()))
def test_decoder_follows_its_equations(kw):
    """2-layer bi encoder, learned bridge, 2-layer decoder: every arrangement of the docstring."""
    model, cfg = _model(encoder_layers=2, decoder_layers=2, bridge="learned", **kw)
    _check_against_reference(model, cfg)


BRIDGES = [("zero", "gru"), ("last", "gru"), ("learned", "gru"), ("learned", "lstm"),
           ("zero", "lstm"), ("last", "lstm")]

@pytest.mark.parametrize("bridge, cell", BRIDGES)
def test_bridge_follows_its_equation(bridge, cell):
    model, cfg = _model(encoder_layers=2, decoder_layers=2, bridge=bridge, cell=cell,
                        attention="general", input_feeding=True)
    _check_against_reference(model, cfg)
    memory = model.encode(*_batch()[:2])
    final = memory.final[0] if cell == "lstm" else memory.final
    first = model.init_state(memory).hidden
    first = first[0] if cell == "lstm" else first
    if bridge == "learned":  # s_0 = tanh(W h_enc + b), layer l from rows l*H..(l+1)*H of W
        W, b = model.bridge.h.weight, model.bridge.h.bias
        for layer in range(2):
            rows = slice(layer * H, (layer + 1) * H)
            _close(first[layer], torch.tanh(final @ W[rows].T + b[rows]), f"layer {layer}")


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_encoder_final_is_the_top_layer_of_both_directions(cell):
    """final = [forward state at the last real position; backward state at position 0] of the
    top layer (whose outputs are memory.states), and the LSTM cell state likewise."""
    model, cfg = _model(encoder_layers=2, cell=cell)
    src, lengths, _ = _batch()
    memory = model.encode(src, lengths)
    states, mask, final = _ref_encode(model.encoder, src, lengths)
    _close(memory.states, states, "encoder states")
    assert torch.equal(memory.mask, mask)
    d = H // 2
    h = memory.final[0] if cell == "lstm" else memory.final
    for b, n in enumerate(lengths.tolist()):
        _close(h[b, :d], memory.states[b, n - 1, :d], f"forward final, sentence {b}")
        _close(h[b, d:], memory.states[b, 0, d:], f"backward final, sentence {b}")
    if cell == "lstm":
        _close(memory.final[1], final[1], "LSTM cell state")
    else:
        _close(memory.final, final, "final")


@pytest.mark.parametrize("attention", ATTENTIONS)
@pytest.mark.parametrize("bridge", ["zero", "last", "learned"])
def test_padding_changes_nothing(attention, bridge):
    """Each sentence scores the same alone as in a padded batch; attention is 0 on padding."""
    model, _ = _model(attention=attention, bridge=bridge, encoder_layers=2, decoder_layers=2)
    src, lengths, tgt = _batch()
    wide = torch.cat([src, torch.full((4, 3), PAD)], 1)  # extra padding columns
    logits, weights = model.teacher_forced(wide, lengths, tgt)
    for b in range(4):
        n = int(lengths[b])
        alone, alone_w = model.teacher_forced(src[b : b + 1, :n], lengths[b : b + 1],
                                              tgt[b : b + 1])
        torch.testing.assert_close(logits[b], alone[0], atol=1e-10, rtol=0)
        if weights is not None:
            assert weights[b, :, n:].abs().max() == 0
            torch.testing.assert_close(weights[b, :, :n], alone_w[0], atol=1e-10, rtol=0)


@pytest.mark.parametrize("kw", [dict(), dict(input_feeding=True), dict(attention="none")],
                         ids=["parallel", "stepped", "plain"])
@pytest.mark.parametrize("teacher_forcing", [1.0, 0.5])
def test_keep_projects_only_the_kept_positions(kw, teacher_forcing):
    model, _ = _model(**{"attention": "general", **kw})
    src, lengths, tgt = _batch()
    keep = torch.rand(tgt.shape, generator=torch.Generator().manual_seed(2)) < 0.6
    full, _ = model.teacher_forced(src, lengths, tgt, teacher_forcing,
                                   torch.Generator().manual_seed(3))
    kept, _ = model.teacher_forced(src, lengths, tgt, teacher_forcing,
                                   torch.Generator().manual_seed(3), keep=keep)
    assert kept.shape == (int(keep.sum()), V_TGT)
    torch.testing.assert_close(kept, full[keep], atol=1e-12, rtol=0)


def test_scheduled_sampling_feeds_own_predictions():
    model, _ = _model(attention="general")
    src, lengths, tgt = _batch()
    gold, _ = model.teacher_forced(src, lengths, tgt, teacher_forcing=1.0)
    mixed, _ = model.teacher_forced(src, lengths, tgt, teacher_forcing=0.0)
    # the first step always sees <sos>; later steps see the model's own argmax
    torch.testing.assert_close(mixed[:, 0], gold[:, 0])
    memory = model.encode(src, lengths)
    state, prev = model.init_state(memory), tgt[:, 0]
    for t in range(tgt.shape[1]):
        logits, state, _ = model.step(prev, state, memory)
        torch.testing.assert_close(logits, mixed[:, t], atol=1e-10, rtol=0)
        prev = logits.argmax(-1)


def test_tied_embeddings_share_the_matrix():
    model, _ = _model(tie_embeddings=True, embedding_size=8)
    assert model.decoder.out.weight is model.decoder.embed.weight


def test_bad_bridge_sizes():
    from seqlab.model import Bridge

    with pytest.raises(ValueError, match="bridge 'last'"):
        Bridge("last", 6, 8, 1, lstm=False)


def test_gradients_reach_every_parameter():
    model = _model(attention="additive", cell="lstm", encoder_layers=2)[0].train()
    src, lengths, tgt = _batch()
    logits, _ = model.teacher_forced(src, lengths, tgt)
    logits.sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert missing == []


def _copied_out(memory, index):
    """The reference for Memory.index_select: every decoder row gets its own copy."""
    from seqlab.model import Memory

    def rows(x):
        return None if x is None else x.index_select(0, index)

    final = tuple(map(rows, memory.final)) if isinstance(memory.final, tuple) \
        else rows(memory.final)
    return Memory(rows(memory.states), rows(memory.keys), rows(memory.source_mask), final)


@pytest.mark.parametrize("kw", [dict(attention="additive"), dict(attention="dot", cell="lstm"),
                                dict(attention="general", attention_style="bahdanau"),
                                dict(attention="additive", input_feeding=True),
                                dict(attention="none", bridge="last")],
                         ids=["additive", "dot-lstm", "bahdanau", "feeding", "plain"])
def test_beam_rows_share_one_copy_of_each_source(kw):
    """A beam's K rows of a sentence read one stored copy of its source (Memory.copies = K)
    and step exactly as if each row had its own copy: after the expansion, after reordering
    within the blocks, after dropping a finished sentence, and after an index that breaks
    the blocks (which copies the rows out)."""
    model, _ = _model(**kw)
    src, lengths, _ = _batch()
    memory = model.encode(src, lengths)
    K = 3
    expand = torch.arange(4).repeat_interleave(K)
    shared, copied = memory.index_select(expand), _copied_out(memory, expand)
    assert shared.copies == K and shared.states.size(0) == 4  # nothing copied per row
    assert torch.equal(shared.mask, copied.mask)
    state_s, state_c = model.init_state(shared), model.init_state(copied)
    g = torch.Generator().manual_seed(4)
    drop_sentence_1 = torch.cat([torch.arange(0, K), torch.arange(2 * K, 4 * K)])
    for t, index in enumerate([None, None, drop_sentence_1, None, torch.tensor([0, 1, 4, 8])]):
        if index is not None:
            shared, copied = shared.index_select(index), _copied_out(copied, index)
            state_s, state_c = state_s.index_select(index), state_c.index_select(index)
        N = shared.mask.size(0)
        prev = torch.randint(4, V_TGT, (N,), generator=g)
        logits_s, state_s, w_s = model.step(prev, state_s, shared)
        logits_c, state_c, w_c = model.step(prev, state_c, copied)
        torch.testing.assert_close(logits_s, logits_c, atol=1e-12, rtol=0)
        if w_c is not None:
            torch.testing.assert_close(w_s, w_c, atol=1e-12, rtol=0)
        within_blocks = (torch.arange(N) // K * K + torch.randint(K, (N,), generator=g)
                         if shared.copies == K else torch.arange(N))
        state_s, state_c = state_s.index_select(within_blocks), \
            state_c.index_select(within_blocks)
        if t == 2:
            assert shared.copies == K and shared.states.size(0) == 3
    assert shared.copies == 1 and shared.states.size(0) == 4  # the blocks broke: rows copied


def _loop_gradients(model, teacher_forcing):
    """Every parameter's gradient of the training loss, one target row padded."""
    src, lengths, tgt = _batch()
    tgt[1, 3:] = PAD
    model.zero_grad(set_to_none=True)
    _, loss = model(src, lengths, tgt[:, :-1], tgt[:, 1:], teacher_forcing=teacher_forcing,
                    generator=torch.Generator().manual_seed(2))
    loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("kw", [
    dict(cell="gru"),
    dict(cell="lstm", decoder_layers=2, attention="general"),
    dict(cell="rnn", attention_style="bahdanau"),
    dict(cell="gru", backend="cells", gru_reset_after=False, attention="dot"),
    dict(cell="gru", attention="none", tie_embeddings=True, embedding_size=8),
    dict(cell="lstm", attention="scaled_dot", decoder_layers=2, backend="cells"),
])
@pytest.mark.parametrize("teacher_forcing", [1.0, 0.5])
def test_decoder_loop_gradients_equal_the_modules(kw, teacher_forcing, monkeypatch):
    """The teacher-forced loop's `loop_maps` (StepLinears: each weight's gradient one product
    over the steps, seqlab.shared_weights) against the same loop through its own modules."""
    model, _ = _model(input_feeding=True, **kw)
    got = _loop_gradients(model, teacher_forcing)
    monkeypatch.setattr(model.decoder, "loop_maps",
                        lambda projects_steps, embedded_product=False:
                        model.decoder.step_maps())
    want = _loop_gradients(model, teacher_forcing)
    assert got.keys() == want.keys()
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-10, atol=1e-12, msg=name)


@pytest.mark.parametrize("teacher_forcing", [1.0, 0.5])
def test_decoder_loop_shares_the_output_layer_only_when_its_steps_use_it(teacher_forcing,
                                                                         monkeypatch):
    """A StepLinear casts its weight when it is made (a (V, H) copy per pass under autocast):
    with gold inputs the loop never applies the output layer (the loss projects once after
    it), so no StepLinear is made for it; scheduled sampling projects at every step."""
    import seqlab.model as model_module

    model, _ = _model(input_feeding=True)
    src, lengths, tgt = _batch()
    shared = []

    class Recording(model_module.StepLinear):
        def __init__(self, weight, bias=None):
            shared.append(weight)
            super().__init__(weight, bias)

    monkeypatch.setattr(model_module, "StepLinear", Recording)
    model.train()
    _, loss = model(src, lengths, tgt[:, :-1], tgt[:, 1:], teacher_forcing=teacher_forcing,
                    generator=torch.Generator().manual_seed(0))
    loss.backward()
    out_shared = any(w is model.decoder.out.weight for w in shared)
    assert out_shared == (teacher_forcing < 1)
    assert any(w is model.decoder.combine.weight for w in shared)


def test_decoder_loop_backward_work_is_linear_in_the_target_length():
    """The gold embeddings (B, T, E) are unbound once: indexing them at every step (gold[:, t])
    gave each step's backward a zero (B, T, E) gradient to fill and add up, O(T^2)."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(hidden_size=16, embedding_size=8, attention="additive",
                                    input_feeding=True, dropout=0.0), 30, 30).train()

    def filled(T):
        src, tgt = torch.randint(4, 30, (5, 7)), torch.randint(4, 30, (5, T + 1))
        _, loss = model(src, torch.tensor([7, 6, 5, 3, 2]), tgt[:, :-1], tgt[:, 1:])
        return zero_filled_in_backward(loss)

    f8, f16, f32 = filled(8), filled(16), filled(32)
    assert f32 - f16 <= 2.5 * (f16 - f8), (f8, f16, f32)  # linear: 2x, quadratic: 4x
