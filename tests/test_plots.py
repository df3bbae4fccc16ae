"""Plots: every function writes a PNG, Hangul renders without missing-glyph warnings, and
matplotlib is not imported until a plot is made."""

from __future__ import annotations

import json
import logging
import math
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import seqlab.plots as plots
from seqlab.plots import plot_attention, plot_gradient_flow, plot_runs

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SRC_KO = ["▁나는", "▁학교", "에", "▁갑니다", ".", "<eos>"]
TGT_EN = ["I", "go", "to", "school", ".", "<eos>"]


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def _glyph_problems(records, caplog) -> list[str]:
    """Missing-glyph reports: text drawing warns ("Glyph ... missing from font(s)"),
    mathtext logs ("... does not have a glyph for ...")."""
    messages = [str(r.message) for r in records] + [r.getMessage() for r in caplog.records]
    return [m for m in messages if "missing from font" in m or "does not have a glyph" in m]


def _weights(t: int, s: int) -> torch.Tensor:
    return torch.softmax(torch.randn(t, s), dim=-1)


def test_attention_plot_writes_png(tmp_path):
    out = plot_attention(_weights(6, 6), SRC_KO, TGT_EN, tmp_path / "a.png", title="attention")
    assert out == tmp_path / "a.png"
    assert out.stat().st_size > 1000
    _png_size(out)


def test_attention_plot_accepts_arrays_grad_tensors_and_makes_folders(tmp_path):
    w = _weights(2, 3).requires_grad_(True)
    out = plot_attention(w, ["a", "b", "c"], ["x", "y"], tmp_path / "sub" / "dir" / "a.png")
    _png_size(out)
    out = plot_attention(np.eye(2, 3), ["a", "b", "c"], ["x", "y"], str(tmp_path / "b.png"))
    _png_size(out)


def test_attention_plot_shape_must_match_tokens(tmp_path):
    with pytest.raises(ValueError, match=r"expected \(T, S\) = \(2, 3\)"):
        plot_attention(_weights(3, 2), ["a", "b", "c"], ["x", "y"], tmp_path / "a.png")


def test_attention_plot_grows_with_sentence_length_up_to_a_cap(tmp_path):
    def size(t, s):
        tokens_s, tokens_t = [f"s{i}" for i in range(s)], [f"t{i}" for i in range(t)]
        return _png_size(plot_attention(_weights(t, s), tokens_s, tokens_t, tmp_path / "x.png"))

    small_w, small_h = size(4, 4)
    wide_w, wide_h = size(4, 30)
    tall_w, tall_h = size(30, 4)
    assert wide_w > 1.5 * small_w
    assert tall_h > 1.5 * small_h
    assert plots._attention_layout(150, 500)[:2] == (20.0, 20.0)
    widths = [plots._attention_layout(5, s)[0] for s in range(1, 1000)]
    assert widths == sorted(widths) and widths[-1] == 20.0
    assert plots._attention_layout(1, 1)[:2] == (4.0, 3.0)
    assert plots._attention_layout(10, 10)[2] == 10.0
    assert plots._attention_layout(10, 150)[2] < 10.0
    assert plots._attention_layout(10, 1000)[2] == 4.0


