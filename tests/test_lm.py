"""Language modelling (seqlab.problems.lm): the model's own loss, truncated BPTT (the state
carried across chunks, the rows' layout), learning the alphabet through the training loop in
both modes, exact resumption with the carry, validation over every token once, generation
and scoring with `Generator`, reading text files."""

import json
import math

import pytest
import torch

from seqlab.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from seqlab.config import config_from_dict
from seqlab.data import DataError
from seqlab.problems.lm import (
    Generator,
    LMProblem,
    RNNLanguageModel,
    build_lm,
    read_text,
)
from seqlab.search import greedy_search
from seqlab.synthetic import make_dataset
from seqlab.train import train
from seqlab.vocab import PAD, SOS, UNK, Vocab

torch.set_num_threads(1)


def _config(**sections):
    """Alphabet lines, a character GRU, 16 rows x bptt 16 per step (about 14 steps an epoch)."""
    raw = {
        "problem": "lm",
        "data": {"synthetic": "alphabet", "synthetic_train_size": 400, "synthetic_eval_size": 100},
        "tokenizer": {"kind": "char"},
        "model": {"bidirectional": False, "cell": "gru", "embedding_size": 16,
                  "hidden_size": 48, "dropout": 0.0},
        "train": {"batch_tokens": 256, "lr": 0.01, "max_steps": 300, "max_epochs": 1000,
                  "log_every": 50, "valid_every": 100, "valid_samples": 1, "threads": 1,
                  "patience": None},
        "lm": {"bptt": 16},
    }
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    return config_from_dict(raw)


def _tiny_model(vocab_size, cell="gru", layers=1, **kwargs):
    torch.manual_seed(0)
    return RNNLanguageModel(vocab_size, embedding_size=8, hidden_size=12, cell=cell,
                            num_layers=layers, **kwargs)


def _successors_only(text: str) -> bool:
    """Every letter that follows a letter is the next one in the alphabet (z -> a)."""
    return all(ord(b) - ord("a") == (ord(a) - ord("a") + 1) % 26
               for a, b in zip(text, text[1:]) if a.isalpha() and b.isalpha())


# ---------------------------------------------------------------------------------------------
# The model


