"""Ablations of a recipe at a fixed wall-clock budget, judged on the validation set.

    python benchmarks/ablate.py train configs/multi30k_de_en.yaml --minutes 12 --parallel 2
    python benchmarks/ablate.py search runs/m30k_de_en --beams 1 3 5 10 --alphas 0 0.6 1 1.5

`train`: every variant (the recipe itself = "baseline", then one change each, see VARIANTS) is
trained for the same number of minutes, `--parallel` runs at a time with one CPU thread each, so
each run gets one core and every pair shares the machine the same way. The score is the best
greedy validation BLEU seen by training (validation every `--valid-every` steps and at the
end of the budget; validation time counts against the budget). Test sets are never read.

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

# name -> (what changes, --set overrides); one change from the recipe each
VARIANTS = {
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
RESULTS = Path(__file__).parent / "results"


def run_summary(run: Path) -> dict:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    valid = [r for r in records if "valid_bleu" in r]
    train = [r for r in records if "tokens_per_s" in r]
    best = max(valid, key=lambda r: r["valid_bleu"]) if valid else {}
    return {"valid_bleu": round(best.get("valid_bleu", 0.0), 2),
            "valid_chrf": round(best.get("valid_chrf", 0.0), 2),
            "valid_ppl": round(min((r["valid_ppl"] for r in valid), default=float("nan")), 2),
            "best_step": best.get("step"), "steps": max((r["step"] for r in records), default=0),
            "tokens_per_s": round(sum(r["tokens_per_s"] for r in train[1:]) /
                                  max(1, len(train) - 1)),
            "curve": [(r["step"], round(r["valid_bleu"], 2)) for r in valid]}


def ablate_train(args) -> dict:
    names = args.variants or list(VARIANTS)
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        sys.exit(f"unknown variant(s) {unknown}; choose from {list(VARIANTS)}")
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
            for override in args.set + VARIANTS[name][1]:
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
                rows[name] = {"change": VARIANTS[name][0], **run_summary(root / name)}
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
    base = result["rows"].get("baseline", {}).get("valid_bleu")
    lines = ["| variant | change | val BLEU (greedy) | vs baseline | val chrF | steps "
             "| tgt tok/s |", "|---|---|---|---|---|---|---|"]
    for name, r in result["rows"].items():
        delta = f"{r['valid_bleu'] - base:+.2f}" if base is not None else "-"
        lines.append(f"| {name} | {r['change']} | {r['valid_bleu']} | {delta} | "
                     f"{r['valid_chrf']} | {r['steps']} | {r['tokens_per_s']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="what", required=True)
    t = sub.add_parser("train", help="train every variant for the same wall-clock budget")
    t.add_argument("config")
    t.add_argument("--minutes", type=float, default=12)
    t.add_argument("--parallel", type=int, default=2, help="runs at a time, 1 thread each")
    t.add_argument("--valid-every", type=int, default=100)
    t.add_argument("--variants", nargs="*", help=f"subset of {list(VARIANTS)}")
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
