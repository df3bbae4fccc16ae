"""Typed configuration: nested dataclasses, YAML in, every default here and only here.

    cfg = load_config("configs/multi30k_de_en.yaml", overrides=["model.hidden_size=64"])

Unknown keys, wrong types, invalid choices, keys given twice and values out of range
are errors that name the file, the line and, for a misspelled key, the closest valid one.
Each field's range is declared once, on the field: `lr: float = check(1e-3, "> 0")`.
`configs/reference.yaml` lists and explains every key; docs/errors.md lists the messages.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import re
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml

from seqlab.errors import ConfigError  # noqa: F401  (importable from here)


@dataclass(frozen=True)
class Rule:
    """The range of a numeric field. `text` is how messages and reference.yaml say it
    ("train.lr must be > 0"); `bad` is a value outside it (for the tests)."""

    text: str
    ok: Callable[[float], bool]
    bad: float


RULES = {rule.text: rule for rule in (
    Rule("> 0", lambda v: v > 0, 0),
    Rule(">= 0", lambda v: v >= 0, -1),
    Rule(">= 1", lambda v: v >= 1, 0),
    Rule("in [0, 1)", lambda v: 0 <= v < 1, 1.0),
    Rule("in (0, 1)", lambda v: 0 < v < 1, 1.0),
    Rule("in (0, 1]", lambda v: 0 < v <= 1, 1.5),
    Rule("in [0, 1]", lambda v: 0 <= v <= 1, 1.5),
)}


def check(default: Any, rule: str) -> Any:
    """A dataclass field whose value, unless None (null), must satisfy RULES[rule]:
    `hidden_size: int = check(256, "> 0")`. `Config.validate` enforces it."""
    return field(default=default, metadata={"rule": RULES[rule]})


@dataclass
class DataConfig:
    root: str | None = None  # folder that relative train/valid/test paths are read from
    train: str | None = None  # prefix: reads TRAIN.SRC and TRAIN.TGT (or a file, see format)
    valid: str | None = None  # validation data: every choice (early stopping, ...) is made here
    # no valid file: hold out this many training examples as the validation set (a fixed
    # pseudo-random choice, the same for every seed and config)
    valid_holdout: int | None = check(None, "> 0")
    test: str | None = None  # test data: only reported, never used for a choice
    src: str = "src"  # parallel: source-side file suffix, e.g. "de" (classify: the text side)
    tgt: str = "tgt"  # parallel: target-side file suffix, e.g. "en" (classify: the label side)
    # parallel: PREFIX.SRC + PREFIX.TGT; tsv: one file of columns; text: one plain text file
    format: Literal["parallel", "tsv", "text"] = "parallel"
    header: bool = False  # tsv: the first line names the columns
    src_column: int | str = 1  # tsv: source (classify: text) column, 1-based or a header name
    tgt_column: int | str = 2  # tsv: target (classify: label) column, 1-based or a header name
    synthetic: str | None = None  # a generated dataset instead of files (seqlab.synthetic)
    synthetic_train_size: int = check(20000, "> 0")  # examples generated for training
    synthetic_eval_size: int = check(1000, "> 0")  # examples generated for valid and for test
    max_src_len: int = check(100, "> 0")  # training examples (lm: lines) over it are dropped
    max_tgt_len: int = check(100, "> 0")  # ... or more target tokens (seq2seq)

    def path(self, prefix: str | None) -> str | None:
        """A train/valid/test prefix as read: joined to `root` unless absolute or no root."""
        if prefix is None or self.root is None or Path(prefix).is_absolute():
            return prefix
        return str(Path(self.root).expanduser() / prefix)


@dataclass
class TokenizerConfig:
    kind: Literal["char", "word", "sentencepiece"] = "sentencepiece"
    joint: bool = False  # one tokenizer and one vocabulary for both sides
    vocab_size: int = check(8000, "> 0")  # sentencepiece pieces per tokenizer
    model_type: Literal["unigram", "bpe"] = "unigram"  # sentencepiece algorithm
    character_coverage: float = check(1.0, "in (0, 1]")  # sentencepiece; 1.0: keep all
    min_freq: int = check(1, ">= 1")  # tokens seen fewer times become <unk>
    max_vocab: int | None = check(None, "> 0")  # cap on vocabulary size, specials included
    sampling_alpha: float = check(0.0, ">= 0")  # subword regularization in training; 0: off


@dataclass
class ModelConfig:
    cell: Literal["rnn", "lstm", "gru"] = "gru"
    gru_reset_after: bool = True  # False: the original Cho et al. GRU (cells backend only)
    backend: Literal["auto", "cells", "fused"] = "auto"  # auto: fused whenever the math is equal
    embedding_size: int = check(256, "> 0")
    hidden_size: int = check(256, "> 0")  # decoder state size; also the encoder output size
    encoder_layers: int = check(1, "> 0")
    decoder_layers: int = check(1, "> 0")
    bidirectional: bool = True  # encoder; each direction then has hidden_size // 2 units
    dropout: float = check(0.2, "in [0, 1)")  # on embeddings, between layers, before output
    attention: Literal["none", "dot", "scaled_dot", "general", "additive"] = "additive"
    attention_style: Literal["luong", "bahdanau"] = "luong"  # query: current or previous state
    attention_size: int | None = check(None, "> 0")  # additive only (null: hidden_size)
    input_feeding: bool = True  # luong: feed the last attentional vector to the next step
    bridge: Literal["zero", "last", "learned"] = "learned"  # encoder final -> decoder initial
    tie_embeddings: bool = False  # share target embeddings with the output layer


@dataclass
class ClassifyConfig:
    """problem: classify (many-to-one): embeddings -> Recurrent -> pooled summary -> labels."""

    # summary of the encoder states: the final state (both directions), their mean, their
    # maximum, or attention pooling (a learned query scores every state; softmax; weighted sum)
    pooling: Literal["final", "mean", "max", "attention"] = "max"
    # weight of an auxiliary bidirectional language-model loss (0: none): the forward states
    # also predict the next token and the backward states the previous one (ELMo's biLM,
    # one shared output layer), added to each example's loss as mean nats per token x weight
    lm_weight: float = check(0.0, ">= 0")
    # the fraction of those predictions made each step, drawn at random (the softmax over
    # the vocabulary at every position costs more than the rest of the model)
    lm_sample: float = check(1.0, "in (0, 1]")
    # a linear bag-of-n-grams classifier beside the recurrent one (0: none): hashed word and
    # character n-grams (seqlab/ngrams.py) -> one weight per bucket and label; each part is
    # trained by its own cross-entropy, and prediction adds ngram_weight x its logits to the
    # recurrent part's (a product of experts: p ~ p_rnn * p_ngram^ngram_weight)
    ngram_buckets: int = check(0, ">= 0")
    ngram_words: int = check(2, ">= 0")  # word n-grams for n = 1..ngram_words
    ngram_chars: int = check(4, ">= 0")  # character n-grams for n = 1..ngram_chars
    ngram_weight: float = check(1.0, ">= 0")  # the n-gram part's weight in prediction
    # the n-gram weights are trained by Adagrad at this learning rate, not by train.optimizer
    # (Adagrad's per-weight steps suit sparse features; no clipping, no lr schedule)
    ngram_lr: float = check(0.01, "> 0")


@dataclass
class LMConfig:
    """problem: lm (one-to-many): embeddings -> unidirectional Recurrent -> next-token logits."""

    # stream: the training text is one running text, cut into batch rows that are read on in
    # chunks of `bptt` tokens (truncated BPTT: the state is carried over and detached);
    # lines: every line is a sequence of its own, <sos> line <eos>
    mode: Literal["stream", "lines"] = "stream"
    bptt: int = check(128, ">= 1")  # stream: tokens per chunk = steps back-propagated through


@dataclass
class TagConfig:
    """problem: tag (aligned many-to-many): embeddings -> Recurrent -> a label per position."""

    # spacing: each line of a text file is a spaced sentence; the input is its characters with
    # the spaces removed, the label of each character says whether a space followed it;
    # tokens: parallel or tsv data, whitespace-separated tokens and as many tags (POS, NER)
    scheme: Literal["spacing", "tokens"] = "spacing"
    crf: bool = False  # a linear-chain CRF output layer (Viterbi decoding) instead of softmax


@dataclass
class ForecastConfig:
    """problem: forecast (many-to-one over time): a window of past values -> the next ones."""

    # csv: data.train is a CSV file (a header line, a time column and a value column);
    # co2, sunspots: the series shipped inside statsmodels; sine: a generated noisy sine
    series: Literal["csv", "co2", "sunspots", "sine"] = "csv"
    time_column: int | str = "time"  # csv: the time column, a header name or 1-based number
    value_column: int | str = "value"  # csv: the value column, a header name or number
    sine_length: int = check(400, "> 0")  # sine: values generated
    season: int | None = check(None, ">= 1")  # m, steps per season; null: the series' own
    window: int = check(24, ">= 1")  # past values the encoder reads (W)
    horizon: int = check(8, ">= 1")  # values forecast at every origin (H)
    # direct: H outputs at once; recursive: a one-step model fed its own prediction
    strategy: Literal["direct", "recursive"] = "direct"
    relative: bool = True  # inputs and targets relative to the window's last value
    calendar: bool = False  # sin / cos of the season's phase as extra inputs
    loss: Literal["mse", "mae"] = "mse"  # on the scaled values
    batch_size: int = check(32, ">= 1")  # training windows per batch
    valid_fraction: float = check(0.15, "in (0, 1)")  # the part before the test part
    test_fraction: float = check(0.15, "in (0, 1)")  # the last part of the series
    peers: bool = True  # report seasonal-naive, ETS and SARIMA on the same origins
    sarima_d: int = check(1, ">= 0")  # SARIMA differences (fixed, not searched)
    sarima_seasonal_d: int = check(1, ">= 0")  # seasonal differences (fixed)
    sarima_max_p: int = check(2, ">= 0")  # AIC search: p in 0..max_p
    sarima_max_q: int = check(1, ">= 0")  # q in 0..max_q
    sarima_max_seasonal_p: int = check(0, ">= 0")  # P in 0..max
    sarima_max_seasonal_q: int = check(1, ">= 0")  # Q in 0..max


@dataclass
class TrainConfig:
    seed: int = 1
    device: str = "auto"  # auto (cuda if available), cpu, cuda, cuda:1, ...
    threads: int | None = check(None, "> 0")  # torch CPU threads (default: torch's choice)
    batch_tokens: int = check(4000, "> 0")  # tokens per batch, on the longer side
    max_epochs: int = check(30, "> 0")
    max_steps: int | None = check(None, "> 0")
    max_minutes: float | None = check(None, "> 0")  # wall-clock budget; then validate, stop
    optimizer: Literal["adam", "sgd"] = "adam"
    lr: float = check(1e-3, "> 0")
    momentum: float = check(0.0, ">= 0")  # sgd only
    weight_decay: float = check(0.0, ">= 0")
    clip_norm: float | None = check(5.0, "> 0")  # gradient clipping by global norm; null disables
    label_smoothing: float = check(0.0, "in [0, 1)")
    lr_schedule: Literal["constant", "plateau", "warmup_decay"] = "constant"
    lr_plateau_factor: float = check(0.5, "in (0, 1)")  # plateau: lr *= factor
    lr_plateau_patience: int = check(2, ">= 0")
    lr_min: float = check(1e-5, ">= 0")  # plateau: floor
    lr_warmup_steps: int = check(1000, "> 0")  # warmup_decay: w of lr * min(i/w, sqrt(w/i))
    teacher_forcing: float = check(1.0, "in [0, 1]")  # P(feed the gold token) at the start
    teacher_forcing_schedule: Literal["constant", "linear", "exponential", "inverse_sigmoid"] = (
        "constant"
    )
    teacher_forcing_min: float = check(0.0, "in [0, 1]")  # linear: floor of the ratio
    teacher_forcing_decay: float = check(1e-4, "in [0, 1]")  # linear: slope; exponential: (1-d)**i
    teacher_forcing_k: float = check(1000.0, ">= 1")  # inverse_sigmoid: k / (k + exp(step / k))
    log_every: int = check(50, "> 0")  # steps between training log lines
    valid_every: int = check(500, "> 0")  # steps between validations (and checkpoints)
    valid_samples: int = check(3, ">= 0")  # sample translations printed at each validation
    # seq2seq: attention maps of the first N validation sentences drawn at each validation
    # (run_dir/attention/), and an animated GIF per sentence; 0: none
    attention_maps: int = check(0, ">= 0")
    # the validation metric that picks best.pt (null: the problem's own, see PROBLEM_METRICS)
    early_stopping_metric: str | None = None
    patience: int | None = check(10, ">= 0")  # bad validations tolerated; null: never stop
    max_nonfinite_steps: int = check(5, ">= 1")  # nan/inf steps in a row skipped, then stop
    keep_last: int = check(0, ">= 0")  # snapshots step-N.pt of the most recent validations
    keep_best: int = check(0, ">= 0")  # snapshots step-N.pt of the best validations
    # float32; bfloat16: the forward pass under bf16 autocast; auto: bfloat16 where it is
    # measured faster (seqlab/precision.py)
    precision: Literal["float32", "bfloat16", "auto"] = "float32"


@dataclass
class SearchConfig:
    beam_size: int = check(1, ">= 1")  # 1: greedy
    n_best: int = check(1, ">= 1")
    length_penalty: float = 0.0  # GNMT alpha: score = log p / ((5 + len) / 6) ** alpha
    coverage_penalty: float = check(0.0, ">= 0")  # GNMT beta
    min_len: int = check(0, ">= 0")
    max_len_a: float = check(1.5, ">= 0")  # output length limit = a * source length + b
    max_len_b: int = check(10, ">= 0")
    no_repeat_ngram: int = check(0, ">= 0")  # block repeated n-grams of this size; 0: off
    batch_size: int = check(64, ">= 1")  # sentences per decoding batch
    # input lines with more source tokens (EOS not counted) are an error before decoding
    max_input_tokens: int = check(1000, ">= 1")
    # beam: when a sentence stops (seqlab/search.py): exact (no open hypothesis can still win,
    # the same result as searching to the length limit) or heuristic (scored as if it ended
    # next, like OpenNMT-py and Hugging Face; much sooner with length_penalty > 0)
    stopping: Literal["exact", "heuristic"] = "exact"
    # float32; bfloat16: the decoder's products in bf16 (CPU: a packed copy; GPU: autocast);
    # int8: dynamically quantized output layers (CPU)
    precision: Literal["float32", "bfloat16", "int8"] = "float32"


@dataclass
class EvalConfig:
    bleu_tokenize: str = "13a"  # sacrebleu tokenizer; "char" or chrF for Korean output
    lowercase: bool = False


PROBLEMS = ("seq2seq", "classify", "lm", "tag", "forecast")
# each problem's validation metrics, True where higher is better; the first is the default
# train.early_stopping_metric
PROBLEM_METRICS = {
    "seq2seq": {"bleu": True, "chrf": True, "exact_match": True, "loss": False},
    "classify": {"accuracy": True, "macro_f1": True, "loss": False},
    "lm": {"loss": False},
    "tag": {"f1": True, "exact_match": True, "accuracy": True, "loss": False},
    "forecast": {"mase": False, "mae": False, "rmse": False, "loss": False},
}


def choices(section: type, name: str) -> tuple:
    """The values a Literal option of a config section allows, e.g. choices(SearchConfig,
    "stopping") -> ("exact", "heuristic"): what the command line offers for it."""
    return get_args(get_type_hints(section)[name])


@dataclass
class Config:
    problem: Literal["seq2seq", "classify", "lm", "tag", "forecast"] = "seq2seq"  # the shape
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    classify: ClassifyConfig = field(default_factory=ClassifyConfig)
    lm: LMConfig = field(default_factory=LMConfig)
    tag: TagConfig = field(default_factory=TagConfig)
    forecast: ForecastConfig = field(default_factory=ForecastConfig)

    @property
    def stopping_metric(self) -> str:
        """train.early_stopping_metric, or the problem's default."""
        return self.train.early_stopping_metric or next(iter(PROBLEM_METRICS[self.problem]))

    @property
    def higher_is_better(self) -> bool:
        return PROBLEM_METRICS[self.problem][self.stopping_metric]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def validate(self, lines: dict[str, str] | None = None, *,
                 environment: bool = True) -> Config:
        """Each field's range (declared with `check`), then the rules that join fields; with
        `environment`, also what this machine must provide (the BLEU tokenizer's package).
        `lines` maps a dotted key to where it was set ("tiny.yaml:7: "), for the messages."""
        lines = lines or {}
        check_ranges(self, "", lines)
        d, m, s = self.data, self.model, self.search
        if d.synthetic is None and d.train is None and not (
                self.problem == "forecast" and self.forecast.series != "csv"):
            raise ConfigError("data: give either data.train (a file prefix) or data.synthetic")
        _check_problem(self, lines)
        if m.bidirectional and m.hidden_size % 2:
            _fail(lines, "model.hidden_size", "model.hidden_size must be even with a "
                  f"bidirectional encoder, got {m.hidden_size}")
        if m.backend == "fused" and m.cell == "gru" and not m.gru_reset_after:
            _fail(lines, "model.backend", "model.backend fused needs model.gru_reset_after: "
                  "true (cuDNN's GRU); use backend auto or cells for the original GRU")
        if m.tie_embeddings and m.embedding_size != m.hidden_size:
            _fail(lines, "model.tie_embeddings", "model.tie_embeddings needs embedding_size == "
                  f"hidden_size, got {m.embedding_size} and {m.hidden_size}")
        if m.attention_size is not None and m.attention != "additive":
            _fail(lines, "model.attention_size", "model.attention_size applies only to "
                  f"model.attention: additive, not {m.attention!r}; remove it")
        if s.coverage_penalty and m.attention == "none":
            _fail(lines, "search.coverage_penalty", "search.coverage_penalty needs attention, "
                  "but model.attention is 'none'; set it to 0")
        if s.n_best > s.beam_size:
            _fail(lines, "search.n_best", "search: need 1 <= n_best <= beam_size, got n_best "
                  f"{s.n_best} and beam_size {s.beam_size}")
        _check_device_name(self.train.device, lines)
        if environment:
            problem = _bleu_tokenizer_problem(self.eval.bleu_tokenize)
            if problem:
                _fail(lines, "eval.bleu_tokenize", f"eval.bleu_tokenize: {problem}")
        return self


