"""Load on `seqlab serve` over loopback: throughput and latency for 1, 8 and 64 concurrent
clients, each sending one sentence per request, with dynamic batching and without.

    python benchmarks/serve_load.py RUN                      # e.g. a Multi30k de-en run
    python benchmarks/serve_load.py RUN --clients 1 8 64 --requests 384 --seconds 60

For each server (batched: `--max-batch 64`; unbatched: `--max-batch 1`,
every request decoded alone) the script starts `seqlab serve RUN --port 0 --threads T
[--serve-options]` as a process of its own, warms it up, then for each decoding mode
(greedy, and beam search with the run's settings) and each number of clients runs a closed
loop: every client sends a
sentence of --sentences (test2016.de by default, in order), waits for the answer, sends the
next; a setting ends after --requests answers or --seconds seconds, whichever comes first,
so the script stops by itself. Throughput is answers per second of wall time; latency is
from sending to the whole answer, per request (p50, p99); errors count any answer that is
not a 200 (or no answer). The server's peak resident memory (VmHWM) is read from /proc at
the end of each server's run. Client (httpx2's async client, one process) and server share
the machine: with --threads 1 the server has one core and the client the other.

The bar (issue 14): with 64 clients, the batched server's throughput >= 3x the unbatched
one's, and its p99 latency < 1 s. Writes benchmarks/results/serve_load.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx2 as httpx

from machine import machine_info, run_main, uptime

HERE = Path(__file__).resolve().parent
DEFAULT_SENTENCES = HERE.parent.parent / "shared" / "data" / "multi30k" / "test2016.de"
SERVERS = {"batched": ["--max-batch", "64"], "unbatched": ["--max-batch", "1"]}


def start_server(run: str, threads: int, options: list[str]) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "seqlab", "serve", run, "--port", "0",
                             "--device", "cpu", "--threads", str(threads), *options],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    line = proc.stdout.readline()
    if " at http://" not in line:
        proc.kill()
        sys.exit(f"serve_load.py: the server did not start: {line}{proc.stderr.read()}")
    return proc, line.split(" at ")[1].split()[0].rstrip("/")


def batching(url: str) -> dict:
    """The server's batching settings and counts so far (its /model)."""
    return httpx.get(f"{url}/model", timeout=30).json()["batching"]


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def load(url: str, sentences: list[str], body: dict, clients: int, requests: int,
               seconds: float) -> dict:
    """A closed loop of `clients` concurrent clients; the setting's figures."""
    latencies: list[float] = []
    errors, next_index = 0, 0
    start = time.perf_counter()

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal errors, next_index
        while next_index < requests and time.perf_counter() - start < seconds:
            text = sentences[next_index % len(sentences)]
            next_index += 1
            sent = time.perf_counter()
            try:
                r = await http.post(f"{url}/translate", json={**body, "texts": [text]})
                ok = r.status_code == 200 and r.json()["results"][0]["hypotheses"]
            except httpx.HTTPError:
                ok = False
            if ok:
                latencies.append(time.perf_counter() - sent)
            else:
                errors += 1

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=120, limits=limits) as http:
        await asyncio.gather(*(client(http) for _ in range(clients)))
    wall = time.perf_counter() - start
    ms = sorted(1000 * x for x in latencies)

    def pct(q: float) -> float:
        return ms[min(len(ms) - 1, int(q * len(ms)))] if ms else float("nan")

    return {"clients": clients, "answers": len(ms), "errors": errors, "seconds": wall,
            "per_second": len(ms) / wall, "p50_ms": pct(0.50), "p99_ms": pct(0.99),
            "mean_ms": statistics.fmean(ms) if ms else float("nan")}


