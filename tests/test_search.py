"""Tests of seqlab.search against a scripted decoder whose next-token distributions are known.

The scripted model keeps the decoder protocol of seqlab.search. A sentence is identified by its
real source tokens (its "key"), so the same sentence behaves the same alone, in a batch, with
or without padding. The next-token logits and the attention weights are a fixed function
fn(key, prefix) of the sentence and the tokens generated so far; the expected answers below are
computed from fn directly (by hand, or by enumerating every output), never by running a search.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import random

import pytest
import torch

from seqlab import search
from seqlab.search import beam_search, greedy_search, sample
from seqlab.vocab import EOS, PAD, SOS

A, B_, C = 4, 5, 6  # the real output tokens
REAL = (A, B_, C)
V = 7  # PAD UNK SOS EOS a b c
INF = float("inf")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tensors here are tiny: intra-op threads only add wake-up latency (ms per op on a busy
    machine). Restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ----------------------------------------------------------------------------------------------
# The scripted model


class Memory:
    """Per-row sentence keys and the source mask; index_select really reorders."""

    def __init__(self, keys: list[tuple], mask: torch.Tensor):
        self.keys, self.mask = keys, mask

    def index_select(self, index: torch.Tensor) -> Memory:
        return Memory([self.keys[i] for i in index.tolist()], self.mask[index])


class State:
    """Per-row sentence key and the prefix generated so far (None before the first step)."""

    def __init__(self, keys: list[tuple], prefixes: list[tuple | None]):
        self.keys, self.prefixes = keys, prefixes

    def index_select(self, index: torch.Tensor) -> State:
        idx = index.tolist()
        return State([self.keys[i] for i in idx], [self.prefixes[i] for i in idx])


class Scripted:
    """fn(key, prefix) -> (logits over V, attention weights over the key's positions)."""

    def __init__(self, fn, *, attention: bool = True):
        self.fn, self.attention = fn, attention
        self.batch_sizes: list[int] = []  # rows seen by each call of step

    @property
    def steps(self) -> int:
        return len(self.batch_sizes)

    def encode(self, src, src_lengths):
        keys = []
        for row, n in zip(src.tolist(), src_lengths.tolist(), strict=True):
            assert PAD not in row[:n] and all(x == PAD for x in row[n:])
            keys.append(tuple(row[:n]))
        mask = torch.arange(src.size(1))[None, :] < src_lengths[:, None]  # (B, S)
        return Memory(keys, mask)

    def init_state(self, memory):
        return State(list(memory.keys), [None] * len(memory.keys))

    def step(self, prev, state, memory):
        assert state.keys == memory.keys, "state and memory rows out of step"
        self.batch_sizes.append(len(prev))
        N, S = len(prev), memory.mask.size(1)
        logits, attn, prefixes = torch.empty(N, V), torch.zeros(N, S), []
        for i, (key, before, tok) in enumerate(
            zip(state.keys, state.prefixes, prev.tolist(), strict=True)
        ):
            if before is None:
                assert tok == SOS
                prefix = ()
            else:
                prefix = before + (tok,)
            lg, at = self.fn(key, prefix)
            logits[i] = torch.tensor(lg)
            attn[i, : len(key)] = torch.tensor(at)
            prefixes.append(prefix)
        return logits, State(list(state.keys), prefixes), attn if self.attention else None


def prefix_attention(key: tuple, prefix: tuple, salt: str = "") -> list[float]:
    """Positive weights over the key's positions summing to 1, a function of the prefix."""
    rng = random.Random(f"attn/{salt}/{key}/{prefix}")
    w = [rng.random() + 0.05 for _ in key]
    return [x / sum(w) for x in w]


def random_model(seed: int, *, sharp: float = 2.0, eos_bias: float = 0.0, eos_shift: float = 0.0):
    """A deterministic pseudo-random fn: every sentence and every prefix has its own
    distribution over EOS a b c (PAD UNK SOS impossible). EOS logit += eos_shift +
    eos_bias * len(prefix)."""

    @functools.cache
    def fn(key, prefix):
        rng = random.Random(f"{seed}/{key}/{prefix}")
        logits = [-INF] * V
        for tok in (EOS, *REAL):
            logits[tok] = rng.gauss(0.0, sharp)
        logits[EOS] += eos_shift + eos_bias * len(prefix)
        return tuple(logits), tuple(prefix_attention(key, prefix, str(seed)))

    return fn


def table_model(table: dict[tuple, dict[int, float]], default: dict[int, float]):
    """fn from a table prefix -> {token: probability}; unlisted prefixes use `default`."""

    def fn(key, prefix):
        probs = table.get(prefix, default)
        assert abs(sum(probs.values()) - 1) < 1e-12
        logits = [math.log(probs[t]) if probs.get(t) else -INF for t in range(V)]
        return logits, prefix_attention(key, prefix)

    return fn


def batch(keys: list[tuple]) -> tuple[torch.Tensor, torch.Tensor]:
    """Sentences -> src (B, S) padded with PAD, src_lengths (B,)."""
    S = max(len(k) for k in keys)
    src = torch.tensor([list(k) + [PAD] * (S - len(k)) for k in keys])
    return src, torch.tensor([len(k) for k in keys])


def log_softmax(logits: list[float]) -> list[float]:
    m = max(logits)
    z = m + math.log(sum(math.exp(x - m) for x in logits if x > -INF))
    return [x - z for x in logits]


def model_log_prob(fn, key, tokens, eos: bool) -> float:
    """log p(tokens [+ EOS] | key) under fn, in float64."""
    seq = list(tokens) + ([EOS] if eos else [])
    return sum(log_softmax(fn(key, tuple(tokens[:i]))[0])[tok] for i, tok in enumerate(seq))


def all_outputs(fn, key, limit: int, min_len: int = 0):
    """Every output a search can return for `key` with T_max = limit:
    (tokens, log_prob, attention rows, ended with EOS)."""
    out = []

    def grow(prefix, lp, rows):
        logits, att = fn(key, prefix)
        logp, rows = log_softmax(logits), rows + [att]
        if len(prefix) >= min_len and logp[EOS] > -INF:
            out.append((prefix, lp + logp[EOS], rows, True))
        for tok in REAL:
            if logp[tok] == -INF:
                continue
            if len(prefix) + 1 == limit:
                out.append((prefix + (tok,), lp + logp[tok], rows, False))
            else:
                grow(prefix + (tok,), lp + logp[tok], rows)

    grow((), 0.0, [])
    return out


def gnmt(tokens, lp, rows, eos, alpha, beta) -> float:
    """GNMT score, written out: lp / ((5+|Y|)/6)^alpha + beta * sum_i log(min(cov_i, 1))."""
    n = len(tokens) + eos
    cov = [min(sum(r[i] for r in rows), 1.0) for i in range(len(rows[0]))]
    return lp / ((5 + n) / 6) ** alpha + beta * sum(math.log(c) for c in cov)


def same(got, want, tol=1e-4):
    """Two lists of hypotheses agree: tokens exactly, scores and log-probs to float32 rounding."""
    assert [h.tokens for h in got] == [h.tokens for h in want]
    assert [h.score for h in got] == pytest.approx([h.score for h in want], abs=tol)
    assert [h.log_prob for h in got] == pytest.approx([h.log_prob for h in want], abs=tol)


KEYS = [(7, 8, 9), (9,), (8, 8, 7, 9, 7), (7, 9)]


# ----------------------------------------------------------------------------------------------
# 1. Exact hypotheses and scores on a hand-made table

HAND = {
    (): {A: 0.5, B_: 0.45, EOS: 0.05},
    (A,): {A: 0.6, EOS: 0.3, B_: 0.1},
    (A, A): {A: 0.88, EOS: 0.1, B_: 0.02},
    (A, A, A): {EOS: 0.95, A: 0.03, B_: 0.02},
    (B_,): {EOS: 0.7, A: 0.2, B_: 0.1},
}
HAND_DEFAULT = {EOS: 0.9, A: 0.05, B_: 0.05}
# Greedy: a a a EOS, p = .5*.6*.88*.95 = .2508.   Best at alpha 0: b EOS, p = .45*.7 = .315.
# Beam 2, alpha 0: step 1 ranks b.EOS .315 > a.a .3 > a.EOS .15 > b.a .09: [b] finishes and the
# best open (.3) cannot beat it (log-probs only fall): stop after 2 steps.
# Alpha 1 (lp(n) = (5+n)/6): [b] -> log(.315)/(7/6) = -0.990, [a a a] -> log(.2508)/(9/6) =
# -0.922 wins; [b a] -> log(.081)/(8/6), [a] -> log(.15)/(7/6) = -1.63, all others lower.


def test_greedy_follows_the_argmax():
    model = Scripted(table_model(HAND, HAND_DEFAULT))
    [[h]] = greedy_search(model, *batch([(7, 8)]), max_len_a=0, max_len_b=5)
    assert h.tokens == [A, A, A]
    assert h.log_prob == pytest.approx(math.log(0.5) + math.log(0.6) + math.log(0.88)
                                       + math.log(0.95), abs=1e-5)
    assert h.score == h.log_prob
    assert model.steps == 4


def test_beam_finds_the_best_sequence_greedy_misses():
    model = Scripted(table_model(HAND, HAND_DEFAULT))
    [[h]] = beam_search(model, *batch([(7, 8)]), beam_size=2, max_len_a=0, max_len_b=5)
    assert h.tokens == [B_]
    assert h.log_prob == pytest.approx(math.log(0.45) + math.log(0.7), abs=1e-5)
    assert h.score == pytest.approx(h.log_prob, abs=1e-6)
    assert model.steps == 2  # the open a.a (.3) can no longer beat .315


def test_length_penalty_changes_the_ranking_to_the_known_answer():
    model = Scripted(table_model(HAND, HAND_DEFAULT))
    hyps = beam_search(model, *batch([(7, 8)]), beam_size=2, n_best=2, length_penalty=1.0,
                       max_len_a=0, max_len_b=5)[0]
    aaa = math.log(0.5) + math.log(0.6) + math.log(0.88) + math.log(0.95)
    b = math.log(0.45) + math.log(0.7)
    assert [h.tokens for h in hyps] == [[A, A, A], [B_]]
    assert [h.log_prob for h in hyps] == pytest.approx([aaa, b], abs=1e-5)
    assert [h.score for h in hyps] == pytest.approx([aaa / (9 / 6), b / (7 / 6)], abs=1e-5)
    # Step 3 finishes a a a; the best open a a a a has p = .2508/.95*.03 = .00792 and
    # log(.00792) / lp(T_max = 5) = -2.90 < -0.99, the 2nd best finished: stop after 4 steps.
    assert model.steps == 4


def test_stopping_bound_with_alpha_above_zero_looks_at_the_longest_length():
    """alpha = 1, lp(n) = (5+n)/6, T_max = 8. After step 2, [b] (p .55) is finished with
    score log(.55)/(7/6) = -0.512 and the open a a has log-prob log(.45*.97) = -0.829.
    Dividing by lp(3) would give -0.622 and stop there; but a a could still end at length 8
    (lp = 13/6, bound -0.383), and indeed a^6 EOS (p .45*.97^5*.99) scores
    log(.3826)/(12/6) = -0.480 and wins after 7 steps."""
    chain = {(A,) * k: {A: 0.97, EOS: 0.03} for k in range(1, 6)}
    table = {(): {B_: 0.55, A: 0.45}, (B_,): {EOS: 1.0}, (A,) * 6: {EOS: 0.99, A: 0.01}, **chain}
    model = Scripted(table_model(table, {EOS: 0.99, A: 0.005, B_: 0.005}))
    [[h]] = beam_search(model, *batch([(7,)]), beam_size=2, length_penalty=1.0, max_len_a=0,
                        max_len_b=8)
    log_prob = math.log(0.45) + 5 * math.log(0.97) + math.log(0.99)
    assert h.tokens == [A] * 6
    assert h.score == pytest.approx(log_prob / 2, abs=1e-5)
    assert model.steps == 7


def test_heuristic_stopping_scores_the_open_hypothesis_as_if_it_ended_next():
    """The case above with stopping="heuristic": after step 2 the open a a is scored
    log(.45*.97) / lp(3) = -0.622 < -0.512, the finished [b], so the search stops there and
    returns [b], missing the a^6 that exact stopping finds."""
    chain = {(A,) * k: {A: 0.97, EOS: 0.03} for k in range(1, 6)}
    table = {(): {B_: 0.55, A: 0.45}, (B_,): {EOS: 1.0}, (A,) * 6: {EOS: 0.99, A: 0.01}, **chain}
    model = Scripted(table_model(table, {EOS: 0.99, A: 0.005, B_: 0.005}))
    [[h]] = beam_search(model, *batch([(7,)]), beam_size=2, length_penalty=1.0, max_len_a=0,
                        max_len_b=8, stopping="heuristic")
    assert h.tokens == [B_]
    assert h.score == pytest.approx(math.log(0.55) / (7 / 6), abs=1e-5)
    assert model.steps == 2
    with pytest.raises(ValueError, match="stopping"):
        beam_search(model, *batch([(7,)]), beam_size=2, stopping="eager")


@pytest.mark.parametrize("alpha", [0.0, -0.5])
def test_heuristic_stopping_is_exact_without_a_positive_length_penalty(alpha):
    """For alpha <= 0 the score at the next length is the bound itself: same outputs, same
    steps as exact stopping."""
    for seed in range(4):
        fn = random_model(300 + seed, sharp=1.0)
        opts = dict(beam_size=3, n_best=2, length_penalty=alpha, max_len_a=0.5, max_len_b=4)
        exact_model, heuristic_model = Scripted(fn), Scripted(fn)
        exact = beam_search(exact_model, *batch(KEYS), **opts)
        heuristic = beam_search(heuristic_model, *batch(KEYS), stopping="heuristic", **opts)
        for a, b in zip(exact, heuristic, strict=True):
            same(a, b, tol=1e-6)
        assert exact_model.batch_sizes == heuristic_model.batch_sizes


def test_stopping_bound_with_alpha_below_zero_looks_at_the_next_length():
    """alpha = -1, lp(n) = 6/(5+n), T_max = 10. After step 1, [] (p .4) is finished with score
    log(.4) = -0.916 and the open a has log-prob log(.6). Dividing by lp(T_max) would give
    log(.6)*15/6 = -1.28 and stop; but a can end at length 2 (bound log(.6)*7/6 = -0.60), and
    indeed a EOS scores log(.6*.95)*7/6 = -0.656 and wins."""
    table = {(): {A: 0.6, EOS: 0.4}, (A,): {EOS: 0.95, A: 0.03, B_: 0.02}}
    model = Scripted(table_model(table, {EOS: 0.9, A: 0.05, B_: 0.05}))
    [[h]] = beam_search(model, *batch([(7,)]), beam_size=2, length_penalty=-1.0, max_len_a=0,
                        max_len_b=10)
    assert h.tokens == [A]
    assert h.score == pytest.approx(math.log(0.6 * 0.95) * 7 / 6, abs=1e-5)
    assert model.steps == 2


def test_coverage_penalty_hand_computed():
    fn = table_model(HAND, HAND_DEFAULT)
    key = (7, 8, 9)
    hyps = beam_search(Scripted(fn), *batch([key]), beam_size=2, n_best=2, coverage_penalty=0.5,
                       max_len_a=0, max_len_b=5)[0]

    def cp(steps):  # 0.5 * sum_i log(min(sum_j a_ij, 1)) over the decoder inputs `steps`
        rows = [prefix_attention(key, p) for p in steps]
        return 0.5 * sum(math.log(min(sum(r[i] for r in rows), 1.0)) for i in range(3))

    b = math.log(0.45) + math.log(0.7) + cp([(), (B_,)])
    aaa = (math.log(0.5) + math.log(0.6) + math.log(0.88) + math.log(0.95)
           + cp([(), (A,), (A, A), (A, A, A)]))
    assert cp([(), (B_,)]) < -0.5 and aaa > b  # b EOS attends too little: a a a now wins
    assert [h.tokens for h in hyps] == [[A, A, A], [B_]]
    assert [h.score for h in hyps] == pytest.approx([aaa, b], abs=1e-5)


# ----------------------------------------------------------------------------------------------
# 2. Exhaustive: a beam that prunes nothing returns the exact n best of every output


@pytest.mark.parametrize(
    "alpha, beta, min_len",
    [(0.0, 0.0, 0), (0.8, 0.0, 0), (2.5, 0.0, 0), (-0.7, 0.0, 0), (0.6, 0.4, 0), (0.0, 0.0, 2),
     (1.0, 0.3, 3)],
)
def test_beam_equals_exhaustive_search(alpha, beta, min_len):
    fn, limit, n = random_model(11, sharp=1.5), 4, 6
    keys = KEYS[:3]
    # At most 3**3 open prefixes x 4 tokens = 108 candidates per step: a beam of 108 keeps all.
    got = beam_search(Scripted(fn), *batch(keys), beam_size=108, n_best=n, length_penalty=alpha,
                      coverage_penalty=beta, min_len=min_len, max_len_a=0, max_len_b=limit)
    for key, hyps in zip(keys, got, strict=True):
        outs = all_outputs(fn, key, limit, min_len)
        ranked = sorted(((gnmt(*o, alpha, beta), o) for o in outs), key=lambda so: -so[0])[:n + 1]
        assert all(s1 - s2 > 1e-4 for (s1, _), (s2, _) in itertools.pairwise(ranked))  # no ties
        assert [h.tokens for h in hyps] == [list(o[0]) for _, o in ranked[:n]]
        assert [h.score for h in hyps] == pytest.approx([s for s, _ in ranked[:n]], abs=1e-4)
        assert [h.log_prob for h in hyps] == pytest.approx([o[1] for _, o in ranked[:n]], abs=1e-4)


# ----------------------------------------------------------------------------------------------
# 3.-6. Invariants


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("min_len, ngram", [(0, 0), (2, 0), (0, 2)])
def test_beam_of_one_is_greedy(seed, min_len, ngram):
    fn = random_model(seed, eos_bias=0.5)
    src, lengths = batch(KEYS)
    opts = dict(min_len=min_len, no_repeat_ngram=ngram, max_len_a=1.0, max_len_b=3,
                with_attention=True)
    greedy = greedy_search(Scripted(fn), src, lengths, **opts)
    beam = beam_search(Scripted(fn), src, lengths, beam_size=1, **opts)
    for g, b in zip(greedy, beam, strict=True):
        same(b, g, tol=1e-5)
        torch.testing.assert_close(b[0].attention, g[0].attention)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("min_len, ngram", [(0, 0), (2, 0), (0, 2), (5, 1)])
def test_greedy_without_scores_gives_the_same_outputs_and_takes_no_normaliser(
        seed, min_len, ngram, monkeypatch):
    """scores=False: the same tokens and attention (also for rows stuck with nothing allowed:
    min_len 5 with every token at most once), nan scores, and no logsumexp taken."""
    import seqlab.search

    fn = random_model(seed, eos_bias=0.5)
    src, lengths = batch(KEYS)
    opts = dict(min_len=min_len, no_repeat_ngram=ngram, max_len_a=1.0, max_len_b=3,
                with_attention=True)
    scored = greedy_search(Scripted(fn), src, lengths, **opts)
    calls = []
    lse = seqlab.search.logsumexp_rows
    monkeypatch.setattr(seqlab.search, "logsumexp_rows", lambda x: calls.append(1) or lse(x))
    plain = greedy_search(Scripted(fn), src, lengths, scores=False, **opts)
    assert calls == []
    for [s], [p] in zip(scored, plain, strict=True):
        assert p.tokens == s.tokens
        torch.testing.assert_close(p.attention, s.attention)
        assert math.isnan(p.score) and math.isnan(p.log_prob)
    greedy_search(Scripted(fn), src, lengths, **opts)
    assert calls  # the spy sees the scored search's normaliser


@pytest.mark.parametrize("size", [1, 2, 5])
def test_batched_equals_one_by_one(size):
    fn = random_model(3, eos_bias=0.3)
    rng = random.Random(size)
    keys = [tuple(rng.choice([7, 8, 9]) for _ in range(rng.randint(1, 6))) for _ in range(size)]
    opts = dict(max_len_a=1.0, max_len_b=2)
    beam_opts = dict(beam_size=3, n_best=3, length_penalty=0.7, coverage_penalty=0.2, **opts)
    together = beam_search(Scripted(fn), *batch(keys), **beam_opts)
    greedy_together = greedy_search(Scripted(fn), *batch(keys), **opts)
    for i, key in enumerate(keys):
        same(together[i], beam_search(Scripted(fn), *batch([key]), **beam_opts)[0])
        same(greedy_together[i], greedy_search(Scripted(fn), *batch([key]), **opts)[0])
        # extra padding (a longer neighbour) changes nothing either
        padded = beam_search(Scripted(fn), *batch([key, key + (7,) * 4]), **beam_opts)[0]
        same(together[i], padded)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("alpha, beta", [(0.0, 0.0), (1.0, 0.0), (0.5, 0.5)])
def test_top_of_n_best_is_the_one_best(seed, alpha, beta):
    fn = random_model(100 + seed, eos_bias=0.3)
    opts = dict(beam_size=4, length_penalty=alpha, coverage_penalty=beta, max_len_a=1.0,
                max_len_b=3)
    n_best = beam_search(Scripted(fn), *batch(KEYS), n_best=4, **opts)
    one = beam_search(Scripted(fn), *batch(KEYS), n_best=1, **opts)
    for many, best in zip(n_best, one, strict=True):
        assert len(many) == 4 and len(best) == 1
        same(many[:1], best)
        assert [h.score for h in many] == sorted((h.score for h in many), reverse=True)


def test_early_stopping_is_sound(monkeypatch):
    """Stopping at the bound gives exactly the result of running every sentence to T_max."""
    cases = [(seed, K, alpha, beta) for seed in range(4) for K in (2, 3)
             for alpha, beta in [(0.0, 0.0), (0.7, 0.0), (2.0, 0.3), (-0.5, 0.0)]]
    steps_stopped = steps_full = 0
    for seed, K, alpha, beta in cases:
        fn = random_model(200 + seed, sharp=1.0)
        opts = dict(beam_size=K, n_best=K, length_penalty=alpha, coverage_penalty=beta,
                    max_len_a=0.5, max_len_b=4)
        stopped_model, full_model = Scripted(fn), Scripted(fn)
        stopped = beam_search(stopped_model, *batch(KEYS), **opts)
        with monkeypatch.context() as m:
            m.setattr(search, "score_upper_bound", lambda *args: INF)  # never stop early
            full = beam_search(full_model, *batch(KEYS), **opts)
        for a, b in zip(stopped, full, strict=True):
            same(a, b, tol=1e-5)
        steps_stopped += sum(stopped_model.batch_sizes)
        steps_full += sum(full_model.batch_sizes)
    assert steps_stopped < steps_full  # and the stopping rule does save work


def displaced(fn, key, hyp, K: int, limit: int) -> bool:
    """Can a beam of K lose this hypothesis at all? Only if at some length t, K other outputs
    or prefixes of length t are at least as likely as its own length-t prefix (necessary for
    it to fall out of the K best candidates of a step)."""
    items = [(tuple(tokens), lp, eos) for tokens, lp, _, eos in all_outputs(fn, key, limit)]
    items += [(p, model_log_prob(fn, key, p, False), False)
              for t in range(1, limit) for p in itertools.product(REAL, repeat=t)]
    mine = [(tuple(hyp.tokens[:t]), False) for t in range(1, len(hyp.tokens) + 1)]
    if hyp.attention.shape[0] > len(hyp.tokens):  # it ended with EOS
        mine.append((tuple(hyp.tokens), True))
    for tokens, eos in mine:
        lp = model_log_prob(fn, key, tokens, eos)
        n = len(tokens) + eos
        rivals = sum(1 for p, q, e in items
                     if len(p) + e == n and (p, e) != (tokens, eos) and q >= lp - 1e-9)
        if rivals >= K:
            return True
    return False


def test_beam_is_never_worse_than_greedy_unless_greedy_can_be_pruned():
    """Beam search is not monotone in K: a beam can drop greedy's prefix for K better-looking
    ones that later turn out worse (see the next test). So the claim, checked across many
    random models, is: beam log-prob >= greedy log-prob, unless greedy's path can be pushed out
    of the K best at some step (a necessary condition, checked by enumeration)."""
    limit, checked, better = 5, 0, 0
    for seed in range(40):
        fn = random_model(300 + seed, sharp=1.0)
        key = KEYS[seed % len(KEYS)]
        [[g]] = greedy_search(Scripted(fn), *batch([key]), max_len_a=0, max_len_b=limit,
                              with_attention=True)
        for K in (2, 3):
            [[b]] = beam_search(Scripted(fn), *batch([key]), beam_size=K, max_len_a=0,
                                max_len_b=limit)
            if not displaced(fn, key, g, K, limit):
                checked += 1
                assert b.log_prob >= g.log_prob - 1e-5, (seed, K)
            better += b.log_prob > g.log_prob + 1e-5
    assert checked >= 20 and better >= 10  # the claim was tested, and beams do help


def test_beam_can_be_worse_than_greedy():
    """The known counterexample: beam 2 keeps b a, b b (.225 each) over greedy's a a (.17),
    which ends at once, and then the b-paths collapse."""
    table = {
        (): {A: 0.5, B_: 0.45, EOS: 0.05},
        (A,): {A: 0.34, B_: 0.33, EOS: 0.33},
        (A, A): {EOS: 1.0},
        (B_,): {A: 0.5, B_: 0.5},
    }
    fn = table_model(table, {EOS: 0.01, A: 0.495, B_: 0.495})
    [[g]] = greedy_search(Scripted(fn), *batch([(7,)]), max_len_a=0, max_len_b=5)
    [[b]] = beam_search(Scripted(fn), *batch([(7,)]), beam_size=2, max_len_a=0, max_len_b=5)
    assert g.tokens == [A, A]
    assert g.log_prob == pytest.approx(math.log(0.5 * 0.34), abs=1e-5)
    assert b.tokens[:1] == [B_] and b.log_prob < g.log_prob


# ----------------------------------------------------------------------------------------------
# 7. Attention follows the back-pointers


def test_attention_is_the_models_along_the_returned_prefix():
    fn = random_model(5, eos_bias=0.4)
    runs = {
        "beam": beam_search(Scripted(fn), *batch(KEYS), beam_size=4, n_best=4, max_len_a=1.0,
                            max_len_b=3, with_attention=True),
        "greedy": greedy_search(Scripted(fn), *batch(KEYS), max_len_a=1.0, max_len_b=3,
                                with_attention=True),
        "sample": sample(Scripted(fn), *batch(KEYS), num_samples=5, seed=0, max_len_a=1.0,
                         max_len_b=3, with_attention=True),
    }
    for name, results in runs.items():
        for key, hyps in zip(KEYS, results, strict=True):
            limit = int(1.0 * len(key) + 3)
            for h in hyps:
                eos = len(h.tokens) < limit
                want = torch.tensor([fn(key, tuple(h.tokens[:i]))[1]
                                     for i in range(len(h.tokens) + eos)])
                assert h.attention.shape == (len(h.tokens) + eos, len(key)), name
                torch.testing.assert_close(h.attention, want, msg=name)
                assert h.log_prob == pytest.approx(model_log_prob(fn, key, h.tokens, eos),
                                                   abs=1e-4)


def test_model_without_attention():
    model = Scripted(random_model(1), attention=False)
    for hyps in beam_search(model, *batch(KEYS), beam_size=3, n_best=2, with_attention=True):
        assert all(h.attention is None for h in hyps)
    assert greedy_search(model, *batch(KEYS), with_attention=True)[0][0].attention is None
    with pytest.raises(ValueError, match="attention"):
        beam_search(model, *batch(KEYS), beam_size=3, coverage_penalty=0.2)


# ----------------------------------------------------------------------------------------------
# 8. Constraints and sampling


def eager_eos(key, prefix):
    """EOS is by far the most likely token; then a, b, c."""
    return [-INF, -INF, -INF, 5.0, 1.0, 0.5, 0.0], prefix_attention(key, prefix)


def never_eos(key, prefix):
    logits = list(random_model(9)(key, prefix)[0])
    logits[EOS] = -INF
    return logits, prefix_attention(key, prefix)


def all_searches(model_fn, src, lengths, **opts):
    yield from greedy_search(Scripted(model_fn), src, lengths, **opts)
    yield from beam_search(Scripted(model_fn), src, lengths, beam_size=3, n_best=3, **opts)
    yield from sample(Scripted(model_fn), src, lengths, num_samples=4, seed=1, **opts)


def test_min_len_is_respected():
    for hyps in all_searches(eager_eos, *batch(KEYS), min_len=3):
        assert hyps and all(len(h.tokens) >= 3 for h in hyps)
    [[h]] = greedy_search(Scripted(eager_eos), *batch([(7,)]), min_len=3)
    assert len(h.tokens) == 3  # EOS as soon as it is allowed


@pytest.mark.parametrize("a, b, cap", [(1.5, 2, None), (0.0, 3, None), (2.0, 10, 6)])
def test_max_length_is_respected(a, b, cap):
    src, lengths = batch(KEYS)
    limits = [min(int(a * len(k) + b), cap or 10**9) for k in KEYS]
    opts = dict(max_len_a=a, max_len_b=b, max_len=cap, with_attention=True)
    model = Scripted(never_eos)
    runs = {
        "greedy": greedy_search(model, src, lengths, **opts),
        "beam": beam_search(Scripted(never_eos), src, lengths, beam_size=2, n_best=2, **opts),
        "sample": sample(Scripted(never_eos), src, lengths, num_samples=3, seed=0, **opts),
    }
    for name, results in runs.items():
        for limit, hyps in zip(limits, results, strict=True):
            assert hyps and all(len(h.tokens) == limit for h in hyps), name
            assert all(h.attention.shape[0] == limit for h in hyps), name
    assert model.steps == max(limits)
    # With EOS possible: at most T_max steps, i.e. tokens plus the EOS if any.
    fn = random_model(2, eos_bias=-0.5)
    for results in [greedy_search(Scripted(fn), src, lengths, **opts),
                    beam_search(Scripted(fn), src, lengths, beam_size=3, n_best=3, **opts)]:
        for limit, hyps in zip(limits, results, strict=True):
            assert all(h.attention.shape[0] <= limit for h in hyps)
            assert all(len(h.tokens) < limit or h.attention.shape[0] == limit for h in hyps)


def repeater(key, prefix):
    """Loves to repeat a a a ... and a b a b ..."""
    last = prefix[-1] if prefix else None
    logits = [-INF, -INF, -INF, -3.0, 2.0, 1.5, 0.0]
    if last == A:
        logits[B_] = 2.5
    return logits, prefix_attention(key, prefix)


def ngrams(tokens, n):
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


@pytest.mark.parametrize("n", [1, 2, 3])
def test_no_repeat_ngram(n):
    src, lengths = batch(KEYS)
    plain = greedy_search(Scripted(repeater), src, lengths, max_len_b=8)
    assert any(len(set(ngrams(h.tokens, n))) < len(ngrams(h.tokens, n)) for [h] in plain)
    count = 0
    for hyps in all_searches(repeater, src, lengths, max_len_b=8, no_repeat_ngram=n):
        for h in hyps:
            grams = ngrams(h.tokens, n)
            assert len(set(grams)) == len(grams), h.tokens
            count += 1
    assert count > 0


def test_over_constrained_outputs_score_minus_infinity():
    # 3 real tokens, each at most once, but at least 5 tokens: every path is stuck.
    src, lengths = batch(KEYS[:2])
    for hyps in all_searches(eager_eos, src, lengths, min_len=5, no_repeat_ngram=1):
        assert hyps and all(h.score == -INF and h.log_prob == -INF for h in hyps)


def test_sampling_is_reproducible_and_leaves_the_global_rng_alone():
    fn, src, lengths = random_model(4, sharp=0.5), *batch(KEYS)
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    one = sample(Scripted(fn), src, lengths, seed=7, num_samples=5)
    assert torch.equal(torch.random.get_rng_state(), before)
    two = sample(Scripted(fn), src, lengths, seed=7, num_samples=5)
    other = sample(Scripted(fn), src, lengths, seed=8, num_samples=5)
    assert [[h.tokens for h in hs] for hs in one] == [[h.tokens for h in hs] for hs in two]
    assert [[h.tokens for h in hs] for hs in one] != [[h.tokens for h in hs] for hs in other]
    sample(Scripted(fn), src, lengths)  # seed=None: a fresh generator, still not the global one
    assert torch.equal(torch.random.get_rng_state(), before)


@pytest.mark.parametrize("opts", [dict(top_k=1), dict(temperature=1e-4), dict(top_p=0.0)])
def test_degenerate_sampling_is_greedy(opts):
    fn, src, lengths = random_model(6, eos_bias=0.3), *batch(KEYS)
    greedy = greedy_search(Scripted(fn), src, lengths)
    drawn = sample(Scripted(fn), src, lengths, seed=0, num_samples=3, **opts)
    for [g], hyps in zip(greedy, drawn, strict=True):
        same(hyps, [g] * 3, tol=1e-5)


def allowed_set(probs: dict[int, float], top_k: int, top_p: float) -> set[int]:
    """The tokens top-k / nucleus sampling may draw, by their definition."""
    ranked = sorted(probs, key=lambda t: -probs[t])
    if top_k:
        ranked = ranked[:top_k]
    total = sum(probs[t] for t in ranked)
    keep, mass = [], 0.0
    for t in ranked:
        keep.append(t)
        mass += probs[t] / total
        if mass >= top_p:
            break
    return set(keep)


@pytest.mark.parametrize("top_k, top_p, temperature", [(2, 1.0, 1.0), (0, 0.6, 1.0),
                                                       (3, 0.8, 2.0), (0, 1.0, 0.5)])
def test_samples_come_from_the_allowed_set_with_the_right_frequencies(top_k, top_p, temperature):
    fn, key = random_model(8, sharp=1.0), (7, 8)
    drawn = sample(Scripted(fn), *batch([key]), top_k=top_k, top_p=top_p,
                   temperature=temperature, seed=3, num_samples=2000, max_len_b=3,
                   with_attention=True)[0]
    for h in drawn:
        eos = h.attention.shape[0] > len(h.tokens)
        for i, tok in enumerate(h.tokens + [EOS] * eos):
            logits = fn(key, tuple(h.tokens[:i]))[0]
            probs = {t: math.exp(x / temperature) for t, x in enumerate(logits) if x > -INF}
            assert tok in allowed_set(probs, top_k, top_p)
    # First token: empirical frequencies match the filtered, renormalised distribution.
    logits = fn(key, ())[0]
    probs = {t: math.exp(x / temperature) for t, x in enumerate(logits) if x > -INF}
    allowed = allowed_set(probs, top_k, top_p)
    total = sum(probs[t] for t in allowed)
    first = [(h.tokens + [EOS])[0] for h in drawn]
    for t in allowed:
        assert first.count(t) / len(first) == pytest.approx(probs[t] / total, abs=0.04)


# ----------------------------------------------------------------------------------------------
# 9. The early stop is real, and finished sentences leave the batch


def test_early_stop_counts_steps(monkeypatch):
    """EOS is never certain, so without the stopping rule every sentence runs to T_max = 200."""
    opts = dict(beam_size=4, max_len_a=0, max_len_b=200)
    for seed, alpha, most in [(0, 0.0, 20), (1, 0.0, 20), (0, 0.6, 120), (1, 0.6, 120)]:
        fn = random_model(seed, sharp=1.0, eos_shift=-3.0)
        stopped, full = Scripted(fn), Scripted(fn)
        [[h]] = beam_search(stopped, *batch([(7, 8)]), length_penalty=alpha, **opts)
        with monkeypatch.context() as m:
            m.setattr(search, "score_upper_bound", lambda *args: INF)  # never stop early
            [[h_full]] = beam_search(full, *batch([(7, 8)]), length_penalty=alpha, **opts)
        assert full.steps == 200 and stopped.steps <= most
        same([h], [h_full], tol=1e-5)


def ends_at_key_length(key, prefix):
    """EOS nearly certain once the output is as long as the source, very unlikely before."""
    logits = [-INF, -INF, -INF, 0.0, 0.0, 0.0, 0.0]
    if len(prefix) >= len(key):
        logits[EOS] = 10.0
    else:
        logits[EOS], logits[A], logits[B_], logits[C] = -8.0, 1.0, 0.5, 0.2
    return logits, prefix_attention(key, prefix)


def test_finished_sentences_leave_the_batch():
    src, lengths = batch([(7,), (7, 8, 9, 7, 8), (9, 9, 9)])
    model = Scripted(ends_at_key_length)
    hyps = beam_search(model, src, lengths, beam_size=2, max_len_a=2.0)
    assert [len(h[0].tokens) for h in hyps] == [1, 5, 3]
    # sentence 1 is done after 2 steps, sentence 3 after 4, sentence 2 after 6
    assert model.batch_sizes == [6, 6, 4, 4, 2, 2]
    model = Scripted(ends_at_key_length)
    greedy_search(model, src, lengths, max_len_a=2.0)
    assert model.batch_sizes == [3, 3, 2, 2, 1, 1]


def test_bad_arguments():
    src, lengths = batch(KEYS)
    model = Scripted(eager_eos)
    with pytest.raises(ValueError):
        beam_search(model, src, lengths, beam_size=2, n_best=3)
    with pytest.raises(ValueError):
        beam_search(model, src, lengths, beam_size=2, coverage_penalty=-0.1)
    with pytest.raises(ValueError):
        sample(model, src, lengths, temperature=0.0)
    with pytest.raises(ValueError):
        greedy_search(model, src, lengths[:2])


# ----------------------------------------------------------------------------------------------
# 10. Cost: attention only when asked, no prefix copied per step; the input length limit


def all_three(fn, src, lengths, **opts):
    """{search: its B lists of hypotheses} for greedy, beam (with both penalties) and sampling."""
    return {
        "greedy": greedy_search(Scripted(fn), src, lengths, **opts),
        "beam": beam_search(Scripted(fn), src, lengths, beam_size=3, n_best=3,
                            length_penalty=0.6, coverage_penalty=0.4, **opts),
        "sample": sample(Scripted(fn), src, lengths, num_samples=4, seed=2, **opts),
    }


def test_attention_is_none_unless_asked():
    fn, (src, lengths) = random_model(21, eos_bias=0.3), batch(KEYS)
    for name, results in all_three(fn, src, lengths, max_len_b=3).items():
        assert all(h.attention is None for hyps in results for h in hyps), name
    for name, results in all_three(fn, src, lengths, max_len_b=3, with_attention=True).items():
        for key, hyps in zip(KEYS, results, strict=True):
            assert all(h.attention.shape[1] == len(key) for h in hyps), name
    # the empty stand-in of a sentence with no output at all follows the same rule
    for asked, want in [(False, None), (True, (0, 3))]:
        [[h]] = beam_search(Scripted(eager_eos), *batch([(7, 8, 9)]), beam_size=2, min_len=5,
                            no_repeat_ngram=1, with_attention=asked)
        assert h.score == -INF and (h.attention if want is None else h.attention.shape) == want


@pytest.mark.parametrize("opts", [dict(), dict(min_len=2, no_repeat_ngram=2),
                                  dict(max_len_a=0.0, max_len_b=3)])
def test_with_and_without_attention_give_the_same_outputs(opts):
    """Tokens, scores and log-probs exactly; beam search with a coverage penalty included, so
    the penalty does not need the attention history."""
    fn, (src, lengths) = random_model(22, eos_bias=0.2), batch(KEYS)
    plain = all_three(fn, src, lengths, **opts)
    asked = all_three(fn, src, lengths, with_attention=True, **opts)
    for name in plain:
        for a, b in zip(plain[name], asked[name], strict=True):
            assert [(h.tokens, h.score, h.log_prob) for h in a] == [
                (h.tokens, h.score, h.log_prob) for h in b], name


def test_coverage_penalty_without_attention_is_the_gnmt_formula():
    """score = log_prob / lp(|Y|) + beta * sum_i log(min(sum_j a_ij, 1)), with a_ij the
    attention that the same search returns when asked for it."""
    fn, (src, lengths), alpha, beta = random_model(23, eos_bias=0.3), batch(KEYS), 0.7, 0.5
    opts = dict(beam_size=3, n_best=3, length_penalty=alpha, coverage_penalty=beta,
                max_len_a=1.0, max_len_b=2)
    plain = beam_search(Scripted(fn), src, lengths, **opts)
    asked = beam_search(Scripted(fn), src, lengths, with_attention=True, **opts)
    for key, hyps, with_att in zip(KEYS, plain, asked, strict=True):
        for h, g in zip(hyps, with_att, strict=True):
            rows = g.attention.tolist()  # (T', S): one row per step, EOS included
            want = gnmt(h.tokens, h.log_prob, rows, len(rows) > len(h.tokens), alpha, beta)
            assert h.attention is None and h.score == pytest.approx(want, abs=1e-5), key


class Cheap:
    """A decoder protocol model with nearly free steps (fixed logits per previous token,
    uniform attention over S positions) whose EOS is never likely: it decodes to T_max."""

    def __init__(self, S: int = 4):
        gen = torch.Generator().manual_seed(0)
        self.logits = torch.randn(V, V, generator=gen)  # (V, V): row = previous token
        self.logits[:, EOS] = -20.0
        self.S = S

    def encode(self, src, src_lengths):
        return Memory([()] * len(src), torch.ones(len(src), self.S, dtype=torch.bool))

    def init_state(self, memory):
        return State(memory.keys, [None] * len(memory.keys))

    def step(self, prev, state, memory):
        return self.logits[prev], state, torch.full((len(prev), self.S), 1.0 / self.S)


class CountElements(torch.overrides.TorchFunctionMode):
    """Sums the elements of every tensor that torch functions and methods return: copies,
    indexing, cat, arithmetic, views. A measure of the work done, free of timing noise."""

    def __init__(self):
        super().__init__()
        self.elements = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, tuple | list) else [out]:
            if isinstance(t, torch.Tensor):
                self.elements += t.numel()
        return out


