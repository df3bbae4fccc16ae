"""The bad-input catalogue, docs/errors.md, checked row by row.

Each row of the catalogue's tables has an id; CASES below has one case per id: the files it
needs (`setup`, run in an empty folder that is the working directory) and the command. Every
case must end with exit code 2 and exactly one line on stderr that matches the row's message
(`...` in the message matches any text), with no traceback and no file written or changed.
A row without a case, or a case without a row, fails `test_catalogue_and_cases_agree`.

To add a row: write it in docs/errors.md and add `CASES["its-id"] = Case([...], setup)`.
"""

from __future__ import annotations

import gzip
import importlib
import io
import random
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from seqlab import config as config_module
from seqlab.checkpoint import save_checkpoint
from seqlab.cli import main
from seqlab.config import Config, ConfigError, config_from_dict, load_config

DOC = Path(__file__).resolve().parents[1] / "docs" / "errors.md"


# ---------------------------------------------------------------------------- the catalogue
def catalogue() -> dict[str, str]:
    """id -> message, from every table row of docs/errors.md: | `id` | ... | `message` |"""
    rows = {}
    for line in DOC.read_text(encoding="utf-8").splitlines():
        if not line.startswith("| `"):
            continue
        first, last = line.split(" | ", 1)[0], line.rstrip().removesuffix("|").rsplit(" | ", 1)[1]
        key = first.removeprefix("| ").strip("`")
        message = last.strip()
        ticks = "``" if message.startswith("``") else "`"
        assert key not in rows, f"{DOC.name}: id {key!r} appears twice"
        rows[key] = message.removeprefix(ticks).removesuffix(ticks).strip()
    return rows


def matches(message: str, line: str) -> bool:
    """Does stderr `line` read `message`, where `...` stands for any text?"""
    pattern = ".*".join(re.escape(part) for part in message.split("..."))
    return re.fullmatch(pattern, line) is not None


# ---------------------------------------------------------------------------- the cases
@dataclass
class Env:
    """What a case's setup gets: its folder (the working directory), a good checkpoint to
    copy or damage, and pytest's monkeypatch."""

    tmp: Path
    checkpoint: Path
    monkeypatch: pytest.MonkeyPatch


@dataclass
class Case:
    argv: list[str]
    setup: Callable[[Env], None] = lambda env: None
    stdin: bytes | None = field(default=None)  # fed to the command as sys.stdin (UTF-8)
    reads_data: bool = False  # the error is in the data: found while reading it


BASE = "data:\n  synthetic: copy\ntokenizer:\n  kind: word\n"  # tiny.yaml's first four lines
TRAIN = ["train", "tiny.yaml", "--out", "runs/x", "--quiet"]
# a classifier trained on train.tsv (text<TAB>label)
CLASSIFY = ("problem: classify\ntokenizer:\n  kind: char\ndata:\n  train: train.tsv\n"
            "  format: tsv\n")

# a forecaster of series.csv (time,value), window 4, horizon 2
FORECAST = ("problem: forecast\ndata:\n  train: series.csv\nmodel:\n  bidirectional: false\n"
            "forecast:\n  window: 4\n  horizon: 2\n")


def write(name: str, content: str | bytes) -> Callable[[Env], None]:
    def setup(env: Env) -> None:
        path = env.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    return setup


def config_case(text: str | bytes, *extra: str) -> Case:
    """`seqlab train tiny.yaml` with this file content (and extra arguments)."""
    return Case([*TRAIN, *extra], write("tiny.yaml", text))


def state_of(env: Env) -> dict:
    return torch.load(env.checkpoint, weights_only=True)


def checkpoint_case(make: Callable[[Env], None], model: str = "model.pt", *extra: str) -> Case:
    """`seqlab translate MODEL -i in.txt -o out.txt` after `make` wrote the checkpoint."""
    def setup(env: Env) -> None:
        (env.tmp / "in.txt").write_text("a b c\n", encoding="utf-8")
        make(env)
    return Case(["translate", model, "-i", "in.txt", "-o", "out.txt", *extra], setup)