def measure_server(name: str, args, sentences: list[str], modes: dict) -> dict:
    proc, url = start_server(args.run, args.threads,
                             SERVERS[name] + shlex.split(args.serve_options))
    try:
        for body in modes.values():  # warm-up: first calls allocate and fill caches
            asyncio.run(load(url, sentences, body, 4, 16, 30))
        rows = []
        for mode, body in modes.items():
            for clients in args.clients:
                before = batching(url)
                row = {"server": name, "mode": mode,
                       **asyncio.run(load(url, sentences, body, clients, args.requests,
                                          args.seconds))}
                after = batching(url)
                calls = after["calls"] - before["calls"]
                row["mean_batch"] = (after["items"] - before["items"]) / max(calls, 1)
                rows.append(row)
                print(f"{name:9s} {mode:6s} {clients:3d} clients: {row['per_second']:7.1f} "
                      f"sent/s  p50 {row['p50_ms']:7.1f} ms  p99 {row['p99_ms']:7.1f} ms  "
                      f"errors {row['errors']}  mean batch {row['mean_batch']:.1f}  "
                      f"({row['answers']} answers, {row['seconds']:.1f} s)", flush=True)
        return {"rows": rows, "peak_rss_mib": peak_rss_mib(proc.pid), "batching": batching(url)}
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="a seq2seq run directory (e.g. the Multi30k de-en recipe's)")
    p.add_argument("--sentences", default=str(DEFAULT_SENTENCES),
                   help="one sentence per line (default: ../shared/data/multi30k/test2016.de)")
    p.add_argument("--clients", type=int, nargs="+", default=[1, 8, 64])
    p.add_argument("--requests", type=int, default=384, help="answers per setting (at most)")
    p.add_argument("--seconds", type=float, default=60, help="time per setting (at most)")
    p.add_argument("--threads", type=int, default=1, help="the server's torch threads")
    p.add_argument("--modes", nargs="+", default=["greedy", "beam"],
                   choices=["greedy", "beam"])
    p.add_argument("--serve-options", default="", metavar="OPTIONS",
                   help="more options for both servers, e.g. '--precision int8 --stopping "
                   "heuristic'")
    p.add_argument("--output", default=str(HERE / "results" / "serve_load.json"))
    p.add_argument("--table", metavar="RESULTS", help="only print the README's table of a "
                   "results file (and measure nothing)")
    p.add_argument("--sweep", action="store_true", help="instead of the servers: the model's "
                   "own decoding speed in this process by batch size (1 .. 128 sentences), "
                   "written to results/serve_batch_sweep.json (_threadsN.json for --threads N > 1)")
    args = p.parse_args()
    if args.table:
        print(table(json.loads(Path(args.table).read_text())))
        return
    if not Path(args.sentences).is_file():
        raise FileNotFoundError(f"--sentences {args.sentences}: no such file")
    sentences = [s for s in Path(args.sentences).read_text(encoding="utf-8").splitlines()
                 if s.strip()]
    modes = {m: {"mode": m} for m in args.modes}
    if args.sweep:
        return sweep(args, sentences)
    result = {"run": args.run, "machine": machine_info(), "load_before": uptime(),
              "settings": {k: getattr(args, k) for k in ("clients", "requests", "seconds",
                                                         "threads", "modes", "sentences",
                                                         "serve_options")},
              "servers": {name: options for name, options in SERVERS.items()}}
    for name in SERVERS:
        result[name] = measure_server(name, args, sentences, modes)
    result["load_after"] = uptime()
    result["bar"] = bar(result, args)
    Path(args.output).write_text(json.dumps(result, indent=1) + "\n")
    for line in result["bar"]["lines"]:
        print(line)
    print(f"wrote {args.output}")


def sweep(args, sentences: list[str]) -> None:
    """Sentences per second of Translator.translate by batch size, in this process, on
    --threads threads: what batching can gain at most, without HTTP."""
    import torch

    from seqlab.translate import Translator

    torch.set_num_threads(args.threads)
    translator = Translator.from_checkpoint(args.run, device="cpu")
    options = {"greedy": {"beam_size": 1, "n_best": 1, "length_penalty": 0.0},
               "beam": {}}  # beam: the run's search section
    rows = []
    for mode in args.modes:
        translator.translate(sentences[:8], **options[mode])  # warm-up
        for size in (1, 8, 16, 32, 64, 128):
            n = 48 if size == 1 else 256
            start = time.perf_counter()
            for i in range(0, n, size):
                translator.translate(sentences[i : i + size], batch_size=size, **options[mode])
            rate = n / (time.perf_counter() - start)
            rows.append({"mode": mode, "batch": size, "sentences": n, "per_second": rate})
            print(f"{mode:6s} batch {size:3d}: {rate:6.1f} sent/s", flush=True)
    suffix = "" if args.threads == 1 else f"_threads{args.threads}"
    out = HERE / "results" / f"serve_batch_sweep{suffix}.json"
    out.write_text(json.dumps({"run": args.run, "machine": machine_info(), "load": uptime(),
                               "threads": args.threads, "rows": rows}, indent=1) + "\n")
    print(f"wrote {out}")


def table(result: dict) -> str:
    """A results file as a markdown table: a row per mode and number of clients."""
    lines = ["| mode | clients | batched sent/s | p50 / p99 ms | unbatched sent/s | "
             "p50 / p99 ms | batched / unbatched |", "|---|---|---|---|---|---|---|"]
    unbatched = {(r["mode"], r["clients"]): r for r in result["unbatched"]["rows"]}
    for b in result["batched"]["rows"]:
        u = unbatched[b["mode"], b["clients"]]
        lines.append(f"| {b['mode']} | {b['clients']} | {b['per_second']:.1f} | "
                     f"{b['p50_ms']:.0f} / {b['p99_ms']:.0f} | {u['per_second']:.1f} | "
                     f"{u['p50_ms']:.0f} / {u['p99_ms']:.0f} | "
                     f"{b['per_second'] / u['per_second']:.2f}x |")
    return "\n".join(lines)


def bar(result: dict, args) -> dict:
    """Issue 14's bar at the most clients: batched / unbatched throughput >= 3, p99 < 1 s."""
    top, lines, met = max(args.clients), [], True
    for mode in args.modes:
        b, u = ({r["mode"]: r for r in result[s]["rows"] if r["clients"] == top}[mode]
                for s in ("batched", "unbatched"))
        ratio = b["per_second"] / u["per_second"]
        ok = ratio >= 3 and b["p99_ms"] < 1000 and b["errors"] == 0
        met = met and ok
        lines.append(f"{mode}, {top} clients: batched {b['per_second']:.1f} vs unbatched "
                     f"{u['per_second']:.1f} sent/s = {ratio:.2f}x, batched p99 "
                     f"{b['p99_ms']:.0f} ms -> {'met' if ok else 'NOT met'}")
    return {"met": met, "lines": lines}


if __name__ == "__main__":
    run_main(main)
