"""A trained classifier with an n-gram part: each part alone and their product at several
weights, on the validation and the test set.

    python benchmarks/classify_parts.py runs/nsmc_sentiment --weights 0,0.5,1,2,5

The two parts are trained apart (each by its own cross-entropy), so the prediction weight w
in logits = z_rnn + w z_ngram can be chosen after training, on the validation set; the test
figures are printed beside it only to report. Writes benchmarks/results/classify_parts.json
(or --out).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from seqlab.prepare import read_splits  # noqa: E402
from seqlab.problems.classify import Classifier  # noqa: E402

RESULTS = Path(__file__).parent / "results"


def _accuracy(z: torch.Tensor, gold: torch.Tensor) -> float:
    return round((z.argmax(-1) == gold).double().mean().item(), 5)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run")
    p.add_argument("--weights", default="0,0.1,0.2,0.3,0.5,0.7,1,1.5,2,3,5,10")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=str(RESULTS / "classify_parts.json"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    classifier = Classifier.from_checkpoint(args.run, device="cpu")
    if classifier.model.ngram is None:
        sys.exit(f"{args.run}: this classifier has no n-gram part")
    splits = read_splits(classifier.config)
    weights = [float(w) for w in args.weights.split(",")]
    rows: dict[str, dict] = {}
    for name, split in (("valid", splits.valid), ("test", splits.test)):
        z_rnn, z_ngram = classifier.part_logits(split.src)
        gold = torch.tensor(classifier.codec.label_ids(split.tgt, split.source))

        rows[name] = {"examples": len(gold), "ngram_alone": _accuracy(z_ngram, gold),
                      "product": {str(w): _accuracy(z_rnn + w * z_ngram, gold)
                                  for w in weights}}
    print(f"{'w':>6} {'valid':>8} {'test':>8}   (w = 0: the recurrent part alone)")
    for w in weights:
        print(f"{w:>6g} {100 * rows['valid']['product'][str(w)]:>7.2f}% "
              f"{100 * rows['test']['product'][str(w)]:>7.2f}%")
    print(f"{'ngram':>6} {100 * rows['valid']['ngram_alone']:>7.2f}% "
          f"{100 * rows['test']['ngram_alone']:>7.2f}%   (the n-gram part alone)")
    best = max(weights, key=lambda w: rows["valid"]["product"][str(w)])
    print(f"best on validation: w = {best:g} (the run predicts with "
          f"w = {classifier.model.ngram_weight:g})")
    Path(args.out).write_text(json.dumps(
        {"run": args.run, "configured_weight": classifier.model.ngram_weight,
         "best_on_valid": best, **rows}, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
