"""From the data config to what training needs: text -> tokenizers -> vocabularies -> examples.

For the problems whose data are pairs (seq2seq: source and target sentences; classify: a
text and its label): `read_splits` reads them from files or a generated dataset.

Tokenizers and vocabularies are learned from the training side only; validation and test
text is read but never used for a choice about them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from seqlab.config import Config, DataConfig
from seqlab.data import DataError, Example, ParallelText, encode_pairs, read_parallel, read_tsv
from seqlab.tokenizers import Tokenizer, build_tokenizer, tokenizer_from_state_dict
from seqlab.vocab import Vocab


@dataclass
class Splits:
    train: ParallelText
    valid: ParallelText | None
    test: ParallelText | None


@dataclass
class Codec:
    """Everything that turns text into ids and back, for both sides; saved in checkpoints."""

    src_tokenizer: Tokenizer
    tgt_tokenizer: Tokenizer
    src_vocab: Vocab
    tgt_vocab: Vocab

    def state_dict(self) -> dict:
        return {"src_tokenizer": self.src_tokenizer.state_dict(),
                "tgt_tokenizer": self.tgt_tokenizer.state_dict(),
                "src_vocab": self.src_vocab.state_dict(),
                "tgt_vocab": self.tgt_vocab.state_dict()}

    @classmethod
    def from_state_dict(cls, state: dict) -> Codec:
        return cls(tokenizer_from_state_dict(state["src_tokenizer"]),
                   tokenizer_from_state_dict(state["tgt_tokenizer"]),
                   Vocab.from_state_dict(state["src_vocab"]),
                   Vocab.from_state_dict(state["tgt_vocab"]))


def _read(cfg: DataConfig, prefix: str) -> ParallelText:
    prefix = cfg.path(prefix)
    if cfg.format == "tsv":
        return read_tsv(prefix, cfg.src_column, cfg.tgt_column, header=cfg.header)
    return read_parallel(prefix, cfg.src, cfg.tgt)


def _generated(cfg: DataConfig, split: str, n: int, seed: int) -> ParallelText:
    from seqlab.synthetic import make_dataset

    pairs = make_dataset(cfg.synthetic, n, seed=seed, split=split)
    return ParallelText(src=[s for s, _ in pairs], tgt=[t for _, t in pairs], skipped_empty=0,
                        source=f"generated {cfg.synthetic} ({split})")


def read_splits(cfg: Config) -> Splits:
    """Train, valid and test pairs (valid / test None when not configured)."""
    d = cfg.data
    if d.synthetic is not None:
        seed = cfg.train.seed
        return Splits(_generated(d, "train", d.synthetic_train_size, seed),
                      _generated(d, "valid", d.synthetic_eval_size, seed),
                      _generated(d, "test", d.synthetic_eval_size, seed))
    train = _read(d, d.train)
    valid = _read(d, d.valid) if d.valid else None
    if d.valid_holdout is not None:
        train, valid = hold_out(train, d.valid_holdout)
    return Splits(train, valid, _read(d, d.test) if d.test else None)


def read_labelled(cfg: DataConfig, path: str) -> ParallelText:
    """(text, label) pairs from `path` (not joined to data.root): a TSV with the columns the
    model was trained on; for a model trained on parallel files or generated data, a
    PREFIX of PREFIX.SRC + PREFIX.TGT, or a file of text<TAB>label lines."""
    if cfg.format == "tsv":
        return read_tsv(path, cfg.src_column, cfg.tgt_column, header=cfg.header)
    if Path(path).is_file():
        return read_tsv(path)
    return read_parallel(path, cfg.src, cfg.tgt)


def hold_out(pairs: ParallelText, n: int) -> tuple[ParallelText, ParallelText]:
    """(the rest, n pairs held out): a fixed pseudo-random choice (random.Random("holdout")),
    the same for every seed, so that every run of an ablation is judged on the same set."""
    import random

    if n >= len(pairs):
        raise DataError(f"{pairs.source}: data.valid_holdout={n} leaves no training data "
                        f"({len(pairs)} pairs)")
    chosen = set(random.Random("holdout").sample(range(len(pairs)), n))

    def part(keep: bool, label: str) -> ParallelText:
        rows = [i for i in range(len(pairs)) if (i in chosen) != keep]
        return ParallelText([pairs.src[i] for i in rows], [pairs.tgt[i] for i in rows],
                            pairs.skipped_empty if keep else 0, f"{pairs.source} ({label})",
                            [pairs.lines[i] for i in rows] if pairs.lines else [])

    return part(True, f"without {n} held out"), part(False, f"{n} held out")


def build_codec(cfg: Config, train: ParallelText) -> Codec:
    t = cfg.tokenizer

    def tokenizer(texts):
        return build_tokenizer(t.kind, texts, vocab_size=t.vocab_size, model_type=t.model_type,
                               character_coverage=t.character_coverage)

    def vocab(tok, texts):
        return Vocab.build((tok.tokenize(x) for x in texts), min_freq=t.min_freq,
                           max_size=t.max_vocab)

    if t.joint:
        tok = tokenizer(train.src + train.tgt)
        joint = vocab(tok, train.src + train.tgt)
        return Codec(tok, tok, joint, joint)
    src_tok, tgt_tok = tokenizer(train.src), tokenizer(train.tgt)
    return Codec(src_tok, tgt_tok, vocab(src_tok, train.src), vocab(tgt_tok, train.tgt))


def encode(cfg: Config, codec: Codec, pairs: ParallelText) -> tuple[list[Example], int]:
    """Training pairs -> examples, dropping those over the configured length limits."""
    return encode_pairs(pairs, codec.src_tokenizer, codec.tgt_tokenizer, codec.src_vocab,
                        codec.tgt_vocab, cfg.data.max_src_len, cfg.data.max_tgt_len)
