"""The `seqlab` command: thin argument parsing over the Python API.

Heavy imports (torch, sacrebleu, matplotlib) happen inside the commands, so `seqlab --help`
answers at once.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _add_search_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("search (defaults: the model's config, search section)")
    g.add_argument("--beam", type=int, dest="beam_size", metavar="K",
                   help="beam size K (1 = greedy)")
    g.add_argument("--n-best", type=int, dest="n_best", metavar="N",
                   help="hypotheses (or samples) per input; <= K for beam search")
    g.add_argument("--length-penalty", type=float, dest="length_penalty", metavar="ALPHA",
                   help="GNMT alpha: score = log p / ((5 + len) / 6) ** alpha")
    g.add_argument("--coverage-penalty", type=float, dest="coverage_penalty", metavar="BETA",
                   help="GNMT beta")
    g.add_argument("--min-len", type=int, dest="min_len", metavar="N")
    g.add_argument("--max-len-a", type=float, dest="max_len_a", metavar="A",
                   help="output length limit = a * source length + b")
    g.add_argument("--max-len-b", type=int, dest="max_len_b", metavar="B")
    g.add_argument("--no-repeat-ngram", type=int, dest="no_repeat_ngram", metavar="N")
    g.add_argument("--batch-size", type=int, dest="batch_size", metavar="N",
                   help="sentences per batch")
    g.add_argument("--max-input-tokens", type=int, dest="max_input_tokens", metavar="N",
                   help="longest input line in source tokens; a longer one is an error "
                   "before decoding (config default 1000)")
    _add_speed_options(g)
    s = p.add_argument_group("sampling (instead of search)")
    s.add_argument("--sample", action="store_true", help="sample instead of searching")
    _add_sampling_options(s)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")


def _add_speed_options(g) -> None:
    """--stopping and --precision: how fast a seq2seq model decodes (their choices: the
    search section's, seqlab.config)."""
    from seqlab.config import SearchConfig, choices

    g.add_argument("--stopping", choices=choices(SearchConfig, "stopping"),
                   help="beam search: stop a sentence when no open hypothesis can win "
                   "(exact) or when none would win if it ended next (heuristic, faster)")
    g.add_argument("--precision", choices=choices(SearchConfig, "precision"),
                   help="number format of decoding; int8: quantized output layers (CPU); "
                   "bfloat16: the decoder's products in bf16 (fastest on a CPU with AMX)")


def _add_sampling_options(g) -> None:
    """--temperature, --top-k, --top-p, --seed (their ranges: _SAMPLING_RULES)."""
    g.add_argument("--temperature", type=float, default=1.0, metavar="T")
    g.add_argument("--top-k", type=int, default=0, metavar="K",
                   help="sample among the K most likely tokens (0: all)")
    g.add_argument("--top-p", type=float, default=1.0, metavar="P",
                   help="nucleus: the smallest set of tokens with probability >= P")
    g.add_argument("--seed", type=int, default=None, metavar="N")


# option of each key of the config's search section (its range is declared there)
_SEARCH_OPTIONS = {"beam_size": "--beam", "n_best": "--n-best",
                   "length_penalty": "--length-penalty", "coverage_penalty": "--coverage-penalty",
                   "min_len": "--min-len", "max_len_a": "--max-len-a", "max_len_b": "--max-len-b",
                   "no_repeat_ngram": "--no-repeat-ngram", "batch_size": "--batch-size",
                   "max_input_tokens": "--max-input-tokens", "stopping": "--stopping",
                   "precision": "--precision"}
# sampling options are not config keys: their ranges live here (option, is it valid, rule)
_SAMPLING_RULES = {
    "temperature": ("--temperature", lambda v: v > 0, "> 0 (for the most likely token, "
                    "leave out --sample)"),
    "top_k": ("--top-k", lambda v: v >= 0, ">= 0 (0: no top-k filter)"),
    "top_p": ("--top-p", lambda v: 0 < v <= 1, "in (0, 1]"),
}


def _search_overrides(args) -> dict:
    return {k: getattr(args, k) for k in _SEARCH_OPTIONS if getattr(args, k) is not None}


def _sampling(args) -> dict | None:
    if not args.sample:
        return None
    return dict(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                seed=args.seed)


def _check_options(args) -> None:
    """Every decoding option in range, or one line naming the option (ConfigError); checked
    before a model is even loaded."""
    from seqlab.config import ConfigError, SearchConfig, field_rules

    rules = field_rules(SearchConfig)
    checks = [(option, rules[key].ok, rules[key].text, getattr(args, key))
              for key, option in _SEARCH_OPTIONS.items() if key in rules]
    checks += [(option, ok, text, getattr(args, key))
               for key, (option, ok, text) in _SAMPLING_RULES.items()]
    for option, ok, text, value in checks:
        if value is not None and not ok(value):
            raise ConfigError(f"{option} {value:g}: must be {text}")


def _write_output(text: str, path: str | None) -> None:
    """The command's output: into `path` (--output) if given, else to stdout."""
    if path:
        Path(path).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)


