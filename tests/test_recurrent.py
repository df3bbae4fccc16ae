"""Stacked bidirectional layers, both backends, against torch.nn.LSTM / GRU / RNN on padded
batches of mixed lengths; the two backends against each other; padding invariance."""

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from conftest import zero_filled_in_backward
from seqlab.recurrent import Recurrent

B, S, I, H = 4, 6, 5, 3
LENGTHS = torch.tensor([6, 2, 4, 1])
TORCH = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}


def _leaves(state):
    return list(state) if isinstance(state, tuple) else [state]


def _reference(cell, layers, bidirectional, dtype):
    torch.manual_seed(0)
    ref = TORCH[cell](I, H, num_layers=layers, bidirectional=bidirectional,
                      batch_first=True).to(dtype)
    return ref


def _run_reference(ref, x, lengths):
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    out, final = ref(packed)
    out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
    return out, final


@pytest.mark.parametrize("backend", ["cells", "fused"])
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_layer_matches_torch(cell, backend, dtype, tol):
    ref = _reference(cell, 2, True, dtype)
    ours = Recurrent(cell, I, H, num_layers=2, bidirectional=True, backend=backend).to(dtype)
    ours.rnn.load_state_dict(ref.state_dict())
    x = torch.randn(B, S, I, dtype=dtype)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    out1, fin1 = ours(x1, LENGTHS)
    out2, fin2 = _run_reference(ref, x2, LENGTHS)
    assert out1.shape == (B, S, 2 * H)
    torch.testing.assert_close(out1, out2, atol=tol, rtol=tol)
    for a, b in zip(_leaves(fin1), _leaves(fin2), strict=True):
        assert a.shape == (4, B, H)
        torch.testing.assert_close(a, b, atol=tol, rtol=tol)
    w = torch.randn_like(out1)
    loss1 = (out1 * w).sum() + sum(f.sum() for f in _leaves(fin1))
    loss2 = (out2 * w).sum() + sum(f.sum() for f in _leaves(fin2))
    g1 = torch.autograd.grad(loss1, [x1, *ours.parameters()])
    g2 = torch.autograd.grad(loss2, [x2, *ref.parameters()])
    for a, b in zip(g1, g2, strict=True):
        torch.testing.assert_close(a, b, atol=tol, rtol=tol)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_backends_agree_and_share_checkpoints(cell):
    torch.manual_seed(1)
    cells = Recurrent(cell, I, H, num_layers=3, bidirectional=True, backend="cells").double()
    fused = Recurrent(cell, I, H, num_layers=3, bidirectional=True, backend="fused").double()
    fused.load_state_dict(cells.state_dict())  # a checkpoint of one backend loads into the other
    x = torch.randn(B, S, I, dtype=torch.float64)
    h0 = torch.randn(6, B, H, dtype=torch.float64)
    state = (h0, torch.randn_like(h0)) if cell == "lstm" else h0
    o1, f1 = cells(x, LENGTHS, state)
    o2, f2 = fused(x, LENGTHS, state)
    torch.testing.assert_close(o1, o2, atol=1e-10, rtol=1e-10)
    for a, b in zip(_leaves(f1), _leaves(f2), strict=True):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)
    g1 = torch.autograd.grad(o1.sum() + f1[0].sum() if cell == "lstm" else o1.sum() + f1.sum(),
                             list(cells.parameters()))
    g2 = torch.autograd.grad(o2.sum() + f2[0].sum() if cell == "lstm" else o2.sum() + f2.sum(),
                             list(fused.parameters()))
    for a, b in zip(g1, g2, strict=True):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("backend", ["cells", "fused"])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_padding_invariance(cell, backend):
    """Extra padding (longer S, garbage in the pad) changes no real output or final state,
    and each sequence's final state is the one it gets when run alone."""
    torch.manual_seed(2)
    layer = Recurrent(cell, I, H, num_layers=2, bidirectional=True, backend=backend).double()
    x = torch.randn(B, S, I, dtype=torch.float64)
    out, fin = layer(x, LENGTHS)
    padded = torch.cat([x, 100 * torch.randn(B, 5, I, dtype=torch.float64)], dim=1)
    for b in range(B):
        padded[b, LENGTHS[b]:] = 100.0  # garbage where the sequence has ended
    out_p, fin_p = layer(padded, LENGTHS)
    for b in range(B):
        n = LENGTHS[b]
        torch.testing.assert_close(out_p[b, :n], out[b, :n], atol=1e-12, rtol=0)
        assert out_p[b, n:].abs().max() == 0
        alone_out, alone_fin = layer(x[b : b + 1, :n])
        torch.testing.assert_close(alone_out[0], out[b, :n], atol=1e-12, rtol=0)
        for a, c in zip(_leaves(fin_p), _leaves(alone_fin)):
            torch.testing.assert_close(a[:, b], c[:, 0], atol=1e-12, rtol=0)


