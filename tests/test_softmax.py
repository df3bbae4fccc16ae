"""The softmax's log normaliser over wide rows (seqlab.softmax.logsumexp_rows): against sums
written here in float64, in chunks of every size, for rows beyond the range of a plain exp,
and for bfloat16 rows (widened before the exp)."""

import math

import pytest
import torch

from seqlab import softmax
from seqlab.softmax import logsumexp_rows


@pytest.mark.parametrize("chunk", [1, 3 * 50, 7 * 50, 1 << 30],
                         ids=["row-by-row", "three-rows", "uneven-last-chunk", "one-go"])
def test_logsumexp_rows_by_chunks(monkeypatch, chunk):
    """The softmax's log normaliser, taken a few rows at a time: the log of the sum of the
    exponentials of each row (written here in float64), rows with -inf entries included."""
    monkeypatch.setattr(softmax, "LSE_CHUNK_ELEMENTS", chunk)
    g = torch.Generator().manual_seed(7)
    x = 5 * torch.randn(10, 50, generator=g)
    x[:, :3] = float("-inf")
    want = torch.tensor([math.log(sum(math.exp(v) for v in row if v != float("-inf")))
                         for row in x.double().tolist()], dtype=torch.float64)
    torch.testing.assert_close(logsumexp_rows(x).double(), want, atol=1e-5, rtol=0)


def test_logsumexp_rows_beyond_the_range_of_a_plain_exp():
    """Rows whose plain sum of exponentials would overflow float32 (values near 1000), lose
    its terms below the normal range (near -1000), or that hold only -inf, or a NaN, are
    normalised like torch.logsumexp does (with its shift by the row max)."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(6, 300, generator=g)
    x[1] += 1000.0
    x[2] -= 1000.0
    x[3] = float("-inf")
    x[4, 7] = float("nan")
    x[5, :10] += 85.0  # the sum of exponentials overflows float32, each exp does not
    got = logsumexp_rows(x)
    want = torch.logsumexp(x.double(), -1).float()
    assert torch.isneginf(got[3]) and torch.isnan(got[4])
    keep = [0, 1, 2, 5]
    torch.testing.assert_close(got[keep], want[keep], atol=1e-4, rtol=1e-6)


@pytest.mark.parametrize("chunk", [1, 3 * 40, 1 << 30], ids=["row-by-row", "uneven", "one-go"])
def test_logsumexp_rows_of_bfloat16_rows_sums_in_float32(monkeypatch, chunk):
    """bfloat16 logits (an output layer under autocast) are normalised in float32: the exact
    log-sum-exp of the bfloat16 values themselves, to float32 rounding, not of values
    rounded again to bfloat16 by an exp taken in bfloat16 (off by about 1e-3 here)."""
    monkeypatch.setattr(softmax, "LSE_CHUNK_ELEMENTS", chunk)
    g = torch.Generator().manual_seed(11)
    x = (4 * torch.randn(7, 40, generator=g)).bfloat16()
    got = logsumexp_rows(x)
    assert got.dtype == torch.float32
    want = torch.logsumexp(x.double(), -1)
    torch.testing.assert_close(got.double(), want, atol=2e-6, rtol=1e-6)
