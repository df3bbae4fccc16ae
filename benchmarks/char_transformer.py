"""A character-level Transformer LM on tiny Shakespeare under a wall-clock budget: the peer
that seqlab's recurrent character LM is compared with at equal budgets on the same CPU.

    python benchmarks/char_transformer.py --minutes 30 --threads 1 [--schedule cosine]

Plain PyTorch, self-contained. The model is nanoGPT's GPT (karpathy/nanoGPT, model.py): token
+ learned position embeddings, pre-LayerNorm blocks of causal multi-head self-attention and a
4x GELU MLP, a final LayerNorm, the output head tied to the token embedding, bias=False (the
default of nanoGPT's train.py), init normal(0, 0.02) with the residual projections scaled by
1/sqrt(2 n_layer). The defaults are nanoGPT's published CPU configuration for this data (its
README, "I only have a macbook": `config/train_shakespeare_char.py` with `--device=cpu
--compile=False --block_size=64 --batch_size=12 --n_layer=4 --n_head=4 --n_embd=128
--max_iters=2000 --lr_decay_iters=2000 --dropout=0.0`): AdamW lr 1e-3, betas (0.9, 0.99),
weight decay 0.1 on the 2-D weights only, gradient clip 1.0, 100 warmup iterations, random
training windows as nanoGPT's get_batch. The README figures to compare with: val loss 1.88 for
that CPU configuration after 2000 iterations ("about 3 minutes" on a MacBook), and 1.4697 for
the 10.7M-parameter GPU configuration (6 layers x 384, context 256, about 3 minutes on an A100).

Differences from nanoGPT: the training length is a wall-clock budget, not an iteration count
(`--schedule constant`, the default, keeps the lr constant after warmup, so a value read at 3
minutes of a 30-minute run is a fair 3-minute result; `--schedule cosine` decays to lr/10 over
the budget's time after warmup, nanoGPT's cosine with min_lr = lr/10). Validation is exact,
not nanoGPT's estimate_loss (the mean loss of eval_iters random windows, every position counted
whatever its context, so short contexts weigh in): here every character of val.txt after the
first is predicted once, from windows of block_size slid with stride block_size // 2, so each
has at least block_size // 2 characters of context (except at the very start); evaluation time
is not counted in the budget. Loss in nats per character, and bits per character.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.path.normpath(REPO / "../shared/data/tinyshakespeare"))


class Block(nn.Module):
    def __init__(self, n_embd: int, n_head: int, dropout: float, bias: bool):
        super().__init__()
        self.n_head, self.dropout = n_head, dropout
        self.ln_1 = nn.LayerNorm(n_embd, bias=bias)
        self.c_attn = nn.Linear(n_embd, 3 * n_embd, bias=bias)
        self.attn_proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.ln_2 = nn.LayerNorm(n_embd, bias=bias)
        self.mlp = nn.Sequential(nn.Linear(n_embd, 4 * n_embd, bias=bias), nn.GELU(),
                                 nn.Linear(4 * n_embd, n_embd, bias=bias), nn.Dropout(dropout))
        self.resid_drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                           dropout_p=self.dropout if self.training else 0.0)
        x = x + self.resid_drop(self.attn_proj(y.transpose(1, 2).reshape(B, T, C)))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, vocab: int, block_size: int, n_layer: int, n_head: int, n_embd: int,
                 dropout: float, bias: bool):
        super().__init__()
        self.block_size = block_size
        self.wte, self.wpe = nn.Embedding(vocab, n_embd), nn.Embedding(block_size, n_embd)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(n_embd, n_head, dropout, bias) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(n_embd, bias=bias)
        self.lm_head = nn.Linear(n_embd, vocab, bias=False)
        self.lm_head.weight = self.wte.weight  # weight tying
        for name, p in self.named_parameters():  # nanoGPT's _init_weights + scaled c_proj
            if p.dim() == 2:
                scaled = name.endswith("attn_proj.weight") or name.endswith("mlp.2.weight")
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * n_layer) if scaled else 0.02)
            elif name.endswith(".bias") and "ln" not in name:
                nn.init.zeros_(p)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(idx.shape[1], device=idx.device)
        x = self.drop(self.wte(idx) + self.wpe(pos))
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.ln_f(x))


@torch.no_grad()
def evaluate(model: GPT, val: torch.Tensor, batch: int) -> float:
    """Mean loss (nats) over val[1:], each character predicted once (see the docstring)."""
    T, stride, N = model.block_size, model.block_size // 2, len(val)
    starts = list(range(0, N - 1 - T + 1, stride))
    if starts[-1] != N - 1 - T:
        starts.append(N - 1 - T)  # a last window ending exactly at the last character
    covered, keep = 0, []  # keep[i]: how many of window i's last targets are new
    for s in starts:
        keep.append(s + T - covered)
        covered = s + T
    model.eval()
    total = 0.0
    for i in range(0, len(starts), batch):
        s = torch.tensor(starts[i:i + batch])
        idx = s[:, None] + torch.arange(T + 1)
        x, y = val[idx[:, :-1]], val[idx[:, 1:]]
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten(), reduction="none")
        mask = torch.arange(T) >= T - torch.tensor(keep[i:i + batch])[:, None]
        total += loss.view(len(s), T)[mask].sum().item()
    model.train()
    assert sum(keep) == N - 1
    return total / (N - 1)


@torch.no_grad()
def sample(model: GPT, start: int, n: int, gen: torch.Generator) -> list[int]:
    model.eval()
    idx = torch.tensor([[start]])
    for _ in range(n):
        probs = F.softmax(model(idx[:, -model.block_size:])[0, -1], dim=-1)  # temperature 1
        idx = torch.cat([idx, torch.multinomial(probs, 1, generator=gen)[None]], dim=1)
    model.train()
    return idx[0, 1:].tolist()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(DATA), help="folder with train.txt and val.txt")
    p.add_argument("--minutes", type=float, default=30, help="training time (evals excluded)")
    p.add_argument("--eval-at", default="3,10,30",
                   help="minutes of training to validate at (0: before training; also at the end)")
    p.add_argument("--schedule", choices=["constant", "cosine"], default="constant")
    for name, default in [("block-size", 64), ("batch-size", 12), ("n-layer", 4), ("n-head", 4),
                          ("n-embd", 128), ("warmup", 100), ("seed", 1), ("eval-batch", 256)]:
        p.add_argument(f"--{name}", type=int, default=default)
    for name, default in [("dropout", 0.0), ("lr", 1e-3), ("beta1", 0.9), ("beta2", 0.99),
                          ("weight-decay", 0.1), ("grad-clip", 1.0)]:
        p.add_argument(f"--{name}", type=float, default=default)
    p.add_argument("--bias", action="store_true", help="biases in Linear/LayerNorm (nanoGPT: off)")
    p.add_argument("--threads", type=int, help="torch.set_num_threads")
    p.add_argument("--out", help="results JSON (default "
                   "benchmarks/results/char_transformer_SCHEDULE_Mmin.json)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    data = Path(args.data)
    if not (data / "train.txt").is_file() or not (data / "val.txt").is_file():
        p.error(f"{data} has no train.txt / val.txt")
    train_text = (data / "train.txt").read_text(encoding="utf-8")
    val_text = (data / "val.txt").read_text(encoding="utf-8")
    chars = sorted(set(train_text + val_text))  # nanoGPT's prepare.py: the whole text
    stoi = {c: i for i, c in enumerate(chars)}
    train = torch.tensor([stoi[c] for c in train_text], dtype=torch.long)
    val = torch.tensor([stoi[c] for c in val_text], dtype=torch.long)

    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    model = GPT(len(chars), args.block_size, args.n_layer, args.n_head, args.n_embd,
                args.dropout, args.bias)
    n_params = sum(p.numel() for p in model.parameters())
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW([{"params": [p for p in params if p.dim() >= 2],
                              "weight_decay": args.weight_decay},
                             {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}],
                            lr=args.lr, betas=(args.beta1, args.beta2))
    budget = args.minutes * 60
    evals_at = sorted({float(m) * 60 for m in args.eval_at.split(",") if float(m) * 60 < budget})
    print(f"vocab {len(chars)}, {n_params:,} parameters ({n_params - model.wpe.weight.numel():,} "
          f"as nanoGPT counts), train {len(train):,} / val {len(val):,} characters, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)

    evals, step, elapsed, warm_end = [], 0, 0.0, None
    T, B = args.block_size, args.batch_size

    def record() -> None:
        t0 = time.perf_counter()
        loss = evaluate(model, val, args.eval_batch)
        e = {"minutes": round(elapsed / 60, 3), "steps": step, "train_chars": step * B * T,
             "val_loss_nats": round(loss, 4), "val_bpc": round(loss / math.log(2), 4),
             "eval_seconds": round(time.perf_counter() - t0, 1)}
        evals.append(e)
        print(" ".join(f"{k} {v}" for k, v in e.items()), flush=True)

    while elapsed < budget:
        if evals_at and elapsed >= evals_at[0]:  # the clock is paused while evaluating
            evals_at.pop(0)
            record()
        t0 = time.perf_counter()
        if step < args.warmup:  # nanoGPT's linear warmup
            lr = args.lr * (step + 1) / (args.warmup + 1)
        elif args.schedule == "cosine":
            warm_end = elapsed if warm_end is None else warm_end
            ratio = min(1.0, (elapsed - warm_end) / max(budget - warm_end, 1e-9))
            lr = args.lr / 10 + 0.5 * (1 + math.cos(math.pi * ratio)) * (args.lr - args.lr / 10)
        else:
            lr = args.lr
        for group in opt.param_groups:
            group["lr"] = lr
        ix = torch.randint(len(train) - T, (B,), generator=gen)  # nanoGPT's get_batch
        x = torch.stack([train[i:i + T] for i in ix])
        y = torch.stack([train[i + 1:i + 1 + T] for i in ix])
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if args.grad_clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
        opt.step()
        step += 1
        elapsed += time.perf_counter() - t0
    record()
    print(f"{step / elapsed:.2f} steps/s")

    text = "".join(chars[i] for i in sample(model, stoi["\n"], 200, gen))
    print(f"sample:\n{text}", flush=True)
    out = Path(args.out or REPO / "benchmarks" / "results" /
               f"char_transformer_{args.schedule}_{args.minutes:g}min.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    config = {k: v for k, v in vars(args).items() if k != "out"}
    out.write_text(json.dumps({
        "config": config, "vocab": len(chars), "params": n_params,
        "params_non_embedding": n_params - model.wpe.weight.numel(),
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "python": platform.python_version(), "platform": platform.platform(),
        "steps_per_s": round(step / elapsed, 3), "evals": evals, "sample": text}, indent=1) + "\n")
    print(f"results: {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