def test_auto_backend_and_reset_before_gru():
    assert Recurrent("lstm", I, H).backend == "fused"
    assert Recurrent("gru", I, H, reset_after=True).backend == "fused"
    assert Recurrent("gru", I, H, reset_after=False).backend == "cells"
    with pytest.raises(ValueError, match="reset-after"):
        Recurrent("gru", I, H, reset_after=False, backend="fused")
    with pytest.raises(ValueError, match="cell must be one of"):
        Recurrent("tanh", I, H)


def test_reset_before_gru_layer_steps_its_cell():
    """A 1-layer reset-before GRU layer equals stepping seqlab.cells.GRUCell by hand."""
    from seqlab.cells import GRUCell

    torch.manual_seed(3)
    layer = Recurrent("gru", I, H, reset_after=False).double()
    cell = GRUCell(I, H, reset_after=False).double()
    cell.load_state_dict({k.replace("_l0", ""): v for k, v in layer.rnn.state_dict().items()})
    x = torch.randn(B, S, I, dtype=torch.float64)
    out, fin = layer(x)
    h = torch.zeros(B, H, dtype=torch.float64)
    for t in range(S):
        h = cell(x[:, t], h)
        torch.testing.assert_close(out[:, t], h, atol=1e-12, rtol=0)
    torch.testing.assert_close(fin[0], h, atol=1e-12, rtol=0)


@pytest.mark.parametrize("backend", ["cells", "fused"])
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_step_equals_unrolled(cell, backend):
    torch.manual_seed(4)
    layer = Recurrent(cell, I, H, num_layers=2, backend=backend).double()
    x = torch.randn(B, S, I, dtype=torch.float64)
    out, fin = layer(x)
    state = None
    for t in range(S):
        y, state = layer.step(x[:, t], state)
        torch.testing.assert_close(y, out[:, t], atol=1e-12, rtol=0)
    for a, b in zip(_leaves(state), _leaves(fin)):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)


def test_dropout_between_layers_only_in_training():
    torch.manual_seed(5)
    layer = Recurrent("lstm", I, H, num_layers=2, dropout=0.5, backend="cells")
    x = torch.randn(B, S, I)
    layer.eval()
    a, _ = layer(x)
    b, _ = layer(x)
    torch.testing.assert_close(a, b)
    layer.train()
    c, _ = layer(x)
    assert (c - a).abs().max() > 1e-4


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_cells_backward_work_is_linear_in_the_length(cell):
    """Indexing the input products at every step (gx[t]) gave each step's backward a zero
    gradient of the whole (S, B, G*H) tensor to fill and add up: O(S^2). Unbound once, the
    zero-filled elements grow no faster than the steps."""
    torch.manual_seed(0)
    layer = Recurrent(cell, 4, 5, bidirectional=True, backend="cells")

    def filled(S):
        out, _ = layer(torch.randn(3, S, 4, requires_grad=True), torch.tensor([S, S - 1, 2]))
        return zero_filled_in_backward(out.sum())

    f8, f16, f32 = filled(8), filled(16), filled(32)
    assert f32 - f16 <= 2.5 * (f16 - f8) + 100, (f8, f16, f32)  # quadratic: 4x


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_fused_layer_runs_in_float32_under_cpu_autocast(cell):
    """Under CPU bfloat16 autocast the fused layer steps in float32 (faster there, and its
    state is never rounded): the same outputs and final state as without autocast."""
    torch.manual_seed(0)
    layer = Recurrent(cell, 4, 5, bidirectional=True, backend="fused")
    x, lengths = torch.randn(3, 6, 4), torch.tensor([6, 4, 2])
    want_out, want_final = layer(x, lengths)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, final = layer(x, lengths)
    assert out.dtype == torch.float32
    assert torch.equal(out, want_out)
    for got, want in zip(final if cell == "lstm" else [final],
                         want_final if cell == "lstm" else [want_final]):
        assert torch.equal(got, want)
