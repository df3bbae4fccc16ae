"""Decoding one long input: time against output length (seqlab issue 9, section 3).

A hand-run benchmark, not a test:

    python benchmarks/bench_long_input.py [--lengths 500 1000 2000 4000 8000] [--beams 1 5]
        [--fixed-input 500] [--threads 1] [--before 2000] [--out PATH]

Model: the demo's model section (seqlab/demo.yaml: char GRU 128, bidirectional encoder,
additive attention, Luong style) built with seqlab's build_model, random weights (seed 0),
over a 100-character vocabulary. Decoding goes through the public API,
`Translator.translate_nbest([text], beam_size=K, with_attention=A)`, one input per call,
max_input_tokens raised out of the way. Outputs are forced to their full length: min_len
forbids EOS until the last step, so a run of L output tokens is L + 1 decoder steps whatever
the random weights prefer. Two series:

  * "input = output" (the issue's setting): an input of L characters, max_len_a 1.0,
    max_len_b 0: L + 1 steps, each attending over L + 1 source positions. The model's own
    attention is O(L) per step, so even a linear search gives time ~ L^2 here, the
    attention's share growing with L.
  * "output only": one input of --fixed-input characters and outputs of L tokens
    (max_len_a 0, max_len_b L + 1): the model's cost per step is constant, so time linear in
    the output length shows as a constant time per output token (ratio 2 per doubling).

Modes: greedy (beam 1) and beam K, each without attention (what `seqlab translate` does) and
with it (translate_nbest(..., with_attention=True), as the demo's plots); beams in the
"input = output" series only up to --beam-max (the attention over L positions makes those
runs long). Each point is one timed call after an untimed warm-up. Times are the call's user
CPU time (getrusage, one thread: on a shared machine it moves far less than the wall clock;
the wall and system times are recorded too), split into the model's decoder steps (user CPU
time inside model.step) and the rest (the search itself, the encoder, text handling): CPU ms
per output token, all = model + rest, and the ratio to the previous length (x time per
doubling of L). The search's own cost per token is the "rest": flat when it is linear. The
reference matmul of machine.py is timed just before each call (the "x matmul" unit of the
other benchmarks, from wall time).

--before N also times the search as it was before the fix (src/seqlab/search.py at
--before-rev, read with git) in the "input = output" series, greedy for L <= N and beam K
for L <= N / 2, without attention (the old code always kept it): the before / after figures.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import resource
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path

import torch

from machine import ReferenceMatmul, announce, run_main, uptime

REPO = Path(__file__).resolve().parents[1]
BEFORE_REV = "29603af"  # the last commit before the fix (quadratic attention / token history)
ALPHABET = ("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,;:!?'\"-()/"
            "äöüßÄÖÜ가나다라마바사아자차카타파하년월일요")[:96]  # 96 + 4 specials = 100


def tiny_translator():
    """The demo's model with random weights, char tokenizer on both sides."""
    from seqlab.config import load_config
    from seqlab.demo import DEMO_CONFIG
    from seqlab.model import build_model
    from seqlab.prepare import Codec
    from seqlab.tokenizers import CharTokenizer
    from seqlab.translate import Translator
    from seqlab.vocab import SPECIALS, Vocab

    with resources.as_file(DEMO_CONFIG) as path:
        config = load_config(path)
    vocab = Vocab(list(SPECIALS) + list(ALPHABET))
    torch.manual_seed(0)
    model = build_model(config.model, len(vocab), len(vocab))
    return Translator(model, Codec(CharTokenizer(), CharTokenizer(), vocab, vocab), config)


