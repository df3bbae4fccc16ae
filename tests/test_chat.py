"""`seqlab chat`: a trained seq2seq answers each line as it comes, from a pipe (one answer line
per input line, the model's own search or seeded sampling) or a terminal (a prompt, Ctrl-D and
Ctrl-C); an empty line or /quit ends it; a model of another problem is one line."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys

import pytest
import torch

from seqlab.cli import main
from seqlab.config import config_from_dict
from seqlab.train import train
from seqlab.translate import Translator

torch.set_num_threads(1)

LINES = ["a b c", "d e", "c c a b"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny seq2seq (reverse a list of letters; a few seconds of training) whose config
    searches with a beam of 3, as the chatbot recipe's config names a beam."""
    config = config_from_dict({
        "data": {"synthetic": "reverse", "synthetic_train_size": 300, "synthetic_eval_size": 20},
        "tokenizer": {"kind": "word"},
        "model": {"embedding_size": 16, "hidden_size": 32, "dropout": 0.0},
        "train": {"batch_tokens": 400, "lr": 0.01, "max_steps": 40, "log_every": 20,
                  "valid_every": 40, "valid_samples": 0, "threads": 1},
        "search": {"beam_size": 3, "length_penalty": 1.0},
    })
    out = tmp_path_factory.mktemp("chat") / "run"
    train(config, out, quiet=True)
    return out


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory):
    """A language model: a run of another problem shape."""
    config = config_from_dict({
        "problem": "lm", "data": {"synthetic": "alphabet", "synthetic_train_size": 50,
                                  "synthetic_eval_size": 10},
        "tokenizer": {"kind": "char"},
        "model": {"bidirectional": False, "embedding_size": 8, "hidden_size": 16},
        "train": {"batch_tokens": 64, "max_steps": 2, "valid_every": 2, "valid_samples": 0,
                  "threads": 1}, "lm": {"bptt": 8},
    })
    out = tmp_path_factory.mktemp("chat_lm") / "run"
    train(config, out, quiet=True)
    return out


def chat(args, stdin: bytes, monkeypatch, capsys) -> tuple[int, str, str]:
    """`seqlab chat ARGS` with `stdin` piped in: (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8"))
    capsys.readouterr()
    code = main(["chat", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def piped(lines) -> bytes:
    return "".join(line + "\n" for line in lines).encode()


def test_a_pipe_gets_one_answer_per_line_from_the_models_own_search(run, monkeypatch, capsys):
    code, out, err = chat([run], piped(LINES), monkeypatch, capsys)
    assert code == 0, err
    translator = Translator.from_checkpoint(run)
    assert out.splitlines() == translator.translate(LINES, beam_size=3, length_penalty=1.0)
    assert err == ""  # no banner, no prompt: stdin is not a terminal
    # the search options of translate: --beam 1 is greedy, --n-best gives INDEX TAB SCORE TEXT
    code, out, _ = chat([run, "--beam", "1"], piped(LINES), monkeypatch, capsys)
    assert out.splitlines() == translator.translate(LINES, beam_size=1, length_penalty=0.0)
    code, out, _ = chat([run, "--n-best", "2"], piped(LINES[:2]), monkeypatch, capsys)
    assert [line.split("\t")[0] for line in out.splitlines()] == ["0", "0", "1", "1"]


@pytest.mark.parametrize("stdin,answers", [
    (b"a b c\nd e", 2),                         # the end of input without a final newline
    (b"", 0),                                   # no input at all
    (b"a b c\n\nd e\n", 1),                     # an empty line ends the chat
    (b"a b c\n   \nd e\n", 1),                  # so does a line of spaces
    (b"a b c\n/quit\nd e\n", 1),                # and /quit
    (b"\xef\xbb\xbfa b c\r\nd e\r\n", 2),       # a byte-order mark, CRLF line ends
])
def test_the_chat_ends_cleanly(run, monkeypatch, capsys, stdin, answers):
    code, out, err = chat([run], stdin, monkeypatch, capsys)
    assert code == 0 and err == ""  # no note of unknown tokens: the BOM and CR are dropped
    assert len(out.splitlines()) == answers and all(out.splitlines())


def test_sampling_is_seeded_line_by_line(run, monkeypatch, capsys):
    """--seed N samples line i with seed N + i: a session replays, and the answers are the
    Translator's samples with those seeds."""
    args = [run, "--sample", "--seed", "5", "--top-k", "3", "--temperature", "1.5"]
    code, first, err = chat(args, piped(LINES), monkeypatch, capsys)
    assert code == 0, err
    assert chat(args, piped(LINES), monkeypatch, capsys)[1] == first
    translator = Translator.from_checkpoint(run)
    want = [translator.translate_nbest([line], sampling=dict(temperature=1.5, top_k=3,
                                                             top_p=1.0, seed=5 + i))[0][0].text
            for i, line in enumerate(LINES)]
    assert first.splitlines() == want


