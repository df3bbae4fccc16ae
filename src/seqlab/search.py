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
  with `no_repeat_ngram=n` every token that would complete an n-gram already in the hypothesis.
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
* The searches never call `model.eval()`; put the model in eval mode first.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

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
    attention: (T', S_real) float on the CPU, one row per decoder step of this output (its
               tokens and its EOS, if any) and one column per real source position; None for a
               model without attention.
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
    coverage = attention.sum(1).clamp(COVERAGE_FLOOR, 1.0)  # (N, S)
    return beta * (coverage.log() * mask).sum(-1)


def forbidden_tokens(
    tokens: Tensor, vocab_size: int, *, min_len: int, no_repeat_ngram: int
) -> Tensor:
    """Which next tokens are forbidden, given the tokens generated so far.

    tokens (N, t) long -> (N, V) bool, True where forbidden: PAD and SOS always; EOS while
    t < min_len; with n = no_repeat_ngram > 0, every token y such that (last n-1 tokens, y) is
    an n-gram already present in the row (n = 1: every token already present)."""
    N, t = tokens.shape
    banned = torch.zeros(N, vocab_size, dtype=torch.bool, device=tokens.device)  # (N, V)
    banned[:, PAD] = True
    banned[:, SOS] = True
    if t < min_len:
        banned[:, EOS] = True
    n = no_repeat_ngram
    if n > 0 and t >= n:
        grams = tokens.unfold(1, n, 1)  # (N, t-n+1, n): every n-gram so far
        context = tokens[:, t - n + 1 :]  # (N, n-1): what the next token would follow
        seen = (grams[:, :, :-1] == context[:, None, :]).all(-1)  # (N, t-n+1)
        hits = torch.zeros(N, vocab_size, dtype=torch.long, device=tokens.device)
        hits.scatter_add_(1, grams[:, :, -1], seen.long())  # (N, V)
        banned |= hits > 0
    return banned


@dataclass
class _Paths:
    """The open outputs, one per decoder row.

    tokens (N, t) long, log_prob (N,) float32, attention (N, t, S) float32 or None."""

    tokens: Tensor
    log_prob: Tensor
    attention: Tensor | None

    @classmethod
    def empty(cls, n: int, device: torch.device) -> _Paths:
        return cls(torch.empty(n, 0, dtype=torch.long, device=device),
                   torch.zeros(n, device=device), None)

    def select(self, index: Tensor) -> _Paths:
        """Rows picked / repeated by index (N',)."""
        att = None if self.attention is None else self.attention[index]
        return _Paths(self.tokens[index], self.log_prob[index], att)

    def extend(self, token: Tensor, log_prob: Tensor, attn: Tensor | None) -> _Paths:
        """Append one step: token (N,), the new total log_prob (N,), attn (N, S) or None."""
        tokens = torch.cat([self.tokens, token[:, None]], 1)  # (N, t+1)
        if attn is None:
            return _Paths(tokens, log_prob, None)
        attn = attn.float()[:, None, :]  # (N, 1, S)
        att = attn if self.attention is None else torch.cat([self.attention, attn], 1)
        return _Paths(tokens, log_prob, att)  # attention (N, t+1, S)