def saved(change: Callable[[dict], None], name: str = "model.pt") -> Callable[[Env], None]:
    """Save the good checkpoint's state, changed by `change`, as `name`."""
    def make(env: Env) -> None:
        state = state_of(env)
        change(state)
        save_checkpoint(state, env.tmp / name)
    return make


def truncated(name: str) -> Callable[[Env], None]:
    def make(env: Env) -> None:
        data = env.checkpoint.read_bytes()
        write(name, data[: len(data) // 2])(env)
    return make


def good(name: str) -> Callable[[Env], None]:
    return lambda env: write(name, env.checkpoint.read_bytes())(env)


class _RunsCode:
    def __reduce__(self):
        return (print, ("code ran",))


def no_ko_mecab(env: Env) -> None:
    """sacrebleu[ko] missing, whether or not this machine has it."""
    import sacrebleu.tokenizers.tokenizer_ko_mecab as ko

    env.monkeypatch.setattr(ko, "MeCab", None)
    write("tiny.yaml", BASE + "eval:\n  bleu_tokenize: ko-mecab\n")(env)


def _del(*keys: str) -> Callable[[dict], None]:
    def change(state: dict) -> None:
        node = state
        for key in keys[:-1]:
            node = node[key]
        del node[keys[-1]]
    return change


def _set(value, *keys: str) -> Callable[[dict], None]:
    def change(state: dict) -> None:
        node = state
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value
    return change


CASES: dict[str, Case] = {
    # config files
    "config-missing": Case(["train", "nope.yaml", "--out", "runs/x"]),
    "config-list": config_case("- data\n- model\n"),
    "config-scalar": config_case("just some words\n"),
    "config-not-utf8": config_case(BASE.encode() + b"# caf\xe9\n"),
    "config-binary": config_case(gzip.compress(BASE.encode(), mtime=0)),
    "config-utf16": config_case(BASE.encode("utf-16")),
    "config-control-char": config_case(BASE + "train:\n  device: a\x01b\n"),
    "config-bad-yaml": config_case(BASE + "model: [1, 2\n"),
    "config-duplicate-key": config_case(BASE + "train:\n  lr: 0.1\n  lr: 0.2\n"),
    "config-duplicate-section": config_case(BASE + "model:\n  cell: gru\nmodel:\n  cell: lstm\n"),
    "config-no-data": config_case(""),
    "config-unknown-key": config_case(BASE + "model:\n  hiden_size: 3\n"),
    "config-bad-choice": config_case(BASE + "model:\n  cell: lstn\n"),
    "config-wrong-type": config_case(BASE + "train:\n  lr: fast\n"),
    "config-section-scalar": config_case(BASE + "model: 3\n"),
    # config values
    "value-hidden-size": config_case(BASE + "model:\n  hidden_size: 0\n"),
    "value-embedding-size": config_case(BASE + "model:\n  embedding_size: -8\n"),
    "value-encoder-layers": config_case(BASE + "model:\n  encoder_layers: 0\n"),
    "value-batch-tokens": config_case(BASE + "train:\n  batch_tokens: 0\n"),
    "value-lr": config_case(BASE + "train:\n  lr: -0.1\n"),
    "value-valid-every": config_case(BASE + "train:\n  valid_every: 0\n"),
    "value-log-every": config_case(BASE + "train:\n  log_every: 0\n"),
    "value-label-smoothing": config_case(BASE + "train:\n  label_smoothing: 1.0\n"),
    "value-clip-norm": config_case(BASE + "train:\n  clip_norm: -1\n"),
    "value-patience": config_case(BASE + "train:\n  patience: -1\n"),
    "value-max-steps": config_case(BASE + "train:\n  max_steps: 0\n"),
    "value-max-epochs": config_case(BASE + "train:\n  max_epochs: 0\n"),
    "value-max-minutes": config_case(BASE + "train:\n  max_minutes: -5\n"),
    "value-threads": config_case(BASE + "train:\n  threads: 0\n"),
    "value-vocab-size": config_case(BASE + "  vocab_size: 0\n"),
    "value-character-coverage": config_case(BASE + "  character_coverage: 1.5\n"),
    "value-set-override": config_case(BASE, "--set", "train.lr=-0.1"),
    "value-attention-size": config_case(BASE + "model:\n  attention: dot\n  attention_size: 8\n"),
    "value-coverage-no-attention": config_case(
        BASE + "model:\n  attention: none\nsearch:\n  coverage_penalty: 0.2\n"),
    "value-bleu-unknown": config_case(BASE + "eval:\n  bleu_tokenize: 13b\n"),
    "value-bleu-package": Case(TRAIN, no_ko_mecab),
    "value-device-unknown": config_case(BASE + "train:\n  device: gpu\n"),
    "value-device-absent": config_case(BASE + "train:\n  device: cuda:99\n"),
    "value-renamed-key": config_case("data:\n  task: copy\n"),
    "value-metric-of-another-problem": config_case(
        BASE + "train:\n  early_stopping_metric: accuracy\n"),
    "value-dataset-of-another-problem": config_case("problem: classify\n" + BASE),
    "value-lm-bidirectional": config_case(
        "problem: lm\ndata:\n  synthetic: alphabet\nmodel:\n  bidirectional: true\n"),
    "value-column-name-no-header": config_case(
        "problem: classify\ndata:\n  train: reviews.tsv\n  format: tsv\n"
        "  src_column: document\n"),
    "value-holdout-with-valid": config_case(
        "data:\n  train: a\n  valid: b\n  valid_holdout: 100\n"),
    # data of the other problems
    "classify-label-unseen": Case(TRAIN, lambda env: (
        write("tiny.yaml", CLASSIFY + "  test: test.tsv\n")(env),
        write("train.tsv", "좋다\tpos\n별로\tneg\n" * 3)(env),
        write("test.tsv", "좋다\tpos\n그냥\tneutral\n")(env)), reads_data=True),
    "classify-no-column": Case(TRAIN, lambda env: (
        write("tiny.yaml", CLASSIFY + "  header: true\n  src_column: document\n"
              "  tgt_column: labels\n")(env),
        write("train.tsv", "id\tdocument\tlabel\n1\t좋다\t1\n")(env)), reads_data=True),
    "tag-count-mismatch": Case(TRAIN, lambda env: (
        write("tiny.yaml", "problem: tag\ntag:\n  scheme: tokens\ndata:\n  train: train\n")(env),
        write("train.src", "the cat\na dog\n")(env),
        write("train.tgt", "DET N\nDET\n")(env)), reads_data=True),
    "tag-format": Case(TRAIN, write(
        "tiny.yaml", "problem: tag\ndata:\n  format: parallel\n  train: train\n")),
    "value-sampling-alpha-bpe": Case(TRAIN, write(
        "tiny.yaml", "problem: classify\ndata:\n  train: train.tsv\n  format: tsv\n"
        "tokenizer:\n  kind: sentencepiece\n  model_type: bpe\n  sampling_alpha: 0.3\n")),
    "lm-text-missing": Case(TRAIN, write(
        "tiny.yaml", "problem: lm\ndata:\n  train: shakespeare.txt\n  format: text\n"
        "tokenizer:\n  kind: char\nmodel:\n  bidirectional: false\n")),
    "cmd-generate-with-seq2seq": Case(["generate", "model.pt", "--prime", "a"], good("model.pt")),
    "cmd-chat-with-classify": Case(["chat", "model.pt"], saved(lambda state: (
        _set("classify", "config", "problem")(state),
        _set("is_sorted", "config", "data", "synthetic")(state))), stdin=b"a b c\n"),
    # checkpoints
    "ckpt-missing": checkpoint_case(lambda env: None, "runs/nope"),
    "ckpt-empty-run": checkpoint_case(lambda env: (env.tmp / "runs/x").mkdir(parents=True),
                                      "runs/x"),
    "ckpt-empty": checkpoint_case(write("model.pt", b"")),
    "ckpt-truncated": checkpoint_case(truncated("model.pt")),
    "ckpt-random": checkpoint_case(write("model.pt", random.Random(0).randbytes(512))),
    "ckpt-code": checkpoint_case(
        lambda env: torch.save({"format_version": 1, "x": _RunsCode()}, env.tmp / "model.pt")),
    "ckpt-not-seqlab": checkpoint_case(
        lambda env: torch.save(state_of(env)["model"], env.tmp / "model.pt")),
    "ckpt-newer": checkpoint_case(saved(_set(99, "format_version"))),
    "ckpt-no-problem": checkpoint_case(saved(_del("problem"))),
    "ckpt-codec-damaged": checkpoint_case(saved(_del("problem", "src_vocab"))),
    "ckpt-config-invalid": checkpoint_case(saved(_set(0, "config", "model", "hidden_size"))),
    "ckpt-config-mismatch": checkpoint_case(saved(_set(64, "config", "model", "hidden_size"))),
    "ckpt-best-damaged": checkpoint_case(
        lambda env: (truncated("runs/x/best.pt")(env), good("runs/x/last.pt")(env)), "runs/x"),
    "ckpt-best-damaged-alone": checkpoint_case(truncated("runs/x/best.pt"), "runs/x"),
    "ckpt-device-unknown": checkpoint_case(good("model.pt"), "model.pt", "--device", "gpu"),
    "ckpt-device-absent": checkpoint_case(good("model.pt"), "model.pt", "--device", "cuda:99"),
    # commands
    "cmd-temperature": checkpoint_case(good("model.pt"), "model.pt", "--sample",
                                       "--temperature", "0"),
    "cmd-top-p": checkpoint_case(good("model.pt"), "model.pt", "--sample", "--top-p", "1.5"),
    "cmd-top-k": checkpoint_case(good("model.pt"), "model.pt", "--sample", "--top-k", "-1"),
    "cmd-max-len-b": checkpoint_case(good("model.pt"), "model.pt", "--max-len-b", "-1"),
    "cmd-beam": checkpoint_case(good("model.pt"), "model.pt", "--beam", "0"),
    "cmd-min-len": checkpoint_case(good("model.pt"), "model.pt", "--min-len", "40"),
    "cmd-too-long": checkpoint_case(good("model.pt"), "model.pt", "--max-input-tokens", "2"),
    "cmd-output-dir": Case(["translate", "model.pt", "-i", "in.txt", "-o", "runs"],
                           lambda env: (good("model.pt")(env), write("in.txt", "a b c\n")(env),
                                        (env.tmp / "runs").mkdir())),
    "cmd-output-folder": Case(["translate", "model.pt", "-i", "in.txt", "-o", "nowhere/out.txt"],
                              lambda env: (good("model.pt")(env), write("in.txt", "a b\n")(env))),
    "cmd-input-missing": Case(["translate", "model.pt", "-i", "nope.txt"], good("model.pt")),
    "cmd-stdin-utf8": Case(["translate", "model.pt"], good("model.pt"), stdin=b"a b\n\xe9 c\n"),
    "cmd-evaluate-empty": Case(["evaluate", "model.pt", "--src", "empty.src", "--ref",
                                "empty.ref"],
                               lambda env: (good("model.pt")(env), write("empty.src", "")(env),
                                            write("empty.ref", "")(env))),
    "cmd-serve-limit": Case(["serve", "model.pt", "--max-batch", "0"], good("model.pt")),
    "cmd-serve-port": Case(["serve", "model.pt", "--port", "70000"], good("model.pt")),
    "cmd-evaluate-lines": Case(["evaluate", "model.pt", "--src", "two.src", "--ref", "one.ref"],
                               lambda env: (good("model.pt")(env), write("two.src", "a\nb\n")(env),
                                            write("one.ref", "a\n")(env))),
    "run-out-file": Case(["train", "tiny.yaml", "--out", "notes.txt", "--quiet"],
                         lambda env: (write("tiny.yaml", BASE)(env),
                                      write("notes.txt", "keep me\n")(env))),
    "run-out-under-file": Case(["train", "tiny.yaml", "--out", "notes.txt/run", "--quiet"],
                               lambda env: (write("tiny.yaml", BASE)(env),
                                            write("notes.txt", "keep me\n")(env))),
    "run-exists": Case(TRAIN, lambda env: (write("tiny.yaml", BASE)(env),
                                           good("runs/x/last.pt")(env))),
    "run-nothing-to-resume": Case([*TRAIN, "--resume"], write("tiny.yaml", BASE)),
    # the series of forecast
    "forecast-csv-not-number": Case(TRAIN, lambda env: (
        write("tiny.yaml", FORECAST)(env),
        write("series.csv", "time,value\n2000,1.5\n2001,n/a\n2002,2\n")(env)),
        reads_data=True),
    "forecast-csv-unsorted": Case(TRAIN, lambda env: (
        write("tiny.yaml", FORECAST)(env),
        write("series.csv", "time,value\n2000,1\n2002,2\n2001,3\n")(env)), reads_data=True),
    "forecast-csv-duplicate": Case(TRAIN, lambda env: (
        write("tiny.yaml", FORECAST)(env),
        write("series.csv", "time,value\n2001,1\n2002,2\n2002,3\n")(env)), reads_data=True),
    "forecast-csv-too-short": Case(TRAIN, lambda env: (
        write("tiny.yaml", FORECAST)(env),
        write("series.csv", "time,value\n" + "".join(f"{2000 + i},{i}\n" for i in range(8)))(
            env)), reads_data=True),
    "forecast-bidirectional": config_case("problem: forecast\nforecast:\n  series: co2\n"),
}


# ---------------------------------------------------------------------------- running them
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A small, good best.pt-style checkpoint (never trained: only its form matters)."""
    from seqlab.data import ParallelText
    from seqlab.model import build_model
    from seqlab.prepare import build_codec

    config = config_from_dict({"data": {"synthetic": "copy"}, "tokenizer": {"kind": "word"},
                               "model": {"embedding_size": 16, "hidden_size": 32,
                                         "attention": "general"}})
    text = ["a b c", "d e f g"]
    codec = build_codec(config, ParallelText(src=text, tgt=text, skipped_empty=0, source="t"))
    torch.manual_seed(0)
    model = build_model(config.model, len(codec.src_vocab), len(codec.tgt_vocab))
    path = tmp_path_factory.mktemp("checkpoint") / "best.pt"
    save_checkpoint({"model": model.state_dict(), "config": config.to_dict(),
                     "problem": codec.state_dict(), "progress": {"step": 1}}, path)
    return path


def files(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under `folder`: relative path -> (size, mtime in ns)."""
    return {str(p.relative_to(folder)): (p.stat().st_size if p.is_file() else -1,
                                         p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*"))}


def _work_started(*args, **kwargs):
    raise AssertionError("training started (data was read): the error was not found first")


def run_case(case: Case, env: Env, capsys) -> tuple[int, str, dict, dict]:
    """Set the case up in env.tmp (the working directory), run its command; returns the exit
    code, stderr, and the files before and after the command."""
    env.monkeypatch.chdir(env.tmp)
    config_module._bleu_tokenizer_problem.cache_clear()  # a case may hide a package
    case.setup(env)
    if case.stdin is not None:
        env.monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(case.stdin),
                                                               encoding="utf-8"))
    before = files(env.tmp)
    modules = [importlib.import_module(m) for m in ("seqlab.prepare", "seqlab.problems.seq2seq")]
    real = [m.read_splits for m in modules]
    capsys.readouterr()
    try:
        for m in modules:  # reading data means the error was not found first
            if not case.reads_data:
                m.read_splits = _work_started
        code = main(list(case.argv))
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    finally:
        for m, f in zip(modules, real):
            m.read_splits = f
    err = capsys.readouterr().err
    config_module._bleu_tokenizer_problem.cache_clear()
    return code, err, before, files(env.tmp)


def test_catalogue_and_cases_agree():
    rows = catalogue()
    assert len(rows) >= 50, "docs/errors.md: the tables were not found"
    assert not sorted(set(rows) - set(CASES)), "rows of docs/errors.md without a case"
    assert not sorted(set(CASES) - set(rows)), "cases without a row in docs/errors.md"


@pytest.mark.parametrize("key", list(CASES))
def test_bad_input_gets_its_one_line(key, checkpoint, tmp_path, monkeypatch, capsys):
    """Exit code 2, one stderr line reading as the catalogue says, nothing written."""
    code, err, before, after = run_case(CASES[key], Env(tmp_path, checkpoint, monkeypatch),
                                        capsys)
    lines = err.splitlines()
    assert code == 2, (code, err)
    assert "Traceback" not in err and "weights_only" not in err
    assert len(lines) == 1, f"expected one line on stderr, got:\n{err}"
    expected = catalogue()[key]
    assert matches(expected, lines[0]), f"\nexpected: {expected}\ngot:      {lines[0]}"
    assert after == before, "the command wrote or changed files"


# ---------------------------------------------------------------------------- every range
def checked_fields(cls=Config, prefix: str = ""):
    """(section, name, Rule) for every field declared with seqlab.config.check."""
    import dataclasses

    instance = cls()
    for f in dataclasses.fields(cls):
        value = getattr(instance, f.name)
        if dataclasses.is_dataclass(value):
            yield from checked_fields(type(value), f.name)
        elif "rule" in f.metadata:
            yield prefix, f.name, f.metadata["rule"]


@pytest.mark.parametrize("section,name,rule", list(checked_fields()),
                         ids=[f"{s}.{n}" for s, n, _ in checked_fields()])
def test_every_range_is_enforced(section, name, rule):
    """Each field declared with check(default, rule) rejects a value outside its range."""
    raw: dict = {"data": {"synthetic": "copy"}}
    raw.setdefault(section, {})[name] = rule.bad
    with pytest.raises(ConfigError, match=re.escape(f"{section}.{name} must be {rule.text}, got")):
        config_from_dict(raw)


def test_ranges_cover_the_issue_list():
    """The keys issue 9 names all have a range (so none can fall back to a silent default)."""
    ranged = {f"{s}.{n}" for s, n, _ in checked_fields()}
    assert {"model.hidden_size", "model.embedding_size", "model.encoder_layers",
            "train.batch_tokens", "train.lr", "train.valid_every", "train.log_every",
            "train.label_smoothing", "train.clip_norm", "train.patience", "train.max_steps",
            "train.max_epochs", "train.max_minutes", "train.threads", "tokenizer.vocab_size",
            "tokenizer.character_coverage"} <= ranged


# ---------------------------------------------------------------------------- what stays valid
def test_merge_keys_may_be_overridden_and_empty_sections_are_defaults(tmp_path):
    """A `<<:` merge followed by the same key is YAML's override, not a duplicate; a section
    whose keys are all commented out means its defaults."""
    path = tmp_path / "ok.yaml"
    path.write_text("data:\n  synthetic: copy\nmodel:\n  # hidden_size: 64\n"
                    "train:\n  <<: {lr: 0.1, seed: 3}\n  lr: 0.2\n", encoding="utf-8")
    cfg = load_config(path)
    assert (cfg.train.lr, cfg.train.seed, cfg.model) == (0.2, 3, Config().model)


def test_a_checkpoint_needs_no_bleu_package(checkpoint, tmp_path, monkeypatch):
    """Translating needs no BLEU tokenizer: a model whose config names one that is not
    installed here still loads."""
    import sacrebleu.tokenizers.tokenizer_ko_mecab as ko

    from seqlab.translate import Translator

    monkeypatch.setattr(ko, "MeCab", None)
    config_module._bleu_tokenizer_problem.cache_clear()
    state = torch.load(checkpoint, weights_only=True)
    state["config"]["eval"]["bleu_tokenize"] = "ko-mecab"
    save_checkpoint(state, tmp_path / "ko.pt")
    try:
        assert Translator.from_checkpoint(tmp_path / "ko.pt", device="cpu").translate(["a b"])
    finally:
        config_module._bleu_tokenizer_problem.cache_clear()