def _check_problem(config: Config, lines: dict[str, str]) -> None:
    """The rules that join the problem to the other sections."""
    from seqlab.synthetic import DATASETS

    d, m, problem = config.data, config.model, config.problem
    metrics = PROBLEM_METRICS[problem]
    metric = config.train.early_stopping_metric
    if metric is not None and metric not in metrics:
        hint = difflib.get_close_matches(metric, list(metrics), n=1)
        extra = f" (did you mean {hint[0]!r}?)" if hint else ""
        _fail(lines, "train.early_stopping_metric", f"train.early_stopping_metric: {metric!r} "
              f"is not a {problem} metric; choose one of {', '.join(metrics)}{extra}")
    if d.synthetic is not None:
        if d.synthetic not in DATASETS:
            hint = difflib.get_close_matches(d.synthetic, list(DATASETS), n=1)
            extra = f" (did you mean {hint[0]!r}?)" if hint else ""
            _fail(lines, "data.synthetic", f"data.synthetic: {d.synthetic!r} is not a generated "
                  f"dataset; choose one of {', '.join(DATASETS)}{extra}")
        shape = DATASETS[d.synthetic].problem
        if shape != problem:
            _fail(lines, "data.synthetic", f"data.synthetic: {d.synthetic!r} is a {shape} "
                  f"dataset, but problem is {problem!r}")
    if problem == "tag" and d.synthetic is not None and config.tag.scheme != "spacing":
        _fail(lines, "tag.scheme", f"tag.scheme: the generated dataset {d.synthetic!r} is "
              "spaced text; it needs tag.scheme: spacing")
    if problem == "tag" and d.valid_holdout is not None and config.tag.scheme == "spacing":
        _fail(lines, "data.valid_holdout", "data.valid_holdout is not implemented for "
              "tag.scheme spacing; give a data.valid file")
    if d.valid_holdout is not None and (d.valid is not None or d.synthetic is not None):
        _fail(lines, "data.valid_holdout", "data.valid_holdout holds validation examples out "
              "of the training data; it cannot be used with data.valid or data.synthetic")
    if d.synthetic is not None:
        pass
    elif problem == "tag":
        scheme = config.tag.scheme
        if (scheme == "spacing") != (d.format == "text"):
            wanted = "text (one spaced sentence per line)" if scheme == "spacing" else (
                "parallel or tsv (tokens and their tags)")
            _fail(lines, "data.format", f"data.format: tag.scheme {scheme} reads data.format "
                  f"{wanted}, not {d.format!r}")
    elif d.format == "text" and problem != "lm":
        _fail(lines, "data.format", f"data.format: 'text' (one running text) is for problem "
              f"lm or tag, not {problem!r}; use parallel or tsv")
    elif problem == "lm" and d.format != "text":
        _fail(lines, "data.format", f"data.format: a language model reads plain text files "
              f"(format: text), not {d.format!r}")
    for key in ("src_column", "tgt_column"):
        value = getattr(d, key)
        if isinstance(value, int) and value < 1:
            _fail(lines, f"data.{key}", f"data.{key} counts columns from 1, got {value}")
        if isinstance(value, str) and not d.header:
            _fail(lines, f"data.{key}", f"data.{key}: the column name {value!r} needs "
                  "data.header: true (or give its number, counting from 1)")
    if d.src_column == d.tgt_column:
        _fail(lines, "data.tgt_column", f"data.src_column and data.tgt_column are both "
              f"{d.src_column!r}")
    t = config.tokenizer
    if t.sampling_alpha and (t.kind, t.model_type) != ("sentencepiece", "unigram"):
        _fail(lines, "tokenizer.sampling_alpha", "tokenizer.sampling_alpha samples from a "
              "sentencepiece unigram model; it needs tokenizer.kind: sentencepiece and "
              "model_type: unigram (or set it to 0)")
    if t.sampling_alpha and problem != "classify":
        _fail(lines, "tokenizer.sampling_alpha", "tokenizer.sampling_alpha is implemented for "
              f"problem classify only, not {problem!r}; set it to 0")
    if problem == "forecast":
        _check_forecast(config, lines)
    if problem == "lm" and m.bidirectional:
        _fail(lines, "model.bidirectional", "model.bidirectional: a language model reads "
              "only the past; set model.bidirectional: false for problem lm")
    c = config.classify
    if problem == "classify" and c.ngram_buckets and not (c.ngram_words or c.ngram_chars):
        _fail(lines, "classify.ngram_buckets", "classify.ngram_buckets needs word or character "
              "n-grams: set classify.ngram_words or classify.ngram_chars above 0")
    if problem == "classify" and config.classify.lm_weight and m.bidirectional \
            and m.encoder_layers > 1:
        _fail(lines, "classify.lm_weight", "classify.lm_weight with a bidirectional encoder "
              "needs model.encoder_layers: 1 (above the first layer, the forward direction "
              "sees the next token through the backward states below it)")