def test_hello_is_learned_and_the_loss_is_the_summed_cross_entropy():
    """Karpathy's "hello": a character RNN over {h, e, l, o} reads "hell" and must predict
    "ello"; its loss is sum_t -(z_t[y_t] - log sum_v exp z_t[v]), written out here."""
    vocab = Vocab.build([list("hello")])
    inputs = torch.tensor([vocab.encode(list("hell"))])  # (1, 4)
    targets = torch.tensor([vocab.encode(list("ello"))])  # (1, 4)
    model = _tiny_model(len(vocab), cell="rnn")

    def by_hand(logits):
        total = 0.0
        for t, y in enumerate(targets[0].tolist()):
            z = logits[0, t].double()
            total += -(z[y] - torch.log(torch.exp(z).sum())).item()
        return total

    logits, loss, _ = model(inputs, targets)
    assert loss.item() == pytest.approx(by_hand(logits), rel=1e-6)  # untrained: about 4 x ln 8
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(60):
        _, loss, _ = model(inputs, targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    logits, loss, final = model(inputs, targets)
    assert logits.shape == (1, 4, len(vocab)) and final.shape == (1, 1, 12)
    assert [vocab.itos[i] for i in logits[0].argmax(-1).tolist()] == list("ello")
    assert loss.item() == pytest.approx(by_hand(logits), abs=1e-6)
    # a PAD target adds nothing; without targets there is no loss
    padded = targets.clone()
    padded[0, 3] = PAD
    assert model(inputs, padded)[1].item() == pytest.approx(
        by_hand(logits) + (logits[0, 3, targets[0, 3]] - logits[0, 3].logsumexp(-1)).item(),
        abs=1e-6)
    assert model(inputs)[1] is None


def test_build_lm_reads_the_model_config():
    config = _config(model={"cell": "lstm", "encoder_layers": 2, "embedding_size": 24,
                            "hidden_size": 24, "tie_embeddings": True, "backend": "cells"})
    model = build_lm(config.model, 31)
    assert model.out.weight is model.embed.weight
    assert (model.rnn.cell, model.rnn.num_layers, model.rnn.backend) == ("lstm", 2, "cells")
    logits, _, (h, c) = model(torch.randint(4, 31, (2, 5)))
    assert logits.shape == (2, 5, 31) and h.shape == c.shape == (2, 2, 24)


@pytest.mark.parametrize("backend", ["fused", "cells"])
@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_chunks_with_the_carried_state_equal_one_pass(cell, backend):
    """Truncated BPTT's forward pass: a sequence read in chunks, each starting from the last
    one's final state, gives the logits and final state of one pass over the whole."""
    model = _tiny_model(20, cell=cell, layers=2, backend=backend).eval()
    ids = torch.randint(4, 20, (3, 50))
    whole, _, final = model(ids)
    parts, state = [], None
    for start in range(0, 50, 7):
        logits, _, state = model(ids[:, start : start + 7], state=state)
        parts.append(logits)
    torch.testing.assert_close(torch.cat(parts, 1), whole, atol=1e-5, rtol=1e-5)
    for a, b in zip(state if cell == "lstm" else (state,), final if cell == "lstm" else (final,),
                    strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_search_continues_the_prime():
    """encode reads the prime but its last token; SOS (the search's first input) stands for
    it: the first step's logits are those of the full pass at the prime's end, the next step's
    those after one more token, also for primes of different lengths in one padded batch;
    and greedy search decodes such a batch as each prime alone."""
    model = _tiny_model(15, cell="lstm", layers=2).eval()
    primes = [[5, 9, 4, 11, 7], [8], [6, 12]]
    src = torch.tensor([p + [PAD] * (5 - len(p)) for p in primes])
    lengths = torch.tensor([len(p) for p in primes])
    memory = model.encode(src, lengths)
    assert torch.equal(memory.mask, src != PAD)
    state = model.init_state(memory)
    first, state, attn = model.step(torch.full((3,), SOS), state, memory)
    second, _, _ = model.step(torch.tensor([13, 4, 9]), state, memory)
    assert attn is None
    alone = []
    for b, prime in enumerate(primes):
        logits = model(torch.tensor([prime + [[13, 4, 9][b]]]))[0]  # (1, T + 1, V)
        torch.testing.assert_close(first[b], logits[0, -2], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(second[b], logits[0, -1], atol=1e-5, rtol=1e-5)
        hyp = greedy_search(model, torch.tensor([prime]), torch.tensor([len(prime)]),
                            max_len_a=0, max_len_b=6, min_len=6)[0][0]
        alone.append(hyp.tokens)
    batch = greedy_search(model, src, lengths, max_len_a=0, max_len_b=6, min_len=6)
    assert [h[0].tokens for h in batch] == alone and all(len(t) == 6 for t in alone)


# ---------------------------------------------------------------------------------------------
# Stream mode: rows, chunks, carry


def test_stream_rows_are_contiguous_and_the_offset_moves():
    """Rank 0's rows then rank 1's, each read chunk after chunk, are one contiguous slice of
    the training ids from an offset in [0, bptt); targets are the inputs shifted by one; the
    offset changes between epochs; the first chunk of an epoch starts from zeros."""
    config = _config(train={"batch_tokens": 64}, lm={"bptt": 8})  # 8 rows per rank
    problem = LMProblem(config)
    problem.prepare()
    ids = problem.splits["train"].ids.long()
    offsets = set()
    for epoch in range(4):
        inputs, targets = [], []
        for rank in (0, 1):
            keys = problem.batches(epoch, rank, 2)
            batches = [problem.batch(k) for k in keys]
            assert [b.reset for b in batches] == [True] + [False] * (len(batches) - 1)
            assert all(b.inputs.shape[0] == 8 for b in batches)
            inputs.append(torch.cat([b.inputs for b in batches], 1).reshape(-1))
            targets.append(torch.cat([b.targets for b in batches], 1).reshape(-1))
        inputs, targets = torch.cat(inputs), torch.cat(targets)
        found = [o for o in range(8) if torch.equal(ids[o : o + len(inputs)], inputs)]
        assert len(found) == 1
        o = found[0]
        assert torch.equal(ids[o + 1 : o + 1 + len(targets)], targets)
        assert len(ids) - 1 - o - len(targets) < 16  # only the remainder of 16 rows sits out
        offsets.add(o)
    assert len(offsets) > 1


def test_the_state_is_carried_from_batch_to_batch_and_detached():
    config = _config(train={"label_smoothing": 0.0})
    problem = LMProblem(config)
    problem.prepare()
    model = problem.build_model()
    first, second = (problem.batch(k) for k in problem.batches(0, 0, 1)[:2])
    s1, n1 = problem.loss(model, first, 0)
    s2, n2 = problem.loss(model, second, 1)
    assert not problem.carry.requires_grad  # the gradient stops at the chunk boundary
    _, whole, _ = model(torch.cat([first.inputs, second.inputs], 1),
                        torch.cat([first.targets, second.targets], 1))
    assert (s1 + s2).item() == pytest.approx(whole.item(), rel=1e-5)
    assert n1 + n2 == first.targets.numel() + second.targets.numel()
    # a new epoch starts from zeros, whatever is carried
    start = problem.batch(problem.batches(1, 0, 1)[0])
    s, _ = problem.loss(model, start, 2)
    assert s.item() == pytest.approx(model(start.inputs, start.targets)[1].item(), rel=1e-6)


def test_validate_predicts_every_token_once():
    """16 rows of near-equal length cover the validation ids: N - 1 predictions (stream), every
    line and its end (lines); with the char tokenizer a token is a character."""
    for size in (100, 37):  # (N - 1) % 16 != 0 for some
        problem = LMProblem(_config(data={"synthetic_eval_size": size},
                                    train={"valid_samples": 0}))
        problem.prepare()
        metrics = problem.validate(problem.build_model())
        n = len(problem.splits["valid"].ids)
        assert (n - 1) % 16 or size == 100
        assert metrics["tokens"] == metrics["chars"] == n - 1
        assert metrics["nats_per_char"] == pytest.approx(metrics["loss"])
        assert metrics["bpc"] == pytest.approx(metrics["loss"] / math.log(2))
        assert metrics["ppl"] == pytest.approx(math.exp(metrics["loss"]))
    problem = LMProblem(_config(lm={"mode": "lines"}, train={"valid_samples": 0}))
    problem.prepare()
    lines = make_dataset("alphabet", 100, seed=1, split="valid")
    assert problem.validate(problem.build_model())["tokens"] == sum(len(x) + 1 for x in lines)


def test_lines_mode_drops_training_lines_over_max_src_len():
    """A line is one sequence that back-propagation runs through whole: lines over
    data.max_src_len tokens leave the training split (and are counted); valid and test keep
    every line; a limit that leaves nothing is one DataError line naming the option."""
    lines = make_dataset("alphabet", 400, seed=1, split="train")
    limit = sorted(len(x) for x in lines)[len(lines) // 2]  # about half the lines are longer
    problem = LMProblem(_config(lm={"mode": "lines"}, data={"max_src_len": limit}))
    summary = problem.prepare()
    kept = problem.splits["train"].seqs
    over = sum(len(x) > limit for x in lines)
    assert 0 < over < len(lines) and len(kept) == len(lines) - over
    assert max(len(s) for s in kept) <= limit and f"{over} over data.max_src_len" in summary
    assert len(problem.splits["valid"].seqs) == 100
    with pytest.raises(DataError, match=r"no training line is within data.max_src_len=1 "):
        LMProblem(_config(lm={"mode": "lines"}, data={"max_src_len": 1})).prepare()


# ---------------------------------------------------------------------------------------------
# Through the training loop


@pytest.fixture(scope="module")
def stream_run(tmp_path_factory):
    """A character GRU trained 300 steps on alphabet lines in stream mode (about 2 s)."""
    out = tmp_path_factory.mktemp("lm") / "stream"
    results = train(_config(), out, quiet=True)
    return out, results


def test_learns_the_alphabet_in_stream_mode(stream_run):
    out, results = stream_run
    uniform = math.log(31)  # 26 letters, "\n" and the 4 specials
    assert results["valid"]["loss"] < 0.3 * uniform
    assert set(results) >= {"valid", "test"}
    generator = Generator.from_checkpoint(out)
    text = generator.generate("abc", 30, greedy=True)
    assert text.startswith("de") and _successors_only("abc" + text), text
    assert _successors_only(generator.generate("xyz", 30, greedy=True))


def test_learns_the_alphabet_in_lines_mode(tmp_path):
    results = train(_config(lm={"mode": "lines"}, train={"max_steps": 200}), tmp_path / "run",
                    quiet=True)
    assert results["valid"]["loss"] < 0.3 * math.log(31)
    generator = Generator.from_checkpoint(tmp_path / "run")
    text = generator.generate("abc", 30, greedy=True)
    assert text.startswith("de") and _successors_only(text), text
    assert "\n" not in text and len(text) <= 30  # a line ends at <eos>
    assert len(generator.generate("", 5, seed=0)) <= 5


def test_resume_continues_the_same_run_with_its_carry(tmp_path):
    """20 + 20 steps equal 40 in one go: resumed mid-epoch (the carried state is in last.pt)
    and across two epoch starts (new offsets), with dropout (the torch RNG)."""
    def cfg(steps):
        return _config(train={"max_steps": steps, "valid_every": 20, "valid_samples": 0},
                       model={"dropout": 0.2})

    train(cfg(40), tmp_path / "straight", quiet=True)
    train(cfg(20), tmp_path / "resumed", quiet=True)
    assert load_checkpoint(tmp_path / "resumed" / "last.pt")["train_state"]["carry"]
    train(cfg(40), tmp_path / "resumed", resume=True, quiet=True)
    a = load_checkpoint(tmp_path / "straight" / "last.pt")
    b = load_checkpoint(tmp_path / "resumed" / "last.pt")
    assert a["progress"]["step"] == b["progress"]["step"] == 40
    for name, tensor in a["model"].items():
        torch.testing.assert_close(tensor, b["model"][name], atol=1e-6, rtol=0, msg=name)


# ---------------------------------------------------------------------------------------------
# Generator


def test_generator_never_writes_unk(stream_run):
    """Tokens below tokenizer.min_freq read as <unk> in training, so a model gives <unk> some
    probability; generated text never holds it. Here its output bias is raised until greedy
    search alone would write nothing but <unk>."""
    out, _ = stream_run
    generator = Generator.from_checkpoint(out, device="cpu")
    with torch.no_grad():
        generator.model.out.bias[UNK] += 100.0
    src = torch.tensor([generator._context("abc")])
    [[raw]] = greedy_search(generator.model, src, torch.tensor([src.size(1)]), max_len_a=0.0,
                            max_len_b=5, max_len=5, min_len=5)
    assert raw.tokens == [UNK] * 5  # without the ban
    for text in (generator.generate("abc", 20, greedy=True),
                 generator.generate("abc", 20, seed=1, temperature=1.0)):
        assert len(text) == 20 and "<unk>" not in text, text


def test_generator_samples_reproducibly_and_scores_text(stream_run):
    out, results = stream_run
    generator = Generator.from_checkpoint(out, device="cpu")
    a = generator.generate("abc", 50, seed=3, temperature=0.8)
    assert a == generator.generate("abc", 50, seed=3, temperature=0.8)
    assert len(a) == 50  # stream mode: exactly `length` characters, no early end
    assert len(generator.generate("", 7, seed=1, top_k=3, top_p=0.9)) == 7
    assert generator.generate("abc", 0) == ""
    with pytest.raises(DataError, match=r"prime: characters .*'!', 'A'"):
        generator.generate("abc!A", 10)
    # evaluate_text of the validation text = validate's loss on the same weights
    valid = "\n".join(make_dataset("alphabet", 100, seed=1, split="valid"))
    scored = generator.evaluate_text(valid)
    best = load_checkpoint(out / "best.pt")["progress"]["best"]
    assert scored["loss"] == pytest.approx(best, rel=1e-6)
    assert scored == pytest.approx(json.loads((out / "results.json").read_text())["valid"])
    assert scored["tokens"] == len(valid) - 1


def test_generator_refuses_a_checkpoint_of_another_problem(tmp_path, stream_run):
    out, _ = stream_run
    state = load_checkpoint(out / "best.pt")
    state["config"] = {**state["config"], "problem": "seq2seq", "data": {"synthetic": "copy"},
                       "model": {**state["config"]["model"], "bidirectional": True}}
    save_checkpoint(state, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="a seq2seq model, not an lm one"):
        Generator.from_checkpoint(tmp_path / "other.pt")


# ---------------------------------------------------------------------------------------------
# Text files


def test_read_text(tmp_path):
    path = tmp_path / "t.txt"
    path.write_bytes(b"\xef\xbb\xbfab\r\ncd\n")
    assert read_text(path) == "ab\r\ncd\n"
    path.write_bytes(b"ok\nb\xffd\n")
    with pytest.raises(DataError, match=rf"^{path}:2: not valid UTF-8 at byte 2 of the line"):
        read_text(path)
    path.write_bytes(b"")
    with pytest.raises(DataError, match=rf"^{path}: empty file"):
        read_text(path)
    with pytest.raises(DataError, match=r"no such file"):
        read_text(tmp_path / "missing.txt")


@pytest.mark.parametrize("mode", ["stream", "lines"])
def test_text_files_and_unseen_characters(tmp_path, mode):
    (tmp_path / "train.txt").write_text("abcabc\n\nbca\n", encoding="utf-8")
    (tmp_path / "valid.txt").write_text("abz\n", encoding="utf-8")
    config = _config(data={"synthetic": None, "format": "text", "root": str(tmp_path),
                           "train": "train.txt", "valid": "valid.txt"},
                     train={"batch_tokens": 4}, lm={"bptt": 2, "mode": mode})
    problem = LMProblem(config)
    problem.prepare()
    assert "z" not in problem.codec.vocab and ("\n" in problem.codec.vocab) == (mode == "stream")
    valid = problem.splits["valid"]
    ids = valid.ids.tolist() if mode == "stream" else valid.seqs[0]
    assert ids[2] == UNK
    assert problem.splits["test"] is None
    assert set(problem.validate(problem.build_model())) >= {"loss", "bpc", "ppl"}
    (tmp_path / "valid.txt").write_text("a", encoding="utf-8")
    if mode == "stream":
        with pytest.raises(DataError, match="valid.txt: 1 token"):
            LMProblem(config).prepare()


def test_generate_and_evaluate_commands(stream_run, tmp_path, capsys):
    from seqlab.cli import main

    out, _ = stream_run
    assert main(["generate", str(out), "--prime", "abc", "--greedy", "--length", "10",
                 "--device", "cpu"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("abcde") and len(text) == 3 + 10 + 1  # prime, 10 tokens, newline
    assert _successors_only(text)
    data = tmp_path / "text.txt"
    data.write_text("\n".join(make_dataset("alphabet", 50, seed=3, split="test")) + "\n")
    assert main(["evaluate", str(out), "--data", str(data), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["loss"] < 0.3 * math.log(31) and result["chars"] == len(data.read_text()) - 1
    assert main(["generate", str(out), "--top-p", "0"]) == 2
    assert "--top-p 0: must be in (0, 1]" in capsys.readouterr().err
