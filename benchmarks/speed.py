"""seqlab against OpenNMT-py and JoeyNMT on the same model, data and machine, in one run:
training throughput (float32 and bfloat16) with MFU, and decoding speed of trained models.

    (cd ../shared/peers && bash setup.sh && bash prepare.sh)     # the peers, once
    python benchmarks/speed.py                                     # about 50 minutes

The model is the peers' benchmark model (`../shared/peers/configs/onmt_gru.yaml`, JoeyNMT's
`joey_gru.yaml`; seqlab's `benchmarks/peers_gru.yaml`): bi-GRU 128 x 2 encoder, GRU 256
decoder with input feeding and additive attention, embeddings 256, 10k words per side, on the
peers' Moses-tokenized, lowercased Multi30k (`prepare.sh`).

Training: each system trains `--steps` steps (300) of about 64 sentences from scratch, with
`--threads` CPU threads (1). Throughput is target tokens per second (real tokens with their
end-of-sentence, padding not counted: the peers' own count) between the step-50 and the last
log line, so start-up, vocabulary building and the first 50 steps are left out. OpenNMT-py
batches 64 sentences (its length bucketing); seqlab batches by tokens, and `batch_tokens` is
set here so that its batches average 64 sentences too (printed); JoeyNMT draws random
batches of 64 (no bucketing: about twice the padding, its own design). Every other system
runs next to OpenNMT-py, one core each, started together (seqlab float32, seqlab bfloat16 and
JoeyNMT each in a pair of their own), `--repeats` times with the pairs in a new order each
time; a system's ratio is the median of its tokens/s over those of the OpenNMT-py run beside
it, so every ratio compares two runs that shared the machine the same way.
Peak memory: the process's maximum resident set (GNU time).

MFU (model FLOPs utilisation): the matrix-product FLOPs of the model per target token,
counted here from the model's shapes and the corpus' mean lengths (forward x 3 for forward
and backward), times tokens per second, divided by the machine's own matmul rate in the same
precision, measured in this run with the same thread count (a (1920, 256) x (256, 1024)
product, machine.py's reference).

Decoding: test2016 (1,000 sentences) with models trained `--decode-steps` steps (2000, as the
peers' README does for OpenNMT-py; trained here side by side, or given with --onmt-model /
--seqlab-model / --joey-model), batch 64 sentences, at most 100 output tokens, GNMT length penalty
alpha 1.0 for beam search; greedy and beam 5; seqlab in float32 and int8 (`--precision`),
with `stopping: heuristic` (a sentence stops once no open hypothesis would win if it ended
next, close to OpenNMT-py's rule; seqlab's default `exact` rule runs longer with alpha > 0).
Times are the toolkit's own timer around translation (OpenNMT-py's "Total translation time",
JoeyNMT's "Generation took" around its batches of the input already read and tokenized;
for seqlab the same span: after the model is loaded, from the first input to the last
output), and the whole process's wall time. BLEU: the peers' `bleu.py` (Moses-detokenized,
sacrebleu 13a, lowercased) so that every system is scored the same way.

Writes benchmarks/results/speed.json and prints the tables.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import torch

from machine import ReferenceMatmul, machine_info, run_main, uptime

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PEERS = Path(os.environ.get("PEERS_DIR", REPO.parent / "shared" / "peers"))
VENVS = Path(os.environ.get("VENV_DIR", Path.home() / ".cache" / "seqlab-peers"))
WORK = Path(os.environ.get("WORK_DIR", VENVS / "work"))
ONMT_BIN = VENVS / "onmt-venv" / "bin"
JOEY_PY = VENVS / "joey-venv" / "bin" / "python"
CONFIG = HERE / "peers_gru.yaml"
BATCH_SENTENCES = 64
FIRST_LOGGED_STEP = 50
TIME = "/usr/bin/time"
# OpenNMT-py's decoding settings wherever a benchmark decodes with it (vs_peers.py too): batch
# 64 sentences, the length limit and GNMT's length penalty that seqlab's decoding uses
ONMT_DECODE_FLAGS = ["-batch_size", str(BATCH_SENTENCES), "-batch_type", "sents",
                     "-max_length", "100", "-length_penalty", "wu", "-alpha", "1.0"]


# ---------------------------------------------------------------------------- the model's FLOPs
def forward_flops_per_target_token(src_per_tgt: float, mean_src_len: float,
                                   vocab: int = 10000, emb: int = 256, hidden: int = 256,
                                   attn: int = 256) -> dict:
    """Matrix-product FLOPs (2 per multiply-add) of one forward pass, per target token.

    Encoder (per source token, src_per_tgt of them per target token): a bidirectional GRU of
    hidden/2 units per direction, 3 gates x (input + recurrent) products, and the attention
    keys U h. Decoder per target token: its GRU over [embedding; previous attentional vector],
    the query W s, the additive scores v^T tanh(W s + U h_j) and the context over mean_src_len
    source positions, the attentional layer W_c [s; c] and the output layer W_o."""
    h = hidden // 2
    encoder = 2 * (3 * h * (emb + h)) * 2 + hidden * attn * 2
    decoder = {
        "gru": 3 * hidden * (emb + hidden + hidden) * 2,
        "attention": hidden * attn * 2 + mean_src_len * (attn * 2 + hidden * 2),
        "combine": 2 * hidden * hidden * 2,
        "output": hidden * vocab * 2,
    }
    parts = {"encoder": encoder * src_per_tgt, **decoder}
    return {"parts": parts, "total": sum(parts.values())}


# ---------------------------------------------------------------------------- helpers
def env_threads(threads: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               PYTHONWARNINGS="ignore", TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD="1",
               PYTHONPATH=str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return env


def start(cmd: list[str], log: Path, threads: int, cwd: Path = WORK, stdin=None,
          stdout=None):
    """Start cmd under GNU time (peak RSS in KB and wall seconds go to log.time); its output
    goes to log, or only its stderr where its stdout goes to the open file `stdout`."""
    full = [TIME, "-f", "%M %e", "-o", str(log.with_suffix(".time"))] + [str(c) for c in cmd]
    out = open(log, "w")
    return subprocess.Popen(full, cwd=cwd, env=env_threads(threads), stdin=stdin,
                            stdout=stdout or out,
                            stderr=out if stdout else subprocess.STDOUT), out


def finish(proc, out, log: Path) -> dict:
    rc = proc.wait()
    out.close()
    if rc != 0:
        tail = log.read_text(errors="replace").splitlines()[-15:]
        raise RuntimeError(f"{log.name} failed (exit {rc}):\n" + "\n".join(tail))
    rss_kb, wall = log.with_suffix(".time").read_text().split()[-2:]
    return {"peak_rss_mb": round(int(rss_kb) / 1024, 1), "wall_s": float(wall)}


def run(cmd, log: Path, threads: int, cwd: Path = WORK, stdin_path: Path | None = None,
        stdout_path: Path | None = None) -> dict:
    stdin = open(stdin_path) if stdin_path else None
    stdout = open(stdout_path, "w") if stdout_path else None
    proc, out = start(cmd, log, threads, cwd, stdin, stdout)
    try:
        return finish(proc, out, log)
    finally:
        for f in (stdin, stdout):
            if f:
                f.close()


def stamp(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def check_peers() -> None:
    missing = [p for p in (ONMT_BIN / "onmt_train", JOEY_PY, WORK / "data" / "train.de")
               if not p.exists()]
    if missing:
        sys.exit(f"speed.py: error: the peers are not set up ({missing[0]} is missing); run "
                 f"(cd {PEERS} && bash setup.sh && bash prepare.sh) first")


def check_models(args) -> None:
    """The models given for decoding, checked before anything runs (training comes first)."""
    from seqlab.checkpoint import CheckpointError, resolve_checkpoint

    if args.seqlab_model is not None:
        try:  # what Translator.from_checkpoint will open: best.pt, else last.pt, or the file
            resolve_checkpoint(args.seqlab_model)
        except CheckpointError as exc:
            sys.exit(f"speed.py: error: --seqlab-model {exc}")
    peers = [(args.onmt_model, "--onmt-model", "an OpenNMT-py checkpoint file", Path.is_file),
             (args.joey_model, "--joey-model", "a JoeyNMT model directory (config.yaml and a "
              "checkpoint)", lambda p: (p / "config.yaml").is_file() and any(p.glob("*.ckpt")))]
    for path, option, what, ok in peers:
        if path is not None and not ok(path):
            sys.exit(f"speed.py: error: {option} {path}: not {what}")


# ---------------------------------------------------------------------------- training jobs
class Job:
    """One training run of a toolkit: its tag, its step count and threads, and where its
    model, config and log go under the peers' WORK_DIR. Subclasses write their config
    (`prepare`), start the process (`start`) and read their throughput from the log."""

    def __init__(self, tag: str, steps: int, threads: int):
        self.tag, self.steps, self.threads = tag, steps, threads
        self.dir = WORK / "models" / f"speed_{tag}"
        self.cfg = WORK / "cfg" / f"speed_{tag}.yaml"
        self.log = WORK / "logs" / f"speed_{tag}_train.log"

    def prepare(self) -> None:
        pass


class Onmt(Job):
    name = "OpenNMT-py 3.5.1"
    LINE = re.compile(r"^\[(\S+ \S+) INFO\] Step (\d+)/\s*\d+;.*bsz:\s*(\d+)/\s*(\d+)/\s*(\d+);")

    def prepare(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        text = (PEERS / "configs" / "onmt_gru.yaml").read_text()
        text = text.replace("models/onmt_gru_bench", str(self.dir))
        text = re.sub(r"train_steps: \d+", f"train_steps: {self.steps}", text)
        text = re.sub(r"save_checkpoint_steps: \d+", f"save_checkpoint_steps: {self.steps}",
                      text)
        self.cfg.write_text(text)
        run([ONMT_BIN / "onmt_build_vocab", "-config", self.cfg, "-n_sample", "-1"],
            self.log.with_name(f"speed_{self.tag}_vocab.log"), self.threads)

    def start(self):
        return start([ONMT_BIN / "onmt_train", "-config", self.cfg], self.log, self.threads)

    @property
    def checkpoint(self) -> Path:
        return self.dir / f"model_step_{self.steps}.pt"

    def throughput(self) -> dict:
        pts = [(stamp(m[1]), int(m[2]), int(m[3]), int(m[4]), int(m[5]))
               for m in map(self.LINE.search, self.log.read_text().splitlines()) if m]
        (t0, s0, *_), (t1, s1, *_) = pts[0], pts[-1]
        tgt = sum(b[3] * (b[1] - a[1]) for a, b in zip(pts, pts[1:]))
        src = sum(b[2] * (b[1] - a[1]) for a, b in zip(pts, pts[1:]))
        sents = sum(b[4] * (b[1] - a[1]) for a, b in zip(pts, pts[1:]))
        return {"window": [s0, s1], "tgt_tok_s": tgt / (t1 - t0), "src_tok_s": src / (t1 - t0),
                "sents_per_s": sents / (t1 - t0), "s_per_step": (t1 - t0) / (s1 - s0),
                "sents_per_batch": sents / (s1 - s0)}


class Seqlab(Job):
    def __init__(self, tag: str, steps: int, threads: int, batch_tokens: int,
                 precision: str = "float32"):
        super().__init__(tag, steps, threads)
        self.batch_tokens, self.precision = batch_tokens, precision
        self.name = "seqlab" + ("" if precision == "float32" else f" {precision}")

    def prepare(self) -> None:  # a run directory of an earlier invocation: this script's own
        shutil.rmtree(self.dir, ignore_errors=True)

    def start(self):
        sets = [f"data.root={WORK / 'data'}", f"train.max_steps={self.steps}",
                f"train.threads={self.threads}", f"train.batch_tokens={self.batch_tokens}",
                f"train.precision={self.precision}", f"train.valid_every={self.steps}",
                "train.max_epochs=1000"]
        cmd = [sys.executable, "-m", "seqlab", "train", CONFIG, "--out", self.dir]
        for s in sets:
            cmd += ["--set", s]
        return start(cmd, self.log, self.threads)

    @property
    def checkpoint(self) -> Path:
        return self.dir

    def throughput(self) -> dict:
        rows = [json.loads(line) for line in (self.dir / "metrics.jsonl").read_text().splitlines()]
        rows = [r for r in rows if "tokens_per_s" in r and r["step"] >= FIRST_LOGGED_STEP]
        tgt = sum(b["tokens_per_s"] * (b["elapsed"] - a["elapsed"]) for a, b in zip(rows, rows[1:]))
        secs = rows[-1]["elapsed"] - rows[0]["elapsed"]
        steps = rows[-1]["step"] - rows[0]["step"]
        return {"window": [rows[0]["step"], rows[-1]["step"]], "tgt_tok_s": tgt / secs,
                "s_per_step": secs / steps}


class Joey(Job):
    name = "JoeyNMT 2.3.0"
    LINE = re.compile(r"^(\S+ \S+) - INFO - joeynmt.training - Epoch\s+\d+, Step:\s+(\d+), "
                      r".*Tokens per Sec:\s+(\d+)")

    def prepare(self) -> None:
        text = (PEERS / "configs" / "joey_gru.yaml").read_text()
        text = text.replace("models/joey_gru_bench", str(self.dir))
        text = re.sub(r"updates: \d+ ", f"updates: {self.steps} ", text)
        text = re.sub(r"validation_freq: \d+ ", f"validation_freq: {self.steps * 10} ", text)
        self.cfg.write_text(text)

    def start(self):
        return start([JOEY_PY, "-m", "joeynmt", "train", self.cfg, "--skip-test"], self.log,
                     self.threads)

    @property
    def checkpoint(self) -> Path:  # JoeyNMT saves its last step there (latest.ckpt)
        return self.dir

    def throughput(self) -> dict:
        pts = [(stamp(m[1]), int(m[2]), float(m[3]))
               for m in map(self.LINE.search, self.log.read_text().splitlines()) if m]
        (t0, s0, _), (t1, s1, _) = pts[0], pts[-1]
        tgt = sum(b[2] * (b[0] - a[0]) for a, b in zip(pts, pts[1:]))
        return {"window": [s0, s1], "tgt_tok_s": tgt / (t1 - t0),
                "s_per_step": (t1 - t0) / (s1 - s0), "sents_per_batch": BATCH_SENTENCES}


def run_side_by_side(jobs: list) -> list[dict]:
    """Start the jobs together (one core each), wait for all; their throughput and memory."""
    for job in jobs:
        job.prepare()
    started = [(job, *job.start()) for job in jobs]
    out = []
    for job, proc, handle in started:
        usage = finish(proc, handle, job.log)
        out.append({"system": job.name, "tag": job.tag, **job.throughput(), **usage})
        print(f"  {job.name:<18} {out[-1]['tgt_tok_s']:7.0f} tgt tok/s  "
              f"{out[-1]['s_per_step']:.3f} s/step  peak {out[-1]['peak_rss_mb']:.0f} MB")
    return out


def seqlab_batch_tokens(target: float = BATCH_SENTENCES) -> tuple[int, float]:
    """The batch_tokens whose batches average closest to `target` sentences."""
    from seqlab.config import load_config
    from seqlab.data import TokenBatchSampler
    from seqlab.problems import build_problem

    problem = build_problem(load_config(CONFIG, [f"data.root={WORK / 'data'}"]))
    problem.prepare(None)
    best = None
    for bt in range(800, 1401, 25):
        batches = list(TokenBatchSampler.from_examples(problem.examples, bt, shuffle=True,
                                                       seed=1))
        mean = len(problem.examples) / len(batches)
        if best is None or abs(mean - target) < abs(best[1] - target):
            best = (bt, mean)
    return best


def counted_flops_per_target_token(batch_tokens: int, batches: int = 10) -> float:
    """The same count made by torch (FlopCounterMode) on seqlab's model, forward over real
    batches: a check of the formula. It is a little higher: the decoder also steps over
    padding, which the formula (the model's FLOPs) leaves out."""
    from torch.utils.flop_counter import FlopCounterMode

    from seqlab.config import load_config
    from seqlab.problems import build_problem

    problem = build_problem(load_config(CONFIG, [f"data.root={WORK / 'data'}",
                                                 f"train.batch_tokens={batch_tokens}"]))
    problem.prepare(None)
    model = problem.build_model().eval()
    tokens = 0
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        for key in problem.batches(0, 0, 1)[:batches]:
            b = problem.batch(key)
            model(b.src, b.src_lengths, b.tgt_in, b.tgt_out)
            tokens += b.num_tgt_tokens
    return counter.get_total_flops() / tokens


def corpus_lengths() -> dict:
    """Mean tokens per sentence (with end-of-sentence) of the training corpus, each side."""
    out = {}
    for side in ("de", "en"):
        lines = (WORK / "data" / f"train.{side}").read_text(encoding="utf-8").splitlines()
        out[side] = sum(len(line.split()) + 1 for line in lines) / len(lines)
    return out


# ---------------------------------------------------------------------------- decoding
DECODE_CHILD = r"""
import json, sys, time
from seqlab import Translator
from seqlab.allocator import keep_freed_memory
keep_freed_memory()  # as the seqlab command does at start
model, src, out, beam, precision = sys.argv[1:6]
texts = open(src, encoding="utf-8").read().splitlines()
tr = Translator.from_checkpoint(model, device="cpu")
opts = dict(beam_size=int(beam), batch_size=64, max_len_a=0.0, max_len_b=100,
            length_penalty=1.0 if int(beam) > 1 else 0.0, precision=precision,
            stopping="heuristic")  # OpenNMT-py's rule: stop once the best candidate ended
tr.translate(texts[:64], **opts)  # warm-up (the int8 model is made here)
t0 = time.perf_counter()
hyps = tr.translate(texts, **opts)
gen = time.perf_counter() - t0
open(out, "w", encoding="utf-8").write("\n".join(hyps) + "\n")
print("GEN_SECONDS", gen)
"""


def bleu(hyp: Path) -> float:
    out = subprocess.run([JOEY_PY, PEERS / "bleu.py", hyp, WORK / "data" / "raw" / "test2016.en"],
                         capture_output=True, text=True, check=True).stdout
    return float(re.search(r"BLEU\(lc\)=([\d.]+)", out)[1])


def decode_onmt(checkpoint: Path, beam: int, rep: int, threads: int) -> dict:
    hyp = WORK / "hyps" / f"speed_onmt_beam{beam}_{rep}.txt"
    log = WORK / "logs" / f"speed_onmt_dec_beam{beam}_{rep}.log"
    usage = run([ONMT_BIN / "onmt_translate", "-model", checkpoint, "-src",
                 WORK / "data" / "test2016.de", "-output", hyp, "-beam_size", str(beam),
                 *ONMT_DECODE_FLAGS, "-report_time"], log, threads)
    return {"gen_s": onmt_seconds(log.read_text(), hyp), **usage, "hyp": hyp}


def onmt_seconds(log: str, hyp: Path) -> float:
    """OpenNMT-py's own translation time, to the millisecond: its log rounds the total to
    0.1 s (5% of a greedy run here), but also prints tokens per second = output tokens
    (without EOS: the words of the hypothesis file) / total, with one decimal."""
    total = float(re.search(r"Total translation time \(s\): ([\d.]+)", log)[1])
    rate = float(re.search(r"Tokens per second: ([\d.]+)", log)[1])
    words = sum(len(line.split()) for line in hyp.read_text(encoding="utf-8").splitlines())
    seconds = words / rate
    if abs(seconds - total) > 0.051:  # not the count OpenNMT-py divided by: keep its total
        print(f"  (OpenNMT-py: {words} words / {rate} tok/s = {seconds:.3f} s, but it reports "
              f"{total} s; using {total})")
        return total
    return seconds


def decode_joey(model_dir: Path, beam: int, rep: int, threads: int) -> dict:
    """JoeyNMT's `translate` on test2016 with the model's own config (copied into its
    directory), beam and batch as for the others; its own timer ("Generation took")."""
    cfg = WORK / "cfg" / f"speed_joey_dec_beam{beam}.yaml"
    text = (model_dir / "config.yaml").read_text()
    cfg.write_text(re.sub(r"beam_size: \d+", f"beam_size: {beam}", text))
    hyp = WORK / "hyps" / f"speed_joey_beam{beam}_{rep}.txt"
    log = WORK / "logs" / f"speed_joey_dec_beam{beam}_{rep}.log"
    usage = run([JOEY_PY, "-m", "joeynmt", "translate", cfg], log, threads,
                stdin_path=WORK / "data" / "test2016.de", stdout_path=hyp)
    gen = float(re.search(r"Generation took ([\d.]+)\[sec\]", log.read_text())[1])
    return {"gen_s": gen, **usage, "hyp": hyp}


def decode_seqlab(run_dir: Path, beam: int, precision: str, rep: int, threads: int) -> dict:
    hyp = WORK / "hyps" / f"speed_seqlab_beam{beam}_{precision}_{rep}.txt"
    log = WORK / "logs" / f"speed_seqlab_dec_beam{beam}_{precision}_{rep}.log"
    usage = run([sys.executable, "-c", DECODE_CHILD, run_dir, WORK / "data" / "test2016.de",
                 hyp, str(beam), precision], log, threads)
    gen = float(re.search(r"GEN_SECONDS ([\d.]+)", log.read_text())[1])
    return {"gen_s": gen, **usage, "hyp": hyp}


def decode_all(onmt_ckpt: Path, seqlab_run: Path, joey_dir: Path | None, repeats: int,
               threads: int, precisions: list[str]) -> list[dict]:
    rows = []
    for beam in (1, 5):
        systems = [("OpenNMT-py 3.5.1", "float32", lambda r, b=beam: decode_onmt(
            onmt_ckpt, b, r, threads))]
        if joey_dir is not None:
            systems.append((Joey.name, "float32", lambda r, b=beam: decode_joey(
                joey_dir, b, r, threads)))
        systems += [(f"seqlab {p}" if p != "float32" else "seqlab", p,
                     lambda r, b=beam, p=p: decode_seqlab(seqlab_run, b, p, r, threads))
                    for p in precisions]
        runs = {name: [] for name, _, _ in systems}
        for rep in range(repeats):
            order = systems if rep % 2 == 0 else systems[::-1]
            for name, _, fn in order:
                runs[name].append(fn(rep))
        for name, precision, _ in systems:
            hyp = runs[name][0]["hyp"]
            lines = hyp.read_text(encoding="utf-8").splitlines()
            words = sum(len(line.split()) for line in lines)
            gen = statistics.median(r["gen_s"] for r in runs[name])
            wall = statistics.median(r["wall_s"] for r in runs[name])
            rows.append({"mode": "greedy" if beam == 1 else f"beam {beam}", "system": name,
                         "precision": precision, "gen_s": [r["gen_s"] for r in runs[name]],
                         "sents_per_s": len(lines) / gen, "words_per_s": words / gen,
                         "sents_per_s_wall": len(lines) / wall,
                         "avg_words": words / len(lines), "bleu_lc": bleu(hyp),
                         "peak_rss_mb": max(r["peak_rss_mb"] for r in runs[name])})
            print(f"  {rows[-1]['mode']:<7} {name:<18} {rows[-1]['sents_per_s']:6.1f} sent/s "
                  f"{rows[-1]['words_per_s']:7.0f} words/s  BLEU {rows[-1]['bleu_lc']:.2f}  "
                  f"avg {rows[-1]['avg_words']:.1f} words  peak {rows[-1]['peak_rss_mb']:.0f} MB")
    return rows


# ---------------------------------------------------------------------------- main
def matmul_rates(threads: int) -> dict:
    torch.set_num_threads(threads)
    out = {}
    for dtype in (torch.float32, torch.bfloat16):
        ref = ReferenceMatmul(dtype=dtype)
        ref.warm_up(3)
        ms = statistics.median(ref.sample() for _ in range(7))
        out[str(dtype).replace("torch.", "")] = round(ref.gflops(ms), 1)
    return out


def summarize(train: list[dict], flops: dict, rates: list[dict]) -> dict:
    by = {}
    for row in train:
        by.setdefault(row["system"], []).append(row)
    fp32 = statistics.median(r["float32"] for r in rates)
    bf16 = statistics.median(r["bfloat16"] for r in rates)
    out = {}
    for name, rows in by.items():
        tps = statistics.median(r["tgt_tok_s"] for r in rows)
        rate = bf16 if "bfloat16" in name else fp32
        out[name] = {"tgt_tok_s": tps, "runs": [round(r["tgt_tok_s"]) for r in rows],
                     "s_per_step": statistics.median(r["s_per_step"] for r in rows),
                     "peak_rss_mb": max(r["peak_rss_mb"] for r in rows),
                     "mfu": tps * 3 * flops["total"] / (rate * 1e9)}
    # each system against the OpenNMT-py run beside it: the median of those paired ratios
    for a, b in zip(train[::2], train[1::2]):
        if a["system"] == Onmt.name and b["system"] != Onmt.name:
            out[b["system"]].setdefault("paired_vs_onmt", []).append(
                round(b["tgt_tok_s"] / a["tgt_tok_s"], 3))
    for name, row in out.items():
        row["vs_onmt"] = (1.0 if name == Onmt.name else
                          statistics.median(row["paired_vs_onmt"]) if "paired_vs_onmt" in row
                          else None)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=300, help="training steps per run (300)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads per system (1)")
    p.add_argument("--repeats", type=int, default=2, help="training and decoding repeats (2)")
    p.add_argument("--decode-steps", type=int, default=2000,
                   help="steps of the models trained for decoding (2000)")
    p.add_argument("--onmt-model", type=Path, help="an OpenNMT-py checkpoint to decode with "
                   "(skips training one)")
    p.add_argument("--seqlab-model", type=Path, help="a seqlab run directory (or checkpoint "
                   "file) to decode with")
    p.add_argument("--joey-model", type=Path, help="a JoeyNMT model directory to decode with "
                   "(its config.yaml and last checkpoint)")
    p.add_argument("--no-joey", action="store_true", help="leave JoeyNMT out")
    p.add_argument("--no-bf16", action="store_true", help="leave seqlab bfloat16 out")
    p.add_argument("--skip-training", action="store_true", help="decoding only")
    p.add_argument("--skip-decoding", action="store_true", help="training only")
    p.add_argument("--out", type=Path, default=HERE / "results" / "speed.json")
    args = p.parse_args(argv)
    check_peers()
    check_models(args)
    t_start = time.time()
    info = machine_info()
    print(f"cpu: {info['cpu']}, torch {info['torch']}, {args.threads} thread(s) per system")
    result = {"benchmark": "speed", "date": datetime.now().astimezone().isoformat(
        timespec="seconds"), "machine": info, "load_before": uptime(), "args": {
        k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}}
    rates = [matmul_rates(args.threads)]
    print(f"matmul GFLOP/s: {rates[0]}")
    lengths = corpus_lengths()
    flops = forward_flops_per_target_token(lengths["de"] / lengths["en"], lengths["de"])
    result["flops_per_tgt_token"] = {"forward": flops, "train": 3 * flops["total"],
                                     "mean_len": lengths}
    bt, mean_sents = seqlab_batch_tokens()
    result["seqlab_batch"] = {"batch_tokens": bt, "mean_sentences": mean_sents}
    counted = counted_flops_per_target_token(bt)
    result["flops_per_tgt_token"]["forward_counted_by_torch"] = counted
    print(f"seqlab batch_tokens {bt}: {mean_sents:.1f} sentences per batch on average; "
          f"model {flops['total'] / 1e6:.2f} MFLOP per target token forward (torch counts "
          f"{counted / 1e6:.2f} with padding), x 3 for training")

    if not args.skip_training:
        train = []
        for rep in range(args.repeats):
            partners = [Seqlab(f"seqlab_{rep}", args.steps, args.threads, bt)]
            if not args.no_bf16:
                partners.append(Seqlab(f"seqlab_bf16_{rep}", args.steps, args.threads, bt,
                                       "bfloat16"))
            if not args.no_joey:
                partners.append(Joey(f"joey_{rep}", args.steps, args.threads))
            # every system next to OpenNMT-py, the pairs in a new order at every repeat
            pairs = [[Onmt(f"onmt_beside_{j.tag}", args.steps, args.threads),
                      j] for j in partners]
            pairs = pairs[rep % len(pairs):] + pairs[:rep % len(pairs)]
            for jobs in pairs:
                print(f"repeat {rep + 1}: " + " | ".join(j.name for j in jobs))
                train += run_side_by_side(jobs)
                rates.append(matmul_rates(args.threads))
        result["training_runs"] = train
        result["training"] = summarize(train, flops, rates)
    result["matmul_gflops"] = rates

    if not args.skip_decoding:
        onmt_ckpt, seqlab_run = args.onmt_model, args.seqlab_model
        joey_dir = None if args.no_joey else args.joey_model
        todo = []
        if onmt_ckpt is None:
            todo.append(Onmt("onmt_decode_model", args.decode_steps, args.threads))
        if seqlab_run is None:
            todo.append(Seqlab("seqlab_decode_model", args.decode_steps, args.threads, bt))
        if joey_dir is None and not args.no_joey:
            todo.append(Joey("joey_decode_model", args.decode_steps, args.threads))
        if todo:
            print(f"training the decoding models ({args.decode_steps} steps, side by side)")
            result["decode_models"] = run_side_by_side(todo)
            for job in todo:
                if isinstance(job, Onmt):
                    onmt_ckpt = job.checkpoint
                elif isinstance(job, Joey):
                    joey_dir = job.checkpoint
                else:
                    seqlab_run = job.checkpoint
        result["decode_models_used"] = {"onmt": str(onmt_ckpt), "seqlab": str(seqlab_run),
                                        "joey": str(joey_dir)}
        print("decoding test2016 (1,000 sentences, batch 64, max 100 tokens, alpha 1.0)")
        result["decoding"] = decode_all(onmt_ckpt, seqlab_run, joey_dir, args.repeats,
                                        args.threads, ["float32", "int8", "bfloat16"])
        for row in result["decoding"]:
            row["hyp"] = str(row.get("hyp", ""))
    result["load_after"] = uptime()
    result["seconds"] = round(time.time() - t_start, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, default=str) + "\n")
    print_tables(result)
    print(f"wrote {args.out}")
    return 0


