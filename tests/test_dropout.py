"""Dropout: kept units scaled by 1 / (1 - p), dropped with probability p, the gradient through
the same mask, the identity in evaluation, reproducible under torch.manual_seed."""

import math

import pytest
import torch

from seqlab.dropout import Dropout, dropout


@pytest.mark.parametrize("p", [0.1, 0.2, 0.5, 0.9])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_units_are_dropped_with_probability_p_and_the_rest_scaled(p, dtype):
    torch.manual_seed(0)
    n = 200_000
    x = (torch.rand(n, dtype=torch.float64) + 1.0).to(dtype)  # no zeros of its own
    y = dropout(x, p, training=True)
    assert y.dtype == dtype and y.shape == x.shape
    kept = y != 0
    frac = kept.double().mean().item()
    assert abs(frac - (1 - p)) < 5 * math.sqrt(p * (1 - p) / n)  # 5 standard errors
    scale = torch.tensor(1 / (1 - p), dtype=torch.float64).to(dtype)
    torch.testing.assert_close(y[kept], x[kept] * scale, rtol=0, atol=0)


def test_gradient_goes_through_the_same_mask():
    torch.manual_seed(1)
    x = torch.randn(50, 40, dtype=torch.float64, requires_grad=True)
    y = dropout(x, 0.3, training=True)
    (grad,) = torch.autograd.grad(y, x, torch.ones_like(y))
    mask = (y != 0).double()
    torch.testing.assert_close(grad, mask / 0.7)


def test_identity_in_evaluation_and_for_p_zero_all_zero_for_p_one():
    x = torch.randn(7, 3)
    assert dropout(x, 0.5, training=False) is x
    assert dropout(x, 0.0, training=True) is x
    assert not dropout(x, 1.0, training=True).any()
    layer = Dropout(0.5).eval()
    assert layer(x) is x
    assert "p=0.5" in repr(layer)


def test_masks_are_reproducible_under_manual_seed_and_new_at_every_call():
    x = torch.ones(1000)
    torch.manual_seed(3)
    a, b = dropout(x, 0.5, True), dropout(x, 0.5, True)
    torch.manual_seed(3)
    assert torch.equal(dropout(x, 0.5, True), a)
    assert not torch.equal(a, b)


@pytest.mark.parametrize("p", [-0.1, 1.5])
def test_probability_outside_zero_one_is_refused(p):
    with pytest.raises(ValueError, match="dropout probability"):
        Dropout(p)
    with pytest.raises(ValueError, match="dropout probability"):
        dropout(torch.ones(2), p, True)
