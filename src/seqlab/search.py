"""Decoding a trained seq2seq model: greedy search, beam search, ancestral sampling.

Written only against the decoder protocol (duck-typed), so any model that keeps it works:

    memory = model.encode(src, src_lengths)     # src (B, S) padded with PAD, src_lengths (B,)
    memory.index_select(index)                  # rows picked / repeated by index (B',)
    memory.mask                                 # (B, S) bool, True at real source positions
    state = model.init_state(memory)            # decoder state before the first step
    state.index_select(index)                   # rows picked / repeated by index (B',)
    logits, state, attn = model.step(prev, state, memory)
        # prev (B,) long, SOS at the first step; logits (B, V); attn (B, S) or None

Letters: B batch, S source length, T output length, K beam, V vocabulary, N rows in the
decoder batch (B, B*K or B*num_samples, fewer as sentences finish).

Conventions shared by all three searches
----------------------------------------
* Token scores are the model's log-probabilities, log p(y_t | y_<t, x) = log_softmax(logits).
  Forbidden tokens get log-prob -inf *after* the log_softmax (the other tokens are not
  renormalised), so `Hypothesis.log_prob` is always the model's own log-probability of the
  output. Forbidden: PAD and SOS always (they are never outputs); EOS before `min_len` tokens;
  with `no_repeat_ngram=n` every token that would complete an n-gram already in the hypothesis;
  the ids in `banned` (e.g. UNK, which a language model's generator never writes).
* Length. A hypothesis "has length t" after t decoder steps, i.e. t generated tokens counting
  its EOS. The maximum length of sentence b is

      T_max(b) = int(max_len_a * src_len(b) + max_len_b), capped at `max_len`, at least 1,

  with src_len the real (unpadded) source length. So an output holds at most T_max tokens
  without EOS, or T_max - 1 tokens and EOS. A hypothesis still open after T_max steps is
  returned as it is, without EOS. `min_len` counts output tokens without EOS: EOS is forbidden
  while fewer than `min_len` tokens have been generated.
* Sentences that are done leave the decoder batch at once: memory and state are cut down to
  the active rows with `index_select`, so a finished sentence costs no more compute.
* Returned tensors (attention) live on the CPU; tokens are plain ints without SOS and EOS.
  Attention is collected only with `with_attention=True`; otherwise Hypothesis.attention is
  None and no attention is kept at all (the coverage penalty keeps its running sum instead).
* The searches never call `model.eval()`; put the model in eval mode first.

Cost. The searches keep each step's chosen tokens and back-pointers (and, when asked, the
step's attention), never a copy of every prefix (see `_History`): besides the model's own
steps, T steps over N rows cost O(N T), O(N T S) with attention, where appending each step
to (N, t) and (N, t, S) tensors would copy O(N T^2 S) elements. The one exception is
`no_repeat_ngram > 0`: finding the repeated n-grams scans the whole prefix at every step,
O(N t) per step, O(N T^2) in all (still no attention copies).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from seqlab.softmax import logsumexp_rows
from seqlab.vocab import EOS, PAD, SOS

NEG_INF = float("-inf")
COVERAGE_FLOOR = 1e-10  # coverage is clamped to [COVERAGE_FLOOR, 1] before the log


@dataclass
class Hypothesis:
    """One decoded output.

    tokens:    the output ids, without SOS and without EOS.
    score:     the ranking score. Beam search: log_prob / lp + cp (GNMT length and coverage
               penalties, see `beam_search`); greedy and sampling: equal to log_prob.
    log_prob:  sum of the model's token log-probs, the EOS included when the output ended with
               EOS (it did unless it reached the maximum length).
               Both are nan from a greedy search asked for no scores (`greedy_search`).
    attention: (T', S_real) float on the CPU, one row per decoder step of this output (its
               tokens and its EOS, if any) and one column per real source position; None
               unless the search was asked `with_attention=True`, and for a model without
               attention.
    """

    tokens: list[int]
    score: float
    log_prob: float
    attention: Tensor | None


# ----------------------------------------------------------------------------------------------
# Shared pieces


def max_lengths(
    src_lengths: Tensor, *, max_len_a: float, max_len_b: int, max_len: int | None
) -> list[int]:
    """T_max(b) = min(int(max_len_a * src_len(b) + max_len_b), max_len), at least 1."""
    out = [max(1, int(max_len_a * n + max_len_b)) for n in src_lengths.tolist()]
    return out if max_len is None else [max(1, min(m, max_len)) for m in out]


def gnmt_length_penalty(length: int, alpha: float) -> float:
    """GNMT length penalty lp(|Y|) = ((5 + |Y|) / 6) ** alpha (Wu et al. 2016, eq. 14).

    |Y| = number of generated tokens, EOS included. lp(1) = 1 for any alpha, lp is increasing
    in |Y| for alpha > 0, decreasing for alpha < 0, constant 1 for alpha = 0."""
    return ((5.0 + length) / 6.0) ** alpha


def gnmt_coverage_penalty(attention: Tensor, mask: Tensor, beta: float) -> Tensor:
    """GNMT coverage penalty cp = beta * sum_i log(min(sum_j a_ij, 1)) (Wu et al. 2016, eq. 14).

    attention (N, T', S): a_ij, the weight on source position i at output step j.
    mask (N, S): real source positions; padding positions are left out of the sum.
    Returns (N,). The coverage is floored at COVERAGE_FLOOR so that a never-attended source
    word costs beta * log(COVERAGE_FLOOR) instead of -inf (a departure from the paper).
    With beta >= 0 the penalty is <= 0."""
    return coverage_penalty_of_sums(attention.sum(1), mask, beta)


def coverage_penalty_of_sums(coverage: Tensor, mask: Tensor, beta: float) -> Tensor:
    """`gnmt_coverage_penalty` from the coverage alone: coverage (N, S), c_i = sum_j a_ij.

    beta * sum_i log(clamp(c_i, COVERAGE_FLOOR, 1)) over the real positions (mask (N, S))
    -> (N,). Beam search keeps c (N, S) as a running sum, O(S) per row, not the (N, T', S)
    attention history."""
    return beta * (coverage.clamp(COVERAGE_FLOOR, 1.0).log() * mask).sum(-1)


def _forbidden_columns(t: int, *, min_len: int, banned: Sequence[int] = ()) -> list[int]:
    """The tokens forbidden whatever the history: PAD, SOS, the `banned` ids, and EOS while
    t < min_len."""
    return [PAD, SOS, *banned] + ([EOS] if t < min_len else [])


def _always_forbidden(n: int, t: int, vocab_size: int, device: torch.device, *,
                      min_len: int, banned: Sequence[int] = ()) -> Tensor:
    """(n, V) bool: True in the columns of `_forbidden_columns`. The part of
    `forbidden_tokens` that needs no token history."""
    mask = torch.zeros(n, vocab_size, dtype=torch.bool, device=device)  # (n, V)
    mask[:, _forbidden_columns(t, min_len=min_len, banned=banned)] = True
    return mask


def forbidden_tokens(
    tokens: Tensor, vocab_size: int, *, min_len: int, no_repeat_ngram: int,
    banned: Sequence[int] = ()
) -> Tensor:
    """Which next tokens are forbidden, given the tokens generated so far.

    tokens (N, t) long -> (N, V) bool, True where forbidden: PAD, SOS and `banned` always; EOS
    while t < min_len; with n = no_repeat_ngram > 0, every token y such that (last n-1 tokens, y) is
    an n-gram already present in the row (n = 1: every token already present)."""
    N, t = tokens.shape
    mask = _always_forbidden(N, t, vocab_size, tokens.device, min_len=min_len,
                             banned=banned)  # (N, V)
    n = no_repeat_ngram
    if n > 0 and t >= n:
        grams = tokens.unfold(1, n, 1)  # (N, t-n+1, n): every n-gram so far
        context = tokens[:, t - n + 1 :]  # (N, n-1): what the next token would follow
        seen = (grams[:, :, :-1] == context[:, None, :]).all(-1)  # (N, t-n+1)
        hits = torch.zeros(N, vocab_size, dtype=torch.long, device=tokens.device)
        hits.scatter_add_(1, grams[:, :, -1], seen.long())  # (N, V)
        mask |= hits > 0
    return mask


@dataclass
class _Done:
    """A finished output before it is read back: its ranking score and log-prob, its node
    (step, entry) in the _History, and whether its last token is the EOS (dropped on reading)."""

    score: float
    log_prob: float
    node: tuple[int, int]
    eos: bool


class _History:
    """Every decoded prefix, as a tree of back-pointers: one record per decoder step.

    Step s holds N_s entries; entry i is the prefix that ends with token[s][i], extends entry
    parent[s][i] of step s-1 (parent None: entry i of step s-1; step 0 extends the empty
    prefix) and, when attention is collected, the model's weights attn[s][i] at that step:

        token[s] (N_s,) long,  parent[s] (N_s,) long | None,  attn[s] (N_s, S) float32.

    A prefix of length s + 1 is the node (s, i). Recording a step costs O(N_s), O(N_s S) with
    attention, so T steps cost O(N T) (O(N T S)) in all: no prefix is ever copied, unlike
    appending each step to (N, t) and (N, t, S) tensors, which copies O(N T^2 S) elements over
    T steps. `read` follows the pointers back, once for all the finished outputs."""

    def __init__(self, with_attention: bool):
        self.tokens: list[Tensor] = []
        self.parents: list[Tensor | None] = []
        self.attention: list[Tensor] | None = [] if with_attention else None

    def add(self, token: Tensor, parent: Tensor | None, attn: Tensor | None) -> int:
        """Record one step: token (N_s,), parent (N_s,) or None, attn (N_s, S) or None (the
        model's weights, kept only when collecting attention). Returns the step's index s."""
        self.tokens.append(token)
        self.parents.append(parent)
        if self.attention is not None and attn is not None:
            self.attention.append(attn.float())
        return len(self.tokens) - 1

    def read(self, nodes: list[tuple[int, int]]) -> tuple[list[list[int]], Tensor | None]:
        """The prefixes of F nodes (s_f, i_f): their tokens, F lists of s_f + 1 ids, and their
        attention (F, max_f s_f + 1, S) float on the CPU (row j of output f: step j; rows past
        s_f are zero), or None when no attention was collected.

        One walk back from the deepest step, vectorised over the nodes that reach each step:
        O(sum_f (s_f + 1)) work, O(S) more per row with attention."""
        if not nodes:
            return [], None
        device = self.tokens[0].device
        depth = max(s for s, _ in nodes)
        order = sorted(range(len(nodes)), key=lambda f: -nodes[f][0])  # deepest first
        tokens = torch.zeros(len(nodes), depth + 1, dtype=torch.long, device=device)
        att = None
        if self.attention:  # (F, depth + 1, S)
            att = torch.zeros(len(nodes), depth + 1, self.attention[0].size(1), device=device)
        walkers = torch.tensor(order, device=device)  # (F,) outputs, deepest first
        entry = torch.empty(0, dtype=torch.long, device=device)  # entry of each walker so far
        started = 0
        for s in range(depth, -1, -1):
            end = started
            while end < len(order) and nodes[order[end]][0] == s:
                end += 1
            if end > started:  # outputs whose last step is s start walking here
                joining = [nodes[f][1] for f in order[started:end]]
                entry = torch.cat([entry, torch.tensor(joining, device=device)])
                started = end
            rows = walkers[:started]
            tokens[rows, s] = self.tokens[s][entry]
            if att is not None:
                att[rows, s] = self.attention[s][entry]
            if self.parents[s] is not None:
                entry = self.parents[s][entry]
        toks = tokens.tolist()
        return ([toks[f][: s + 1] for f, (s, _) in enumerate(nodes)],
                None if att is None else att.cpu())


def _hypotheses(history: _History, done: list[_Done], real: Tensor) -> list[Hypothesis]:
    """Finished outputs -> Hypothesis objects, read back from the history in one walk.

    real (F, S) bool: the real source positions of each output's sentence (its attention
    columns). An output that ended with EOS loses the EOS token but keeps its attention row."""
    tokens, att = history.read([d.node for d in done])
    hyps = []
    for f, d in enumerate(done):
        toks = tokens[f][:-1] if d.eos else tokens[f]
        rows = None if att is None else att[f, : d.node[0] + 1][:, real[f]]
        hyps.append(Hypothesis(toks, d.score, d.log_prob, rows))
    return hyps


TOP_K_GROUPS = 8  # see top_k


def top_k(x: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """x.topk(k, dim=1) of a wide x (N, V): the values (N, k), best first, and their columns.

    torch's CPU topk and argmax cost about ten times a plain max over the same tensor, and a
    decoder step calls one over the whole vocabulary. So each row is first split into G
    groups of columns c + n*j (n = V // G, j < G; the last V - n*G columns stay candidates)
    and the max over j taken, a cheap elementwise pass; the k best rows' entries lie in the k
    columns c with the largest of these maxima (each of the k best entries is <= the max of
    its column, so at most k columns have a max >= the k-th best), and the exact topk runs
    on those k*G candidates only. Same values as torch.topk; among exactly equal values it
    may return other columns."""
    N, V = x.shape
    G = TOP_K_GROUPS
    n = V // G
    if n < 4 * k:  # narrow rows: nothing to gain
        return x.topk(k, dim=1)
    column_max = x[:, : n * G].unflatten(1, (G, n)).amax(1)  # (N, n)
    columns = _best(column_max, k)[1]  # (N, k)
    idx = (columns[..., None] + n * torch.arange(G, device=x.device)).flatten(1)  # (N, k*G)
    if n * G < V:
        rest = torch.arange(n * G, V, device=x.device).expand(N, -1)
        idx = torch.cat([idx, rest], 1)
    values, pos = _best(x.gather(1, idx), k)
    return values, idx.gather(1, pos)


def _best(x: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """x.topk(k, dim=1); for k = 1 torch's max, which is about twice as fast."""
    return x.max(1, keepdim=True) if k == 1 else x.topk(k, dim=1)


def _allowed(logits: Tensor, prefix: Tensor | None, t: int, *, min_len: int,
             no_repeat_ngram: int, banned: Sequence[int] = (),
             normalise: bool = True) -> tuple[Tensor, Tensor | None]:
    """The step's logits (N, V) in float32 with the forbidden tokens (see `forbidden_tokens`)
    set to -inf in place, and the log normaliser lse (N,) = logsumexp over all tokens, taken
    before: log p(y) = allowed[y] - lse is the model's own log-probability (not renormalised
    over the allowed tokens). No (N, V) log-softmax is written: the searches need log p only
    for the few tokens they pick. Without no_repeat_ngram the forbidden tokens are whole
    columns (`_forbidden_columns`), so no (N, V) mask is built either.
    normalise=False: lse is None (an argmax needs no normaliser)."""
    logits = logits.float()
    lse = logsumexp_rows(logits) if normalise else None  # (N,)
    if no_repeat_ngram > 0:  # needs the token prefixes (N, t)
        return logits.masked_fill_(forbidden_tokens(prefix, logits.size(-1), min_len=min_len,
                                                    no_repeat_ngram=no_repeat_ngram,
                                                    banned=banned),
                                   NEG_INF), lse
    logits[:, _forbidden_columns(t, min_len=min_len, banned=banned)] = NEG_INF
    return logits, lse


def _check_inputs(src: Tensor, src_lengths: Tensor, *, min_len: int, no_repeat_ngram: int):
    if src.dim() != 2 or src_lengths.dim() != 1 or src.size(0) != src_lengths.size(0):
        raise ValueError(f"src must be (B, S) and src_lengths (B,), got {tuple(src.shape)} "
                         f"and {tuple(src_lengths.shape)}")
    if min_len < 0 or no_repeat_ngram < 0:
        raise ValueError("min_len and no_repeat_ngram must be >= 0")


# ----------------------------------------------------------------------------------------------
# Greedy search and sampling: one path per row


def _decode_paths(model, src: Tensor, src_lengths: Tensor, *, pick: Callable[[Tensor], Tensor],
                  copies: int, min_len: int, max_len_a: float, max_len_b: int,
                  max_len: int | None, no_repeat_ngram: int, banned: Sequence[int],
                  with_attention: bool, scores: bool = True) -> list[list[Hypothesis]]:
    """Decode `copies` outputs per sentence, one token per step chosen by `pick`.

    pick: logits (N, V) with the forbidden tokens at -inf -> chosen tokens (N,), any token
    for a row whose every token is forbidden: such a row ends there with EOS and log_prob
    -inf (its tokens so far are kept).
    scores=False: no log normaliser is taken (the logsumexp over the vocabulary, a pass over
    the step's (N, V) logits): log_prob and score are nan.
    The tokens (and attention) go into a _History; rows reorder only when some finish."""
    _check_inputs(src, src_lengths, min_len=min_len, no_repeat_ngram=no_repeat_ngram)
    B, device = src.size(0), src.device
    limit = max_lengths(src_lengths, max_len_a=max_len_a, max_len_b=max_len_b, max_len=max_len)
    memory = model.encode(src, src_lengths)
    real = memory.mask.cpu()  # (B, S)
    if copies > 1:
        memory = memory.index_select(torch.arange(B, device=device).repeat_interleave(copies))
    state = model.init_state(memory)
    out: list[_Done | None] = [None] * (B * copies)
    rows = list(range(B * copies))  # output slot of each active row; sentence = slot // copies
    row_limit = torch.tensor([limit[r // copies] for r in rows], device=device)  # (N,)
    history = _History(with_attention)
    parent: Tensor | None = None  # each row's entry in the last step recorded (None: its own)
    log_prob = torch.full((len(rows),), 0.0 if scores else math.nan, device=device)  # (N,)
    prefix = torch.empty(len(rows), 0, dtype=torch.long, device=device)  # (N, t), n-grams only
    prev = torch.full((len(rows),), SOS, dtype=torch.long, device=device)  # (N,)
    for t in range(max(limit)):
        logits, state, attn = model.step(prev, state, memory)  # (N, V), _, (N, S) | None
        allowed, lse = _allowed(logits, prefix, t, min_len=min_len,
                                no_repeat_ngram=no_repeat_ngram, banned=banned,
                                normalise=scores)  # (N, V), (N,) | None
        token = pick(allowed)  # (N,)
        chosen = allowed.gather(1, token[:, None]).squeeze(1)  # (N,) -inf: nothing allowed
        token = torch.where(torch.isneginf(chosen), EOS, token)  # such a row ends here,
        if lse is not None:
            log_prob = log_prob + (chosen - lse)  # with log-prob -inf
        step = history.add(token, parent, attn if with_attention else None)
        if no_repeat_ngram > 0:  # O(N t) per step, as forbidden_tokens itself
            prefix = torch.cat([prefix, token[:, None]], 1)  # (N, t+1)
        ended = (token == EOS) | (row_limit == t + 1)  # (N,)
        parent, prev = None, token
        if not bool(ended.any()):
            continue
        done = ended.nonzero().squeeze(1)  # (F,)
        for i, eos, lp in zip(done.tolist(), (token[done] == EOS).tolist(),
                              log_prob[done].tolist(), strict=True):
            out[rows[i]] = _Done(lp, lp, (step, i), eos)  # an EOS is dropped on reading
        keep = (~ended).nonzero().squeeze(1)  # (N',)
        if keep.numel() == 0:
            break
        rows = [rows[i] for i in keep.tolist()]
        row_limit, log_prob, prefix = row_limit[keep], log_prob[keep], prefix[keep]
        prev = token[keep]
        memory, state, parent = memory.index_select(keep), state.index_select(keep), keep
    slots = [slot for slot, d in enumerate(out) if d is not None]
    hyps = _hypotheses(history, [out[slot] for slot in slots],
                       real[[slot // copies for slot in slots]])
    by_slot = dict(zip(slots, hyps, strict=True))
    return [[by_slot[s] for s in range(b * copies, (b + 1) * copies) if s in by_slot]
            for b in range(B)]


@torch.no_grad()
def greedy_search(model, src: Tensor, src_lengths: Tensor, *, max_len_a: float = 1.5,
                  max_len_b: int = 10, max_len: int | None = None, min_len: int = 0,
                  no_repeat_ngram: int = 0, banned: Sequence[int] = (),
                  with_attention: bool = False, scores: bool = True) -> list[list[Hypothesis]]:
    """Greedy decoding: y_t = argmax_y log p(y | y_<t, x) over the allowed tokens, until EOS or
    T_max steps.

    src (B, S) long padded with PAD; src_lengths (B,) long. Returns B lists of one Hypothesis
    each, score = log_prob. Equal to `beam_search` with beam_size=1 and no penalties.
    with_attention: fill Hypothesis.attention (else None, and no attention is kept).
    scores=False: the same tokens without the softmax's normaliser (the argmax of the logits
    is that of the log-probs); score and log_prob are nan. For callers that keep only the
    text (`Translator.translate`), as CTranslate2 skips its log-softmax in greedy search
    unless asked for scores."""
    return _decode_paths(model, src, src_lengths, pick=lambda logits: top_k(logits, 1)[1][:, 0],
                         copies=1, min_len=min_len, max_len_a=max_len_a, max_len_b=max_len_b,
                         max_len=max_len, no_repeat_ngram=no_repeat_ngram, banned=banned,
                         with_attention=with_attention, scores=scores)


def filter_logits(logits: Tensor, *, temperature: float = 1.0, top_k: int = 0,
                  top_p: float = 1.0) -> Tensor:
    """The sampling distribution's logits: logits (N, V) -> (N, V) with dropped tokens at -inf.

    In this order: divide by the temperature (p ~ exp(logit / temperature)); keep the top_k
    largest (top_k = 0: all; ties with the k-th are kept); keep the nucleus, the smallest set of
    most likely tokens whose probability reaches top_p (Holtzman et al. 2020), always at least
    the most likely token."""
    logits = logits / temperature
    if top_k > 0 and top_k < logits.size(-1):
        kth = logits.topk(top_k, dim=-1).values[:, -1:]  # (N, 1)
        logits = logits.masked_fill(logits < kth, NEG_INF)
    if top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)  # (N, V)
        probs = sorted_logits.softmax(-1)
        before = probs.cumsum(-1) - probs  # (N, V) mass of the more likely tokens
        drop = before >= top_p
        drop[:, 0] = False
        logits = logits.masked_fill(drop.scatter(1, order, drop), NEG_INF)
    return logits


@torch.no_grad()
def sample(model, src: Tensor, src_lengths: Tensor, *, temperature: float = 1.0, top_k: int = 0,
           top_p: float = 1.0, seed: int | None = None, num_samples: int = 1,
           max_len_a: float = 1.5, max_len_b: int = 10, max_len: int | None = None,
           min_len: int = 0, no_repeat_ngram: int = 0, banned: Sequence[int] = (),
           with_attention: bool = False) -> list[list[Hypothesis]]:
    """Ancestral sampling: y_t ~ softmax(filter_logits(logits_t)) step by step (see
    `filter_logits` for temperature, top-k and top-p), until EOS or T_max steps.

    src (B, S), src_lengths (B,). Returns B lists of `num_samples` Hypotheses in sampling order
    (not sorted). log_prob and score are the *model's* log-prob of the sample (temperature 1, no
    filtering), not the probability under the filtered distribution.
    Randomness comes from a private torch.Generator seeded with `seed` (fresh nondeterministic
    seed when None); the global RNG is never used. The same seed, input, batch composition and
    device give the same samples. with_attention: as in `greedy_search`."""
    if temperature <= 0:
        raise ValueError("temperature must be > 0 (use greedy_search for the argmax)")
    if top_k < 0 or not 0.0 <= top_p <= 1.0 or num_samples < 1:
        raise ValueError("need top_k >= 0, 0 <= top_p <= 1 and num_samples >= 1")
    generator = torch.Generator(device=src.device)
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)

    def pick(logits: Tensor) -> Tensor:  # (N, V) -> (N,)
        stuck = torch.isneginf(logits.amax(-1, keepdim=True))  # (N, 1) nothing allowed: any
        logits = logits.masked_fill(stuck, 0.0)  # token (_decode_paths ends the row)
        probs = filter_logits(logits, temperature=temperature, top_k=top_k, top_p=top_p).softmax(-1)
        return torch.multinomial(probs, 1, generator=generator).squeeze(1)

    return _decode_paths(model, src, src_lengths, pick=pick, copies=num_samples,
                         min_len=min_len, max_len_a=max_len_a, max_len_b=max_len_b,
                         max_len=max_len, no_repeat_ngram=no_repeat_ngram, banned=banned,
                         with_attention=with_attention)


# ----------------------------------------------------------------------------------------------
# Beam search


def score_upper_bound(log_prob: float, length: int, limit: int, alpha: float) -> float:
    """An upper bound on the final score of every completion of an open hypothesis.

    The hypothesis has `length` tokens and log-prob L = log_prob; it can only end with a length
    n in [length + 1, limit] (an EOS at a later step, or cut at T_max = limit) and a log-prob
    L' <= L <= 0 (each further token adds a log-prob <= 0). Its final score is

        L' / lp(n) + cp  <=  L / lp(n) + 0  <=  L / max(lp(length + 1), lp(limit)),

    because cp <= 0 (beta >= 0 and min(coverage, 1) <= 1); L' / lp(n) <= L / lp(n) since
    lp(n) > 0; and for L <= 0 the quotient L / lp is largest where lp is largest, which for the
    monotone lp(n) = ((5 + n) / 6) ** alpha (any sign of alpha) is at one end of the range.
    With alpha = 0 the bound is L itself. No completion exists at length >= limit: -inf.

    Nothing tighter is sound without knowing the model: it may give the next tokens
    probability 1. With alpha > 0 the bound therefore tends to 0 as T_max grows, and the search
    runs longer before it may stop."""
    if length >= limit:
        return NEG_INF
    best_lp = max(gnmt_length_penalty(length + 1, alpha), gnmt_length_penalty(limit, alpha))
    return min(log_prob, 0.0) / best_lp


def score_if_it_ended_next(log_prob: float, length: int, limit: int, alpha: float) -> float:
    """The `heuristic` stopping rule's estimate for an open hypothesis: the score it would
    have if it ended at the next step with no further loss, L / lp(length + 1) (-inf when no
    next step is left). Not a bound for alpha > 0: a longer completion divides by a larger
    lp and can score higher (see `score_upper_bound`). It is the rule of Hugging Face's
    `early_stopping=False` and close to OpenNMT-py's (stop when the best-ranked candidate,
    each scored by its current length, has ended)."""
    if length >= limit:
        return NEG_INF
    return min(log_prob, 0.0) / gnmt_length_penalty(length + 1, alpha)


STOPPING = ("exact", "heuristic")  # beam_search's stopping rules


@torch.no_grad()
def beam_search(model, src: Tensor, src_lengths: Tensor, *, beam_size: int, n_best: int = 1,
                length_penalty: float = 0.0, coverage_penalty: float = 0.0, min_len: int = 0,
                max_len_a: float = 1.5, max_len_b: int = 10, max_len: int | None = None,
                no_repeat_ngram: int = 0, stopping: str = "exact", banned: Sequence[int] = (),
                with_attention: bool = False) -> list[list[Hypothesis]]:
    """Beam search, batched: all sentences and their K open hypotheses are one (B*K) batch.

    src (B, S) long padded with PAD; src_lengths (B,) long. Returns B lists of up to n_best
    Hypotheses, best score first.

    Ranking (Wu et al. 2016, GNMT, eq. 14) of a finished hypothesis Y of length |Y| (tokens
    counting its EOS) with log-prob L:

        score(Y) = L / lp(|Y|) + cp(Y),   lp(|Y|) = ((5 + |Y|) / 6) ** alpha,
        cp(Y) = beta * sum_i log(min(sum_j a_ij, 1))   (i: real source positions, j: steps)

    alpha = length_penalty, beta = coverage_penalty >= 0. The search itself ranks the open
    hypotheses by L alone (as fairseq does); the penalties rank the finished ones.

    One step, for each sentence (all vectorised over the B*K rows):
      1. every open hypothesis h (log-prob L_h) and allowed token y give a candidate of
         log-prob L_h + log p(y | h, x); take the 2K best of the K*V candidates. At most K of
         them end with EOS (one per hypothesis), so at least K do not.
      2. an EOS candidate among the K best becomes a finished hypothesis; EOS candidates below
         rank K are dropped, since a beam of K keeps only K hypotheses. (So beam 1 is greedy.)
      3. the K best non-EOS candidates are the open hypotheses of the next step: the decoder
         state is reordered by their back-pointers, state.index_select(parent).
    At the start the K rows of a sentence hold the same empty prefix; K-1 of them start with
    log-prob -inf so that only one spreads.

    Stopping, per sentence: a sentence is done
      * when it has n_best finished hypotheses and no open one can beat the n_best-th of them:
        score_upper_bound(best open L, ...) <= the n_best-th best finished score. The bound is
        sound (see `score_upper_bound`), so the result is the same as decoding to T_max with
        the same beam. With stopping="heuristic", the open hypothesis is instead scored as if
        it ended at the next step (`score_if_it_ended_next`): the same as exact for
        alpha <= 0; for alpha > 0 it stops much sooner (exact must allow for a completion at
        T_max) and may miss a longer output that the length penalty would have preferred;
      * at T_max(b): its open hypotheses are finished as they are, without EOS, and compete;
      * when no open hypothesis has a finite log-prob left.
    A done sentence leaves the batch (memory and state are index_selected to the rest).
    A sentence that ends with no hypothesis at all (every path hit forbidden tokens only)
    gets one empty Hypothesis of score -inf.

    with_attention: fill Hypothesis.attention (else None). The coverage penalty does not need
    it: the search keeps the coverage sum_j a_ij (N, S) of each open hypothesis, not its
    attention. Hypotheses are kept as back-pointers (see _History) and read back at the end.
    """
    _check_inputs(src, src_lengths, min_len=min_len, no_repeat_ngram=no_repeat_ngram)
    if beam_size < 1 or not 1 <= n_best <= beam_size:
        raise ValueError(f"need beam_size >= 1 and 1 <= n_best <= beam_size, "
                         f"got beam_size={beam_size}, n_best={n_best}")
    if coverage_penalty < 0:
        raise ValueError("coverage_penalty (GNMT beta) must be >= 0")
    if stopping not in STOPPING:
        raise ValueError(f"stopping must be one of {', '.join(STOPPING)}, not {stopping!r}")
    bound = score_upper_bound if stopping == "exact" else score_if_it_ended_next
    alpha, beta = length_penalty, coverage_penalty
    B, K, device = src.size(0), beam_size, src.device
    limit = max_lengths(src_lengths, max_len_a=max_len_a, max_len_b=max_len_b, max_len=max_len)
    memory = model.encode(src, src_lengths)
    real = memory.mask.cpu()  # (B, S)
    memory = memory.index_select(torch.arange(B, device=device).repeat_interleave(K))  # (B*K,)
    state = model.init_state(memory)
    finished: list[list[_Done]] = [[] for _ in range(B)]
    sents = list(range(B))  # the sentence of each active block of K rows
    history = _History(with_attention)
    base: Tensor | None = None  # each row's entry in the last step recorded (None: its own)
    log_prob = torch.zeros(B * K, device=device)  # (N,)
    log_prob.view(B, K)[:, 1:] = NEG_INF
    coverage = torch.zeros(memory.mask.shape, device=device) if beta > 0 else None  # (N, S)
    prefix = torch.empty(B * K, 0, dtype=torch.long, device=device)  # (N, t), n-grams only
    prev = torch.full((B * K,), SOS, dtype=torch.long, device=device)  # (N,)
    has_attention = False

    def finish(step: int, entries: Tensor, blocks: list[int], lp: Tensor, cov: Tensor | None,
               rows: Tensor, length: int, eos: bool) -> None:
        """Rank F outputs of `length` steps, the nodes (step, entries (F,)) of blocks (F,),
        with log-probs lp (F,), coverage cov (F, S) of decoder rows `rows`; keep n_best each."""
        cp = [0.0] * len(blocks)
        if beta > 0:
            cp = coverage_penalty_of_sums(cov, memory.mask[rows], beta).tolist()
        lp_len = gnmt_length_penalty(length, alpha)
        for block, e, lp_f, c in zip(blocks, entries.tolist(), lp.tolist(), cp, strict=True):
            fin = finished[sents[block]]
            fin.append(_Done(lp_f / lp_len + c, lp_f, (step, e), eos))
            fin.sort(key=lambda h: -h.score)  # stable: ties keep the order of finishing
            del fin[n_best:]

    for t in range(max(limit)):
        Bn = len(sents)
        logits, state, attn = model.step(prev, state, memory)  # (Bn*K, V), _, (Bn*K, S) | None
        if beta > 0 and attn is None:
            raise ValueError("coverage_penalty needs a model that returns attention")
        has_attention = has_attention or attn is not None
        V = logits.size(-1)
        allowed, lse = _allowed(logits, prefix, t, min_len=min_len, no_repeat_ngram=no_repeat_ngram,
                                banned=banned)  # (Bn*K, V), (Bn*K,)
        # The 2K best of a sentence's K*V candidates are among each row's 2K best tokens, so
        # each row is cut to those first (a topk over V, not K*V) and only they are scored.
        c = min(2 * K, V)
        row_best, row_token = top_k(allowed, c)  # (Bn*K, c)
        total = (log_prob[:, None] + row_best - lse[:, None]).view(Bn, K * c)  # (Bn, K*c)
        top_lp, top_i = total.topk(2 * K, dim=1)  # (Bn, 2K), best first
        parent = top_i // c + K * torch.arange(Bn, device=device)[:, None]  # (Bn, 2K) row ids
        token = row_token.view(Bn, K * c).gather(1, top_i)  # (Bn, 2K)
        is_eos = token == EOS
        # 3. The K best non-EOS candidates go on: Bn*K rows, parent rows keep_parent.
        keep_lp, keep_j = top_lp.masked_fill(is_eos, NEG_INF).topk(K, dim=1)  # (Bn, K)
        keep_parent = parent.gather(1, keep_j).view(-1)  # (Bn*K,)
        keep_token = token.gather(1, keep_j).view(-1)  # (Bn*K,)
        # 2. EOS candidates among the K best become finished hypotheses (F rows).
        ends = is_eos[:, :K] & torch.isfinite(top_lp[:, :K])  # (Bn, K)
        end_rows = parent[:, :K][ends]  # (F,) their parent rows
        # Record the step: entries 0..Bn*K-1 the kept candidates, then the F finished ones.
        from_rows = torch.cat([keep_parent, end_rows])  # (Bn*K + F,)
        step = history.add(torch.cat([keep_token, token[:, :K][ends]]),
                           from_rows if base is None else base[from_rows],
                           None if attn is None or not with_attention else attn[from_rows])
        if end_rows.numel():
            cov = None if coverage is None else coverage[end_rows] + attn[end_rows].float()
            finish(step, Bn * K + torch.arange(end_rows.numel()), ends.nonzero()[:, 0].tolist(),
                   top_lp[:, :K][ends], cov, end_rows, t + 1, eos=True)
        log_prob = keep_lp.view(-1)  # (Bn*K,)
        if coverage is not None:  # c_i += a_ti along the back-pointers
            coverage = coverage[keep_parent] + attn[keep_parent].float()  # (Bn*K, S)
        if no_repeat_ngram > 0:  # O(N t) per step, as forbidden_tokens itself
            prefix = torch.cat([prefix[keep_parent], keep_token[:, None]], 1)  # (Bn*K, t+1)

        # Which sentences are done.
        best_open = keep_lp[:, 0].tolist()  # (Bn,)
        done_blocks = []
        for i, s in enumerate(sents):
            fin = finished[s]
            if t + 1 >= limit[s]:
                rows = (i * K + torch.arange(K, device=device))[torch.isfinite(keep_lp[i])]
                if rows.numel():
                    finish(step, rows, [i] * rows.numel(), log_prob[rows],
                           None if coverage is None else coverage[rows], rows, t + 1,
                           eos=False)
                done_blocks.append(i)
            elif best_open[i] == NEG_INF or (
                len(fin) >= n_best
                and bound(best_open[i], t + 1, limit[s], alpha) <= fin[-1].score
            ):
                done_blocks.append(i)

        # Reorder the state by the back-pointers; drop the done sentences.
        if not done_blocks:
            state, prev, base = state.index_select(keep_parent), keep_token, None
            continue
        if len(done_blocks) == Bn:
            break
        gone = set(done_blocks)
        blocks = torch.tensor([i for i in range(Bn) if i not in gone], device=device)  # (Bn',)
        rows = (blocks[:, None] * K + torch.arange(K, device=device)).view(-1)  # (Bn'*K,)
        sents = [s for i, s in enumerate(sents) if i not in gone]
        state = state.index_select(keep_parent[rows])
        memory, prev, base = memory.index_select(rows), keep_token[rows], rows
        log_prob, prefix = log_prob[rows], prefix[rows]
        coverage = None if coverage is None else coverage[rows]

    done = [d for fin in finished for d in fin]
    hyps = iter(_hypotheses(history, done, real[[s for s, fin in enumerate(finished)
                                                 for _ in fin]]))
    results = [[next(hyps) for _ in fin] for fin in finished]
    for s, fin in enumerate(results):
        if not fin:
            collected = with_attention and has_attention
            empty = torch.zeros(0, int(real[s].sum())) if collected else None
            fin.append(Hypothesis([], NEG_INF, NEG_INF, empty))
    return results