def _check_forecast(config: Config, lines: dict[str, str]) -> None:
    """problem forecast: one series split by time, read by a unidirectional encoder."""
    d, f = config.data, config.forecast
    if config.model.bidirectional:
        _fail(lines, "model.bidirectional", "model.bidirectional: a forecaster reads only the "
              "past; set model.bidirectional: false for problem forecast")
    if f.series != "csv" and (d.train is not None or d.synthetic is not None):
        key = "data.train" if d.train is not None else "data.synthetic"
        _fail(lines, key, f"{key}: forecast.series {f.series!r} is built in; remove {key} "
              "(or set forecast.series: csv)")
    for key in ("valid", "test"):
        if getattr(d, key) is not None:
            _fail(lines, f"data.{key}", f"data.{key}: a forecaster splits its one series by "
                  "time (forecast.valid_fraction, test_fraction); remove it")
    if f.valid_fraction + f.test_fraction >= 1:
        _fail(lines, "forecast.test_fraction", "forecast: valid_fraction + test_fraction must "
              f"be < 1 (the rest trains), got {f.valid_fraction:g} + {f.test_fraction:g}")
    for key in ("time_column", "value_column"):
        value = getattr(f, key)
        if isinstance(value, int) and value < 1:
            _fail(lines, f"forecast.{key}", f"forecast.{key} counts columns from 1, got {value}")
    if f.time_column == f.value_column:
        _fail(lines, "forecast.value_column", "forecast.time_column and value_column are both "
              f"{f.time_column!r}")


