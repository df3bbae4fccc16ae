"""Features that had no test (issue 9): each test proves that the feature takes effect, not
only that the command exits 0.

* `seqlab demo` (tiny overrides): report, real PNGs, a second run in demo-2;
* translate: --device, --coverage-penalty, --min-len, --temperature, --top-p, --batch-size, -o;
* evaluate: the three text lines carry the numbers of --json;
* runs with data.format tsv, tokenizer char / sentencepiece, cell rnn, a unidirectional
  encoder, SGD with momentum, lr_schedule plateau and warmup_decay;
* outputs do not depend on search.batch_size (greedy and beam).
"""

from __future__ import annotations

import inspect
import json
import math
import re
from pathlib import Path

import pytest
import torch

from seqlab.checkpoint import load_checkpoint
from seqlab.cli import main
from seqlab.synthetic import make_dataset
from seqlab.translate import Translator

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SOURCES = [s for s, _ in make_dataset("reverse", 24, seed=5, split="test")]  # lengths 3..8 words


def run(args, capsys) -> tuple[int, str, str]:
    """`seqlab ARGS` in this process -> (exit code, stdout, stderr)."""
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def write_lines(path: Path, lines) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def metrics(run_dir: Path) -> list[dict]:
    """The run's metrics.jsonl, one dict per line."""
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def train_records(run_dir: Path) -> list[dict]:
    return [r for r in metrics(run_dir) if "train_loss" in r]


def assert_loss_falls(run_dir: Path, factor: float = 0.95) -> None:
    """The last logged training loss is below `factor` x the first: the run learned."""
    losses = [r["train_loss"] for r in train_records(run_dir)]
    assert len(losses) >= 2 and losses[-1] < factor * losses[0], losses


def nbest_with_attention(translator: Translator, texts, **search):
    """translate_nbest with attention kept (asked for where the API makes it optional)."""
    if "with_attention" in inspect.signature(translator.translate_nbest).parameters:
        search["with_attention"] = True
    return translator.translate_nbest(texts, **search)


