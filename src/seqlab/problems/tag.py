"""Aligned many-to-many: sequence tagging (Korean word-spacing restoration, POS, NER).

    x_1..S  --embed-->  e_1..S  --Recurrent (any cell, bidirectional, layers)-->  h_1..S
    emission scores  s_i = W dropout(h_i) + b          (S, C): one row per input position
    softmax (tag.crf false):  p(y_i | x) = softmax(s_i),  loss = -sum_i log p(y_i | x)
    CRF (tag.crf true):       p(y | x) = exp(score(x, y)) / Z(x), loss = -log p(y | x),
        score(x, y) = start[y_1] + sum_i s_i[y_i] + sum_{i>1} T[y_{i-1}, y_i] + end[y_S]
        decoded with Viterbi (the best whole sequence, not the best label at each position)

The count of a batch is its number of positions (characters or tokens), for both outputs.

Schemes (tag.scheme):
    spacing  data.format text (or data.synthetic: spacing), one spaced sentence per line.
             The input is the line's characters with every whitespace removed; the label of a
             character is "1" if a space followed it in the line, else "0". The tokenizer is
             the char tokenizer. Predicting inserts a space after every "1".
    tokens   data.format parallel or tsv: whitespace-separated tokens on the source side and
             as many whitespace-separated tags on the target side.

Metrics, over all positions of a split: accuracy; precision / recall / F1 of the labels other
than the background label (spacing: "1", the boundaries; tokens: every label but the most
frequent training label, such as "O"), micro-averaged over positions; exact_match, the share of
sequences with every position right; loss, the mean per position.
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from seqlab.checkpoint import Checkpointed
from seqlab.config import Config, ModelConfig
from seqlab.data import DataError, _pad, epoch_batches, read_text, text_lines
from seqlab.dropout import Dropout
from seqlab.recurrent import Recurrent
from seqlab.tokenizers import Tokenizer, build_tokenizer, tokenizer_from_state_dict
from seqlab.vocab import PAD, UNK, Vocab

IGNORE = -100  # the label of a padding position: no loss, no metric


# ---------------------------------------------------------------------------------- the CRF
class LinearChainCRF(nn.Module):
    """A linear-chain CRF over C labels on top of emission scores e (B, S, C):

        score(y) = start[y_1] + sum_i e_i[y_i] + sum_{i=2..n} T[y_{i-1}, y_i] + end[y_n]
        log Z    = log sum_y exp score(y)      (the forward algorithm, O(n C^2))
        -log p(y | x) = log Z - score(y)

    `mask` (B, S) is True on the real positions, which come first in every row (n >= 1)."""

    def __init__(self, num_labels: int):
        super().__init__()
        self.start = nn.Parameter(torch.zeros(num_labels))
        self.end = nn.Parameter(torch.zeros(num_labels))
        self.transitions = nn.Parameter(torch.zeros(num_labels, num_labels))  # T[from, to]

    def score(self, emissions: Tensor, labels: Tensor, mask: Tensor) -> Tensor:
        """score(x, y) of the given label sequences -> (B,)."""
        labels = labels.masked_fill(~mask, 0)
        e = emissions.gather(2, labels.unsqueeze(-1)).squeeze(-1)  # (B, S)
        total = self.start[labels[:, 0]] + (e * mask).sum(1)
        steps = self.transitions[labels[:, :-1], labels[:, 1:]] * mask[:, 1:]  # (B, S-1)
        last = labels.gather(1, (mask.sum(1, keepdim=True) - 1)).squeeze(1)
        return total + steps.sum(1) + self.end[last]

    def log_partition(self, emissions: Tensor, mask: Tensor) -> Tensor:
        """log Z(x) -> (B,): alpha_i[k] = log sum over paths ending in k at position i."""
        alpha = self.start + emissions[:, 0]  # (B, C)
        for i in range(1, emissions.size(1)):
            step = torch.logsumexp(alpha.unsqueeze(2) + self.transitions, dim=1) + emissions[:, i]
            alpha = torch.where(mask[:, i : i + 1], step, alpha)
        return torch.logsumexp(alpha + self.end, dim=1)

    def nll(self, emissions: Tensor, labels: Tensor, mask: Tensor) -> Tensor:
        """-log p(y | x) -> (B,)."""
        return self.log_partition(emissions, mask) - self.score(emissions, labels, mask)

    def marginals(self, emissions: Tensor, mask: Tensor) -> Tensor:
        """p(y_i = k | x) -> (B, S, C), as d log Z / d e_ik (forward-backward by autograd)."""
        with torch.enable_grad():
            e = emissions.detach().to(self.transitions.dtype).requires_grad_(True)
            (grad,) = torch.autograd.grad(self.log_partition(e, mask).sum(), e)
        return grad

    def viterbi(self, emissions: Tensor, mask: Tensor) -> Tensor:
        """The highest-scoring label sequence of each row -> (B, S) (0 on padding)."""
        B, S, _ = emissions.shape
        best = self.start + emissions[:, 0]  # (B, C)
        pointers = []
        for i in range(1, S):
            scores, back = (best.unsqueeze(2) + self.transitions).max(dim=1)  # (B, C)
            step = scores + emissions[:, i]
            keep = mask[:, i : i + 1]
            best = torch.where(keep, step, best)
            # on padding, point every label to itself so the backtrace passes through unchanged
            same = torch.arange(best.size(1), device=best.device).expand_as(back)
            pointers.append(torch.where(keep, back, same))
        label = (best + self.end).argmax(1)  # (B,)
        path = [label]
        for back in reversed(pointers):
            label = back.gather(1, label.unsqueeze(1)).squeeze(1)
            path.append(label)
        out = torch.stack(path[::-1], dim=1)  # (B, S)
        return out.masked_fill(~mask, 0)


# ---------------------------------------------------------------------------------- the model
class RNNTagger(nn.Module):
    """embed -> Recurrent -> dropout -> linear (-> CRF): src (B, S) -> emissions (B, S, C)."""

    def __init__(self, *, vocab_size: int, num_labels: int, embedding_size: int,
                 hidden_size: int, cell: str, num_layers: int, bidirectional: bool,
                 dropout: float, crf: bool, backend: str = "auto", reset_after: bool = True):
        super().__init__()
        directions = 2 if bidirectional else 1
        self.embed = nn.Embedding(vocab_size, embedding_size, padding_idx=PAD)
        self.dropout = Dropout(dropout)
        self.rnn = Recurrent(cell, embedding_size, hidden_size // directions,
                             num_layers=num_layers, bidirectional=bidirectional,
                             dropout=dropout, backend=backend, reset_after=reset_after)
        self.out = nn.Linear(hidden_size // directions * directions, num_labels)
        self.crf = LinearChainCRF(num_labels) if crf else None

    def emissions(self, src: Tensor, src_lengths: Tensor) -> Tensor:
        states, _ = self.rnn(self.dropout(self.embed(src)), src_lengths)  # (B, S, M)
        return self.out(self.dropout(states))  # (B, S, C)

    def forward(self, src: Tensor, src_lengths: Tensor,
                labels: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """src (B, S) padded with PAD, src_lengths (B,), labels (B, S) with IGNORE on padding
        -> emissions (B, S, C), the loss summed over the batch (None without labels)."""
        e = self.emissions(src, src_lengths)
        return e, None if labels is None else self.loss(e, labels, src != PAD)

    def loss(self, emissions: Tensor, labels: Tensor, mask: Tensor) -> Tensor:
        """The loss of emissions (B, S, C) against labels (B, S), summed over the batch."""
        if self.crf is None:
            return F.cross_entropy(emissions.flatten(0, 1).float(), labels.flatten(),
                                   ignore_index=IGNORE, reduction="sum")
        return self.crf.nll(emissions.float(), labels, mask).sum()

    def decode(self, src: Tensor, src_lengths: Tensor) -> tuple[Tensor, Tensor]:
        """-> the predicted labels (B, S) and each position's label probabilities (B, S, C)."""
        return self.decode_emissions(self.emissions(src, src_lengths), src != PAD)

    def decode_emissions(self, emissions: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """softmax: the argmax of each position; CRF: Viterbi, with the CRF's marginals."""
        e = emissions.float()
        if self.crf is None:
            probs = e.softmax(-1)
            return probs.argmax(-1), probs
        return self.crf.viterbi(e, mask), self.crf.marginals(e, mask)


def build_tagger(cfg: ModelConfig, vocab_size: int, num_labels: int, crf: bool) -> RNNTagger:
    return RNNTagger(vocab_size=vocab_size, num_labels=num_labels,
                     embedding_size=cfg.embedding_size, hidden_size=cfg.hidden_size,
                     cell=cfg.cell, num_layers=cfg.encoder_layers,
                     bidirectional=cfg.bidirectional, dropout=cfg.dropout, crf=crf,
                     backend=cfg.backend, reset_after=cfg.gru_reset_after)


# ---------------------------------------------------------------------------------- the data
@dataclass
class Tagged:
    """Sequences of tokens with one label each; `source` names where they came from."""

    tokens: list[list[str]]
    labels: list[list[str]]
    source: str

    def __len__(self) -> int:
        return len(self.tokens)


def spacing_example(line: str) -> tuple[list[str], list[str]]:
    """A spaced line -> (its characters without whitespace, "1" where a space followed).

    >>> spacing_example("나는 학교에 간다")
    (['나', '는', '학', '교', '에', '간', '다'], ['0', '1', '0', '0', '1', '0', '0'])
    """
    chars, labels = [], []
    for c in line:
        if c.isspace():
            if labels:
                labels[-1] = "1"
        else:
            chars.append(c)
            labels.append("0")
    if labels:
        labels[-1] = "0"  # nothing follows the last character
    return chars, labels


def apply_spacing(chars: Sequence[str], labels: Sequence[str]) -> str:
    """Characters and their labels -> the text with a space after every "1"."""
    return "".join(c + (" " if label == "1" and i < len(chars) - 1 else "")
                   for i, (c, label) in enumerate(zip(chars, labels, strict=True)))


def spacing_lines(lines: Sequence[str], source: str) -> Tagged:
    pairs = [spacing_example(line) for line in lines if line.strip()]
    return Tagged([p[0] for p in pairs], [p[1] for p in pairs], source)


def read_spacing(path: str) -> Tagged:
    """A text file of spaced sentences, one per line (blank lines skipped)."""
    return spacing_lines(text_lines(read_text(path)), path)


def token_tag_pairs(src: Sequence[str], tgt: Sequence[str], source: str,
                    lines: Sequence[int] = ()) -> Tagged:
    """Token lines and tag lines -> Tagged; a pair whose counts differ is a DataError that
    names its line (`lines`: each pair's line number, where known)."""
    tokens, labels = [], []
    for n, (x, y) in enumerate(zip(src, tgt, strict=True)):
        xs, ys = x.split(), y.split()
        if len(xs) != len(ys):
            where = f"{source}:{lines[n]}" if lines else f"{source}: pair {n + 1}"
            raise DataError(f"{where}: {len(xs)} tokens but {len(ys)} tags "
                            "(tag.scheme tokens needs one tag per token)")
        tokens.append(xs)
        labels.append(ys)
    return Tagged(tokens, labels, source)


def read_tagged(config: Config, path: str) -> Tagged:
    """Evaluation data for a trained tagger, read as its training data was (path as given)."""
    from seqlab.prepare import read_labelled

    if config.tag.scheme == "spacing":
        return read_spacing(path)
    pairs = read_labelled(config.data, path)
    return token_tag_pairs(pairs.src, pairs.tgt, pairs.source, pairs.lines)


def read_tag_splits(config: Config) -> dict[str, Tagged | None]:
    """train / valid / test (None where not configured) from files or a generated dataset."""
    d = config.data
    if d.synthetic is not None:
        from seqlab.synthetic import make_dataset

        sizes = {"train": d.synthetic_train_size, "valid": d.synthetic_eval_size,
                 "test": d.synthetic_eval_size}
        return {split: spacing_lines(make_dataset(d.synthetic, n, seed=config.train.seed,
                                                  split=split), f"generated {d.synthetic} "
                                                                f"({split})")
                for split, n in sizes.items()}
    if config.tag.scheme == "spacing":
        return {split: None if getattr(d, split) is None else read_spacing(d.path(getattr(d,
                                                                                   split)))
                for split in ("train", "valid", "test")}
    from seqlab.prepare import read_splits

    splits = read_splits(config)
    return {name: None if pairs is None else token_tag_pairs(pairs.src, pairs.tgt, pairs.source,
                                                             pairs.lines)
            for name, pairs in (("train", splits.train), ("valid", splits.valid),
                                ("test", splits.test))}


@dataclass
class TagCodec:
    """Tokens -> ids, labels <-> indices, and the background label; saved in checkpoints."""

    scheme: str
    tokenizer: Tokenizer  # spacing: char; tokens: word (whitespace)
    vocab: Vocab
    labels: list[str]
    background: str  # the label left out of precision / recall / F1

    def tokens(self, text: str) -> list[str]:
        """A raw input line -> the tokens the model reads (spacing: every whitespace removed)."""
        if self.scheme == "spacing":
            return [c for c in text if not c.isspace()]
        return text.split()

    def encode(self, tokens: Sequence[str]) -> list[int]:
        return self.vocab.encode(tokens)

    def label_ids(self, labels: Sequence[str], source: str) -> list[int]:
        index = {label: i for i, label in enumerate(self.labels)}
        for label in labels:
            if label not in index:
                raise DataError(f"{source}: tag {label!r} was never seen in training "
                                f"(training tags: {', '.join(self.labels)})")
        return [index[label] for label in labels]

    def state_dict(self) -> dict:
        return {"scheme": self.scheme, "tokenizer": self.tokenizer.state_dict(),
                "vocab": self.vocab.state_dict(), "labels": list(self.labels),
                "background": self.background}

    @classmethod
    def from_state_dict(cls, state: dict) -> TagCodec:
        return cls(state["scheme"], tokenizer_from_state_dict(state["tokenizer"]),
                   Vocab.from_state_dict(state["vocab"]), list(state["labels"]),
                   state["background"])


def build_tag_codec(config: Config, train: Tagged) -> TagCodec:
    t, scheme = config.tokenizer, config.tag.scheme
    tokenizer = build_tokenizer("char" if scheme == "spacing" else "word")
    vocab = Vocab.build(train.tokens, min_freq=t.min_freq, max_size=t.max_vocab)
    counts = Counter(label for row in train.labels for label in row)
    if scheme == "spacing":
        labels, background = ["0", "1"], "0"
    else:
        labels = sorted(counts)
        background = max(labels, key=lambda label: (counts[label], label))
    if len(counts) < 2:
        raise DataError(f"{train.source}: a tagger needs at least 2 labels in training, found "
                        f"{len(counts)} ({', '.join(sorted(counts))})")
    return TagCodec(scheme, tokenizer, vocab, labels, background)


@dataclass
class TagBatch:
    """src (B, S) long padded with PAD; src_lengths (B,); labels (B, S) long with IGNORE on
    padding, or None; index (B,) each row's position in the example list."""

    src: Tensor
    src_lengths: Tensor
    labels: Tensor | None
    index: Tensor

    def to(self, device) -> TagBatch:
        return TagBatch(*(None if x is None else x.to(device)
                          for x in dataclasses.astuple(self)))


def collate_tagged(ids: Sequence[list[int]], labels: Sequence[list[int]] | None,
                   indices: Sequence[int]) -> TagBatch:
    rows = [ids[i] for i in indices]
    gold = None
    if labels is not None:
        longest = max(len(r) for r in rows)
        gold = torch.tensor([labels[i] + [IGNORE] * (longest - len(labels[i]))
                             for i in indices])
    return TagBatch(_pad(rows), torch.tensor([len(r) for r in rows]), gold,
                    torch.tensor(list(indices)))


# ---------------------------------------------------------------------------------- metrics
def tag_scores(predicted: Sequence[Sequence[int]], gold: Sequence[Sequence[int]],
               background: int) -> dict:
    """Accuracy, precision / recall / F1 of the non-background labels (micro, by position)
    and the exact-match rate of whole sequences."""
    positions = right = exact = tp = n_pred = n_gold = 0
    for p_row, g_row in zip(predicted, gold, strict=True):
        if len(p_row) != len(g_row):
            raise ValueError(f"a prediction of {len(p_row)} labels for {len(g_row)} positions")
        row_right = 0
        for p, g in zip(p_row, g_row):
            row_right += p == g
            tp += p == g != background
            n_pred += p != background
            n_gold += g != background
        positions += len(g_row)
        right += row_right
        exact += row_right == len(g_row)
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_gold if n_gold else 0.0
    f1 = 2 * tp / (n_pred + n_gold) if n_pred + n_gold else 0.0
    return {"f1": f1, "precision": precision, "recall": recall,
            "accuracy": right / max(positions, 1), "exact_match": exact / max(len(gold), 1),
            "positions": positions, "sequences": len(gold)}


class BigramBaseline:
    """The simple baseline of the spacing table: a space goes between two characters when,
    in training, that character pair was spaced more often than not; an unseen pair takes the
    majority of its first character, and an unseen character gets no space."""

    def __init__(self, train: Tagged):
        pair: Counter = Counter()
        pair_total: Counter = Counter()
        first: Counter = Counter()
        first_total: Counter = Counter()
        for chars, labels in zip(train.tokens, train.labels):
            for i, (c, label) in enumerate(zip(chars, labels)):
                nxt = chars[i + 1] if i + 1 < len(chars) else None
                pair[c, nxt] += label == "1"
                pair_total[c, nxt] += 1
                first[c] += label == "1"
                first_total[c] += 1
        self.pair = {k: 2 * pair[k] > n for k, n in pair_total.items()}
        self.first = {c: 2 * first[c] > n for c, n in first_total.items()}

    def predict(self, chars: Sequence[str]) -> list[str]:
        out = []
        for i, c in enumerate(chars):
            nxt = chars[i + 1] if i + 1 < len(chars) else None
            spaced = self.pair.get((c, nxt), self.first.get(c, False))
            out.append("1" if spaced and nxt is not None else "0")
        return out

    def evaluate(self, data: Tagged) -> dict:
        index = {"0": 0, "1": 1}
        predicted = [[index[x] for x in self.predict(chars)] for chars in data.tokens]
        gold = [[index[x] for x in labels] for labels in data.labels]
        return tag_scores(predicted, gold, background=0)


# ---------------------------------------------------------------------------------- prediction
@dataclass
class TagPrediction:
    tokens: list[str]  # what the model read (spacing: the characters, without whitespace)
    labels: list[str]  # one per token
    probabilities: list[dict[str, float]]  # per token: every label's probability
    text: str  # spacing: the line with the spaces restored; tokens: "token/TAG ..." pairs


class Tagger:
    """A trained tagger: lines in, a label per position out, in the input's order.

        tagger = Tagger.from_checkpoint("runs/spacing")
        tagger.predict(["한남자가기타를치고있다."])[0].text   # -> "한 남자가 기타를 치고 있다."
    """

    def __init__(self, model: RNNTagger, codec: TagCodec, config: Config,
                 device: torch.device | str = "cpu"):
        self.model = model.to(device).eval()
        self.codec, self.config, self.device = codec, config, torch.device(device)

    @classmethod
    def from_checkpoint(cls, path: Checkpointed, device: str = "auto") -> Tagger:
        from seqlab.checkpoint import load_weights, open_for_prediction

        target, where, config, codec, weights = open_for_prediction(
            path, device, "tag", TagCodec.from_state_dict, "its vocabulary and tags are damaged")
        model = build_tagger(config.model, len(codec.vocab), len(codec.labels), config.tag.crf)
        load_weights(model, weights, where)
        return cls(model, codec, config, target)

    def decode(self, tokens: Sequence[Sequence[str]], gold: Sequence[list[int]] | None = None
               ) -> tuple[list[list[int]], list[Tensor], float]:
        """Token lists -> predicted label ids and (n, C) probabilities per list, in order, and
        with `gold` label ids the summed loss against them (else 0), from one forward pass."""
        ids = [self.codec.encode(t) for t in tokens]
        labels: list[list[int]] = [[] for _ in ids]
        probs: list[Tensor] = [torch.empty(0, len(self.codec.labels)) for _ in ids]
        order = [i for i in sorted(range(len(ids)), key=lambda i: len(ids[i])) if ids[i]]
        total, size = 0.0, self.config.search.batch_size
        with torch.no_grad():
            for start in range(0, len(order), size):
                batch = collate_tagged(ids, gold, order[start : start + size]).to(self.device)
                mask = batch.src != PAD
                e = self.model.emissions(batch.src, batch.src_lengths)
                if gold is not None:
                    total += self.model.loss(e, batch.labels, mask).item()
                predicted, p = self.model.decode_emissions(e, mask)
                for row, i in enumerate(batch.index.tolist()):
                    n = len(ids[i])
                    labels[i] = predicted[row, :n].tolist()
                    probs[i] = p[row, :n].cpu()
        return labels, probs, total

    def predict(self, lines: Sequence[str]) -> list[TagPrediction]:
        tokens = [self.codec.tokens(line) for line in lines]
        ids, probs, _ = self.decode(tokens)
        names = self.codec.labels
        out = []
        for toks, row, p in zip(tokens, ids, probs):
            labels = [names[k] for k in row]
            text = (apply_spacing(toks, labels) if self.codec.scheme == "spacing"
                    else " ".join(f"{t}/{label}" for t, label in zip(toks, labels)))
            out.append(TagPrediction(toks, labels, [dict(zip(names, q.tolist())) for q in p],
                                     text))
        return out

    def evaluate(self, data: Tagged) -> dict:
        """Scores against gold labels, and the mean loss per position."""
        gold = [self.codec.label_ids(row, data.source) for row in data.labels]
        predicted, _, loss = self.decode(data.tokens, gold)
        scores = tag_scores(predicted, gold, self.codec.labels.index(self.codec.background))
        scores["loss"] = loss / max(scores["positions"], 1)
        return scores

    def count_unknown(self, lines: Sequence[str]) -> int:
        """How many lines hold a token never seen in training (read as <unk>)."""
        return sum(UNK in self.codec.encode(self.codec.tokens(line)) for line in lines)


# ---------------------------------------------------------------------------------- the problem
class TagProblem:
    unit = "tokens"

    def __init__(self, config: Config):
        self.config = config
        self.splits: dict[str, Tagged | None] = {}
        self.codec: TagCodec | None = None
        self.ids: list[list[int]] = []
        self.labels: list[list[int]] = []

    def prepare(self, state: dict | None = None) -> str:
        config, t0 = self.config, time.time()
        self.splits = splits = read_tag_splits(config)
        train = splits["train"]
        if not len(train):
            raise DataError(f"{train.source}: no training sentences")
        self.codec = codec = (TagCodec.from_state_dict(state) if state
                              else build_tag_codec(config, train))
        for name in ("valid", "test"):  # unknown tags: found before training
            if splits[name] is not None:
                for row in splits[name].labels:
                    codec.label_ids(row, splits[name].source)
        limit, ids, labels = config.data.max_src_len, [], []
        for tokens, row in zip(train.tokens, train.labels):
            if 0 < len(tokens) <= limit:
                ids.append(codec.encode(tokens))
                labels.append(codec.label_ids(row, train.source))
        if not ids:
            raise DataError(f"{train.source}: no training sentence is within "
                            f"data.max_src_len={limit} tokens")
        self.ids, self.labels = ids, labels
        counts = Counter(k for row in labels for k in row)
        return (f"data: {len(ids)} training sequences from {train.source} "
                f"({len(train) - len(ids)} over the length limit), "
                f"{sum(counts.values())} positions; labels "
                + ", ".join(f"{name} ({counts[k]})" for k, name in enumerate(codec.labels))
                + f"; vocabulary {len(codec.vocab)} [{time.time() - t0:.1f}s]")

    def build_model(self) -> RNNTagger:
        return build_tagger(self.config.model, len(self.codec.vocab), len(self.codec.labels),
                            self.config.tag.crf)

    def describe_model(self, model) -> str:
        m = self.config.model
        return (f"{m.cell} {'bi' if m.bidirectional else 'uni'}directional encoder, "
                f"{'CRF' if self.config.tag.crf else 'softmax'} output over "
                f"{len(self.codec.labels)} labels, recurrent backend {model.rnn.backend}")

    def state_dict(self) -> dict:
        return self.codec.state_dict()

    def train_state(self) -> dict:
        return {}

    def load_train_state(self, state: dict) -> None:
        pass

    def batches(self, epoch: int, rank: int, world: int) -> list[list[int]]:
        return epoch_batches([len(x) for x in self.ids], self.config.train, epoch, rank, world)

    def batch(self, key: list[int]) -> TagBatch:
        return collate_tagged(self.ids, self.labels, key)

    def loss(self, model, batch: TagBatch, step: int) -> tuple[Tensor, int]:
        _, summed = model(batch.src, batch.src_lengths, batch.labels)
        return summed, int(batch.src_lengths.sum())

    def log_fields(self, step: int) -> dict:
        return {}

    def _tagger(self, model) -> Tagger:
        return Tagger(model, self.codec, self.config, next(model.parameters()).device)

    def validate(self, model) -> dict:
        valid = self.splits.get("valid")
        if valid is None:
            return {}
        metrics = self._tagger(model).evaluate(valid)
        return {k: metrics[k] for k in ("f1", "precision", "recall", "accuracy", "exact_match",
                                        "loss")}

    def describe(self, metrics: dict) -> list[str]:
        return [f"loss {metrics['loss']:.4f} F1 {100 * metrics['f1']:.2f} (P "
                f"{100 * metrics['precision']:.2f} R {100 * metrics['recall']:.2f}) accuracy "
                f"{100 * metrics['accuracy']:.2f}% exact {100 * metrics['exact_match']:.2f}%"]

    def report(self, run_dir: Path, device, say) -> dict:
        """The best checkpoint on valid and test (and, for spacing, the bigram baseline on the
        same splits), with a picture of the spacing probabilities of a few test sentences."""
        tagger = Tagger.from_checkpoint(run_dir, device=str(device))
        baseline = (BigramBaseline(self.splits["train"]) if self.codec.scheme == "spacing"
                    else None)
        report: dict = {}
        for name in ("valid", "test"):
            split = self.splits.get(name)
            if split is None:
                continue
            metrics = tagger.evaluate(split)
            if baseline is not None:
                metrics["bigram_baseline"] = baseline.evaluate(split)
            report[name] = metrics
            say(f"{name} ({split.source}, {metrics['sequences']} sequences, "
                f"{metrics['positions']} positions): F1 {100 * metrics['f1']:.2f} (P "
                f"{100 * metrics['precision']:.2f} R {100 * metrics['recall']:.2f}) exact "
                f"{100 * metrics['exact_match']:.2f}%"
                + (f"; bigram baseline F1 {100 * metrics['bigram_baseline']['f1']:.2f}"
                   if baseline else ""))
        shown = self.splits.get("test") or self.splits.get("valid")
        if shown is not None and self.codec.scheme == "spacing":
            from seqlab.plots import plot_spacing

            lines = [apply_spacing(t, y) for t, y in zip(shown.tokens[:6], shown.labels[:6])]
            predictions = tagger.predict(lines)
            report["picture"] = str(plot_spacing(
                [p.tokens for p in predictions],
                [[q["1"] for q in p.probabilities] for p in predictions],
                shown.labels[:6], run_dir / "spacing.png", title=shown.source))
        return report
