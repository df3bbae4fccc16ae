"""Ablations of a recipe at a fixed wall-clock budget, judged on the validation set.

    python benchmarks/ablate.py train configs/multi30k_de_en.yaml --minutes 12 --parallel 2
    python benchmarks/ablate.py search runs/m30k_de_en --beams 1 3 5 10 --alphas 0 0.6 1 1.5

`train`: every variant of the recipe's problem (the recipe itself = "baseline", then one change
each, see VARIANTS) is trained for the same number of minutes, `--parallel` runs at a time with
one CPU thread each, so each run gets one core and every pair shares the machine the same way.
The score is the best validation value of the recipe's early-stopping metric seen by training
(greedy BLEU for seq2seq, accuracy for classify, boundary F1 for tag, nats per token for
lm; validation every `--valid-every` steps and at the end of the budget; validation time
counts against the budget). Test sets are never read.

    python benchmarks/ablate.py train configs/nsmc_sentiment.yaml --minutes 5 \
        --results benchmarks/results/ablation_nsmc.json

`search`: decodes the validation set of a trained run with every beam size x length penalty.

Both write benchmarks/results/ablation_*.json and print a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from machine import machine_info, run_main, uptime

# problem -> name -> (what changes, --set overrides); one change from the recipe each
SEQ2SEQ = {
    "baseline": ("the recipe as committed", []),
    "lstm": ("LSTM cells instead of GRU", ["model.cell=lstm"]),
    "general": ("general (bilinear) attention instead of additive",
                ["model.attention=general"]),
    "dot": ("scaled dot attention instead of additive", ["model.attention=scaled_dot"]),
    "no_attention": ("no attention (Cho et al. context vector)", ["model.attention=none"]),
    "unidirectional": ("unidirectional encoder", ["model.bidirectional=false"]),
    "spm4k": ("joint sentencepiece 4k instead of 8k", ["tokenizer.vocab_size=4000"]),
    "spm16k": ("joint sentencepiece 16k instead of 8k", ["tokenizer.vocab_size=16000"]),
    "dropout0.1": ("dropout 0.1 instead of 0.3", ["model.dropout=0.1"]),
    "dropout0.5": ("dropout 0.5 instead of 0.3", ["model.dropout=0.5"]),
    "no_label_smoothing": ("label smoothing 0 instead of 0.1", ["train.label_smoothing=0.0"]),
    "scheduled_sampling": ("teacher forcing 1.0 -> 0.75 (linear, -0.001/step)",
                           ["train.teacher_forcing_schedule=linear",
                            "train.teacher_forcing_decay=0.001",
                            "train.teacher_forcing_min=0.75"]),
    "input_feeding": ("input feeding (decoder steps one token at a time)",
                      ["model.input_feeding=true"]),
}
CLASSIFY = {
    "baseline": ("the recipe as committed", []),
    "gru": ("GRU cells instead of LSTM", ["model.cell=gru"]),
    "rnn": ("vanilla RNN cells (tanh) instead of LSTM", ["model.cell=rnn"]),
    # (the recipe pooled with max until this ablation chose mean; results/ablation_nsmc.json
    # holds that run, whose baseline is max pooling)
    "pool_max": ("max pooling instead of mean", ["classify.pooling=max"]),
    "pool_final": ("final states instead of mean pooling", ["classify.pooling=final"]),
    "pool_mean": ("mean pooling", ["classify.pooling=mean"]),
    "pool_attention": ("attention pooling instead of mean", ["classify.pooling=attention"]),
    "char": ("characters (Hangul syllables) instead of sentencepiece",
             ["tokenizer.kind=char", "tokenizer.vocab_size=8000"]),
    "spm16k": ("sentencepiece 16k instead of 8k", ["tokenizer.vocab_size=16000"]),
    "spm4k": ("sentencepiece 4k instead of 8k", ["tokenizer.vocab_size=4000"]),
    "unidirectional": ("unidirectional encoder", ["model.bidirectional=false"]),
}
LM = {
    "baseline": ("the recipe as committed", []),
    "gru": ("GRU cells instead of LSTM", ["model.cell=gru"]),
    "bptt64": ("TBPTT chunks of 64 characters instead of 128", ["lm.bptt=64"]),
    "bptt256": ("TBPTT chunks of 256 characters instead of 128", ["lm.bptt=256"]),
    "lines": ("every line a sequence of its own instead of one running text",
              ["lm.mode=lines"]),
    "one_layer": ("1 layer instead of 2", ["model.encoder_layers=1"]),
    "dropout0": ("no dropout", ["model.dropout=0.0"]),
}
TAG = {
    "baseline": ("the recipe as committed", []),
    "gru": ("GRU cells instead of LSTM", ["model.cell=gru"]),
    "unidirectional": ("unidirectional encoder (left context only)",
                       ["model.bidirectional=false"]),
    "crf": ("a linear-chain CRF output (Viterbi) instead of softmax", ["tag.crf=true"]),
    "one_layer": ("1 layer instead of 2", ["model.encoder_layers=1"]),
    # round 1 (results/ablation_spacing_round1.json) ran from 256 units per direction
    "hidden512": ("256 units per direction instead of 128", ["model.hidden_size=512"]),
}
VARIANTS = {"seq2seq": SEQ2SEQ, "classify": CLASSIFY, "lm": LM, "tag": TAG}
RESULTS = Path(__file__).parent / "results"


def run_summary(run: Path, metric: str, higher_is_better: bool) -> dict:
    """The best validation value of `metric` in a run's log, and its throughput."""
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    key = f"valid_{metric}"
    valid = [r for r in records if key in r]
    rate = next((k for r in records for k in r if k.endswith("_per_s")), "tokens_per_s")
    train = [r for r in records if rate in r]
    pick = max if higher_is_better else min
    best = pick(valid, key=lambda r: r[key]) if valid else {}
    extra = [k for k in ("valid_chrf", "valid_ppl", "valid_macro_f1", "valid_bpc")
             if k in best]
    return {"metric": metric, "valid": round(best.get(key, float("nan")), 4),
            **{k: round(best[k], 4) for k in extra},
            "best_step": best.get("step"), "steps": max((r["step"] for r in records), default=0),
            "rate": rate, "per_s": round(sum(r[rate] for r in train[1:]) /
                                          max(1, len(train) - 1)),
            "curve": [(r["step"], round(r[key], 4)) for r in valid]}


