"""Speed of `seqlab.recurrent.Recurrent`: the `cells` backend against the `fused` one (CPU).

A hand-run benchmark, not a test:

    python benchmarks/bench_recurrent.py [--repeats 10] [--threads N] [--out PATH]

Workload: one bidirectional layer, B=64 sequences padded to S=30 steps (lengths drawn
uniformly in 15..30, the longest 30), E=H=256 (H per direction), float32, CPU. Each config
is timed forward + backward (a training step of the layer, gradient to the input included)
and forward only under `torch.no_grad()` (decoding). Configs:

    lstm / gru        torch.nn.LSTM / GRU on a packed batch (the reference), and
                      Recurrent with backend="fused" and backend="cells"
    gru reset-before  the original Cho et al. GRU, which only backend="cells" runs

Absolute times depend on the machine (and on what else runs on it), so the same run also
times a float32 matmul of the size of the layer's input projection,
(B*S, E) x (E, 4H) = (1920, 256) x (256, 1024), and every time is also given as a multiple
of that matmul's time. The key figure is cells/fused: both sides are measured in the same
run, and every repeat runs every config once, in a rotating order, so that a change in
machine load hits all of them alike. Ratios are computed per repeat (paired), then the
median is taken.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from machine import ReferenceMatmul, announce, run_main, summary, uptime
from seqlab.recurrent import Recurrent

B, S, E, H = 64, 30, 256, 256  # batch, steps, input size, hidden size per direction
MIN_LEN = 15
INNER = {"fwd_bwd": 1, "fwd": 2, "matmul": 10}  # calls per timed sample (time is per call)
WARMUP = 2  # untimed calls of each config before the first repeat


# ---------------------------------------------------------------------------- the workload
def make_batch(seed: int = 0) -> tuple[Tensor, Tensor]:
    """x (B, S, E) float32 with zeros at padding, lengths (B,) in MIN_LEN..S with max S."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(MIN_LEN, S + 1, (B,), generator=g)
    lengths[0] = S
    x = torch.randn(B, S, E, generator=g)
    x = x * (torch.arange(S)[None, :] < lengths[:, None]).unsqueeze(-1)  # (B, S, E)
    return x, lengths