def elements_for(search_fn, length: int, **opts) -> int:
    src, lengths = torch.full((1, 4), 7), torch.tensor([4])
    with CountElements() as count:
        [hyps] = search_fn(Cheap(), src, lengths, max_len_a=0.0, max_len_b=length, **opts)
    assert all(len(h.tokens) == length for h in hyps)  # forced to the full length
    return count.elements


@pytest.mark.parametrize("name, search_fn, opts", [
    ("greedy", greedy_search, dict()),
    ("greedy, attention", greedy_search, dict(with_attention=True)),
    ("beam", beam_search, dict(beam_size=4, coverage_penalty=0.2)),
    ("beam, attention", beam_search, dict(beam_size=4, n_best=2, with_attention=True)),
    ("sample, attention", sample, dict(num_samples=3, seed=0, with_attention=True)),
])
def test_decoding_work_is_linear_in_the_output_length(name, search_fn, opts):
    """Elements produced by torch operations for forced outputs of T and 2T tokens: the ratio
    is 2 for work linear in T (here about 2.0) and tends to 4 for work quadratic in T, such
    as appending each step to the (N, t) prefixes or the (N, t, S) attention (about 3.1 to
    3.7 with those copies put back)."""
    short, long = elements_for(search_fn, 150, **opts), elements_for(search_fn, 300, **opts)
    assert long / short < 2.3, (name, short, long)


