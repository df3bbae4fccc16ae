"""Translation quality of a recipe, end to end: train (on a wall-clock budget), then score the
best checkpoint on its validation and test sets (and any extra sets) with greedy search and
with the recipe's own search, and write one results file.

    python benchmarks/quality.py configs/multi30k_de_en.yaml --minutes 60 \
        --out-run runs/m30k_de_en --results benchmarks/results/quality_m30k_de_en.json
    python benchmarks/quality.py configs/multi30k_de_en.yaml --no-train --out-run runs/m30k_de_en

Scores (sacrebleu, on detokenized output against the raw references):
    bleu      cased, tokenize 13a: the headline figure, with its signature
    bleu_lc   lowercased, tokenize 13a: comparable with lowercased, tokenized reports
              (the PyTorch tutorial's 28.3, the peers' "case:lc" figures)
    chrf      chrF2
For a Korean target, pass --bleu-tokenize char (sacrebleu's ko-mecab needs an extra package).
Choices are made on valid; test is only reported.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

from machine import machine_info, run_main, uptime
from seqlab.config import load_config
from seqlab.data import read_parallel
from seqlab.metrics import bleu, chrf
from seqlab.train import train
from seqlab.translate import Translator


def score(translator: Translator, src: list[str], ref: list[str], search: dict,
          bleu_tokenize: str) -> dict:
    start = time.time()
    hyps = translator.translate(src, **search)
    seconds = time.time() - start
    cased = bleu(hyps, ref, tokenize=bleu_tokenize)
    lower = bleu(hyps, ref, tokenize=bleu_tokenize, lowercase=True)
    c = chrf(hyps, ref)
    return {"bleu": round(cased.score, 2), "bleu_lc": round(lower.score, 2),
            "chrf": round(c.score, 2), "signature": cased.signature,
            "signature_lc": lower.signature, "chrf_signature": c.signature,
            "sentences": len(hyps), "decode_seconds": round(seconds, 1),
            "examples": [{"src": s, "ref": r, "hyp": h} for s, r, h in
                         list(zip(src, ref, hyps))[:3]]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("config")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--minutes", type=float, help="training budget (train.max_minutes)")
    p.add_argument("--out-run", required=True, help="run directory")
    p.add_argument("--no-train", action="store_true", help="score an existing run only")
    p.add_argument("--results", help="results JSON (default benchmarks/results/quality_NAME.json)")
    p.add_argument("--extra", action="append", default=[], metavar="NAME=PREFIX",
                   help="another test set (e.g. out-of-domain), reported separately; a relative "
                        "PREFIX is read from data.root like the recipe's own sets")
    p.add_argument("--bleu-tokenize", default="13a")
    args = p.parse_args(argv)

    overrides = list(args.set)
    if args.minutes is not None:
        overrides.append(f"train.max_minutes={args.minutes}")
    config = load_config(args.config, overrides)
    machine = machine_info()
    load_before = uptime()
    train_seconds = None
    if not args.no_train:
        start = time.time()
        train(config, args.out_run)
        train_seconds = round(time.time() - start, 1)
    translator = Translator.from_checkpoint(args.out_run)
    d = config.data
    sets = {"valid": d.valid, "test": d.test}
    sets.update(dict(item.split("=", 1) for item in args.extra))
    recipe_search = {"beam_size": config.search.beam_size,
                     "length_penalty": config.search.length_penalty}
    searches = {"greedy": {"beam_size": 1, "length_penalty": 0.0}, "recipe": recipe_search}
    results: dict = {}
    for name, prefix in sets.items():
        if not prefix:
            continue
        pairs = read_parallel(d.path(prefix), d.src, d.tgt)
        results[name] = {search_name: score(translator, pairs.src, pairs.tgt, search,
                                            args.bleu_tokenize)
                         for search_name, search in searches.items()}
        for search_name, r in results[name].items():
            print(f"{name:>8} {search_name:>7}: BLEU {r['bleu']:.2f} (lc {r['bleu_lc']:.2f}) "
                  f"chrF {r['chrf']:.2f}  [{r['signature']}]", file=sys.stderr)
    report = {"config": args.config, "overrides": overrides, "run": args.out_run,
              "train_seconds": train_seconds, "machine": machine, "load_before": load_before,
              "load_after": uptime(), "recipe_search": recipe_search,
              "model": dataclasses.asdict(translator.config.model), "scores": results}
    out = Path(args.results or f"benchmarks/results/quality_{Path(args.config).stem}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8")
    print(f"results: {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    run_main(main)
