"""seqlab's recipe against a peer toolkit on Multi30k de->en: same data, same wall-clock
budget, same machine, at the same time; and how long seqlab's recipe needs to reach the
peer's final test2016 BLEU.

    python benchmarks/vs_peers.py --peer opennmt --minutes 60
    python benchmarks/vs_peers.py --peer joeynmt --minutes 60
    python benchmarks/vs_peers.py --peer seqlab --peer-set train.precision=bfloat16 --minutes 30

Both trainings start together and run side by side, one CPU thread each (on a 2-core machine
each gets one core, and both share memory bandwidth and caches the same way). The peer trains
the peers' GRU model (Moses-tokenized, lowercased words, 10k vocabularies per side):
JoeyNMT through the peers' own script (`../shared/peers/joey_full.sh`: its validations, by
BLEU, count in its budget); OpenNMT-py 3.5.1 with `configs/onmt_gru.yaml` saving a checkpoint
every 500 steps and validating nothing while it trains (so all its budget is training), the
checkpoint then chosen by greedy validation BLEU. `--peer seqlab` makes the peer seqlab's
recipe itself with the `--peer-set` overrides (a lever such as bfloat16 measured at the
recipe level, each run with the other as its neighbour). seqlab trains its recipe through
`benchmarks/quality.py` (validations in its budget, best checkpoint by validation BLEU) and
keeps the checkpoint of every validation. Set the peers up first:

    (cd ../shared/peers && bash setup.sh && bash prepare.sh)

Every output is scored here the same way: Moses-detokenized (peers) or raw (seqlab) text,
sacrebleu 13a BLEU against the raw references, cased and lowercased, and chrF. The peers
train on lowercased text, so the lowercased BLEU is the fair comparison. Then seqlab's kept
checkpoints are scored on test2016 with the recipe's search (reported only: no choice is
made on test), giving the training time at which seqlab's recipe first reaches the peer's
test2016 beam-5 BLEU. Writes benchmarks/results/vs_PEER.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from machine import machine_info, run_main, uptime
from speed import ONMT_DECODE_FLAGS

HERE = Path(__file__).parent
PEERS = ("joeynmt", "opennmt", "seqlab")
ONMT_CHECKPOINT_STEPS = 500
SCORE = r"""
import json, sys
import sacrebleu
from sacremoses import MosesDetokenizer
md = MosesDetokenizer(lang="en")
out = {}
for name, hyp, ref in json.loads(sys.argv[1]):
    hyps = [md.detokenize(l.split()) for l in open(hyp, encoding="utf-8").read().splitlines()]
    refs = open(ref, encoding="utf-8").read().splitlines()
    assert len(hyps) == len(refs), (hyp, len(hyps), len(refs))
    out[name] = {"bleu": round(sacrebleu.corpus_bleu(hyps, [refs]).score, 2),
                 "bleu_lc": round(sacrebleu.corpus_bleu(hyps, [refs], lowercase=True).score, 2),
                 "chrf": round(sacrebleu.corpus_chrf(hyps, [refs]).score, 2)}
print(json.dumps(out))
"""
# OpenNMT-py: the peers' benchmark config, trained until the clock stops it
ONMT_TRAIN = r"""
set -euo pipefail
source "$PEERS_DIR/common.sh"
cd "$WORK_DIR"
MD=models/$TAG
rm -rf "$MD" && mkdir -p "$MD"
sed -e "s#models/onmt_gru_bench#$MD#g" \
    -e "s/^train_steps: 300/train_steps: 10000000/" \
    -e "s/^valid_steps: .*/valid_steps: 10000000/" \
    -e "s/^save_checkpoint_steps: 300/save_checkpoint_steps: $EVERY/" \
    -e "s/^keep_checkpoint: 1/keep_checkpoint: -1/" \
    "$PEERS_DIR/configs/onmt_gru.yaml" > cfg/$TAG.yaml
"$ONMT_BIN/onmt_build_vocab" -config cfg/$TAG.yaml -n_sample -1 > logs/${TAG}_vocab.log 2>&1
set +e
timeout -s INT -k 120 "$MINUTES" "$ONMT_BIN/onmt_train" -config cfg/$TAG.yaml \
  > logs/${TAG}_train.log 2>&1
