"""A recipe of configs/ trained end to end on a wall-clock budget, its figures kept.

    python benchmarks/recipe.py configs/nsmc_sentiment.yaml --threads 1
    python benchmarks/recipe.py configs/shakespeare_char.yaml --threads 1 --samples 3

Trains the config with `seqlab train` (its own `train.max_minutes`, or `--minutes`) into
`--runs/NAME`, then writes `benchmarks/results/recipe_NAME.json`: the machine, the load
before and after, the overrides, the validation curve against training minutes (so a
table can read "the best validation at or before 3 / 10 / 30 minutes"), and the run's own
`results.json` (best checkpoint on valid, and test where the recipe has one). For a language
model, `--samples N` also keeps N generated texts (seeded). Every choice of the recipe is made
on validation; the test figures are only reported.
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

RESULTS = Path(__file__).parent / "results"


def curve(run: Path) -> list[dict]:
    """Every validation: step, training minutes so far, and its valid_* values."""
    rows = []
    for line in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        values = {k: v for k, v in record.items() if k.startswith("valid_")
                  and isinstance(v, (int, float)) and not isinstance(v, bool)}
        if values:
            rows.append({"step": record["step"],
                         "minutes": round(record.get("elapsed", float("nan")) / 60, 2),
                         **values})
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("config")
    p.add_argument("--threads", type=int, default=None, help="torch threads (train.threads)")
    p.add_argument("--minutes", type=float, default=None, help="override train.max_minutes")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--runs", default="runs/recipes")
    p.add_argument("--samples", type=int, default=0, help="lm: generated texts to keep")
    p.add_argument("--prime", default="\n", help="lm: the prime of the samples")
    p.add_argument("--name", default=None, help="default: the config's file name")
    args = p.parse_args(argv)

    name = args.name or Path(args.config).stem
    run = Path(args.runs) / name
    overrides = list(args.set)
    if args.threads:
        overrides.append(f"train.threads={args.threads}")
    if args.minutes:
        overrides.append(f"train.max_minutes={args.minutes}")
    info = {"machine": machine_info(), "load_before": uptime()}
    cmd = [sys.executable, "-m", "seqlab", "train", args.config, "--out", str(run)]
    for item in overrides:
        cmd += ["--set", item]
    start = time.time()
    env = dict(os.environ)
    if args.threads:
        env.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    done = subprocess.run(cmd, env=env)
    if done.returncode != 0:
        sys.exit(f"recipe.py: training failed (exit {done.returncode}); see {run}")
    result = {"config": args.config, "overrides": overrides, **info,
              "load_after": uptime(), "wall_seconds": round(time.time() - start, 1),
              "run": str(run), "curve": curve(run),
              "results": json.loads((run / "results.json").read_text(encoding="utf-8"))}
    if args.samples:
        from seqlab.problems.lm import Generator

        generator = Generator.from_checkpoint(run, device="cpu")
        result["samples"] = [
            {"prime": args.prime, "temperature": t, "seed": seed,
             "text": generator.generate(args.prime, 400, temperature=t, seed=seed)}
            for seed in range(1, args.samples + 1) for t in (0.8,)]
    path = RESULTS / f"recipe_{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"results: {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    run_main(main)
