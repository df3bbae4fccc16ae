"""Aligned many-to-many tagging: the CRF against brute-force enumeration, labels from spaced
text, the metrics by hand, padding invariance, generated spacing learnt with and without the
CRF, the tokens scheme's errors, the CLI."""

from __future__ import annotations

import itertools
import json

import pytest
import torch

from seqlab.cli import main
from seqlab.config import ConfigError, config_from_dict
from seqlab.data import DataError
from seqlab.problems.tag import (
    BigramBaseline,
    LinearChainCRF,
    RNNTagger,
    Tagged,
    Tagger,
    apply_spacing,
    spacing_example,
    tag_scores,
    token_tag_pairs,
)
from seqlab.train import train
from seqlab.vocab import PAD


def _crf(num_labels: int = 3, seed: int = 0) -> LinearChainCRF:
    torch.manual_seed(seed)
    crf = LinearChainCRF(num_labels).double()
    with torch.no_grad():
        for p in crf.parameters():
            p.normal_()
    return crf


def _emissions(lengths, num_labels=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    S = max(lengths)
    e = torch.randn(len(lengths), S, num_labels, generator=g, dtype=torch.double)
    mask = torch.tensor([[i < n for i in range(S)] for n in lengths])
    return e, mask


def _brute_score(crf, e, y):
    """score(x, y) for one unpadded sequence e (n, C), written from the definition."""
    s = crf.start[y[0]] + crf.end[y[-1]] + sum(e[i, y[i]] for i in range(len(y)))
    return s + sum(crf.transitions[y[i - 1], y[i]] for i in range(1, len(y)))


def test_crf_partition_viterbi_and_marginals_equal_brute_force_enumeration():
    crf, lengths, C = _crf(), [4, 1, 3], 3
    e, mask = _emissions(lengths)
    log_z = crf.log_partition(e, mask)
    best = crf.viterbi(e, mask)
    marginals = crf.marginals(e, mask)
    for b, n in enumerate(lengths):
        paths = list(itertools.product(range(C), repeat=n))
        scores = torch.stack([_brute_score(crf, e[b], y) for y in paths])
        torch.testing.assert_close(log_z[b], torch.logsumexp(scores, 0))
        assert tuple(best[b, :n].tolist()) == paths[int(scores.argmax())]
        assert best[b, n:].eq(0).all()
        p = (scores - torch.logsumexp(scores, 0)).exp()
        for i in range(n):
            for k in range(C):
                want = sum(p[j] for j, y in enumerate(paths) if y[i] == k)
                torch.testing.assert_close(marginals[b, i, k], want)
        y = torch.tensor(paths[5 % len(paths)] + (0,) * (e.size(1) - n))
        torch.testing.assert_close(crf.score(e[b : b + 1], y[None], mask[b : b + 1])[0],
                                   _brute_score(crf, e[b], y[:n].tolist()))


def test_crf_negative_log_likelihood_passes_gradcheck():
    crf = _crf(num_labels=2)
    e, mask = _emissions([3, 2], num_labels=2)
    e.requires_grad_(True)
    labels = torch.tensor([[1, 0, 1], [0, 1, 0]])
    assert torch.autograd.gradcheck(lambda e, *params: crf.nll(e, labels, mask).sum(),
                                    (e, *crf.parameters()))


def test_spacing_labels_from_spaced_text_and_back():
    chars, labels = spacing_example("아버지가  방에 들어가신다 ")
    assert "".join(chars) == "아버지가방에들어가신다"
    assert labels == ["0", "0", "0", "1", "0", "1", "0", "0", "0", "0", "0"]
    assert apply_spacing(chars, labels) == "아버지가 방에 들어가신다"
    assert apply_spacing(["a", "b"], ["1", "1"]) == "a b"  # no space after the last one
    assert spacing_example(" ") == ([], [])


def test_tag_scores_by_hand():
    # positions (pred, gold), background 0: (1,1) tp; (1,0) fp; (0,1) fn; (0,0); (2,2) tp;
    # (2,1) fp and fn
    predicted, gold = [[1, 1, 0], [0, 2, 2]], [[1, 0, 1], [0, 2, 1]]
    s = tag_scores(predicted, gold, background=0)
    assert s["precision"] == pytest.approx(2 / 4) and s["recall"] == pytest.approx(2 / 4)
    assert s["f1"] == pytest.approx(0.5) and s["accuracy"] == pytest.approx(3 / 6)
    assert s["exact_match"] == 0.0
    assert tag_scores([[1, 0]], [[1, 0]], 0)["exact_match"] == 1.0


def test_the_bigram_baseline_follows_the_majority_of_each_character_pair():
    train_data = Tagged([list("ab"), list("ab"), list("abc")],
                        [["1", "0"], ["1", "0"], ["0", "0", "0"]], "t")
    baseline = BigramBaseline(train_data)
    assert baseline.predict(list("abx")) == ["1", "0", "0"]  # (a, b) spaced 2 of 3 times
    assert baseline.predict(list("xa")) == ["0", "0"]  # unseen pair, unseen character


@pytest.mark.parametrize("crf", [False, True])
def test_a_padded_batch_decodes_each_row_as_if_alone(crf):
    torch.manual_seed(0)
    model = RNNTagger(vocab_size=10, num_labels=3, embedding_size=6, hidden_size=8,
                      cell="lstm", num_layers=2, bidirectional=True, dropout=0.0,
                      crf=crf).double().eval()
    rows = [[4, 5, 6, 7], [8, 9], [5, 5, 4]]
    src = torch.tensor([r + [PAD] * (4 - len(r)) for r in rows])
    lengths = torch.tensor([len(r) for r in rows])
    with torch.no_grad():
        labels, probs = model.decode(src, lengths)
        for b, row in enumerate(rows):
            one_labels, one_probs = model.decode(torch.tensor([row]), torch.tensor([len(row)]))
            assert labels[b, : len(row)].tolist() == one_labels[0].tolist()
            torch.testing.assert_close(probs[b, : len(row)], one_probs[0])
        gold = torch.tensor([[1, 0, 2, 1], [0, 1, -100, -100], [2, 2, 0, -100]])
        _, summed = model(src, lengths, gold)
        alone = sum(model(torch.tensor([r]), torch.tensor([len(r)]),
                          gold[b : b + 1, : len(r)])[1] for b, r in enumerate(rows))
        torch.testing.assert_close(summed, alone)


def _config(tmp_path, **sections):
    raw = {"problem": "tag",
           "data": {"synthetic": "spacing", "synthetic_train_size": 1500,
                    "synthetic_eval_size": 150, "format": "text"},
           "model": {"cell": "lstm", "embedding_size": 24, "hidden_size": 48, "dropout": 0.0},
           "train": {"batch_tokens": 600, "lr": 0.01, "max_epochs": 2, "valid_every": 200,
                     "threads": 1, "seed": 1}}
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    return config_from_dict(raw)


@pytest.fixture(scope="module")
def spacing_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("spacing")
    train(_config(tmp), tmp / "run", quiet=True)
    return tmp / "run"


@pytest.mark.parametrize("crf", [False, True])
def test_generated_korean_spacing_is_learnt(tmp_path, spacing_run, crf):
    """Two epochs of 1,500 generated sentences. Test F1 was 1.0 on seeds 1-6 with both CPU
    kernels, for both outputs; the bar leaves room."""
    run = spacing_run
    if crf:
        run = tmp_path / "crf"
        train(_config(tmp_path, tag={"crf": True}), run, quiet=True)
    results = json.loads((run / "results.json").read_text())
    assert results["test"]["f1"] >= 0.97, results["test"]
    assert (run / "spacing.png").stat().st_size > 1000
    tagger = Tagger.from_checkpoint(run, device="cpu")
    spaced = tagger.predict(["고양이가 사 과를천천히먹는다."])[0].text
    assert spaced == "고양이가 사과를 천천히 먹는다."


def test_tag_command_restores_spaces_in_input_order(spacing_run, tmp_path, capsys):
    lines = tmp_path / "in.txt"
    lines.write_text("아이가책을읽었다.\n\n오늘강아지는빵을먹는다.\n", encoding="utf-8")
    assert main(["tag", str(spacing_run), "-i", str(lines), "--device", "cpu"]) == 0
    assert capsys.readouterr().out.splitlines() == ["아이가 책을 읽었다.", "",
                                                    "오늘 강아지는 빵을 먹는다."]
    assert main(["tag", str(spacing_run), "-i", str(lines), "--json"]) == 0
    first = json.loads(capsys.readouterr().out.splitlines()[0])
    assert first["labels"][2] == "1" and first["probabilities"][2]["1"] > 0.5
    spaced = tmp_path / "gold.txt"
    spaced.write_text("아이가 책을 읽었다.\n오늘 강아지는 빵을 먹는다.\n", encoding="utf-8")
    assert main(["evaluate", str(spacing_run), "--data", str(spaced), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["f1"] == 1.0 and result["sequences"] == 2
    assert main(["classify", str(spacing_run)]) == 2
    assert "a tag model, not a classify one; use `seqlab tag`" in capsys.readouterr().err


def test_tokens_scheme_learns_tags_and_rejects_a_count_mismatch(tmp_path):
    words = {"the": "DET", "a": "DET", "cat": "N", "dog": "N", "runs": "V", "sleeps": "V"}
    rows = [("the cat runs", None), ("a dog sleeps", None), ("the dog runs", None),
            ("a cat sleeps", None)] * 30
    for split in ("train", "valid"):
        (tmp_path / f"{split}.src").write_text("".join(r + "\n" for r, _ in rows))
        (tmp_path / f"{split}.tgt").write_text("".join(
            " ".join(words[w] for w in r.split()) + "\n" for r, _ in rows))
    cfg = config_from_dict({"problem": "tag", "tag": {"scheme": "tokens"},
                            "data": {"root": str(tmp_path), "train": "train",
                                     "valid": "valid"},
                            "model": {"embedding_size": 8, "hidden_size": 16},
                            "train": {"batch_tokens": 60, "lr": 0.02, "max_steps": 60,
                                      "valid_every": 60, "threads": 1}})
    train(cfg, tmp_path / "run", quiet=True)
    tagger = Tagger.from_checkpoint(tmp_path / "run", device="cpu")
    assert tagger.predict(["a dog runs"])[0].text == "a/DET dog/N runs/V"
    assert tagger.codec.background in {"DET", "N", "V"}
    with pytest.raises(DataError, match=r"^t: pair 2: 2 tokens but 1 tags"):
        token_tag_pairs(["a b", "c d"], ["X Y", "Z"], "t")
    with pytest.raises(DataError, match=r"^t:7: 2 tokens but 1 tags"):
        token_tag_pairs(["a b", "c d"], ["X Y", "Z"], "t", [3, 7])


def test_config_rules_of_the_tag_problem():
    with pytest.raises(ConfigError, match="tag.scheme spacing reads data.format text"):
        config_from_dict({"problem": "tag", "data": {"train": "x", "format": "parallel"}})
    with pytest.raises(ConfigError, match="tag.scheme tokens reads data.format parallel or tsv"):
        config_from_dict({"problem": "tag", "tag": {"scheme": "tokens"},
                          "data": {"train": "x", "format": "text"}})
