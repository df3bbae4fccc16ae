"""Data: read parallel text, turn it into padded, masked batches.

    files --read_parallel/read_tsv--> ParallelText (strings)
          --encode_pairs(tokenizers, vocabs)--> list[Example] (ids)
          --TokenBatchSampler--> lists of example indices, similar lengths together
          --collate--> Batch (padded tensors)

Conventions for one example with source ids x and target ids y:

    src     = x + [EOS]           the encoder sees where the sentence ends; never empty
    tgt_in  = [SOS] + y           the decoder's inputs (teacher forcing)
    tgt_out = y + [EOS]           what the decoder must predict at each step

Every bad-input error is a `DataError` whose message starts with `path:line:` (or `path:`).
"""

from __future__ import annotations

import codecs
import dataclasses
import io
import os
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from seqlab.errors import DataError  # noqa: F401  (importable from here)
from seqlab.tokenizers import Tokenizer
from seqlab.vocab import EOS, PAD, SOS, Vocab

PathLike = str | os.PathLike


# ---------------------------------------------------------------------------------------------
# Reading text


@dataclass
class ParallelText:
    """Sentence pairs as strings; `source` describes where they came from (for messages)."""

    src: list[str]
    tgt: list[str]
    skipped_empty: int = 0
    source: str = ""
    lines: list[int] = dataclasses.field(default_factory=list)  # each pair's line, if known

    def __len__(self) -> int:
        return len(self.src)


def _read_raw_lines(path: PathLike) -> list[str]:
    """Lines of a UTF-8 file, without their "\\n" and a trailing "\\r".

    A line is the text up to each "\\n" (as `wc -l` counts), plus a last line without one;
    nothing else (no "\\r" alone, no U+2028) ends a line. A leading byte-order mark is dropped.
    """
    try:
        with open(path, "rb") as f:
            return list(decode_lines(f, str(path)))
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror or e}") from None


def _pairs(src: list[str], tgt: list[str], source: str, first_line: int = 1) -> ParallelText:
    """Strip both sides; leave out (and count) pairs where either side is empty; remember the
    line number of each pair kept (the first pair on `first_line`)."""
    pairs = ParallelText(src=[], tgt=[], skipped_empty=0, source=source)
    for lineno, (s, t) in enumerate(zip(src, tgt, strict=True), start=first_line):
        s, t = s.strip(), t.strip()
        if s and t:
            pairs.src.append(s)
            pairs.tgt.append(t)
            pairs.lines.append(lineno)
        else:
            pairs.skipped_empty += 1
    if not pairs.src:
        why = f"all {pairs.skipped_empty} pairs had an empty side" if src else "no lines"
        raise DataError(f"no sentence pairs in {source} ({why})")
    return pairs


def read_parallel(prefix: PathLike, src_suffix: str, tgt_suffix: str) -> ParallelText:
    """Read `{prefix}.{src_suffix}` and `{prefix}.{tgt_suffix}`: line i of one translates line i
    of the other (the fairseq / JoeyNMT convention, e.g. train.ko + train.en)."""
    src_path, tgt_path = f"{prefix}.{src_suffix}", f"{prefix}.{tgt_suffix}"
    src, tgt = _read_raw_lines(src_path), _read_raw_lines(tgt_path)
    if len(src) != len(tgt):
        raise DataError(
            f"{src_path}: has {len(src)} lines but {tgt_path} has {len(tgt)}; "
            "parallel files need one line per sentence on both sides"
        )
    return _pairs(src, tgt, source=f"{prefix}.{{{src_suffix},{tgt_suffix}}}")


