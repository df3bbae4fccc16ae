"""seqlab against JoeyNMT on Multi30k de->en: same data, same wall-clock budget, same machine,
at the same time.

    python benchmarks/vs_joeynmt.py --minutes 60

Both trainings start together and run side by side, one CPU thread each (on a 2-core machine
each gets one core, and both share memory bandwidth and caches the same way). JoeyNMT runs
through the peers' own scripts (`../shared/peers/joey_full.sh`: their GRU model on Moses-
tokenized, lowercased words, best checkpoint by validation BLEU, greedy and beam 5); seqlab runs
its recipe through `benchmarks/quality.py`. Set the peers up first:

    (cd ../shared/peers && bash setup.sh && bash prepare.sh)

Every output is scored here the same way: Moses-detokenized (JoeyNMT) or raw (seqlab) text,
sacrebleu 13a BLEU against the raw references, cased and lowercased, and chrF. JoeyNMT is trained
on lowercased text, so the lowercased BLEU is the fair comparison. Writes
benchmarks/results/vs_joeynmt.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from machine import machine_info, run_main, uptime

HERE = Path(__file__).parent
SCORE = r"""
import json, sys
import sacrebleu
from sacremoses import MosesDetokenizer
md = MosesDetokenizer(lang="en")
out = {}
for name, hyp, ref in json.loads(sys.argv[1]):
    hyps = [md.detokenize(l.split()) for l in open(hyp, encoding="utf-8").read().splitlines()]
    refs = open(ref, encoding="utf-8").read().splitlines()
    assert len(hyps) == len(refs), (hyp, len(hyps), len(refs))
    out[name] = {"bleu": round(sacrebleu.corpus_bleu(hyps, [refs]).score, 2),
                 "bleu_lc": round(sacrebleu.corpus_bleu(hyps, [refs], lowercase=True).score, 2),
                 "chrf": round(sacrebleu.corpus_chrf(hyps, [refs]).score, 2)}
print(json.dumps(out))
"""


def joey_steps(log: Path) -> dict:
    text = log.read_text(errors="replace") if log.exists() else ""
    pattern = r"Step:\s+(\d+)|Interrupt at epoch \d+, step (\d+)"  # logged, and the last
    steps = [int(a or b) for a, b in re.findall(pattern, text)]
    epochs = [int(e) for e in re.findall(r"Epoch\s+(\d+)", text)]
    return {"steps": max(steps, default=0), "epochs": max(epochs, default=0)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=60)
    p.add_argument("--threads", type=int, default=1, help="CPU threads for each toolkit")
    p.add_argument("--config", default="configs/multi30k_de_en.yaml")
    p.add_argument("--set", action="append", default=[], help="override for seqlab's recipe")
    p.add_argument("--peers", default=str(HERE.parent.parent / "shared" / "peers"))
    p.add_argument("--work", default=os.path.expanduser("~/.cache/seqlab-peers/work"))
    p.add_argument("--out-run", default="runs/vs_joeynmt")
    p.add_argument("--results", default=str(HERE / "results" / "vs_joeynmt.json"))
    args = p.parse_args(argv)

    peers, work = Path(args.peers).resolve(), Path(args.work)
    joey_py = work.parent / "joey-venv" / "bin" / "python"
    if not joey_py.exists() or not (work / "data" / "train.de").exists():
        sys.exit(f"JoeyNMT is not set up: run (cd {peers} && bash setup.sh && bash prepare.sh)")
    threads = str(args.threads)
    env = dict(os.environ, OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
    info = {"machine": machine_info(), "load_before": uptime()}
    ours_results = Path(args.results).with_name("vs_joeynmt_seqlab.json")
    start = time.time()
    joey = subprocess.Popen(["bash", str(peers / "joey_full.sh")],
                            env=dict(env, BUDGET_MIN=str(int(args.minutes)), WORK_DIR=str(work)),
                            stdout=open(Path(args.out_run + ".joey.log"), "w"),
                            stderr=subprocess.STDOUT)
    ours = subprocess.Popen([sys.executable, str(HERE / "quality.py"), args.config,
                             "--minutes", str(args.minutes), "--out-run", args.out_run,
                             "--set", f"train.threads={threads}", *sum([["--set", s] for s in
                                                                        args.set], []),
                             "--results", str(ours_results)],
                            env=env, stdout=open(Path(args.out_run + ".seqlab.log"), "w"),
                            stderr=subprocess.STDOUT)
    rc = {"joeynmt": joey.wait(), "seqlab": ours.wait()}
    wall = round(time.time() - start, 1)
    if any(rc.values()):
        sys.exit(f"failed: {rc}; see {args.out_run}.joey.log / {args.out_run}.seqlab.log")

    tag, raw = "joey_full", work / "data" / "raw"
    jobs = [(f"{split}_{mode}", str(work / "hyps" / f"{tag}_{split}_{mode}.txt"),
             str(raw / f"{split}.en")) for split in ("val", "test2016")
            for mode in ("greedy", "beam5")]
    joey_scores = json.loads(subprocess.check_output([str(joey_py), "-c", SCORE,
                                                      json.dumps(jobs)]))
    seqlab = json.loads(ours_results.read_text())
    ours_scores = {f"{split}_{mode}": {k: seqlab["scores"][name][search][k]
                                       for k in ("bleu", "bleu_lc", "chrf")}
                   for split, name in (("val", "valid"), ("test2016", "test"))
                   for mode, search in (("greedy", "greedy"), ("beam5", "recipe"))}
    records = [json.loads(line) for line in
               (Path(args.out_run) / "metrics.jsonl").read_text().splitlines()]
    result = {
        "minutes": args.minutes, "threads_each": args.threads, "wall_seconds": wall, **info,
        "load_after": uptime(),
        "joeynmt": {"config": str(peers / "configs" / "joey_gru_full.yaml"),
                    **joey_steps(work / "logs" / f"{tag}_train.log"), "scores": joey_scores},
        "seqlab": {"config": args.config, "overrides": args.set, "run": args.out_run,
                   "steps": max(r["step"] for r in records),
                   "epochs": max(r.get("epoch", 0) for r in records),
                   "search": seqlab["recipe_search"], "scores": ours_scores},
    }
    path = Path(args.results)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print("| toolkit | steps | val BLEU greedy / beam 5 (lc) | test2016 BLEU greedy / beam 5 "
          "(lc) | test2016 beam 5 cased | test2016 chrF beam 5 |")
    print("|---|---|---|---|---|---|")
    for name in ("joeynmt", "seqlab"):
        r, s = result[name], result[name]["scores"]
        print(f"| {name} | {r['steps']} | {s['val_greedy']['bleu_lc']} / "
              f"{s['val_beam5']['bleu_lc']} | {s['test2016_greedy']['bleu_lc']} / "
              f"{s['test2016_beam5']['bleu_lc']} | {s['test2016_beam5']['bleu']} | "
              f"{s['test2016_beam5']['chrf']} |")
    print(f"results: {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    run_main(main)
