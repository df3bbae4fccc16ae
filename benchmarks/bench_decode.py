"""Decoding speed, memory and quality of a trained model: greedy search against beam search.

A hand-run benchmark, not a test:

    python benchmarks/bench_decode.py --model RUN_DIR_OR_CHECKPOINT [--beams 1 5]
        [--batch-size N] [--repeats 3] [--threads N] [--limit N] [--device cpu]
        [--src PATH] [--ref PATH] [--out PATH]

Workload: the Multi30k test2016 set (1,000 sentences), `../shared/data/multi30k/test2016.SRC`
relative to the repository root, with references in `test2016.TGT`; SRC and TGT are the
model's data.src / data.tgt when its config names files, else de and en. Decoding goes
through the public API, `seqlab.Translator.from_checkpoint(...).translate_nbest(texts,
beam_size=K, n_best=1, batch_size=N)`, so the times include tokenizing, sorting by length,
batching and detokenizing. The other search settings (length penalty, max_len_a/b, ...) are
the model's config's. Modes: one per beam size K (K = 1 is greedy search unless the config
sets a length or coverage penalty).

Each mode runs in a fresh child process (this script with --one K), so that its peak
resident memory (getrusage ru_maxrss) is its own: the child makes the reference matmul's
inputs, reads its baseline RSS, loads the model (timed: the model load time), decodes one
untimed warm-up batch (the first N sentences), then decodes the whole set `--repeats` times.
Speed figures are medians over the repeats, with min and max.

Absolute times depend on the machine and on what else runs on it, so the same run times a
float32 matmul (1920, 256) x (256, 1024) (see machine.py; the unit bench_recurrent.py uses):
the parent before, between and after the modes (the machine's matmul rate), and each child
just before each of its timed passes; each pass's time per sentence and per output token is
also given as a multiple of that matmul's time (paired per pass, then the median).
Quality: sacrebleu BLEU and chrF (seqlab.metrics, with the model's eval settings) of each
mode against the references, and the average output length. Output tokens are the model's
target tokens (words, pieces or characters, as its tokenizer cuts), EOS not counted.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from machine import ReferenceMatmul, announce, run_main, summary
from seqlab.checkpoint import load_checkpoint, resolve_checkpoint
from seqlab.config import config_from_dict
from seqlab.data import read_lines

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.path.normpath(REPO / "../shared/data/multi30k"))
DEFAULT_PAIR = ("de", "en")
MATMUL_SAMPLES = 3  # parent: matmul samples before, between and after the modes
JSON_MARK = "BENCH_DECODE_RESULT "  # the child's one result line on stdout


def mode_name(beam: int) -> str:
    return "greedy" if beam == 1 else f"beam {beam}"


def peak_rss_mib() -> float:
    """This process's peak resident set size so far (ru_maxrss: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def rss_mib() -> float | None:
    """This process's resident set size now (Linux /proc/self/statm), None elsewhere."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def load_average() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


# ---------------------------------------------------------------------------- one mode (child)
def run_one(args: argparse.Namespace, beam: int) -> dict:
    """Load the model, decode the whole set `repeats` times with beam size `beam`, score."""
    from seqlab import Translator
    from seqlab.metrics import bleu, chrf

    load_start = load_average()
    texts, refs = read_lines(args.src), read_lines(args.ref)
    if args.limit:
        texts, refs = texts[: args.limit], refs[: args.limit]
    matmul = ReferenceMatmul(device=args.device)
    matmul.warm_up()
    rss_base, peak_base = rss_mib(), peak_rss_mib()
    t0 = time.perf_counter()
    translator = Translator.from_checkpoint(args.model, device=args.device)
    load_s = time.perf_counter() - t0
    rss_load, peak_load = rss_mib(), peak_rss_mib()

    batch_size = args.batch_size or translator.config.search.batch_size
    search = dict(beam_size=beam, n_best=1, batch_size=batch_size)
    translator.translate_nbest(texts[:batch_size], **search)  # warm-up, untimed
    seconds, mm_ms, outputs, tokens = [], [], None, 0
    same = True
    for _ in range(args.repeats):
        mm_ms.append(matmul.sample())
        t0 = time.perf_counter()
        nbest = translator.translate_nbest(texts, **search)
        seconds.append(time.perf_counter() - t0)
        hyps = [n[0].text for n in nbest]
        same = same and (outputs is None or hyps == outputs)
        outputs, tokens = hyps, sum(len(n[0].tokens) for n in nbest)
    rss_end, rss_peak = rss_mib(), peak_rss_mib()
    cuda_peak = (torch.cuda.max_memory_allocated() / 2**20
                 if translator.device.type == "cuda" else None)

    n = len(texts)
    ev = translator.config.eval
    b = bleu(outputs, refs, tokenize=ev.bleu_tokenize, lowercase=ev.lowercase)
    c = chrf(outputs, refs)
    hyp_words = sum(len(h.split()) for h in outputs)
    ref_words = sum(len(r.split()) for r in refs)
    m = translator.config.model
    codec = translator.codec
    opts = translator.config.search
    greedy = beam == 1 and opts.length_penalty == 0 and opts.coverage_penalty == 0
    return {
        "mode": "greedy" if greedy else f"beam {beam}", "beam": beam,
        "search": dataclasses.asdict(dataclasses.replace(translator.config.search, **search)),
        "sentences": n, "output_tokens": tokens, "same_output_every_repeat": same,
        "threads": torch.get_num_threads(), "device": str(translator.device),
        "load_s": load_s, "seconds": seconds, "matmul_ms": mm_ms,
        "sentences_per_s": summary([n / s for s in seconds]),
        "tokens_per_s": summary([tokens / s for s in seconds]),
        "ms_per_sentence": summary([s / n * 1e3 for s in seconds]),
        # time of one sentence (one output token) as a multiple of the reference matmul's time
        "sentence_per_matmul": statistics.median(
            s / n * 1e3 / mm for s, mm in zip(seconds, mm_ms)),
        "token_per_matmul": statistics.median(
            s / max(tokens, 1) * 1e3 / mm for s, mm in zip(seconds, mm_ms)),
        # rss_*: resident now; peak_*: ru_maxrss so far (baseline: after imports and the
        # matmul's inputs; after_load: the model loaded; peak: after all the decoding)
        "memory_mib": {"rss_peak": rss_peak, "rss_baseline": rss_base,
                       "rss_after_load": rss_load, "rss_after_decoding": rss_end,
                       "peak_baseline": peak_base, "peak_after_load": peak_load,
                       "cuda_peak_allocated": cuda_peak},
        "quality": {"bleu": b.score, "bleu_signature": b.signature, "chrf": c.score,
                    "chrf_signature": c.signature,
                    "avg_output_tokens": tokens / n, "avg_output_words": hyp_words / n,
                    "avg_reference_words": ref_words / n,
                    "length_ratio": hyp_words / max(ref_words, 1)},
        "model": {"cell": m.cell, "embedding_size": m.embedding_size,
                  "hidden_size": m.hidden_size, "encoder_layers": m.encoder_layers,
                  "decoder_layers": m.decoder_layers, "bidirectional": m.bidirectional,
                  "attention": m.attention, "attention_style": m.attention_style,
                  "backend": m.backend, "tokenizer": translator.config.tokenizer.kind,
                  "src_vocab": len(codec.src_vocab), "tgt_vocab": len(codec.tgt_vocab),
                  "parameters": sum(p.numel() for p in translator.model.parameters())},
        "load_average": {"start": load_start, "end": load_average()},
    }


# ---------------------------------------------------------------------------- all modes (parent)
def language_pair(model: str) -> tuple[str, str]:
    """data.src / data.tgt of the model's config when it names files, else de -> en."""
    state = load_checkpoint(resolve_checkpoint(model))
    data = config_from_dict(state["config"]).data
    if data.synthetic is None and data.format == "parallel":
        return data.src, data.tgt
    return DEFAULT_PAIR


