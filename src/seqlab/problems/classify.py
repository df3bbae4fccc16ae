"""Many-to-one: sequence classification (sentiment, topic, "is this sequence sorted").

    x_1..S  --embed-->  e_1..S  --Recurrent (any cell, bidirectional, layers)-->  h_1..S
    summary  c = pool(h_1..S)                    (classify.pooling, below)
    p(label | x) = softmax(W dropout(c) + b)
    loss = cross-entropy summed over the batch (count = examples)

With classify.lm_weight = w > 0 the encoder also learns to model the text (an auxiliary
bidirectional language model, as ELMo's biLM, with one output layer U shared by both
directions): the forward state after x_1..x_t predicts x_{t+1}, the backward state after
x_n..x_t predicts x_{t-1}, and each example's loss gains

    w * (1 / 2(n - 1)) sum_t [ -log softmax(U dropout(f_t))[x_{t+1}]
                               -log softmax(U dropout(b_t))[x_{t-1}] ]

(n tokens with EOS; the mean over both directions' n - 1 predictions; classify.lm_sample
< 1 estimates it from that fraction of them). Only a one-layer
bidirectional encoder qualifies: above it, the forward direction would see the next token
through the backward states below. Prediction ignores U.

With classify.ngram_buckets = K > 0 a linear classifier over hashed word and character
n-grams (seqlab/ngrams.py: the text's set of gram ids g(x) in 0..K-1) stands beside the
recurrent one, and the two are a product of experts:

    z_ngram = sum_{g in g(x)} E[g]              E (K, C), zero at the start
    loss    = CE(z_rnn, y) + CE(z_ngram, y)     each part trained by its own cross-entropy
    logits  = z_rnn + w * z_ngram               w = ngram_weight: p ~ p_rnn * p_ngram^w

Separate losses keep the parts from leaning on each other in training (a joint softmax
lets the n-gram weights memorise the training texts and starve the network of gradient);
their errors differ, which is what the product gains from. E is trained by Adagrad
(adagrad_groups(): the training loop's second optimizer), the classic for sparse linear
models (Duchi et al. 2011): each weight's step shrinks with its own summed squared
gradients. Adam, which moves every weight by about lr whatever its gradient, did worse on
NSMC (benchmarks/ngram_probe.py).

Pooling over the real (non-padding) positions of the top layer's states h_i (B, S, M):

    final      c = [h_S(forward); h_1(backward)]    the state-space view: the last state
    mean       c = (1 / S) sum_i h_i
    max        c_k = max_i h_ik                     each feature's strongest evidence
    attention  a_i = softmax_i(v^T tanh(W h_i + b)),  c = sum_i a_i h_i
               (a learned query scores every state: Bahdanau's additive attention with one
               fixed query, as in Yang et al. 2016 / Lin et al. 2017 with one head)

Data are (text, label) pairs: parallel files PREFIX.SRC (texts) + PREFIX.TGT (labels), a
TSV (columns by number or, with a header, by name), or a generated dataset. The label set is
the training labels, sorted; a validation or test label outside it is an error. Texts end
with EOS, as seq2seq sources do, so an empty text is still one position long.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from seqlab.checkpoint import Checkpointed
from seqlab.config import ClassifyConfig, Config, ModelConfig
from seqlab.data import DataError, ParallelText, _pad, epoch_batches
from seqlab.dropout import Dropout
from seqlab.ngrams import featurize, pack
from seqlab.recurrent import Recurrent
from seqlab.tokenizers import Tokenizer, build_tokenizer, tokenizer_from_state_dict
from seqlab.vocab import EOS, PAD, UNK, Vocab

POOLINGS = ("final", "mean", "max", "attention")


# ---------------------------------------------------------------------------------- the model
class RNNClassifier(nn.Module):
    """embed -> Recurrent -> pool -> dropout -> linear: src (B, S) -> logits (B, C)."""

    def __init__(self, *, vocab_size: int, num_labels: int, embedding_size: int,
                 hidden_size: int, cell: str, num_layers: int, bidirectional: bool,
                 dropout: float, pooling: str, backend: str = "auto", reset_after: bool = True,
                 lm_weight: float = 0.0, lm_sample: float = 1.0, ngram_buckets: int = 0,
                 ngram_weight: float = 1.0, ngram_lr: float = 0.01):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, not {pooling!r}")
        directions = 2 if bidirectional else 1
        self.pooling = pooling
        self.embed = nn.Embedding(vocab_size, embedding_size, padding_idx=PAD)
        self.dropout = Dropout(dropout)
        self.rnn = Recurrent(cell, embedding_size, hidden_size // directions,
                             num_layers=num_layers, bidirectional=bidirectional,
                             dropout=dropout, backend=backend, reset_after=reset_after)
        size = hidden_size // directions * directions  # M
        if pooling == "attention":
            self.score = nn.Sequential(nn.Linear(size, size), nn.Tanh(),
                                       nn.Linear(size, 1, bias=False))  # v^T tanh(W h + b)
        self.out = nn.Linear(size, num_labels)
        self.lm_weight, self.lm_sample = lm_weight, lm_sample
        if lm_weight:  # U: the auxiliary language model's output layer, both directions
            self.lm_out = nn.Linear(hidden_size // directions, vocab_size)
        self.ngram_weight, self.ngram_lr = ngram_weight, ngram_lr
        self.ngram = None
        if ngram_buckets:  # E: one weight per n-gram bucket and label
            self.ngram = nn.EmbeddingBag(ngram_buckets, num_labels, mode="sum")
            nn.init.zeros_(self.ngram.weight)

    def encode(self, src: Tensor, src_lengths: Tensor):
        """src (B, S) -> the top layer's states (B, S, M) and the final states."""
        return self.rnn(self.dropout(self.embed(src)), src_lengths)

    def summary(self, src: Tensor, src_lengths: Tensor,
                encoded=None) -> tuple[Tensor, Tensor | None]:
        """-> c (B, M), and the attention pooling's weights (B, S) (else None); `encoded`:
        encode()'s answer when the caller has it already."""
        states, final = encoded or self.encode(src, src_lengths)  # (B, S, M)
        mask = src != PAD  # (B, S)
        if self.pooling == "final":
            h = final[0] if isinstance(final, tuple) else final  # (L*D, B, H)
            D = self.rnn.directions
            return h[-D:].transpose(0, 1).reshape(src.size(0), -1), None  # (B, D*H)
        if self.pooling == "mean":
            total = (states * mask.unsqueeze(-1)).sum(1)  # padded outputs are zero anyway
            return total / src_lengths.unsqueeze(-1).to(states.dtype), None
        if self.pooling == "max":
            return states.masked_fill(~mask.unsqueeze(-1), float("-inf")).max(1).values, None
        scores = self.score(states).squeeze(-1).masked_fill(~mask, float("-inf"))  # (B, S)
        weights = scores.softmax(-1)
        return torch.bmm(weights.unsqueeze(1), states).squeeze(1), weights  # (B, M)

    def forward(self, src: Tensor, src_lengths: Tensor, labels: Tensor | None = None, *,
                ngrams: tuple[Tensor, Tensor] | None = None,
                label_smoothing: float = 0.0) -> tuple[Tensor, Tensor | None]:
        """src (B, S) padded with PAD, src_lengths (B,), labels (B,) or None, ngrams: the
        texts' n-gram ids and offsets (ngrams.pack; needed when the model has an n-gram
        part) -> logits (B, C), cross-entropy summed over the batch (None without labels)."""
        encoded = self.encode(src, src_lengths)
        z_rnn, z_ngram = self.part_logits(src, src_lengths, ngrams, encoded)
        logits = z_rnn if z_ngram is None else z_rnn + self.ngram_weight * z_ngram
        if labels is None:
            return logits, None
        loss = F.cross_entropy(z_rnn, labels, label_smoothing=label_smoothing,
                               reduction="sum")
        if z_ngram is not None:
            loss = loss + F.cross_entropy(z_ngram, labels, label_smoothing=label_smoothing,
                                          reduction="sum")
        if self.lm_weight:
            lm = self.lm_loss(encoded[0], src, src_lengths, self.lm_sample)
            loss = loss + self.lm_weight * lm.sum()
        return logits, loss

    def part_logits(self, src: Tensor, src_lengths: Tensor,
                    ngrams: tuple[Tensor, Tensor] | None = None,
                    encoded=None) -> tuple[Tensor, Tensor | None]:
        """Each part's own logits: z_rnn (B, C) and z_ngram (B, C) (None without an n-gram
        part); `encoded`: encode()'s answer when the caller has it already."""
        c, _ = self.summary(src, src_lengths, encoded)
        return self.out(self.dropout(c)), self.ngram_logits(ngrams)

    def ngram_logits(self, ngrams: tuple[Tensor, Tensor] | None) -> Tensor | None:
        """z_ngram (B, C): the sum of the rows of E that the text's n-grams pick (None
        without an n-gram part)."""
        if self.ngram is None:
            return None
        if ngrams is None:
            raise ValueError("this classifier has an n-gram part: pass ngrams=")
        return self.ngram(*ngrams)

    def adagrad_groups(self) -> list[dict]:
        """Parameter groups that the training loop trains by Adagrad (lr fixed, unclipped)
        instead of its optimizer: the n-gram weights E."""
        return [{"params": [self.ngram.weight], "lr": self.ngram_lr}] if self.ngram else []

    def lm_loss(self, states: Tensor, src: Tensor, src_lengths: Tensor,
                sample: float = 1.0) -> Tensor:
        """Each example's auxiliary (bi)LM loss (B,): mean nats per prediction of the forward
        states predicting the next token (and the backward states the previous one).
        sample < 1: only that fraction of the predictions, drawn at random (torch's RNG),
        is made, and their sum is divided by the expected count (an unbiased estimate of
        the mean: the softmax over the vocabulary is the costly part)."""
        H, D = self.lm_out.in_features, self.rnn.directions
        nats = self._token_nats(states[:, :-1, :H], src[:, 1:], sample)  # f_t -> x_{t+1}
        if D == 2:  # b_t -> x_{t-1}, for the real positions t only
            previous = src[:, :-1].masked_fill(src[:, 1:] == PAD, PAD)
            nats = nats + self._token_nats(states[:, 1:, H:], previous, sample)
        return nats.sum(1) / (sample * D * (src_lengths - 1).clamp(min=1).to(nats.dtype))

    def _token_nats(self, states: Tensor, targets: Tensor, sample: float) -> Tensor:
        """-log p(target) per position (B, T); 0 where the target is padding (or, with
        sample < 1, where the position was not drawn)."""
        keep = targets != PAD
        if sample < 1:
            keep &= torch.rand(targets.shape, device=targets.device) < sample
        rows = keep.nonzero(as_tuple=True)
        logits = self.lm_out(self.dropout(states[rows]))  # (N, V), N kept positions
        nats = states.new_zeros(targets.shape)
        nats[rows] = F.cross_entropy(logits, targets[rows], reduction="none").to(nats.dtype)
        return nats


