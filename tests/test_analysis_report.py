"""`dsd report`: one self-contained HTML file that a real browser renders with all its figures."""
import re
import shutil
import subprocess

import numpy as np
import pytest

from synthetic_runs import anynet_rows, dsd, regnet_rows, write_run


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    statuses = ["done"] * 60
    statuses[:4] = ["untrained", "failed", "diverged", "untrained"]
    a = write_run(root / "xa", anynet_rows(60, np.random.default_rng(0)), statuses=statuses)
    b = write_run(root / "regnetx", regnet_rows(60, np.random.default_rng(1)))
    code, out, err = dsd("report", a, b, "--samples", 500)
    assert code == 0, err
    path = a / "report.html"
    assert out.strip() == str(path)
    return path


def test_report_is_self_contained(report):
    text = report.read_text()
    headings = re.findall(r"<h2>([^<]+)</h2>", text)
    assert headings[0] == "Findings"  # the report opens with what the numbers support
    for heading in ["Summary", "Error distributions (EDF)", "Design trends (bootstrap of the best value)",
                    "Quantized linear fits of the top 20 models", "How many epochs", "How many models",
                    "Noise floor", "Random search efficiency", "Best and worst models", "Run settings"]:
        assert heading in headings
    images = re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,', text)
    assert {"error EDF", "flops-normalized error EDF", "trends", "quantized linear fits",
            "random search efficiency", "best models", "worst models", "training curves", "rank agreement by epoch",
            "KS power and interval width by number of models"} <= set(images)
    assert re.search(r'<ol id="findings">\s*<li><b>edf-order</b>', text)
    assert not re.search(r'(src|href)="(https?:)?//', text)  # nothing to fetch
    assert "space: synthetic" in text  # run.yaml settings


def _chromium(args, tmp_path):
    browser = shutil.which("chromium")
    if browser is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}"]
    return subprocess.run([browser, *flags, *args], capture_output=True, text=True, timeout=120)


def test_report_renders_in_chromium(report, tmp_path):
    dom = _chromium(["--dump-dom", report.as_uri()], tmp_path).stdout
    summary = re.search(r'<table[^>]*id="summary".*?</table>', dom, re.S)
    assert summary, dom[:500]
    rows = re.findall(r"<tr>\s*<td>([^<]+)</td>", summary.group(0))
    assert rows == ["xa", "regnetx"]
    assert len(re.findall(r"<img ", dom)) >= 10
    assert re.search(r'<ol id="findings">.*?</ol>', dom, re.S)

    shot = tmp_path / "shot.png"
    _chromium([f"--screenshot={shot}", "--window-size=1200,2400", report.as_uri()], tmp_path)
    from matplotlib.image import imread

    pixels = imread(shot)[..., :3]
    assert pixels.shape[:2] == (2400, 1200)
    # rendered figures, not a blank page: many distinct colors, and a good share of non-white pixels
    assert len(np.unique((pixels * 255).astype(np.uint8).reshape(-1, 3), axis=0)) > 200
    assert (pixels.mean(axis=2) < 0.9).mean() > 0.03
