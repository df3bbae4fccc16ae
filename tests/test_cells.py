"""Each cell against torch.nn's fused cell with copied weights, the reset-before GRU against
a plain float64 reference of its equation, and gradcheck on every cell."""

import pytest
import torch
from torch import nn

from seqlab.cells import GRUCell, LSTMCell, RNNCell

B, I, H = 5, 7, 6


def pairs():
    yield "rnn-tanh", RNNCell(I, H, "tanh"), nn.RNNCell(I, H, nonlinearity="tanh")
    yield "rnn-relu", RNNCell(I, H, "relu"), nn.RNNCell(I, H, nonlinearity="relu")
    yield "lstm", LSTMCell(I, H), nn.LSTMCell(I, H)
    yield "gru", GRUCell(I, H, reset_after=True), nn.GRUCell(I, H)


def _state(name, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(B, H, generator=g, dtype=dtype, requires_grad=True)
    if name == "lstm":
        return (h, torch.randn(B, H, generator=g, dtype=dtype, requires_grad=True))
    return h


def _leaves(state):
    return list(state) if isinstance(state, tuple) else [state]


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
@pytest.mark.parametrize("name", ["rnn-tanh", "rnn-relu", "lstm", "gru"])
def test_cell_matches_torch(name, dtype, tol):
    torch.manual_seed(1)
    ours, ref = next((o, r) for n, o, r in pairs() if n == name)
    ours.load_state_dict(ref.state_dict())  # the same names, shapes and gate order
    ours, ref = ours.to(dtype), ref.to(dtype)
    x = torch.randn(B, I, dtype=dtype, requires_grad=True)
    s1, s2 = _state(name, dtype), _state(name, dtype)
    out1, out2 = _leaves(ours(x, s1)), _leaves(ref(x, s2))
    for a, b in zip(out1, out2, strict=True):
        torch.testing.assert_close(a, b, atol=tol, rtol=tol)
    # gradients of an arbitrary scalar wrt input, state and every parameter
    w = [torch.randn_like(o) for o in out1]
    g1 = torch.autograd.grad(sum((o * v).sum() for o, v in zip(out1, w)),
                             [x, *_leaves(s1), *ours.parameters()])
    g2 = torch.autograd.grad(sum((o * v).sum() for o, v in zip(out2, w)),
                             [x, *_leaves(s2), *ref.parameters()])
    for a, b in zip(g1, g2, strict=True):
        torch.testing.assert_close(a, b, atol=tol, rtol=tol)


def test_default_state_is_zero():
    cell = LSTMCell(I, H)
    x = torch.randn(B, I)
    zero = (torch.zeros(B, H), torch.zeros(B, H))
    for a, b in zip(cell(x), cell(x, zero)):
        torch.testing.assert_close(a, b)


def gru_reset_before_reference(x, h, w_ih, w_hh, b_ih, b_hh):
    """Cho et al. 2014, written out gate by gate in float64:
    r = s(W_ir x + b_ir + W_hr h + b_hr); z = s(W_iz x + b_iz + W_hz h + b_hz)
    g = tanh(W_ig x + b_ig + W_hg (r*h) + b_hg); h' = z*h + (1-z)*g"""
    W_ir, W_iz, W_ig = w_ih.chunk(3)
    W_hr, W_hz, W_hg = w_hh.chunk(3)
    b_ir, b_iz, b_ig = b_ih.chunk(3)
    b_hr, b_hz, b_hg = b_hh.chunk(3)
    r = torch.sigmoid(x @ W_ir.T + b_ir + h @ W_hr.T + b_hr)
    z = torch.sigmoid(x @ W_iz.T + b_iz + h @ W_hz.T + b_hz)
    g = torch.tanh(x @ W_ig.T + b_ig + (r * h) @ W_hg.T + b_hg)
    return z * h + (1 - z) * g


def test_gru_reset_before_matches_its_equation():
    torch.manual_seed(2)
    cell = GRUCell(I, H, reset_after=False).double()
    x, h = torch.randn(B, I, dtype=torch.float64), torch.randn(B, H, dtype=torch.float64)
    expected = gru_reset_before_reference(x, h, cell.weight_ih, cell.weight_hh,
                                          cell.bias_ih, cell.bias_hh)
    torch.testing.assert_close(cell(x, h), expected, atol=1e-12, rtol=1e-12)
    # and it is really a different function from the reset-after form
    after = GRUCell(I, H, reset_after=True).double()
    after.load_state_dict(cell.state_dict())
    assert (after(x, h) - cell(x, h)).abs().max() > 1e-3


@pytest.mark.parametrize("make", [
    lambda: RNNCell(3, 4, "tanh"), lambda: RNNCell(3, 4, "relu"), lambda: LSTMCell(3, 4),
    lambda: GRUCell(3, 4, reset_after=True), lambda: GRUCell(3, 4, reset_after=False),
])
def test_gradcheck(make):
    torch.manual_seed(3)
    cell = make().double()
    x = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    h = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
    c = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
    params = list(cell.parameters())
    inputs = (x, h, c, *[p.detach().clone().requires_grad_() for p in params])
    # functional_call routes gradcheck's perturbed parameters through the module
    names = [n for n, _ in cell.named_parameters()]

    def g(x, h, c, *ps):
        p = dict(zip(names, ps))
        state = (h, c) if isinstance(cell, LSTMCell) else h
        return torch.func.functional_call(cell, p, (x, state))

    assert torch.autograd.gradcheck(g, inputs)


def test_bad_nonlinearity():
    with pytest.raises(ValueError, match="tanh"):
        RNNCell(3, 4, "sigmoid")
