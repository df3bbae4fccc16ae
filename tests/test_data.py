from __future__ import annotations

import random

import pytest
import torch

from seqlab.data import (
    Batch,
    DataError,
    Example,
    ParallelText,
    TokenBatchSampler,
    collate,
    collate_source,
    encode_pairs,
    encode_source,
    read_lines,
    read_parallel,
    read_tsv,
)
from seqlab.tokenizers import CharTokenizer, WhitespaceTokenizer
from seqlab.vocab import EOS, PAD, SOS, UNK, Vocab


def write(path, data: bytes | str):
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


# ---------------------------------------------------------------------------------------------
# Reading


def test_read_parallel_strips_and_skips_empty_pairs(tmp_path):
    write(tmp_path / "train.ko", "가나\r\n  \n다라 \n마\n\n바")  # last line has no "\n"
    write(tmp_path / "train.en", "ab\r\ncd\n ef\n\n\nij")
    pairs = read_parallel(tmp_path / "train", "ko", "en")
    assert pairs.src == ["가나", "다라", "바"]
    assert pairs.tgt == ["ab", "ef", "ij"]
    assert pairs.skipped_empty == 3
    assert "train" in pairs.source and len(pairs) == 3


def test_only_newline_ends_a_line(tmp_path):
    # "\r" alone, U+2028 and form feed are inside a line, not line breaks.
    write(tmp_path / "a.src", "one\rtwo\nthree\u2028four\x0c\n")
    write(tmp_path / "a.tgt", "1\n2\n")
    pairs = read_parallel(tmp_path / "a", "src", "tgt")
    assert pairs.src == ["one\rtwo", "three\u2028four"]


def test_byte_order_mark_is_dropped(tmp_path):
    write(tmp_path / "a.src", b"\xef\xbb\xbfhello\n")
    write(tmp_path / "a.tgt", "안녕\n")
    assert read_parallel(tmp_path / "a", "src", "tgt").src == ["hello"]


def test_missing_file_is_named(tmp_path):
    write(tmp_path / "a.ko", "가\n")
    with pytest.raises(DataError, match=r"a\.en: no such file"):
        read_parallel(tmp_path / "a", "ko", "en")
    with pytest.raises(DataError, match=r"missing\.tsv: no such file"):
        read_tsv(tmp_path / "missing.tsv")
    with pytest.raises(DataError, match=r"missing\.txt: no such file"):
        read_lines(tmp_path / "missing.txt")


def test_line_count_mismatch_names_both_files_and_counts(tmp_path):
    write(tmp_path / "a.ko", "가\n나\n다\n")
    write(tmp_path / "a.en", "a\nb")
    with pytest.raises(DataError) as e:
        read_parallel(tmp_path / "a", "ko", "en")
    msg = str(e.value)
    assert "a.ko" in msg and "a.en" in msg and "3" in msg and "2" in msg


def test_invalid_utf8_names_file_line_and_byte(tmp_path):
    write(tmp_path / "a.ko", "가\n나\n".encode() + b"ab\xff\n")
    write(tmp_path / "a.en", "a\nb\nc\n")
    with pytest.raises(DataError, match=r"a\.ko:3: not valid UTF-8 at byte 3 of the line"):
        read_parallel(tmp_path / "a", "ko", "en")
    write(tmp_path / "in.txt", b"ok\n\xc3\n")
    with pytest.raises(DataError, match=r"in\.txt:2: not valid UTF-8"):
        read_lines(tmp_path / "in.txt")


def test_nothing_left_is_an_error(tmp_path):
    write(tmp_path / "a.ko", "가\n\n")
    write(tmp_path / "a.en", "\nb\n")
    with pytest.raises(DataError, match="no sentence pairs in .*a.*all 2 pairs had an empty side"):
        read_parallel(tmp_path / "a", "ko", "en")
    write(tmp_path / "empty.tsv", "")
    with pytest.raises(DataError, match=r"no sentence pairs in .*empty\.tsv"):
        read_tsv(tmp_path / "empty.tsv")


def test_read_tsv(tmp_path):
    path = write(tmp_path / "pairs.tsv", "가나\tab\r\n\n다\t \n 라 \t cd\n")
    pairs = read_tsv(path)
    assert (pairs.src, pairs.tgt, pairs.skipped_empty) == (["가나", "라"], ["ab", "cd"], 2)


@pytest.mark.parametrize("bad_line", ["no tab here", "a\tb\tc"])
def test_read_tsv_wrong_column_count_names_path_and_line(tmp_path, bad_line):
    path = write(tmp_path / "pairs.tsv", f"가\ta\n나\tb\n{bad_line}\n")
    with pytest.raises(DataError, match=r"pairs\.tsv:3: expected 2 tab-separated columns"):
        read_tsv(path)