def read_tsv(path: PathLike, src_column: int | str = 1, tgt_column: int | str = 2, *,
             header: bool = False) -> ParallelText:
    """Read the source and target columns of a tab-separated file. No quoting: a tab always
    separates columns. A column is a 1-based number or, with `header`, a name from the first
    line. Every other non-blank line needs as many columns as the header (without one: exactly
    two, or up to the highest column asked for). Blank lines count as empty pairs (skipped)."""
    lines = _read_raw_lines(path)
    names: list[str] = []
    if header:
        if not lines:
            raise DataError(f"{path}: empty file (data.header is true: no header line)")
        names = lines[0].split("\t")
        lines = lines[1:]
    src_at = _column(path, src_column, names, "source")
    tgt_at = _column(path, tgt_column, names, "target")
    width = len(names) if header else max(2, src_at + 1, tgt_at + 1)
    what = "source, target" if width == 2 and not header else ", ".join(names) or f"{width}"
    src, tgt = [], []
    for lineno, line in enumerate(lines, start=2 if header else 1):
        if not line.strip():
            src.append("")
            tgt.append("")
            continue
        columns = line.split("\t")
        if len(columns) != width:
            raise DataError(f"{path}:{lineno}: expected {width} tab-separated columns "
                            f"({what}), found {len(columns)}")
        src.append(columns[src_at])
        tgt.append(columns[tgt_at])
    return _pairs(src, tgt, source=str(path), first_line=2 if header else 1)


def _column(path: PathLike, column: int | str, names: list[str], side: str) -> int:
    """A 1-based column number or a header name -> 0-based index (DataError if absent)."""
    if isinstance(column, int):
        if names and column > len(names):
            raise DataError(f"{path}:1: the {side} column is number {column}, but the header "
                            f"has {len(names)} columns ({', '.join(names)})")
        return column - 1
    if column not in names:
        raise DataError(f"{path}:1: no column {column!r} in the header ({', '.join(names)}); "
                        f"set data.{'src' if side == 'source' else 'tgt'}_column")
    return names.index(column)


def decode_lines(stream, name: str) -> Iterator[str]:
    """Decode a binary stream line by line as UTF-8 (see `_read_raw_lines`), lazily, so that
    a terminal's lines are translated as they are typed; a bad line is a `DataError` naming
    `name:line`."""
    offset = 0
    for lineno, raw in enumerate(stream, start=1):
        start = offset
        offset += len(raw)
        if lineno == 1 and raw.startswith(codecs.BOM_UTF8):
            raw, start = raw[len(codecs.BOM_UTF8) :], start + len(codecs.BOM_UTF8)
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise DataError(
                f"{name}:{lineno}: not valid UTF-8 at byte {e.start + 1} of the line "
                f"(offset {start + e.start} in the file): {e.reason}"
            ) from None
        yield line.removesuffix("\n").removesuffix("\r")


def read_lines(path: PathLike) -> list[str]:
    """Sentences to translate, one per line, stripped; empty lines are kept, so that there is
    one output line for every input line."""
    return [line.strip() for line in _read_raw_lines(path)]


# ---------------------------------------------------------------------------------------------
# Text -> ids


