"""Evaluation metrics: corpus BLEU and chrF (thin wrappers over sacrebleu), perplexity,
exact match, distinct-n (the diversity of a dialogue model's outputs).

BLEU and chrF are never computed by hand here: sacrebleu (Post 2018, "A Call for Clarity in
Reporting BLEU Scores") tokenizes the detokenized text itself, so scores are comparable
across papers, and its *signature* records every setting that changes the number. Report
the signature next to the score.

Korean (and other) output: sacrebleu's default tokenizer "13a" splits on spaces and
punctuation, so for Korean it scores whole eojeol (word + attached particles) and is harsh.
sacrebleu's "ko-mecab" tokenizer is the usual choice but needs an extra package
(`pip install "sacrebleu[ko]"`); the self-contained choices are `tokenize="char"`
(character-level BLEU) or chrF, which works on character n-grams and needs no tokenizer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from sacrebleu.metrics import BLEU, CHRF


@dataclass(frozen=True)
class Score:
    """A corpus-level score with the sacrebleu signature that produced it.

    name: "BLEU" or "chrF2";  score: 0..100;  signature: e.g.
    "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0"
    """

    name: str
    score: float
    signature: str

    def __str__(self) -> str:
        return f"{self.name} = {self.score:.2f} ({self.signature})"


def _check_pair(hypotheses: Sequence[str], references: Sequence[str]) -> None:
    if len(hypotheses) != len(references):
        raise ValueError(
            f"got {len(hypotheses)} hypotheses but {len(references)} references; "
            "need one reference per hypothesis"
        )
    if not hypotheses:
        raise ValueError("no sentences to score")


def bleu(
    hypotheses: Sequence[str],
    references: Sequence[str],
    *,
    tokenize: str = "13a",
    lowercase: bool = False,
) -> Score:
    """Corpus BLEU (Papineni et al. 2002) by `sacrebleu.metrics.BLEU`, one reference per
    hypothesis, on detokenized text.

        BLEU = BP * exp(sum_{n=1..4} 1/4 log p_n),   BP = min(1, exp(1 - r/c))

    tokenize: any tokenizer sacrebleu knows ("13a" default, "intl", "char", "zh",
    "ja-mecab", "ko-mecab", "none", ...). For Korean use "ko-mecab" if `sacrebleu[ko]` is
    installed, else "char" (or report `chrf`, which needs no tokenizer).
    """
    _check_pair(hypotheses, references)
    if tokenize not in BLEU.TOKENIZERS:
        raise ValueError(
            f"unknown sacrebleu tokenizer {tokenize!r}; choose one of {sorted(BLEU.TOKENIZERS)}"
        )
    metric = BLEU(tokenize=tokenize, lowercase=lowercase)
    result = metric.corpus_score(list(hypotheses), [list(references)])
    return Score("BLEU", float(result.score), str(metric.get_signature()))


def chrf(hypotheses: Sequence[str], references: Sequence[str]) -> Score:
    """Corpus chrF (Popovic 2015) by `sacrebleu.metrics.CHRF`: the F-score (beta = 2) of
    character n-grams (n = 1..6), one reference per hypothesis. Needs no word tokenizer,
    so it suits Korean and other scripts as is.

        chrF_beta = (1 + beta^2) chrP chrR / (beta^2 chrP + chrR)
    """
    _check_pair(hypotheses, references)
    metric = CHRF()
    result = metric.corpus_score(list(hypotheses), [list(references)])
    return Score(result.name, float(result.score), str(metric.get_signature()))


def perplexity(total_nll: float, total_tokens: int) -> float:
    """Perplexity = exp(total negative log-likelihood (natural log) / number of tokens).

    Sum the NLL over the tokens you count (usually the target tokens plus <eos>, never
    <pad>). Returns inf instead of overflowing for a diverged model.
    """
    if total_tokens <= 0:
        raise ValueError(f"perplexity needs at least one token, got total_tokens={total_tokens}")
    try:
        return math.exp(total_nll / total_tokens)
    except OverflowError:
        return math.inf


def distinct_n(texts: Sequence[str], n: int, unit: str = "word") -> float:
    """distinct-n (Li et al. 2016, "A Diversity-Promoting Objective Function for Neural
    Conversation Models"): the number of distinct n-grams divided by the total number of
    n-grams, over all `texts` together; in [0, 1], higher is more varied. n-grams are taken
    inside each text, never across two. A generic model that answers everything with the same
    few replies scores near 0, however fluent the replies.

    unit "word": whitespace-separated tokens (Li et al.'s words; in Korean these are eojeol,
    a word with its attached particles; punctuation stays attached, no tokenizer is
    involved). unit "char": the characters of each text with its
    whitespace removed (Hangul syllables for Korean; n-grams run across word boundaries,
    as chrF's do). A text shorter than n adds nothing; with no n-gram at all the result is 0.
    """
    if n < 1:
        raise ValueError(f"distinct-n needs n >= 1, got {n}")
    if unit not in ("word", "char"):
        raise ValueError(f"unit must be 'word' or 'char', got {unit!r}")
    seen: set[tuple[str, ...]] = set()
    total = 0
    for text in texts:
        units = text.split() if unit == "word" else [c for c in text if not c.isspace()]
        grams = [tuple(units[i : i + n]) for i in range(len(units) - n + 1)]
        seen.update(grams)
        total += len(grams)
    return len(seen) / total if total else 0.0


def exact_match(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Fraction of hypotheses equal to their reference after stripping surrounding
    whitespace, in [0, 1]."""
    _check_pair(hypotheses, references)
    hits = sum(h.strip() == r.strip() for h, r in zip(hypotheses, references))
    return hits / len(hypotheses)