# ---------------------------------------------------------------------------------------------
# A small trained model shared by the translate / evaluate tests (trained once, ~3 s)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """Reverse task, word level, GRU + general attention, 60 Adam steps: half right, so that
    search options visibly change its outputs."""
    from seqlab.config import config_from_dict
    from seqlab.train import train

    out = tmp_path_factory.mktemp("model") / "run"
    raw = {"data": {"synthetic": "reverse", "synthetic_train_size": 400, "synthetic_eval_size": 30},
           "tokenizer": {"kind": "word"},
           "model": {"embedding_size": 16, "hidden_size": 32, "attention": "general",
                     "dropout": 0.0},
           "train": {"batch_tokens": 400, "lr": 0.01, "max_steps": 60, "max_epochs": 1000,
                     "log_every": 10, "valid_every": 60, "valid_samples": 0,
                     "early_stopping_metric": "loss"},
           "search": {"batch_size": 64}}
    train(config_from_dict(raw), out, quiet=True)
    return out


@pytest.fixture
def src_file(tmp_path) -> Path:
    return write_lines(tmp_path / "in.txt", SOURCES)


def translate(model_dir, src_file, capsys, *options) -> list[str]:
    """stdout lines of `seqlab translate MODEL -i SRC OPTIONS` (asserting exit code 0)."""
    code, out, err = run(["translate", model_dir, "-i", src_file, *options], capsys)
    assert code == 0, err
    return out.splitlines()


# ---------------------------------------------------------------------------------------------
# seqlab demo


DEMO_TINY = ["data.synthetic_train_size=300", "data.synthetic_eval_size=20", "train.max_steps=8",
             "train.valid_every=8", "train.log_every=4", "train.max_minutes=0.5",
             "model.hidden_size=16", "model.embedding_size=8"]


def test_demo_writes_report_pictures_and_never_overwrites(tmp_path, capsys):
    """demo_metrics.json (exact match on the held-out dates, showcase examples), two attention
    maps and the curves as real PNGs; the overrides are applied; a second run goes to demo-2."""
    from seqlab.demo import SHOWCASE

    args = ["demo", "--out", tmp_path / "demo", "--quiet",
            *[a for item in DEMO_TINY for a in ("--set", item)]]
    code, _, err = run(args, capsys)
    assert code == 0, err
    first = tmp_path / "demo"
    report = json.loads((first / "demo_metrics.json").read_text(encoding="utf-8"))
    assert report["dataset"] == "dates" and report["test_sentences"] == 20
    assert 0.0 <= report["exact_match"] <= 1.0
    assert report["errors"] == round(20 * (1 - report["exact_match"]))
    assert set(report["examples"]) == set(SHOWCASE)
    assert all(isinstance(v, str) for v in report["examples"].values())
    for name in ("attention_en.png", "attention_ko.png", "curves.png"):
        data = (first / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 2000, name
        assert str(first / name) in report["pictures"]
    assert load_checkpoint(first / "last.pt")["progress"]["step"] == 8  # overrides took effect
    assert load_checkpoint(first / "last.pt")["config"]["model"]["hidden_size"] == 16

    before = (first / "last.pt").read_bytes()
    code, _, err = run(args, capsys)
    assert code == 0, err
    assert (tmp_path / "demo-2" / "demo_metrics.json").is_file()
    assert (first / "last.pt").read_bytes() == before  # the first run is untouched


# ---------------------------------------------------------------------------------------------
# translate options


def test_translate_device_cpu_gives_the_cpu_translations(model_dir, src_file, capsys):
    expected = Translator.from_checkpoint(model_dir, device="cpu").translate(SOURCES)
    assert translate(model_dir, src_file, capsys, "--device", "cpu") == expected


@pytest.mark.parametrize("device", ["nonsense", "cuda:99"])
def test_translate_unknown_device_is_a_one_line_error(model_dir, src_file, capsys, device):
    """A device torch does not know, or one this machine lacks: exit 2, one line naming it."""
    code, out, err = run(["translate", model_dir, "-i", src_file, "--device", device], capsys)
    assert code == 2, err
    assert out == ""
    assert len(err.strip().splitlines()) == 1 and device in err, err
    assert "Traceback" not in err


def test_translate_coverage_penalty_is_in_the_beam_scores(model_dir, src_file, capsys):
    """score = log p + beta * sum_i log(min(sum_j a_ij, 1)) (GNMT, alpha = 0), recomputed from
    each returned attention; the command line prints those scores."""
    beta = 0.5
    translator = Translator.from_checkpoint(model_dir, device="cpu")
    nbest = nbest_with_attention(translator, SOURCES, beam_size=3, n_best=3,
                                 coverage_penalty=beta)
    penalised = 0
    for hyps in nbest:
        for h in hyps:
            coverage = h.attention.sum(0).clamp(1e-10, 1.0)  # (S_real,)
            cp = beta * coverage.log().sum().item()
            assert h.score == pytest.approx(h.log_prob + cp, abs=1e-4)
            penalised += cp < -1e-3
    assert penalised > 0  # the penalty is not zero everywhere: the check above has teeth

    rows = translate(model_dir, src_file, capsys, "--beam", "3", "--n-best", "3",
                     "--coverage-penalty", str(beta))
    printed = [float(row.split("\t")[1]) for row in rows]
    assert printed == pytest.approx([h.score for hyps in nbest for h in hyps], abs=2e-4)
    plain = translate(model_dir, src_file, capsys, "--beam", "3", "--n-best", "3")
    assert plain != rows


def test_translate_min_len_forces_at_least_n_tokens(model_dir, tmp_path, capsys):
    short = write_lines(tmp_path / "short.txt", ["a b", "c", "d e f"])
    plain = translate(model_dir, short, capsys)
    assert min(len(line.split()) for line in plain) < 8  # else the test proves nothing
    forced = translate(model_dir, short, capsys, "--min-len", "8")
    assert all(len(line.split()) >= 8 for line in forced), forced
    beam = translate(model_dir, short, capsys, "--min-len", "8", "--beam", "3")
    assert all(len(line.split()) >= 8 for line in beam), beam


@pytest.mark.parametrize("option,tiny", [("--temperature", "1e-5"), ("--top-p", "0.001")])
def test_translate_sampling_tiny_temperature_or_top_p_is_greedy(model_dir, src_file, capsys,
                                                                 option, tiny):
    """Temperature -> 0 or a nucleus of one token: every sample is the greedy output; with the
    defaults (T = 1, p = 1) and the same seed, some samples differ from it. (T = 1e-5, as some
    logit margins of this model are below 1e-3: at T = 1e-3 their runner-up still gets sampled.)"""
    greedy = translate(model_dir, src_file, capsys)
    sampling = ["--sample", "--seed", "3", "--n-best", "3"]

    def texts(lines):
        return [line.split("\t")[2] for line in lines]

    expected = [g for g in greedy for _ in range(3)]
    free = texts(translate(model_dir, src_file, capsys, *sampling))
    assert free != expected  # the model is uncertain enough for sampling to show
    assert texts(translate(model_dir, src_file, capsys, *sampling, option, tiny)) == expected


def test_translate_batch_size_does_not_change_outputs(model_dir, src_file, capsys):
    for search in ([], ["--beam", "3", "--n-best", "2"]):
        one = translate(model_dir, src_file, capsys, *search, "--batch-size", "1")
        many = translate(model_dir, src_file, capsys, *search, "--batch-size", "64")
        if search:  # INDEX, SCORE, TEXT: scores may differ in the last printed digit
            one = [(r.split("\t")[0], r.split("\t")[2]) for r in one]
            many = [(r.split("\t")[0], r.split("\t")[2]) for r in many]
        assert one == many


def test_translate_output_file_gets_the_text_and_stdout_nothing(model_dir, src_file, tmp_path,
                                                                capsys):
    expected = translate(model_dir, src_file, capsys)
    dst = tmp_path / "out.txt"
    assert translate(model_dir, src_file, capsys, "-o", dst) == []
    assert dst.read_text(encoding="utf-8").splitlines() == expected
    assert len(expected) == len(SOURCES)


# ---------------------------------------------------------------------------------------------
# evaluate


def test_evaluate_reads_the_checkpoint_once(model_dir, tmp_path, capsys, monkeypatch):
    import seqlab.checkpoint as checkpoint

    reads = []
    load = checkpoint.load_checkpoint
    monkeypatch.setattr(checkpoint, "load_checkpoint",
                        lambda path, **kw: reads.append(path) or load(path, **kw))
    pairs = make_dataset("reverse", 5, seed=9, split="test")
    src = write_lines(tmp_path / "test.src", [s for s, _ in pairs])
    ref = write_lines(tmp_path / "test.ref", [t for _, t in pairs])
    code, _, err = run(["evaluate", model_dir, "--src", src, "--ref", ref, "--json"], capsys)
    assert code == 0, err
    assert len(reads) == 1, reads


def test_evaluate_text_lines_match_json(model_dir, tmp_path, capsys):
    pairs = make_dataset("reverse", 30, seed=9, split="test")
    src = write_lines(tmp_path / "test.src", [s for s, _ in pairs])
    ref = write_lines(tmp_path / "test.ref", [t for _, t in pairs])
    code, out, err = run(["evaluate", model_dir, "--src", src, "--ref", ref, "--json"], capsys)
    assert code == 0, err
    j = json.loads(out)
    code, out, err = run(["evaluate", model_dir, "--src", src, "--ref", ref], capsys)
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 3, lines
    assert lines[0] == f"BLEU {j['bleu']:.2f}  ({j['signature']})"
    assert lines[1] == f"chrF {j['chrf']:.2f}  ({j['chrf_signature']})"
    m = re.fullmatch(r"perplexity ([\d.]+)  exact match ([\d.]+)%  \((\d+) sentences\)",
                     lines[2])
    assert m, lines[2]
    assert m.group(1) == f"{j['ppl']:.2f}" and m.group(3) == "30" == str(j["sentences"])
    assert m.group(2) == f"{100 * j['exact_match']:.1f}"
    assert "13a" in j["signature"] and 0 < j["bleu"] <= 100 and j["ppl"] > 1


# ---------------------------------------------------------------------------------------------
# runs with settings that had none


def train_run(tiny_config, out_dir: Path, capsys, *settings) -> Path:
    """`seqlab train tiny.yaml --set ...` (30 steps, GRU 32, general attention) -> run dir."""
    args = ["train", tiny_config, "--out", out_dir, "--quiet"]
    code, _, err = run(args + [a for item in settings for a in ("--set", item)], capsys)
    assert code == 0, err
    return out_dir


def test_tsv_data_run_reads_both_columns(tiny_config, tiny_files, tmp_path, capsys):
    """data.format tsv: train/valid/test are SOURCE<TAB>TARGET files (here the target side is
    upper-cased, so the vocabularies show which column went where)."""
    paths = {}
    for split, prefix in tiny_files.items():
        src = Path(f"{prefix}.src").read_text().splitlines()
        tgt = Path(f"{prefix}.tgt").read_text().splitlines()
        paths[split] = write_lines(tmp_path / f"{split}.tsv",
                                   [f"{s}\t{t.upper()}" for s, t in zip(src, tgt)])
    out = train_run(tiny_config, tmp_path / "run", capsys, "data.format=tsv",
                    *[f"data.{split}={path}" for split, path in paths.items()])
    codec = load_checkpoint(out / "last.pt")["problem"]
    assert set(codec["src_vocab"]["itos"][4:]) == set("abcdefgh")
    assert set(codec["tgt_vocab"]["itos"][4:]) == set("ABCDEFGH")
    results = json.loads((out / "results.json").read_text())
    assert results["test"]["sentences"] == 40
    assert_loss_falls(out)


def test_char_tokenizer_run(tiny_config, tmp_path, capsys):
    out = train_run(tiny_config, tmp_path / "run", capsys, "tokenizer.kind=char")
    codec = load_checkpoint(out / "last.pt")["problem"]
    assert codec["src_tokenizer"] == {"kind": "char"} == codec["tgt_tokenizer"]
    tokens = codec["tgt_vocab"]["itos"][4:]
    assert " " in tokens and all(len(t) == 1 for t in tokens)  # the space is a token
    translator = Translator.from_checkpoint(out, device="cpu")
    assert translator.codec.src_tokenizer.tokenize("a b") == ["a", " ", "b"]
    assert_loss_falls(out)


def test_sentencepiece_tokenizer_run(tiny_config, tmp_path, capsys):
    """A tokenizer learned in the run, no larger than vocab_size pieces, saved in the codec."""
    out = train_run(tiny_config, tmp_path / "run", capsys, "tokenizer.kind=sentencepiece",
                    "tokenizer.vocab_size=12")
    translator = Translator.from_checkpoint(out, device="cpu")
    tok = translator.codec.src_tokenizer
    assert tok.kind == "sentencepiece" and len(tok) <= 12
    assert tok.tokenize("a b")[0].startswith("\u2581")  # pieces mark the space before them
    assert any(t.startswith("\u2581") for t in translator.codec.tgt_vocab.itos)
    assert_loss_falls(out)


def test_rnn_cell_run(tiny_config, tmp_path, capsys):
    """cell rnn: every recurrent weight_hh is (H, H), one gate (a GRU's is (3H, H))."""
    out = train_run(tiny_config, tmp_path / "run", capsys, "model.cell=rnn")
    weights = {k: v.shape for k, v in load_checkpoint(out / "last.pt")["model"].items()
               if "weight_hh" in k}
    assert weights["encoder.rnn.rnn.weight_hh_l0"] == (16, 16)  # bidirectional: 32 // 2 each
    assert weights["decoder.rnn.rnn.weight_hh_l0"] == (32, 32)
    assert all(shape[0] == shape[1] for shape in weights.values()), weights
    Translator.from_checkpoint(out, device="cpu").translate(["a b c"])  # rebuilds as an RNN
    assert_loss_falls(out)


def test_unidirectional_encoder_run(tiny_config, tmp_path, capsys):
    """bidirectional false: no reverse-direction weights; the one direction has all H units."""
    out = train_run(tiny_config, tmp_path / "run", capsys, "model.bidirectional=false")
    state = load_checkpoint(out / "last.pt")["model"]
    assert not [k for k in state if "reverse" in k]
    assert state["encoder.rnn.rnn.weight_hh_l0"].shape == (3 * 32, 32)
    assert_loss_falls(out)


def test_sgd_with_momentum_run(tiny_config, model_dir, tmp_path, capsys):
    """optimizer sgd: the saved optimizer state holds momentum buffers (Adam's holds exp_avg)."""
    out = train_run(tiny_config, tmp_path / "run", capsys, "train.optimizer=sgd",
                    "train.lr=0.5", "train.momentum=0.9")
    opt = load_checkpoint(out / "last.pt")["optimizer"]
    assert opt["param_groups"][0]["momentum"] == 0.9 and opt["param_groups"][0]["lr"] == 0.5
    assert opt["state"] and all(isinstance(s.get("momentum_buffer"), torch.Tensor)
                                and "exp_avg" not in s for s in opt["state"].values())
    adam = load_checkpoint(model_dir / "last.pt")["optimizer"]  # the default, for contrast
    assert all("exp_avg" in s for s in adam["state"].values())
    assert_loss_falls(out)


def test_plateau_schedule_cuts_lr_after_patience_bad_validations(tiny_config, tiny_files,
                                                                 tmp_path, capsys):
    """lr_schedule plateau, patience p = 2, factor 0.5, validation every 5 steps on references
    the model can never produce (exact match stays 0): the first validation sets the best, and
    like early stopping's patience, p bad validations are tolerated and the (p+1)-th cuts the
    lr. So validations at 10, 15 are tolerated, 20 cuts; 25, 30 tolerated, 35 cuts."""
    valid_src = Path(f"{tiny_files['valid']}.src").read_text().splitlines()
    write_lines(tmp_path / "never.src", valid_src)
    write_lines(tmp_path / "never.tgt", ["zzz"] * len(valid_src))
    out = train_run(tiny_config, tmp_path / "run", capsys, f"data.valid={tmp_path / 'never'}",
                    "train.lr_schedule=plateau", "train.lr_plateau_patience=2",
                    "train.lr_plateau_factor=0.5", "train.early_stopping_metric=exact_match",
                    "train.patience=null", "train.valid_every=5", "train.log_every=1",
                    "train.max_steps=40", "train.lr=0.01")
    checks = [r for r in metrics(out) if "valid_exact_match" in r]
    assert [r["step"] for r in checks] == [5, 10, 15, 20, 25, 30, 35, 40]
    assert [r["valid_improved"] for r in checks] == [True] + [False] * 7

    def expected(step):  # the lr used for (and logged after) training step `step`
        return 0.01 * 0.5 ** ((step > 20) + (step > 35))

    logged = {r["step"]: r["lr"] for r in train_records(out)}
    assert sorted(logged) == list(range(1, 41))
    for step, lr in logged.items():
        assert lr == pytest.approx(expected(step), rel=1e-9), (step, lr)
    assert_loss_falls(out)


def test_warmup_decay_schedule_lr_per_step(tiny_config, tmp_path, capsys):
    """lr_schedule warmup_decay, w = 10: the lr of step k (1-based) is lr * k / w while k < w,
    then lr * sqrt(w / k)."""
    out = train_run(tiny_config, tmp_path / "run", capsys, "train.lr_schedule=warmup_decay",
                    "train.lr_warmup_steps=10", "train.lr=0.02", "train.log_every=1")
    logged = {r["step"]: r["lr"] for r in train_records(out)}
    assert sorted(logged) == list(range(1, 31))
    for k, lr in logged.items():
        want = 0.02 * (k / 10 if k < 10 else math.sqrt(10 / k))
        assert lr == pytest.approx(want, rel=1e-9), (k, lr, want)
    assert_loss_falls(out)


# ---------------------------------------------------------------------------------------------
# search.batch_size


@pytest.mark.parametrize("search", [{}, {"beam_size": 3, "n_best": 2}],
                         ids=["greedy", "beam"])
def test_outputs_do_not_depend_on_search_batch_size(model_dir, search):
    """Same texts (and scores to 1e-4) with 1, 3 or 64 sentences per decoding batch, although
    the batches differ in composition and padding."""
    translator = Translator.from_checkpoint(model_dir, device="cpu")
    results = {}
    for batch_size in (1, 3, 64):
        nbest = translator.translate_nbest(SOURCES, batch_size=batch_size, **search)
        results[batch_size] = nbest
        assert [[h.text for h in hyps] for hyps in nbest] == \
               [[h.text for h in hyps] for hyps in results[1]], batch_size
        for hyps, ref in zip(nbest, results[1]):
            assert [h.score for h in hyps] == pytest.approx([h.score for h in ref], abs=1e-4)
    assert len({tuple(h.text for h in hyps) for hyps in results[1]}) > 1
    assert translator.translate(SOURCES, batch_size=3, **search) == \
           [hyps[0].text for hyps in results[1]]
