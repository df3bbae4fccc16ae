"""Hashed bag-of-n-grams features: the input of a linear text classifier.

A text becomes the set of its word n-grams (n = 1..words) and character n-grams
(n = 1..chars, over the text with one space added at each end, so that a word's first and
last characters are grams of their own), each hashed into one of `buckets` ids:

    "재밌다 ㅋㅋㅋㅋ" -> normalised "재밌다 ㅋㅋ" -> {w1:재밌다, w1:ㅋㅋ, w2:재밌다 ㅋㅋ,
                        c1:재, c1:밌, ..., c2:" 재", c2:재밌, ..., c4:"ㅋㅋ "} -> ids

Runs of three or more equal characters shrink to two first ("ㅋㅋㅋㅋ" -> "ㅋㅋ", "!!!" -> "!!"),
as review text repeats characters freely. The hash is CRC-32 of the gram's UTF-8 bytes (with
its kind and order), so ids are the same in every process and on every machine; two grams
may share an id (a collision), which a large enough `buckets` makes rare. Features are binary:
a gram that occurs twice counts once.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence

import torch
from torch import Tensor

_REPEATS = re.compile(r"(.)\1{2,}")


def normalise(text: str) -> str:
    """Runs of 3+ equal characters -> 2, and whitespace runs -> one space."""
    return " ".join(_REPEATS.sub(r"\1\1", text).split())


def grams(text: str, words: int, chars: int) -> list[str]:
    """Every word and character n-gram of `text` (after normalise()), tagged with its kind
    and order ("w2:좋은 영화", "c3:좋은 "), in order of appearance, repeats included."""
    text = normalise(text)
    tokens, padded, out = text.split(), f" {text} ", []
    for n in range(1, words + 1):
        out += [f"w{n}:" + " ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    for n in range(1, chars + 1):
        out += [f"c{n}:" + padded[i : i + n] for i in range(len(padded) - n + 1)]
    return out


def features(text: str, buckets: int, words: int, chars: int) -> list[int]:
    """The sorted distinct bucket ids of the text's grams (CRC-32 mod buckets)."""
    return sorted({zlib.crc32(g.encode()) % buckets for g in grams(text, words, chars)})


def pack(rows: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    """Feature ids, a 1-D tensor per text -> (ids (N,) long, offsets (B,) long):
    EmbeddingBag's input, row b being ids[offsets[b] : offsets[b + 1]]."""
    lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)
    offsets = torch.zeros(len(rows), dtype=torch.long)
    if len(rows) > 1:
        offsets[1:] = lengths[:-1].cumsum(0)
    ids = torch.cat(list(rows)).long() if rows else torch.zeros(0, dtype=torch.long)
    return ids, offsets


def featurize(texts: Sequence[str], buckets: int, words: int, chars: int) -> list[Tensor]:
    """features() of each text as an int32 tensor (compact: a list of Python ints costs
    ~36 bytes an id, and 140k reviews hold ~20M)."""
    return [torch.tensor(features(t, buckets, words, chars), dtype=torch.int32)
            for t in texts]
