"""The Korean chatbot recipe end to end: train configs/chatbot_ko.yaml (or reuse a run), answer
the test questions with beam search and with sampling, score what suits a dialogue model, and
write benchmarks/results/chatbot_ko.json (plus the README's tables on stdout).

    python benchmarks/chatbot.py                                    # train (15 min, 1 thread)
    python benchmarks/chatbot.py --run runs/chatbot_ko --no-train   # score an existing run

Every choice (best.pt, the sampling settings) is made on valid, or fixed in advance; test is
only reported. Rows of the test table:
    reference   the human answers themselves: the diversity and length to aim at
    retrieval   a peer that needs no training: the answer of the training question most like
                the test question (cosine of character-bigram counts, spaces removed)
    greedy      the most likely piece at each step
    beam        beam search, the recipe's (beam 5, length penalty 1.0)
    sample      ancestral sampling, temperature 1.0 and nucleus top-p 0.9 (Holtzman et al.
                2020), mean and standard deviation over --seeds seeds
Columns:
    bleu        sacrebleu corpus BLEU against the one reference answer, tokenize char
                (Korean; sacrebleu's ko-mecab needs sacrebleu[ko]); chrf: chrF2
    distinct    distinct-1 / distinct-2 (Li et al. 2016; seqlab.metrics.distinct_n): distinct
                n-grams / all n-grams over every answer, of words (whitespace-separated eojeol)
                and of characters (spaces removed)
    chars/words mean answer length (characters with spaces; whitespace words)
    unique      distinct answers / questions
    in_train    share of answers that are, verbatim, an answer of the training set
Perplexity: teacher-forced, per sentencepiece piece (<eos> included), of the reference answers
of valid and test, with the best checkpoint.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from machine import machine_info, run_main, uptime

RESULTS = Path(__file__).parent / "results"
SAMPLING = {"temperature": 1.0, "top_k": 0, "top_p": 0.9}  # fixed in advance, not tuned on test
VALID_GRID = [{"temperature": t, "top_k": 0, "top_p": p} for t, p in
              ((0.5, 0.9), (0.7, 0.9), (1.0, 0.9), (1.0, 1.0))]


def answer_stats(hyps: list[str], refs: list[str] | None, train_answers: set[str],
                 bleu_tokenize: str) -> dict:
    """The scores of one set of answers (refs None: no BLEU / chrF, for the references)."""
    from seqlab.metrics import bleu, chrf, distinct_n, exact_match

    out: dict = {}
    if refs is not None:
        b, c = bleu(hyps, refs, tokenize=bleu_tokenize), chrf(hyps, refs)
        out.update(bleu=round(b.score, 2), chrf=round(c.score, 2), signature=b.signature,
                   chrf_signature=c.signature, exact_match=round(exact_match(hyps, refs), 4))
    for unit in ("word", "char"):
        for n in (1, 2):
            out[f"distinct{n}_{unit}"] = round(distinct_n(hyps, n, unit=unit), 4)
    out["chars"] = round(statistics.mean(len(h) for h in hyps), 2)
    out["words"] = round(statistics.mean(len(h.split()) for h in hyps), 2)
    out["unique"] = round(len(set(hyps)) / len(hyps), 4)
    out["in_train"] = round(sum(h in train_answers for h in hyps) / len(hyps), 4)
    out["empty"] = sum(not h.strip() for h in hyps)
    return out


def mean_sd(runs: list[dict]) -> tuple[dict, dict]:
    keys = [k for k, v in runs[0].items() if isinstance(v, (int, float))]
    mean = {k: round(statistics.mean(r[k] for r in runs), 4) for k in keys}
    sd = {k: round(statistics.stdev(r[k] for r in runs), 4) if len(runs) > 1 else 0.0
          for k in keys}
    return mean, sd


def bigrams(text: str) -> Counter:
    chars = "".join(text.split())
    return Counter(chars[i : i + 2] for i in range(len(chars) - 1)) or Counter([chars])


def retrieve(questions: list[str], train_q: list[str], train_a: list[str]) -> list[str]:
    """For each question, the answer of the most similar training question: the cosine of
    character-bigram counts (spaces removed); ties go to the earliest training pair."""
    vectors = [bigrams(q) for q in train_q]
    norms = [math.sqrt(sum(v * v for v in vec.values())) or 1.0 for vec in vectors]
    index: dict[str, list[tuple[int, int]]] = {}
    for i, vec in enumerate(vectors):
        for gram, count in vec.items():
            index.setdefault(gram, []).append((i, count))
    answers = []
    for q in questions:
        dots: Counter = Counter()
        for gram, count in bigrams(q).items():
            for i, c in index.get(gram, ()):
                dots[i] += count * c
        best = max(dots, key=lambda i: (dots[i] / norms[i], -i)) if dots else 0
        answers.append(train_a[best])
    return answers


def curve(run: Path) -> list[dict]:
    """Every validation: step, training minutes, validation loss / perplexity / BLEU / chrF,
    and the learning rate of the training step before it (the plateau schedule's halvings)."""
    rows, lr = [], None
    for line in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines():
        r = json.loads(line)
        lr = r.get("lr", lr)
        if "valid_loss" in r:
            rows.append({"step": r["step"], "epoch": r.get("epoch"),
                         "minutes": round(r.get("elapsed", float("nan")) / 60, 2),
                         **{k: round(r[k], 4) for k in ("valid_loss", "valid_ppl",
                                                        "valid_bleu", "valid_chrf")
                            if isinstance(r.get(k), (int, float))},
                         "lr": lr})
    return rows


def train_run(args, run: Path, overrides: list[str]) -> float:
    cmd = [sys.executable, "-m", "seqlab", "train", args.config, "--out", str(run)]
    for item in overrides:
        cmd += ["--set", item]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    start = time.time()
    done = subprocess.run(cmd, env=env)
    if done.returncode != 0:
        sys.exit(f"chatbot.py: training failed (exit {done.returncode}); see {run}")
    return round(time.time() - start, 1)


def table(rows: dict[str, dict], sd: dict | None = None) -> str:
    """The README's markdown table of the test scores."""
    head = ("| answers | BLEU (char) | chrF | distinct-1 / -2, words | distinct-1 / -2, "
            "characters | length (chars / words) | unique | in train |\n"
            "|---|---|---|---|---|---|---|---|\n")
    lines = []
    for name, r in rows.items():
        def f(key, digits=2, scale=1.0, r=r, name=name):
            if key not in r:
                return "–"
            text = f"{scale * r[key]:.{digits}f}"
            if sd and name.startswith("sample") and sd.get(key):
                text += f" ± {scale * sd[key]:.{digits}f}"
            return text
        lines.append(f"| {name} | {f('bleu')} | {f('chrf')} | {f('distinct1_word', 3)} / "
                     f"{f('distinct2_word', 3)} | {f('distinct1_char', 3)} / "
                     f"{f('distinct2_char', 3)} | {f('chars', 1)} / {f('words', 1)} | "
                     f"{f('unique', 0, 100)}% | {f('in_train', 0, 100)}% |")
    return head + "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="configs/chatbot_ko.yaml")
    p.add_argument("--run", default="runs/chatbot_ko", help="run directory")
    p.add_argument("--no-train", action="store_true", help="score the existing --run only")
    p.add_argument("--threads", type=int, default=1, help="torch threads (train.threads)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--seeds", type=int, default=3, help="sampling seeds 1..N")
    p.add_argument("--examples", type=int, default=8, help="sample exchanges, evenly spaced")
    p.add_argument("--results", default=str(RESULTS / "chatbot_ko.json"))
    args = p.parse_args(argv)

    import torch

    from seqlab.config import load_config
    from seqlab.data import read_parallel
    from seqlab.translate import Translator

    torch.set_num_threads(args.threads)
    run = Path(args.run)
    overrides = [*args.set, f"train.threads={args.threads}"]
    load_config(args.config, overrides)  # a bad config: one line, before any training
    report: dict = {"config": args.config, "overrides": overrides, "run": str(run),
                    "machine": machine_info(), "load_before": uptime()}
    if not args.no_train:
        report["train_wall_seconds"] = train_run(args, run, overrides)
    translator = Translator.from_checkpoint(run, device="cpu")
    config = translator.config  # the run's own
    d = config.data
    train_pairs = read_parallel(d.path(d.train), d.src, d.tgt)
    valid = read_parallel(d.path(d.valid), d.src, d.tgt)
    test = read_parallel(d.path(d.test), d.src, d.tgt)
    train_answers = set(train_pairs.tgt)
    tok = config.eval.bleu_tokenize
    results = json.loads((run / "results.json").read_text(encoding="utf-8"))
    rows = curve(run)
    best = min(rows, key=lambda r: r["valid_loss"]) if rows else {}
    report["train"] = {"stopped": results.get("stopped"),
                       "minutes": rows[-1]["minutes"] if rows else None,
                       "best_step": best.get("step"), "best_minutes": best.get("minutes"),
                       "validations": len(rows)}
    report["curve"] = rows

    def timed(fn):
        start = time.time()
        out = fn()
        return out, round(time.time() - start, 1)

    ppl = {}
    for name, split in (("valid", valid), ("test", test)):
        nll, ntok = translator.score(split.src, split.tgt)
        ppl[name] = {"ppl": round(math.exp(nll / ntok), 3), "loss": round(nll / ntok, 4),
                     "tokens": ntok}
    report["perplexity"] = ppl
    print(f"perplexity: valid {ppl['valid']['ppl']:.2f}, test {ppl['test']['ppl']:.2f}",
          file=sys.stderr)

    searches = {"greedy": {"beam_size": 1, "length_penalty": 0.0},
                "beam": {"beam_size": config.search.beam_size,
                         "length_penalty": config.search.length_penalty}}
    outputs: dict[str, list[str]] = {"reference": test.tgt}
    outputs["retrieval"], _ = timed(lambda: retrieve(test.src, train_pairs.src, train_pairs.tgt))
    scores = {"reference": answer_stats(test.tgt, None, train_answers, tok),
              "retrieval": answer_stats(outputs["retrieval"], test.tgt, train_answers, tok)}
    seconds = {}
    for name, search in searches.items():
        outputs[name], seconds[name] = timed(lambda s=search: translator.translate(test.src, **s))
        scores[name] = answer_stats(outputs[name], test.tgt, train_answers, tok)
        print(f"{name}: {scores[name]}", file=sys.stderr)
    samples, sample_runs = {}, []
    for seed in range(1, args.seeds + 1):
        sampling = dict(SAMPLING, seed=seed)
        samples[seed], seconds[f"sample_seed{seed}"] = timed(lambda s=sampling: [
            n[0].text for n in translator.translate_nbest(test.src, sampling=s)])
        sample_runs.append(answer_stats(samples[seed], test.tgt, train_answers, tok))
    outputs["sample"] = samples[1]
    mean, sd = mean_sd(sample_runs)
    scores["sample"] = {**mean, "signature": sample_runs[0]["signature"],
                        "chrf_signature": sample_runs[0]["chrf_signature"]}
    print(f"sample (mean of {args.seeds}): {mean}", file=sys.stderr)
    report["test"] = {"rows": scores, "sample_sd": sd, "sample_runs": sample_runs,
                      "sampling": SAMPLING, "seeds": list(range(1, args.seeds + 1)),
                      "searches": searches, "decode_seconds": seconds,
                      "sentences": len(test.src)}

    grid = []
    for setting in VALID_GRID:
        hyps = [n[0].text for n in translator.translate_nbest(valid.src,
                                                              sampling=dict(setting, seed=1))]
        grid.append({**setting, "seed": 1,
                     **answer_stats(hyps, valid.tgt, train_answers, tok)})
    for name, search in searches.items():
        grid.append({"search": name, **search,
                     **answer_stats(translator.translate(valid.src, **search), valid.tgt,
                                    train_answers, tok)})
    report["valid_decoding"] = grid
    report["frequent_answers"] = {name: Counter(outputs[name]).most_common(5)
                                  for name in ("reference", "beam", "sample")}
    n = len(test.src)
    picks = [k * n // args.examples for k in range(args.examples)]
    report["examples"] = [{"line": i + 1, "question": test.src[i], "reference": test.tgt[i],
                           "beam": outputs["beam"][i], "sample": outputs["sample"][i],
                           "retrieval": outputs["retrieval"][i]} for i in picks]
    report["load_after"] = uptime()

    out = Path(args.results)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(table(scores, sd))
    print()
    print("| question | reference | beam | sample |\n|---|---|---|---|")
    for e in report["examples"]:
        print(f"| {e['question']} | {e['reference']} | {e['beam']} | {e['sample']} |")
    print(f"results: {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    run_main(main)
