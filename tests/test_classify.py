"""Many-to-one classification: the pooled summary against references written here, padding
invariance, a tiny set learnt to 100%, resume = uninterrupted, the data's errors, the CLI."""

from __future__ import annotations

import json

import pytest
import torch

from seqlab.checkpoint import load_checkpoint
from seqlab.cli import main
from seqlab.config import ConfigError, config_from_dict
from seqlab.data import DataError, read_tsv
from seqlab.problems.classify import (
    POOLINGS,
    Classifier,
    RNNClassifier,
    confusion_matrix,
    macro_f1,
)
from seqlab.train import train
from seqlab.vocab import EOS, PAD


def _model(pooling: str, cell: str = "gru", bidirectional: bool = True) -> RNNClassifier:
    torch.manual_seed(0)
    model = RNNClassifier(vocab_size=12, num_labels=3, embedding_size=5, hidden_size=8,
                         cell=cell, num_layers=2, bidirectional=bidirectional, dropout=0.0,
                         pooling=pooling).double().eval()
    return model


def _batch():
    """Three rows of lengths 4, 2, 6 (EOS last), padded to 6."""
    rows = [[4, 5, 6, EOS], [7, EOS], [8, 9, 10, 11, 4, EOS]]
    src = torch.tensor([r + [PAD] * (6 - len(r)) for r in rows])
    return rows, src, torch.tensor([len(r) for r in rows])


def _reference_summary(model: RNNClassifier, row: list[int], pooling: str) -> torch.Tensor:
    """The pooled summary of one unpadded row, computed here from torch's own recurrent
    layer holding the model's weights (an independent path: no packing, no masks)."""
    x = model.embed(torch.tensor([row]))  # (1, S, E)
    rnn = model.rnn.rnn  # the torch.nn.GRU / LSTM container of the weights
    states, final = rnn(x)  # (1, S, M), h (L*D, 1, H)
    h = states[0]  # (S, M)
    if pooling == "mean":
        return h.mean(0)
    if pooling == "max":
        return h.max(0).values
    if pooling == "final":
        H = h.shape[1] // 2
        return torch.cat([h[-1, :H], h[0, H:]])  # forward at S, backward at 1
    w, b = model.score[0].weight, model.score[0].bias
    v = model.score[2].weight[0]
    a = torch.softmax(torch.tanh(h @ w.T + b) @ v, 0)  # (S,)
    return (a[:, None] * h).sum(0)


@pytest.mark.parametrize("pooling", POOLINGS)
@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_summary_equals_the_reference_and_ignores_padding(pooling, cell):
    model = _model(pooling, cell)
    rows, src, lengths = _batch()
    with torch.no_grad():
        batched, _ = model.summary(src, lengths)
        for b, row in enumerate(rows):
            want = _reference_summary(model, row, pooling)
            torch.testing.assert_close(batched[b], want, atol=1e-10, rtol=0)
            alone, _ = model.summary(torch.tensor([row]), torch.tensor([len(row)]))
            torch.testing.assert_close(batched[b], alone[0], atol=1e-10, rtol=0)


def test_final_pooling_of_a_unidirectional_encoder_is_the_last_real_state():
    model = _model("final", bidirectional=False)
    rows, src, lengths = _batch()
    with torch.no_grad():
        batched, _ = model.summary(src, lengths)
        for b, row in enumerate(rows):
            states, _ = model.rnn.rnn(model.embed(torch.tensor([row])))
            torch.testing.assert_close(batched[b], states[0, -1], atol=1e-10, rtol=0)


def test_loss_is_the_summed_cross_entropy_of_the_logits():
    model = _model("attention")
    _, src, lengths = _batch()
    labels = torch.tensor([2, 0, 1])
    logits, loss = model(src, lengths, labels)
    by_hand = -(logits.log_softmax(-1)[torch.arange(3), labels]).sum()
    torch.testing.assert_close(loss, by_hand)
    assert model(src, lengths)[1] is None


def test_macro_f1_and_confusion_by_hand():
    gold = [0, 0, 0, 1, 1, 2]
    pred = [0, 0, 1, 1, 2, 2]
    m = confusion_matrix(pred, gold, 3)
    assert m == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    # F1: label 0: P 2/2 R 2/3 -> 0.8; label 1: P 1/2 R 1/2 -> 0.5; label 2: P 1/2 R 1 -> 2/3
    assert macro_f1(m) == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert macro_f1([[0, 0], [0, 5]]) == pytest.approx(0.5)  # label 0 absent and never said


