"""Typed configuration: nested dataclasses, YAML in, every default here and only here.

    cfg = load_config("configs/multi30k_de_en.yaml", overrides=["model.hidden_size=64"])

Unknown keys, wrong types and invalid choices are errors that name the file, the line
and, for a misspelled key, the closest valid one. `configs/reference.yaml` lists and
explains every key.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml


class ConfigError(ValueError):
    """A configuration problem, worded for the user (file:line: what is wrong)."""


@dataclass
class DataConfig:
    root: str | None = None  # folder that relative train/valid/test prefixes are read from
    train: str | None = None  # prefix: reads TRAIN.SRC and TRAIN.TGT (or a .tsv with format tsv)
    valid: str | None = None  # validation prefix: every choice (early stopping, ...) is made here
    test: str | None = None  # test prefix: only reported, never used for a choice
    src: str = "src"  # source-side file suffix, e.g. "de"
    tgt: str = "tgt"  # target-side file suffix, e.g. "en"
    format: Literal["parallel", "tsv"] = "parallel"  # tsv: train/valid/test are 2-column files
    task: str | None = None  # a built-in generated task instead of files: dates, copy, reverse
    task_train_size: int = 20000  # examples generated for training
    task_eval_size: int = 1000  # examples generated for each of valid and test
    max_src_len: int = 100  # training pairs with more source tokens are dropped
    max_tgt_len: int = 100  # ... or more target tokens

    def path(self, prefix: str | None) -> str | None:
        """A train/valid/test prefix as read: joined to `root` unless absolute or no root."""
        if prefix is None or self.root is None or Path(prefix).is_absolute():
            return prefix
        return str(Path(self.root).expanduser() / prefix)


@dataclass
class TokenizerConfig:
    kind: Literal["char", "word", "sentencepiece"] = "sentencepiece"
    joint: bool = False  # one tokenizer and one vocabulary for both sides
    vocab_size: int = 8000  # sentencepiece pieces per tokenizer
    model_type: Literal["unigram", "bpe"] = "unigram"  # sentencepiece algorithm
    character_coverage: float = 1.0  # sentencepiece; 1.0 keeps every Hangul syllable seen
    min_freq: int = 1  # tokens seen fewer times become <unk>
    max_vocab: int | None = None  # cap on vocabulary size, specials included


@dataclass
class ModelConfig:
    cell: Literal["rnn", "lstm", "gru"] = "gru"
    gru_reset_after: bool = True  # False: the original Cho et al. GRU (cells backend only)
    backend: Literal["auto", "cells", "fused"] = "auto"  # auto: fused whenever the math is equal
    embedding_size: int = 256
    hidden_size: int = 256  # decoder state size; also the encoder output size
    encoder_layers: int = 1
    decoder_layers: int = 1
    bidirectional: bool = True  # encoder; each direction then has hidden_size // 2 units
    dropout: float = 0.2  # on embeddings, between layers and before the output layer
    attention: Literal["none", "dot", "scaled_dot", "general", "additive"] = "additive"
    attention_style: Literal["luong", "bahdanau"] = "luong"  # query: current or previous state
    attention_size: int | None = None  # additive attention's inner size (default hidden_size)
    input_feeding: bool = True  # luong: feed the last attentional vector to the next step
    bridge: Literal["zero", "last", "learned"] = "learned"  # encoder final -> decoder initial
    tie_embeddings: bool = False  # share target embeddings with the output layer


@dataclass
class TrainConfig:
    seed: int = 1
    device: str = "auto"  # auto (cuda if available), cpu, cuda, cuda:1, ...
    threads: int | None = None  # torch CPU threads (default: torch's choice)
    batch_tokens: int = 4000  # tokens per batch (source or target side, whichever is larger)
    max_epochs: int = 30
    max_steps: int | None = None
    max_minutes: float | None = None  # wall-clock budget; the run validates and stops on time
    optimizer: Literal["adam", "sgd"] = "adam"
    lr: float = 1e-3
    momentum: float = 0.0  # sgd only
    weight_decay: float = 0.0
    clip_norm: float | None = 5.0  # gradient clipping by global norm; null disables
    label_smoothing: float = 0.0
    lr_schedule: Literal["constant", "plateau", "warmup_decay"] = "constant"
    lr_plateau_factor: float = 0.5  # plateau: lr *= factor after `lr_plateau_patience` bad checks
    lr_plateau_patience: int = 2
    lr_min: float = 1e-5  # plateau: floor
    lr_warmup_steps: int = 1000  # warmup_decay: linear warmup, then lr * sqrt(warmup / step)
    teacher_forcing: float = 1.0  # probability of feeding the gold token (at the schedule's start)
    teacher_forcing_schedule: Literal["constant", "linear", "exponential", "inverse_sigmoid"] = (
        "constant"
    )
    teacher_forcing_min: float = 0.0  # linear: floor of the ratio
    teacher_forcing_decay: float = 1e-4  # linear: slope per step; exponential: (1 - decay)**step
    teacher_forcing_k: float = 1000.0  # inverse_sigmoid: k / (k + exp(step / k))
    log_every: int = 50  # steps between training log lines
    valid_every: int = 500  # steps between validations (and checkpoints)
    valid_samples: int = 3  # sample translations printed at each validation
    early_stopping_metric: Literal["bleu", "chrf", "loss", "exact_match"] = "bleu"
    patience: int | None = 10  # validations without improvement before stopping; null: never


@dataclass
class SearchConfig:
    beam_size: int = 1  # 1: greedy
    n_best: int = 1
    length_penalty: float = 0.0  # GNMT alpha: score = log p / ((5 + len) / 6) ** alpha
    coverage_penalty: float = 0.0  # GNMT beta
    min_len: int = 0
    max_len_a: float = 1.5  # output length limit = a * source length + b
    max_len_b: int = 10
    no_repeat_ngram: int = 0  # block repeated n-grams of this size; 0: off
    batch_size: int = 64  # sentences per decoding batch


@dataclass
class EvalConfig:
    bleu_tokenize: str = "13a"  # sacrebleu tokenizer; "char" or chrF for Korean output
    lowercase: bool = False


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def validate(self) -> Config:
        """Cross-field checks that a single type cannot express."""
        d, m, t = self.data, self.model, self.train
        if d.task is None and d.train is None:
            raise ConfigError("data: give either data.train (a file prefix) or data.task")
        if m.bidirectional and m.hidden_size % 2:
            raise ConfigError("model.hidden_size must be even with a bidirectional encoder")
        if m.backend == "fused" and m.cell == "gru" and not m.gru_reset_after:
            raise ConfigError(
                "model.backend fused needs model.gru_reset_after: true (cuDNN's GRU); "
                "use backend auto or cells for the original GRU"
            )
        if m.tie_embeddings and m.embedding_size != m.hidden_size:
            raise ConfigError("model.tie_embeddings needs embedding_size == hidden_size")
        if m.bridge == "last" and m.encoder_layers < 1:
            raise ConfigError("model.bridge last needs an encoder")
        for name in ("dropout",):
            if not 0 <= getattr(m, name) < 1:
                raise ConfigError(f"model.{name} must be in [0, 1)")
        if not 0 <= t.teacher_forcing <= 1:
            raise ConfigError("train.teacher_forcing must be in [0, 1]")
        if self.search.beam_size < 1 or self.search.n_best > self.search.beam_size:
            raise ConfigError("search: need 1 <= n_best <= beam_size")
        return self


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
        walk(yaml.compose(text), "")
    except yaml.YAMLError:
        pass
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
                     lines: dict[str, str] | None = None) -> Config:
    raw = dict(raw or {})
    lines = dict(lines or {})
    for item in overrides:
        keys, value = parse_override(item)
        node = raw
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: {k!r} is not a section")
        node[keys[-1]] = value
        lines[".".join(keys)] = f"--set {item}: "
    return _build(Config, raw, "", lines).validate()


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> Config:
    """Read a YAML config (or only defaults + overrides when path is None)."""
    if path is None:
        return config_from_dict({}, overrides=overrides)
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    text = path.read_text(encoding="utf-8")
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if raw is None:
        raw = {}
    return config_from_dict(raw, overrides=overrides, filename=str(path),
                            lines=_key_lines(text, str(path)))


def save_config(config: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False), encoding="utf-8")