def child(args: argparse.Namespace, beam: int) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--model", args.model,
           "--src", args.src, "--ref", args.ref, "--repeats", str(args.repeats),
           "--device", args.device, "--one", str(beam)]
    for flag, value in (("--batch-size", args.batch_size), ("--threads", args.threads),
                        ("--limit", args.limit)):
        if value:
            cmd += [flag, str(value)]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)  # stderr goes through
    lines = [x for x in proc.stdout.splitlines() if x.startswith(JSON_MARK)]
    if proc.returncode or not lines:
        sys.exit(f"bench_decode: the {mode_name(beam)} run failed (exit {proc.returncode})")
    return json.loads(lines[-1][len(JSON_MARK):])


def run(args: argparse.Namespace) -> dict:
    matmul = ReferenceMatmul(device=args.device)
    matmul.warm_up()
    mm: list[float] = []
    modes = []
    for beam in args.beams:
        mm += [matmul.sample() for _ in range(MATMUL_SAMPLES)]
        print(f"{mode_name(beam)}: {args.repeats} pass(es) ...", flush=True)
        modes.append(child(args, beam))
    mm += [matmul.sample() for _ in range(MATMUL_SAMPLES)]
    ms = statistics.median(mm)
    return {"matmul": {**matmul.describe(), "ms": summary(mm), "gflops": matmul.gflops(ms)},
            "modes": modes}