def test_hangul_renders_without_missing_glyph_warnings(tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        plot_attention(_weights(6, 6), SRC_KO, TGT_EN, tmp_path / "a.png", title="주의 가중치")
        plot_attention(_weights(6, 6), TGT_EN, SRC_KO, tmp_path / "b.png", title="역방향")
        # log axes draw their tick labels (10^-3) with mathtext: no missing minus either
        plot_gradient_flow({"인코더.weight": 1e-3, "디코더.weight": 2.0}, tmp_path / "g.png")
    assert _glyph_problems(records, caplog) == []


SCRIPTS = {"Hangul": "학교에 갑니다", "German umlauts": "Größe über Äpfel",
           "French accents": "café naïve où garçon", "Japanese kana": "ひらがな カタカナ",
           "CJK ideographs": "日本語 中文 漢字"}


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_script_renders_with_a_font_that_has_its_glyphs(tmp_path, caplog, script):
    """An attention map labelled in each script: no missing-glyph report, and the fonts
    matplotlib uses for the labels (NanumGothic, then DejaVu Sans) hold every character."""
    from matplotlib.font_manager import findfont
    from matplotlib.ft2font import FT2Font

    text = SCRIPTS[script]
    words = text.split()
    caplog.set_level(logging.WARNING)
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        plot_attention(_weights(len(words), len(words)), words, words, tmp_path / "a.png",
                       title=text)
    assert _glyph_problems(records, caplog) == []
    covered = set()
    for family in (plots._hangul_font_name(), "DejaVu Sans"):
        covered |= set(FT2Font(findfont(family, fallback_to_default=False)).get_charmap())
    assert [c for c in text.replace(" ", "") if ord(c) not in covered] == []


def test_the_glyph_check_would_catch_missing_hangul(tmp_path, caplog):
    """The check above can fail: drawing Hangul with DejaVu Sans alone is reported."""
    import matplotlib
    from matplotlib.figure import Figure

    caplog.set_level(logging.WARNING)
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        with matplotlib.rc_context({"font.family": ["DejaVu Sans"]}):
            fig = Figure()
            fig.suptitle("학교")
            fig.savefig(tmp_path / "bad.png")
    assert any("missing from font" in m for m in _glyph_problems(records, caplog))


def test_missing_font_warns_once_and_still_plots(tmp_path, monkeypatch):
    monkeypatch.setattr(plots, "hangul_font_path", lambda: None)
    plots._hangul_font_name.cache_clear()
    try:
        with warnings.catch_warnings(record=True) as records:
            warnings.simplefilter("always")
            plot_attention(_weights(2, 2), ["a", "b"], ["x", "y"], tmp_path / "a.png")
            plot_attention(_weights(2, 2), ["a", "b"], ["x", "y"], tmp_path / "b.png")
        font_warnings = [r for r in records if "NanumGothic.ttf not found" in str(r.message)]
        assert len(font_warnings) == 1
        _png_size(tmp_path / "b.png")
    finally:
        plots._hangul_font_name.cache_clear()


def test_font_is_found_in_the_installed_package():
    path = plots.hangul_font_path()
    assert path is not None and path.name == "NanumGothic.ttf" and path.is_file()
    assert plots._hangul_font_name() == "NanumGothic"


def test_plots_leave_global_matplotlib_settings_alone(tmp_path):
    import matplotlib

    before = (list(matplotlib.rcParams["font.family"]), matplotlib.rcParams["axes.unicode_minus"])
    plot_attention(_weights(2, 2), ["가", "나"], ["x", "y"], tmp_path / "a.png")
    after = (list(matplotlib.rcParams["font.family"]), matplotlib.rcParams["axes.unicode_minus"])
    assert after == before


def _write_log(path: Path) -> Path:
    rows = []
    for step in range(0, 200, 10):
        rows.append({"step": step, "train_loss": 5.0 / (1 + step / 50), "lr": 1e-3})
        if step % 50 == 0:
            rows.append(
                {
                    "step": step,
                    "valid_loss": 5.5 / (1 + step / 60),
                    "valid_ppl": math.exp(5.5 / (1 + step / 60)),
                    "valid_bleu": step / 10,
                    "note": "text is ignored",
                }
            )
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n", encoding="utf-8")
    return path


def test_curves_write_png(tmp_path, caplog):
    log = _write_log(tmp_path / "metrics.jsonl")
    caplog.set_level(logging.WARNING)
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        out = plot_runs({"run": log}, tmp_path / "curves.png")
    assert _glyph_problems(records, caplog) == []
    w, h = _png_size(out)
    # three rows of panels (loss, perplexity, score) are taller than one
    w1, h1 = _png_size(plot_runs({"run": log}, tmp_path / "loss.png", keys=("train_loss",)))
    assert h > 2 * h1


def test_curves_need_a_known_key(tmp_path):
    log = _write_log(tmp_path / "metrics.jsonl")
    with pytest.raises(ValueError, match=r"none of \['accuracy'\].*'train_loss'"):
        plot_runs({"run": log}, tmp_path / "c.png", keys=("accuracy",))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"loss": 1.0}\n', encoding="utf-8")
    with pytest.raises(ValueError, match="bad.jsonl:1"):
        plot_runs({"bad": bad}, tmp_path / "c.png")


def test_gradient_flow_single_step_and_series(tmp_path):
    norms = {
        "embed.weight": 1e-6,
        "encoder.weight_hh": 1e-3,
        "decoder.weight_hh": 0.0,
        "out.weight": float("inf"),
    }
    _png_size(plot_gradient_flow(norms, tmp_path / "one.png", title="step 10"))
    series = [
        (
            step,
            {k: (v if v != float("inf") else float("nan")) * (1 + step) for k, v in norms.items()},
        )
        for step in (0, 100, 200)
    ]
    _png_size(plot_gradient_flow(series, tmp_path / "many.png"))


def test_gradient_flow_errors(tmp_path):
    with pytest.raises(ValueError, match="no gradient norms"):
        plot_gradient_flow({}, tmp_path / "g.png")
    with pytest.raises(ValueError, match="step 2: parameter names differ"):
        plot_gradient_flow([(1, {"a": 1.0}), (2, {"b": 1.0})], tmp_path / "g.png")


