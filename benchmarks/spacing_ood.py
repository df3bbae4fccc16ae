"""A trained word-spacing model on text from other sources, with no retraining.

    python benchmarks/spacing_ood.py runs/recipes/korean_spacing \
        ../shared/data/korean-english-jhe/eval.ko ../shared/data/korean-english-news-v1/test.ko

Scores the run's best checkpoint on each file of spaced Korean sentences (boundary precision,
recall, F1 and the sentence exact-match rate, exactly as `seqlab evaluate RUN --data FILE`),
next to the bigram baseline learnt from the run's own training split, and writes
benchmarks/results/spacing_ood.json (the machine, the run, one row per file).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from machine import machine_info, run_main

RESULTS = Path(__file__).parent / "results"
KEYS = ("f1", "precision", "recall", "accuracy", "exact_match", "sequences", "positions")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", help="a run directory of a tag.scheme spacing model")
    p.add_argument("files", nargs="+", help="spaced sentences, one per line")
    p.add_argument("--results", default=str(RESULTS / "spacing_ood.json"))
    args = p.parse_args(argv)

    import torch

    from seqlab.problems.tag import BigramBaseline, Tagger, read_spacing, read_tag_splits

    torch.set_num_threads(1)
    tagger = Tagger.from_checkpoint(args.run, device="cpu")
    baseline = BigramBaseline(read_tag_splits(tagger.config)["train"])
    rows = {}
    for path in args.files:
        data = read_spacing(path)
        t0 = time.time()
        model = tagger.evaluate(data)
        rows[path] = {"model": {k: model[k] for k in KEYS},
                      "bigram_baseline": {k: v for k, v in baseline.evaluate(data).items()
                                          if k in KEYS},
                      "unknown_lines": tagger.count_unknown([" ".join(t) for t in data.tokens]),
                      "seconds": round(time.time() - t0, 1)}
        m, b = rows[path]["model"], rows[path]["bigram_baseline"]
        print(f"{path}: {m['sequences']} sentences: F1 {100 * m['f1']:.2f} (P "
              f"{100 * m['precision']:.2f} R {100 * m['recall']:.2f}) exact "
              f"{100 * m['exact_match']:.2f}%; bigram baseline F1 {100 * b['f1']:.2f} exact "
              f"{100 * b['exact_match']:.2f}%")
    result = {"machine": machine_info(), "run": args.run, "rows": rows}
    path = Path(args.results)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print(f"results: {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    run_main(main)
