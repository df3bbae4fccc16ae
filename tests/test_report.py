"""`seqlab report RUN`: one self-contained HTML page, opened in headless Chromium (Debian's
`chromium`; the test skips where it is not installed): it renders with no console error and
every embedded image decodes."""

import re
import shutil
import subprocess

import pytest

from seqlab.cli import main
from seqlab.config import load_config
from seqlab.train import train

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    from conftest import TINY
    from seqlab.synthetic import make_dataset

    root = tmp_path_factory.mktemp("report")
    prefixes = {}
    for split, n in (("train", 600), ("valid", 40), ("test", 40)):
        pairs = make_dataset("reverse", n, seed=0, split=split)
        (root / f"{split}.src").write_text("".join(s + "\n" for s, _ in pairs))
        (root / f"{split}.tgt").write_text("".join(t + "\n" for _, t in pairs))
        prefixes[split] = str(root / split)
    config = root / "tiny.yaml"
    config.write_text(TINY.format(**prefixes))
    run = root / "run"
    train(load_config(config), run, quiet=True)
    out = root / "report.html"
    assert main(["report", str(run), "-o", str(out)]) == 0
    return run, out


def test_the_page_holds_config_metrics_samples_and_embedded_images(report):
    run, out = report
    page = out.read_text(encoding="utf-8")
    assert "nrefs:1|case:mixed" in page  # the sacrebleu signature
    assert "batch_tokens" in page  # the config
    assert page.count("<img ") == 1 + 3  # the curves, and the attention of 3 samples
    assert 'src="data:image/png;base64,' in page and "file://" not in page
    assert "machine: cpu " in page and "minutes of training" in page


def _open(path, tmp_path):
    """The page after load in headless Chromium: (<body> tag, console error lines)."""
    result = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr",
         "--virtual-time-budget=5000", f"--user-data-dir={tmp_path / 'profile'}",
         "--dump-dom", path.as_uri()],
        capture_output=True, text=True, timeout=120)
    body = re.search(r"<body[^>]*>", result.stdout)
    console = [line for line in result.stderr.splitlines()
               if "CONSOLE" in line and ("Uncaught" in line or "error" in line.lower())]
    return (body.group(0) if body else ""), console


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium here (Debian: apt-get install -y "
                    "chromium; .ci/run installs it)")
def test_the_page_renders_in_chromium_without_errors_or_broken_images(report, tmp_path):
    _, out = report
    body, console = _open(out, tmp_path)
    shown = re.search(r'data-images="(\d+)"', body)
    ok = re.search(r'data-images-ok="(\d+)"', body)
    assert shown and ok, body
    assert int(ok.group(1)) == int(shown.group(1)) >= 2
    assert console == []
    # the check can fail: a page with one corrupted image is caught
    broken = tmp_path / "broken.html"
    broken.write_text(out.read_text(encoding="utf-8").replace("base64,iVBOR", "base64,XXXX", 1),
                      encoding="utf-8")
    body, _ = _open(broken, tmp_path)
    assert int(re.search(r'data-images-ok="(\d+)"', body).group(1)) == int(shown.group(1)) - 1
    # ... and so is a script error
    failing = tmp_path / "failing.html"
    failing.write_text(out.read_text(encoding="utf-8").replace(
        "</body>", "<script>throw new Error('planted')</script></body>"), encoding="utf-8")
    assert any("planted" in line for line in _open(failing, tmp_path)[1])


def test_report_of_a_folder_that_is_no_run_is_one_line(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "not a run directory" in capsys.readouterr().err