def _fail(lines: dict[str, str], key: str, text: str):
    """Raise ConfigError(text), prefixed with where `key` was set (file:line or --set)."""
    raise ConfigError(f"{lines.get(key, '')}{text}")


def field_rules(cls) -> dict[str, Rule]:
    """Field name -> its declared range, for the fields of `cls` declared with `check`."""
    return {f.name: f.metadata["rule"] for f in dataclasses.fields(cls) if "rule" in f.metadata}


def check_ranges(obj, prefix: str = "", lines: dict[str, str] | None = None) -> None:
    """Every field declared with `check(default, rule)` must satisfy its rule; None (null)
    means "not set" and always passes."""
    for f in dataclasses.fields(obj):
        key, value = f"{prefix}{f.name}", getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            check_ranges(value, key + ".", lines)
        rule = f.metadata.get("rule")
        if rule is not None and value is not None and not rule.ok(value):
            _fail(lines or {}, key, f"{key} must be {rule.text}, got {value!r}")


_PLAIN_DEVICE = re.compile(r"auto|(cpu|cuda|mps|xpu)(:\d+)?")


def _check_device_name(name: str, lines: dict[str, str]) -> None:
    """train.device must be a name torch knows; whether that device is here is checked when
    training starts (seqlab.device.pick_device). torch is imported only for unusual names."""
    if _PLAIN_DEVICE.fullmatch(name):
        return
    import torch

    try:
        torch.device(name)
    except (RuntimeError, ValueError):
        _fail(lines, "train.device", f"train.device: {name!r} is not a device torch knows "
              "(auto, cpu, cuda, cuda:1, mps, ...)")


