"""Two runs of one recipe compared step by step: did a change of code change the results?

    python benchmarks/same_curve.py runs/before runs/after --out benchmarks/results/x.json

Reads both runs' metrics.jsonl and pairs the training-log and validation records by step
(only the steps both runs reached: a wall-clock budget ends them at different steps when
their speed differs). Reports, for every numeric field they share except time and speed, the
largest absolute and relative difference, and the validation curves side by side.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from machine import run_main

TIMING = ("elapsed", "tokens_per_s", "examples_per_s")


def records(run: Path) -> dict[tuple[int, str], dict]:
    """(step, "train" | "valid") -> the record's numeric fields."""
    out = {}
    for line in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines():
        r = json.loads(line)
        kind = "valid" if any(k.startswith("valid_") for k in r) else "train"
        out[(r["step"], kind)] = {k: v for k, v in r.items() if k not in TIMING
                                  and isinstance(v, (int, float)) and not isinstance(v, bool)}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("before")
    p.add_argument("after")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    a, b = records(Path(args.before)), records(Path(args.after))
    shared = sorted(set(a) & set(b))
    worst: dict[str, dict] = {}
    for key in shared:
        for field in set(a[key]) & set(b[key]):
            x, y = a[key][field], b[key][field]
            diff = abs(x - y)
            rel = diff / max(abs(x), 1e-12)
            w = worst.setdefault(field, {"max_abs": 0.0, "max_rel": 0.0, "at_step": None})
            if diff > w["max_abs"]:
                w.update(max_abs=diff, max_rel=rel, at_step=key[0])
    valid = [{"step": s, **{f: (a[(s, "valid")].get(f), b[(s, "valid")].get(f))
                            for f in ("valid_bleu", "valid_loss", "valid_chrf")}}
             for s, kind in shared if kind == "valid"]
    result = {"before": args.before, "after": args.after,
              "steps_compared": max((s for s, _ in shared), default=0),
              "steps_before": max(s for s, _ in a), "steps_after": max(s for s, _ in b),
              "largest_difference": worst, "valid_curve": valid}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print("| step | valid BLEU before | after | valid loss before | after |")
    print("|---|---|---|---|---|")
    for row in valid:
        print(f"| {row['step']} | {row['valid_bleu'][0]:.2f} | {row['valid_bleu'][1]:.2f} | "
              f"{row['valid_loss'][0]:.4f} | {row['valid_loss'][1]:.4f} |")
    for field, w in sorted(worst.items()):
        print(f"{field}: largest difference {w['max_abs']:.3g} ({w['max_rel']:.2g} relative) "
              f"at step {w['at_step']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    run_main(main)