def text_of(length: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    return "".join(rng.choice(ALPHABET) for _ in range(length))


def old_search():
    """src/seqlab/search.py at BEFORE_REV as a module, or None without git."""
    try:
        source = subprocess.run(["git", "-C", str(REPO), "show", f"{BEFORE_REV}:src/seqlab/"
                                 "search.py"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    path = Path("/tmp") / f"seqlab_search_{BEFORE_REV}.py"
    path.write_text(source, encoding="utf-8")
    spec = importlib.util.spec_from_file_location(f"seqlab_search_{BEFORE_REV}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def use_search(module) -> None:
    """Make Translator decode with `module`'s searches (None: the current seqlab.search)."""
    import seqlab.search
    import seqlab.translate

    if module is None:
        module = seqlab.search
        wrap = lambda f: f  # noqa: E731
    else:  # the old searches had no with_attention (they always kept it)
        def wrap(f):
            return lambda *a, with_attention=False, **kw: f(*a, **kw)
    for name in ("greedy_search", "beam_search", "sample"):
        setattr(seqlab.translate, name, wrap(getattr(module, name)))


def user_seconds() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_utime


def system_seconds() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_stime


class StepTimer:
    """Wraps model.step (the decoder step the search calls) to add up its user CPU time."""

    def __init__(self, model):
        self.model, self.step, self.user, self.calls = model, model.step, 0.0, 0

        def timed(*args, **kwargs):
            t0 = user_seconds()
            try:
                return self.step(*args, **kwargs)
            finally:
                self.user += user_seconds() - t0
                self.calls += 1

        model.step = timed

    def remove(self) -> None:
        del self.model.step  # the instance attribute; the class's method shows again


def decode_once(translator, series: str, length: int, fixed: int, beam: int,
                attention: bool, matmul: ReferenceMatmul) -> dict:
    """One timed translate_nbest call of a forced-length output of `length` tokens."""
    if series == "input = output":
        text, limits = text_of(length), dict(max_len_a=1.0, max_len_b=0)
    else:
        text, limits = text_of(fixed), dict(max_len_a=0.0, max_len_b=length + 1)
    search = dict(beam_size=beam, n_best=1, min_len=length, batch_size=1,
                  max_input_tokens=max(length, fixed), length_penalty=0.0,
                  coverage_penalty=0.0, **limits)
    mm = matmul.sample()
    steps = StepTimer(translator.model)
    t0, u0, s0 = time.perf_counter(), user_seconds(), system_seconds()
    try:
        [[best]] = translator.translate_nbest([text], with_attention=attention, **search)
    finally:
        steps.remove()
    seconds = time.perf_counter() - t0
    cpu, sys_s = user_seconds() - u0, system_seconds() - s0
    tokens = len(best.tokens)
    return {"series": series, "mode": "greedy" if beam == 1 else f"beam {beam}", "beam": beam,
            "attention": attention, "input_chars": len(text), "length": length,
            "output_tokens": tokens,
            "attention_shape": None if best.attention is None else list(best.attention.shape),
            "seconds": seconds, "cpu_seconds": cpu, "system_seconds": sys_s,
            "model_cpu_seconds": steps.user, "model_steps": steps.calls,
            "ms_per_token": cpu / tokens * 1e3,
            "model_ms_per_token": steps.user / tokens * 1e3,
            "rest_ms_per_token": (cpu - steps.user) / tokens * 1e3,
            "matmul_ms": mm, "token_per_matmul": seconds / tokens * 1e3 / mm}


def limit(code: str, series: str, beam: int, args: argparse.Namespace) -> int:
    """The longest L timed for this code, series and beam (the 3-minute budget)."""
    if code == "before":  # quadratic copies: beam pays K times more
        return args.before if beam == 1 else args.before // 2
    if series == "input = output" and beam > 1:
        return args.beam_max
    return max(args.lengths)


def add_ratios(rows: list[dict]) -> None:
    """ratio: CPU seconds / those of the same series, code and mode at the previous length."""
    last: dict[tuple, dict] = {}
    for r in rows:
        key = (r["series"], r["code"], r["mode"], r["attention"])
        prev = last.get(key)
        r["ratio"] = None if prev is None else r["cpu_seconds"] / prev["cpu_seconds"]
        r["length_ratio"] = None if prev is None else r["length"] / prev["length"]
        last[key] = r


def table(rows: list[dict]) -> str:
    lines = ["| series | code | mode | attention | L (output tokens) | CPU s (wall s) "
             "| CPU ms / token: all = model + rest | x CPU time per doubling of L |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ratio = "" if r["ratio"] is None else f"{r['ratio']:.2f}"
        lines.append(f"| {r['series']} | {r['code']} | {r['mode']} "
                     f"| {'yes' if r['attention'] else 'no'} | {r['length']} "
                     f"| {r['cpu_seconds']:.2f} ({r['seconds']:.2f}) "
                     f"| {r['ms_per_token']:.3f} = {r['model_ms_per_token']:.3f} + "
                     f"{r['rest_ms_per_token']:.3f} | {ratio} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[500, 1000, 2000, 4000, 8000],
                        help="output lengths L (doublings; default 500 1000 2000 4000 8000)")
    parser.add_argument("--beams", type=int, nargs="+", default=[1, 5],
                        help="beam sizes (1 = greedy; default 1 5)")
    parser.add_argument("--fixed-input", type=int, default=500, metavar="N",
                        help="input characters of the 'output only' series (default 500)")
    parser.add_argument("--series", nargs="+", default=["input = output", "output only"],
                        choices=["input = output", "output only"])
    parser.add_argument("--beam-max", type=int, default=2000, metavar="N",
                        help="'input = output' with a beam only for L <= N (default 2000)")
    parser.add_argument("--before", type=int, default=0, metavar="N",
                        help="also time the search before the fix, greedy for L <= N, "
                        "beam for L <= N / 2 (0: no)")
    parser.add_argument("--before-rev", default=BEFORE_REV, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/long_input.json"))
    args = parser.parse_args(argv)
    if min(args.lengths) < 1 or min(args.beams) < 1 or args.fixed_input < 1:
        parser.error("--lengths, --beams and --fixed-input must be >= 1")
    torch.set_num_threads(args.threads)
    info = announce(args.threads)
    load_start = uptime()
    print(load_start)
    started = time.time()
    matmul = ReferenceMatmul()
    matmul.warm_up()
    translator = tiny_translator()
    use_search(None)
    decode_once(translator, "input = output", 50, args.fixed_input, max(args.beams), True,
                matmul)  # warm-up
    runs = [("after", None)]
    if args.before:
        old = old_search()
        if old is None:
            print(f"--before: cannot read search.py at {args.before_rev} with git; skipped")
        else:
            runs.append(("before", old))
    rows = []
    for code, module in runs:
        use_search(module)
        for series in args.series:
            if code == "before" and series != "input = output":
                continue
            for beam in args.beams:
                for attention in ((False,) if code == "before" else (False, True)):
                    for length in args.lengths:
                        if length > limit(code, series, beam, args):
                            continue
                        row = decode_once(translator, series, length, args.fixed_input, beam,
                                          attention, matmul)
                        row["code"] = code
                        rows.append(row)
                        print(f"{code:6} {series:14} {row['mode']:7} attention "
                              f"{'yes' if attention else 'no ':3} L {length:5}: "
                              f"{row['cpu_seconds']:7.2f} CPU s ({row['seconds']:.2f} wall), "
                              f"{row['ms_per_token']:.3f} ms/token = model "
                              f"{row['model_ms_per_token']:.3f} + rest "
                              f"{row['rest_ms_per_token']:.3f}", flush=True)
    use_search(None)
    add_ratios(rows)
    m = translator.config.model
    result = {"benchmark": "long_input", "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "machine": info, "uptime": {"start": load_start, "end": uptime()},
              "timing": "cpu_seconds: user CPU time of the call (getrusage; one thread, so "
                        "other jobs disturb it far less than the wall clock); system_seconds "
                        "apart (page faults of the model's large temporaries, erratic); "
                        "model_cpu_seconds: user CPU time inside model.step; rest: the "
                        "search, encoder and text handling; ratios and ms / token use user "
                        "CPU time",
              "model": {"source": "seqlab/demo.yaml model section, random weights (seed 0)",
                        "cell": m.cell, "embedding_size": m.embedding_size,
                        "hidden_size": m.hidden_size, "attention": m.attention,
                        "attention_style": m.attention_style, "vocab": len(ALPHABET) + 4,
                        "parameters": sum(p.numel() for p in translator.model.parameters())},
              "workload": {"lengths": args.lengths, "beams": args.beams,
                           "fixed_input": args.fixed_input, "series": args.series,
                           "before": args.before, "before_rev": args.before_rev,
                           "beam_max": args.beam_max,
                           "threads": args.threads,
                           "forced_length": "min_len = L: EOS only at step L + 1"},
              "matmul": matmul.describe(), "seconds": round(time.time() - started, 1),
              "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print()
    print(table(rows))
    print(f"\n{result['seconds']} s; results in {args.out}")
    return 0


if __name__ == "__main__":
    run_main(main)