# ---------------------------------------------------------------------------- report
def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def table(result: dict) -> str:
    lines = [
        "| mode | sentences/s, median [min-max] | output tokens/s | ms / sentence "
        "| sentence / matmul | token / matmul | load s | peak RSS MiB (RSS after load) "
        "| BLEU | chrF | avg output tokens | length ratio |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m in result["modes"]:
        s, t, q, mem = m["sentences_per_s"], m["tokens_per_s"], m["quality"], m["memory_mib"]
        lines.append(
            f"| {m['mode']} | {s['median']:.1f} [{s['min']:.1f}-{s['max']:.1f}] "
            f"| {t['median']:.0f} [{t['min']:.0f}-{t['max']:.0f}] "
            f"| {m['ms_per_sentence']['median']:.3g} | {m['sentence_per_matmul']:.3g} "
            f"| {m['token_per_matmul']:.3g} | {m['load_s']:.2f} "
            f"| {mem['rss_peak']:.0f} ({fmt(mem['rss_after_load'], '.0f')}) "
            f"| {q['bleu']:.2f} | {q['chrf']:.2f} | {q['avg_output_tokens']:.1f} "
            f"| {q['length_ratio']:.3f} |")
    mm, w = result["matmul"], result["workload"]
    lines += ["", f"{w['sentences']} sentences of {w['src']}, batch size {w['batch_size']}, "
              f"{w['repeats']} timed pass(es) per mode, device {w['device']}, "
              f"threads {result['machine']['threads']}."]
    lines.append(f"Reference matmul (1920, 256) x (256, 1024) float32: "
                 f"{mm['ms']['median']:.3f} ms median = {mm['gflops']:.1f} GFLOP/s "
                 f"(range {mm['ms']['min']:.3f}-{mm['ms']['max']:.3f} ms).")
    by_beam = {m["beam"]: m for m in result["modes"]}
    if 1 in by_beam:
        for k, m in sorted(by_beam.items()):
            if k != 1:
                ratio = m["sentence_per_matmul"] / by_beam[1]["sentence_per_matmul"]
                lines.append(f"{m['mode']} / greedy time per sentence (matmul units): "
                             f"{ratio:.2f}x.")
    if not all(m["same_output_every_repeat"] for m in result["modes"]):
        lines.append("warning: some mode gave different outputs in different passes.")
    q = result["modes"][0]["quality"]
    lines.append(f"BLEU {q['bleu_signature']}; chrF {q['chrf_signature']}.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--model", required=True, metavar="RUN_DIR_OR_CHECKPOINT",
                        help="a run directory (its best checkpoint) or a checkpoint file")
    parser.add_argument("--src", help="source sentences, one per line (default: Multi30k "
                        "test2016 in the model's source language)")
    parser.add_argument("--ref", help="references, one per line (default: --src with the "
                        "target language's suffix)")
    parser.add_argument("--beams", type=int, nargs="+", default=[1, 5],
                        help="beam sizes to compare, one mode each; 1 = greedy (default 1 5)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="sentences per decoding batch (default: the model's "
                        "search.batch_size)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed passes over the set per mode (after warm-up); default 3")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch.set_num_threads (default: torch's own choice)")
    parser.add_argument("--limit", type=int, default=None,
                        help="decode only the first N sentences")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:1, ...")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/decode.json"),
                        help="JSON results file (default benchmarks/results/decode.json)")
    parser.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for name in ("repeats", "batch_size", "threads", "limit"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if min(args.beams) < 1:
        parser.error("--beams must be >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)

    if args.one is not None:  # a child: one mode, one result line on stdout
        print(JSON_MARK + json.dumps(run_one(args, args.one)), flush=True)
        return

    from seqlab.errors import USER_ERRORS

    try:
        src_lang, tgt_lang = language_pair(args.model)
        if args.src is None:
            args.src = str(DATA / f"test2016.{src_lang}")
        if args.ref is None:
            if not args.src.endswith(f".{src_lang}"):
                parser.error(f"--src {args.src} does not end with .{src_lang}; give --ref")
            args.ref = args.src[: -len(src_lang)] + tgt_lang
        n_src, n_ref = len(read_lines(args.src)), len(read_lines(args.ref))
    except USER_ERRORS as exc:
        parser.error(str(exc))
    if n_src != n_ref:
        parser.error(f"{args.src} has {n_src} lines but {args.ref} has {n_ref}")
    n = min(n_src, args.limit or n_src)

    info = announce(args.threads)
    load_start = load_average()
    print(f"load average at start: {load_start}")
    t0 = time.time()
    result = run(args)
    load_end = load_average()
    print(f"load average at end:   {load_end}")
    first = result["modes"][0]
    model = [m.pop("model") for m in result["modes"]][0]  # the same in every mode
    result = {"benchmark": "decode", "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "machine": info, "load_average": {"start": load_start, "end": load_end},
              "model": {"path": str(resolve_checkpoint(args.model)), **model},
              "workload": {"src": args.src, "ref": args.ref, "pair": [src_lang, tgt_lang],
                           "sentences": n, "limit": args.limit, "beams": args.beams,
                           "batch_size": first["search"]["batch_size"],
                           "repeats": args.repeats, "device": args.device,
                           "warmup": "one untimed batch (the first batch_size sentences)"},
              "seconds": round(time.time() - t0, 1), **result}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print()
    print(table(result))
    print(f"\n{result['seconds']} s; results in {args.out}")


if __name__ == "__main__":
    run_main(main)
