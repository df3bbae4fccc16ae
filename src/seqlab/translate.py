"""Translate with a trained model: text in, text out, in the input's order.

    translator = Translator.from_checkpoint("runs/demo")     # a run directory or a .pt file
    translator.translate(["March 3, 2024"])                   # -> ["2024-03-03"]
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import torch
from torch.nn import functional as F

from seqlab.checkpoint import load_checkpoint, resolve_checkpoint
from seqlab.config import Config, ConfigError, SearchConfig, config_from_dict
from seqlab.data import ParallelText, collate, collate_source, encode_pairs
from seqlab.metrics import bleu, chrf, exact_match, perplexity
from seqlab.model import Seq2Seq, build_model
from seqlab.prepare import Codec
from seqlab.search import Hypothesis, beam_search, greedy_search, sample
from seqlab.vocab import EOS, PAD


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@dataclasses.dataclass
class Translation:
    """One output: its text, tokens, score and attention (T', S') over the source tokens."""

    text: str
    tokens: list[str]
    score: float
    log_prob: float
    attention: torch.Tensor | None
    src_tokens: list[str]


class Translator:
    def __init__(self, model: Seq2Seq, codec: Codec, config: Config,
                 device: torch.device | str = "cpu"):
        self.model = model.to(device).eval()
        self.codec = codec
        self.config = config
        self.device = torch.device(device)

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "auto") -> Translator:
        state = load_checkpoint(resolve_checkpoint(path))
        config = config_from_dict(state["config"])
        codec = Codec.from_state_dict(state["codec"])
        model = build_model(config.model, len(codec.src_vocab), len(codec.tgt_vocab))
        model.load_state_dict(state["model"])
        return cls(model, codec, config, pick_device(device))

    # ---------------------------------------------------------------- decoding
    def _search(self, batch, opts: SearchConfig, sampling: dict | None):
        src, lengths = batch.src.to(self.device), batch.src_lengths.to(self.device)
        limits = dict(max_len_a=opts.max_len_a, max_len_b=opts.max_len_b, min_len=opts.min_len,
                      no_repeat_ngram=opts.no_repeat_ngram)
        if sampling is not None:  # n_best independent samples per input
            return sample(self.model, src, lengths, num_samples=opts.n_best, **sampling, **limits)
        if opts.beam_size == 1 and opts.length_penalty == 0 and opts.coverage_penalty == 0:
            return greedy_search(self.model, src, lengths, **limits)  # = beam 1 exactly
        return beam_search(self.model, src, lengths, beam_size=opts.beam_size,
                           n_best=opts.n_best, length_penalty=opts.length_penalty,
                           coverage_penalty=opts.coverage_penalty, **limits)

    def translate_nbest(self, texts: Sequence[str], sampling: dict | None = None,
                        **search) -> list[list[Translation]]:
        """n-best translations of each text (n = search n_best), best first.

        `search` overrides the config's search section (beam_size=5, length_penalty=1.0, ...);
        `sampling` = dict(temperature=..., top_k=..., top_p=..., seed=...) samples instead.
        """
        if "beam_size" in search and "n_best" not in search:
            search["n_best"] = min(self.config.search.n_best, search["beam_size"])
        opts = dataclasses.replace(self.config.search, **search)
        most = opts.n_best if sampling is not None else opts.beam_size  # samples: any number
        if opts.beam_size < 1 or not 1 <= opts.n_best <= most or opts.batch_size < 1:
            raise ConfigError(f"search: need beam_size >= 1, 1 <= n_best <= beam_size and "
                              f"batch_size >= 1 (got {opts.beam_size}, {opts.n_best}, "
                              f"{opts.batch_size})")
        codec = self.codec
        src_tokens = [codec.src_tokenizer.tokenize(t) for t in texts]
        ids = [codec.src_vocab.encode(toks) + [EOS] for toks in src_tokens]
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))  # similar lengths together
        results: list[list[Translation]] = [[] for _ in texts]
        for start in range(0, len(order), opts.batch_size):
            chunk = order[start : start + opts.batch_size]
            batch = collate_source(ids, chunk)
            with torch.no_grad():
                hyps = self._search(batch, opts, sampling)
            for i, nbest in zip(chunk, hyps):
                results[i] = [self._to_translation(h, src_tokens[i]) if texts[i].strip()
                              else Translation("", [], 0.0, 0.0, None, []) for h in nbest]
        return results

    def _to_translation(self, hyp: Hypothesis, src_tokens: list[str]) -> Translation:
        tokens = self.codec.tgt_vocab.decode(hyp.tokens)
        text = self.codec.tgt_tokenizer.detokenize(tokens)
        return Translation(text, tokens, hyp.score, hyp.log_prob, hyp.attention,
                           src_tokens + ["<eos>"])

    def translate(self, texts: Sequence[str], **search) -> list[str]:
        """One translation per input text, same order; empty input lines give empty output."""
        return [nbest[0].text for nbest in self.translate_nbest(texts, **search)]

    # ---------------------------------------------------------------- scoring
    def score(self, sources: Sequence[str], references: Sequence[str]) -> tuple[float, int]:
        """Total negative log-likelihood (nats) of the references and their token count."""
        pairs = ParallelText(src=list(sources), tgt=list(references), skipped_empty=0,
                             source="references")
        c = self.codec
        examples, _ = encode_pairs(pairs, c.src_tokenizer, c.tgt_tokenizer, c.src_vocab,
                                   c.tgt_vocab)
        return teacher_forced_nll(self.model, examples, self.device,
                                  self.config.search.batch_size)

    def evaluate(self, sources: Sequence[str], references: Sequence[str], **search) -> dict:
        """BLEU, chrF (sacrebleu), exact match and perplexity of the references."""
        hyps = self.translate(sources, **search)
        ev = self.config.eval
        b = bleu(hyps, list(references), tokenize=ev.bleu_tokenize, lowercase=ev.lowercase)
        c = chrf(hyps, list(references))
        nll, ntok = self.score(sources, references)
        return {"bleu": b.score, "chrf": c.score, "signature": b.signature,
                "chrf_signature": c.signature, "exact_match": exact_match(hyps, references),
                "loss": nll / max(ntok, 1), "ppl": perplexity(nll, ntok), "sentences": len(hyps),
                "hypotheses": hyps}


def teacher_forced_nll(model: Seq2Seq, examples, device, batch_size: int = 64):
    """Sum of -log p(reference) over tokens (no label smoothing) and the token count."""
    total, count = 0.0, 0
    model.eval()
    with torch.no_grad():
        for start in range(0, len(examples), batch_size):
            idx = list(range(start, min(start + batch_size, len(examples))))
            batch = collate(examples, idx).to(device)
            logits, _ = model(batch.src, batch.src_lengths, batch.tgt_in)
            total += F.cross_entropy(logits.flatten(0, 1), batch.tgt_out.flatten(),
                                     ignore_index=PAD, reduction="sum").item()
            count += batch.num_tgt_tokens
    return total, count

