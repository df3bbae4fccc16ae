"""Language modelling (one-to-many): predict every token of a text from the tokens before it.

    data      plain text files (data.format: text; train, optional valid and test) or a
              generated dataset (data.synthetic, e.g. alphabet: lines of text)
    codec     one tokenizer and one vocabulary, learned from the training text only
              (validation / test tokens never seen in training read as <unk>)
    model     RNNLanguageModel: embeddings -> unidirectional Recurrent -> linear over the
              vocabulary; loss = cross-entropy summed over the real target tokens
    modes     lm.mode stream: one running text, truncated back-propagation through time
              lm.mode lines: every line a sequence of its own, <sos> line <eos>
    validate  the whole validation text, every token predicted once: nats per token, nats and
              bits per character, perplexity
    predict   Generator: continue a prime (greedy or sampled); score any text

Stream mode (truncated BPTT; Zaremba et al. 2014, the PyTorch word_language_model example).
The training ids x_0 .. x_{N-1}, from an epoch offset o on, are cut into R contiguous rows of
n tokens each, R = max(1, train.batch_tokens // lm.bptt) per rank (world * R rows in all with
DDP; rank k takes rows k R .. k R + R - 1):

    row r:   inputs  x[o + r n     : o + (r + 1) n    ]
             targets x[o + r n + 1 : o + (r + 1) n + 1]      n = (N - 1 - o) // (world R)

Batch j is columns [j bptt, (j + 1) bptt) of every row (the last one may be shorter). The
final recurrent state of batch j is the initial state of batch j + 1, detached: the forward
pass sees everything read so far in the row, the gradient stops at the chunk boundary. At the
start of each epoch the carry is reset to zeros and o is drawn anew from (train.seed, epoch)
in [0, bptt) (less for a text too short for that), so that the chunk boundaries move between
epochs; the o first and the (N - 1 - o) mod (world R) last tokens sit out that epoch.

The chunk length lm.bptt is a trade-off. Longer chunks let the gradient reach further back
(a dependency longer than the chunk can still be *used*, since the state carries information
across the boundary, but it is only learned through what the state happens to keep), and
make each step's batch (R x bptt tokens) more tokens of one row rather than more rows; they
also mean fewer optimizer steps per epoch for a given batch_tokens, and more memory per step
(the activations of bptt steps are kept for the backward pass).

Shapes: B batch rows, T steps, E embedding, H hidden, L layers, V vocabulary.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from seqlab.checkpoint import Checkpointed, load_weights, open_for_prediction
from seqlab.config import Config, ConfigError, ModelConfig
from seqlab.data import DataError, TokenBatchSampler, read_text, text_lines  # noqa: F401
from seqlab.dropout import Dropout
from seqlab.recurrent import Recurrent, map_state
from seqlab.recurrent import select_state as _select
from seqlab.search import greedy_search, sample
from seqlab.tokenizers import Tokenizer, build_tokenizer, tokenizer_from_state_dict
from seqlab.vocab import EOS, PAD, SOS, SPECIALS, UNK, Vocab

State = Tensor | tuple[Tensor, Tensor]  # h (L, B, H), or (h, c) for the LSTM
VALID_ROWS = 64  # stream mode: contiguous rows the validation text is read in (a batch)
SAMPLE_TOKENS = 40  # tokens of each continuation shown at a validation


# ---------------------------------------------------------------------------------------------
# Reading text


# ---------------------------------------------------------------------------------------------
# Text <-> ids


def stream_tokens(tokenizer: Tokenizer, text: str) -> list[str]:
    """A running text -> tokens, each "\\n" a token of its own: every line is tokenized alone
    (so subword and word tokenizers see sentences), "\\n" between them. For the char
    tokenizer this is exactly list(text)."""
    tokens: list[str] = []
    lines = text.split("\n")
    for i, line in enumerate(lines):
        tokens += tokenizer.tokenize(line)
        if i < len(lines) - 1:
            tokens.append("\n")
    return tokens


@dataclass
class LMCodec:
    """The tokenizer and the vocabulary; saved in checkpoints as plain data."""

    tokenizer: Tokenizer
    vocab: Vocab

    def stream_tokens(self, text: str) -> list[str]:
        return stream_tokens(self.tokenizer, text)

    def decode(self, ids: Sequence[int]) -> str:
        """Ids -> text (stops at <eos>; <pad> and <sos> dropped)."""
        return self.tokenizer.detokenize(self.vocab.decode(ids))

    def state_dict(self) -> dict:
        return {"tokenizer": self.tokenizer.state_dict(), "vocab": self.vocab.state_dict()}

    @classmethod
    def from_state_dict(cls, state: dict) -> LMCodec:
        return cls(tokenizer_from_state_dict(state["tokenizer"]),
                   Vocab.from_state_dict(state["vocab"]))


def build_codec(config: Config, text: str) -> LMCodec:
    """Tokenizer and vocabulary from the training text (config.tokenizer)."""
    t, lines = config.tokenizer, text_lines(text)
    tokenizer = build_tokenizer(t.kind, lines, vocab_size=t.vocab_size, model_type=t.model_type,
                                character_coverage=t.character_coverage)
    tokens = ([stream_tokens(tokenizer, text)] if config.lm.mode == "stream"
              else (tokenizer.tokenize(line) for line in lines))
    return LMCodec(tokenizer, Vocab.build(tokens, min_freq=t.min_freq, max_size=t.max_vocab))


@dataclass
class LMText:
    """One split as the model reads it.

    stream: ids (N,) int32, the whole text; `chars` = characters after the first token.
    lines:  seqs, the ids of each non-blank line; `chars` = their characters plus one "\\n"
            each (predicted as <eos>). `source` says where the text came from."""

    source: str
    ids: Tensor | None
    seqs: list[list[int]] | None
    chars: int

    @property
    def tokens(self) -> int:
        """Tokens predicted once the whole text is read."""
        if self.ids is not None:
            return max(0, len(self.ids) - 1)
        return sum(len(s) + 1 for s in self.seqs)


def encode_text(codec: LMCodec, mode: str, text: str, source: str) -> LMText:
    """A text -> LMText for `mode`; one with nothing to predict is a DataError."""
    if mode == "stream":
        tokens = codec.stream_tokens(text)
        if len(tokens) < 2:
            raise DataError(f"{source}: {len(tokens)} token(s); a language model needs at "
                            "least two (one to read, one to predict)")
        ids = torch.tensor(codec.vocab.encode(tokens), dtype=torch.int32)
        return LMText(source, ids, None, len(text) - len(tokens[0]))
    lines = text_lines(text)
    if not lines:
        raise DataError(f"{source}: no line with text (lm.mode lines reads one sequence per "
                        "line)")
    seqs = [codec.vocab.encode(codec.tokenizer.tokenize(line)) for line in lines]
    return LMText(source, None, seqs, sum(len(line) + 1 for line in lines))


# ---------------------------------------------------------------------------------------------
# The model


def detach_state(state: State | None) -> State | None:
    return map_state(state, Tensor.detach)


def move_state(state: State | None, device) -> State | None:
    return map_state(state, lambda s: s.to(device))


@dataclass
class LMMemory:
    """What `encode` read of the context (the prime), for B rows of the search batch.

    hidden: the state after the context's tokens but the last, (L, B, H) [or (h, c)]
    last:   (B,) the context's last token, the input of the first step
    mask:   (B, S) bool, True at the context's real tokens"""

    hidden: State
    last: Tensor
    mask: Tensor

    def index_select(self, index: Tensor) -> LMMemory:
        return LMMemory(_select(self.hidden, index, 1), self.last.index_select(0, index),
                        self.mask.index_select(0, index))


