"""Attention: score the encoder states against a decoder query, then average them.

At decoder step t with query s_t (the decoder state) and encoder states h_1 .. h_S:

    e_tj = score(s_t, h_j)                              alignment scores
    a_tj = exp(e_tj) / sum_k exp(e_tk)                  weights (softmax over S)
    c_t  = sum_j a_tj h_j                               context vector

Scores (Luong, Pham & Manning 2015, "Effective Approaches to Attention-based Neural
Machine Translation", eq. 8; Bahdanau, Cho & Bengio 2015, "Neural Machine Translation by
Jointly Learning to Align and Translate", appendix A.1.2; Vaswani et al. 2017, "Attention
Is All You Need", eq. 1):

    dot         s^T h
    scaled_dot  s^T h / sqrt(n)                         n = key size
    general     s^T W h                                 (Luong)
    additive    v^T tanh(W s + U h)                     (Bahdanau; Luong's "concat")

The parts that depend only on the source (W h for general, U h for additive) are computed
once per source sentence by `Attention.precompute_keys`; the score functions below take
those precomputed *keys*, so a decoder step costs one product with the query.

Every score function takes a query for one decoder step, (B, Hq), or for all steps at once,
(B, T, Hq) (a teacher-forced parallel pass), and returns scores (B, S) or (B, T, S).

Shapes: B batch, S source length, T target (query) steps, Hq query size, K key size,
M memory (value) size, A attention size. A mask is bool (B, S), True at real tokens and
False at padding.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from seqlab.precision import linear_bucketed

KINDS = ("dot", "scaled_dot", "general", "additive")


def _as_steps(query: Tensor) -> tuple[Tensor, bool]:
    """(B, Hq) -> (B, 1, Hq) so that one code path serves both query forms."""
    if query.dim() == 2:
        return query.unsqueeze(1), True
    if query.dim() == 3:
        return query, False
    raise ValueError(f"query must be (B, Hq) or (B, T, Hq), got shape {tuple(query.shape)}")


def dot(query: Tensor, keys: Tensor) -> Tensor:
    """Luong dot score:  e_j = s^T h_j.

    query: (B, Hq) or (B, T, Hq);  keys: (B, S, K) with K == Hq  ->  (B, S) or (B, T, S)
    """
    if query.size(-1) != keys.size(-1):
        raise ValueError(
            f"dot score needs query size == key size, got {query.size(-1)} and {keys.size(-1)}"
        )
    q, one_step = _as_steps(query)
    scores = q @ keys.transpose(1, 2)  # (B, T, Hq) @ (B, K, S) -> (B, T, S)
    return scores.squeeze(1) if one_step else scores


def scaled_dot(query: Tensor, keys: Tensor) -> Tensor:
    """Scaled dot score (Vaswani et al. 2017, eq. 1):  e_j = s^T h_j / sqrt(n), n = K.

    Keeps the scores' variance near 1 when the entries are of unit variance, so the
    softmax does not saturate for large key sizes.
    query: (B, Hq) or (B, T, Hq);  keys: (B, S, K), K == Hq  ->  (B, S) or (B, T, S)
    """
    return dot(query, keys) / math.sqrt(keys.size(-1))


def general(query: Tensor, keys: Tensor) -> Tensor:
    """Luong general score:  e_j = s^T W h_j,  with keys = W h precomputed.

    Since W h does not depend on the step, `Attention.precompute_keys` computes it once
    per source and the score at each step is a dot product with those keys.
    query: (B, Hq) or (B, T, Hq);  keys: (B, S, Hq) = W h  ->  (B, S) or (B, T, S)
    """
    return dot(query, keys)


def additive(query: Tensor, keys: Tensor, query_weight: Tensor, v: Tensor) -> Tensor:
    """Bahdanau additive score (Luong's "concat"):  e_j = v^T tanh(W s + U h_j),
    with keys = U h precomputed.

    Like the paper, there are no bias terms (a bias in W s + U h would be redundant with
    one in either projection; Luong's concat form v^T tanh(W [s; h]) is the same score).
    query: (B, Hq) or (B, T, Hq);  keys: (B, S, A) = U h;  query_weight W: (A, Hq);
    v: (A,)  ->  (B, S) or (B, T, S)
    """
    return additive_from_projection(F.linear(query, query_weight), keys, v)


def additive_from_projection(wq: Tensor, keys: Tensor, v: Tensor) -> Tensor:
    """The additive score from the projected query: wq (B, A) or (B, T, A) = W s,
    keys (B, S, A) = U h, v (A,)  ->  e (B, S) or (B, T, S) = v^T tanh(wq + keys)."""
    wq, one_step = _as_steps(wq)
    if torch.is_grad_enabled() and (wq.requires_grad or keys.requires_grad or v.requires_grad):
        hidden = torch.tanh(wq.unsqueeze(2) + keys.unsqueeze(1))  # (B, T, 1, A) + (B, 1, S, A)
        scores = hidden @ v  # (B, T, S, A) @ (A,) -> (B, T, S)
    else:
        scores = _additive_by_chunks(wq, keys, v)
    return scores.squeeze(1) if one_step else scores


CHUNK_ELEMENTS = 1 << 18  # 1 MiB of float32: the (b, T, S, A) slice that stays in the L2 cache


def _additive_by_chunks(wq: Tensor, keys: Tensor, v: Tensor) -> Tensor:
    """v^T tanh(wq + keys) without autograd, a few sentences at a time:
    wq (B, T, A), keys (B, S, A) -> (B, T, S).

    The (B, T, S, A) tanh argument of a beam (T = the beam's rows of a sentence) over a
    batch is tens of MB, far beyond the caches, and the one-go form writes it, reads it for
    the tanh, writes that and reads it again for the product with v: memory-bound. Chunks of
    about CHUNK_ELEMENTS are added, tanh'd in place and reduced while they sit in cache (on
    this CPU 2-6x faster at 128 sentences x beam 5, the same to rounding)."""
    dtype = torch.promote_types(wq.dtype, keys.dtype)  # bfloat16 under autocast
    wq, keys, v = wq.to(dtype), keys.to(dtype), v.to(dtype)
    B, T, A = wq.shape
    S = keys.size(1)
    rows = min(B, max(1, CHUNK_ELEMENTS // max(1, T * S * A)))  # sentences per chunk
    scores = wq.new_empty(B, T, S)
    buffer = wq.new_empty(rows, T, S, A)
    for i in range(0, B, rows):
        n = min(rows, B - i)
        hidden = torch.add(wq[i:i + n].unsqueeze(2), keys[i:i + n].unsqueeze(1),
                           out=buffer[:n])
        torch.matmul(hidden.tanh_(), v, out=scores[i:i + n])
    return scores


def attend(scores: Tensor, values: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Masked softmax over the source, then the weighted average of the values:

        a_j = exp(e_j) / sum_k exp(e_k)   over unmasked k;   c = sum_j a_j v_j

    Masked positions (mask False) get score -inf, so their weight is exactly 0 and their
    values cannot leak into the context. Every row needs at least one unmasked position
    (an all-padding row would give NaN weights).
    scores: (B, S) or (B, T, S);  values: (B, S, M);  mask: bool (B, S) or None
    ->  context (B, M) or (B, T, M),  weights like scores
    """
    if mask is not None:
        if mask.dtype != torch.bool:
            raise TypeError(f"mask must be a bool tensor (True = real token), got {mask.dtype}")
        if scores.dim() == 3:
            mask = mask.unsqueeze(1)  # (B, S) -> (B, 1, S), broadcast over T
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    if weights.dim() == 2:
        context = (weights.unsqueeze(1) @ values).squeeze(1)  # (B, 1, S) @ (B, S, M) -> (B, M)
    else:
        context = weights @ values  # (B, T, S) @ (B, S, M) -> (B, T, M)
    return context, weights


def steps_in_float32(x: Tensor) -> bool:
    """Whether one decoder step's attention on x's device runs in float32 (CPU autocast; see
    `Attention.forward`): the stepped decoder then casts its keys to float32 once per batch."""
    return x.device.type == "cpu" and torch.is_autocast_enabled("cpu")


class Attention(nn.Module):
    """The parameters of one score function, and the two calls a decoder makes:

        keys = attention.precompute_keys(memory)                   once per source
        context, weights = attention(query, keys, memory, mask)    every step (or all steps)

    kind: "dot" | "scaled_dot" | "general" | "additive" (see the module docstring).
    query_size Hq: the decoder state size; memory_size M: the encoder output size
    (2H for a bidirectional encoder); attention_size A: the hidden size of the additive
    score (default Hq, as in Bahdanau et al.), only meaningful for "additive".

    Parameters (no biases, as in the papers):
        general:   key_proj.weight (Hq, M) = W
        additive:  key_proj.weight (A, M) = U,  query_proj.weight (A, Hq) = W,  v (A,)
    The module holds no state between calls.
    """

    def __init__(
        self, kind: str, query_size: int, memory_size: int, attention_size: int | None = None
    ):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"unknown attention kind {kind!r}; choose one of {KINDS}")
        if kind in ("dot", "scaled_dot") and query_size != memory_size:
            raise ValueError(
                f"{kind} attention needs query_size == memory_size, got {query_size} and "
                f"{memory_size}; use 'general' or 'additive' to score states of different sizes"
            )
        if attention_size is not None and kind != "additive":
            raise ValueError(f"attention_size applies only to 'additive', not to {kind!r}")
        self.kind = kind
        self.query_size = query_size
        self.memory_size = memory_size
        self.attention_size = attention_size
        if kind == "general":
            self.key_proj = nn.Linear(memory_size, query_size, bias=False)  # W: M -> Hq
        elif kind == "additive":
            a = query_size if attention_size is None else attention_size
            self.attention_size = a
            self.key_proj = nn.Linear(memory_size, a, bias=False)  # U: M -> A
            self.query_proj = nn.Linear(query_size, a, bias=False)  # W: Hq -> A
            self.v = nn.Parameter(torch.empty(a))  # (A,)
            bound = 1 / math.sqrt(a)  # what nn.Linear(A, 1) would draw for its weight
            nn.init.uniform_(self.v, -bound, bound)

    def precompute_keys(self, memory: Tensor) -> Tensor:
        """The source-only part of the score, computed once per source sentence.

        memory: (B, S, M)  ->  keys: (B, S, M) for dot / scaled_dot (the memory itself),
        (B, S, Hq) = W h for general, (B, S, A) = U h for additive.
        """
        if self.kind not in ("general", "additive"):
            return memory
        proj = self.key_proj
        if type(proj) is nn.Linear:  # B*S rows, a new count every batch: in buckets
            return linear_bucketed(memory, proj.weight, proj.bias)
        return proj(memory)  # a decoding copy's own layer (seqlab.precision)

    def score(self, query: Tensor, keys: Tensor, query_proj=None) -> Tensor:
        """query: (B, Hq) or (B, T, Hq);  keys from `precompute_keys`  ->  (B, S) or (B, T, S).
        query_proj: what computes W s for the additive score in place of the module's own
        `query_proj` (a decoder's loop passes a `StepLinear` of the same weight)."""
        if self.kind == "dot":
            return dot(query, keys)
        if self.kind == "scaled_dot":
            return scaled_dot(query, keys)
        if self.kind == "general":
            return general(query, keys)
        # W s through the module (a decoding copy may have made it a bfloat16 product)
        project = self.query_proj if query_proj is None else query_proj
        return additive_from_projection(project(query), keys, self.v)

    def forward(
        self, query: Tensor, keys: Tensor, values: Tensor, mask: Tensor | None = None,
        query_proj=None,
    ) -> tuple[Tensor, Tensor]:
        """query: (B, Hq) or (B, T, Hq);  keys: from `precompute_keys`;  values: (B, S, M)
        (usually the memory);  mask: bool (B, S) or None;  query_proj: see `score`
        ->  context (B, M) or (B, T, M),  weights (B, S) or (B, T, S)

        One step's query (B, Hq) under CPU autocast: the scores, softmax and average run in
        float32 (a stepped decoder passes float32 keys, cast once per batch). They are
        elementwise work over (B, S, A) and (B, 1, S) x (B, S, M) products, which bfloat16
        only slows on the CPU (conversions, and the memory cast again at every step): a
        bfloat16 training step of the peers' model 127 -> 121 ms. A whole target's queries
        at once (B, T, Hq) stay in bfloat16, where the (B, T, S, A) tanh is memory-bound
        (95 ms, against 103 in float32).
        """
        if query.dim() == 2 and steps_in_float32(query):
            with torch.autocast("cpu", enabled=False):
                scores = self.score(query.float(), keys.float(), query_proj)
                return attend(scores, values.float(), mask)
        return attend(self.score(query, keys, query_proj), values, mask)

    def extra_repr(self) -> str:
        extra = f", attention_size={self.attention_size}" if self.kind == "additive" else ""
        return (
            f"kind={self.kind!r}, query_size={self.query_size}, "
            f"memory_size={self.memory_size}{extra}"
        )