@functools.lru_cache
def _bleu_tokenizer_problem(name: str) -> str | None:
    """Why sacrebleu's BLEU(tokenize=name) cannot work here (an unknown name, a missing extra
    package), or None when it can: found before training, not at the first validation."""
    from sacrebleu.metrics import BLEU

    known = sorted(BLEU.TOKENIZERS)
    if name not in known:
        hint = difflib.get_close_matches(name, known, n=1)
        extra = f" (did you mean {hint[0]!r}?)" if hint else ""
        return f"{name!r} is not a sacrebleu tokenizer; choose one of {', '.join(known)}{extra}"
    try:
        BLEU(tokenize=name)
    except Exception as exc:  # sacrebleu raises RuntimeError, or URLError for a download
        pip = re.search(r"pip install \S+", str(exc))
        if pip:
            return f"{name!r} needs a package that is not installed: {pip.group(0)}"
        return f"{name!r} cannot be set up here ({' '.join(str(exc).split())})"
    return None


# ---------------------------------------------------------------------------- loading
def _type_name(tp) -> str:
    if get_origin(tp) is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    return getattr(tp, "__name__", str(tp)).replace("NoneType", "null")


def _coerce(value: Any, tp, where: str) -> Any:
    """Check `value` against the annotation `tp`; ints are accepted for floats."""
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        options = get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: {value!r} is not valid")
    if origin is Literal:
        if value not in get_args(tp):
            choices = ", ".join(repr(a) for a in get_args(tp))
            hint = difflib.get_close_matches(str(value), [str(a) for a in get_args(tp)], n=1)
            extra = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise ConfigError(f"{where}: {value!r} is not one of {choices}{extra}")
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if tp in (int, float, str, bool):
        if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
            raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported type {tp}")


