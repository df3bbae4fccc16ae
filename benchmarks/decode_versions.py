"""Decoding speed of two seqlab source trees on the same trained model, side by side in one run.

    python benchmarks/decode_versions.py RUN --before /tmp/old/src --after src \\
        --batches 16,64,128 --rounds 2 --out benchmarks/results/decode_versions.json

Each round runs a fresh process per source tree (PYTHONPATH=TREE), alternating before /
after, on one torch thread: it loads RUN's best checkpoint, warms up, then translates the
first --sentences lines of --data at each batch size with the run's own search settings
(beam 5 for the Multi30k recipe) and reports sentences per second, plus greedy at the same
sizes with --greedy. A change to decoding is judged by the after / before ratio of the same
round (both sides share whatever else the machine was doing), never by absolute times.
Outputs of the two trees are compared too: a speed-up that changes translations is a bug.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from machine import machine_info, run_main, uptime

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "data" / "multi30k" / "test2016.de"

CHILD = r"""
import hashlib, json, sys, time, torch
torch.set_num_threads(1)
from seqlab.translate import Translator
run, data, n, batches, modes = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
translator = Translator.from_checkpoint(run, device="cpu")
sentences = open(data, encoding="utf-8").read().splitlines()[:n]
rows = []
for mode in modes.split(","):
    search = {"beam_size": 1} if mode == "greedy" else {}
    translator.translate(sentences[:16], batch_size=16, **search)  # warm-up
    for size in [int(b) for b in batches.split(",")]:
        outputs, start = [], time.perf_counter()
        for i in range(0, len(sentences), size):
            outputs += translator.translate(sentences[i:i + size], batch_size=size, **search)
        seconds = time.perf_counter() - start
        digest = hashlib.sha256("\n".join(outputs).encode()).hexdigest()[:16]
        rows.append({"mode": mode, "batch": size, "per_second": len(sentences) / seconds,
                     "outputs_sha256": digest})
print(json.dumps(rows))
"""


def measure(tree: str, args) -> list[dict]:
    env = {**os.environ, "PYTHONPATH": str(Path(tree).resolve())}
    out = subprocess.run([sys.executable, "-c", CHILD, args.run, args.data,
                          str(args.sentences), args.batches, ",".join(args.modes)],
                         env=env, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"decode_versions.py: the tree {tree} failed: {out.stderr.strip()[-400:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="a seq2seq run directory")
    p.add_argument("--before", required=True, help="the older source tree (its src/ folder)")
    p.add_argument("--after", required=True, help="the newer source tree (its src/ folder)")
    p.add_argument("--data", default=str(DEFAULT_DATA), help="one sentence per line")
    p.add_argument("--sentences", type=int, default=256)
    p.add_argument("--batches", default="16,64,128", help="comma-separated batch sizes")
    p.add_argument("--modes", nargs="+", default=["beam"], choices=["beam", "greedy"])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--out", default=str(HERE / "results" / "decode_versions.json"))
    args = p.parse_args()
    for tree in (args.before, args.after):
        if not (Path(tree) / "seqlab").is_dir():
            sys.exit(f"decode_versions.py: {tree} has no seqlab/ package (give its src/ folder)")
    load_before, rounds = uptime(), []
    for r in range(args.rounds):
        before, after = measure(args.before, args), measure(args.after, args)
        for b, a in zip(before, after, strict=True):
            row = {"round": r, "mode": b["mode"], "batch": b["batch"],
                   "before": b["per_second"], "after": a["per_second"],
                   "ratio": a["per_second"] / b["per_second"],
                   "same_outputs": b["outputs_sha256"] == a["outputs_sha256"]}
            rounds.append(row)
            print(f"round {r} {row['mode']:6s} batch {row['batch']:3d}: before "
                  f"{row['before']:6.1f}  after {row['after']:6.1f} sent/s  "
                  f"x{row['ratio']:.2f}  same outputs: {row['same_outputs']}", flush=True)
    result = {"run": args.run, "before": args.before, "after": args.after,
              "sentences": args.sentences, "data": args.data, "machine": machine_info(),
              "load_before": load_before, "load_after": uptime(), "rows": rounds}
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    run_main(main)