def build_classifier(cfg: ModelConfig, vocab_size: int, num_labels: int,
                     classify: ClassifyConfig) -> RNNClassifier:
    return RNNClassifier(vocab_size=vocab_size, num_labels=num_labels,
                         embedding_size=cfg.embedding_size, hidden_size=cfg.hidden_size,
                         cell=cfg.cell, num_layers=cfg.encoder_layers,
                         bidirectional=cfg.bidirectional, dropout=cfg.dropout,
                         pooling=classify.pooling, backend=cfg.backend,
                         reset_after=cfg.gru_reset_after, lm_weight=classify.lm_weight,
                         lm_sample=classify.lm_sample, ngram_buckets=classify.ngram_buckets,
                         ngram_weight=classify.ngram_weight,
                         ngram_lr=classify.ngram_lr)


# ---------------------------------------------------------------------------------- the data
@dataclass
class LabelCodec:
    """Text -> ids (tokenizer, vocabulary) and label <-> index; saved in checkpoints."""

    tokenizer: Tokenizer
    vocab: Vocab
    labels: list[str]

    def encode_text(self, text: str) -> list[int]:
        return self.vocab.encode(self.tokenizer.tokenize(text)) + [EOS]

    def label_ids(self, labels: Sequence[str], source: str) -> list[int]:
        index = {label: i for i, label in enumerate(self.labels)}
        for label in labels:
            if label not in index:
                raise DataError(f"{source}: label {label!r} was never seen in training "
                                f"(training labels: {', '.join(self.labels)})")
        return [index[label] for label in labels]

    def state_dict(self) -> dict:
        return {"tokenizer": self.tokenizer.state_dict(), "vocab": self.vocab.state_dict(),
                "labels": list(self.labels)}

    @classmethod
    def from_state_dict(cls, state: dict) -> LabelCodec:
        return cls(tokenizer_from_state_dict(state["tokenizer"]),
                   Vocab.from_state_dict(state["vocab"]), list(state["labels"]))