@dataclass
class LMState:
    hidden: State  # (L, B, H) [or (h, c)]

    def index_select(self, index: Tensor) -> LMState:
        return LMState(_select(self.hidden, index, 1))


class RNNLanguageModel(nn.Module):
    """A recurrent language model (Mikolov et al. 2010; Zaremba et al. 2014):

        e_t = dropout(E[x_t])                         E (V, E) embeddings
        h_t = RNN(e_t, h_{t-1})                       L stacked layers, dropout between them
        z_t = W dropout(h_t^L) + b                    W (V, H), tied to E when asked
        p(x_{t+1} | x_<=t) = softmax(z_t)

    `forward(ids (B, T), targets (B, T) or None, state or None)` -> logits (B, T, V), the
    cross-entropy summed over the targets that are not PAD (None without targets), and the
    final state, h (L, B, H) [or (h, c)], which a next call may continue from (truncated
    BPTT). Padding must come after a row's real tokens (the model reads left to right, so a
    padded step changes nothing before it).

    It also keeps the decoder protocol of `seqlab.search`, so that `greedy_search` and
    `sample` continue a context: `encode(src, src_lengths)` reads the context (src: the
    context's ids, padded) except its last token; the search's first input, SOS, then stands
    for that last token (see `step`).
    """

    def __init__(self, vocab_size: int, *, embedding_size: int, hidden_size: int, cell: str,
                 num_layers: int = 1, dropout: float = 0.0, backend: str = "auto",
                 reset_after: bool = True, tie_embeddings: bool = False):
        super().__init__()
        if tie_embeddings and embedding_size != hidden_size:
            raise ValueError(f"tied embeddings need embedding_size == hidden_size, got "
                             f"{embedding_size} and {hidden_size}")
        self.embed = nn.Embedding(vocab_size, embedding_size, padding_idx=PAD)
        self.dropout = Dropout(dropout)
        self.rnn = Recurrent(cell, embedding_size, hidden_size, num_layers=num_layers,
                             dropout=dropout, backend=backend, reset_after=reset_after)
        self.out = nn.Linear(hidden_size, vocab_size)
        if tie_embeddings:
            self.out.weight = self.embed.weight

    def zero_state(self, batch: int, device) -> State:
        """The initial state h_0 = 0 (and c_0 = 0), (L, B, H)."""
        h = torch.zeros(self.rnn.num_layers, batch, self.rnn.hidden_size, device=device)
        return (h, torch.zeros_like(h)) if self.rnn.cell == "lstm" else h

    def forward(self, ids: Tensor, targets: Tensor | None = None, state: State | None = None,
                *, label_smoothing: float = 0.0) -> tuple[Tensor, Tensor | None, State]:
        """ids (B, T) -> logits (B, T, V), summed loss over non-PAD targets or None, state."""
        outputs, final = self.rnn(self.dropout(self.embed(ids)), None, state)  # (B, T, H)
        logits = self.out(self.dropout(outputs))  # (B, T, V)
        if targets is None:
            return logits, None, final
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1),
                               ignore_index=PAD, reduction="sum", label_smoothing=label_smoothing)
        return logits, loss, final

    # ------------------------------------------------------------------ search protocol
    def encode(self, src: Tensor, src_lengths: Tensor) -> LMMemory:
        """Read the context src (B, S) (real lengths src_lengths (B,) >= 1) except its last
        token: -> LMMemory (the state after x_1 .. x_{n-1}, the last token x_n, the mask)."""
        B, S = src.shape
        last = src.gather(1, (src_lengths - 1)[:, None]).squeeze(1)  # (B,)
        before = src_lengths - 1  # (B,) tokens read here
        hidden = self.zero_state(B, src.device)
        if S > 1 and bool((before > 0).any()):
            x = self.dropout(self.embed(src[:, :-1]))  # (B, S-1, E)
            _, read = self.rnn(x, before.clamp(min=1), None)
            keep = (before > 0)[None, :, None]  # a one-token context reads nothing: h_0 = 0
            hidden = (tuple(torch.where(keep, r, z) for r, z in zip(read, hidden, strict=True))
                      if isinstance(read, tuple) else torch.where(keep, read, hidden))
        return LMMemory(hidden, last, src != PAD)

    def init_state(self, memory: LMMemory) -> LMState:
        return LMState(memory.hidden)

    def step(self, prev: Tensor, state: LMState, memory: LMMemory):
        """prev (B,) -> logits (B, V) of the next token, new state, None (no attention).

        The search feeds SOS first: it stands for the context's last token, memory.last,
        which `encode` left unread. SOS is never generated (the searches forbid it), so this
        happens at the first step only. (In lines mode the context starts with a real SOS;
        for an empty prime memory.last is that SOS itself.)"""
        prev = torch.where(prev == SOS, memory.last, prev)
        out, hidden = self.rnn.step(self.dropout(self.embed(prev)), state.hidden)  # (B, H)
        return self.out(self.dropout(out)), LMState(hidden), None