def ablate_train(args) -> dict:
    from seqlab.config import load_config

    config = load_config(args.config, args.set)
    variants = VARIANTS[config.problem]
    names = args.variants or list(variants)
    unknown = [n for n in names if n not in variants]
    if unknown:
        sys.exit(f"unknown variant(s) {unknown}; choose from {list(variants)}")
    root = Path(args.runs)
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    rows = {}
    for i in range(0, len(names), args.parallel):
        group = names[i:i + args.parallel]
        procs = []
        for name in group:
            run = root / name
            if (run / "metrics.jsonl").exists() and not args.force:
                print(f"{name}: {run} exists, reusing it", file=sys.stderr)
                continue
            cmd = [sys.executable, "-m", "seqlab", "train", args.config, "--out", str(run),
                   "--quiet", "--set", f"train.max_minutes={args.minutes}",
                   "--set", f"train.valid_every={args.valid_every}", "--set", "train.threads=1",
                   # no test set, and greedy for the final report: only valid is judged
                   "--set", "data.test=null", "--set", "search.beam_size=1",
                   "--set", "search.length_penalty=0.0"]
            for override in args.set + variants[name][1]:
                cmd += ["--set", override]
            run.mkdir(parents=True, exist_ok=True)
            log = open(run.parent / f"{name}.log", "w")
            print(f"{time.strftime('%H:%M:%S')} start {name}", file=sys.stderr)
            procs.append((name, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                                 env=env)))
        for name, proc in procs:
            if proc.wait() != 0:
                print(f"{name} failed: see {root / (name + '.log')}", file=sys.stderr)
        for name in group:
            if (root / name / "metrics.jsonl").exists():
                rows[name] = {"change": variants[name][0],
                              **run_summary(root / name, config.stopping_metric,
                                            config.higher_is_better)}
    return {"kind": "train", "config": args.config, "minutes": args.minutes,
            "parallel": args.parallel, "threads_per_run": 1, "overrides": args.set,
            "valid_every": args.valid_every, "rows": rows}