def test_read_lines_keeps_empty_lines(tmp_path):
    path = write(tmp_path / "in.txt", " 가나 \r\n\n다")
    assert read_lines(path) == ["가나", "", "다"]


# ---------------------------------------------------------------------------------------------
# Encoding


def test_encode_pairs_appends_eos_to_source_only_and_filters_by_length():
    pairs = ParallelText(src=["a b", "a b c d", "c"], tgt=["x", "y", "x y z"], source="test")
    vocab = Vocab.build([["a", "b", "c", "x", "y"]])
    word = WhitespaceTokenizer()
    examples, filtered = encode_pairs(pairs, word, word, vocab, vocab, max_src_len=3, max_tgt_len=2)
    assert filtered == 2
    assert examples == [Example(src=vocab.encode(["a", "b"]) + [EOS], tgt=vocab.encode(["x"]))]
    examples, filtered = encode_pairs(pairs, word, word, vocab, vocab)
    assert filtered == 0 and len(examples) == 3
    assert examples[2].tgt == vocab.encode(["x", "y"]) + [UNK]
    assert encode_source(["a", ""], word, vocab) == [vocab.encode(["a"]) + [EOS], [EOS]]


# ---------------------------------------------------------------------------------------------
# Batches


def random_examples(n: int, seed: int = 0) -> list[Example]:
    rng = random.Random(seed)
    return [
        Example(
            src=[rng.randrange(4, 50) for _ in range(rng.randrange(0, 12))] + [EOS],
            tgt=[rng.randrange(4, 50) for _ in range(rng.randrange(1, 15))],
        )
        for _ in range(n)
    ]


def test_collate_pads_masks_and_shifts():
    examples = random_examples(20)
    indices = [3, 0, 17, 9, 11]
    batch = collate(examples, indices)
    B = len(indices)
    assert batch.index.tolist() == indices
    assert batch.src.dtype == torch.long and batch.src.shape[0] == B
    assert batch.src.shape[1] == max(len(examples[i].src) for i in indices)
    assert batch.tgt_in.shape == batch.tgt_out.shape
    assert batch.tgt_in.shape[1] == max(len(examples[i].tgt) for i in indices) + 1
    for row, i in enumerate(indices):
        x, y = examples[i].src, examples[i].tgt
        n, m = len(x), len(y) + 1
        assert batch.src_lengths[row] == n
        assert batch.src[row, :n].tolist() == x  # PAD never inside the real span
        assert (batch.src[row, n:] == PAD).all()
        assert batch.src_mask[row].tolist() == [True] * n + [False] * (batch.src.shape[1] - n)
        assert batch.tgt_in[row, :m].tolist() == [SOS] + y
        assert batch.tgt_out[row, :m].tolist() == y + [EOS]
        assert batch.tgt_mask[row].tolist() == [True] * m + [False] * (batch.tgt_out.shape[1] - m)
        assert (batch.tgt_in[row, m:] == PAD).all() and (batch.tgt_out[row, m:] == PAD).all()
        # the shift: the decoder's input at step t+1 is the target at step t
        assert batch.tgt_in[row, 1:m].tolist() == batch.tgt_out[row, : m - 1].tolist()
    assert batch.num_tgt_tokens == sum(len(examples[i].tgt) + 1 for i in indices)
    assert batch.src_mask.dtype == torch.bool and batch.tgt_mask.dtype == torch.bool


def test_collate_source_and_to():
    batch = collate_source([[5, EOS], [EOS], [6, 7, 8, EOS]], [2, 0])
    assert batch.src.tolist() == [[6, 7, 8, EOS], [5, EOS, PAD, PAD]]
    assert batch.src_lengths.tolist() == [4, 2] and batch.index.tolist() == [2, 0]
    assert batch.tgt_in is None and batch.tgt_out is None
    moved = batch.to("cpu")
    assert isinstance(moved, Batch) and moved is not batch and moved.tgt_in is None
    assert torch.equal(moved.src, batch.src)


def test_char_pipeline_end_to_end(tmp_path):
    write(tmp_path / "t.ko", "가나\n다\n")
    write(tmp_path / "t.en", "ab\ncde\n")
    pairs = read_parallel(tmp_path / "t", "ko", "en")
    char = CharTokenizer()
    src_vocab = Vocab.build(char.tokenize(s) for s in pairs.src)
    tgt_vocab = Vocab.build(char.tokenize(t) for t in pairs.tgt)
    examples, _ = encode_pairs(pairs, char, char, src_vocab, tgt_vocab)
    batch = collate(examples, [0, 1])
    assert char.detokenize(tgt_vocab.decode(batch.tgt_out[1].tolist())) == "cde"
    assert char.detokenize(src_vocab.decode(batch.src[0].tolist())) == "가나"


# ---------------------------------------------------------------------------------------------
# Sampler


def lengths(examples):
    return [len(e.src) for e in examples], [len(e.tgt) + 1 for e in examples]