def build_lm(cfg: ModelConfig, vocab_size: int) -> RNNLanguageModel:
    """The language model of a model config (encoder_layers = its layers)."""
    return RNNLanguageModel(vocab_size, embedding_size=cfg.embedding_size,
                            hidden_size=cfg.hidden_size, cell=cfg.cell,
                            num_layers=cfg.encoder_layers, dropout=cfg.dropout,
                            backend=cfg.backend, reset_after=cfg.gru_reset_after,
                            tie_embeddings=cfg.tie_embeddings)


# ---------------------------------------------------------------------------------------------
# Batches


@dataclass
class LMBatch:
    """inputs, targets (B, T) long (targets = inputs shifted by one; PAD after a row's end);
    reset: start from a zero state (stream: the first chunk of an epoch; lines: always)."""

    inputs: Tensor
    targets: Tensor
    reset: bool

    @property
    def count(self) -> int:
        """Real target tokens (what the loss is averaged over)."""
        return int((self.targets != PAD).sum())

    def to(self, device) -> LMBatch:
        return LMBatch(self.inputs.to(device), self.targets.to(device), self.reset)


def _pad(rows: list[list[int]]) -> Tensor:
    longest = max(len(r) for r in rows)
    return torch.tensor([r + [PAD] * (longest - len(r)) for r in rows], dtype=torch.long)


