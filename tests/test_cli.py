"""The command line end to end on a tiny config: train, translate, evaluate, resume, and the
messages a user gets for bad input."""

import json
import subprocess
import sys

import pytest
import torch

from seqlab.cli import main


def run(args, capsys):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_train_translate_evaluate_resume(tiny_config, tiny_files, tmp_path, capsys):
    out_dir = tmp_path / "run"
    code, _, err = run(["train", tiny_config, "--out", out_dir, "--quiet"], capsys)
    assert code == 0, err
    for name in ("config.yaml", "metrics.jsonl", "last.pt", "best.pt", "results.json"):
        assert (out_dir / name).is_file(), name
    lines = [json.loads(x) for x in (out_dir / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines if "valid_bleu" in x] == [10, 20, 30]
    assert all("teacher_forcing" in x for x in lines if "train_loss" in x)

    # translate: file to file, one line out per line in, empty lines kept
    src = tmp_path / "in.txt"
    src.write_text("a b c\n\nh g f e\n")
    dst = tmp_path / "out.txt"
    code, _, err = run(["translate", out_dir, "--input", src, "--output", dst], capsys)
    assert code == 0, err
    assert len(dst.read_text().splitlines()) == 3
    assert dst.read_text().splitlines()[1] == ""

    # n-best: INDEX<TAB>SCORE<TAB>TEXT, best first
    code, out, _ = run(["translate", out_dir, "--input", src, "--beam", "3", "--n-best", "2"],
                       capsys)
    rows = [line.split("\t") for line in out.splitlines()]
    assert [r[0] for r in rows] == ["0", "0", "1", "1", "2", "2"]
    assert float(rows[0][1]) >= float(rows[1][1])

    # evaluate --json
    code, out, _ = run(["evaluate", out_dir, "--src", f"{tiny_files['test']}.src",
                        "--ref", f"{tiny_files['test']}.tgt", "--json"], capsys)
    assert code == 0
    result = json.loads(out)
    assert {"bleu", "chrf", "signature", "ppl"} <= set(result)
    assert "13a" in result["signature"]

    # an existing run is not overwritten; --resume continues it
    code, _, err = run(["train", tiny_config, "--out", out_dir], capsys)
    assert code == 2 and "--resume" in err
    code, _, err = run(["train", tiny_config, "--out", out_dir, "--resume",
                        "--set", "model.hidden_size=64"], capsys)
    assert code == 2 and "model.hidden_size: 32 -> 64" in err
    code, _, err = run(["train", tiny_config, "--out", out_dir, "--resume",
                        "--set", "data.train=" + tiny_files["valid"]], capsys)
    assert code == 2 and "data.train:" in err
    # the same files named through data.root are the same data: resuming is fine
    same_files = [f"data.root={tmp_path}", "data.train=data/train", "data.valid=data/valid",
                  "data.test=data/test"]
    code, _, err = run(["train", tiny_config, "--out", out_dir, "--resume", "--quiet",
                        "--set", "train.max_steps=40",
                        *[a for item in same_files for a in ("--set", item)]], capsys)
    assert code == 0, err
    state = torch.load(out_dir / "last.pt", weights_only=True)
    assert state["progress"]["step"] == 40


def test_stdin_to_stdout(tiny_config, tmp_path, monkeypatch, capsys):
    out_dir = tmp_path / "run"
    assert main(["train", str(tiny_config), "--out", str(out_dir), "--quiet",
                 "--set", "train.max_steps=5"]) == 0
    capsys.readouterr()
    import io

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"a b\nc d e\n")))
    assert main(["translate", str(out_dir / "last.pt")]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2


@pytest.mark.parametrize("content,expected", [
    ("model:\n  hiden_size: 3\n", ["tiny.yaml:2", "unknown key 'model.hiden_size'",
                                   "did you mean 'hidden_size'"]),
    ("model:\n  cell: lstn\n", ["tiny.yaml:2", "'lstn'", "did you mean 'lstm'"]),
    ("train:\n  lr: fast\n", ["tiny.yaml:2", "train.lr", "expected float"]),
    ("model: [1, 2\n", ["tiny.yaml", "not valid YAML"]),
])
def test_config_errors_name_file_and_line(tmp_path, capsys, content, expected):
    path = tmp_path / "tiny.yaml"
    path.write_text(content)
    code, _, err = run(["train", path, "--out", tmp_path / "r"], capsys)
    assert code == 2
    for text in expected:
        assert text in err
    assert "Traceback" not in err


def test_set_override_errors(tiny_config, tmp_path, capsys):
    code, _, err = run(["train", tiny_config, "--set", "model.hiddensize=8"], capsys)
    assert code == 2 and "did you mean 'hidden_size'" in err and "--set" in err


def test_data_errors(tiny_config, tiny_files, tmp_path, capsys):
    # different line counts: both files and both counts
    with open(f"{tiny_files['train']}.tgt", "a") as f:
        f.write("extra line\n")
    code, _, err = run(["train", tiny_config, "--out", tmp_path / "r1"], capsys)
    assert code == 2
    assert "train.src" in err and "train.tgt" in err and "600" in err and "601" in err
    # a missing file
    code, _, err = run(["train", tiny_config, "--out", tmp_path / "r2",
                        "--set", "data.train=/nonexistent/x"], capsys)
    assert code == 2 and "/nonexistent/x.src" in err
    # invalid UTF-8 on line 2
    bad = tmp_path / "bad"
    (tmp_path / "bad.src").write_bytes(b"a b\n\xff\xfe c\n")
    (tmp_path / "bad.tgt").write_bytes(b"b a\nc\n")
    code, _, err = run(["train", tiny_config, "--out", tmp_path / "r3",
                        "--set", f"data.train={bad}"], capsys)
    assert code == 2 and "bad.src:2" in err and "UTF-8" in err


def test_translate_missing_model(tmp_path, capsys):
    code, _, err = run(["translate", tmp_path / "nope"], capsys)
    assert code == 2 and "nope" in err and "Traceback" not in err


def test_help_is_fast_and_lists_commands():
    out = subprocess.run([sys.executable, "-m", "seqlab", "--help"], capture_output=True,
                         text=True, check=True).stdout
    for command in ("train", "translate", "evaluate", "demo"):
        assert command in out
    probe = "import sys, seqlab.cli; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", probe]).returncode == 0


