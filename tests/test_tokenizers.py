from __future__ import annotations

from pathlib import Path

import pytest
import torch

from seqlab.config import load_config
from seqlab.data import read_parallel
from seqlab.tokenizers import (
    CharTokenizer,
    SentencePieceTokenizer,
    WhitespaceTokenizer,
    build_tokenizer,
    tokenizer_from_state_dict,
)

REPO = Path(__file__).resolve().parents[1]
KOREAN_RECIPE = REPO / "configs" / "tatoeba_ko_en.yaml"  # data.root and the Korean corpus

# A small mixed corpus, so the sentencepiece tests that need no data file always run.
CORPUS = [
    "안녕하세요, 반갑습니다.",
    "저는 학생입니다.",
    "ㅋㅋㅋ 진짜 웃겨 ㅠㅠ",  # compatibility jamo: NFKC would rewrite them
    "ＡＢＣ 전각 문자",  # full-width letters: NFKC would turn them into ASCII
    "The cat sat on the mat.",
    "오늘 날씨가 좋네요.",
    "I don't know what to say.",
    "우리는 내일 서울에 갑니다.",
] * 5


def sentencepiece(model_type: str, texts=CORPUS, vocab_size: int = 200) -> SentencePieceTokenizer:
    return build_tokenizer("sentencepiece", texts, vocab_size=vocab_size, model_type=model_type)


def test_char_round_trip_keeps_spaces():
    tok = CharTokenizer()
    assert tok.tokenize("가 b") == ["가", " ", "b"]
    for text in ["안녕하세요, 반갑습니다.", "  two  spaces ", ""]:
        assert tok.detokenize(tok.tokenize(text)) == text


def test_word_round_trip():
    tok = WhitespaceTokenizer()
    assert tok.tokenize(" 저는  학생\t입니다. ") == ["저는", "학생", "입니다."]
    text = "저는 학생 입니다."
    assert tok.detokenize(tok.tokenize(text)) == text


@pytest.mark.parametrize("model_type", ["unigram", "bpe"])
def test_sentencepiece_round_trip_is_exact(model_type):
    tok = sentencepiece(model_type)
    assert tok.kind == "sentencepiece"
    for text in CORPUS:
        tokens = tok.tokenize(text)
        assert tokens and all(isinstance(t, str) for t in tokens)
        assert tok.detokenize(tokens) == text


@pytest.mark.parametrize("model_type", ["unigram", "bpe"])
def test_sentencepiece_round_trips_real_korean(model_type):
    data = load_config(KOREAN_RECIPE).data  # relative data.root: from the repository root
    assert data.src == "ko"
    prefix = REPO / data.path(data.train)
    if not Path(f"{prefix}.{data.src}").is_file():
        pytest.skip(f"{prefix}.{data.src} not found (set data.root in {KOREAN_RECIPE.name})")
    lines = read_parallel(prefix, data.src, data.tgt).src[:400]
    tok = sentencepiece(model_type, lines, vocab_size=1000)
    pieces = [tok.tokenize(text) for text in lines]
    assert "<unk>" not in {p for ps in pieces for p in ps}
    assert any(len(p.lstrip("▁")) > 1 for ps in pieces for p in ps), "learned no subwords"
    for text, ps in zip(lines, pieces):
        assert tok.detokenize(ps) == text


def test_sentencepiece_training_is_deterministic():
    for model_type in ["unigram", "bpe"]:
        assert sentencepiece(model_type).model_proto == sentencepiece(model_type).model_proto


def test_sentencepiece_small_corpus_gets_fewer_pieces_not_an_error():
    tok = sentencepiece("unigram", vocab_size=8000)
    assert 4 < len(tok) < 8000


@pytest.mark.parametrize("kind", ["char", "word", "unigram", "bpe"])
def test_state_dict_survives_weights_only_load(kind, tmp_path):
    if kind in ("unigram", "bpe"):
        tok = sentencepiece(kind)
    else:
        tok = build_tokenizer(kind)
    torch.save({"tokenizer": tok.state_dict()}, tmp_path / "ckpt.pt")
    state = torch.load(tmp_path / "ckpt.pt", weights_only=True)["tokenizer"]
    restored = tokenizer_from_state_dict(state)
    assert type(restored) is type(tok) and restored.kind == tok.kind
    for text in CORPUS[:8]:
        assert restored.tokenize(text) == tok.tokenize(text)
        assert restored.detokenize(tok.tokenize(text)) == tok.detokenize(tok.tokenize(text))


def test_unknown_kind_names_the_choices():
    with pytest.raises(ValueError, match="char, word, sentencepiece"):
        build_tokenizer("bytes", CORPUS)
    with pytest.raises(ValueError, match="unknown tokenizer kind"):
        tokenizer_from_state_dict({"kind": "bytes"})


def test_sentencepiece_needs_texts_and_a_known_model_type():
    with pytest.raises(ValueError, match="training texts"):
        build_tokenizer("sentencepiece", ["", "  "])
    with pytest.raises(ValueError, match="unigram"):
        build_tokenizer("sentencepiece", CORPUS, model_type="word")


def test_too_small_a_sentencepiece_vocabulary_is_one_config_error():
    from seqlab.errors import ConfigError

    texts = [chr(0xAC00 + i) * 3 for i in range(300)]  # 300 syllables to keep, 100 pieces
    with pytest.raises(ConfigError, match=r"tokenizer.vocab_size=100: Vocabulary size is "
                                          r"smaller than required_chars\. 100 vs 302 \(raise"):
        SentencePieceTokenizer.train(texts, vocab_size=100, model_type="unigram",
                                     character_coverage=1.0)