def lines_batch(seqs: Sequence[list[int]]) -> LMBatch:
    """Lines mode: inputs <sos> + line, targets line + <eos>, padded."""
    return LMBatch(_pad([[SOS] + s for s in seqs]), _pad([s + [EOS] for s in seqs]), True)


def stream_layout(n_ids: int, rows: int, bptt: int, seed: int, epoch: int) -> tuple[int, int]:
    """Stream mode, one epoch: (offset o, row length n) of `rows` rows over n_ids ids (see the
    module docstring). o is drawn from (seed, epoch) in [0, min(bptt, N - rows)).
    A text with fewer than rows + 1 ids is a ValueError."""
    span = n_ids - 1  # tokens that can be predicted
    if span < rows:
        raise ValueError(f"{n_ids} tokens cannot fill {rows} rows")
    offset = random.Random(f"lm-offset:{seed}:{epoch}").randrange(min(bptt, span - rows + 1))
    return offset, (span - offset) // rows


# ---------------------------------------------------------------------------------------------
# Scoring a whole text


@torch.no_grad()
def score_stream(model: RNNLanguageModel, ids: Tensor, chunk: int,
                 rows: int = VALID_ROWS) -> tuple[float, int]:
    """Total nats and count of the N - 1 predictions x_1 .. x_{N-1} of ids (N,), each made
    once: the ids are cut into min(rows, N - 1) contiguous rows of near-equal length (row r
    predicts x[a_r + 1 .. a_{r+1}], a_r = floor((N - 1) r / rows)), every row read left to
    right in chunks of `chunk` with the state carried, so each token sees its whole row
    before it. The model's mode is the caller's (eval for a validation)."""
    device = next(model.parameters()).device
    span = len(ids) - 1
    rows = min(rows, span)
    if rows < 1:
        return 0.0, 0
    bounds = [span * r // rows for r in range(rows + 1)]
    longest = max(b - a for a, b in zip(bounds, bounds[1:], strict=False))
    inputs = torch.full((rows, longest), PAD, dtype=ids.dtype)
    targets = torch.full((rows, longest), PAD, dtype=ids.dtype)
    for r, (a, b) in enumerate(zip(bounds, bounds[1:], strict=False)):
        inputs[r, : b - a], targets[r, : b - a] = ids[a:b], ids[a + 1 : b + 1]
    total, count, state = 0.0, 0, None
    for start in range(0, longest, chunk):
        x = inputs[:, start : start + chunk].long().to(device)
        y = targets[:, start : start + chunk].long().to(device)
        _, loss, state = model(x, y, state)
        total += loss.item()
        count += int((y != PAD).sum())
    return total, count


@torch.no_grad()
def score_lines(model: RNNLanguageModel, seqs: Sequence[list[int]],
                batch_tokens: int) -> tuple[float, int]:
    """Total nats and count of every line's tokens and its <eos>, from <sos>."""
    device = next(model.parameters()).device
    sampler = TokenBatchSampler([len(s) + 1 for s in seqs], None, batch_tokens, shuffle=False)
    total, count = 0.0, 0
    for indices in sampler:
        batch = lines_batch([seqs[i] for i in indices]).to(device)
        _, loss, _ = model(batch.inputs, batch.targets)
        total += loss.item()
        count += batch.count
    return total, count


def lm_metrics(nats: float, tokens: int, chars: int) -> dict:
    """loss (nats per token), nats and bits per character, perplexity exp(loss)."""
    loss = nats / max(tokens, 1)
    per_char = nats / max(chars, 1)
    return {"loss": loss, "nats_per_char": per_char, "bpc": per_char / math.log(2),
            "ppl": math.exp(loss) if loss < 700 else math.inf, "tokens": tokens,
            "chars": chars}


def score_text(model: RNNLanguageModel, data: LMText, config: Config) -> dict:
    """`lm_metrics` of a whole split, every token predicted once."""
    if data.ids is not None:
        nats, count = score_stream(model, data.ids, config.lm.bptt)
    else:
        nats, count = score_lines(model, data.seqs, config.train.batch_tokens)
    return lm_metrics(nats, count, data.chars)


# ---------------------------------------------------------------------------------------------
# The problem


class LMProblem:
    unit = "tokens"

    def __init__(self, config: Config):
        self.config = config
        self.codec: LMCodec | None = None
        self.splits: dict[str, LMText | None] = {}
        self.raw: dict[str, str | None] = {}  # the texts as read
        self.carry: State | None = None  # stream: the state handed from batch to batch

    # ------------------------------------------------------------------ data and model
    def _read(self) -> dict[str, tuple[str, str] | None]:
        """split -> (text, source) from files or a generated dataset."""
        d = self.config.data
        if d.synthetic is not None:
            from seqlab.synthetic import make_dataset

            def made(split: str, n: int) -> tuple[str, str]:
                lines = make_dataset(d.synthetic, n, seed=self.config.train.seed, split=split)
                return "\n".join(lines), f"generated {d.synthetic} ({split})"

            return {"train": made("train", d.synthetic_train_size),
                    "valid": made("valid", d.synthetic_eval_size),
                    "test": made("test", d.synthetic_eval_size)}
        out = {}
        for split in ("train", "valid", "test"):
            name = getattr(d, split)
            out[split] = None if name is None else (read_text(d.path(name)), d.path(name))
        return out

    def prepare(self, state: dict | None = None) -> str:
        config, t0, mode = self.config, time.time(), self.config.lm.mode
        texts = self._read()
        train_text, source = texts["train"]
        self.codec = codec = LMCodec.from_state_dict(state) if state else build_codec(config,
                                                                                      train_text)
        self.raw = {split: None if t is None else t[0] for split, t in texts.items()}
        self.splits = {split: None if t is None else encode_text(codec, mode, t[0], t[1])
                       for split, t in texts.items()}
        train = self.splits["train"]
        if mode == "stream":
            rows = self._rows()
            if train.tokens < rows:
                raise DataError(f"{source}: {train.tokens + 1} tokens are too few for {rows} "
                                f"rows (train.batch_tokens // lm.bptt); lower "
                                "train.batch_tokens or raise lm.bptt")
            shape = f"stream, {rows} rows x bptt {config.lm.bptt}"
            size = f"{train.tokens + 1:,} training tokens"
        else:
            limit = config.data.max_src_len  # a line is one sequence: BPTT runs through it all
            kept = [seq for seq in train.seqs if len(seq) <= limit]
            if not kept:
                raise DataError(f"{source}: no training line is within data.max_src_len="
                                f"{limit} tokens")
            dropped = len(train.seqs) - len(kept)
            self.splits["train"] = train = replace(train, seqs=kept)
            shape = "lines"
            size = (f"{len(kept):,} training lines ({train.tokens:,} tokens; {dropped} over "
                    f"data.max_src_len={limit})")
        return (f"data: {size} from {source} ({shape}); vocabulary {len(codec.vocab)} "
                f"({config.tokenizer.kind}) [{time.time() - t0:.1f}s]")

    def _rows(self) -> int:
        return max(1, self.config.train.batch_tokens // self.config.lm.bptt)

    def build_model(self) -> RNNLanguageModel:
        return build_lm(self.config.model, len(self.codec.vocab))

    def describe_model(self, model) -> str:
        m, lm = self.config.model, self.config.lm
        tied = ", tied embeddings" if m.tie_embeddings else ""
        how = f"stream, bptt {lm.bptt}" if lm.mode == "stream" else "lines"
        return (f"{m.cell} language model, {m.encoder_layers} layer(s) ({how}){tied}, "
                f"recurrent backend {model.rnn.backend}")

    def state_dict(self) -> dict:
        return self.codec.state_dict()

    def train_state(self) -> dict:
        """The carried state (detached, on the CPU): a resumed run continues exactly."""
        carry = self.carry
        if carry is None:
            return {"carry": None}
        parts = carry if isinstance(carry, tuple) else (carry,)
        return {"carry": [p.detach().cpu() for p in parts]}

    def load_train_state(self, state: dict) -> None:
        parts = state.get("carry")
        self.carry = None if parts is None else (tuple(parts) if len(parts) == 2 else parts[0])

    # ------------------------------------------------------------------ training
    def batches(self, epoch: int, rank: int, world: int) -> list:
        """Stream: keys (epoch, rank, world, j) of the epoch's chunks j; lines: lists of line
        indices from a TokenBatchSampler (similar lengths together, shuffled)."""
        tc, train = self.config.train, self.splits["train"]
        if train.ids is not None:
            rows = world * self._rows()
            try:
                _, n = stream_layout(len(train.ids), rows, self.config.lm.bptt, tc.seed, epoch)
            except ValueError:
                raise DataError(f"{train.source}: {len(train.ids)} tokens are too few for "
                                f"{rows} rows ({world} processes x train.batch_tokens // "
                                "lm.bptt)") from None
            return [(epoch, rank, world, j) for j in range(math.ceil(n / self.config.lm.bptt))]
        sampler = TokenBatchSampler([len(s) + 1 for s in train.seqs], None, tc.batch_tokens,
                                    shuffle=True, seed=tc.seed, rank=rank, world_size=world)
        sampler.set_epoch(epoch)
        return list(sampler)

    def batch(self, key) -> LMBatch:
        train = self.splits["train"]
        if train.ids is None:
            return lines_batch([train.seqs[i] for i in key])
        epoch, rank, world, j = key
        R, bptt = self._rows(), self.config.lm.bptt
        offset, n = stream_layout(len(train.ids), world * R, bptt, self.config.train.seed, epoch)
        start = offset + (rank * R + torch.arange(R)) * n + j * bptt  # (R,) first input
        width = min(bptt, n - j * bptt)
        chunk = train.ids[start[:, None] + torch.arange(width + 1)].long()  # (R, width + 1)
        return LMBatch(chunk[:, :-1], chunk[:, 1:], reset=j == 0)

    def loss(self, model, batch: LMBatch, step: int) -> tuple[Tensor, int]:
        state = None if batch.reset else move_state(self.carry, batch.inputs.device)
        _, summed, final = model(batch.inputs, batch.targets, state,
                                 label_smoothing=self.config.train.label_smoothing)
        if self.config.lm.mode == "stream":
            self.carry = detach_state(final)  # the gradient stops at the chunk boundary
        return summed, batch.count

    def log_fields(self, step: int) -> dict:
        return {}

    # ------------------------------------------------------------------ evaluation
    def validate(self, model) -> dict:
        """The whole validation text, every token predicted once (see `score_stream`), and
        train.valid_samples greedy continuations of primes from it."""
        valid = self.splits.get("valid")
        if valid is None:
            return {}
        was_training = model.training
        model.eval()
        try:
            metrics = score_text(model, valid, self.config)
            n = self.config.train.valid_samples
            if n:
                generator = Generator(model, self.codec, self.config,
                                      next(model.parameters()).device)
                metrics["samples"] = [(prime, generator.generate(prime, SAMPLE_TOKENS,
                                                                 greedy=True))
                                      for prime in self._primes(n)]
        finally:
            model.train(was_training)
        return metrics

    def _primes(self, n: int) -> list[str]:
        """The first half (at most 20 tokens) of the first n validation lines whose tokens are
        all in the vocabulary."""
        tok, vocab, primes = self.codec.tokenizer, self.codec.vocab, []
        for line in text_lines(self.raw["valid"]):
            tokens = tok.tokenize(line)
            tokens = tokens[: max(1, min(20, len(tokens) // 2))]
            if tokens and all(t in vocab and t not in SPECIALS for t in tokens):
                primes.append(tok.detokenize(tokens))
                if len(primes) == n:
                    break
        return primes

    def describe(self, metrics: dict) -> list[str]:
        lines = [f"loss {metrics['loss']:.3f} nats/token, {metrics['bpc']:.2f} bits/char, "
                 f"ppl {metrics['ppl']:.2f}"]
        for prime, continuation in metrics.get("samples", []):
            lines.append(f"    {prime!r} -> {continuation!r}")
        return lines

    def report(self, run_dir: Path, device, say) -> dict:
        """The best checkpoint on the whole valid and test texts."""
        generator = Generator.from_checkpoint(run_dir, device=str(device))
        report: dict = {}
        for name in ("valid", "test"):
            split = self.splits.get(name)
            if split is None:
                continue
            metrics = score_text(generator.model, split, generator.config)
            report[name] = metrics
            say(f"{name} ({split.source}): loss {metrics['loss']:.4f} nats/token, "
                f"{metrics['bpc']:.3f} bits/char, ppl {metrics['ppl']:.3f} "
                f"({metrics['tokens']:,} tokens)")
        return report


# ---------------------------------------------------------------------------------------------
# Prediction


class Generator:
    """Continue a text with a trained language model, or score a text.

        generator = Generator.from_checkpoint("runs/alphabet")   # a run directory or a .pt
        generator.generate("abc", 20, greedy=True)                # -> "defghijk\\nqrstu..."
        generator.evaluate_text(open("valid.txt").read())         # -> {"bpc": ..., ...}
    """

    def __init__(self, model: RNNLanguageModel, codec: LMCodec, config: Config,
                 device: torch.device | str = "cpu"):
        self.model = model.to(device).eval()
        self.codec = codec
        self.config = config
        self.device = torch.device(device)

    @classmethod
    def from_checkpoint(cls, path: Checkpointed, device: str = "auto") -> Generator:
        """A run directory (its best.pt) or a checkpoint file, ready on `device`; any problem
        (no such device, a damaged file, a checkpoint of another problem, weights that its
        config does not describe) is one ConfigError / CheckpointError line."""
        target, where, config, codec, weights = open_for_prediction(
            path, device, "lm", LMCodec.from_state_dict,
            "its tokenizer and vocabulary are damaged")
        model = build_lm(config.model, len(codec.vocab))
        m = config.model
        load_weights(model, weights, where, f"model.cell {m.cell}, embedding_size "
                     f"{m.embedding_size}, hidden_size {m.hidden_size}, layers "
                     f"{m.encoder_layers}")
        return cls(model, codec, config, target)

    def _context(self, prime: str) -> list[int]:
        """The prime's ids (stream: an empty prime is "\\n"; lines: <sos> first). Tokens the
        vocabulary lacks are a DataError that names them."""
        stream = self.config.lm.mode == "stream"
        tokens = self.codec.stream_tokens(prime or "\n") if stream else \
            self.codec.tokenizer.tokenize(prime)
        vocab = self.codec.vocab
        unknown = sorted({t for t in tokens if t not in vocab or t in SPECIALS})
        if unknown:
            what = "characters" if self.config.tokenizer.kind == "char" else "tokens"
            raise DataError(f"prime: {what} the model never saw in training: "
                            f"{', '.join(repr(t) for t in unknown)}")
        if stream and not tokens:
            raise DataError("prime: no tokens to start from; give a prime")
        return ([] if stream else [SOS]) + vocab.encode(tokens)

    def generate(self, prime: str = "", length: int = 500, *, temperature: float = 1.0,
                 top_k: int = 0, top_p: float = 1.0, seed: int | None = None,
                 greedy: bool = False) -> str:
        """The continuation of `prime` (without the prime), at most `length` tokens.

        The prime warms the state first. Stream mode writes exactly `length` tokens (EOS is
        forbidden; an empty prime means "\\n"); lines mode starts after <sos> + prime and stops
        at <eos> or `length`. Greedy (argmax) or sampled with temperature, top_k, top_p and
        `seed` (see `seqlab.search.sample`; the same seed gives the same text). <unk> is never
        written (the tokens below tokenizer.min_freq read as <unk> in training, so the model
        gives it probability; it is banned, the other tokens not renormalised)."""
        if length < 0:
            raise ConfigError(f"length must be >= 0, got {length}")
        if not greedy and (temperature <= 0 or top_k < 0 or not 0 <= top_p <= 1):
            raise ConfigError(f"sampling needs temperature > 0, top_k >= 0 and 0 <= top_p <= 1, "
                              f"got {temperature:g}, {top_k} and {top_p:g}")
        ids = self._context(prime)
        if length == 0:
            return ""
        src = torch.tensor([ids], device=self.device)
        lengths = torch.tensor([len(ids)], device=self.device)
        limits = dict(max_len_a=0.0, max_len_b=length, max_len=length,
                      min_len=length if self.config.lm.mode == "stream" else 0,
                      banned=[UNK])  # a rare token's stand-in is not text to write
        if greedy:
            hyps = greedy_search(self.model, src, lengths, **limits)
        else:
            hyps = sample(self.model, src, lengths, temperature=temperature, top_k=top_k,
                          top_p=top_p, seed=seed, **limits)
        return self.codec.decode(hyps[0][0].tokens)

    def evaluate_text(self, text: str) -> dict:
        """The metrics of a validation (`lm_metrics`) for any text: loss (nats per token),
        nats_per_char, bpc, ppl, tokens, chars."""
        data = encode_text(self.codec, self.config.lm.mode, text, "text")
        return score_text(self.model, data, self.config)
