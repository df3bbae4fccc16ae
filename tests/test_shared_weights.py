"""StepLinear: a weight shared across the steps of a loop, its gradient summed over the steps
in one product, against autograd's step-by-step sum (float64, so the two orders agree to
rounding). The decoder's loop with `loop_maps` against its own modules: tests/test_model.py."""

import pytest
import torch
from torch.nn import functional as F

from seqlab.shared_weights import StepLinear

B, I, H, T = 3, 4, 5, 6


def _leaves(dtype=torch.float64):
    g = torch.Generator().manual_seed(0)

    def leaf(*shape):
        return torch.randn(*shape, generator=g, dtype=dtype).requires_grad_()

    return dict(w_in=leaf(H, I), w_rec=leaf(H, H), b=leaf(H), x=leaf(T, B, I), h0=leaf(B, H))


def _loop(p, linear, used=range(T)):
    """h_t = tanh(W_in x_t + W_rec h_{t-1} + b); loss = sum over the used steps of h_t^2 * c_t
    (step t weighted by t + 1, so every step's delta differs)."""
    inp, rec = linear(p["w_in"], None), linear(p["w_rec"], p["b"])
    h, loss = p["h0"], 0.0
    for t in range(T):
        h = torch.tanh(inp(p["x"][t]) + rec(h))
        if t in used:
            loss = loss + (t + 1) * h.square().sum()
    return loss


def _plain(weight, bias):
    return lambda x: F.linear(x, weight, bias)


def _grads(p, linear, **kw):
    loss = _loop(p, linear, **kw)
    return torch.autograd.grad(loss, list(p.values()))


@pytest.mark.parametrize("used", [range(T), [0, 2], [T - 1]])
def test_gradients_equal_autograds_step_by_step_sum(used):
    p = _leaves()
    for got, want in zip(_grads(p, StepLinear, used=used), _grads(p, _plain, used=used)):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_gradcheck():
    p = _leaves()
    names = list(p)
    assert torch.autograd.gradcheck(
        lambda *v: _loop(dict(zip(names, v)), StepLinear), tuple(p.values()))


def test_inputs_with_leading_dimensions():
    g = torch.Generator().manual_seed(1)
    w = torch.randn(H, I, generator=g, dtype=torch.float64, requires_grad=True)
    xs = [torch.randn(B, 2, I, generator=g, dtype=torch.float64) for _ in range(3)]
    linear = StepLinear(w)
    sum(linear(x).sin().sum() for x in xs).backward()
    want, = torch.autograd.grad(sum(F.linear(x, w).sin().sum() for x in xs), w)
    torch.testing.assert_close(w.grad, want, rtol=1e-12, atol=1e-12)


def _states(p, linear):
    inp, rec = linear(p["w_in"], None), linear(p["w_rec"], p["b"])
    h, states = p["h0"], []
    for t in range(T):
        h = torch.tanh(inp(p["x"][t]) + rec(h))
        states.append(h)
    return states


@pytest.mark.parametrize("second", [[0, 1, 2, 3, 4, 5], [1]])
def test_retained_graph_each_backward_sums_its_own_steps(second):
    """Two backward passes through one graph, from losses over different steps: each gives
    the gradient of its own loss (nothing left over from the other pass)."""
    p = _leaves()

    def grads(linear):
        states = _states(p, linear)
        first = torch.autograd.grad(sum(h.sum() for h in states), list(p.values()),
                                    retain_graph=True)
        return first + torch.autograd.grad(sum(states[t].square().sum() for t in second),
                                           list(p.values()))

    for got, want in zip(grads(StepLinear), grads(_plain)):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_shared_weight_used_elsewhere_too():
    """The same leaf through two StepLinears and a plain product: all three parts add up."""
    p = _leaves()
    w = p["w_rec"]

    def run(linear):
        a, b = linear(w, None), linear(w, p["b"])
        h = p["h0"]
        for _ in range(3):
            h = torch.tanh(a(h) + b(h.cos())) + F.linear(h, w).sin()
        return torch.autograd.grad(h.sum(), [w, p["b"], p["h0"]])

    for got, want in zip(run(StepLinear), run(_plain)):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_without_autograd_it_is_f_linear():
    p = _leaves()
    with torch.no_grad():
        linear = StepLinear(p["w_rec"], p["b"])
    assert not linear.shared
    frozen = StepLinear(p["w_rec"].detach(), p["b"].detach())
    assert not frozen.shared
    x = torch.randn(B, H, dtype=torch.float64)
    torch.testing.assert_close(frozen(x), F.linear(x, p["w_rec"], p["b"]))


def test_bfloat16_autocast_like_f_linear():
    """Under CPU autocast: the product in bfloat16, gradients in the leaves' float32, close
    to what autocast's own F.linear gives (both round the same products to bfloat16)."""
    p = _leaves(torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        linear = StepLinear(p["w_rec"], p["b"])
        y = linear(p["h0"])
        assert y.dtype == torch.bfloat16
        got = _grads(p, StepLinear)
        want = _grads(p, _plain)
    for g, w in zip(got, want):
        assert g.dtype == torch.float32
        torch.testing.assert_close(g, w, rtol=2e-2, atol=2e-2 * w.abs().max().item())