def build_label_codec(config: Config, train: ParallelText) -> LabelCodec:
    t = config.tokenizer
    tokenizer = build_tokenizer(t.kind, train.src, vocab_size=t.vocab_size,
                                model_type=t.model_type, character_coverage=t.character_coverage)
    texts = [tokenizer.tokenize(x) for x in train.src]
    if t.sampling_alpha:  # sampled segmentations use pieces the best ones never do
        texts.append(tokenizer.pieces())
    vocab = Vocab.build(texts, min_freq=t.min_freq, max_size=t.max_vocab)
    labels = sorted(set(train.tgt))
    if len(labels) < 2:
        raise DataError(f"{train.source}: a classifier needs at least 2 labels, found "
                        f"{len(labels)} ({', '.join(labels)})")
    return LabelCodec(tokenizer, vocab, labels)


def text_ngrams(config: ClassifyConfig, texts: Sequence[str]) -> list[Tensor] | None:
    """Each text's n-gram ids (seqlab/ngrams.py) when the model has an n-gram part."""
    if not config.ngram_buckets:
        return None
    return featurize(texts, config.ngram_buckets, config.ngram_words, config.ngram_chars)


@dataclass
class LabelledBatch:
    """src (B, S) long padded with PAD, each row ending with EOS; src_lengths (B,);
    labels (B,) long or None; index (B,) each row's position in the example list;
    ngrams: the rows' n-gram ids and offsets (ngrams.pack), or None."""

    src: Tensor
    src_lengths: Tensor
    labels: Tensor | None
    index: Tensor
    ngrams: tuple[Tensor, Tensor] | None = None

    def to(self, device) -> LabelledBatch:
        def move(x):
            return None if x is None else x.to(device)

        return LabelledBatch(move(self.src), move(self.src_lengths), move(self.labels),
                             move(self.index),
                             None if self.ngrams is None else tuple(map(move, self.ngrams)))


