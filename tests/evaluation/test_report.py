"""The report directory of an evaluation: files, metrics.json, report.html self-contained, and real Chromium
rendering every embedded image."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess

import pytest
from PIL import Image

from evaluation.conftest import HORIZON
from unified_action.evaluation import write_report


@pytest.fixture(scope="module")
def report(evaluated, tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "eval"
    out.mkdir()
    # an older report's file (another dataset's clip): the new report replaces its own earlier output whole
    (out / "ale_pong_clip7.gif").write_bytes(b"from an older run")
    return write_report(evaluated, out)


@pytest.mark.slow
def test_report_files(report, evaluated):
    out = report.parent
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(["metrics.json", "report.html", "carracing_metrics.png", "carracing_clip0.png",
                            "carracing_clip0.gif", "carracing_clip1.png", "carracing_clip1.gif"])
    assert not out.with_name(out.name + ".tmp").exists()
    strip = Image.open(out / "carracing_clip0.png")
    assert strip.height > 3 * 96 and strip.width > (2 + HORIZON) * 96  # three rows of upscaled frames, context first
    gif = Image.open(out / "carracing_clip0.gif")
    assert gif.n_frames == 2 + HORIZON
    m = json.loads((out / "metrics.json").read_text())
    car = m["datasets"]["carracing"]
    assert car["clips"] == evaluated.datasets[0].clips and car["episodes"] == [3, 5]
    for key, values in car["per_step"].items():
        assert len(values) == HORIZON and all(isinstance(v, float) for v in values), key
    assert car["overall"]["psnr"] == pytest.approx(evaluated.datasets[0].overall()["psnr"])


@pytest.mark.slow
def test_report_html_embeds_every_image(report):
    html = report.read_text()
    images = sorted(report.parent.glob("*.png")) + sorted(report.parent.glob("*.gif"))
    for p in images:
        mime = "image/png" if p.suffix == ".png" else "image/gif"
        assert f"data:{mime};base64,{base64.b64encode(p.read_bytes()).decode()}" in html, p.name
    assert html.count("<img ") == len(images)
    assert not re.search(r'src="(?!data:)', html)  # nothing loaded from beside the file
    for title in ("PSNR (dB)", "SSIM", "copy-last PSNR", "copy-last SSIM", "dPSNR (dB)"):
        assert f"<th>{title}</th>" in html


def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.fail("chromium is not installed: run `make test`, which installs it (apt-get install chromium)")
    return exe


@pytest.mark.slow
def test_report_renders_in_headless_chromium(report, tmp_path):
    """Real Chromium opens the single file (copied alone: no directory beside it) and decodes every image."""
    alone = tmp_path / "report.html"
    shutil.copy(report, alone)
    n_images = report.read_text().count("<img ")
    args = [chromium(), "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    shot = tmp_path / "shot.png"
    r = subprocess.run([*args, f"--screenshot={shot}", "--window-size=1200,2000", alone.as_uri()],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and shot.is_file(), r.stderr[-2000:]
    img = Image.open(shot).convert("L")
    assert img.size == (1200, 2000) and img.getextrema()[0] < 100  # not a blank page: text and frames drawn
    r = subprocess.run([*args, "--dump-dom", alone.as_uri()], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    body = re.search(r"<body[^>]*>", r.stdout)
    assert body, r.stdout[:500]
    assert f'data-images-total="{n_images}"' in body.group(0) and f'data-images-loaded="{n_images}"' in body.group(0)
