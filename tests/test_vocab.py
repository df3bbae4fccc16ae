import pytest
import torch

from seqlab.vocab import EOS, PAD, SOS, SPECIALS, UNK, Vocab


def test_build_orders_by_frequency_then_alphabet_with_limits():
    sents = [["b", "a", "c"], ["a", "c"], ["a", "d"]]
    v = Vocab.build(sents)
    assert v.itos == list(SPECIALS) + ["a", "c", "b", "d"]
    assert Vocab.build(sents, min_freq=2).itos == list(SPECIALS) + ["a", "c"]
    assert Vocab.build(sents, max_size=5).itos == list(SPECIALS) + ["a"]


def test_fixed_special_ids():
    assert (PAD, UNK, SOS, EOS) == (0, 1, 2, 3)
    assert Vocab.build([["x"]]).itos[:4] == ["<pad>", "<unk>", "<sos>", "<eos>"]


def test_encode_decode():
    v = Vocab.build([["hello", "world"]])
    ids = v.encode(["hello", "there", "world"])
    assert ids == [v.stoi["hello"], UNK, v.stoi["world"]]
    assert v.decode([SOS, *ids, EOS, v.stoi["hello"]]) == ["hello", "<unk>", "world"]


def test_special_looking_text_is_not_special():
    v = Vocab.build([["<eos>", "a", "<pad>"]])
    assert v.encode(["<eos>", "a", "<pad>", "<sos>"]) == [UNK, v.stoi["a"], UNK, UNK]


def test_state_dict_round_trip(tmp_path):
    v = Vocab.build([["안녕", "하세요"], ["안녕"]])
    torch.save(v.state_dict(), tmp_path / "v.pt")
    w = Vocab.from_state_dict(torch.load(tmp_path / "v.pt", weights_only=True))
    assert w.itos == v.itos


def test_bad_vocabularies():
    with pytest.raises(ValueError, match="special"):
        Vocab(["a", "b"])
    with pytest.raises(ValueError, match="twice"):
        Vocab([*SPECIALS, "a", "a"])