def test_sampler_covers_every_example_once_within_budget():
    examples = random_examples(1000)
    src_len, tgt_len = lengths(examples)
    sampler = TokenBatchSampler(src_len, tgt_len, max_tokens=64, seed=1, pool_batches=10)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(batches) == len(sampler) > 1
        assert sorted(i for b in batches for i in b) == list(range(len(examples)))
        for b in batches:
            longest = max(max(src_len[i], tgt_len[i]) for i in b)
            assert len(b) * longest <= 64


def test_sampler_over_long_example_gets_its_own_batch():
    sampler = TokenBatchSampler([3, 50, 4], [2, 2, 60], max_tokens=10)
    batches = sorted(sorted(b) for b in sampler)
    assert batches == [[0], [1], [2]]


def test_sampler_order_is_a_function_of_seed_and_epoch():
    src_len, tgt_len = lengths(random_examples(500))

    def epoch_batches(seed, epoch):
        sampler = TokenBatchSampler(src_len, tgt_len, max_tokens=48, seed=seed, pool_batches=5)
        sampler.set_epoch(epoch)
        return list(sampler)

    assert epoch_batches(0, 3) == epoch_batches(0, 3)
    assert epoch_batches(0, 3) != epoch_batches(0, 4)
    assert epoch_batches(0, 3) != epoch_batches(1, 3)


def test_sampler_buckets_by_length():
    src_len, tgt_len = lengths(random_examples(2000))
    sampler = TokenBatchSampler(src_len, tgt_len, max_tokens=200)
    padded = sum(len(b) * max(src_len[i] for i in b) for b in sampler)
    assert padded < 1.2 * sum(src_len)  # random batches would pad far more


def test_sampler_without_shuffle_is_in_length_order():
    src_len, tgt_len = lengths(random_examples(300))
    sampler = TokenBatchSampler(src_len, tgt_len, max_tokens=40, shuffle=False)
    order = [i for b in sampler for i in b]
    keys = [(src_len[i], tgt_len[i]) for i in order]
    assert keys == sorted(keys)
    sampler.set_epoch(5)
    assert [i for b in sampler for i in b] == order


def test_sampler_source_only():
    sampler = TokenBatchSampler([5, 1, 3, 2], None, max_tokens=6, shuffle=False)
    assert list(sampler) == [[1, 3], [2], [0]]


@pytest.mark.parametrize("world_size", [2, 3])
def test_sampler_ranks_are_disjoint_and_equal_length(world_size):
    src_len, tgt_len = lengths(random_examples(500))
    samplers = [
        TokenBatchSampler(src_len, tgt_len, 50, seed=7, rank=r, world_size=world_size)
        for r in range(world_size)
    ]
    for s in samplers:
        s.set_epoch(2)
    per_rank = [list(s) for s in samplers]
    assert len({len(b) for b in per_rank}) == 1 and len(per_rank[0]) == len(samplers[0])
    seen = [i for batches in per_rank for b in batches for i in b]
    assert len(seen) == len(set(seen))
    everything = TokenBatchSampler(src_len, tgt_len, 50, seed=7)
    everything.set_epoch(2)
    all_batches = list(everything)
    usable = len(all_batches) - len(all_batches) % world_size
    assert sum(len(b) for b in per_rank) == usable


def test_sampler_epoch_does_not_depend_on_history():
    """A resumed run builds a new sampler and calls set_epoch(e): it must get the batches the
    uninterrupted run's sampler gave in epoch e after it had been through epochs 0 .. e-1
    (and an epoch read twice, or read partly, reads the same again)."""
    src_len, tgt_len = lengths(random_examples(300))
    running = TokenBatchSampler(src_len, tgt_len, 40, seed=3)
    epochs = []
    for epoch in range(3):
        running.set_epoch(epoch)
        next(iter(running))  # a partial read, as an interrupted epoch
        epochs.append(list(running))
    assert epochs[0] != epochs[1] != epochs[2]
    for epoch in (2, 0, 1):
        fresh = TokenBatchSampler(src_len, tgt_len, 40, seed=3)
        fresh.set_epoch(epoch)
        assert list(fresh) == epochs[epoch]
        running.set_epoch(epoch)
        assert list(running) == epochs[epoch]


def test_sampler_rejects_bad_arguments():
    with pytest.raises(ValueError):
        TokenBatchSampler([1, 2], [1], 10)
    with pytest.raises(ValueError):
        TokenBatchSampler([1], [1], 0)
    with pytest.raises(ValueError):
        TokenBatchSampler([1], [1], 10, rank=2, world_size=2)


def test_sampler_from_examples_uses_padded_lengths():
    examples = [Example(src=[5, EOS], tgt=[6, 7, 8])]
    sampler = TokenBatchSampler.from_examples(examples, 100)
    assert (sampler.src_lengths, sampler.tgt_lengths) == ([2], [4])