def tiny_translator(**search):
    """A char-level Translator with random weights (its translations are noise)."""
    from seqlab.config import Config, ModelConfig
    from seqlab.model import build_model
    from seqlab.prepare import Codec
    from seqlab.tokenizers import CharTokenizer
    from seqlab.translate import Translator
    from seqlab.vocab import Vocab

    vocab = Vocab.build([list("abcdefgh ")])
    config = Config()
    config.model = ModelConfig(embedding_size=8, hidden_size=8, dropout=0.0)
    config.search = dataclasses.replace(config.search, max_len_a=0.0, max_len_b=4, **search)
    torch.manual_seed(0)
    model = build_model(config.model, len(vocab), len(vocab))
    return Translator(model, Codec(CharTokenizer(), CharTokenizer(), vocab, vocab), config)


def test_an_input_over_max_input_tokens_fails_before_any_decoding(monkeypatch):
    from seqlab.data import DataError

    translator = tiny_translator(max_input_tokens=6)

    def step(*args):
        raise AssertionError("decoding started before the input lengths were checked")

    monkeypatch.setattr(translator.model, "step", step)
    texts = ["abc", "", "abcdefg", "a" * 50]  # the 3rd line is the first one over
    with pytest.raises(DataError) as err:
        translator.translate_nbest(texts)
    assert str(err.value) == ("input line 3 has 7 tokens, over search.max_input_tokens=6 "
                              "(raise it with --max-input-tokens)")
    with pytest.raises(DataError, match="input line 1 has 7 tokens"):
        translator.translate(["abcdefg"], max_input_tokens=3)  # an override


