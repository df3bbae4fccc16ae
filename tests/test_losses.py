"""The output layer and its cross-entropy in one step (seqlab.losses): against torch's own
F.cross_entropy(F.linear(...)) in float32 and under bfloat16 autocast, gradients by gradcheck
in float64, across chunks of rows."""

import pytest
import torch
from torch.nn import functional as F

from seqlab import softmax
from seqlab.losses import linear_cross_entropy


def _problem(n=7, h=5, v=11, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, h, generator=g, dtype=dtype, requires_grad=True)
    weight = torch.randn(v, h, generator=g, dtype=dtype, requires_grad=True)
    bias = torch.randn(v, generator=g, dtype=dtype, requires_grad=True)
    targets = torch.randint(0, v, (n,), generator=g)
    return a, weight, bias, targets


@pytest.mark.parametrize("rows_per_chunk", [1, 3, 1000], ids=["row-by-row", "uneven", "one"])
@pytest.mark.parametrize("eps", [0.0, 0.2])
@pytest.mark.parametrize("with_bias", [True, False])
def test_gradients_by_gradcheck(monkeypatch, rows_per_chunk, eps, with_bias):
    a, weight, bias, targets = _problem(dtype=torch.float64)
    monkeypatch.setattr(softmax, "LSE_CHUNK_ELEMENTS", rows_per_chunk * weight.shape[0])
    inputs = (a, weight, bias if with_bias else None)
    assert torch.autograd.gradcheck(
        lambda a, w, b: linear_cross_entropy(a, w, b, targets, eps)[1], inputs)


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_equals_torch_linear_then_cross_entropy(monkeypatch, eps):
    """Loss, logits and the three gradients, at a vocabulary of 300 in chunks of 4 rows."""
    monkeypatch.setattr(softmax, "LSE_CHUNK_ELEMENTS", 4 * 300)
    a, weight, bias, targets = _problem(n=10, h=16, v=300)
    logits, loss = linear_cross_entropy(a, weight, bias, targets, eps)
    loss.backward()
    got = [loss.detach(), logits, a.grad, weight.grad, bias.grad]
    for t in (a, weight, bias):
        t.grad = None
    want_logits = F.linear(a, weight, bias)
    want = F.cross_entropy(want_logits, targets, label_smoothing=eps, reduction="sum")
    want.backward()
    assert not logits.requires_grad
    for x, y in zip(got, [want.detach(), want_logits.detach(), a.grad, weight.grad, bias.grad],
                    strict=True):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("eps", [0.0, 0.1])
@pytest.mark.parametrize("a_dtype", [torch.float32, torch.bfloat16],
                         ids=["a-float32", "a-bfloat16"])
def test_under_bfloat16_autocast_like_autocast_runs_torch(eps, a_dtype):
    """Products in bfloat16 (the logits come back bfloat16, as F.linear's under autocast),
    the softmax in float32: the loss of autocast's own linear + cross_entropy to float32
    rounding, gradients within bfloat16 rounding, in the inputs' dtypes. The decoder's
    attentional vectors reach the loss in bfloat16 (autocast's products made them); a
    float32 a is a caller's own tensor."""
    a, weight, bias, targets = _problem(n=40, h=32, v=500)
    a = a.detach().to(a_dtype).requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, loss = linear_cross_entropy(a, weight, bias, targets, eps)
    loss.backward()
    got = [a.grad, weight.grad, bias.grad]
    for t in (a, weight, bias):
        t.grad = None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want_logits = F.linear(a, weight, bias)
        want = F.cross_entropy(want_logits, targets, label_smoothing=eps, reduction="sum")
    want.backward()
    assert logits.dtype == want_logits.dtype == torch.bfloat16
    assert torch.equal(logits, want_logits.detach())
    torch.testing.assert_close(loss, want.detach(), rtol=1e-5, atol=1e-3)
    for x, y, dtype in zip(got, [a.grad, weight.grad, bias.grad], [a_dtype] + 2 * [torch.float32],
                           strict=True):
        assert x.dtype == y.dtype == dtype
        torch.testing.assert_close(x, y, rtol=2e-2, atol=2e-2)


def test_label_smoothing_out_of_range():
    a, weight, bias, targets = _problem()
    with pytest.raises(ValueError, match="label_smoothing"):
        linear_cross_entropy(a, weight, bias, targets, 1.5)


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_rows_beyond_the_unshifted_range_are_redone_exactly(eps):
    """Row 0's logits near +1000 (exp overflows), row 1's near -1000 (every term underflows):
    the softmax's gradient of those rows is done again with the max shift; loss and gradients
    as torch's in float64."""
    a, weight, bias, targets = _problem(dtype=torch.float64)
    extra = torch.zeros(a.shape[0], 1, dtype=torch.float64)
    extra[0], extra[1] = 1000.0, -1000.0
    a = torch.cat([a.detach(), extra], 1).requires_grad_()
    weight = torch.cat([weight.detach(), torch.ones(weight.shape[0], 1, dtype=torch.float64)],
                       1).requires_grad_()
    _, loss = linear_cross_entropy(a, weight, bias, targets, eps)
    got = torch.autograd.grad(loss, [a, weight, bias])
    want_loss = F.cross_entropy(F.linear(a, weight, bias), targets, label_smoothing=eps,
                                reduction="sum")
    want = torch.autograd.grad(want_loss, [a, weight, bias])
    torch.testing.assert_close(loss, want_loss)
    for x, y in zip(got, want, strict=True):
        assert torch.isfinite(x).all()
        torch.testing.assert_close(x, y)


def test_without_a_gradient_only_the_normaliser_is_taken(monkeypatch):
    """Evaluation (no input needs a gradient): the loss without the softmax's gradient."""
    from seqlab import losses

    a, weight, bias, targets = _problem()
    calls = []
    gradient = losses._softmax_gradient
    monkeypatch.setattr(losses, "_softmax_gradient",
                        lambda *args: calls.append(1) or gradient(*args))
    _, trained = linear_cross_entropy(a, weight, bias, targets, 0.1)
    assert calls == [1]
    with torch.no_grad():
        _, evaluated = linear_cross_entropy(a, weight, bias, targets, 0.1)
    assert calls == [1]
    torch.testing.assert_close(evaluated, trained.detach())
