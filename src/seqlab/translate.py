"""Translate with a trained model: text in, text out, in the input's order.

    translator = Translator.from_checkpoint("runs/demo")     # a run directory or a .pt file
    translator.translate(["March 3, 2024"])                   # -> ["2024-03-03"]
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import torch

from seqlab.checkpoint import Checkpointed, load_weights, open_for_prediction
from seqlab.config import Config, ConfigError, SearchConfig, check_ranges
from seqlab.data import DataError, ParallelText, collate, collate_source, encode_pairs
from seqlab.device import pick_device  # noqa: F401  (also importable from here)
from seqlab.metrics import bleu, chrf, exact_match, perplexity
from seqlab.model import Seq2Seq, build_model
from seqlab.precision import autocast, bfloat16_copy, quantize_int8
from seqlab.prepare import Codec
from seqlab.search import Hypothesis, beam_search, greedy_search, max_lengths, sample
from seqlab.vocab import EOS, UNK

# the decoder's per-step linear layers, W_o (the output layer, the largest product of a step)
# and W_c (the attentional layer): int8 decoding quantizes them, bfloat16 decoding on the CPU
# keeps them in bfloat16, with the additive attention's projections W (query, every step) and
# U (keys, once per source) and (for the fused backends) the recurrent stack
STEP_LINEARS = ["decoder.out", "decoder.combine"]
BF16_ADDITIVE = ["decoder.attention.query_proj", "decoder.attention.key_proj"]
BF16_RECURRENT = "decoder.rnn.rnn"


@dataclasses.dataclass
class Translation:
    """One output: its text, tokens, score and attention (T', S') over the source tokens."""

    text: str
    tokens: list[str]
    score: float
    log_prob: float
    attention: torch.Tensor | None
    src_tokens: list[str]

    def plot(self, path: str | Path, title: str | None = None, svg: bool = True) -> Path:
        """The attention heatmap of this output: PNG at `path` (and SVG beside it). Rows are
        the output tokens (and <eos> when the output ended with it), columns the source
        tokens with their <eos>. Needs a translation made with_attention=True."""
        from seqlab.plots import plot_attention

        if self.attention is None:
            raise ValueError("this translation has no attention: translate with "
                             "with_attention=True, with a model that has attention")
        rows = self.tokens + ["<eos>"] * (self.attention.shape[0] - len(self.tokens))
        return plot_attention(self.attention, self.src_tokens, rows, path, title=title, svg=svg)


class Translator:
    def __init__(self, model: Seq2Seq, codec: Codec, config: Config,
                 device: torch.device | str = "cpu"):
        self.model = model.to(device).eval()
        self.codec = codec
        self.config = config
        self.device = torch.device(device)
        self._copies: dict[str, Seq2Seq] = {}  # precision -> the decoding copy, made once

    @classmethod
    def from_checkpoint(cls, path: Checkpointed, device: str = "auto") -> Translator:
        """A run directory (its best.pt) or a checkpoint file, ready on `device`. Each problem
        (no such device, a damaged file, a missing part, weights that its stored config does
        not describe) is one ConfigError / CheckpointError line, before any input is read."""
        target, where, config, codec, weights = open_for_prediction(
            path, device, "seq2seq", Codec.from_state_dict,
            "its codec (tokenizers and vocabularies) is damaged")
        model = build_model(config.model, len(codec.src_vocab), len(codec.tgt_vocab))
        m = config.model
        load_weights(model, weights, where, f"model.cell {m.cell}, embedding_size "
                     f"{m.embedding_size}, hidden_size {m.hidden_size}, attention {m.attention}")
        return cls(model, codec, config, target)

    # ---------------------------------------------------------------- decoding
    def _decoding_model(self, precision: str) -> Seq2Seq:
        """The model that decodes in `precision`: on the CPU, int8 and bfloat16 decode with a
        copy made at the first call (see seqlab.precision); float32, and bfloat16 on a GPU
        (under autocast), with the model itself."""
        if precision not in self._copies and self.device.type == "cpu":
            if precision == "int8":
                self._copies[precision] = quantize_int8(self.model, STEP_LINEARS).eval()
            elif precision == "bfloat16":
                self._copies[precision] = bfloat16_copy(self.model, *self._bf16_layers())
        return self._copies.get(precision, self.model)

    def _bf16_layers(self) -> tuple[list[str], list[str]]:
        """(linear layers, recurrent stacks) of this model that bfloat16 decoding converts."""
        decoder = self.model.decoder
        additive = getattr(decoder.attention, "kind", None) == "additive"
        fused = [BF16_RECURRENT] if decoder.rnn.backend == "fused" else []
        return STEP_LINEARS + (BF16_ADDITIVE if additive else []), fused

    def _search(self, batch, opts: SearchConfig, sampling: dict | None, with_attention: bool,
                with_scores: bool):
        src, lengths = batch.src.to(self.device), batch.src_lengths.to(self.device)
        model = self._decoding_model(opts.precision)
        limits = dict(max_len_a=opts.max_len_a, max_len_b=opts.max_len_b, min_len=opts.min_len,
                      no_repeat_ngram=opts.no_repeat_ngram, with_attention=with_attention)
        copy = model is not self.model  # a copy carries its precision in its weights
        with autocast("float32" if copy else opts.precision, self.device):
            if sampling is not None:  # n_best independent samples per input
                return sample(model, src, lengths, num_samples=opts.n_best, **sampling,
                              **limits)
            if opts.beam_size == 1 and opts.length_penalty == 0 and opts.coverage_penalty == 0:
                return greedy_search(model, src, lengths, scores=with_scores,
                                     **limits)  # = beam 1 exactly
            return beam_search(model, src, lengths, beam_size=opts.beam_size,
                               n_best=opts.n_best, length_penalty=opts.length_penalty,
                               coverage_penalty=opts.coverage_penalty,
                               stopping=opts.stopping, **limits)

    def translate_nbest(self, texts: Sequence[str], sampling: dict | None = None,
                        with_attention: bool = False, with_scores: bool = True,
                        **search) -> list[list[Translation]]:
        """n-best translations of each text (n = search n_best), best first.

        `search` overrides the config's search section (beam_size=5, length_penalty=1.0, ...);
        `sampling` = dict(temperature=..., top_k=..., top_p=..., seed=...) samples instead.
        with_attention: fill Translation.attention (T', S'), else None (cheaper).
        with_scores=False: greedy search may leave score and log_prob nan (it then skips the
        softmax's normaliser, see search.greedy_search); the other searches score anyway.
        An input of more than search.max_input_tokens tokens (EOS not counted) is a DataError
        before anything is decoded: decoding costs O(T S) per output, T ~ max_len_a * S.
        """
        opts = self._options(sampling, search)
        src_tokens = self._checked_tokens(texts, opts)
        codec = self.codec
        ids = [codec.src_vocab.encode(toks) + [EOS] for toks in src_tokens]
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))  # similar lengths together
        results: list[list[Translation]] = [[] for _ in texts]
        for start in range(0, len(order), opts.batch_size):
            chunk = order[start : start + opts.batch_size]
            batch = collate_source(ids, chunk)
            with torch.no_grad():
                hyps = self._search(batch, opts, sampling, with_attention, with_scores)
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
        """One translation per input text, same order; empty input lines give empty output.
        Attention and scores are never collected here (see translate_nbest)."""
        nbest = self.translate_nbest(texts, with_attention=False, with_scores=False, **search)
        return [n[0].text for n in nbest]

    def count_unknown(self, texts: Sequence[str]) -> int:
        """How many texts hold a token the source vocabulary never saw (read as <unk>)."""
        vocab, tok = self.codec.src_vocab, self.codec.src_tokenizer
        return sum(UNK in vocab.encode(tok.tokenize(t)) for t in texts if t.strip())

    def _options(self, sampling: dict | None, search: dict) -> SearchConfig:
        """The config's search section with `search` overrides, checked (ConfigError)."""
        if "beam_size" in search and "n_best" not in search:
            search["n_best"] = min(self.config.search.n_best, search["beam_size"])
        opts = dataclasses.replace(self.config.search, **search)
        check_ranges(opts, "search.")
        if sampling is None and opts.n_best > opts.beam_size:  # samples: any number
            raise ConfigError(f"search: need n_best <= beam_size, got n_best {opts.n_best} "
                              f"and beam_size {opts.beam_size}")
        if opts.precision == "int8" and self.device.type != "cpu":
            raise ConfigError(f"search precision int8 runs on the cpu only, not on "
                              f"{self.device} (use bfloat16 there)")
        if opts.coverage_penalty and self.config.model.attention == "none":
            raise ConfigError(f"coverage penalty {opts.coverage_penalty:g}: this model has no "
                              "attention (model.attention 'none'), so it has no coverage")
        return opts

    def _checked_tokens(self, texts: Sequence[str], opts: SearchConfig,
                        first_line: int = 1) -> list[list[str]]:
        """Source tokens of every text; DataError ("input line N: ...", 1-based) before any
        decoding for an input over `max_input_tokens` (EOS not counted; decoding costs
        O(T S) per output, T ~ max_len_a * S), or whose output limit T_max =
        int(max_len_a * S + max_len_b) (S with EOS, see seqlab.search) leaves no room for
        `min_len` tokens and EOS."""
        src_tokens = [self.codec.src_tokenizer.tokenize(t) for t in texts]
        for line, toks in enumerate(src_tokens, start=first_line):
            if len(toks) > opts.max_input_tokens:
                raise DataError(f"input line {line} has {len(toks)} tokens, over "
                                f"search.max_input_tokens={opts.max_input_tokens} (raise it "
                                f"with --max-input-tokens)")
            if opts.min_len == 0 or not texts[line - first_line].strip():
                continue
            length = len(toks) + 1
            limit = max_lengths(torch.tensor([length]), max_len_a=opts.max_len_a,
                                max_len_b=opts.max_len_b, max_len=None)[0]
            if opts.min_len >= limit:
                raise DataError(
                    f"input line {line}: --min-len {opts.min_len} cannot be met: its output "
                    f"length limit is {limit} tokens with EOS (max_len_a {opts.max_len_a:g} x "
                    f"{length} source tokens + max_len_b {opts.max_len_b}); lower --min-len or "
                    "raise --max-len-a / --max-len-b")
        return src_tokens

    def check_inputs(self, texts: Sequence[str], sampling: dict | None = None, *,
                     first_line: int = 1, **search) -> None:
        """The checks translate_nbest makes before decoding, alone (ConfigError, DataError);
        messages count input lines from `first_line`."""
        self._checked_tokens(texts, self._options(sampling, dict(search)), first_line)

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
    """Sum of -log p(reference) over tokens (the model's own loss, no label smoothing) and
    the token count."""
    total, count = 0.0, 0
    model.eval()
    with torch.no_grad():
        for start in range(0, len(examples), batch_size):
            idx = list(range(start, min(start + batch_size, len(examples))))
            batch = collate(examples, idx).to(device)
            _, summed = model(batch.src, batch.src_lengths, batch.tgt_in, batch.tgt_out)
            total += summed.item()
            count += batch.num_tgt_tokens
    return total, count