def print_tables(result: dict) -> None:
    if "training" in result:
        fp32 = statistics.median(r["float32"] for r in result["matmul_gflops"])
        print(f"\n| training ({result['args']['threads']} thread, side by side) | tgt tok/s | "
              "x OpenNMT-py (pairs) | s/step | MFU | peak MB |")
        print("|---|---|---|---|---|---|")
        for name, row in result["training"].items():
            ratio = "" if row["vs_onmt"] is None else f"{row['vs_onmt']:.2f}"
            if "paired_vs_onmt" in row:
                ratio += f" ({', '.join(f'{r:.2f}' for r in row['paired_vs_onmt'])})"
            print(f"| {name} | {row['tgt_tok_s']:.0f} | {ratio} | {row['s_per_step']:.3f} | "
                  f"{row['mfu']:.1%} | {row['peak_rss_mb']:.0f} |")
        print(f"(matmul fp32 {fp32:.0f} GFLOP/s)")
    if "decoding" in result:
        print("\n| decoding test2016 | sent/s | x OpenNMT-py | words/s | sent/s (wall) | BLEU | "
              "peak MB |")
        print("|---|---|---|---|---|---|---|")
        base = {r["mode"]: r["sents_per_s"] for r in result["decoding"]
                if r["system"].startswith("OpenNMT")}
        for r in result["decoding"]:
            print(f"| {r['mode']}, {r['system']} | {r['sents_per_s']:.1f} | "
                  f"{r['sents_per_s'] / base[r['mode']]:.2f} | {r['words_per_s']:.0f} | "
                  f"{r['sents_per_s_wall']:.1f} | {r['bleu_lc']:.2f} | {r['peak_rss_mb']:.0f} |")


if __name__ == "__main__":
    run_main(main)