def _check_output(path: str | None) -> None:
    """-o FILE must be writable: not a directory, in a folder that exists (checked before
    any decoding, so that no work is lost to a typo)."""
    import os

    from seqlab.rundir import RunError

    if path is None:
        return
    p = Path(path)
    if p.is_dir():
        raise RunError(f"-o {path}: is a directory; give a file name")
    folder = p.parent
    if not folder.is_dir():
        raise RunError(f"-o {path}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise RunError(f"-o {path}: not writable")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"seqlab {version('seqlab')} (torch {version('torch')})"
    except PackageNotFoundError:
        from seqlab import __version__

        return f"seqlab {__version__}"


def build_parser() -> argparse.ArgumentParser:
    from seqlab.serve.limits import limit_options

    parser = argparse.ArgumentParser(
        prog="seqlab",
        description="Recurrent sequence learning: train a model for any problem shape, then "
        "translate or chat (seq2seq), classify (many-to-one), generate (language model), "
        "tag (word spacing, tagging) or forecast (a numeric series) with it; plot its "
        "training curves or write a report page.",
        epilog="Start with `seqlab demo`. Each command has --help.")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train a model from a YAML config (any problem shape)",
                       description="Train a model. The run directory gets config.yaml, "
                       "metrics.jsonl, last.pt, best.pt and results.json. Ctrl-C (or "
                       "SIGTERM) saves a resumable last.pt at the current step and prints the "
                       "command that resumes it.")
    p.add_argument("config", help="YAML config (see configs/reference.yaml for every key)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set model.hidden_size=64 (repeatable)")
    p.add_argument("--out", help="run directory (default: runs/CONFIG_NAME)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar or log lines")

    p = sub.add_parser("translate", help="translate text with a trained model",
                       description="Translate one sentence per line, stdin to stdout by "
                       "default; one output line per input line, same order. With --n-best N "
                       "each input gives N lines: INDEX<TAB>SCORE<TAB>TEXT (INDEX counts input "
                       "lines from 0).")
    p.add_argument("model", help="a run directory (its best checkpoint) or a checkpoint file")
    p.add_argument("--input", "-i", metavar="FILE", help="input file (default: stdin)")
    p.add_argument("--output", "-o", metavar="FILE", help="output file (default: stdout)")
    p.add_argument("--attention", metavar="DIR", help="also draw each output's attention "
                   "(DIR/LINE.png and .svg, LINE counting input lines from 0; LINE_N for "
                   "the n-th of an n-best list)")
    _add_search_options(p)

    p = sub.add_parser("chat", help="talk to a trained seq2seq model, one line at a time",
                       description="Answer each line as soon as it is read, with the model's "
                       "search (its config's search section: a beam for the chatbot recipe) or "
                       "--sample. At a terminal it prompts; from a pipe it writes one answer "
                       "line per input line (an empty one for a line it cannot answer, the "
                       "reason on stderr). An empty line, /quit or the end of input (Ctrl-D) "
                       "ends the chat; Ctrl-C too (exit code 130). With --sample --seed N, "
                       "line i is sampled with seed N + i, so a session replays exactly.")
    p.add_argument("model", help="a run directory (its best checkpoint) or a checkpoint file")
    _add_search_options(p)

    p = sub.add_parser("classify", help="label text with a trained classifier",
                       description="Classify one text per line, stdin to stdout by default: "
                       "one output line per input line, LABEL<TAB>PROBABILITY, same order.")
    p.add_argument("model", help="a run directory (its best checkpoint) or a checkpoint file")
    p.add_argument("--input", "-i", metavar="FILE", help="input file (default: stdin)")
    p.add_argument("--output", "-o", metavar="FILE", help="output file (default: stdout)")
    p.add_argument("--all", action="store_true",
                   help="every label's probability: LABEL<TAB>P(first label)<TAB>P(second)...")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")

    p = sub.add_parser("tag", help="label every position with a trained tagger (spacing)",
                       description="Tag one line per input line, stdin to stdout by default, "
                       "same order. A word-spacing model (tag.scheme spacing) reads each line "
                       "with its spaces removed and writes it with the spaces restored; a "
                       "tokens model writes TOKEN/TAG pairs.")
    p.add_argument("model", help="a run directory (its best checkpoint) or a checkpoint file")
    p.add_argument("--input", "-i", metavar="FILE", help="input file (default: stdin)")
    p.add_argument("--output", "-o", metavar="FILE", help="output file (default: stdout)")
    p.add_argument("--json", action="store_true", help="one JSON object per line: tokens, "
                   "labels and every label's probability at each position")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")

    p = sub.add_parser("generate", help="continue a text with a trained language model",
                       description="Generate text with a language model: the prime warms the "
                       "state, then LENGTH tokens (characters for a character model) are "
                       "sampled (or chosen greedily) one at a time.")
    p.add_argument("model", help="a run directory (its best checkpoint) or a checkpoint file")
    p.add_argument("--prime", default="", help="text to continue (default: a new line)")
    p.add_argument("--length", type=int, default=500, metavar="N", help="tokens to generate")
    _add_sampling_options(p)
    p.add_argument("--greedy", action="store_true", help="the most likely token each step")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")

    p = sub.add_parser("evaluate", help="score a trained model on held-out data",
                       description="seq2seq: translate --src and score it against --ref with "
                       "sacrebleu (BLEU, chrF, perplexity). classify: --data FILE in the "
                       "training data's format (accuracy, macro-F1, confusion matrix). tag: "
                       "--data FILE in the training data's format, for spacing a text of "
                       "spaced sentences (boundary F1, exact match). lm: "
                       "--data FILE, a text (nats per token, bits per character, perplexity).")
    p.add_argument("model", help="a run directory (its best checkpoint) or a checkpoint file")
    p.add_argument("--src", help="seq2seq: source sentences, one per line")
    p.add_argument("--ref", help="seq2seq: reference translations, one per line")
    p.add_argument("--data", metavar="FILE", help="classify: labelled data (a TSV, or a "
                   "PREFIX of PREFIX.SRC + PREFIX.TGT, as the model was trained on); tag: the same "
                   "(spacing: spaced sentences, one per line); lm: a text")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--output", "-o", help="seq2seq: also write the translations to this file")
    _add_search_options(p)

    p = sub.add_parser("forecast", help="forecast the next values of a series",
                       description="Forecast the H values after the end of a series with a "
                       "trained forecaster (problem forecast); prints TIME<TAB>VALUE lines. "
                       "The series: --data FILE, a CSV with the model's time and value "
                       "columns, or by default the series the model was trained on.")
    p.add_argument("model", help="a run directory (its best checkpoint) or a checkpoint file")
    p.add_argument("--data", metavar="FILE", help="a CSV: a header line, then time and value "
                   "columns named as in training (default: the model's own series)")
    p.add_argument("--horizon", type=int, metavar="H", help="values to forecast (default: the "
                   "model's forecast.horizon)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")

    p = sub.add_parser("demo", help="train and show the embedded default (dates -> ISO)",
                       description="Train a seq2seq with attention that turns dates written "
                       "in many English, German and Korean formats into ISO dates, with no "
                       "files and no downloads; then report exact match on 1,000 held-out "
                       "dates, print examples and save attention maps.")
    p.add_argument("--out", default="runs/demo", help="run directory (default: runs/demo)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a key of the demo config")
    p.add_argument("--quiet", action="store_true")

    p = sub.add_parser("report", help="one self-contained HTML page about a run",
                       description="Write RUN/report.html (or -o FILE): config, training "
                       "curves, final metrics with their sacrebleu signatures, sample outputs "
                       "with attention maps (seq2seq), machine and time; images embedded.")
    p.add_argument("run", metavar="RUN", help="a run directory")
    p.add_argument("--output", "-o", metavar="FILE", help="default: RUN/report.html")

    p = sub.add_parser("plot", help="draw pictures of runs (training curves)",
                       description="plot curves RUN [RUN ...]: loss, perplexity, the "
                       "validation metrics and the learning rate of one or more runs against "
                       "steps and against minutes of training, on one figure (PNG), the runs "
                       "named by their folders.")
    p.add_argument("what", choices=("curves", "gradients"), help="curves: training curves of "
                   "the runs; gradients: ||dL/dh_t|| of a language-model run (problem lm) "
                   "reading --text, after training and freshly initialised")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directories (their metrics.jsonl)")
    p.add_argument("--output", "-o", default=None, metavar="FILE",
                   help="PNG to write (default: curves.png or gradients.png; gradients also "
                   "writes its numbers beside it, FILE.json)")
    p.add_argument("--text", help="gradients: the text the model reads; the loss is that of "
                   "predicting its last token")

    p = sub.add_parser("serve", help="an HTTP API and a web page for a trained model",
                       description="Serve a trained run over HTTP until Ctrl-C: the page at "
                       "/ (type a text, see the output and its attention), the API of the "
                       "run's problem (POST /translate, /classify, /tag, /generate or "
                       "/forecast), /health, /model, and the API's description at /docs. "
                       "Requests arriving within --batch-wait-ms of each other share one "
                       "model call (up to --max-batch sentences).")
    p.add_argument("model", help="a run directory (its best checkpoint) or a checkpoint file")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default "
                   "127.0.0.1: this machine only; 0.0.0.0 opens it to the network)")
    p.add_argument("--port", type=int, default=8000, help="default 8000 (0: any free port)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    p.add_argument("--threads", type=int, metavar="N", help="torch threads (default: torch's)")
    g = p.add_argument_group("seq2seq decoding (default: the run's search section)")
    _add_speed_options(g)
    g = p.add_argument_group("batching")
    g.add_argument("--max-batch", type=int, default=64, metavar="N",
                   help="sentences per model call (1: no batching)")
    g.add_argument("--batch-wait-ms", type=float, default=5.0, metavar="MS",
                   help="how long the first request of a batch waits for others")
    g = p.add_argument_group("limits per request (a request over one is a 422 that says so)")
    for option, _, default, text in limit_options():
        g.add_argument(option, type=type(default), default=default, metavar="N",
                       help=f"{text} (default {default:g})")
    p.add_argument("--access-log", action="store_true", help="log every request")
    return parser




def _read_input(path: str | None) -> list[str]:
    from seqlab.data import decode_lines, read_lines

    if path is None:
        return [line.strip() for line in decode_lines(sys.stdin.buffer, "<stdin>")]
    return read_lines(path)


def _cmd_train(args) -> int:
    import shlex

    from seqlab.config import load_config
    from seqlab.train import TrainingInterrupted, train

    config = load_config(args.config, args.set)
    out = args.out or str(Path("runs") / Path(args.config).stem)
    try:
        train(config, out, resume=args.resume, quiet=args.quiet)
    except TrainingInterrupted as stop:
        again = ["seqlab", "train", args.config, "--out", out, "--resume"]
        again += [a for item in args.set for a in ("--set", item)]
        print(f"seqlab train: stopped at step {stop.step}, saved in {stop.checkpoint}; "
              f"resume with:\n  {shlex.join(again)}", file=sys.stderr)
        return stop.exit_code
    if not args.quiet:
        print(f"run directory: {out}", file=sys.stderr)
    return 0


def _format(i: int, nbest, with_scores: bool) -> str:
    if with_scores:
        return "".join(f"{i}\t{h.score:.4f}\t{h.text}\n" for h in nbest)
    return nbest[0].text + "\n"


def _warn_unknown(predictor, texts: list[str], command: str = "translate") -> None:
    """Say (stderr) how many inputs hold tokens never seen in training; they are read as
    <unk>, which the model can only guess around."""
    n = predictor.count_unknown(texts)
    if n:
        print(f"seqlab {command}: note: {n} of {len(texts)} input lines contain characters or "
              "tokens never seen in training (read as <unk>)", file=sys.stderr)


def _cmd_translate(args) -> int:
    from seqlab.translate import Translator

    _check_options(args)
    _check_output(args.output)
    translator = Translator.from_checkpoint(args.model, device=args.device)  # fail early
    search, sampling = _search_overrides(args), _sampling(args)
    with_scores = (args.n_best or 1) > 1
    translator.check_inputs([], sampling, **search)  # the options against this model
    _check_attention_dir(args.attention, translator)
    if args.input is None and args.output is None and sys.stdin.isatty() \
            and args.attention is None:
        return _translate_as_typed(translator, search, sampling, with_scores)
    texts = _read_input(args.input)
    nbest = translator.translate_nbest(texts, sampling=sampling,  # checks, decodes
                                       with_attention=args.attention is not None,
                                       with_scores=with_scores, **search)
    _warn_unknown(translator, texts)
    text = "".join(_format(i, hyps, with_scores) for i, hyps in enumerate(nbest))
    _write_output(text, args.output)
    if args.attention is not None:
        _draw_attention(nbest, Path(args.attention))
    return 0


def _check_attention_dir(path: str | None, translator) -> None:
    """--attention DIR: a model with attention, and a folder that is (or can be) made."""
    from seqlab.config import ConfigError
    from seqlab.rundir import RunError

    if path is None:
        return
    if translator.config.model.attention == "none":
        raise ConfigError(f"--attention {path}: this model has no attention "
                          "(model.attention 'none')")
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise RunError(f"--attention {path}: is a file; give a folder")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunError(f"--attention {path}: cannot make the folder ({exc.strerror})") from None


def _draw_attention(nbest, folder: Path) -> None:
    """One heatmap per output: LINE.png / .svg (LINE_N.png for an n-best list)."""
    for i, hyps in enumerate(nbest):
        for n, hyp in enumerate(hyps):
            if hyp.attention is None:  # an empty input line
                continue
            name = f"{i:04d}" if len(hyps) == 1 else f"{i:04d}_{n}"
            hyp.plot(folder / f"{name}.png", title=hyp.text)


def _translate_as_typed(translator, search: dict, sampling, with_scores: bool) -> int:
    """A terminal: each line is translated and printed as soon as it is typed."""
    from seqlab.data import DataError, decode_lines

    for i, line in enumerate(decode_lines(sys.stdin.buffer, "<stdin>")):
        try:
            translator.check_inputs([line.strip()], sampling, first_line=i + 1, **search)
        except DataError as exc:
            print(f"seqlab translate: {exc}", file=sys.stderr)
            continue
        _warn_unknown(translator, [line.strip()])
        nbest = translator.translate_nbest([line.strip()], sampling=sampling,
                                           with_scores=with_scores, **search)
        sys.stdout.write(_format(i, nbest[0], with_scores))
        sys.stdout.flush()
    return 0


CHAT_END = ("", "/quit")  # lines that end `seqlab chat` (after strip)


def _cmd_chat(args) -> int:
    """A conversation: every input line answered at once (see the chat parser's description)."""
    from seqlab.data import DataError
    from seqlab.translate import Translator

    _check_options(args)
    translator = Translator.from_checkpoint(args.model, device=args.device)  # fail early
    search, sampling = _search_overrides(args), _sampling(args)
    translator.check_inputs([], sampling, **search)  # the options against this model
    with_scores = (args.n_best or 1) > 1
    terminal = sys.stdin.isatty()
    if terminal:
        how = ("sampling" if sampling else
               f"beam {search.get('beam_size', translator.config.search.beam_size)}")
        print(f"seqlab chat: {args.model} ({how}); an empty line, /quit or Ctrl-D ends the "
              "chat", file=sys.stderr)
    try:
        for i, text in enumerate(_chat_lines(terminal)):
            if text in CHAT_END:
                break
            try:
                if text is not None:  # None: not UTF-8, already said by _chat_lines
                    translator.check_inputs([text], sampling, first_line=i + 1, **search)
            except DataError as exc:  # too long for the options: said, and the chat goes on
                print(f"seqlab chat: {exc}", file=sys.stderr)
                text = None
            if text is None:
                if not terminal:  # a pipe: still one output line per input line
                    sys.stdout.write("\n")
                    sys.stdout.flush()
                continue
            _warn_unknown(translator, [text], "chat")
            seeded = sampling and {**sampling, "seed": None if sampling["seed"] is None
                                   else sampling["seed"] + i}
            nbest = translator.translate_nbest([text], sampling=seeded,
                                               with_scores=with_scores, **search)
            sys.stdout.write(_format(i, nbest[0], with_scores))
            sys.stdout.flush()
    except KeyboardInterrupt:
        if terminal:
            print(file=sys.stderr)  # off the prompt's line; main() says "interrupted"
        raise
    return 0


def _chat_lines(terminal: bool):
    """The chat's input lines, stripped, as they come: at a terminal after a prompt "> " (with
    line editing and history where Python has readline; the prompt on stderr when stdout is
    not the terminal), else as the pipe delivers them. A line that is not UTF-8 is said on
    stderr and comes as None."""
    if terminal and sys.stdout.isatty():
        try:
            import readline  # noqa: F401  (input() then edits lines and keeps a history)
        except ImportError:
            pass
    number = 0
    while True:
        number += 1
        try:
            if terminal and sys.stdout.isatty():
                line = input("> ")
            else:
                if terminal:
                    sys.stderr.write("> ")
                    sys.stderr.flush()
                raw = sys.stdin.buffer.readline()
                if not raw:
                    raise EOFError
                line = raw.decode("utf-8").removeprefix("\ufeff" if number == 1 else "")
        except EOFError:
            if terminal:
                print(file=sys.stderr)  # off the prompt's line
            return
        except UnicodeDecodeError as exc:
            print(f"seqlab chat: <stdin>:{number}: not valid UTF-8 ({exc.reason}); skipped",
                  file=sys.stderr)
            line = None
        yield None if line is None else line.strip()


def _cmd_evaluate(args) -> int:
    from seqlab.checkpoint import load_for_prediction, problem_of, with_article
    from seqlab.config import ConfigError
    from seqlab.data import DataError, read_lines
    from seqlab.translate import Translator

    _check_options(args)
    _check_output(args.output)
    checkpoint = load_for_prediction(args.model)  # read once, for the problem and the model
    problem = problem_of(checkpoint)
    if problem != "seq2seq":
        if args.data is None:
            raise ConfigError(f"{args.model} is {with_article(problem)} model: give --data FILE")
        return _evaluate_other(args, problem, checkpoint)
    if args.src is None or args.ref is None:
        raise ConfigError(f"{args.model} is a seq2seq model: give --src FILE and --ref FILE")
    src, ref = read_lines(args.src), read_lines(args.ref)
    if len(src) != len(ref):
        raise DataError(f"{args.src} has {len(src)} lines but {args.ref} has {len(ref)}")
    if not any(src):
        raise DataError(f"{args.src}: no sentences (the file is empty): nothing to evaluate")
    translator = Translator.from_checkpoint(checkpoint, device=args.device)
    del checkpoint
    result = translator.evaluate(src, ref, **_search_overrides(args))
    hyps = result.pop("hypotheses")
    if args.output:
        Path(args.output).write_text("".join(h + "\n" for h in hyps), encoding="utf-8")
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
    else:
        print(f"BLEU {result['bleu']:.2f}  ({result['signature']})")
        print(f"chrF {result['chrf']:.2f}  ({result['chrf_signature']})")
        print(f"perplexity {result['ppl']:.2f}  exact match "
              f"{100 * result['exact_match']:.1f}%  ({result['sentences']} sentences)")
    return 0


def _evaluate_other(args, problem: str, checkpoint) -> int:
    """classify: accuracy, macro-F1, confusion matrix; tag: F1, exact match; lm: nats per
    token, bits per char."""
    if problem == "classify":
        from seqlab.prepare import read_labelled
        from seqlab.problems.classify import Classifier

        classifier = Classifier.from_checkpoint(checkpoint, device=args.device)
        pairs = read_labelled(classifier.config.data, args.data)
        result = classifier.evaluate(pairs.src, pairs.tgt, pairs.source)
        result["skipped_empty"] = pairs.skipped_empty
        text = (f"accuracy {100 * result['accuracy']:.2f}%  macro-F1 "
                f"{100 * result['macro_f1']:.2f}  loss {result['loss']:.4f}  "
                f"({result['examples']} examples, {pairs.skipped_empty} empty skipped)\n"
                "confusion (rows: gold, columns: predicted): "
                + "; ".join(f"{label}: {row}" for label, row in
                            zip(result["labels"], result["confusion"])))
    elif problem == "tag":
        from seqlab.problems.tag import Tagger, read_tagged

        tagger = Tagger.from_checkpoint(checkpoint, device=args.device)
        result = tagger.evaluate(read_tagged(tagger.config, args.data))
        text = (f"F1 {100 * result['f1']:.2f}  precision {100 * result['precision']:.2f}  "
                f"recall {100 * result['recall']:.2f}  accuracy {100 * result['accuracy']:.2f}%"
                f"  exact match {100 * result['exact_match']:.2f}%  loss {result['loss']:.4f}  "
                f"({result['sequences']} sequences, {result['positions']} positions)")
    else:
        from seqlab.data import read_text
        from seqlab.problems.lm import Generator

        generator = Generator.from_checkpoint(checkpoint, device=args.device)
        result = generator.evaluate_text(read_text(args.data))
        text = (f"{result['loss']:.4f} nats per token, {result['bpc']:.4f} bits per character, "
                f"perplexity {result['ppl']:.2f}  ({result['tokens']} tokens, "
                f"{result['chars']} characters)")
    print(json.dumps(result, ensure_ascii=False) if args.json else text)
    return 0


def _cmd_classify(args) -> int:
    from seqlab.problems.classify import Classifier

    _check_output(args.output)
    classifier = Classifier.from_checkpoint(args.model, device=args.device)
    texts = _read_input(args.input)
    predictions = classifier.predict(texts)
    if args.all:
        lines = ["\t".join([p.label, *(f"{p.probabilities[label]:.4f}"
                                        for label in classifier.codec.labels)])
                 for p in predictions]
    else:
        lines = [f"{p.label}\t{p.probability:.4f}" for p in predictions]
    text = "".join(line + "\n" for line in lines)
    _write_output(text, args.output)
    _warn_unknown(classifier, texts, "classify")
    return 0


def _cmd_tag(args) -> int:
    from seqlab.problems.tag import Tagger

    _check_output(args.output)
    tagger = Tagger.from_checkpoint(args.model, device=args.device)
    lines = _read_input(args.input)
    predictions = tagger.predict(lines)
    if args.json:
        rows = [json.dumps({"tokens": p.tokens, "labels": p.labels, "text": p.text,
                            "probabilities": [{k: round(v, 4) for k, v in q.items()}
                                              for q in p.probabilities]}, ensure_ascii=False)
                for p in predictions]
    else:
        rows = [p.text for p in predictions]
    text = "".join(row + "\n" for row in rows)
    _write_output(text, args.output)
    _warn_unknown(tagger, lines, "tag")
    return 0


def _cmd_generate(args) -> int:
    from seqlab.config import ConfigError
    from seqlab.problems.lm import Generator

    if args.length < 0:
        raise ConfigError(f"--length {args.length}: must be >= 0")
    if not args.greedy:
        for key, (option, ok, text) in _SAMPLING_RULES.items():
            if not ok(getattr(args, key)):
                text = text.replace("leave out --sample", "use --greedy")
                raise ConfigError(f"{option} {getattr(args, key):g}: must be {text}")
    generator = Generator.from_checkpoint(args.model, device=args.device)
    text = generator.generate(args.prime, args.length, temperature=args.temperature,
                              top_k=args.top_k, top_p=args.top_p, seed=args.seed,
                              greedy=args.greedy)
    sys.stdout.write(args.prime + text + ("" if text.endswith("\n") else "\n"))
    return 0


def _cmd_forecast(args) -> int:
    from seqlab.config import ConfigError
    from seqlab.problems.forecast import Forecaster, load_series, read_csv_series

    if args.horizon is not None and args.horizon < 1:
        raise ConfigError(f"--horizon {args.horizon}: must be >= 1")
    forecaster = Forecaster.from_checkpoint(args.model, device=args.device)
    f = forecaster.config.forecast
    history = (read_csv_series(args.data, f.time_column, f.value_column,
                               forecaster.scaling.season)
               if args.data else load_series(forecaster.config))
    forecast = forecaster.predict(history, args.horizon)
    sys.stdout.write("".join(line + "\n" for line in forecast.lines()))
    return 0


def _cmd_demo(args) -> int:
    from seqlab.demo import run_demo

    run_demo(args.out, overrides=args.set, quiet=args.quiet)
    return 0


def _plot_gradients(args) -> int:
    """||dL/dh_t|| of each lm run reading --text, trained and with fresh weights."""
    import torch

    from seqlab.config import ConfigError
    from seqlab.gradients import language_model_profile
    from seqlab.plots import plot_state_gradients
    from seqlab.problems.lm import Generator

    if not args.text:
        raise ConfigError("plot gradients: give --text, the text the model reads")
    panels: dict[str, dict] = {"freshly initialised": {}, "after training": {}}
    for run in args.runs:
        generator = Generator.from_checkpoint(run, device="cpu")
        ids = generator._context(args.text)
        name = f"{Path(run).resolve().name} ({generator.config.model.cell})"
        panels["after training"][name] = language_model_profile(generator.model, ids).tolist()
        torch.manual_seed(generator.config.train.seed)
        for module in generator.model.modules():  # the same shapes, fresh weights
            if module is not generator.model and hasattr(module, "reset_parameters"):
                module.reset_parameters()
        panels["freshly initialised"][name] = language_model_profile(generator.model,
                                                                      ids).tolist()
    out = args.output or "gradients.png"
    _check_output(out)
    print(plot_state_gradients(panels, out, title=f"reading {args.text[:60]!r}"))
    numbers = Path(out).with_suffix(".json")  # the figure's numbers beside it
    numbers.write_text(json.dumps({"text": args.text, "runs": args.runs, "norms": panels},
                                  indent=1) + "\n", encoding="utf-8")
    print(numbers)
    return 0


def _cmd_plot(args) -> int:
    from seqlab.plots import plot_runs
    from seqlab.rundir import RunError

    if args.what == "gradients":
        return _plot_gradients(args)
    args.output = args.output or "curves.png"
    runs = {}
    for run in args.runs:
        metrics = Path(run) / "metrics.jsonl"
        if not metrics.is_file():
            raise RunError(f"{run}: no metrics.jsonl (not a run directory, or it never logged)")
        name = Path(run).resolve().name
        runs[name if name not in runs else run] = metrics
    _check_output(args.output)
    try:
        out = plot_runs(runs, args.output)
    except ValueError as exc:
        raise RunError(str(exc)) from None
    print(out)
    return 0


def _cmd_serve(args) -> int:
    from seqlab.errors import ConfigError
    from seqlab.serve import serve
    from seqlab.serve.limits import Limits, limit_options

    limits = {name: getattr(args, name) for _, name, _, _ in limit_options()}
    numbers = [(option, limits[name]) for option, name, _, _ in limit_options()]
    numbers += [("--max-batch", args.max_batch), ("--threads", args.threads or 1)]
    for option, value in numbers:
        if value <= 0:
            raise ConfigError(f"{option} {value:g}: must be > 0")
    if args.batch_wait_ms < 0:
        raise ConfigError(f"--batch-wait-ms {args.batch_wait_ms:g}: must be >= 0")
    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port {args.port}: must be in 0..65535")
    serve(args.model, args.host, args.port, threads=args.threads, access_log=args.access_log,
          device=args.device, limits=Limits(**limits), max_batch=args.max_batch,
          batch_wait_ms=args.batch_wait_ms,
          search={k: getattr(args, k) for k in ("precision", "stopping") if getattr(args, k)})
    return 0


def _cmd_report(args) -> int:
    from seqlab.report import write_report

    _check_output(args.output)
    print(write_report(args.run, args.output, say=lambda text: None))
    return 0


COMMANDS = {"train": _cmd_train, "translate": _cmd_translate, "classify": _cmd_classify,
            "tag": _cmd_tag, "chat": _cmd_chat,
            "generate": _cmd_generate, "evaluate": _cmd_evaluate, "demo": _cmd_demo,
            "forecast": _cmd_forecast, "plot": _cmd_plot, "report": _cmd_report,
            "serve": _cmd_serve}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from seqlab.allocator import keep_freed_memory
    from seqlab.errors import USER_ERRORS

    keep_freed_memory()  # freed tensors' memory is reused, not faulted in again each step

    try:
        return COMMANDS[args.command](args)
    except USER_ERRORS as exc:
        print(f"seqlab {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as stop:
        print(f"seqlab {args.command}: interrupted", file=sys.stderr)
        return getattr(stop, "exit_code", 130)
    except BrokenPipeError:  # `seqlab translate ... | head`: the reader left; not an error
        sys.stderr.close()
        return 0