def collate_labelled(ids: Sequence[list[int]], labels: Sequence[int] | None,
                     indices: Sequence[int],
                     ngrams: Sequence[Tensor] | None = None) -> LabelledBatch:
    rows = [ids[i] for i in indices]
    return LabelledBatch(_pad(rows), torch.tensor([len(r) for r in rows]),
                         None if labels is None else torch.tensor([labels[i] for i in indices]),
                         torch.tensor(list(indices)),
                         None if ngrams is None else pack([ngrams[i] for i in indices]))


# ---------------------------------------------------------------------------------- metrics
def confusion_matrix(predicted: Sequence[int], gold: Sequence[int], n: int) -> list[list[int]]:
    """m[g][p] = how many examples of gold label g were predicted as p."""
    m = [[0] * n for _ in range(n)]
    for p, g in zip(predicted, gold, strict=True):
        m[g][p] += 1
    return m


def macro_f1(matrix: list[list[int]]) -> float:
    """Mean over labels of F1 = 2 P R / (P + R) (0 for a label never predicted nor present)."""
    n, scores = len(matrix), []
    for k in range(n):
        tp = matrix[k][k]
        predicted = sum(matrix[g][k] for g in range(n))
        present = sum(matrix[k])
        scores.append(2 * tp / (predicted + present) if predicted + present else 0.0)
    return sum(scores) / n


