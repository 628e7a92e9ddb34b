"""Fixtures of the web-app tests: tiny runs (shared with the report tests), in-process servers on
127.0.0.1, and a headless system Chromium driven by Playwright.

Browser tests skip with a reason when Chromium or Playwright is missing; set
``GANFUSE_REQUIRE_BROWSER=1`` (as CI does) to make that a failure instead. ``GANFUSE_CHROMIUM``
overrides the browser path (default ``/usr/bin/chromium``, Debian's package). No browser is ever
downloaded.
"""

from __future__ import annotations

import importlib.util
import os
import socket
from pathlib import Path

import pytest

from tests.report.runs import caption_run, conditional_gan_run, red_circle_png

CHROMIUM = os.environ.get("GANFUSE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def browser_missing() -> str | None:
    if importlib.util.find_spec("playwright") is None:
        return "the playwright package is not installed (pip install -e '.[dev]')"
    if not Path(CHROMIUM).is_file():
        return f"no Chromium at {CHROMIUM} (apt-get install chromium, or set GANFUSE_CHROMIUM)"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def cond_run(tmp_path_factory):
    return conditional_gan_run(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="session")
def cap_run(tmp_path_factory):
    return caption_run(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="session")
def red_png(tmp_path_factory):
    return red_circle_png(tmp_path_factory.getbasetemp() / "red.png")


def start_server(paths, **limits):
    pytest.importorskip("gradio")
    from ganfuse.serve.app import serve
    from ganfuse.serve.limits import Limits

    port = free_port()
    app = serve([str(p) for p in paths], "127.0.0.1", port, Limits(**limits), block=False)
    return app, f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def server(cond_run, cap_run):
    """The app over a class-conditional GAN run and a caption run; a small queue so a burst
    meets refusals."""
    app, url = start_server([cond_run, cap_run], concurrency=2, max_queue=4)
    yield url
    app.close()


@pytest.fixture(scope="module")
def browser():
    reason = browser_missing()
    if reason:
        if os.environ.get("GANFUSE_REQUIRE_BROWSER") == "1":
            pytest.fail(f"browser tests are required here but {reason}")
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1200, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(60_000)
    yield page
    context.close()
