"""The web page in a real browser (Debian's chromium driven by Playwright) against a live server.

The page loads, a chosen photo returns a grid whose first result is the photo's class, switching to centroids
still puts it first, and an enrolment made in the Enrol tab appears in the class list. With
``CENTRUM_SCREENSHOTS=DIR`` the laptop- and phone-width screenshots are written to DIR (docs/images).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from checkpoints import omniglot_class_names, omniglot_images
from live_server import API_KEY, png_bytes, start_server

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists() or shutil.which("chromium") is None,
    reason="no browser: /usr/bin/chromium is not installed (apt-get install chromium); CI installs it",
)


def test_page_search_and_enrol_in_chromium(tmp_path, model_files):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    images, _ = omniglot_images(40, per_class=5)
    names = omniglot_class_names(8)
    shots = Path(os.environ.get("CENTRUM_SCREENSHOTS", tmp_path))
    server = start_server(
        tmp_path / "idx", ["--onnx", str(model_files["onnx"])], ["--api-key-file", str(model_files["keys"])]
    )
    try:
        with server.client(headers=server.auth()) as client:
            for label in range(7):  # enrol 4 drawings of 7 characters; the 5th drawings are queries
                files = [
                    ("image", (f"{label}-{i}.png", png_bytes(images[5 * label + i]), "image/png")) for i in range(4)
                ]
                assert client.post(f"/classes/{names[label]}/images", files=files).status_code == 201
        query = tmp_path / "query.png"
        images[5 * 2].save(query)  # an enrolled drawing of class 2: its own image is the nearest
        new_drawings = []
        for i in range(3):
            new_drawings.append(tmp_path / f"new-{i}.png")
            images[35 + i].save(new_drawings[-1])
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 820})
                page.goto(server.url + "/")
                page.wait_for_function("document.getElementById('status').textContent.includes('28 images')")
                page.set_input_files("#file", str(query))
                page.wait_for_selector(".hit")
                first = page.locator(".hit").first
                assert first.get_attribute("data-class") == names[2]
                assert page.locator(".hit").count() == 12
                page.wait_for_function(
                    "[...document.querySelectorAll('.hit img')].every(i => i.complete && i.naturalWidth > 0)"
                )
                page.screenshot(path=str(shots / "serve.png"))
                page.click("#mode-centroids")
                page.wait_for_selector(".hit .dist >> text=img")
                assert page.locator(".hit").first.get_attribute("data-class") == names[2]
                # the Enrol tab: a new class from three photos, with the key typed in
                page.click("#tab-enrol")
                page.fill("#class-name", names[7])
                page.fill("#api-key", API_KEY)
                page.set_input_files("#enrol-files", [str(f) for f in new_drawings])
                page.click("#enrol-btn")
                page.wait_for_selector(f"#class-list tr[data-class='{names[7]}']")
                assert page.locator(f"#class-list tr[data-class='{names[7]}'] td.n").inner_text() == "3"
                assert "enrolled 3 photo(s)" in page.inner_text("#enrol-msg")
                page.fill("#api-key", "wrong")
                page.set_input_files("#enrol-files", [str(new_drawings[0])])
                page.click("#enrol-btn")
                page.wait_for_selector("#enrol-msg.err")
                assert "not valid" in page.inner_text("#enrol-msg")
                phone = browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=2)
                phone.goto(server.url + "/")
                phone.set_input_files("#file", str(query))
                phone.wait_for_selector(".hit")
                phone.wait_for_function(
                    "[...document.querySelectorAll('.hit img')].every(i => i.complete && i.naturalWidth > 0)"
                )
                assert phone.locator(".hit").first.get_attribute("data-class") == names[2]
                width = phone.evaluate("document.documentElement.scrollWidth")
                assert width <= 390  # nothing overflows sideways on a phone
                phone.screenshot(path=str(shots / "serve-phone.png"))
            finally:
                browser.close()
    finally:
        server.stop()