def score(logits: Tensor, gold: Sequence[int], labels: Sequence[str]) -> dict:
    """Accuracy, macro-F1, mean loss (nats) and the confusion matrix of logits (N, C)."""
    gold_t = torch.tensor(list(gold))
    predicted = logits.argmax(-1).tolist()
    matrix = confusion_matrix(predicted, list(gold), len(labels))
    loss = F.cross_entropy(logits.float(), gold_t, reduction="sum").item()
    return {"accuracy": sum(p == g for p, g in zip(predicted, gold)) / max(len(gold), 1),
            "macro_f1": macro_f1(matrix), "loss": loss / max(len(gold), 1),
            "examples": len(gold), "labels": list(labels), "confusion": matrix}


# ---------------------------------------------------------------------------------- prediction
@dataclass
class Prediction:
    label: str
    probability: float  # of that label
    probabilities: dict[str, float]  # of every label


class Classifier:
    """A trained classifier: texts in, labels with probabilities out, in the input's order.

        classifier = Classifier.from_checkpoint("runs/nsmc")
        classifier.predict(["재밌다", "지루했다"])   # -> [Prediction("1", 0.97, ...), ...]
    """

    def __init__(self, model: RNNClassifier, codec: LabelCodec, config: Config,
                 device: torch.device | str = "cpu"):
        self.model = model.to(device).eval()
        self.codec, self.config, self.device = codec, config, torch.device(device)

    @classmethod
    def from_checkpoint(cls, path: Checkpointed, device: str = "auto") -> Classifier:
        from seqlab.checkpoint import load_weights, open_for_prediction

        target, where, config, codec, weights = open_for_prediction(
            path, device, "classify", LabelCodec.from_state_dict,
            "its tokenizer and labels are damaged")
        model = build_classifier(config.model, len(codec.vocab), len(codec.labels),
                                 config.classify)
        load_weights(model, weights, where)
        return cls(model, codec, config, target)

    def logits(self, texts: Sequence[str]) -> Tensor:
        """(N, C) on the CPU, in the input's order; batches of similar lengths."""
        z_rnn, z_ngram = self.part_logits(texts)
        return z_rnn if z_ngram is None else z_rnn + self.model.ngram_weight * z_ngram

    def part_logits(self, texts: Sequence[str]) -> tuple[Tensor, Tensor | None]:
        """The recurrent and the n-gram part's own logits (N, C) (None: no n-gram part)."""
        ids = [self.codec.encode_text(t) for t in texts]
        ngrams = text_ngrams(self.config.classify, texts)
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        C = len(self.codec.labels)
        z_rnn = torch.empty(len(ids), C)
        z_ngram = torch.empty(len(ids), C) if ngrams is not None else None
        size = self.config.search.batch_size
        self.model.eval()
        with torch.no_grad():
            for start in range(0, len(order), size):
                batch = collate_labelled(ids, None, order[start : start + size],
                                         ngrams).to(self.device)
                rnn, ngram = self.model.part_logits(batch.src, batch.src_lengths, batch.ngrams)
                rows = batch.index.cpu()
                z_rnn[rows] = rnn.float().cpu()
                if ngram is not None:
                    z_ngram[rows] = ngram.float().cpu()
        return z_rnn, z_ngram

    def predict(self, texts: Sequence[str]) -> list[Prediction]:
        probs = self.logits(texts).softmax(-1)
        labels = self.codec.labels
        return [Prediction(labels[int(p.argmax())], float(p.max()),
                           {label: float(q) for label, q in zip(labels, p)}) for p in probs]

    def evaluate(self, texts: Sequence[str], labels: Sequence[str], source: str = "data") -> dict:
        """Accuracy, macro-F1, loss and confusion matrix against gold labels; with an n-gram
        part, each part's own accuracy too (accuracy_rnn, accuracy_ngram)."""
        gold = self.codec.label_ids(labels, source)
        z_rnn, z_ngram = self.part_logits(texts)
        if z_ngram is None:
            return score(z_rnn, gold, self.codec.labels)
        metrics = score(z_rnn + self.model.ngram_weight * z_ngram, gold, self.codec.labels)
        for name, z in (("rnn", z_rnn), ("ngram", z_ngram)):
            metrics[f"accuracy_{name}"] = score(z, gold, self.codec.labels)["accuracy"]
        return metrics

    def count_unknown(self, texts: Sequence[str]) -> int:
        """How many texts hold a token never seen in training (read as <unk>)."""
        return sum(UNK in self.codec.encode_text(t) for t in texts if t.strip())