def test_max_input_tokens_counts_tokens_without_eos_and_can_be_raised():
    translator = tiny_translator(max_input_tokens=6)
    [[t]] = translator.translate_nbest(["abcdef"])  # exactly at the limit: decoded
    assert t.attention is None
    [[t]] = translator.translate_nbest(["abcdefgh"], max_input_tokens=8, with_attention=True)
    assert t.attention.shape[1] == 9  # 8 characters and EOS
    assert translator.translate(["abcdefgh"], max_input_tokens=8) == [t.text]
    defaults = {f.name: f.default for f in dataclasses.fields(type(translator.config.search))}
    assert defaults["max_input_tokens"] == 1000


def test_translate_never_asks_for_attention_or_scores(monkeypatch):
    import seqlab.translate

    asked = []

    def spy(*args, with_attention, scores, **kwargs):
        asked.append((with_attention, scores))
        return greedy_search(*args, with_attention=with_attention, scores=scores, **kwargs)

    monkeypatch.setattr(seqlab.translate, "greedy_search", spy)
    translator = tiny_translator()
    text = translator.translate(["abc"])
    [[scored]] = translator.translate_nbest(["abc"])
    translator.translate_nbest(["abc"], with_attention=True)
    [[plain]] = translator.translate_nbest(["abc"], with_scores=False)
    assert asked == [(False, False), (False, True), (True, True), (False, False)]
    assert text == [scored.text] == [plain.text]
    assert scored.log_prob < 0 and math.isnan(plain.log_prob)


