"""The n-gram part of a classifier alone: how its optimizer and bucket count do on NSMC.

    python benchmarks/ngram_probe.py configs/nsmc_sentiment.yaml --set data.root=../shared/data

Reads the config's data (the same held-out validation reviews as the recipe), hashes every
text's n-grams with seqlab/ngrams.py (classify.ngram_words / ngram_chars), and trains the
linear part alone, z = sum_g E[g] + b, by mean cross-entropy over batches of 64 reviews, for
each (optimizer, buckets) setting, a few epochs each; validation and test accuracy after
each epoch go to benchmarks/results/ngram_probe.json. This is how the recipe's n-gram part
was chosen (README, NSMC): Adagrad against Adam, 2^20 against 2^21 buckets.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from seqlab.config import load_config  # noqa: E402
from seqlab.ngrams import featurize, pack  # noqa: E402
from seqlab.prepare import read_splits  # noqa: E402

RESULTS = Path(__file__).parent / "results"


def train_linear(train, valid, test, buckets: int, optimizer: str, lr: float, epochs: int,
                 seed: int, batch: int = 64, weight_decay: float = 0.0) -> list[dict]:
    """(ids, labels) triples -> accuracy after each epoch."""
    torch.manual_seed(seed)
    E = torch.nn.EmbeddingBag(buckets, 2, mode="sum")
    torch.nn.init.zeros_(E.weight)
    bias = torch.nn.Parameter(torch.zeros(2))
    params = [E.weight, bias]
    opt = (torch.optim.Adagrad(params, lr=lr, weight_decay=weight_decay)
           if optimizer == "adagrad"
           else torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True))

    def logits(rows):
        return E(*pack(rows)) + bias

    def accuracy(split):
        with torch.no_grad():
            return (logits(split[0]).argmax(-1) == split[1]).double().mean().item()

    curve, t0 = [], time.time()
    ids, labels = train
    for epoch in range(epochs):
        for chunk in torch.randperm(len(ids)).split(batch):
            loss = F.cross_entropy(logits([ids[i] for i in chunk]), labels[chunk])
            opt.zero_grad()
            loss.backward()
            opt.step()
        curve.append({"epoch": epoch + 1, "valid": accuracy(valid), "test": accuracy(test),
                      "seconds": round(time.time() - t0, 1)})
        print(f"  {optimizer} lr {lr:g} wd {weight_decay:g} 2^{buckets.bit_length() - 1} "
              f"batch {batch}: epoch {epoch + 1} "
              f"valid {100 * curve[-1]['valid']:.2f}% test {100 * curve[-1]['test']:.2f}%",
              flush=True)
    return curve


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("config")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--settings", default="adagrad:0.2:21,adagrad:0.2:20,adam:0.02:20,adam:0.1:20",
                   help="optimizer:lr:log2(buckets)[:weight decay], comma-separated")
    p.add_argument("--batch", type=int, default=64, help="reviews per step")
    p.add_argument("--out", default=str(RESULTS / "ngram_probe.json"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    config = load_config(args.config, args.set)
    c, splits = config.classify, read_splits(config)
    rows = []
    cache: dict[int, tuple] = {}
    for setting in args.settings.split(","):
        optimizer, lr, log2, *decay = setting.split(":")
        weight_decay = float(decay[0]) if decay else 0.0
        buckets = 1 << int(log2)
        if buckets not in cache:
            t0 = time.time()
            cache[buckets] = tuple(
                (featurize(s.src, buckets, c.ngram_words, c.ngram_chars),
                 torch.tensor([int(y) for y in s.tgt]))
                for s in (splits.train, splits.valid, splits.test))
            print(f"features for 2^{log2} buckets: {time.time() - t0:.0f}s", flush=True)
        curve = train_linear(*cache[buckets], buckets, optimizer, float(lr), args.epochs,
                             config.train.seed, args.batch, weight_decay)
        rows.append({"optimizer": optimizer, "lr": float(lr), "buckets": buckets,
                     "weight_decay": weight_decay, "curve": curve})
    result = {"config": args.config, "overrides": args.set, "words": c.ngram_words,
              "chars": c.ngram_chars, "batch": args.batch, "threads": args.threads,
              "train": len(splits.train), "valid": len(splits.valid),
              "test": len(splits.test), "rows": rows}
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