echo "train exit: $?"
"""
SEQLAB_CURVE = r"""
import json, sys
from pathlib import Path
from seqlab.data import read_parallel
from seqlab.metrics import bleu
from seqlab.translate import Translator
run, config_test, search = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
pairs = read_parallel(*json.loads(config_test))
src, ref = pairs.src, pairs.tgt
out = []
for path in sorted(Path(run).glob("step-*.pt")):
    hyps = Translator.from_checkpoint(str(path), device="cpu").translate(src, **search)
    out.append({"step": int(path.stem.split("-")[1]),
                "test_bleu": round(bleu(hyps, ref).score, 2),
                "test_bleu_lc": round(bleu(hyps, ref, lowercase=True).score, 2)})
print(json.dumps(out))
"""


def joey_steps(log: Path) -> dict:
    text = log.read_text(errors="replace") if log.exists() else ""
    pattern = r"Step:\s+(\d+)|Interrupt at epoch \d+, step (\d+)"  # logged, and the last
    steps = [int(a or b) for a, b in re.findall(pattern, text)]
    epochs = [int(e) for e in re.findall(r"Epoch\s+(\d+)", text)]
    return {"steps": max(steps, default=0), "epochs": max(epochs, default=0)}


def onmt_steps(log: Path) -> dict:
    text = log.read_text(errors="replace") if log.exists() else ""
    steps = [int(s) for s in re.findall(r"Step (\d+)/", text)]
    return {"steps": max(steps, default=0)}


def score(python: Path, jobs: list[tuple[str, str, str]]) -> dict:
    """{name: bleu, bleu_lc, chrf} of each (name, hypothesis file, reference file)."""
    return json.loads(subprocess.check_output([str(python), "-c", SCORE, json.dumps(jobs)]))


def onmt_translate(onmt_bin: Path, checkpoint: Path, src: Path, out: Path, beam: int,
                   env: dict) -> None:
    subprocess.run([str(onmt_bin / "onmt_translate"), "-model", str(checkpoint), "-src", str(src),
                    "-output", str(out), "-beam_size", str(beam), *ONMT_DECODE_FLAGS],
                   env=env, check=True, capture_output=True)


def onmt_scores(work: Path, tag: str, onmt_bin: Path, joey_py: Path, env: dict) -> dict:
    """OpenNMT-py's checkpoints: the best by greedy validation BLEU (lowercased; the earliest
    of equals), then val and test2016 with greedy search and beam 5."""
    data, raw, hyps = work / "data", work / "data" / "raw", work / "hyps"
    checkpoints = sorted((work / "models" / tag).glob("model_step_*.pt"),
                         key=lambda p: int(p.stem.rsplit("_", 1)[1]))
    if not checkpoints:
        sys.exit(f"OpenNMT-py saved no checkpoint: see {work / 'logs' / (tag + '_train.log')}")
    val_jobs = []
    for ckpt in checkpoints:
        hyp = hyps / f"{tag}_val_greedy_{ckpt.stem}.txt"
        onmt_translate(onmt_bin, ckpt, data / "val.de", hyp, 1, env)
        val_jobs.append((ckpt.name, str(hyp), str(raw / "val.en")))
    val_bleu = {name: s["bleu_lc"] for name, s in score(joey_py, val_jobs).items()}
    print("  OpenNMT-py val greedy BLEU lc by checkpoint:", val_bleu, flush=True)
    best = max(checkpoints, key=lambda c: val_bleu[c.name])  # max keeps the first of equals
    jobs = []
    for split in ("val", "test2016"):
        for mode, beam in (("greedy", 1), ("beam5", 5)):
            hyp = hyps / f"{tag}_{split}_{mode}.txt"
            onmt_translate(onmt_bin, best, data / f"{split}.de", hyp, beam, env)
            jobs.append((f"{split}_{mode}", str(hyp), str(raw / f"{split}.en")))
    return {"best_checkpoint": best.name, "scores": score(joey_py, jobs),
            "val_greedy_by_checkpoint": val_bleu}


def seqlab_curve(args, run: str, overrides: list[str], records: list[dict], work_env: dict,
                 search: dict) -> list[dict]:
    """test2016 BLEU of each kept checkpoint of a seqlab run, with its training time
    (records: the run's metrics.jsonl)."""
    from seqlab.config import load_config

    config = load_config(args.config, overrides)
    d = config.data
    test = json.dumps([str(d.path(d.test)), d.src, d.tgt])
    out = subprocess.check_output([sys.executable, "-c", SEQLAB_CURVE, run, test,
                                   json.dumps(search)], env=work_env)
    elapsed = {r["step"]: r["elapsed"] for r in records if "valid_bleu" in r}
    return [dict(point, minutes=round(elapsed[point["step"]] / 60, 1))
            for point in json.loads(out)]


def start_seqlab(args, run: str, overrides: list[str], results: Path, log: Path,
                 env: dict) -> subprocess.Popen:
    """seqlab's recipe through quality.py for the budget, keeping every validation's
    checkpoint (the curve), one thread."""
    return subprocess.Popen([sys.executable, str(HERE / "quality.py"), args.config,
                             "--minutes", str(args.minutes), "--out-run", run,
                             "--set", f"train.threads={args.threads}",
                             "--set", "train.keep_last=1000",
                             *sum([["--set", s] for s in overrides], []),
                             "--results", str(results)],
                            env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT)


def seqlab_result(args, run: str, overrides: list[str], results: Path, env: dict) -> dict:
    """A finished seqlab run: its steps, its best checkpoint's scores (val and test2016,
    greedy and the recipe's search) and every kept checkpoint's test2016 BLEU."""
    quality = json.loads(results.read_text())
    scores = {f"{split}_{mode}": {k: quality["scores"][name][search][k]
                                  for k in ("bleu", "bleu_lc", "chrf")}
              for split, name in (("val", "valid"), ("test2016", "test"))
              for mode, search in (("greedy", "greedy"), ("beam5", "recipe"))}
    records = [json.loads(line) for line in
               (Path(run) / "metrics.jsonl").read_text().splitlines()]
    return {"config": args.config, "overrides": overrides, "run": run,
            "steps": max(r["step"] for r in records),
            "epochs": max(r.get("epoch", 0) for r in records),
            "search": quality["recipe_search"], "scores": scores,
            "test2016_by_checkpoint": seqlab_curve(args, run, overrides, records, env,
                                                   quality["recipe_search"])}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--peer", choices=PEERS, required=True)
    p.add_argument("--minutes", type=float, default=60)
    p.add_argument("--threads", type=int, default=1, help="CPU threads for each toolkit")
    p.add_argument("--config", default="configs/multi30k_de_en.yaml")
    p.add_argument("--set", action="append", default=[], help="override for seqlab's recipe")
    p.add_argument("--peer-set", action="append", default=[],
                   help="with --peer seqlab: override for the peer's run of the recipe "
                        "(on top of --set)")
    p.add_argument("--peers", default=str(HERE.parent.parent / "shared" / "peers"))
    p.add_argument("--work", default=os.path.expanduser("~/.cache/seqlab-peers/work"))
    p.add_argument("--onmt-checkpoint-steps", type=int, default=ONMT_CHECKPOINT_STEPS,
                   help="steps between OpenNMT-py's checkpoints (its candidates)")
    p.add_argument("--out-run", help="seqlab's run directory (default runs/vs_PEER)")
    p.add_argument("--results", help="default benchmarks/results/vs_PEER.json")
    args = p.parse_args(argv)
    if args.peer_set and args.peer != "seqlab":
        p.error("--peer-set is for --peer seqlab")
    if args.peer == "seqlab" and not args.peer_set:
        p.error("--peer seqlab needs --peer-set: what the peer's run changes")
    args.out_run = args.out_run or f"runs/vs_{args.peer}"
    results = Path(args.results or HERE / "results" / f"vs_{args.peer}.json")

    peers, work = Path(args.peers).resolve(), Path(args.work)
    joey_py = work.parent / "joey-venv" / "bin" / "python"
    onmt_bin = work.parent / "onmt-venv" / "bin"
    if args.peer != "seqlab" and not (joey_py.exists() and onmt_bin.exists()
                                      and (work / "data" / "train.de").exists()):
        sys.exit(f"the peers are not set up: run (cd {peers} && bash setup.sh && bash prepare.sh)")
    threads = str(args.threads)
    env = dict(os.environ, OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
    info = {"machine": machine_info(), "load_before": uptime()}
    ours_results = results.with_name(results.stem + "_seqlab.json")
    peer_key = "seqlab_peer" if args.peer == "seqlab" else args.peer  # its results entry
    log = {"peer": Path(f"{args.out_run}.{peer_key}.log"),
           "seqlab": Path(f"{args.out_run}.seqlab.log")}
    log["peer"].parent.mkdir(parents=True, exist_ok=True)
    tag = "joey_full" if args.peer == "joeynmt" else f"onmt_full_{args.minutes:g}min"
    peer_run = f"{args.out_run}_peer"  # --peer seqlab
    peer_results = results.with_name(results.stem + "_peer.json")
    start = time.time()
    if args.peer == "joeynmt":
        peer = subprocess.Popen(["bash", str(peers / "joey_full.sh")],
                                env=dict(env, BUDGET_MIN=str(int(args.minutes)),
                                         WORK_DIR=str(work)),
                                stdout=open(log["peer"], "w"), stderr=subprocess.STDOUT)
    elif args.peer == "opennmt":
        peer = subprocess.Popen(["bash", "-c", ONMT_TRAIN],
                                env=dict(env, PEERS_DIR=str(peers), WORK_DIR=str(work), TAG=tag,
                                         EVERY=str(args.onmt_checkpoint_steps),
                                         MINUTES=f"{args.minutes * 60:.0f}s"),
                                stdout=open(log["peer"], "w"), stderr=subprocess.STDOUT)
    else:
        peer = start_seqlab(args, peer_run, args.set + args.peer_set, peer_results,
                            log["peer"], env)
    ours = start_seqlab(args, args.out_run, args.set, ours_results, log["seqlab"], env)
    rc = {"peer": peer.wait(), "seqlab": ours.wait()}
    wall = round(time.time() - start, 1)
    if any(rc.values()):
        sys.exit(f"failed: {rc}; see {log['peer']} / {log['seqlab']}")

    # after training, nothing else runs: the peer's decoding, then seqlab's curve
    if args.peer == "joeynmt":
        raw = work / "data" / "raw"
        jobs = [(f"{split}_{mode}", str(work / "hyps" / f"{tag}_{split}_{mode}.txt"),
                 str(raw / f"{split}.en")) for split in ("val", "test2016")
                for mode in ("greedy", "beam5")]
        peer_result = {"config": str(peers / "configs" / "joey_gru_full.yaml"),
                       **joey_steps(work / "logs" / f"{tag}_train.log"),
                       "scores": score(joey_py, jobs)}
    elif args.peer == "opennmt":
        peer_result = {"config": str(peers / "configs" / "onmt_gru.yaml"),
                       "checkpoint_every": args.onmt_checkpoint_steps,
                       **onmt_steps(work / "logs" / f"{tag}_train.log"),
                       **onmt_scores(work, tag, onmt_bin, joey_py,
                                     dict(env, TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD="1"))}
    else:
        peer_result = seqlab_result(args, peer_run, args.set + args.peer_set, peer_results, env)
    ours = seqlab_result(args, args.out_run, args.set, ours_results, env)
    curve = ours["test2016_by_checkpoint"]
    target = peer_result["scores"]["test2016_beam5"]["bleu_lc"]
    reached = next((point for point in curve if point["test_bleu_lc"] >= target), None)
    result = {
        "peer": args.peer, "minutes": args.minutes, "threads_each": args.threads,
        "wall_seconds": wall, **info, "load_after": uptime(),
        peer_key: peer_result,
        "seqlab": ours,
        "seqlab_minutes_to_peer_test_bleu_lc": {
            "target": target, "minutes": None if reached is None else reached["minutes"],
            "step": None if reached is None else reached["step"]},
    }
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(result, indent=2) + "\n")
    print("| toolkit | steps | val BLEU greedy / beam 5 (lc) | test2016 BLEU greedy / beam 5 "
          "(lc) | test2016 beam 5 cased | test2016 chrF beam 5 |")
    print("|---|---|---|---|---|---|")
    for name in (peer_key, "seqlab"):
        r, s = result[name], result[name]["scores"]
        label = f"seqlab, {' '.join(args.peer_set)}" if name == "seqlab_peer" else name
        print(f"| {label} | {r['steps']} | {s['val_greedy']['bleu_lc']} / "
              f"{s['val_beam5']['bleu_lc']} | {s['test2016_greedy']['bleu_lc']} / "
              f"{s['test2016_beam5']['bleu_lc']} | {s['test2016_beam5']['bleu']} | "
              f"{s['test2016_beam5']['chrf']} |")
    when = result["seqlab_minutes_to_peer_test_bleu_lc"]
    print(f"seqlab's recipe reaches the peer's test2016 beam-5 BLEU lc ({target}) "
          + ("not within the budget" if reached is None else
             f"after {when['minutes']} minutes (step {when['step']})"))
    print(f"results: {results}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    run_main(main)
