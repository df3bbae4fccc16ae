"""`seqlab demo`: the embedded default, trained and shown in about three minutes on a CPU.

A seq2seq with attention learns to turn human-written dates (21 English, German and Korean
formats) into ISO dates; it is scored by exact match on 1,000 held-out dates (dates never
seen in training), shows examples, and saves its attention maps.
"""

from __future__ import annotations

import json
import sys
from importlib import resources
from pathlib import Path

DEMO_CONFIG = resources.files("seqlab") / "demo.yaml"
SHOWCASE = ["Sunday, March 3, 2024", "2024년 3월 3일 일요일", "3. März 2024", "11/25/87"]


def _fresh_dir(out: Path) -> Path:
    """runs/demo, or runs/demo-2, -3, ... if it already holds a run: never overwrite."""
    candidate, n = out, 1
    while (candidate / "last.pt").exists():
        n += 1
        candidate = out.with_name(f"{out.name}-{n}")
    return candidate


def run_demo(out_dir: str | Path = "runs/demo", overrides=(), quiet: bool = False) -> dict:
    from seqlab.config import load_config
    from seqlab.metrics import exact_match
    from seqlab.plots import plot_attention, plot_runs
    from seqlab.synthetic import make_dataset
    from seqlab.train import train
    from seqlab.translate import Translator

    def say(text=""):
        if not quiet:
            print(text, file=sys.stderr)

    with resources.as_file(DEMO_CONFIG) as path:
        config = load_config(path, list(overrides))
    out = _fresh_dir(Path(out_dir))
    say(f"seqlab demo: dates in {21} formats -> ISO 8601, char-level GRU + additive attention; "
        f"run directory {out}")
    train(config, out, quiet=quiet)

    translator = Translator.from_checkpoint(out)
    test = make_dataset("dates", config.data.synthetic_eval_size, seed=config.train.seed,
                        split="test")
    sources, refs = [s for s, _ in test], [t for _, t in test]
    hyps = translator.translate(sources)
    accuracy = exact_match(hyps, refs)
    wrong = [(s, r, h) for s, r, h in zip(sources, refs, hyps) if h.strip() != r]

    say(f"\nexact match on {len(test)} held-out dates: {100 * accuracy:.1f}%")
    shown = translator.translate_nbest(SHOWCASE, with_attention=True)  # plotted below
    for text, nbest in zip(SHOWCASE, shown):
        say(f"  {text:>26}  ->  {nbest[0].text}")
    for s, r, h in wrong[:5]:
        say(f"  miss: {s!r} -> {h!r} (expected {r!r})")
    pictures = []
    for name, text, nbest in zip(("en", "ko"), SHOWCASE, shown):
        best = nbest[0]
        if best.attention is not None:
            pictures.append(str(plot_attention(
                best.attention, best.src_tokens,  # no <eos> row if cut at the length limit
                (best.tokens + ["<eos>"])[: best.attention.shape[0]],
                out / f"attention_{name}.png", title=f"{text} -> {best.text}")))
    pictures.append(str(plot_runs({"demo": out / "metrics.jsonl"}, out / "curves.png")))
    report = {"dataset": "dates", "test_sentences": len(test), "exact_match": accuracy,
              "errors": len(wrong), "examples": {t: n[0].text for t, n in zip(SHOWCASE, shown)},
              "pictures": pictures}
    (out / "demo_metrics.json").write_text(json.dumps(report, indent=2, ensure_ascii=False),
                                           encoding="utf-8")
    say(f"metrics: {out / 'demo_metrics.json'}; pictures: {', '.join(pictures)}")
    return report
