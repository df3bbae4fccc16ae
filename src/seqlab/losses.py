"""The output layer and its cross-entropy in one step, with the softmax done by cache-sized
chunks of rows.

    logits, loss = linear_cross_entropy(a, weight, bias, targets, label_smoothing=eps)

    z = a W^T + b                                   logits (N, V)
    loss = sum_i  lse_i - (1 - eps) z_{i,y_i} - eps mean_j z_ij,   lse_i = log sum_j exp z_ij
    d loss / d z_ij = p_ij - (1 - eps) [j = y_i] - eps / V,        p = softmax(z)

the same loss as `F.cross_entropy(F.linear(a, W, b), y, label_smoothing=eps,
reduction="sum")`. Over a 10k-word vocabulary that pair is the costliest part of a training
step on the CPU: log_softmax writes an (N, V) float32 tensor, its backward reads it and writes
another, the loss's gradient is an (N, V) tensor of zeros with one entry per row, and under
bfloat16 autocast the logits are cast to float32 and the gradient back: eight or so passes
over tens of MB, each beyond the caches. Here the forward pass takes the logits (in the
product's dtype) a few rows at a time into a cache-sized float32 buffer, and while a chunk
is there computes exp, its row sums (the normaliser lse) and, when a gradient is wanted,
G = p - (1 - eps) onehot - eps / V, written once in the product's dtype; the backward pass
is the two products of G, scaled by the loss's incoming gradient (a scalar). Without a
gradient (evaluation) the forward pass takes lse only (`seqlab.softmax.logsumexp_rows`).
The label-smoothing term needs no pass over the logits: sum_ij z_ij = (sum_i a_i) .
(sum_j W_j) + N sum_j b_j. Forward and backward of 880 target tokens x 256 -> 10k words
(the peers' benchmark model), one thread of an AMX CPU: float32 163 -> 143 ms, bfloat16
autocast 98 -> 39 ms (54-63 ms before the shared normaliser and the one-pass smoothing
term); G in the forward pass instead of recomputing p from the logits in the backward one:
a bfloat16 training step 1-3% faster (in-process A/B on real batches).

Under CPU or CUDA autocast the products run in the autocast dtype (as `F.linear` would), the
softmax and the loss in float32 (as autocast runs `cross_entropy`); gradients come back in the
dtypes of a, weight and bias.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from seqlab.precision import bucket_rows, product_dtype
from seqlab.softmax import chunk_rows, logsumexp_rows, unsafe_rows

ROW_BUCKET = 128  # bfloat16 products on the CPU see row counts in steps of this (_padded_rows)


def _padded_rows(x: Tensor) -> Tensor:
    """x (N, K) padded with zero rows to a multiple of ROW_BUCKET for products in a reduced
    precision on the CPU (else x itself): see precision.bucket_rows. On the peers' model, 60
    batch shapes in turn trained at 2,724 target tokens/s and grew to 1.9 GB against 3,131
    and 0.9 GB for 8 shapes."""
    return bucket_rows(x, ROW_BUCKET)


def _softmax_gradient(z_padded: Tensor, n: int, targets: Tensor, eps: float,
                      with_bias: bool) -> tuple[Tensor, Tensor, Tensor | None]:
    """For the first n rows of the logits z_padded (N', V): lse (N,) in the softmax's dtype,
    G = p - (1 - eps) onehot(targets) - eps / V (N', V) in z's dtype with zero rows after n,
    and G's column sums (the bias gradient) in the softmax's dtype, chunk by chunk.

    p = exp(z) / sum_j exp(z_j) without the max shift (`seqlab.softmax`); a row whose lse
    is unsafe (`seqlab.softmax.unsafe_rows`) is done again exactly, shifted by
    torch.logsumexp."""
    V = z_padded.shape[1]
    acc = torch.promote_types(z_padded.dtype, torch.float32)
    grad_z = torch.empty_like(z_padded)
    grad_z[n:].zero_()
    grad_bias = z_padded.new_zeros(V, dtype=acc) if with_bias else None
    sums = z_padded.new_empty(n, dtype=acc)
    rows = max(1, min(n, chunk_rows(V)))
    buffer = z_padded.new_empty(rows, V, dtype=acc)
    for i in range(0, n, rows):
        g = buffer[:min(rows, n - i)]
        g.copy_(z_padded[i:i + g.shape[0]]).exp_()  # widened first: exp in float32
        total = torch.sum(g, -1, out=sums[i:i + g.shape[0]])
        g.mul_(total.reciprocal()[:, None])  # p
        g[torch.arange(g.shape[0], device=g.device), targets[i:i + g.shape[0]]] -= 1 - eps
        if eps:
            g.sub_(eps / V)
        if grad_bias is not None:
            grad_bias += g.sum(0)
        grad_z[i:i + g.shape[0]] = g
    lse = sums.log_()
    redo = unsafe_rows(lse)
    if bool(redo.any()):
        z = z_padded[:n][redo].to(acc)
        lse[redo] = torch.logsumexp(z, -1)
        g = (z - lse[redo, None]).exp_()
        g[torch.arange(g.shape[0], device=g.device), targets[redo]] -= 1 - eps
        grad_z[:n][redo] = (g - eps / V).to(grad_z.dtype)
        if grad_bias is not None:
            grad_bias = grad_z[:n].sum(0, dtype=acc)
    return lse, grad_z, grad_bias


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a: Tensor, weight: Tensor, bias: Tensor | None, targets: Tensor,
                label_smoothing: float, dtype: torch.dtype, wants_gradient: bool):
        with torch.autocast(a.device.type, enabled=False):
            a_, w_ = _padded_rows(a.to(dtype)), weight.to(dtype)
            b_ = None if bias is None else bias.to(dtype)
            z_padded = F.linear(a_, w_, b_)
            z = z_padded[:a.shape[0]]  # (N, V)
            N, V = z.shape
            grad_z = grad_bias = None
            if wants_gradient:
                lse, grad_z, grad_bias = _softmax_gradient(
                    z_padded, N, targets, label_smoothing, bias is not None)
            else:
                lse = logsumexp_rows(z)  # (N,) in the softmax's dtype
            picked = z.gather(1, targets[:, None]).squeeze(1).to(lse.dtype)
            loss = (lse - (1 - label_smoothing) * picked).sum()
            if label_smoothing:  # sum_ij z_ij = (sum_i a_i) . (sum_j W_j) + N sum_j b_j,
                # no pass over the logits; from the product's own (rounded) inputs, summed
                # in the softmax's dtype (a_'s padding rows are zero)
                acc = lse.dtype
                total = a_.sum(0, dtype=acc) @ w_.sum(0, dtype=acc)
                if b_ is not None:
                    total = total + N * b_.sum(dtype=acc)
                loss = loss - label_smoothing / V * total
        ctx.save_for_backward(a_, w_, grad_z, grad_bias)
        ctx.rows = N
        ctx.dtypes = (a.dtype, weight.dtype, None if bias is None else bias.dtype)
        ctx.mark_non_differentiable(z)
        ctx.set_materialize_grads(False)  # z's gradient is None: no (N, V) zeros made for it
        return z, loss

    @staticmethod
    def backward(ctx, _grad_z, grad_loss):
        if grad_loss is None:  # only the logits were used, and they carry no gradient
            return None, None, None, None, None, None, None
        a_, w_, grad_z, grad_bias = ctx.saved_tensors  # G: d loss / d z; a_'s padding is 0
        with torch.autocast(grad_z.device.type, enabled=False):
            grad_a = (grad_z @ w_)[:ctx.rows].to(ctx.dtypes[0]) * grad_loss
            grad_weight = (grad_z.t() @ a_).to(ctx.dtypes[1]) * grad_loss
        if grad_bias is not None:
            grad_bias = grad_bias.to(ctx.dtypes[2]) * grad_loss
        return grad_a, grad_weight, grad_bias, None, None, None, None


def linear_cross_entropy(a: Tensor, weight: Tensor, bias: Tensor | None, targets: Tensor,
                         label_smoothing: float = 0.0) -> tuple[Tensor, Tensor]:
    """a (N, H), weight (V, H), bias (V,) or None, targets (N,) long ->
    logits (N, V) (no gradient flows through them), summed loss (float32 scalar)."""
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing}")
    wants_gradient = torch.is_grad_enabled() and any(  # else the normaliser alone
        t is not None and t.requires_grad for t in (a, weight, bias))
    return _LinearCrossEntropy.apply(a, weight, bias, targets, label_smoothing,
                                     product_dtype(a), wants_gradient)
