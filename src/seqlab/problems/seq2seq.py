"""Encoder-decoder (seq2seq): a source sentence in, a target sentence out.

    data      pairs of sentences (parallel files, a TSV, or a generated dataset)
    codec     source and target tokenizers and vocabularies, learned from train
    model     seqlab.model.Seq2Seq; loss = cross-entropy summed over the real target tokens,
              teacher-forced (with scheduled sampling when train.teacher_forcing < 1)
    validate  greedy decoding of the validation set: BLEU, chrF, exact match (sacrebleu),
              teacher-forced loss and perplexity
    predict   seqlab.translate.Translator
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from seqlab.config import Config
from seqlab.data import DataError, TokenBatchSampler, collate
from seqlab.model import build_model
from seqlab.prepare import Codec, build_codec, encode, read_splits
from seqlab.schedules import teacher_forcing_ratio


class Seq2SeqProblem:
    unit = "tokens"

    def __init__(self, config: Config):
        self.config = config
        self.splits = self.codec = None
        self.examples: list = []
        # scheduled sampling's coin flips: a private stream, saved for exact resumption
        self.sampling_rng = torch.Generator().manual_seed(config.train.seed + 1)

    # ------------------------------------------------------------------ data and model
    def prepare(self, state: dict | None = None) -> str:
        config, t0 = self.config, time.time()
        self.splits = splits = read_splits(config)
        self.codec = codec = (Codec.from_state_dict(state) if state
                              else build_codec(config, splits.train))
        self.examples, filtered = encode(config, codec, splits.train)
        if not self.examples:
            raise DataError(f"{splits.train.source}: no training pair is within the length "
                            f"limits (max_src_len={config.data.max_src_len}, "
                            f"max_tgt_len={config.data.max_tgt_len})")
        return (f"data: {len(self.examples)} training pairs from {splits.train.source} "
                f"({splits.train.skipped_empty} empty skipped, {filtered} over the length "
                f"limit); vocabularies: source {len(codec.src_vocab)}, target "
                f"{len(codec.tgt_vocab)} ({config.tokenizer.kind}) [{time.time() - t0:.1f}s]")

    def build_model(self):
        return build_model(self.config.model, len(self.codec.src_vocab),
                           len(self.codec.tgt_vocab))

    def describe_model(self, model) -> str:
        m = self.config.model
        return (f"{m.cell} {'bi' if m.bidirectional else 'uni'}directional encoder, attention "
                f"{m.attention} ({m.attention_style}), recurrent backend "
                f"{model.encoder.rnn.backend}")

    def state_dict(self) -> dict:
        return self.codec.state_dict()

    def train_state(self) -> dict:
        return {"sampling": self.sampling_rng.get_state()}

    def load_train_state(self, state: dict) -> None:
        self.sampling_rng.set_state(state["sampling"])

    # ------------------------------------------------------------------ training
    def batches(self, epoch: int, rank: int, world: int) -> list[list[int]]:
        sampler = TokenBatchSampler.from_examples(
            self.examples, self.config.train.batch_tokens, shuffle=True,
            seed=self.config.train.seed, rank=rank, world_size=world)
        sampler.set_epoch(epoch)
        return list(sampler)

    def batch(self, key: list[int]):
        return collate(self.examples, key)

    def loss(self, model, batch, step: int) -> tuple[torch.Tensor, int]:
        tc = self.config.train
        _, summed = model(batch.src, batch.src_lengths, batch.tgt_in, batch.tgt_out,
                          label_smoothing=tc.label_smoothing,
                          teacher_forcing=teacher_forcing_ratio(tc, step),
                          generator=self.sampling_rng)
        return summed, batch.num_tgt_tokens

    def log_fields(self, step: int) -> dict:
        return {"teacher_forcing": teacher_forcing_ratio(self.config.train, step)}

    # ------------------------------------------------------------------ evaluation
    def validate(self, model) -> dict:
        """Greedy decoding of the validation set, scored; loss and perplexity teacher-forced."""
        from seqlab.translate import Translator

        if self.splits.valid is None:
            return {}
        valid = self.splits.valid
        translator = Translator(model, self.codec, self.config, next(model.parameters()).device)
        result = translator.evaluate(valid.src, valid.tgt, beam_size=1, n_best=1,
                                     no_repeat_ngram=0, coverage_penalty=0.0)
        hyps = result.pop("hypotheses")
        n = min(self.config.train.valid_samples, len(hyps))
        result["samples"] = [(valid.src[i], valid.tgt[i], hyps[i]) for i in range(n)]
        return result

    def pictures(self, model, run_dir: Path, step: int) -> None:
        """train.attention_maps > 0: the greedy output's attention of the first N validation
        sentences, as step-STEP-K.png in run_dir/attention, and sentence-K.gif, one frame per
        validation so far (the alignment emerging)."""
        from seqlab.plots import frames_to_gif
        from seqlab.translate import Translator

        n = min(self.config.train.attention_maps,
                0 if self.splits.valid is None else len(self.splits.valid.src))
        if n == 0:
            return
        folder = run_dir / "attention"
        translator = Translator(model, self.codec, self.config, next(model.parameters()).device)
        outputs = translator.translate_nbest(self.splits.valid.src[:n], beam_size=1, n_best=1,
                                             no_repeat_ngram=0, coverage_penalty=0.0,
                                             length_penalty=0.0, with_attention=True)
        for k, [t] in enumerate(outputs):
            if t.attention is None:
                continue
            t.plot(folder / f"step-{step:06d}-{k}.png", title=f"step {step}: {t.text}",
                   svg=False)
            frames_to_gif(sorted(folder.glob(f"step-*-{k}.png")), folder / f"sentence-{k}.gif")

    def describe(self, metrics: dict) -> list[str]:
        lines = [f"loss {metrics['loss']:.3f} ppl {metrics['ppl']:.2f} BLEU "
                 f"{metrics['bleu']:.2f} chrF {metrics['chrf']:.2f} exact "
                 f"{100 * metrics['exact_match']:.1f}%"]
        for src, ref, hyp in metrics.get("samples", []):
            lines.append(f"    src: {src}\n    ref: {ref}\n    hyp: {hyp}")
        return lines

    def report(self, run_dir: Path, device, say) -> dict:
        """The best checkpoint on valid (and test) with the configured search."""
        from seqlab.translate import Translator

        translator = Translator.from_checkpoint(run_dir, device=str(device))
        report: dict = {"signature_note": "sacrebleu BLEU and chrF on detokenized output"}
        for name, split in (("valid", self.splits.valid), ("test", self.splits.test)):
            if split is None:
                continue
            metrics = translator.evaluate(split.src, split.tgt)
            metrics.pop("hypotheses")
            report[name] = metrics
            say(f"{name} ({split.source}, beam {self.config.search.beam_size}): BLEU "
                f"{metrics['bleu']:.2f} chrF {metrics['chrf']:.2f} exact "
                f"{100 * metrics['exact_match']:.1f}%  {metrics['signature']}")
        return report