# ---------------------------------------------------------------------------------- the problem
class ClassifyProblem:
    unit = "examples"

    def __init__(self, config: Config):
        self.config = config
        self.splits = self.codec = None
        self.ids: list[list[int]] = []  # the training texts as ids (this epoch's sample)
        self.labels: list[int] = []
        self.texts: list[str] = []  # the training texts kept (for subword sampling)
        self.ngrams: list[Tensor] | None = None  # their n-gram ids (with an n-gram part)
        self.sampled_epoch: int | None = None  # the epoch whose sample self.ids holds

    def prepare(self, state: dict | None = None) -> str:
        from seqlab.prepare import read_splits

        config, t0 = self.config, time.time()
        self.splits = splits = read_splits(config)
        self.codec = codec = (LabelCodec.from_state_dict(state) if state
                              else build_label_codec(config, splits.train))
        for split in (splits.valid, splits.test):  # unknown labels: found before training
            if split is not None:
                codec.label_ids(split.tgt, split.source)
        limit, ids, labels, texts = config.data.max_src_len, [], [], []
        for text, label in zip(splits.train.src, codec.label_ids(splits.train.tgt,
                                                                  splits.train.source)):
            row = codec.encode_text(text)
            if len(row) - 1 <= limit:
                ids.append(row)
                labels.append(label)
                texts.append(text)
        if not ids:
            raise DataError(f"{splits.train.source}: no training text is within "
                            f"data.max_src_len={limit} tokens")
        self.ids, self.labels, self.texts = ids, labels, texts
        self.ngrams = text_ngrams(config.classify, texts)
        self.sampled_epoch = None
        counts = [labels.count(k) for k in range(len(codec.labels))]
        return (f"data: {len(ids)} training examples from {splits.train.source} "
                f"({splits.train.skipped_empty} with an empty side skipped, "
                f"{len(splits.train) - len(ids)} over the length limit); labels "
                + ", ".join(f"{name} ({n})" for name, n in zip(codec.labels, counts))
                + f"; vocabulary {len(codec.vocab)} ({config.tokenizer.kind}) "
                f"[{time.time() - t0:.1f}s]")

    def build_model(self) -> RNNClassifier:
        return build_classifier(self.config.model, len(self.codec.vocab),
                                len(self.codec.labels), self.config.classify)

    def describe_model(self, model) -> str:
        m = self.config.model
        c = self.config.classify
        ngrams = (f", beside a linear classifier over {c.ngram_buckets:,} hashed n-gram "
                  f"buckets (weight {c.ngram_weight:g})" if c.ngram_buckets else "")
        return (f"{m.cell} {'bi' if m.bidirectional else 'uni'}directional encoder, "
                f"{c.pooling} pooling, {len(self.codec.labels)} labels{ngrams}, "
                f"recurrent backend {model.rnn.backend}")

    def state_dict(self) -> dict:
        return self.codec.state_dict()

    def train_state(self) -> dict:
        return {}

    def load_train_state(self, state: dict) -> None:
        pass

    def sample_segmentations(self, epoch: int) -> None:
        """Subword regularization: this epoch's training ids from sampled segmentations,
        a function of (train.seed, epoch) only, so every rank and a resumed run agree; a
        sample longer than data.max_src_len is cut there."""
        alpha, limit = self.config.tokenizer.sampling_alpha, self.config.data.max_src_len
        if not alpha or self.sampled_epoch == epoch:
            return
        seed = (self.config.train.seed * 1_000_003 + epoch) % 2**32
        pieces = self.codec.tokenizer.sample(self.texts, alpha, seed)
        self.ids = [self.codec.vocab.encode(p[:limit]) + [EOS] for p in pieces]
        self.sampled_epoch = epoch

    def batches(self, epoch: int, rank: int, world: int) -> list[list[int]]:
        self.sample_segmentations(epoch)
        return epoch_batches([len(x) for x in self.ids], self.config.train, epoch, rank, world)

    def batch(self, key: list[int]) -> LabelledBatch:
        return collate_labelled(self.ids, self.labels, key, self.ngrams)

    def loss(self, model, batch: LabelledBatch, step: int) -> tuple[Tensor, int]:
        _, summed = model(batch.src, batch.src_lengths, batch.labels, ngrams=batch.ngrams,
                          label_smoothing=self.config.train.label_smoothing)
        return summed, len(batch.labels)

    def log_fields(self, step: int) -> dict:
        return {}

    def _classifier(self, model) -> Classifier:
        return Classifier(model, self.codec, self.config, next(model.parameters()).device)

    def validate(self, model) -> dict:
        valid = self.splits.valid
        if valid is None:
            return {}
        metrics = self._classifier(model).evaluate(valid.src, valid.tgt, valid.source)
        metrics.pop("confusion")
        metrics.pop("labels")
        return metrics

    def describe(self, metrics: dict) -> list[str]:
        return [f"loss {metrics['loss']:.4f} accuracy {100 * metrics['accuracy']:.2f}%"
                f"{_parts(metrics)} macro-F1 {100 * metrics['macro_f1']:.2f}"]

    def report(self, run_dir: Path, device, say) -> dict:
        """The best checkpoint on valid and test, with a confusion-matrix picture each."""
        from seqlab.plots import plot_confusion

        classifier = Classifier.from_checkpoint(run_dir, device=str(device))
        report: dict = {}
        for name, split in (("valid", self.splits.valid), ("test", self.splits.test)):
            if split is None:
                continue
            metrics = classifier.evaluate(split.src, split.tgt, split.source)
            metrics["skipped_empty"] = split.skipped_empty
            metrics["picture"] = str(plot_confusion(
                metrics["confusion"], metrics["labels"], run_dir / f"confusion_{name}.png",
                title=f"{name}: {split.source}"))
            report[name] = metrics
            say(f"{name} ({split.source}, {metrics['examples']} examples"
                f"{f', {split.skipped_empty} empty skipped' if split.skipped_empty else ''}): "
                f"accuracy {100 * metrics['accuracy']:.2f}%{_parts(metrics)} macro-F1 "
                f"{100 * metrics['macro_f1']:.2f}")
        return report


def _parts(metrics: dict) -> str:
    """" (recurrent part 86.0%, n-gram part 85.1%)" for a model with an n-gram part."""
    if "accuracy_ngram" not in metrics:
        return ""
    return (f" (recurrent part {100 * metrics['accuracy_rnn']:.2f}%, n-gram part "
            f"{100 * metrics['accuracy_ngram']:.2f}%)")
