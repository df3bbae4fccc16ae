"""The vanishing-gradient story measured on the adding problem: ||dL/dh_t|| by distance from
the last step for the plain RNN, the LSTM and the GRU, at initialisation and after training.

    python benchmarks/gradient_story.py [--length 50] [--steps 3000] [--seed 1]
    python benchmarks/gradient_story.py --table 10,25,50,100     # test MSE by cell and T

The adding problem (Hochreiter & Schmidhuber 1997; Le et al. 2015): each step reads a pair
(u_t, m_t), u_t uniform in [0, 1], m_t = 1 at exactly two steps (one in each half of the
sequence) and 0 elsewhere; the target is the sum of the two marked u_t. Always answering
1.0 gives a mean squared error of about 0.167 (the variance of the sum), the baseline a
model must beat to show it carried the first marked value across the sequence.

Each cell (one layer of 64 units, a linear read-out of h_T) trains `--steps` (3000) steps of 64
sequences (Adam, lr 1e-3, gradients clipped to norm 1). The gradient norms are measured on
one fixed batch of 64 sequences with seqlab.gradients.state_gradient_norms (the MSE at the
last step), before and after training. Writes benchmarks/results/gradient_story.json and
docs/images/gradient_story.png, and prints a table: test MSE against the baseline, and the
gradient left 10, 25 and T-1 steps back as a fraction of the last step's.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch import nn

from machine import machine_info, run_main
from seqlab.gradients import state_gradient_norms
from seqlab.plots import plot_state_gradients
from seqlab.recurrent import Recurrent

HERE = Path(__file__).resolve().parent
BASELINE_MSE = 1 / 6  # Var(u1 + u2) for two independent U[0, 1]: 2 / 12


def adding_batch(n: int, length: int, generator: torch.Generator) -> tuple:
    """x (n, length, 2) = (u_t, m_t), y (n,) = the sum of the two marked u_t."""
    u = torch.rand(n, length, generator=generator)
    half = length // 2
    first = torch.randint(0, half, (n,), generator=generator)
    second = torch.randint(half, length, (n,), generator=generator)
    marks = torch.zeros(n, length)
    rows = torch.arange(n)
    marks[rows, first] = 1.0
    marks[rows, second] = 1.0
    return torch.stack([u, marks], -1), (u * marks).sum(1)


class Adder(nn.Module):
    def __init__(self, cell: str, hidden: int = 64):
        super().__init__()
        self.rnn = Recurrent(cell, 2, hidden, backend="auto")
        self.readout = nn.Linear(hidden, 1)

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.readout(out[:, -1]).squeeze(-1)


def norms(model: Adder, x, y) -> list[float]:
    return state_gradient_norms(
        model.rnn, x, lambda h: ((model.readout(h).squeeze(-1) - y) ** 2).mean()).tolist()


def exploding(length: int, seed: int, steps: int = 300) -> dict:
    """A plain RNN whose W_hh is sigma x an orthogonal matrix (every singular value sigma):
    the state-gradient norms at initialisation for sigma 1, 1.5, 2, and SGD (lr 0.05) on the
    adding problem at sigma 1.5 without clipping, with clipping by global norm 1.0, and with
    clipping each value to 0.01: per step the gradient norm before clipping, the loss, and the
    cosine between the update taken and the unclipped gradient."""
    from seqlab.gradients import flat_gradient, update_cosine

    g = torch.Generator().manual_seed(seed)
    probe_x, probe_y = adding_batch(64, length, g)
    torch.manual_seed(seed)
    q = torch.linalg.qr(torch.randn(64, 64))[0]

    def rnn(sigma: float) -> Adder:
        torch.manual_seed(seed)
        model = Adder("rnn")
        with torch.no_grad():
            model.rnn.rnn.weight_hh_l0.copy_(q * sigma)
        return model

    out = {"norms_at_init": {f"sigma {s}": norms(rnn(s), probe_x, probe_y)
                             for s in (1.0, 1.5, 2.0)}, "training": {}}
    for name, clip in (("no clipping", None), ("clip norm 1.0", "norm"),
                       ("clip value 0.01", "value")):
        model = rnn(1.5)
        params = list(model.parameters())
        opt = torch.optim.SGD(params, lr=0.05)
        g2 = torch.Generator().manual_seed(seed + 1)
        rows = []
        for _ in range(steps):
            x, y = adding_batch(64, length, g2)
            loss = ((model(x) - y) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            before = flat_gradient(params).clone()
            if clip == "norm":
                torch.nn.utils.clip_grad_norm_(params, 1.0)
            elif clip == "value":
                torch.nn.utils.clip_grad_value_(params, 0.01)
            after = flat_gradient(params)
            finite = bool(torch.isfinite(before).all())
            rows.append([loss.item(), float(before.norm()),
                         update_cosine(before, after) if finite else None])
            if not torch.isfinite(loss):
                break
            opt.step()
        out["training"][name] = rows
        last = [r[0] for r in rows[-20:]]
        print(f"  sigma 1.5, {name:<16} steps {len(rows):>3}, largest gradient norm "
              f"{max(r[1] for r in rows):.2e}, loss over the last 20 {sum(last) / len(last):.3g}")
    return out


def plot_exploding(data: dict, path: Path) -> None:
    from matplotlib.figure import Figure

    from seqlab.plots import _save, _use_hangul_font

    with _use_hangul_font():
        fig = Figure(figsize=(15, 4))
        a, b, c = fig.subplots(1, 3)
        for name, values in data["norms_at_init"].items():
            a.plot(range(len(values) - 1, -1, -1), [v / values[-1] for v in values], label=name)
        a.set(yscale="log", xlabel="steps back from the last, T - t",
              ylabel="||dL/dh_t|| / ||dL/dh_T||", title="plain RNN, W_hh = sigma x orthogonal")
        for name, rows in data["training"].items():
            b.plot([r[1] for r in rows], label=name)
            c.plot([r[0] for r in rows], label=name)
        b.set(yscale="log", xlabel="training step", ylabel="gradient norm before clipping",
              title="sigma 1.5, SGD lr 0.05")
        c.set(yscale="log", xlabel="training step", ylabel="loss (MSE)",
              title="the loss: inf/NaN ends the unclipped run")
        for ax in (a, b, c):
            ax.grid(True, alpha=0.3)
            ax.legend()
        _save(fig, path)


def train_cell(cell: str, length: int, steps: int, seed: int) -> dict:
    """Train one cell on the adding problem of this length; its test MSE curve (every 100
    steps, 2,000 test sequences) and its state-gradient norms before and after training on a
    fixed probe batch of 64."""
    g = torch.Generator().manual_seed(seed)
    probe_x, probe_y = adding_batch(64, length, g)
    test_x, test_y = adding_batch(2000, length, g)
    torch.manual_seed(seed)
    model = Adder(cell)
    at_init = norms(model, probe_x, probe_y)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    t0, curve = time.time(), []
    for step in range(1, steps + 1):
        x, y = adding_batch(64, length, g)
        loss = ((model(x) - y) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 100 == 0:
            with torch.no_grad():
                curve.append([step, float(((model(test_x) - test_y) ** 2).mean())])
    trained = norms(model, probe_x, probe_y)
    back = [k for k in (10, 25, length - 1) if k < length]
    return {"test_mse": curve[-1][1], "curve": curve, "seconds": round(time.time() - t0, 1),
            "norms_at_init": at_init, "norms_trained": trained,
            "left_at_init": {k: at_init[-1 - k] / at_init[-1] for k in back},
            "left_trained": {k: trained[-1 - k] / trained[-1] for k in back}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--length", type=int, default=50)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--table", help="comma-separated lengths, e.g. 10,25,50,100: the test MSE "
                   "of every cell at each length (no pictures), results/gradient_table.json")
    p.add_argument("--out", type=Path)
    p.add_argument("--picture", type=Path,
                   default=HERE.parent / "docs" / "images" / "gradient_story.png")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    result = {"benchmark": "gradient_story", "machine": machine_info(), "args": {
        k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "baseline_mse": BASELINE_MSE}
    if args.table:
        return table(args, result)
    result["cells"] = {}
    at_init, trained = {}, {}
    for cell in ("rnn", "lstm", "gru"):
        r = train_cell(cell, args.length, args.steps, args.seed)
        result["cells"][cell] = r
        at_init[cell.upper()], trained[cell.upper()] = r["norms_at_init"], r["norms_trained"]
        print(f"{cell:>4}: test MSE {r['test_mse']:.4f} (baseline {BASELINE_MSE:.3f}); "
              "gradient left 10 / 25 / T-1 steps back at init "
              + " / ".join(f"{v:.1e}" for v in r["left_at_init"].values()) + ", trained "
              + " / ".join(f"{v:.1e}" for v in r["left_trained"].values()))
    plot_state_gradients({"at initialisation": at_init, f"after {args.steps} steps": trained},
                         args.picture, title=f"adding problem, T = {args.length}: 멀수록 "
                         "잊혀진다 (the farther, the more it is forgotten)")
    print("exploding gradients:")
    result["exploding"] = exploding(args.length, args.seed)
    plot_exploding(result["exploding"], args.picture.with_name(
        args.picture.stem + "_exploding.png"))
    out = args.out or HERE / "results" / "gradient_story.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out} and {args.picture} (and _exploding)")
    return 0


def table(args, result: dict) -> int:
    """Test MSE by cell and length at the same budget: where the plain RNN fails."""
    lengths = [int(v) for v in args.table.split(",")]
    rows = {}
    for length in lengths:
        rows[length] = {cell: train_cell(cell, length, args.steps, args.seed)["test_mse"]
                        for cell in ("rnn", "lstm", "gru")}
        print(f"T = {length}: " + ", ".join(f"{c} {m:.4f}" for c, m in rows[length].items()))
    result["test_mse"] = rows
    out = args.out or HERE / "results" / "gradient_table.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"\n| T | RNN | LSTM | GRU |  (test MSE after {args.steps} steps; always 1.0 scores "
          f"{BASELINE_MSE:.3f})\n|---|---|---|---|")
    for length, mse in rows.items():
        print(f"| {length} | " + " | ".join(f"{mse[c]:.4f}" for c in ("rnn", "lstm", "gru"))
              + " |")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    run_main(main)
