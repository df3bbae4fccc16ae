"""Metrics: BLEU / chrF agree with sacrebleu's own functions, case handling (chrF always cased,
BLEU lowercased only when asked, also through Translator.evaluate); perplexity, exact
match and distinct-n by hand."""

from __future__ import annotations

import math

import pytest
import sacrebleu

from seqlab.config import Config, EvalConfig
from seqlab.metrics import Score, bleu, chrf, distinct_n, exact_match, perplexity
from seqlab.translate import Translator

HYPS = [
    "The cat sat on the mat.",
    "There is a dog in the garden today.",
    "I would like a cup of coffee, please.",
]
REFS = [
    "The cat is sitting on the mat.",
    "There is a dog in the garden.",
    "I would like a cup of tea, please.",
]
KO_HYPS = ["나는 학교에 갑니다.", "오늘 날씨가 아주 좋네요.", "고양이가 매트 위에 앉았다."]
KO_REFS = ["저는 학교에 갑니다.", "오늘은 날씨가 정말 좋네요.", "고양이가 매트 위에 앉아 있다."]


@pytest.mark.parametrize("tokenize", ["13a", "intl", "char", "none"])
def test_bleu_equals_sacrebleu(tokenize):
    ours = bleu(HYPS, REFS, tokenize=tokenize)
    theirs = sacrebleu.corpus_bleu(HYPS, [REFS], tokenize=tokenize)
    assert ours.score == pytest.approx(theirs.score)
    assert 0 < ours.score < 100
    assert f"tok:{tokenize}" in ours.signature


@pytest.mark.parametrize("tokenize", ["13a", "char"])
def test_bleu_korean_equals_sacrebleu(tokenize):
    ours = bleu(KO_HYPS, KO_REFS, tokenize=tokenize)
    theirs = sacrebleu.corpus_bleu(KO_HYPS, [KO_REFS], tokenize=tokenize)
    assert ours.score == pytest.approx(theirs.score)
    assert ours.score > 0


def test_char_bleu_is_kinder_than_13a_on_korean():
    # particles stick to words in Korean, so word-level BLEU punishes small differences
    assert bleu(KO_HYPS, KO_REFS, tokenize="char").score > bleu(KO_HYPS, KO_REFS).score


def test_bleu_signature_and_str():
    score = bleu(HYPS, REFS)
    assert isinstance(score, Score)
    assert score.name == "BLEU"
    assert "tok:13a" in score.signature
    assert f"version:{sacrebleu.__version__}" in score.signature
    assert "case:mixed" in score.signature
    assert str(score).startswith(f"BLEU = {score.score:.2f}")
    with pytest.raises(AttributeError):
        score.score = 0.0  # frozen


def test_bleu_lowercase_flag():
    hyps = ["THE CAT SAT ON THE MAT TODAY"]
    refs = ["the cat sat on the mat today"]
    assert bleu(hyps, refs).score == pytest.approx(0.0)
    lower = bleu(hyps, refs, lowercase=True)
    assert lower.score == pytest.approx(100.0)
    assert "case:lc" in lower.signature
    assert lower.score == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs], lowercase=True).score)


def test_perfect_bleu_is_100():
    assert bleu(REFS, REFS).score == pytest.approx(100.0)


def test_chrf_equals_sacrebleu():
    for hyps, refs in [(HYPS, REFS), (KO_HYPS, KO_REFS)]:
        ours = chrf(hyps, refs)
        assert ours.score == pytest.approx(sacrebleu.corpus_chrf(hyps, [refs]).score)
        assert ours.name == "chrF2"
        assert f"version:{sacrebleu.__version__}" in ours.signature
    assert chrf(REFS, REFS).score == pytest.approx(100.0)


SHOUTED = ["THE CAT SAT ON THE MAT TODAY", "There Is A Dog In The Garden"]
QUIET = ["the cat sat on the mat today", "there is a dog in the garden"]


def test_chrf_is_case_sensitive():
    """chrF compares characters as written: upper case against lower case is a miss."""
    cased = sacrebleu.metrics.CHRF(lowercase=False).corpus_score(SHOUTED, [QUIET]).score
    lower = sacrebleu.metrics.CHRF(lowercase=True).corpus_score(SHOUTED, [QUIET]).score
    assert lower == pytest.approx(100.0) and cased < 60  # the case makes a large difference
    score = chrf(SHOUTED, QUIET)
    assert score.score == pytest.approx(cased)
    assert "case:mixed" in score.signature
    assert chrf(QUIET, QUIET).score == pytest.approx(100.0)


