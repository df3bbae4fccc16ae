"""Pictures: attention maps, training curves, gradient flow.

matplotlib is imported inside the functions, so `import seqlab` stays light. The figures are
built with `matplotlib.figure.Figure` directly and saved by the Agg canvas, without pyplot:
no global backend switch, no window, nothing to close, and it works in a headless job or
next to a notebook's own backend.

Hangul must render in every picture: the NanumGothic font shipped by the
`koreanize-matplotlib` package is registered with matplotlib and used, glyph by glyph,
for whatever DejaVu Sans (matplotlib's own font, first in the list) lacks.
The settings apply only while a figure is drawn (`matplotlib.rc_context`), so the caller's
own matplotlib settings are left alone.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import json
import math
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

FONT_PACKAGE = "koreanize_matplotlib"
FONT_FILE = "NanumGothic.ttf"
DPI = 120


def hangul_font_path() -> Path | None:
    """NanumGothic.ttf inside the installed koreanize_matplotlib package (not imported:
    its import would change matplotlib's global settings), or None."""
    spec = importlib.util.find_spec(FONT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "fonts" / FONT_FILE
        if path.is_file():
            return path
    return None


@functools.cache
def _hangul_font_name() -> str | None:
    """Register the Hangul font with matplotlib once; its family name, or None (with one
    warning) if the font file cannot be found."""
    from matplotlib import font_manager

    path = hangul_font_path()
    if path is None:
        warnings.warn(
            f"{FONT_FILE} not found (is {FONT_PACKAGE.replace('_', '-')} installed?); "
            "Hangul will not render in seqlab's plots",
            stacklevel=3,
        )
        return None
    font_manager.fontManager.addfont(str(path))
    return font_manager.FontProperties(fname=str(path)).get_name()


@contextlib.contextmanager
def _use_hangul_font() -> Iterator[None]:
    """Within the block, text is drawn with DejaVu Sans and, for every glyph it lacks
    (Hangul), NanumGothic; minus signs are a plain '-'.

    DejaVu Sans comes first, not NanumGothic, because mathtext (log-axis tick labels such as
    10^-3) uses only the first family and NanumGothic has no minus sign U+2212; plain text
    falls back glyph by glyph, so Hangul still comes from NanumGothic.
    """
    import matplotlib

    name = _hangul_font_name()
    families = ["DejaVu Sans", name] if name else ["DejaVu Sans"]
    with matplotlib.rc_context({"font.family": families, "axes.unicode_minus": False}):
        yield


def _save(fig: Any, path: str | Path, svg: bool = False) -> Path:
    """PNG at `path` (and, with svg, the same figure as an SVG beside it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=DPI, bbox_inches="tight")
    if svg:
        fig.savefig(path.with_suffix(".svg"), format="svg", bbox_inches="tight")
    return path


def _to_array(weights: Any) -> Any:
    """A torch tensor (any device, with or without grad) or array-like -> float numpy array."""
    import numpy as np

    if hasattr(weights, "detach"):
        weights = weights.detach().float().cpu().numpy()
    return np.asarray(weights, dtype=float)


def _attention_layout(t: int, s: int) -> tuple[float, float, float]:
    """Figure width and height (inches) and label font size for a (T, S) attention map:
    0.3 inch per token, at most 20 x 20 inches; past that the cells shrink and so do the
    labels (10 pt down to 4 pt)."""
    width = min(20.0, max(4.0, 2.0 + 0.3 * s))
    height = min(20.0, max(3.0, 1.5 + 0.3 * t))
    cell = min((width - 2.0) / max(s, 1), (height - 1.5) / max(t, 1))  # inches per token
    fontsize = min(10.0, max(4.0, 0.8 * 72 * cell))
    return width, height, fontsize


def _visible(tokens: Sequence[str]) -> list[str]:
    """Whitespace tokens (character models) shown as the open-box sign."""
    return [tok.replace(" ", "\u2423") if tok.strip() == "" and tok else tok for tok in tokens]


def plot_attention(
    weights: Any,
    src_tokens: Sequence[str],
    tgt_tokens: Sequence[str],
    path: str | Path,
    title: str | None = None,
    svg: bool = False,
) -> Path:
    """Heatmap of attention weights: row t = output token t, column j = source token j.

    weights: (T, S) tensor or array (one sentence, e.g. `weights[b]` of a (B, T, S) batch,
    cut to the real lengths);  src_tokens: S strings;  tgt_tokens: T strings.
    The figure grows with the token counts (capped at about 20 x 20 inches). Saved as PNG
    (and as SVG beside it, same name, with svg=True); returns the PNG's path.
    """
    from matplotlib.figure import Figure

    w = _to_array(weights)
    if w.shape != (len(tgt_tokens), len(src_tokens)):
        raise ValueError(
            f"weights have shape {w.shape} but there are {len(tgt_tokens)} target and "
            f"{len(src_tokens)} source tokens; expected (T, S) = "
            f"({len(tgt_tokens)}, {len(src_tokens)})"
        )
    t, s = w.shape
    width, height, fontsize = _attention_layout(t, s)
    src_tokens, tgt_tokens = _visible(src_tokens), _visible(tgt_tokens)
    with _use_hangul_font():
        fig = Figure(figsize=(width, height))
        ax = fig.add_subplot()
        image = ax.imshow(w, cmap="viridis", vmin=0.0, aspect="auto", interpolation="nearest")
        ax.set_xticks(range(s), labels=list(src_tokens), rotation=90, fontsize=fontsize)
        ax.set_yticks(range(t), labels=list(tgt_tokens), fontsize=fontsize)
        ax.set_xlabel("source")
        ax.set_ylabel("output")
        if title:
            ax.set_title(title)
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
        return _save(fig, path, svg)


def _read_jsonl(path: str | Path) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            row = json.loads(line)
            if not isinstance(row, dict) or "step" not in row:
                raise ValueError(f"{path}:{number}: each line must be a JSON object with 'step'")
            rows.append(row)
    return rows


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _panel(key: str) -> str:
    """Which panel a curve goes in: losses, perplexities (log scale) or scores."""
    if "ppl" in key or "perplexity" in key:
        return "perplexity"
    if "loss" in key:
        return "loss"
    return "score"


RUN_CURVE_KEYS = ("train_loss", "valid_loss", "valid_ppl", "valid_bleu", "valid_chrf",
                  "valid_accuracy", "valid_f1", "valid_macro_f1", "valid_bits_per_char",
                  "valid_mase", "lr")


def _runs_panel(key: str) -> str:
    return "learning rate" if key == "lr" else _panel(key)


VALID_STYLES = ("--", ":", "-.")


def _line_styles(panel_keys: list[str]) -> dict[str, str]:
    """The line style of each key of a panel: solid for train curves and the learning rate;
    the valid curves dashed, dotted, dash-dotted in turn (a run's valid BLEU and chrF share
    its colour)."""
    solid = [k for k in panel_keys if k.startswith("train") or k == "lr"]
    valid = [k for k in panel_keys if k not in solid]
    return {**{k: "-" for k in solid},
            **{k: VALID_STYLES[i % len(VALID_STYLES)] for i, k in enumerate(valid)}}


def _spans_a_decade(values: list[float]) -> bool:
    """A log scale only where it helps: positive values whose largest is 10x the smallest
    (below that matplotlib labels a log axis 1.001 x 10^0, 1.002 x 10^0, ...)."""
    positive = [v for v in values if v > 0 and math.isfinite(v)]
    return bool(positive) and max(positive) >= 10 * min(positive)


def plot_runs(runs: Mapping[str, str | Path], path: str | Path,
              keys: Sequence[str] = RUN_CURVE_KEYS) -> Path:
    """Several runs on one figure: for each run (name -> its metrics.jsonl) the curves of
    `keys` it has, against training steps (left column) and against training minutes (right
    column, from each line's "elapsed" seconds); one panel row each for losses, perplexities
    and the learning rate (log scales where the values span a decade), and scores. Colours
    tell the runs apart (legend: the run names), or the keys when there is one run; line
    styles tell train from valid (solid: train and the learning rate; valid dashed, then
    dotted and dash-dotted for a panel's further valid keys).
    Saved as PNG."""
    from matplotlib.figure import Figure

    if not runs:
        raise ValueError("no runs to plot")
    curves: dict[str, dict[str, list[tuple[float, float, float]]]] = {}
    for name, metrics in runs.items():
        rows = _read_jsonl(metrics)
        curves[name] = {}
        for key in keys:
            points = [(r["step"], r.get("elapsed", math.nan) / 60, r[key]) for r in rows
                      if _is_number(r.get(key))]
            if points:
                curves[name][key] = points
        if not curves[name]:
            seen = sorted({k for r in rows for k, v in r.items()
                           if k not in ("step", "elapsed") and _is_number(v)})
            raise ValueError(f"{metrics}: none of {list(keys)} in it; it has {seen}")
    used = {k for c in curves.values() for k in c}
    panels = [p for p in ("loss", "perplexity", "score", "learning rate")
              if any(_runs_panel(k) == p for k in used)]
    with _use_hangul_font():
        fig = Figure(figsize=(11.0, 2.8 * len(panels)))
        axes = fig.subplots(len(panels), 2, sharex="col", squeeze=False)
        keys_in_order = [k for k in keys if k in used]
        for row, panel in enumerate(panels):
            styles = _line_styles([k for k in keys_in_order if _runs_panel(k) == panel])
            for column, x_of in enumerate((lambda p: p[0], lambda p: p[1])):
                ax = axes[row, column]
                values = []
                for i, (name, by_key) in enumerate(curves.items()):
                    for key, points in by_key.items():
                        if _runs_panel(key) != panel:
                            continue
                        # colours: the runs, or the keys when there is one run
                        color = f"C{(i if len(curves) > 1 else keys_in_order.index(key)) % 10}"
                        ax.plot([x_of(p) for p in points], [p[2] for p in points], styles[key],
                                color=color, label=f"{name}: {key}",
                                marker="." if len(points) < 30 else None)
                        values += [p[2] for p in points]
                if panel in ("perplexity", "learning rate") and _spans_a_decade(values):
                    ax.set_yscale("log")
                ax.grid(True, alpha=0.3)
                if column == 0:
                    ax.set_ylabel(panel)
            axes[row, 1].legend(fontsize=7, loc="best")
        axes[-1, 0].set_xlabel("step")
        axes[-1, 1].set_xlabel("minutes of training")
        return _save(fig, path)


def frames_to_gif(frames: Sequence[str | Path], path: str | Path,
                  seconds_per_frame: float = 0.8) -> Path:
    """PNG frames (e.g. attention maps at successive validations) -> an animated GIF that
    loops, every frame scaled to the size of the last one."""
    from PIL import Image

    if not frames:
        raise ValueError("no frames for the GIF")
    images = [Image.open(f).convert("RGB") for f in frames]
    size = images[-1].size
    images = [im.resize(size) for im in images]
    path = Path(path)
    images[0].save(path, save_all=True, append_images=images[1:], loop=0,
                   duration=int(seconds_per_frame * 1000))
    return path


def plot_gradient_flow(
    named_grad_norms: Mapping[str, float] | Sequence[tuple[int, Mapping[str, float]]],
    path: str | Path,
    title: str | None = None,
) -> Path:
    """Per-parameter gradient norms on a log scale, in the order given (put the parameters
    in model order, input to output, e.g. from `model.named_parameters()`): norms that
    shrink towards the input show vanishing gradients, huge ones exploding gradients.

    named_grad_norms: {name: norm} for one step (a bar chart), or [(step, {name: norm}), ...]
    for several (one line per step, coloured by step). Norms that are inf or NaN are marked
    with a red x at the top of the plot. Saved as PNG.
    """
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    if isinstance(named_grad_norms, Mapping):
        series = [(None, named_grad_norms)]
    else:
        series = list(named_grad_norms)
    if not series or not series[0][1]:
        raise ValueError("no gradient norms to plot")
    names = list(series[0][1])
    for step, norms in series:
        if list(norms) != names:
            raise ValueError(f"step {step}: parameter names differ from the first step's")

    with _use_hangul_font():
        fig = Figure(figsize=(min(20.0, max(6.0, 1.0 + 0.3 * len(names))), 4.5))
        ax = fig.add_subplot()
        x = range(len(names))
        bad = [
            i for _, norms in series for i, n in enumerate(norms.values()) if not math.isfinite(n)
        ]
        if len(series) == 1:
            values = [v if math.isfinite(v) else math.nan for v in series[0][1].values()]
            ax.bar(x, values, color="tab:blue", log=True)
        else:
            steps = [step for step, _ in series]
            norm = Normalize(min(steps), max(steps))
            cmap = colormaps["viridis"]
            for step, norms in series:
                values = [v if math.isfinite(v) else math.nan for v in norms.values()]
                ax.plot(x, values, marker=".", color=cmap(norm(step)), alpha=0.8)
            ax.set_yscale("log")
            fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, label="step")
        if bad:
            ax.plot(
                sorted(set(bad)),
                [1.0] * len(set(bad)),
                "rx",
                markersize=10,
                transform=ax.get_xaxis_transform(),
                clip_on=False,
                label="inf / NaN",
            )
            ax.legend()
        ax.set_xticks(list(x), labels=names, rotation=90, fontsize=8)
        ax.set_ylabel("gradient norm")
        ax.grid(True, axis="y", alpha=0.3)
        if title:
            ax.set_title(title)
        return _save(fig, path)


def plot_state_gradients(panels: Mapping[str, Mapping[str, Sequence[float]]],
                         path: str | Path, title: str | None = None) -> Path:
    """The gradient story: ||dL/dh_t|| (seqlab.gradients.state_gradient_norms) against the
    distance T - t from the last step, log scale, one line per model (cell) and one panel per
    condition, e.g. {"at initialisation": {"RNN": norms, "LSTM": ...}, "after training":
    {...}}. norms[t] is for h_{t+1}, t = 0..T-1 (the last entry is distance 0). Each line is
    divided by its value at distance 0, so the panels show how much of the gradient is left
    k steps back; a norm that underflowed to 0 leaves a gap. Saved as PNG."""
    from matplotlib.figure import Figure

    if not panels or not all(panels.values()):
        raise ValueError("no gradient norms to plot")
    with _use_hangul_font():
        fig = Figure(figsize=(5.0 * len(panels), 4.0))
        axes = fig.subplots(1, len(panels), sharey=True, squeeze=False)[0]
        for ax, (name, lines) in zip(axes, panels.items(), strict=True):
            for label, norms in lines.items():
                values = [float(v) for v in norms]
                last = values[-1] if values[-1] > 0 else 1.0
                distance = list(range(len(values) - 1, -1, -1))
                # a norm that underflowed to 0 is left out (a gap), not drawn at a floor
                ax.plot(distance, [v / last if v > 0 else math.nan for v in values],
                        label=label)
            ax.set_yscale("log")
            ax.set_xlabel("steps back from the last, T - t")
            ax.set_title(name)
            ax.grid(True, alpha=0.3)
            ax.legend()
        axes[0].set_ylabel("||dL/dh_t|| / ||dL/dh_T||")
        if title:
            fig.suptitle(title)
        return _save(fig, path)


def plot_confusion(matrix: Sequence[Sequence[int]], labels: Sequence[str], path: str | Path,
                   title: str | None = None) -> Path:
    """Confusion matrix: row g = gold label, column p = predicted label, each cell the count
    and its share of the row (recall on the diagonal); colour = that share. Saved as PNG."""
    import numpy as np
    from matplotlib.figure import Figure

    m = np.asarray(matrix, dtype=float)
    if m.shape != (len(labels), len(labels)):
        raise ValueError(f"matrix has shape {m.shape} but there are {len(labels)} labels")
    share = m / np.maximum(m.sum(1, keepdims=True), 1)
    n = len(labels)
    size = min(20.0, max(4.0, 1.5 + 0.8 * n))
    with _use_hangul_font():
        fig = Figure(figsize=(size + 1.0, size))
        ax = fig.add_subplot()
        image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
        fig.colorbar(image, ax=ax, label="share of the gold label's examples")
        if n <= 30:
            for g in range(n):
                for p in range(n):
                    ax.text(p, g, f"{int(m[g, p]):,}\n{100 * share[g, p]:.1f}%", ha="center",
                            va="center", fontsize=8,
                            color="white" if share[g, p] > 0.5 else "black")
        ax.set_xticks(range(n), labels=list(labels), rotation=90 if n > 8 else 0)
        ax.set_yticks(range(n), labels=list(labels))
        ax.set_xlabel("predicted")
        ax.set_ylabel("gold")
        total = m.sum()
        accuracy = np.trace(m) / total if total else 0.0
        ax.set_title(f"{title + chr(10) if title else ''}accuracy {100 * accuracy:.2f}% of "
                     f"{int(total):,}")
        return _save(fig, path)


def plot_spacing(sentences: Sequence[Sequence[str]], probabilities: Sequence[Sequence[float]],
                 gold: Sequence[Sequence[str]], path: str | Path,
                 title: str | None = None) -> Path:
    """Word-spacing restoration, one row per sentence: each character in a cell coloured by
    the model's P(a space follows it); a black bar after a character where the gold text
    has a space, and a red frame where the prediction (P > 0.5) disagrees. Saved as PNG."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    rows = len(sentences)
    if not (rows == len(probabilities) == len(gold)):
        raise ValueError("sentences, probabilities and gold must have one entry per sentence")
    width = max((len(s) for s in sentences), default=1)
    with _use_hangul_font():
        fig = Figure(figsize=(min(24.0, 1.5 + 0.42 * width), 0.75 + 0.62 * rows))
        ax = fig.add_subplot()
        cmap = _colormap("Blues")
        for r, (chars, probs, labels) in enumerate(zip(sentences, probabilities, gold)):
            y = rows - 1 - r
            for i, (c, p, g) in enumerate(zip(chars, probs, labels, strict=True)):
                wrong = (p > 0.5) != (g == "1")
                ax.add_patch(Rectangle((i, y), 1, 0.8, facecolor=cmap(p),
                                       edgecolor="red" if wrong else "white",
                                       linewidth=2 if wrong else 0.5))
                ax.text(i + 0.5, y + 0.4, c, ha="center", va="center", fontsize=11,
                        color="white" if p > 0.6 else "black")
                if g == "1":
                    ax.plot([i + 1, i + 1], [y - 0.05, y + 0.85], color="black", linewidth=2)
        ax.set_xlim(0, width)
        ax.set_ylim(-0.2, rows)
        ax.set_axis_off()
        fig.colorbar(_scalar_mappable(cmap), ax=ax, label="P(a space follows)",
                     fraction=0.03, pad=0.01)
        ax.set_title((title + "\n" if title else "") + "blue: P(space after the character); "
                     "black bar: gold space; red frame: wrong", fontsize=10)
        return _save(fig, path)


def _colormap(name: str) -> Any:
    import matplotlib

    return matplotlib.colormaps[name]


def _scalar_mappable(cmap: Any) -> Any:
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    return ScalarMappable(norm=Normalize(0.0, 1.0), cmap=cmap)


def plot_forecast(times: Sequence[Any], truth: Sequence[float],
                  forecasts: Mapping[str, tuple[Sequence[int], Any]], path: str | Path,
                  title: str | None = None, every: int | None = None) -> Path:
    """Rolling-origin forecasts against the truth, and their errors.

    times, truth: the series (N,) (times: numbers or numpy datetime64). forecasts: name ->
    (origins (n,), values (n, H)): the forecast made at index origins[i] for the indices
    origins[i] + 1 .. origins[i] + H. Top: the truth, and for every `every`-th origin (default
    H: non-overlapping paths) each method's H-step path from it. Middle: each method's
    absolute error of the one-step-ahead forecast over time. Bottom: MAE by horizon h (over
    all origins). Saved as PNG."""
    import numpy as np
    from matplotlib.figure import Figure

    t, y = np.asarray(times), np.asarray(truth, dtype=float)
    if not forecasts:
        raise ValueError("no forecasts to plot")
    with _use_hangul_font():
        fig = Figure(figsize=(10.0, 9.0))
        top, middle, bottom = fig.subplots(3, 1, gridspec_kw={"height_ratios": [3, 1.5, 1.5]})
        first = min(int(np.min(o)) for o, _ in forecasts.values())
        top.plot(t[first:], y[first:], color="black", linewidth=1.2, label="truth")
        colors = ["tab:red", "tab:blue", "tab:green", "tab:orange", "tab:purple", "tab:brown"]
        for k, (name, (origins, values)) in enumerate(forecasts.items()):
            origins, values = np.asarray(origins), np.asarray(values, dtype=float)
            horizon = values.shape[1]
            color = colors[k % len(colors)]
            step = every or horizon
            for j, i in enumerate(range(0, len(origins), step)):
                at = origins[i] + np.arange(0, horizon + 1)
                path_values = np.concatenate([[y[origins[i]]], values[i]])
                keep = at < len(t)
                top.plot(t[at[keep]], path_values[keep], color=color, linewidth=1.0,
                         alpha=0.85, label=name if j == 0 else None)
            error = np.abs(values[:, 0] - y[origins + 1])
            middle.plot(t[origins + 1], error, color=color, linewidth=0.8, label=name)
            truth_h = y[origins[:, None] + np.arange(1, horizon + 1)[None, :]]
            mae = np.mean(np.abs(values - truth_h), axis=0)
            bottom.plot(np.arange(1, horizon + 1), mae, marker=".", color=color,
                        label=f"{name} (MAE {np.mean(mae):.3g})")
        top.set_ylabel("value")
        top.legend(fontsize=8, ncol=2)
        top.grid(True, alpha=0.3)
        if title:
            top.set_title(title)
        middle.set_ylabel("|error|, h = 1")
        middle.grid(True, alpha=0.3)
        bottom.set_xlabel("horizon h (steps after the origin)")
        bottom.set_ylabel("MAE")
        bottom.grid(True, alpha=0.3)
        bottom.legend(fontsize=8, ncol=2)
        fig.tight_layout()
        return _save(fig, path)