def test_matplotlib_is_not_imported_at_module_import():
    code = "import sys; import seqlab.plots; assert 'matplotlib' not in sys.modules, 'imported'"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def _fake_run(folder: Path, speed: float, bleu_at_end: float) -> Path:
    folder.mkdir(parents=True)
    rows = []
    for step in range(50, 501, 50):
        rows.append({"step": step, "train_loss": 5.0 / (1 + step / 100), "lr": 1e-3,
                     "elapsed": step / speed})
        if step % 250 == 0:
            rows.append({"step": step, "valid_loss": 4.0 / (1 + step / 100),
                         "valid_ppl": 30.0 / (1 + step / 100),
                         "valid_bleu": bleu_at_end * step / 500, "elapsed": step / speed})
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def test_plot_curves_command_puts_several_runs_on_one_figure(tmp_path, capsys):
    """Two runs (one twice as fast): a PNG with two columns (steps, minutes) and four panel
    rows (loss, perplexity, score, learning rate); bad runs are one-line errors."""
    from matplotlib.image import imread

    from seqlab.cli import main

    fast = _fake_run(tmp_path / "fast", 10.0, 30.0)
    slow = _fake_run(tmp_path / "slow", 5.0, 25.0)
    out = tmp_path / "curves.png"
    assert main(["plot", "curves", str(fast), str(slow), "-o", str(out)]) == 0
    image = imread(out)
    height, width = image.shape[:2]
    assert 0.8 < height / width < 1.4  # 4 rows x 2 columns of panels
    assert image[..., :3].std() > 0.05
    assert main(["plot", "curves", str(tmp_path / "nowhere")]) == 2
    assert "no metrics.jsonl" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "metrics.jsonl").write_text('{"step": 1, "other": 2}\n')
    assert main(["plot", "curves", str(empty), "-o", str(tmp_path / "e.png")]) == 2
    assert "none of" in capsys.readouterr().err


def _plotted_lines(monkeypatch, runs, tmp_path):
    """(label, colour, line style) of every curve plot_runs draws, and which panels (by their
    y label) it puts on a log scale."""
    from matplotlib.axes import Axes

    lines, logs = [], []
    plot, set_yscale = Axes.plot, Axes.set_yscale

    def recording_plot(self, *args, **kwargs):
        lines.append((kwargs["label"], kwargs["color"], args[2]))
        return plot(self, *args, **kwargs)

    def recording_scale(self, value, **kwargs):
        logs.append(value)
        return set_yscale(self, value, **kwargs)

    monkeypatch.setattr(Axes, "plot", recording_plot)
    monkeypatch.setattr(Axes, "set_yscale", recording_scale)
    plot_runs(runs, tmp_path / "runs.png")
    return lines, logs


def test_plot_runs_tells_keys_apart_in_one_run_and_runs_apart_in_several(tmp_path, monkeypatch):
    """One run: each key its own colour. Several: one colour per run, and a run's valid
    curves in one panel (BLEU, chrF) in different line styles; train solid."""
    log = tmp_path / "metrics.jsonl"
    log.write_text("".join(json.dumps(r) + "\n" for r in [
        {"step": 10, "train_loss": 2.0, "lr": 1e-3, "elapsed": 6},
        {"step": 20, "train_loss": 1.5, "lr": 1e-3, "elapsed": 12},
        {"step": 20, "valid_loss": 1.6, "valid_bleu": 20.0, "valid_chrf": 40.0,
         "elapsed": 12},
        {"step": 40, "train_loss": 1.0, "lr": 1e-3, "elapsed": 24},
        {"step": 40, "valid_loss": 1.2, "valid_bleu": 30.0, "valid_chrf": 50.0,
         "elapsed": 24}]))
    lines, _ = _plotted_lines(monkeypatch, {"one": log}, tmp_path)
    colour = {label: c for label, c, _ in lines}
    assert len(set(colour.values())) == len(colour) == 5  # train_loss, valid_*, lr
    lines, _ = _plotted_lines(monkeypatch, {"a": log, "b": log}, tmp_path)
    for run in ("a", "b"):
        assert len({c for label, c, _ in lines if label.startswith(run + ":")}) == 1
    assert {c for label, c, _ in lines if label.startswith("a:")} != \
        {c for label, c, _ in lines if label.startswith("b:")}
    style = {label: s for label, _, s in lines}
    assert style["a: train_loss"] == "-"
    assert style["a: valid_bleu"] != style["a: valid_chrf"]


def test_plot_runs_uses_a_log_scale_only_over_a_decade(tmp_path, monkeypatch):
    """Perplexities from 30 down to 2: log scale; from 1.009 to 1.001: linear (matplotlib
    would label a log axis 1.001 x 10^0, ...)."""
    wide, narrow = tmp_path / "wide.jsonl", tmp_path / "narrow.jsonl"
    wide.write_text('{"step": 1, "valid_ppl": 30.0}\n{"step": 2, "valid_ppl": 2.0}\n')
    narrow.write_text('{"step": 1, "valid_ppl": 1.009}\n{"step": 2, "valid_ppl": 1.001}\n')
    assert _plotted_lines(monkeypatch, {"w": wide}, tmp_path)[1] == ["log", "log"]
    assert _plotted_lines(monkeypatch, {"n": narrow}, tmp_path)[1] == []