def _build(cls, raw: Any, path: str, lines: dict[str, str]):
    if raw is None and path:  # a section left empty (`model:` with its keys commented out)
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{lines.get(path, '')}{path or 'config'}: expected a mapping")
    hints = get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in raw.items():
        where = f"{path}.{key}" if path else str(key)
        if key not in names:
            hint = difflib.get_close_matches(str(key), names, n=1)
            extra = f" (did you mean {hint[0]!r}?)" if hint else ""
            if where in RENAMED:
                extra = f" (renamed: {RENAMED[where]})"
            raise ConfigError(f"{lines.get(where, '')}unknown key {where!r}{extra}")
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = _build(tp, value, where, lines)
        else:
            try:
                kwargs[key] = _coerce(value, tp, where)
            except ConfigError as exc:
                raise ConfigError(f"{lines.get(where, '')}{exc}") from None
    return cls(**kwargs)


RENAMED = {"data.task": "data.synthetic", "data.task_train_size": "data.synthetic_train_size",
           "data.task_eval_size": "data.synthetic_eval_size"}  # old key -> its new name


def _key_lines(text: str, filename: str) -> dict[str, str]:
    """Map dotted key -> 'file:line: ' using the YAML node tree (for error messages)."""
    out: dict[str, str] = {}

    def walk(node, prefix):
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                key = f"{prefix}.{key_node.value}" if prefix else str(key_node.value)
                out[key] = f"{filename}:{key_node.start_mark.line + 1}: "
                walk(value_node, key)

    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        return out
    if root is not None:
        out[""] = f"{filename}:{root.start_mark.line + 1}: "  # the document itself
        walk(root, "")
    return out