def test_max_input_tokens_command_line_option():
    from seqlab.cli import _search_overrides, build_parser

    args = build_parser().parse_args(["translate", "run", "--max-input-tokens", "5000"])
    assert _search_overrides(args) == {"max_input_tokens": 5000}
    assert "max_input_tokens" not in _search_overrides(build_parser().parse_args(
        ["translate", "run"]))


@pytest.mark.parametrize("V", [7, 40, 1000, 1003, 10_000])
@pytest.mark.parametrize("k", [1, 3, 10])
def test_top_k_equals_torch_topk(V, k):
    """The grouped top-k of search.py: the same values as torch.topk, best first, and columns
    that hold them; also with forbidden (-inf) columns and with the best entries crowded
    into one group of columns."""
    if k > V:
        return
    g = torch.Generator().manual_seed(V + k)
    x = torch.randn(6, V, generator=g)
    x[:, :: max(V // 5, 1)] = float("-inf")
    x[0, torch.arange(0, V, max(V // search.TOP_K_GROUPS, 1))[:k]] = 50.0 + torch.arange(
        min(k, len(range(0, V, max(V // search.TOP_K_GROUPS, 1)))), dtype=torch.float)
    values, columns = search.top_k(x, k)
    want = x.topk(k, dim=1).values
    assert torch.equal(values, want)
    assert torch.equal(x.gather(1, columns), values)


@pytest.mark.parametrize("ngram", [0, 2], ids=["columns", "with-ngram-mask"])
def test_banned_tokens_are_never_written_and_scores_stay_the_models(ngram):
    """`banned` (what a language model's generator passes for UNK): the token never appears,
    in every search, while the model gives it its share; the returned log-prob is still the
    model's own log-prob of the output (the other tokens are not renormalised)."""
    fn, (src, lengths) = random_model(5, sharp=1.0), batch(KEYS)
    free = greedy_search(Scripted(fn), src, lengths, max_len_b=6)
    assert any(A in h.tokens for [h] in free)  # A is a likely token: banning it matters
    count = 0
    for key, hyps in zip(KEYS * 3, all_searches(fn, src, lengths, max_len_b=6, banned=[A],
                                                no_repeat_ngram=ngram), strict=True):
        for h in hyps:
            assert A not in h.tokens, h.tokens
            ended = len(h.tokens) < int(len(key) * 1.5 + 6)
            assert h.log_prob == pytest.approx(model_log_prob(fn, key, h.tokens, ended), abs=1e-4)
            count += 1
    assert count > 0
