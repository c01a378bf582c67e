"""The web demo in a real browser: start the page on a free loopback port, upload the astronaut photo with
headless Chromium (Debian's `chromium`, driven by playwright; pip installs no browser), press Restore and
wait for the restored image, which must have the photo's size. Every request the browser makes must go to
127.0.0.1: the page is offline (no CDN, no analytics).

Set DR2_DEMO_SCREENSHOT=<file.png> to keep the screenshot (docs/images/demo_page.png is made this way).
"""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path
from urllib.parse import urlparse

import pytest
from PIL import Image

CHROMIUM = next((p for p in ("/usr/bin/chromium", shutil.which("chromium") or "") if p and Path(p).is_file()), None)
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="no Chromium binary (apt-get install chromium) to drive the page"),
]
pytest.importorskip("gradio", reason="the demo's optional extra: pip install 'lightning_dr2[demo]'")
playwright = pytest.importorskip("playwright.sync_api", reason="playwright drives the browser (dev extra)")
pytest.importorskip("skimage", reason="scikit-image ships the astronaut photo (dev extra)")

from test_demo import make_quickstart_run  # noqa: E402

from lightning_dr2.demo.app import launch  # noqa: E402
from lightning_dr2.demo.models import resolve_models  # noqa: E402
from lightning_dr2.jobs.face_benchmark import packaged_photo  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_upload_restore_and_see_an_output_of_the_photos_size_with_no_request_leaving_the_machine(tmp_path):
    make_quickstart_run(tmp_path / "runs" / "quickstart", "browser")  # tiny random networks (tests chdir here)
    photo = tmp_path / "astronaut.png"
    Image.fromarray(packaged_photo("astronaut")).save(photo)
    app, url = launch(free_port(), block=False, models=resolve_models())
    assert urlparse(url).hostname == "127.0.0.1"
    requests: list[str] = []
    try:
        with playwright.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on("request", lambda request: requests.append(request.url))
            page.goto(url)
            page.locator("#restore").wait_for(timeout=60_000)  # the page is built by its JavaScript
            assert "TINY" in page.locator("body").inner_text()  # the page says which models run
            page.locator("#upload input[type=file]").set_input_files(str(photo))
            page.locator("#upload img").wait_for(timeout=30_000)
            page.locator("#restore").click()
            restored = page.locator("#restored img")
            restored.wait_for(timeout=120_000)
            page.wait_for_function("document.querySelector('#restored img').naturalWidth > 0", timeout=30_000)
            size = restored.evaluate("img => [img.naturalWidth, img.naturalHeight]")
            status = page.locator("#status").inner_text()
            page.locator("#download").scroll_into_view_if_needed()
            shot = page.screenshot(path=str(tmp_path / "demo_page.png"), full_page=True)
            browser.close()
    finally:
        app.close()
    assert size == [512, 512], status
    assert "1 face found, 1 restored" in status
    assert len(shot) > 0
    if os.environ.get("DR2_DEMO_SCREENSHOT"):
        shutil.copy(tmp_path / "demo_page.png", os.environ["DR2_DEMO_SCREENSHOT"])
    hosts = {urlparse(u).hostname for u in requests if urlparse(u).scheme in ("http", "https", "ws", "wss")}
    assert hosts == {"127.0.0.1"}, f"requests left the machine: {sorted(hosts)}"
