"""Real headless Chromium (Debian's, driven by Playwright) plays the page against the tiny export: keys change the
frames, two key sequences from the same start differ, the frames/s element shows a number."""

from __future__ import annotations

import json
import shutil
import urllib.request

import pytest
from PIL import Image


def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.fail("chromium is not installed: run `make test`, which installs it (apt-get install chromium)")
    return exe


def frames_after(page, keys: list[str], n: int) -> list[str]:
    """Paused, keys held: press 'step' n times -> each frame's data URL."""
    out = []
    for k in keys:
        page.keyboard.down(k)
    for _ in range(n):
        before = int(page.inner_text("#frames"))
        page.click("#step")
        page.wait_for_function(f"Number(document.getElementById('frames').textContent) > {before}", timeout=60_000)
        out.append(page.get_attribute("#frame", "src"))
    for k in keys:
        page.keyboard.up(k)
    return out


@pytest.mark.slow
def test_the_page_plays_in_headless_chromium(server, tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 700})
            page.goto(server + "/")
            page.wait_for_selector("#embodiment option[value=carracing]", state="attached", timeout=30_000)
            page.fill("#seed", "2")
            page.check("#simulator")  # CarRacing was recorded from its simulator: its frames beside the model's
            page.click("#start")
            page.wait_for_function("document.body.dataset.state === 'playing'", timeout=60_000)
            assert page.is_visible("#sim") and page.get_attribute("#sim", "src").startswith("data:image/png")
            page.wait_for_function("Number(document.getElementById('frames').textContent) >= 3", timeout=60_000)
            page.click("#pause")
            assert "ArrowLeft" in page.inner_text("#controls")  # the key map is shown
            fps = page.inner_text("#fps")
            assert float(fps) > 0, fps  # frames/s shows a number

            page.click("#reset")
            page.wait_for_function("document.getElementById('frames').textContent === '0'")
            start = page.get_attribute("#frame", "src")
            right = frames_after(page, ["ArrowRight", "ArrowUp"], 4)
            assert right[-1] != start  # pressing keys changes the frames
            assert page.inner_text("#native").startswith("[")
            page.click("#reset")
            page.wait_for_function("document.getElementById('frames').textContent === '0'")
            again = frames_after(page, ["ArrowRight", "ArrowUp"], 4)
            page.click("#reset")
            page.wait_for_function("document.getElementById('frames').textContent === '0'")
            left = frames_after(page, ["ArrowLeft", "ArrowDown"], 4)
            assert again == right  # the same start, noise and keys: the same frames
            assert left[-1] != right[-1]  # other keys from the same start: other frames

            shot = tmp_path / "play.png"
            page.screenshot(path=str(shot))
            img = Image.open(shot)
            assert img.size == (1100, 700) and len(img.convert("L").getcolors(1 << 16)) > 8  # a drawn page
            with urllib.request.urlopen(server + "/status", timeout=30) as r:
                status = json.loads(r.read())
            assert status["embodiment"] == "carracing" and status["frames"] >= 15 and "fps" in status
        finally:
            browser.close()