def test_sampling_and_search_options(tiny_config, tmp_path, capsys):
    out_dir = tmp_path / "run"
    assert main(["train", str(tiny_config), "--out", str(out_dir), "--quiet"]) == 0
    src = tmp_path / "in.txt"
    src.write_text("a b c\nd e\n")
    args = ["translate", out_dir, "-i", src, "--sample", "--seed", "7", "--top-k", "3",
            "--n-best", "3"]
    code, first, err = run(args, capsys)
    assert code == 0, err
    assert [line.split("\t")[0] for line in first.splitlines()] == ["0"] * 3 + ["1"] * 3
    assert run(args, capsys)[1] == first  # same seed, same samples
    code, out, err = run(["translate", out_dir, "-i", src, "--beam", "4", "--length-penalty",
                          "1.0", "--no-repeat-ngram", "2", "--max-len-a", "0", "--max-len-b", "3"],
                         capsys)
    assert code == 0, err
    assert all(len(line.split()) <= 3 for line in out.splitlines())
    code, _, err = run(["translate", out_dir, "-i", src, "--beam", "2", "--n-best", "3"], capsys)
    assert code == 2 and "n_best" in err


def test_translate_from_a_terminal_answers_each_line_as_it_is_typed(tiny_config, tmp_path):
    """stdin is a terminal (a pty): the first line's translation arrives before the second
    line is typed; from a pipe the whole input is read first and batched."""
    import os
    import pty
    import select

    out_dir = tmp_path / "run"
    assert main(["train", str(tiny_config), "--out", str(out_dir), "--quiet",
                 "--set", "train.max_steps=5"]) == 0
    controller, terminal = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "seqlab", "translate", str(out_dir),
                             "--max-input-tokens", "4"],
                            stdin=terminal, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    os.close(terminal)
    try:
        os.write(controller, b"a b c\n")
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        assert ready, "no answer to the first line while the terminal stays open"
        first = proc.stdout.readline()
        assert first.strip(), first
        os.write(controller, b"a b c d e\n")  # too long: said, and the session goes on
        os.write(controller, b"d e\n")
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        assert ready and proc.stdout.readline().strip()
        os.write(controller, b"\x04")  # Ctrl-D: end of input
        assert proc.wait(timeout=60) == 0
        assert "input line 2 has 5 tokens" in proc.stderr.read().decode()
    finally:
        proc.kill()
        os.close(controller)


def test_version(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("seqlab 0.") and f"torch {torch.__version__}" in out


def test_unknown_characters_are_counted_not_fatal(tiny_config, tmp_path, capsys):
    out_dir = tmp_path / "run"
    assert main(["train", str(tiny_config), "--out", str(out_dir), "--quiet",
                 "--set", "train.max_steps=3"]) == 0
    src = tmp_path / "in.txt"
    src.write_text("a b c\nz q 한\n\na 漢\n")  # the reverse task's words are single letters a-h
    code, out, err = run(["translate", out_dir, "-i", src], capsys)
    assert code == 0, err
    assert len(out.splitlines()) == 4
    assert "note: 2 of 4 input lines contain characters or tokens never seen in training" in err


def test_coverage_penalty_needs_a_model_with_attention(tmp_path, capsys):
    from seqlab.checkpoint import save_checkpoint
    from seqlab.config import config_from_dict
    from seqlab.data import ParallelText
    from seqlab.model import build_model
    from seqlab.prepare import build_codec

    config = config_from_dict({"data": {"synthetic": "copy"}, "tokenizer": {"kind": "word"},
                               "model": {"hidden_size": 16, "embedding_size": 8,
                                         "attention": "none"}})
    text = ["a b c"]
    codec = build_codec(config, ParallelText(src=text, tgt=text, skipped_empty=0, source="t"))
    model = build_model(config.model, len(codec.src_vocab), len(codec.tgt_vocab))
    save_checkpoint({"model": model.state_dict(), "config": config.to_dict(),
                     "problem": codec.state_dict(), "progress": {"step": 0}}, tmp_path / "m.pt")
    (tmp_path / "in.txt").write_text("a b\n")
    code, out, err = run(["translate", tmp_path / "m.pt", "-i", tmp_path / "in.txt", "--beam",
                          "2", "--coverage-penalty", "0.2"], capsys)
    assert code == 2 and out == "" and "has no attention" in err and "Traceback" not in err
