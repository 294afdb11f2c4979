"""The API page ``/docs`` in Debian's chromium, offline: Swagger UI renders the service's operations from files
this server serves (no request leaves 127.0.0.1), and the page and /docs carry the service's icon."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from live_server import start_server

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists() or shutil.which("chromium") is None,
    reason="no browser: /usr/bin/chromium is not installed (apt-get install chromium); CI installs it",
)


@pytest.mark.slow  # a real server and a real browser
def test_api_docs_render_offline_with_a_favicon(tmp_path, model_files):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    pytest.importorskip("swagger_ui", reason="swagger-ui-py (the serve extra) is not installed")
    server = start_server(tmp_path / "idx", ["--onnx", str(model_files["onnx"])], ["--no-auth"])
    outside: list[str] = []
    try:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
            try:
                page = browser.new_page()

                def offline(route):  # as on a machine without internet: anything not local fails
                    if route.request.url.startswith(server.url):
                        route.continue_()
                    else:
                        outside.append(route.request.url)
                        route.abort()

                page.route("**/*", offline)
                page.goto(server.url + "/docs")
                page.wait_for_selector(".swagger-ui .opblock-summary-path", timeout=30_000)
                paths = page.locator(".opblock-summary-path").all_inner_texts()
                assert {"/search", "/classes/{name}/images", "/health"} <= {p.strip() for p in paths}
                assert page.get_attribute("link[rel~='icon']", "href") == "/favicon.svg"
                page.goto(server.url + "/")
                assert page.get_attribute("link[rel~='icon']", "href") == "/favicon.svg"
            finally:
                browser.close()
        assert outside == []
        with server.client() as client:
            icon = client.get("/favicon.svg")
            assert icon.status_code == 200 and icon.headers["content-type"] == "image/svg+xml"
            assert icon.text.startswith("<svg")
            assert client.get("/favicon.ico").status_code == 200  # what browsers ask for unprompted
            assert client.get("/static/swagger-ui/../store.py").status_code == 404
    finally:
        server.stop()