def torch_direct(rnn: nn.Module) -> Callable:
    """torch.nn.LSTM / GRU on a packed batch, as one would call it without seqlab."""

    def run(x: Tensor, lengths: Tensor):
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        out, final = rnn(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
        return out, final

    return run


def make_configs() -> list[dict]:
    """Every config shares the weights of its cell, so their outputs can be compared."""
    configs = []
    for cell in ("lstm", "gru"):
        torch.manual_seed(0)
        fused = Recurrent(cell, E, H, bidirectional=True, backend="fused")
        cells = Recurrent(cell, E, H, bidirectional=True, backend="cells")
        cells.load_state_dict(fused.state_dict())
        label = "gru (reset-after)" if cell == "gru" else cell
        configs += [
            dict(name=f"{cell}/torch", cell=label, impl="torch.nn", params=fused,
                 run=torch_direct(fused.rnn)),
            dict(name=f"{cell}/fused", cell=label, impl="fused", params=fused, run=fused),
            dict(name=f"{cell}/cells", cell=label, impl="cells", params=cells, run=cells),
        ]
    torch.manual_seed(0)
    before = Recurrent("gru", E, H, bidirectional=True, backend="cells", reset_after=False)
    configs.append(dict(name="gru_before/cells", cell="gru (reset-before)", impl="cells",
                        params=before, run=before))
    return configs


def loss_of(out: Tensor, final) -> Tensor:
    finals = final if isinstance(final, tuple) else (final,)
    return out.sum() + sum(f.sum() for f in finals)


def fwd_bwd(config: dict, x: Tensor, lengths: Tensor) -> None:
    for p in config["params"].parameters():
        p.grad = None
    xg = x.detach().requires_grad_(True)  # an encoder needs the gradient to its embeddings
    loss_of(*config["run"](xg, lengths)).backward()


def fwd(config: dict, x: Tensor, lengths: Tensor) -> None:
    with torch.no_grad():
        config["run"](x, lengths)


def check_same_function(configs: list[dict], x: Tensor, lengths: Tensor) -> dict[str, float]:
    """Max |difference| of outputs and of input gradients, each config against cell/torch."""
    result = {}
    refs = {}
    for c in configs:
        xg = x.detach().requires_grad_(True)
        out, final = c["run"](xg, lengths)
        loss_of(out, final).backward()
        key = c["name"].split("/")[0]
        if key not in refs:
            refs[key] = (out.detach(), xg.grad)
            continue
        ref_out, ref_grad = refs[key]
        diff = max((out.detach() - ref_out).abs().max().item(),
                   (xg.grad - ref_grad).abs().max().item())
        result[c["name"]] = diff
    for c in configs:
        for p in c["params"].parameters():
            p.grad = None
    return result


# ---------------------------------------------------------------------------- timing
def timed(fn: Callable[[], None], inner: int) -> float:
    """Milliseconds per call, averaged over `inner` back-to-back calls."""
    t0 = time.perf_counter()
    for _ in range(inner):
        fn()
    return (time.perf_counter() - t0) / inner * 1e3


def run(repeats: int) -> dict:
    x, lengths = make_batch()
    configs = make_configs()
    matmul = ReferenceMatmul((B * S, E, 4 * H), inner=INNER["matmul"])  # (B*S, E) x (E, 4H)

    diffs = check_same_function(configs, x, lengths)
    for c in configs:
        for _ in range(WARMUP):
            fwd_bwd(c, x, lengths)
            fwd(c, x, lengths)
    matmul.warm_up(WARMUP)

    # every repeat: the matmul and every config once (fwd+bwd and fwd), in a rotating order
    tasks: list[tuple[str, str, Callable[[], float]]] = [("matmul", "matmul", matmul.sample)]
    for c in configs:
        for kind, step in (("fwd_bwd", fwd_bwd), ("fwd", fwd)):
            sample = partial(timed, partial(step, c, x, lengths), INNER[kind])
            tasks.append((c["name"], kind, sample))
    samples: dict[tuple[str, str], list[float]] = {(n, k): [] for n, k, _ in tasks}
    for r in range(repeats):
        shift = (r * 5) % len(tasks)
        order = tasks[shift:] + tasks[:shift]
        if r % 2:
            order.reverse()
        for name, kind, sample in order:
            samples[(name, kind)].append(sample())  # ms per call

    mm = samples[("matmul", "matmul")]
    result = {"matmul": {**matmul.describe(), "ms": summary(mm),
                         "gflops": matmul.gflops(statistics.median(mm)),
                         "samples_ms": [round(v, 4) for v in mm]},
              "fill": lengths.sum().item() / (B * S),  # real steps / padded steps
              "configs": []}
    for c in configs:
        entry = {"name": c["name"], "cell": c["cell"], "impl": c["impl"]}
        for kind in ("fwd_bwd", "fwd"):
            t = samples[(c["name"], kind)]
            entry[f"{kind}_ms"] = summary(t)
            entry[f"{kind}_samples_ms"] = [round(v, 3) for v in t]
            entry[f"{kind}_per_matmul"] = statistics.median(a / m for a, m in zip(t, mm))
        if c["name"] in diffs:
            entry["max_abs_diff_vs_torch"] = diffs[c["name"]]
        result["configs"].append(entry)
    # paired ratios: cells / fused (and fused / torch.nn), within each repeat
    for cell in ("lstm", "gru"):
        for num, den in (("cells", "fused"), ("fused", "torch")):
            for kind in ("fwd_bwd", "fwd"):
                a = samples[(f"{cell}/{num}", kind)]
                b = samples[(f"{cell}/{den}", kind)]
                ratios = [p / q for p, q in zip(a, b)]
                result.setdefault("ratios", {})[f"{cell} {num}/{den} {kind}"] = summary(ratios)
                # the best (least disturbed) times: robust to bursts of load, which only add
                result["ratios"][f"{cell} {num}/{den} {kind} best"] = min(a) / min(b)
    a, b = samples[("gru_before/cells", "fwd_bwd")], samples[("gru/cells", "fwd_bwd")]
    result["ratios"]["gru cells reset-before/reset-after fwd_bwd"] = summary(
        [p / q for p, q in zip(a, b)])
    return result


# ---------------------------------------------------------------------------- report
def table(result: dict) -> str:
    ratios = result["ratios"]
    lines = [
        "| cell | implementation | fwd+bwd ms, median [q1-q3] | fwd ms | fwd+bwd / matmul "
        "| fwd / matmul | cells / fused (fwd+bwd, fwd) |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in result["configs"]:
        t, f = c["fwd_bwd_ms"], c["fwd_ms"]
        ratio = ""
        key = c["name"].split("/")[0]
        if c["impl"] == "cells" and f"{key} cells/fused fwd_bwd" in ratios:
            ratio = (f"**{ratios[f'{key} cells/fused fwd_bwd']['median']:.2f}x**, "
                     f"{ratios[f'{key} cells/fused fwd']['median']:.2f}x")
        lines.append(
            f"| {c['cell']} | {c['impl']} | {t['median']:.1f} [{t['q1']:.1f}-{t['q3']:.1f}] "
            f"| {f['median']:.1f} | {c['fwd_bwd_per_matmul']:.0f} | {c['fwd_per_matmul']:.0f} "
            f"| {ratio} |")
    mm = result["matmul"]
    lines.append("")
    lines.append(f"Reference matmul (1920, 256) x (256, 1024) float32: "
                 f"{mm['ms']['median']:.3f} ms median = {mm['gflops']:.1f} GFLOP/s.")
    best = ", ".join(f"{cell} {ratios[f'{cell} cells/fused fwd_bwd best']:.2f}x "
                     f"(fwd {ratios[f'{cell} cells/fused fwd best']:.2f}x)"
                     for cell in ("lstm", "gru"))
    lines.append(f"cells / fused of the best (minimum) times, fwd+bwd: {best}.")
    rb = ratios["gru cells reset-before/reset-after fwd_bwd"]["median"]
    lines.append(f"GRU cells, reset-before / reset-after (fwd+bwd): {rb:.2f}x.")
    lines.append(f"Padding: {100 * result['fill']:.1f}% of the B x S steps are real; the fused "
                 "path (packed) skips the rest, the cells path computes them and masks.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--repeats", type=int, default=10,
                        help="timed samples per config (after warm-up); default 10")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch.set_num_threads (default: torch's own choice)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/recurrent.json"),
                        help="JSON results file (default benchmarks/results/recurrent.json)")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    info = announce(args.threads)
    load_before = uptime()
    print(f"before: {load_before}")
    t0 = time.time()
    result = run(args.repeats)
    load_after = uptime()
    print(f"after:  {load_after}")
    result = {"benchmark": "recurrent", "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "machine": info, "load": {"before": load_before, "after": load_after},
              "workload": {"B": B, "S": S, "E": E, "H_per_direction": H, "bidirectional": True,
                           "layers": 1, "dtype": "float32", "device": "cpu",
                           "lengths": f"uniform {MIN_LEN}..{S}, longest {S}",
                           "repeats": args.repeats, "warmup": WARMUP, "inner": INNER},
              "seconds": round(time.time() - t0, 1), **result}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print()
    print(table(result))
    worst = max((c.get("max_abs_diff_vs_torch", 0.0) for c in result["configs"]), default=0.0)
    print(f"\nsame function check: max |diff| vs torch.nn = {worst:.1e}; "
          f"{result['seconds']} s; results in {args.out}")


if __name__ == "__main__":
    run_main(main)
