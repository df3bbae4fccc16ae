"""One training step (forward, loss, backward) of a recipe's model on real batches, projecting
every target position onto the vocabulary ("all") against only the real, non-padding ones
("kept", what `seqlab.train` does), measured side by side on the same batches in one run.

    python benchmarks/bench_train_step.py configs/multi30k_de_en.yaml --batches 12 --repeats 3

Reports milliseconds per step (median over batches x repeats, the two modes interleaved batch
by batch), the ratio all / kept, the share of padding among target positions, and both as
multiples of the reference matmul of the same run. Writes benchmarks/results/train_step.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from torch.nn import functional as F

from machine import ReferenceMatmul, announce, run_main, summary
from seqlab.config import load_config
from seqlab.data import TokenBatchSampler, collate
from seqlab.model import build_model
from seqlab.prepare import build_codec, encode, read_splits
from seqlab.vocab import PAD


def step(model, batch, label_smoothing: float, kept: bool) -> float:
    t0 = time.perf_counter()
    if kept:  # what training does: the model's own loss
        _, loss = model(batch.src, batch.src_lengths, batch.tgt_in, batch.tgt_out,
                        label_smoothing=label_smoothing)
    else:  # every position projected, padding ignored by the loss
        logits, _ = model.teacher_forced(batch.src, batch.src_lengths, batch.tgt_in)
        loss = F.cross_entropy(logits.flatten(0, 1), batch.tgt_out.flatten(), ignore_index=PAD,
                               label_smoothing=label_smoothing, reduction="sum")
    model.zero_grad(set_to_none=True)
    loss.backward()
    return (time.perf_counter() - t0) * 1e3


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("config")
    p.add_argument("--set", action="append", default=[])
    p.add_argument("--batches", type=int, default=12)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int)
    p.add_argument("--results", default=str(Path(__file__).parent / "results" /
                                            "train_step.json"))
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    info = announce(args.threads)
    config = load_config(args.config, args.set)
    splits = read_splits(config)
    codec = build_codec(config, splits.train)
    examples, _ = encode(config, codec, splits.train)
    sampler = TokenBatchSampler.from_examples(examples, config.train.batch_tokens, shuffle=True,
                                              seed=0)
    batches = [collate(examples, idx) for _, idx in zip(range(args.batches), sampler)]
    torch.manual_seed(0)
    model = build_model(config.model, len(codec.src_vocab), len(codec.tgt_vocab)).train()
    ls = config.train.label_smoothing
    reference = ReferenceMatmul()
    reference.warm_up()
    step(model, batches[0], ls, True), step(model, batches[0], ls, False)  # warm-up
    times = {"kept": [], "all": []}
    ref_ms = []
    for r in range(args.repeats):
        for i, batch in enumerate(batches):
            order = ("kept", "all") if (i + r) % 2 == 0 else ("all", "kept")
            for mode in order:
                times[mode].append(step(model, batch, ls, mode == "kept"))
            ref_ms.append(reference.sample())
    positions = sum(b.tgt_out.numel() for b in batches)
    real = sum(int((b.tgt_out != PAD).sum()) for b in batches)
    ref = summary(ref_ms)["median"]
    result = {"config": args.config, "overrides": args.set, **info,
              "target_vocab": len(codec.tgt_vocab), "batches": args.batches,
              "repeats": args.repeats, "padding_share": round(1 - real / positions, 4),
              "reference_matmul_ms": round(ref, 3),
              "modes": {m: {**{k: round(v, 2) for k, v in summary(t).items()},
                            "x_matmul": round(summary(t)["median"] / ref, 1)}
                        for m, t in times.items()}}
    result["all_over_kept"] = round(result["modes"]["all"]["median"] /
                                    result["modes"]["kept"]["median"], 3)
    path = Path(args.results)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print("| mode | ms / step (median) | x matmul |\n|---|---|---|")
    for m, r in result["modes"].items():
        print(f"| {m} | {r['median']:.1f} | {r['x_matmul']} |")
    print(f"padding among target positions: {result['padding_share']:.1%}; "
          f"all / kept = {result['all_over_kept']:.3f}")
    print(f"results: {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    run_main(main)
