"""The forecasting recipes end to end: the model against seasonal-naive, ETS and SARIMA.

    python benchmarks/forecast.py                       # co2 and sunspots, one thread
    python benchmarks/forecast.py --series sunspots --seeds 3

For each series, trains configs/forecast_SERIES.yaml with `seqlab train` (train.threads 1)
into --runs/forecast_SERIES; its report holds the rolling-origin test table, the model and
the peers (seasonal-naive, ETS, SARIMA, fitted on the training part and re-filtered at every
origin) on the same origins: MAE, RMSE, MASE. Then, for the record of the choices made on
validation, trains the other multi-step strategy (direct <-> recursive) and, with --seeds N,
the recipe with seeds 2..N (both without the peers, which do not depend on them). Writes
benchmarks/results/forecast_SERIES.json: the machine, the load, wall times, the table, the
bar (MASE below seasonal-naive; at most the better of ETS and SARIMA), the validation MASE of
both strategies, the other seeds' figures and the validation curve. Test figures are only
reported: every choice is made on validation.
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
from recipe import curve

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results"
METRICS = ("mase", "mae", "rmse")


def train(config: Path, run: Path, overrides: list[str]) -> tuple[dict, float]:
    """`seqlab train` on one thread -> (results.json, wall seconds)."""
    cmd = [sys.executable, "-m", "seqlab", "train", str(config), "--out", str(run), "--quiet",
           "--set", "train.threads=1", *[a for item in overrides for a in ("--set", item)]]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    start = time.time()
    done = subprocess.run(cmd, env=env)
    if done.returncode != 0:
        sys.exit(f"forecast.py: training failed (exit {done.returncode}); see {run}")
    return (json.loads((run / "results.json").read_text(encoding="utf-8")),
            round(time.time() - start, 1))


def table(results: dict) -> dict:
    """name -> {mase, mae, rmse} of the test part."""
    return {name: {k: m[k] for k in METRICS} for name, m in results["test"].items()}


def markdown(name: str, rows: dict) -> str:
    lines = [f"| {name} | MASE | MAE | RMSE |", "|---|---|---|---|"]
    lines += [f"| {k} | {v['mase']:.3f} | {v['mae']:.4g} | {v['rmse']:.4g} |"
              for k, v in rows.items()]
    return "\n".join(lines)


def one_series(series: str, runs: Path, seeds: int, alternative: bool) -> dict:
    import yaml

    config = ROOT / "configs" / f"forecast_{series}.yaml"
    strategy = yaml.safe_load(config.read_text(encoding="utf-8"))["forecast"]["strategy"]
    other = "recursive" if strategy == "direct" else "direct"
    info = {"config": str(config.relative_to(ROOT)), "machine": machine_info(),
            "load_before": uptime()}
    run = runs / f"forecast_{series}"
    results, seconds = train(config, run, [])
    rows = table(results)
    model, peers = rows["model"]["mase"], rows
    best_classical = min(peers["ets"]["mase"], peers["sarima"]["mase"])
    out = {**info, "wall_seconds": seconds, "run": str(run),
           "test_origins": results["test"]["model"]["origins"], "horizon": results["horizon"],
           "season": results["season"], "mase_scale": results["mase_scale"],
           "bounds": results["bounds"], "times": results["times"], "table": rows,
           "valid": {k: results["valid"][k] for k in METRICS},
           "peers_chosen": {"ets": results["test"]["ets"]["model"],
                            "ets_aic": results["test"]["ets"]["aic"],
                            "sarima_order": results["test"]["sarima"]["order"],
                            "sarima_seasonal_order": results["test"]["sarima"]["seasonal_order"],
                            "sarima_tried": results["test"]["sarima"]["tried"]},
           "bar": {"below_seasonal_naive": model < peers["seasonal_naive"]["mase"],
                   "at_most_best_classical": model <= best_classical,
                   "best_classical_mase": best_classical},
           "mae_by_horizon": {k: v["mae_by_horizon"] for k, v in results["test"].items()},
           "picture": results["picture"], "curve": curve(run)}
    if alternative:
        alt, alt_seconds = train(config, runs / f"forecast_{series}_{other}",
                                 [f"forecast.strategy={other}", "forecast.peers=false"])
        out["strategies_on_valid"] = {strategy: out["valid"],
                                      other: {k: alt["valid"][k] for k in METRICS}}
        out["strategies_on_test"] = {strategy: rows["model"], other: table(alt)["model"]}
        out["alternative_wall_seconds"] = alt_seconds
    if seeds > 1:
        out["seeds"] = {"1": {"valid": out["valid"], "test": rows["model"]}}
        for seed in range(2, seeds + 1):
            r, _ = train(config, runs / f"forecast_{series}_seed{seed}",
                         [f"train.seed={seed}", "forecast.peers=false"])
            out["seeds"][str(seed)] = {"valid": {k: r["valid"][k] for k in METRICS},
                                       "test": table(r)["model"]}
    out["load_after"] = uptime()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--series", nargs="+", default=["co2", "sunspots"])
    p.add_argument("--runs", default="runs/forecast", type=Path)
    p.add_argument("--seeds", type=int, default=1, help="train the recipe with seeds 1..N")
    p.add_argument("--no-alternative", dest="alternative", action="store_false",
                   help="skip the other strategy's run")
    args = p.parse_args(argv)
    for series in args.series:
        result = one_series(series, args.runs, args.seeds, args.alternative)
        path = RESULTS / f"forecast_{series}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n",
                        encoding="utf-8")
        print(markdown(series, result["table"]))
        print(f"bar: {result['bar']}; results: {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    run_main(main)