def _hypotheses(tokens: Tensor, log_prob: Tensor, score: list[float] | None,
                attention: Tensor | None, real: Tensor) -> list[Hypothesis]:
    """Tensors of F finished outputs -> Hypothesis objects (one device->host copy each).

    tokens (F, t) without EOS; log_prob (F,); score: F floats, or None for score = log_prob;
    attention (F, T', S) or None; real (F, S) bool: the real source positions to keep."""
    lps = log_prob.tolist()
    scores = lps if score is None else score
    toks = tokens.tolist()
    att = None if attention is None else attention.cpu()
    return [Hypothesis(toks[f], scores[f], lps[f], None if att is None else att[f][:, real[f]])
            for f in range(len(toks))]


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
                  max_len: int | None, no_repeat_ngram: int) -> list[list[Hypothesis]]:
    """Decode `copies` outputs per sentence, one token per step chosen by `pick`.

    pick: logits (N, V) with the forbidden tokens at -inf -> chosen tokens (N,). A row whose
    every token is forbidden ends there with log_prob -inf (its tokens so far are kept)."""
    _check_inputs(src, src_lengths, min_len=min_len, no_repeat_ngram=no_repeat_ngram)
    B, device = src.size(0), src.device
    limit = max_lengths(src_lengths, max_len_a=max_len_a, max_len_b=max_len_b, max_len=max_len)
    memory = model.encode(src, src_lengths)
    real = memory.mask.cpu()  # (B, S)
    if copies > 1:
        memory = memory.index_select(torch.arange(B, device=device).repeat_interleave(copies))
    state = model.init_state(memory)
    out: list[Hypothesis | None] = [None] * (B * copies)
    rows = list(range(B * copies))  # output slot of each active row; sentence = slot // copies
    row_limit = torch.tensor([limit[r // copies] for r in rows], device=device)  # (N,)
    paths = _Paths.empty(len(rows), device)
    prev = torch.full((len(rows),), SOS, dtype=torch.long, device=device)  # (N,)
    for t in range(max(limit)):
        logits, state, attn = model.step(prev, state, memory)  # (N, V), _, (N, S) | None
        logits = logits.float()
        banned = forbidden_tokens(paths.tokens, logits.size(-1), min_len=min_len,
                                  no_repeat_ngram=no_repeat_ngram)  # (N, V)
        allowed = logits.masked_fill(banned, NEG_INF)  # (N, V)
        stuck = torch.isneginf(allowed).all(-1)  # (N,) nothing left to choose
        token = torch.where(stuck, EOS, pick(allowed.masked_fill(stuck[:, None], 0.0)))  # (N,)
        token_lp = logits.log_softmax(-1).gather(1, token[:, None]).squeeze(1)  # (N,)
        token_lp = token_lp.masked_fill(stuck, NEG_INF)
        paths = paths.extend(token, paths.log_prob + token_lp, attn)
        ended = (token == EOS) | (row_limit == t + 1)  # (N,)
        if not bool(ended.any()):
            prev = token
            continue
        done = ended.nonzero().squeeze(1)  # (F,)
        at_eos = (token[done] == EOS).tolist()
        done_paths = paths.select(done)
        slots = [rows[i] for i in done.tolist()]
        hyps = _hypotheses(done_paths.tokens, done_paths.log_prob, None, done_paths.attention,
                           real[[s // copies for s in slots]])
        for slot, hyp, eos in zip(slots, hyps, at_eos, strict=True):
            if eos:  # the EOS was appended to tokens; the attention row of its step stays
                hyp.tokens.pop()
            out[slot] = hyp
        keep = (~ended).nonzero().squeeze(1)  # (N',)
        if keep.numel() == 0:
            break
        rows = [rows[i] for i in keep.tolist()]
        row_limit, paths, prev = row_limit[keep], paths.select(keep), token[keep]
        memory, state = memory.index_select(keep), state.index_select(keep)
    return [[h for h in out[b * copies : (b + 1) * copies] if h is not None] for b in range(B)]


@torch.no_grad()
def greedy_search(model, src: Tensor, src_lengths: Tensor, *, max_len_a: float = 1.5,
                  max_len_b: int = 10, max_len: int | None = None, min_len: int = 0,
                  no_repeat_ngram: int = 0) -> list[list[Hypothesis]]:
    """Greedy decoding: y_t = argmax_y log p(y | y_<t, x) over the allowed tokens, until EOS or
    T_max steps.

    src (B, S) long padded with PAD; src_lengths (B,) long. Returns B lists of one Hypothesis
    each, score = log_prob. Equal to `beam_search` with beam_size=1 and no penalties."""
    return _decode_paths(model, src, src_lengths, pick=lambda logits: logits.argmax(-1),
                         copies=1, min_len=min_len, max_len_a=max_len_a, max_len_b=max_len_b,
                         max_len=max_len, no_repeat_ngram=no_repeat_ngram)


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
           min_len: int = 0, no_repeat_ngram: int = 0) -> list[list[Hypothesis]]:
    """Ancestral sampling: y_t ~ softmax(filter_logits(logits_t)) step by step (see
    `filter_logits` for temperature, top-k and top-p), until EOS or T_max steps.

    src (B, S), src_lengths (B,). Returns B lists of `num_samples` Hypotheses in sampling order
    (not sorted). log_prob and score are the *model's* log-prob of the sample (temperature 1, no
    filtering), not the probability under the filtered distribution.
    Randomness comes from a private torch.Generator seeded with `seed` (fresh nondeterministic
    seed when None); the global RNG is never used. The same seed, input, batch composition and
    device give the same samples."""
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
        probs = filter_logits(logits, temperature=temperature, top_k=top_k, top_p=top_p).softmax(-1)
        return torch.multinomial(probs, 1, generator=generator).squeeze(1)

    return _decode_paths(model, src, src_lengths, pick=pick, copies=num_samples,
                         min_len=min_len, max_len_a=max_len_a, max_len_b=max_len_b,
                         max_len=max_len, no_repeat_ngram=no_repeat_ngram)


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


@torch.no_grad()
def beam_search(model, src: Tensor, src_lengths: Tensor, *, beam_size: int, n_best: int = 1,
                length_penalty: float = 0.0, coverage_penalty: float = 0.0, min_len: int = 0,
                max_len_a: float = 1.5, max_len_b: int = 10, max_len: int | None = None,
                no_repeat_ngram: int = 0) -> list[list[Hypothesis]]:
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
        the same beam;
      * at T_max(b): its open hypotheses are finished as they are, without EOS, and compete;
      * when no open hypothesis has a finite log-prob left.
    A done sentence leaves the batch (memory and state are index_selected to the rest).
    A sentence that ends with no hypothesis at all (every path hit forbidden tokens only)
    gets one empty Hypothesis of score -inf.
    """
    _check_inputs(src, src_lengths, min_len=min_len, no_repeat_ngram=no_repeat_ngram)
    if beam_size < 1 or not 1 <= n_best <= beam_size:
        raise ValueError(f"need beam_size >= 1 and 1 <= n_best <= beam_size, "
                         f"got beam_size={beam_size}, n_best={n_best}")
    if coverage_penalty < 0:
        raise ValueError("coverage_penalty (GNMT beta) must be >= 0")
    alpha, beta = length_penalty, coverage_penalty
    B, K, device = src.size(0), beam_size, src.device
    limit = max_lengths(src_lengths, max_len_a=max_len_a, max_len_b=max_len_b, max_len=max_len)
    memory = model.encode(src, src_lengths)
    real = memory.mask.cpu()  # (B, S)
    memory = memory.index_select(torch.arange(B, device=device).repeat_interleave(K))  # (B*K,)
    state = model.init_state(memory)
    finished: list[list[Hypothesis]] = [[] for _ in range(B)]
    sents = list(range(B))  # the sentence of each active block of K rows
    paths = _Paths.empty(B * K, device)
    paths.log_prob.view(B, K)[:, 1:] = NEG_INF
    prev = torch.full((B * K,), SOS, dtype=torch.long, device=device)  # (N,)
    has_attention = False

    def finish(rows: Tensor, blocks: list[int], p: _Paths, length: int) -> None:
        """Rank the outputs p (F rows) of `length` steps from blocks (F,), keep n_best each."""
        att = p.attention
        cp = [0.0] * rows.numel()
        if beta > 0:
            if att is None:
                raise ValueError("coverage_penalty needs a model that returns attention")
            cp = gnmt_coverage_penalty(att, memory.mask[rows], beta).tolist()
        lp_len = gnmt_length_penalty(length, alpha)
        scores = [lp / lp_len + c for lp, c in zip(p.log_prob.tolist(), cp, strict=True)]
        hyps = _hypotheses(p.tokens, p.log_prob, scores, att, real[[sents[i] for i in blocks]])
        for block, hyp in zip(blocks, hyps, strict=True):
            fin = finished[sents[block]]
            fin.append(hyp)
            fin.sort(key=lambda h: -h.score)  # stable: ties keep the order of finishing
            del fin[n_best:]

    for t in range(max(limit)):
        Bn = len(sents)
        logits, state, attn = model.step(prev, state, memory)  # (Bn*K, V), _, (Bn*K, S) | None
        has_attention = has_attention or attn is not None
        V = logits.size(-1)
        banned = forbidden_tokens(paths.tokens, V, min_len=min_len, no_repeat_ngram=no_repeat_ngram)
        token_lp = logits.float().log_softmax(-1).masked_fill(banned, NEG_INF)  # (Bn*K, V)
        total = (paths.log_prob[:, None] + token_lp).view(Bn, K * V)  # (Bn, K*V)
        top_lp, top_i = total.topk(2 * K, dim=1)  # (Bn, 2K), best first
        parent = top_i // V + K * torch.arange(Bn, device=device)[:, None]  # (Bn, 2K) row ids
        token = top_i % V  # (Bn, 2K)
        is_eos = token == EOS

        # 2. EOS candidates among the K best become finished hypotheses.
        ends = is_eos[:, :K] & torch.isfinite(top_lp[:, :K])  # (Bn, K)
        if bool(ends.any()):
            rows = parent[:, :K][ends]  # (F,)
            done = paths.select(rows).extend(token[:, :K][ends], top_lp[:, :K][ends],
                                             None if attn is None else attn[rows])
            done.tokens = done.tokens[:, :-1]  # drop the EOS
            finish(rows, ends.nonzero()[:, 0].tolist(), done, t + 1)

        # 3. The K best non-EOS candidates go on.
        keep_lp, keep_j = top_lp.masked_fill(is_eos, NEG_INF).topk(K, dim=1)  # (Bn, K)
        keep_parent = parent.gather(1, keep_j).view(-1)  # (Bn*K,)
        keep_token = token.gather(1, keep_j).view(-1)  # (Bn*K,)
        paths = paths.select(keep_parent).extend(
            keep_token, keep_lp.view(-1), None if attn is None else attn[keep_parent])

        # Which sentences are done.
        best_open = keep_lp[:, 0].tolist()  # (Bn,)
        done_blocks = []
        for i, s in enumerate(sents):
            fin = finished[s]
            if t + 1 >= limit[s]:
                rows = (i * K + torch.arange(K, device=device))[torch.isfinite(keep_lp[i])]
                if rows.numel():
                    finish(rows, [i] * rows.numel(), paths.select(rows), t + 1)
                done_blocks.append(i)
            elif best_open[i] == NEG_INF or (
                len(fin) >= n_best
                and score_upper_bound(best_open[i], t + 1, limit[s], alpha) <= fin[-1].score
            ):
                done_blocks.append(i)

        # Reorder the state by the back-pointers; drop the done sentences.
        if not done_blocks:
            state, prev = state.index_select(keep_parent), keep_token
            continue
        if len(done_blocks) == Bn:
            break
        gone = set(done_blocks)
        blocks = torch.tensor([i for i in range(Bn) if i not in gone], device=device)  # (Bn',)
        rows = (blocks[:, None] * K + torch.arange(K, device=device)).view(-1)  # (Bn'*K,)
        sents = [s for i, s in enumerate(sents) if i not in gone]
        state = state.index_select(keep_parent[rows])
        memory, paths, prev = memory.index_select(rows), paths.select(rows), keep_token[rows]

    for s, fin in enumerate(finished):
        if not fin:
            empty = torch.zeros(0, int(real[s].sum())) if has_attention else None
            fin.append(Hypothesis([], NEG_INF, NEG_INF, empty))
    return finished