def parse_override(item: str) -> tuple[list[str], Any]:
    """'model.hidden_size=64' -> (['model', 'hidden_size'], 64); the value is read as YAML."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. model.hidden_size=64")
    key, value = item.split("=", 1)
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError:
        parsed = value
    return key.strip().split("."), parsed


def config_from_dict(raw: dict, *, overrides: list[str] = (), filename: str = "config",
                     lines: dict[str, str] | None = None, environment: bool = True) -> Config:
    """Build and validate a Config from nested dicts (a parsed YAML file, a checkpoint's
    stored config); `lines` maps dotted keys to "file:line: " for the messages."""
    lines = dict(lines or {})
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        what = "a list" if isinstance(raw, list) else f"the value {raw!r}"
        raise ConfigError(f"{lines.get('', filename + ': ')}the config must be a mapping of "
                          f"sections (data:, model:, train:, ...), got {what}")
    raw = dict(raw)
    for item in overrides:
        keys, value = parse_override(item)
        node = raw
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: {k!r} is not a section")
        node[keys[-1]] = value
        lines[".".join(keys)] = f"--set {item}: "
    return _build(Config, raw, "", lines).validate(lines, environment=environment)


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key given twice in one mapping: PyYAML would keep the
    last one silently, so a second `lr:` further down would win unseen. Keys brought in by a
    `<<:` merge may be overridden, as YAML intends."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, yaml.Mark] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node.start_mark)
            except TypeError:  # an unhashable key: SafeLoader reports it
                continue
            if first is not key_node.start_mark:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice, first on line {first.line + 1}",
                    key_node.start_mark)
        return super().construct_mapping(node, deep)


def _read_text(path: Path) -> str:
    """The config file as text: UTF-8 (a BOM is fine); anything else is one clear error."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror})") from None
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ConfigError(f"{path}: UTF-16 text; save the config as UTF-8")
    if b"\0" in data:
        raise ConfigError(f"{path}: binary data (a NUL byte at offset {data.index(0)}), "
                          "not a YAML text file")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError(f"{path}:{line}: not UTF-8 text (byte 0x{data[exc.start]:02x} at "
                          f"offset {exc.start}); save the config as UTF-8") from None


def _parse_yaml(text: str, path: Path) -> Any:
    """YAML text -> Python data; a syntax error or a duplicate key -> 'file:line: ...'."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.MarkedYAMLError as exc:
        where = f"{path}:{exc.problem_mark.line + 1}" if exc.problem_mark else str(path)
        problem = " ".join(str(exc.problem).split())
        raise ConfigError(f"{where}: not valid YAML ({problem})") from None
    except yaml.reader.ReaderError as exc:  # a control character: not a text config
        line = text.count("\n", 0, exc.position) + 1
        raise ConfigError(f"{path}:{line}: not valid YAML (control character "
                          f"{chr(exc.character)!r} is not allowed)") from None


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> Config:
    """Read a YAML config (or only defaults + overrides when path is None)."""
    if path is None:
        return config_from_dict({}, overrides=overrides)
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    text = _read_text(path)
    raw = _parse_yaml(text, path)
    return config_from_dict(raw, overrides=overrides, filename=str(path),
                            lines=_key_lines(text, str(path)))


def save_config(config: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False), encoding="utf-8")