def ablate_search(args) -> dict:
    from quality import score
    from seqlab.config import load_config
    from seqlab.data import read_parallel
    from seqlab.translate import Translator

    run = Path(args.run)
    config = load_config(run / "config.yaml")
    d = config.data
    pairs = read_parallel(d.path(d.valid), d.src, d.tgt)
    translator = Translator.from_checkpoint(run)
    rows = {}
    for beam in args.beams:
        for alpha in args.alphas:
            if beam == 1 and alpha != args.alphas[0]:
                continue  # greedy ignores the length penalty
            search = {"beam_size": beam, "length_penalty": alpha if beam > 1 else 0.0}
            r = score(translator, pairs.src, pairs.tgt, search, config.eval.bleu_tokenize)
            rows[f"beam{beam}_alpha{alpha}"] = {
                "beam": beam, "alpha": alpha if beam > 1 else None, "valid_bleu": r["bleu"],
                "valid_chrf": r["chrf"], "seconds": r["decode_seconds"]}
            print(rows[f"beam{beam}_alpha{alpha}"], file=sys.stderr)
    return {"kind": "search", "run": str(run), "rows": rows}


def table(result: dict) -> str:
    if result["kind"] == "search":
        lines = ["| beam | alpha | val BLEU | val chrF | decode s |", "|---|---|---|---|---|"]
        for r in result["rows"].values():
            lines.append(f"| {r['beam']} | {r['alpha'] if r['alpha'] is not None else '-'} | "
                         f"{r['valid_bleu']} | {r['valid_chrf']} | {r['seconds']} |")
        return "\n".join(lines)
    rows = result["rows"]
    if not rows:
        return "(no rows)"
    first = next(iter(rows.values()))
    base = rows.get("baseline", {}).get("valid")
    lines = [f"| variant | change | best valid {first['metric']} | vs baseline | steps "
             f"| {first['rate']} |", "|---|---|---|---|---|---|"]
    for name, r in rows.items():
        delta = f"{r['valid'] - base:+.4f}" if base is not None else "-"
        lines.append(f"| {name} | {r['change']} | {r['valid']} | {delta} | {r['steps']} | "
                     f"{r['per_s']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="what", required=True)
    t = sub.add_parser("train", help="train every variant for the same wall-clock budget")
    t.add_argument("config")
    t.add_argument("--minutes", type=float, default=12)
    t.add_argument("--parallel", type=int, default=2, help="runs at a time, 1 thread each")
    t.add_argument("--valid-every", type=int, default=100)
    t.add_argument("--variants", nargs="*", help="subset of the problem's variants: "
                   + "; ".join(f"{p}: {', '.join(v)}" for p, v in VARIANTS.items()))
    t.add_argument("--set", action="append", default=[], help="override for every variant")
    t.add_argument("--runs", default="runs/ablation")
    t.add_argument("--force", action="store_true", help="retrain variants already run")
    t.add_argument("--results", default=str(RESULTS / "ablation_train.json"))
    s = sub.add_parser("search", help="beam size x length penalty on the validation set")
    s.add_argument("run")
    s.add_argument("--beams", type=int, nargs="+", default=[1, 3, 5, 10])
    s.add_argument("--alphas", type=float, nargs="+", default=[0.0, 0.6, 1.0, 1.5])
    s.add_argument("--results", default=str(RESULTS / "ablation_search.json"))
    args = p.parse_args(argv)

    info = {"machine": machine_info(), "load_before": uptime()}
    start = time.time()
    result = ablate_train(args) if args.what == "train" else ablate_search(args)
    result.update(info, wall_seconds=round(time.time() - start, 1))
    path = Path(args.results)
    if path.exists():  # keep rows measured earlier under the same settings, on the same run
        old = json.loads(path.read_text())
        if all(old.get(k) == result.get(k) for k in ("kind", "config", "minutes", "run")):
            result["rows"] = {**old.get("rows", {}), **result["rows"]}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print(table(result))
    print(f"results: {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    run_main(main)