def _evaluate(lowercase: bool, hypotheses: list[str], references: list[str]) -> dict:
    """Translator.evaluate with a stand-in for the model: fixed outputs, a fixed NLL."""
    translator = Translator.__new__(Translator)
    translator.config = Config(eval=EvalConfig(lowercase=lowercase))
    translator.translate = lambda sources, **search: list(hypotheses)
    translator.score = lambda sources, refs: (2.0 * len(refs), len(refs))
    return translator.evaluate(["source"] * len(references), references)


@pytest.mark.parametrize("lowercase", [False, True])
def test_evaluate_lowercases_bleu_only_when_configured(lowercase):
    """eval.lowercase: case-insensitive BLEU, said in its signature; chrF stays cased."""
    result = _evaluate(lowercase, SHOUTED, QUIET)
    want = sacrebleu.corpus_bleu(SHOUTED, [QUIET], lowercase=lowercase).score
    assert result["bleu"] == pytest.approx(want)
    if lowercase:
        assert result["bleu"] == pytest.approx(100.0)
    else:
        assert result["bleu"] < 10
    assert ("case:lc" if lowercase else "case:mixed") in result["signature"]
    assert result["chrf"] == pytest.approx(sacrebleu.corpus_chrf(SHOUTED, [QUIET]).score)
    assert result["chrf"] < 60
    assert "case:mixed" in result["chrf_signature"]
    assert result["exact_match"] == 0.0
    assert result["loss"] == pytest.approx(2.0) and result["ppl"] == pytest.approx(math.exp(2))


def test_mismatched_lengths_name_both_counts():
    for fn in (bleu, chrf, exact_match):
        with pytest.raises(ValueError, match="3 hypotheses but 2 references"):
            fn(HYPS, REFS[:2])


def test_empty_and_unknown_tokenizer():
    with pytest.raises(ValueError, match="no sentences"):
        bleu([], [])
    with pytest.raises(ValueError, match="unknown sacrebleu tokenizer 'spaces'.*13a"):
        bleu(HYPS, REFS, tokenize="spaces")


def test_perplexity_by_hand():
    # three tokens each given probability 1/4: NLL = 3 ln 4, perplexity 4
    assert perplexity(3 * math.log(4), 3) == pytest.approx(4.0)
    assert perplexity(0.0, 10) == 1.0
    assert perplexity(10.0, 5) == pytest.approx(math.e**2)
    assert perplexity(1e6, 1) == math.inf
    with pytest.raises(ValueError, match="at least one token"):
        perplexity(1.0, 0)


def test_exact_match_by_hand():
    hyps = ["a b c", " 안녕하세요 ", "x", "y "]
    refs = ["a b c", "안녕하세요", "X", "z"]
    assert exact_match(hyps, refs) == pytest.approx(0.5)
    assert exact_match(["same"], ["same"]) == 1.0
    assert exact_match(["a"], ["b"]) == 0.0


DISTINCT = ["나는 학교에 간다", "나는  학교에 안 간다", "응"]


def test_distinct_n_by_hand():
    """Li et al. 2016: distinct n-grams / all n-grams, over every output together."""
    # words: 나는 학교에 간다 | 나는 학교에 안 간다 | 응 -> 8 unigrams, 5 distinct
    assert distinct_n(DISTINCT, 1) == pytest.approx(5 / 8)
    # bigrams: (나는 학교에) (학교에 간다) | (나는 학교에) (학교에 안) (안 간다) -> 5, 4 distinct
    assert distinct_n(DISTINCT, 2) == pytest.approx(4 / 5)
    # characters, spaces removed: 나는학교에간다 (7) 나는학교에안간다 (8) 응 (1): 16, of 9 kinds
    assert distinct_n(DISTINCT, 1, unit="char") == pytest.approx(9 / 16)
    # character bigrams: 6 + 7 + 0 = 13; distinct: 나는 는학 학교 교에 에간 간다 에안 안간 = 8
    assert distinct_n(DISTINCT, 2, unit="char") == pytest.approx(8 / 13)
    assert distinct_n(["나 는", "나는"], 2, unit="char") == pytest.approx(1 / 2)


def test_distinct_n_never_joins_two_outputs():
    # "a b" twice: bigrams (a b), (a b): 1 of 2; an n-gram across outputs would add (b a)
    assert distinct_n(["a b", "a b"], 2) == pytest.approx(1 / 2)
    assert distinct_n(["a b", "c"], 3) == 0.0  # no trigram anywhere
    assert distinct_n([], 1) == 0.0 and distinct_n(["", " "], 1, unit="char") == 0.0
    assert distinct_n(["same answer"] * 50, 1) == pytest.approx(2 / 100)  # a generic model
    with pytest.raises(ValueError, match="n >= 1"):
        distinct_n(["a"], 0)
    with pytest.raises(ValueError, match="unit"):
        distinct_n(["a"], 1, unit="morpheme")
