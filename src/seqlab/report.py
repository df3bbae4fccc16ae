"""A run as one self-contained HTML page: `seqlab report RUN [-o FILE]`.

The page holds the resolved config, the training curves against steps and minutes, the final
metrics of results.json (with their sacrebleu signatures), sample outputs of the validation
set (for seq2seq with their attention maps, the chosen hypothesis of the configured search),
and the machine and time the run took. Every image is embedded as a data: URI, so the file
opens offline and can be sent as it is. Each image reports whether it decoded: the page's
<body> gets data-images-ok="N" once loaded, and a broken image is marked data-broken.
"""

from __future__ import annotations

import base64
import html
import json
import tempfile
from pathlib import Path

from seqlab.rundir import CONFIG, METRICS, RESULTS, RunError

SAMPLES = 3  # validation sentences shown with their outputs

CHECK_IMAGES = """
<script>
window.addEventListener("load", () => {
  const images = Array.from(document.images);
  const ok = images.filter(im => im.complete && im.naturalWidth > 0);
  images.filter(im => !ok.includes(im)).forEach(im => im.setAttribute("data-broken", "1"));
  document.body.setAttribute("data-images-ok", String(ok.length));
  document.body.setAttribute("data-images", String(images.length));
});
</script>
"""

STYLE = """
<style>
body { font-family: "NanumGothic", "Noto Sans CJK KR", sans-serif; margin: 2em; max-width: 70em; }
h1, h2 { font-weight: 600; } pre { background: #f6f6f6; padding: 1em; overflow-x: auto; }
table { border-collapse: collapse; } td, th { border: 1px solid #ccc; padding: 0.3em 0.6em; }
img { max-width: 100%; } .sample { margin-bottom: 2em; }
</style>
"""


def _image(png: Path, alt: str) -> str:
    data = base64.b64encode(png.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _metrics_table(results: dict) -> str:
    rows = []
    for split in ("valid", "test"):
        metrics = results.get(split)
        if not isinstance(metrics, dict):
            continue
        for key, value in metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                rows.append(f"<tr><td>{split}</td><td>{html.escape(key)}</td>"
                            f"<td>{value:.4g}</td></tr>")
            elif isinstance(value, str) and "signature" in key:
                rows.append(f"<tr><td>{split}</td><td>{html.escape(key)}</td>"
                            f"<td><code>{html.escape(value)}</code></td></tr>")
    if not rows:
        return "<p>No final metrics (results.json is missing: the run did not finish).</p>"
    return "<table><tr><th>split</th><th>metric</th><th>value</th></tr>" + "".join(rows) + \
        "</table>"


def _seq2seq_samples(run: Path, folder: Path, say) -> str:
    """The first validation sentences: source, reference, output and attention map."""
    from seqlab.errors import USER_ERRORS
    from seqlab.prepare import read_splits
    from seqlab.translate import Translator

    translator = Translator.from_checkpoint(run, device="cpu")
    try:
        valid = read_splits(translator.config).valid
    except USER_ERRORS as exc:
        why = html.escape(str(exc))
        return f"<p>No samples: the validation data cannot be read here ({why}).</p>"
    if valid is None:
        return "<p>No samples: the run has no validation set.</p>"
    n = min(SAMPLES, len(valid.src))
    with_attention = translator.config.model.attention != "none"
    outputs = translator.translate_nbest(valid.src[:n], with_attention=with_attention)
    parts = []
    for k, [t] in enumerate(outputs):
        picture = ""
        if t.attention is not None:
            picture = _image(t.plot(folder / f"sample-{k}.png", svg=False), f"attention {k}")
        parts.append(f'<div class="sample"><p>source: {html.escape(valid.src[k])}<br>'
                     f"reference: {html.escape(valid.tgt[k])}<br>"
                     f"output: <b>{html.escape(t.text)}</b> (score {t.score:.3f})</p>"
                     f"{picture}</div>")
    say(f"{n} samples")
    return "".join(parts)


def write_report(run_dir: str | Path, out: str | Path | None = None, say=print) -> Path:
    """The page of the run in run_dir, written to `out` (default RUN/report.html)."""
    from seqlab.config import load_config
    from seqlab.plots import plot_runs

    run = Path(run_dir)
    if not (run / CONFIG).is_file() or not (run / METRICS).is_file():
        raise RunError(f"{run}: not a run directory (needs {CONFIG} and {METRICS})")
    out = Path(out) if out is not None else run / "report.html"
    config_text = (run / CONFIG).read_text(encoding="utf-8")
    results = json.loads((run / RESULTS).read_text(encoding="utf-8")) \
        if (run / RESULTS).is_file() else {}
    rows = [json.loads(line) for line in (run / METRICS).read_text().splitlines() if line]
    minutes = max((r.get("elapsed", 0) for r in rows), default=0) / 60
    problem = load_config(run / CONFIG).problem
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        try:
            curves = _image(plot_runs({run.name: run / METRICS}, folder / "curves.png"),
                            "training curves")
        except ValueError as exc:
            curves = f"<p>No curves: {html.escape(str(exc))}</p>"
        samples = ""
        if problem == "seq2seq" and (run / "best.pt").is_file():
            samples = "<h2>Samples (validation)</h2>" + _seq2seq_samples(run, folder, say)
        machine = results.get("machine")
        machine_text = ", ".join(f"{k} {v}" for k, v in machine.items()) if machine else \
            "not recorded (a run from before results.json kept it)"
        page = (
            "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>seqlab report: {html.escape(run.name)}</title>{STYLE}</head><body>"
            f"<h1>{html.escape(run.name)}</h1>"
            f"<p>problem {html.escape(problem)}; {minutes:.1f} minutes of training; stopped: "
            f"{html.escape(str(results.get('stopped', 'not finished')))}</p>"
            f"<p>machine: {html.escape(machine_text)}</p>"
            f"<h2>Final metrics (best checkpoint)</h2>{_metrics_table(results)}"
            f"<h2>Training curves</h2>{curves}{samples}"
            f"<h2>Config</h2><pre>{html.escape(config_text)}</pre>"
            f"{CHECK_IMAGES}</body></html>")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out