def test_a_line_it_cannot_answer_is_said_and_the_chat_goes_on(run, monkeypatch, capsys):
    stdin = b"a b\na b c d\n\xe9 a\nd e\n"
    code, out, err = chat([run, "--max-input-tokens", "3"], stdin, monkeypatch, capsys)
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == 4 and lines[0] and not lines[1] and not lines[2] and lines[3]
    assert "input line 2 has 4 tokens, over search.max_input_tokens=3" in err
    assert "<stdin>:3: not valid UTF-8" in err and "Traceback" not in err


def test_another_problem_or_a_bad_option_is_one_line(run, lm_run, monkeypatch, capsys):
    code, out, err = chat([lm_run], piped(LINES), monkeypatch, capsys)
    assert code == 2 and out == ""
    assert err.splitlines() == [f"seqlab chat: error: {lm_run}/best.pt: an lm model, not a "
                                "seq2seq one; use `seqlab generate` with it"]
    code, _, err = chat([run, "--sample", "--top-p", "1.5"], b"a\n", monkeypatch, capsys)
    assert code == 2 and err == "seqlab chat: error: --top-p 1.5: must be in (0, 1]\n"
    code, _, err = chat([run.parent / "nope"], b"a\n", monkeypatch, capsys)
    assert code == 2 and len(err.splitlines()) == 1 and "no such checkpoint" in err


def _start_at_a_terminal(run):
    """`seqlab chat RUN` with a terminal (a pty) as stdin; stdout and stderr are pipes."""
    import pty

    controller, terminal = pty.openpty()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # chat must flush
    # Ctrl-C is live for a terminal's foreground job, even where this test itself was started
    # in the background by a non-interactive shell (which starts it with SIGINT ignored, and
    # an ignored signal stays ignored in every child)
    proc = subprocess.Popen([sys.executable, "-m", "seqlab", "chat", str(run)], stdin=terminal,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    os.close(terminal)
    return proc, controller


def _state(proc) -> str:
    """How a process that said nothing is doing (for the message of a failed wait)."""
    if proc.poll() is not None:
        return f"exited {proc.returncode}"
    try:
        stat = open(f"/proc/{proc.pid}/stat").read().rsplit(")", 1)[1].split()
        return f"state {stat[0]}, waiting in {open(f'/proc/{proc.pid}/wchan').read()}"
    except OSError:
        return "running"


def _read_until(stream, text: bytes, proc, timeout: float = 60) -> bytes:
    """Bytes of a pipe up to and including `text` (the process must write it in time)."""
    import select

    seen = b""
    while text not in seen:
        ready, _, _ = select.select([stream], [], [], timeout)
        assert ready, f"waited {timeout}s for {text!r}; got {seen!r}; process {_state(proc)}"
        chunk = os.read(stream.fileno(), 4096)
        assert chunk, f"the stream ended before {text!r}; got {seen!r}"
        seen += chunk
    return seen


def test_at_a_terminal_it_prompts_answers_at_once_and_ends_on_ctrl_d(run):
    proc, controller = _start_at_a_terminal(run)
    try:
        banner = _read_until(proc.stderr, b"> ", proc)  # the prompt, on stderr (stdout is a pipe)
        assert b"beam 3" in banner and b"/quit" in banner
        os.write(controller, b"a b c\n")
        answer = _read_until(proc.stdout, b"\n", proc)  # answered while the terminal stays open
        assert answer.strip() and b">" not in answer
        _read_until(proc.stderr, b"> ", proc)
        os.write(controller, b"\x04")  # Ctrl-D: the end of input
        assert proc.wait(timeout=60) == 0
        assert b"Traceback" not in proc.stderr.read()
    finally:
        proc.kill()
        os.close(controller)


def test_at_a_terminal_ctrl_c_ends_it_without_a_traceback(run):
    proc, controller = _start_at_a_terminal(run)
    try:
        _read_until(proc.stderr, b"> ", proc)
        proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        assert proc.wait(timeout=60) == 130
        err = proc.stderr.read().decode()
        assert "seqlab chat: interrupted" in err and "Traceback" not in err
    finally:
        proc.kill()
        os.close(controller)


def test_a_whole_terminal_gets_the_prompt_and_the_answers(run):
    """stdin and stdout both a terminal: Python's input() reads the lines (readline's editing
    and history where Python has it); the answers and the prompt appear on the terminal. The
    line is typed ahead, before the chat is up: the terminal keeps it until it is read. (The
    first prompt is not waited for: on some machines the first bytes written to a fresh pty
    are lost now and then, a property of the test's pty, not of seqlab.)"""
    import pty

    want = Translator.from_checkpoint(run).translate(LINES[:1], beam_size=3,
                                                     length_penalty=1.0)[0]
    controller, terminal = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "seqlab", "chat", str(run)], stdin=terminal,
                            stdout=terminal, stderr=subprocess.PIPE)
    os.close(terminal)
    screen = io.FileIO(controller, "r+", closefd=False)
    try:
        os.write(controller, LINES[0].encode() + b"\n")
        # the answer on a line of its own, then the prompt for the next line
        _read_until(screen, b"\r\n" + want.encode() + b"\r\n> ", proc)
        os.write(controller, b"/quit\n")
        assert proc.wait(timeout=60) == 0
        assert b"Traceback" not in proc.stderr.read()
    finally:
        proc.kill()
        os.close(controller)