def read_text(path: str | Path) -> str:
    """A UTF-8 text file read whole (a leading byte-order mark dropped, nothing else changed).

    A missing, unreadable or empty file, or bytes that are not UTF-8, are one-line DataErrors
    that name the file (`path:line:` for bad UTF-8, worded as `seqlab.data.decode_lines`)."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror or e}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        list(decode_lines(io.BytesIO(data), str(path)))  # raises the line's DataError
        raise  # not reached: a text that fails as a whole fails on one of its lines
    if not text:
        what = "only a byte-order mark" if data.startswith(codecs.BOM_UTF8) else "empty file"
        raise DataError(f"{path}: {what}, no text")
    return text


def text_lines(text: str) -> list[str]:
    """The lines of a text as `seqlab.data` counts them: ended by "\\n" only (a trailing "\\r"
    dropped), the last one also without "\\n"; blank lines are left out."""
    lines = (line.removesuffix("\r") for line in text.split("\n"))
    return [line for line in lines if line.strip()]


@dataclass
class Example:
    """One sentence pair as ids: `src` ends with EOS; `tgt` has no special tokens."""

    src: list[int]
    tgt: list[int]


def encode_source(texts: Sequence[str], tokenizer: Tokenizer, vocab: Vocab) -> list[list[int]]:
    """Source sentences -> id lists, each ending with EOS (for translation input)."""
    return [vocab.encode(tokenizer.tokenize(text)) + [EOS] for text in texts]


def encode_pairs(
    pairs: ParallelText,
    src_tokenizer: Tokenizer,
    tgt_tokenizer: Tokenizer,
    src_vocab: Vocab,
    tgt_vocab: Vocab,
    max_src_len: int | None = None,
    max_tgt_len: int | None = None,
) -> tuple[list[Example], int]:
    """Tokenize and map to ids; drop pairs with more than `max_src_len` source tokens or
    `max_tgt_len` target tokens (counted before EOS is added).

    Returns the examples and the number of pairs dropped by the length filter.
    """
    examples, filtered = [], 0
    for s, t in zip(pairs.src, pairs.tgt, strict=True):
        s_tok, t_tok = src_tokenizer.tokenize(s), tgt_tokenizer.tokenize(t)
        too_long_src = max_src_len is not None and len(s_tok) > max_src_len
        too_long_tgt = max_tgt_len is not None and len(t_tok) > max_tgt_len
        if too_long_src or too_long_tgt:
            filtered += 1
            continue
        examples.append(Example(src=src_vocab.encode(s_tok) + [EOS], tgt=tgt_vocab.encode(t_tok)))
    return examples, filtered


# ---------------------------------------------------------------------------------------------
# Ids -> padded batches


@dataclass
class Batch:
    """Padded tensors for B examples (PAD fills each row after its real tokens).

    src          (B, S) long   source ids, each row ending with EOS
    src_lengths  (B,)   long   real tokens per row, EOS included
    tgt_in       (B, T) long   [SOS] + y, or None for a source-only (inference) batch
    tgt_out      (B, T) long   y + [EOS], or None
    index        (B,)   long   each row's position in the example list (to restore order)
    """

    src: Tensor
    src_lengths: Tensor
    tgt_in: Tensor | None
    tgt_out: Tensor | None
    index: Tensor

    @property
    def src_mask(self) -> Tensor:
        """(B, S) bool, True at real source tokens."""
        positions = torch.arange(self.src.size(1), device=self.src.device)  # (S,)
        return positions[None, :] < self.src_lengths[:, None]  # (B, S)

    @property
    def tgt_mask(self) -> Tensor:
        """(B, T) bool, True at real target positions (the same for tgt_in and tgt_out)."""
        if self.tgt_out is None:
            raise ValueError("a source-only batch has no target")
        return self.tgt_out != PAD

    @property
    def num_tgt_tokens(self) -> int:
        """Real tokens in tgt_out (what the loss is averaged over)."""
        return int(self.tgt_mask.sum())

    def __len__(self) -> int:
        return self.src.size(0)

    def to(self, device: torch.device | str) -> Batch:
        """A copy with every tensor on `device`."""
        moved = {
            f.name: None if (value := getattr(self, f.name)) is None else value.to(device)
            for f in dataclasses.fields(self)
        }
        return Batch(**moved)


def _pad(rows: list[list[int]]) -> Tensor:
    """Id lists -> (B, L) long, padded with PAD to the longest row."""
    longest = max(len(row) for row in rows)
    return torch.tensor([row + [PAD] * (longest - len(row)) for row in rows], dtype=torch.long)


def _batch(src: list[list[int]], tgt: list[list[int]] | None, indices: Sequence[int]) -> Batch:
    """Pad the id lists of one batch (src already ending with EOS; tgt without specials)."""
    return Batch(
        src=_pad(src),  # (B, S)
        src_lengths=torch.tensor([len(x) for x in src], dtype=torch.long),  # (B,)
        tgt_in=None if tgt is None else _pad([[SOS] + y for y in tgt]),  # (B, T)
        tgt_out=None if tgt is None else _pad([y + [EOS] for y in tgt]),  # (B, T)
        index=torch.tensor(list(indices), dtype=torch.long),  # (B,)
    )


def collate(examples: Sequence[Example], indices: Sequence[int]) -> Batch:
    """A training batch of `examples[i] for i in indices`: `examples` is the whole list and
    `indices` one batch from a sampler, so `batch.index` refers back into `examples`."""
    chosen = [examples[i] for i in indices]
    return _batch([e.src for e in chosen], [e.tgt for e in chosen], indices)


def collate_source(src_id_lists: Sequence[list[int]], indices: Sequence[int]) -> Batch:
    """A source-only batch of `src_id_lists[i] for i in indices` (ids already end with EOS)."""
    return _batch([src_id_lists[i] for i in indices], None, indices)


# ---------------------------------------------------------------------------------------------
# Batching by tokens


class TokenBatchSampler:
    """Yields batches (lists of example indices) of similar lengths, each within a token budget.

    One epoch, a pure function of (seed, epoch):
    1. shuffle all indices; cut them into pools of about `pool_batches` batches' worth;
    2. sort each pool by (source length, target length);
    3. cut each pool into batches with B * max(length) <= max_tokens on both sides
       (a single example longer than that gets a batch of its own);
    4. shuffle the order of the batches.
    With `shuffle=False` there is one pool and no shuffling: batches come in length order.

    Lengths are those of the padded tensors (`from_examples` computes them). With
    `world_size > 1`, rank r gets batches r, r + world_size, ...; the last
    `len % world_size` batches are dropped so that every rank gets the same number.
    A resumed run gets the same batches by calling `set_epoch` and skipping the first k.
    """

    def __init__(
        self,
        src_lengths: Sequence[int],
        tgt_lengths: Sequence[int] | None,
        max_tokens: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        pool_batches: int = 100,
    ):
        if tgt_lengths is not None and len(tgt_lengths) != len(src_lengths):
            raise ValueError(f"{len(src_lengths)} source lengths but {len(tgt_lengths)} target")
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be positive, not {max_tokens}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in range for world_size {world_size}")
        self.src_lengths = list(src_lengths)
        self.tgt_lengths = list(tgt_lengths) if tgt_lengths is not None else [0] * len(src_lengths)
        self.max_tokens = max_tokens
        self.shuffle, self.seed, self.epoch = shuffle, seed, 0
        self.rank, self.world_size = rank, world_size
        self._sort_keys = list(zip(self.src_lengths, self.tgt_lengths))
        longest = [max(s, t) for s, t in self._sort_keys]
        mean_len = sum(longest) / max(1, len(longest))
        self.pool_size = max(1, round(pool_batches * max_tokens / max(1.0, mean_len)))
        self._cache: tuple[int, list[list[int]]] | None = None

    @classmethod
    def from_examples(
        cls, examples: Sequence[Example], max_tokens: int, **kwargs
    ) -> TokenBatchSampler:
        """Sampler over `examples`, with the lengths `collate` will pad to (tgt: y + 1)."""
        return cls(
            [len(e.src) for e in examples], [len(e.tgt) + 1 for e in examples], max_tokens, **kwargs
        )

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _cut(self, pool: list[int]) -> list[list[int]]:
        """Cut length-sorted indices into batches within the token budget."""
        batches, batch, max_s, max_t = [], [], 0, 0
        for i in pool:
            s, t = max(max_s, self.src_lengths[i]), max(max_t, self.tgt_lengths[i])
            if batch and (len(batch) + 1) * max(s, t) > self.max_tokens:
                batches.append(batch)
                batch, s, t = [], self.src_lengths[i], self.tgt_lengths[i]
            batch.append(i)
            max_s, max_t = s, t
        if batch:
            batches.append(batch)
        return batches

    def _all_batches(self) -> list[list[int]]:
        """Every batch of this epoch, for all ranks."""
        if self._cache is not None and self._cache[0] == self.epoch:
            return self._cache[1]
        order = list(range(len(self.src_lengths)))
        rng = random.Random(f"{self.seed}:{self.epoch}")
        pool_size = len(order) or 1
        if self.shuffle:
            rng.shuffle(order)
            pool_size = self.pool_size
        batches = []
        for start in range(0, len(order), pool_size):
            pool = order[start : start + pool_size]
            pool.sort(key=self._sort_keys.__getitem__)  # by (source length, target length)
            batches += self._cut(pool)
        if self.shuffle:
            rng.shuffle(batches)
        self._cache = (self.epoch, batches)
        return batches

    def _rank_batches(self) -> list[list[int]]:
        batches = self._all_batches()
        usable = len(batches) - len(batches) % self.world_size
        return batches[self.rank : usable : self.world_size]

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self._rank_batches())

    def __len__(self) -> int:
        return len(self._rank_batches())


def epoch_batches(lengths: Sequence[int], train, epoch: int, rank: int,
                  world: int) -> list[list[int]]:
    """One epoch's batches (example indices) of this rank, shuffled by `train.seed`, within
    `train.batch_tokens` (a TrainConfig): a pure function of (lengths, seed, epoch, rank)."""
    sampler = TokenBatchSampler(lengths, None, train.batch_tokens, shuffle=True,
                                seed=train.seed, rank=rank, world_size=world)
    sampler.set_epoch(epoch)
    return list(sampler)