def _config(tmp_path, **sections):
    raw = {"problem": "classify",
           "data": {"synthetic": "is_sorted", "synthetic_train_size": 48,
                    "synthetic_eval_size": 16},
           "tokenizer": {"kind": "word"},
           "model": {"embedding_size": 16, "hidden_size": 32, "dropout": 0.0},
           "train": {"lr": 0.01, "batch_tokens": 400, "max_steps": 120, "valid_every": 40,
                     "log_every": 20, "threads": 1, "patience": None,
                     "early_stopping_metric": "loss"}}
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    return config_from_dict(raw)


def test_a_tiny_set_is_learnt_to_100_percent(tmp_path):
    """48 generated examples, memorised: every training text gets its label back. (Training
    accuracy reached 1.0 by step 120 on seeds 1-6 with both CPU kernels.)"""
    from seqlab.synthetic import make_dataset

    cfg = _config(tmp_path)
    train(cfg, tmp_path / "run", quiet=True)
    pairs = make_dataset("is_sorted", 48, seed=cfg.train.seed, split="train")
    classifier = Classifier.from_checkpoint(tmp_path / "run" / "last.pt", device="cpu")
    predictions = classifier.predict([t for t, _ in pairs])
    assert [p.label for p in predictions] == [label for _, label in pairs]
    assert all(abs(sum(p.probabilities.values()) - 1) < 1e-5 for p in predictions)
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert set(results) >= {"stopped", "valid", "test"}
    assert (tmp_path / "run" / "confusion_test.png").stat().st_size > 1000


@pytest.mark.parametrize("classify", [{}, {"ngram_buckets": 64}], ids=["rnn", "ngrams"])
def test_resume_equals_an_uninterrupted_run(tmp_path, classify):
    """(With an n-gram part, its Adagrad state is saved and restored too.)"""
    cfg = _config(tmp_path, train={"max_steps": 40, "valid_every": 20, "lr": 0.003,
                                   "batch_tokens": 60}, classify=classify)
    train(cfg, tmp_path / "whole", quiet=True)
    half = _config(tmp_path, train={"max_steps": 20, "valid_every": 20, "lr": 0.003,
                                    "batch_tokens": 60}, classify=classify)
    train(half, tmp_path / "resumed", quiet=True)
    train(cfg, tmp_path / "resumed", resume=True, quiet=True)
    whole = load_checkpoint(tmp_path / "whole" / "last.pt")
    resumed = load_checkpoint(tmp_path / "resumed" / "last.pt")
    assert resumed["progress"]["step"] == whole["progress"]["step"] == 40
    assert whole["progress"]["epoch"] >= 1  # the run crossed an epoch boundary
    for name, tensor in whole["model"].items():
        torch.testing.assert_close(resumed["model"][name], tensor, rtol=0, atol=0)


