"""Tokenizers: text <-> a list of token strings.

A tokenizer only splits and joins text; the `Vocab` maps the token strings to ids, so
every kind of tokenizer shares one vocabulary class:

    text --tokenize--> ["tok", ...] --Vocab.encode--> [id, ...]
    [id, ...] --Vocab.decode--> ["tok", ...] --detokenize--> text

Three kinds:

    "char"           every character is a token (spaces included)
    "word"           tokens are separated by whitespace
    "sentencepiece"  subwords learned from the training text (unigram LM or BPE),
                     Kudo & Richardson 2018, https://arxiv.org/abs/1808.06226

Each tokenizer's `state_dict()` holds plain Python data only (str, bytes, ...), so that it can
be stored in a checkpoint and read back with `torch.load(weights_only=True)`;
`tokenizer_from_state_dict` rebuilds it.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence

KINDS = ("char", "word", "sentencepiece")


class CharTokenizer:
    """Every character is a token; spaces are tokens too (" "), so joining restores the text."""

    kind = "char"

    def tokenize(self, text: str) -> list[str]:
        return list(text)

    def detokenize(self, tokens: Sequence[str]) -> str:
        return "".join(tokens)

    def state_dict(self) -> dict:
        return {"kind": self.kind}


class WhitespaceTokenizer:
    """Tokens are the runs of non-whitespace; joining puts one space between them."""

    kind = "word"

    def tokenize(self, text: str) -> list[str]:
        return text.split()

    def detokenize(self, tokens: Sequence[str]) -> str:
        return " ".join(tokens)

    def state_dict(self) -> dict:
        return {"kind": self.kind}


class SentencePieceTokenizer:
    """Subword tokens from a SentencePiece model, kept as its serialized model proto (bytes).

    Pieces mark a preceding space with "▁" (U+2581), so `detokenize(tokenize(text))` gives the
    text back, except that runs of whitespace become one space and outer whitespace is dropped.

    Departures from SentencePiece's defaults, and why:
    - `normalization_rule_name="identity"`: the default (NFKC) rewrites Hangul compatibility
      jamo such as "ㅋㅋ" or "ㅠㅠ" (common in informal Korean) into conjoining jamo, and
      full-width characters into ASCII, so the output would not match the references.
    - bos/eos/pad are disabled (-1): the `Vocab` adds its own special tokens.
    - `hard_vocab_limit=False`: on a small corpus the model may end up with fewer pieces
      than `vocab_size` instead of failing.
    - `character_coverage=1.0` by default: every character of the training text gets a piece.
      Korean has thousands of Hangul syllables, many of them rare; SentencePiece's usual
      0.9995 maps the rarest of them to <unk> on small data, and they are lost.
    """

    kind = "sentencepiece"

    def __init__(self, model_proto: bytes):
        import sentencepiece as spm

        self.model_proto = bytes(model_proto)
        self._sp = spm.SentencePieceProcessor(model_proto=self.model_proto)

    @classmethod
    def train(
        cls,
        texts: Iterable[str],
        *,
        vocab_size: int,
        model_type: str,
        character_coverage: float,
        seed: int = 0,
    ) -> SentencePieceTokenizer:
        """Train a model in memory on `texts` (one sentence each; empty ones are left out).

        `model_type` is "unigram" or "bpe". Training is deterministic: a fixed random seed (it
        only matters when the corpus is sampled, above 1M sentences) and a fixed thread count.
        """
        import sentencepiece as spm

        if model_type not in ("unigram", "bpe"):
            raise ValueError(f"model_type must be 'unigram' or 'bpe', not {model_type!r}")
        sentences = [t for t in texts if t.strip()]
        if not sentences:
            raise ValueError("a sentencepiece tokenizer needs some non-empty training texts")
        model = io.BytesIO()
        spm.set_random_generator_seed(seed)
        try:
            cls._train(spm, sentences, model, model_type, vocab_size, character_coverage)
        except RuntimeError as exc:  # e.g. fewer pieces than the characters to keep
            from seqlab.errors import ConfigError

            why = str(exc).strip().split("] ")[-1].split(". Increase")[0]  # spm's own words
            raise ConfigError(f"tokenizer: sentencepiece cannot train on this text with "
                              f"tokenizer.vocab_size={vocab_size}: {why} (raise "
                              "tokenizer.vocab_size or lower tokenizer.character_coverage)"
                              ) from None
        return cls(model.getvalue())

    @staticmethod
    def _train(spm, sentences, model, model_type, vocab_size, character_coverage) -> None:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(sentences),
            model_writer=model,
            model_type=model_type,
            vocab_size=vocab_size,
            character_coverage=character_coverage,
            hard_vocab_limit=False,
            normalization_rule_name="identity",
            bos_id=-1,
            eos_id=-1,
            pad_id=-1,
            input_sentence_size=1_000_000,
            shuffle_input_sentence=True,
            num_threads=8,
            minloglevel=2,
        )

    def __len__(self) -> int:
        """Number of pieces in the SentencePiece model (including its <unk>)."""
        return self._sp.get_piece_size()

    def tokenize(self, text: str) -> list[str]:
        return self._sp.encode(text, out_type=str)

    def detokenize(self, tokens: Sequence[str]) -> str:
        return self._sp.decode(list(tokens))

    def pieces(self) -> list[str]:
        """Every piece of the model except <unk>, in the model's order."""
        sp = self._sp
        return [sp.id_to_piece(i) for i in range(len(sp)) if not sp.is_unknown(i)]

    def sample(self, texts: Sequence[str], alpha: float, seed: int) -> list[list[str]]:
        """One segmentation of each text drawn from the unigram model's lattice,
        P(seg | text) ∝ P(seg)^alpha (subword regularization, Kudo 2018); the same
        (texts, alpha, seed) give the same samples (one thread: SentencePiece's sampler
        draws from its seeded generator in order)."""
        import sentencepiece as spm

        spm.set_random_generator_seed(seed)
        return self._sp.encode(list(texts), out_type=str, enable_sampling=True, alpha=alpha,
                               nbest_size=-1, num_threads=1)

    def state_dict(self) -> dict:
        return {"kind": self.kind, "model_proto": self.model_proto}


Tokenizer = CharTokenizer | WhitespaceTokenizer | SentencePieceTokenizer


def build_tokenizer(
    kind: str,
    texts: Iterable[str] = (),
    *,
    vocab_size: int = 8000,
    model_type: str = "unigram",
    character_coverage: float = 1.0,
) -> Tokenizer:
    """Make a tokenizer of `kind`; `texts` (the training sentences) matter for sentencepiece."""
    if kind == "char":
        return CharTokenizer()
    if kind == "word":
        return WhitespaceTokenizer()
    if kind == "sentencepiece":
        return SentencePieceTokenizer.train(
            texts,
            vocab_size=vocab_size,
            model_type=model_type,
            character_coverage=character_coverage,
        )
    raise ValueError(f"unknown tokenizer kind {kind!r}; choose one of {', '.join(KINDS)}")


def tokenizer_from_state_dict(state: dict) -> Tokenizer:
    """Rebuild a tokenizer from its `state_dict()`."""
    kind = state["kind"]
    if kind == "char":
        return CharTokenizer()
    if kind == "word":
        return WhitespaceTokenizer()
    if kind == "sentencepiece":
        return SentencePieceTokenizer(state["model_proto"])
    raise ValueError(f"unknown tokenizer kind {kind!r}; choose one of {', '.join(KINDS)}")