def test_tsv_columns_by_header_name(tmp_path):
    path = tmp_path / "reviews.tsv"
    path.write_text("id\tdocument\tlabel\n1\t좋다\t1\n2\t\t0\n3\t별로\t0\n", encoding="utf-8")
    pairs = read_tsv(path, "document", "label", header=True)
    assert pairs.src == ["좋다", "별로"] and pairs.tgt == ["1", "0"]
    assert pairs.skipped_empty == 1
    with pytest.raises(DataError, match=r"reviews.tsv:1: no column 'labels' in the header "
                                        r"\(id, document, label\)"):
        read_tsv(path, "document", "labels", header=True)
    path.write_text("id\tdocument\tlabel\n1\t좋다\t1\n2\t별로\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"reviews.tsv:3: expected 3 tab-separated columns"):
        read_tsv(path, "document", "label", header=True)


def _write_split(path, rows):
    path.write_text("".join(f"{text}\t{label}\n" for text, label in rows), encoding="utf-8")


def test_a_test_label_never_seen_in_training_is_an_error_before_training(tmp_path, capsys):
    _write_split(tmp_path / "train.tsv", [("좋은 영화", "pos"), ("나쁜 영화", "neg")] * 5)
    _write_split(tmp_path / "test.tsv", [("좋은 영화", "pos"), ("그냥 영화", "neutral")])
    config = tmp_path / "c.yaml"
    config.write_text(f"problem: classify\ndata:\n  root: {tmp_path}\n  train: train.tsv\n"
                      "  test: test.tsv\n  format: tsv\ntokenizer:\n  kind: char\n",
                      encoding="utf-8")
    code = main(["train", str(config), "--out", str(tmp_path / "run"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.strip() == (f"seqlab train: error: {tmp_path / 'test.tsv'}: label 'neutral' was "
                           "never seen in training (training labels: neg, pos)")
    assert not (tmp_path / "run").exists()


def test_classify_command_writes_label_tab_probability_in_input_order(tmp_path, capsys):
    cfg = _config(tmp_path, train={"max_steps": 60})
    train(cfg, tmp_path / "run", quiet=True)
    texts = tmp_path / "in.txt"
    texts.write_text("1 2 3 4\n9 1\n\n3 3 5\n", encoding="utf-8")
    assert main(["classify", str(tmp_path / "run"), "-i", str(texts), "--device", "cpu"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4
    classifier = Classifier.from_checkpoint(tmp_path / "run", device="cpu")
    want = classifier.predict(["1 2 3 4", "9 1", "", "3 3 5"])
    for line, p in zip(lines, want):
        label, probability = line.split("\t")
        assert label == p.label and float(probability) == pytest.approx(p.probability,
                                                                        abs=1e-4)
    assert main(["translate", str(tmp_path / "run")]) == 2
    assert "a classify model, not a seq2seq one; use `seqlab classify`" in \
        capsys.readouterr().err


def test_logged_training_loss_is_the_mean_over_examples(tmp_path):
    """One step over one batch holding every training example: the logged train_loss is the
    mean cross-entropy per example of the initial model (the loop divides the summed loss by
    the problem's count, here examples)."""
    from seqlab.problems.classify import ClassifyProblem, collate_labelled

    cfg = _config(tmp_path, train={"max_steps": 1, "log_every": 1, "batch_tokens": 100000,
                                   "optimizer": "sgd"})
    train(cfg, tmp_path / "run", quiet=True)
    logged = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text()
              .splitlines() if "train_loss" in x][0]
    torch.manual_seed(cfg.train.seed)  # as the loop does before it builds the model
    problem = ClassifyProblem(cfg)
    problem.prepare()
    model = problem.build_model().eval()
    batch = collate_labelled(problem.ids, problem.labels, range(len(problem.ids)))
    with torch.no_grad():
        _, summed = model(batch.src, batch.src_lengths, batch.labels)
    assert logged["train_loss"] == pytest.approx(summed.item() / len(problem.ids), rel=1e-5)
    assert logged["examples_per_s"] > 0


def test_subword_sampling_is_a_function_of_seed_and_epoch(tmp_path):
    """tokenizer.sampling_alpha: each epoch's training ids are sampled segmentations of the
    same texts (the pieces join back to the text), the same for the same (seed, epoch) — so
    every rank and a resumed run agree — and different from epoch to epoch."""
    from seqlab.problems.classify import ClassifyProblem

    words = ["재미있다", "지루하다", "최고의", "영화", "배우가", "연기를", "잘한다", "별로"]
    rows = [(" ".join(words[(i * k) % 8] for k in range(1, 5)), str(i % 2)) for i in range(60)]
    _write_split(tmp_path / "train.tsv", rows)

    def problem(alpha: float) -> ClassifyProblem:
        cfg = config_from_dict({
            "problem": "classify", "data": {"root": str(tmp_path), "train": "train.tsv",
                                            "format": "tsv"},
            "tokenizer": {"kind": "sentencepiece", "vocab_size": 60, "sampling_alpha": alpha}})
        p = ClassifyProblem(cfg)
        p.prepare()
        return p

    plain, sampled = problem(0.0), problem(0.1)
    assert set(sampled.codec.tokenizer.pieces()) <= set(sampled.codec.vocab.itos)

    def epoch_ids(p, epoch):
        p.batches(epoch, 0, 1)
        return [list(x) for x in p.ids]

    first, again, second = epoch_ids(sampled, 0), None, epoch_ids(sampled, 1)
    again = epoch_ids(problem(0.1), 0)
    assert first == again and first != second
    assert epoch_ids(plain, 0) == epoch_ids(plain, 1) == plain.ids
    vocab, tokenizer = sampled.codec.vocab, sampled.codec.tokenizer
    for ids, (text, _) in zip(second, rows):
        assert tokenizer.detokenize(vocab.decode(ids)) == text
    assert sum(a != b for a, b in zip(first, plain.ids)) > 10  # sampling changed many rows


@pytest.mark.parametrize("bidirectional", [True, False])
def test_the_auxiliary_lm_loss_is_next_and_previous_token_nats_by_hand(bidirectional):
    """classify.lm_weight: each example's extra loss is the mean, over both directions, of
    -log p(next token) from the forward states and -log p(previous token) from the backward
    states, computed here one unpadded row at a time from torch's own recurrent layer."""
    torch.manual_seed(0)
    model = RNNClassifier(vocab_size=12, num_labels=3, embedding_size=5, hidden_size=8,
                          cell="lstm", num_layers=1, bidirectional=bidirectional, dropout=0.0,
                          pooling="mean", lm_weight=0.5).double().eval()
    rows, src, lengths = _batch()
    expected = []
    for row in rows:
        states = model.rnn.rnn(model.embed(torch.tensor([row])))[0][0]  # (n, M)
        H = model.lm_out.in_features
        logp = lambda h: torch.log_softmax(model.lm_out(h), -1)  # noqa: E731
        nats = [-logp(states[t, :H])[row[t + 1]] for t in range(len(row) - 1)]
        if bidirectional:
            nats += [-logp(states[t, H:])[row[t - 1]] for t in range(1, len(row))]
        expected.append(torch.stack(nats).mean())
    encoded = model.encode(src, lengths)
    assert torch.allclose(model.lm_loss(encoded[0], src, lengths), torch.stack(expected))
    labels = torch.tensor([0, 2, 1])
    logits, loss = model(src, lengths, labels)
    by_hand = torch.nn.functional.cross_entropy(logits, labels, reduction="sum") + \
        0.5 * torch.stack(expected).sum()
    assert torch.allclose(loss, by_hand)


def test_the_auxiliary_lm_needs_one_bidirectional_layer():
    with pytest.raises(ConfigError, match="classify.lm_weight with a bidirectional encoder "
                       "needs model.encoder_layers: 1"):
        config_from_dict({"problem": "classify", "data": {"synthetic": "is_sorted"},
                          "classify": {"lm_weight": 0.5}, "model": {"encoder_layers": 2}})


def test_the_sampled_auxiliary_lm_loss_estimates_the_full_one_without_bias():
    torch.manual_seed(0)
    model = RNNClassifier(vocab_size=12, num_labels=3, embedding_size=5, hidden_size=8,
                          cell="gru", num_layers=1, bidirectional=True, dropout=0.0,
                          pooling="mean", lm_weight=1.0).double().eval()
    _, src, lengths = _batch()
    states = model.encode(src, lengths)[0].detach()
    full = model.lm_loss(states, src, lengths)
    with torch.no_grad():
        draws = torch.stack([model.lm_loss(states, src, lengths, sample=0.5)
                             for _ in range(8000)])
    assert torch.allclose(draws.mean(0), full, rtol=0.03)  # 4 standard errors of the mean
    assert (draws.std(0) > 0).all()  # a real sample, not the full sum


# ---------------------------------------------------------------------------------- n-grams
def test_ngram_grams_by_hand():
    from seqlab.ngrams import grams

    assert grams("좋다  ㅋㅋㅋㅋ 최고", words=2, chars=2) == [
        "w1:좋다", "w1:ㅋㅋ", "w1:최고", "w2:좋다 ㅋㅋ", "w2:ㅋㅋ 최고",
        "c1: ", "c1:좋", "c1:다", "c1: ", "c1:ㅋ", "c1:ㅋ", "c1: ", "c1:최", "c1:고", "c1: ",
        "c2: 좋", "c2:좋다", "c2:다 ", "c2: ㅋ", "c2:ㅋㅋ", "c2:ㅋ ", "c2: 최", "c2:최고",
        "c2:고 "]
    assert grams("a", words=0, chars=0) == []


def test_ngram_ids_are_the_same_in_every_process():
    """Python's hash() of a str changes with each process (PYTHONHASHSEED): ids built on it
    would mean different features at training and at prediction time."""
    import os
    import subprocess
    import sys

    from seqlab.ngrams import features

    code = "from seqlab.ngrams import features; print(features('재밌는 영화 ㅋㅋ', 1 << 20, 2, 4))"
    here = features("재밌는 영화 ㅋㅋ", 1 << 20, 2, 4)
    for seed in ("1", "2"):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env={**os.environ, "PYTHONHASHSEED": seed}, check=True).stdout
        assert json.loads(out) == here
    assert here == sorted(set(here)) and all(0 <= i < 1 << 20 for i in here)


def _ngram_model(weight: float = 0.3) -> RNNClassifier:
    torch.manual_seed(0)
    model = RNNClassifier(vocab_size=12, num_labels=3, embedding_size=5, hidden_size=8,
                          cell="gru", num_layers=1, bidirectional=True, dropout=0.0,
                          pooling="mean", ngram_buckets=10, ngram_weight=weight,
                          ).double().eval()
    with torch.no_grad():
        model.ngram.weight.normal_()
    return model


def test_the_ngram_part_is_a_product_of_experts_with_separate_losses():
    """logits = z_rnn + w z_ngram with z_ngram = sum_g E[g]; loss = CE(z_rnn) + CE(z_ngram)."""
    from seqlab.ngrams import pack

    model = _ngram_model(weight=0.3)
    _, src, lengths = _batch()
    rows = [[1, 4], [], [0, 4, 9]]
    ngrams = pack([torch.tensor(r, dtype=torch.int32) for r in rows])
    labels = torch.tensor([2, 0, 1])
    logits, loss = model(src, lengths, labels, ngrams=ngrams)
    c, _ = model.summary(src, lengths)
    z_rnn = model.out(c)
    E = model.ngram.weight
    z_ngram = torch.stack([E[r].sum(0) if r else E.new_zeros(3) for r in rows])
    torch.testing.assert_close(logits, z_rnn + 0.3 * z_ngram)
    expected = (torch.nn.functional.cross_entropy(z_rnn, labels, reduction="sum")
                + torch.nn.functional.cross_entropy(z_ngram, labels, reduction="sum"))
    torch.testing.assert_close(loss, expected)
    unlabelled, none = model(src, lengths, ngrams=ngrams)
    assert none is None
    torch.testing.assert_close(unlabelled, logits)
    with pytest.raises(ValueError, match="has an n-gram part: pass ngrams="):
        model(src, lengths)


def test_ngram_config_needs_some_grams():
    with pytest.raises(ConfigError, match="classify.ngram_buckets needs word or character "
                                          "n-grams"):
        config_from_dict({"problem": "classify", "data": {"synthetic": "is_sorted"},
                          "classify": {"ngram_buckets": 64, "ngram_words": 0,
                                       "ngram_chars": 0}})


def test_a_tiny_set_is_learnt_with_the_ngram_part_and_batching_does_not_matter(tmp_path):
    """The trained run predicts its training texts (all 48 right on seeds 1-6 with both CPU
    kernels); predicting texts together or one at a time gives the same probabilities (each
    text's n-grams stay with it)."""
    from seqlab.synthetic import make_dataset

    cfg = _config(tmp_path, classify={"ngram_buckets": 256})
    train(cfg, tmp_path / "run", quiet=True)
    pairs = make_dataset("is_sorted", 48, seed=cfg.train.seed, split="train")
    classifier = Classifier.from_checkpoint(tmp_path / "run" / "last.pt", device="cpu")
    assert classifier.model.ngram.weight.abs().sum() > 0  # the n-gram part learnt
    texts = [t for t, _ in pairs]
    together = classifier.logits(texts)
    assert [classifier.codec.labels[int(i)] for i in together.argmax(-1)] == \
        [label for _, label in pairs]
    alone = torch.cat([classifier.logits([t]) for t in texts[:12]])
    torch.testing.assert_close(together[:12], alone, rtol=1e-5, atol=1e-5)
    metrics = classifier.evaluate(texts, [label for _, label in pairs])
    z_rnn, z_ngram = classifier.part_logits(texts)
    gold = torch.tensor(classifier.codec.label_ids([label for _, label in pairs], "train"))
    for name, z in (("rnn", z_rnn), ("ngram", z_ngram)):
        right = (z.argmax(-1) == gold).double().mean().item()
        assert metrics[f"accuracy_{name}"] == pytest.approx(right)
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert {"accuracy_rnn", "accuracy_ngram"} <= set(results["valid"])


def test_the_ngram_weights_are_trained_by_adagrad_outside_clipping():
    from seqlab.config import TrainConfig
    from seqlab.train import _optimizers

    model = _ngram_model()
    optimizer, adagrad, clipped = _optimizers(model, TrainConfig())
    E = model.ngram.weight
    assert isinstance(adagrad, torch.optim.Adagrad)
    assert [p for g in adagrad.param_groups for p in g["params"]] == [E]
    assert adagrad.param_groups[0]["lr"] == model.ngram_lr
    others = [p for g in optimizer.param_groups for p in g["params"]]
    assert all(p is not E for p in others) and len(others) == len(list(model.parameters())) - 1
    assert all(p is not E for p in clipped)
    assert _optimizers(_model("mean"), TrainConfig())[1] is None
