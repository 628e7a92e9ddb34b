"""End to end in a real headless Chromium against ``ganfuse serve`` on 127.0.0.1."""

from __future__ import annotations

import pytest

from tests.serve.conftest import start_server

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


def expect():
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect


def test_generate_shows_as_many_images_as_asked(server, page):
    external = []
    page.on(
        "request",
        lambda r: (
            None
            if r.url.startswith(server) or r.url.startswith("data:")
            else external.append(r.url)
        ),
    )
    page.goto(server)
    page.locator("#gen-number input").fill("5")
    page.locator("#gen-button").click()
    expect()(page.locator("#gen-status")).to_contain_text("5 images")
    expect()(page.locator("#gen-gallery img")).to_have_count(5)
    # every image arrived and decoded (a broken image has naturalWidth 0); wait for the decoding,
    # which can trail the elements' appearance on a loaded machine
    page.wait_for_function(
        "() => [...document.querySelectorAll('#gen-gallery img')].every(e => e.complete)", timeout=30_000
    )
    widths = page.locator("#gen-gallery img").evaluate_all("els => els.map(e => e.naturalWidth)")
    assert widths == [128] * 5
    assert external == []  # the page loads nothing from outside the server: it works offline


def test_oversized_prompt_shows_the_limit(server, page):
    page.goto(server)
    page.locator("#gen-prompt textarea").fill("x" * 501)
    page.locator("#gen-button").click()
    expect()(page.locator("#gen-status")).to_contain_text(
        "the prompt is 501 characters long; the limit is 500"
    )
    expect()(page.locator("#gen-gallery img")).to_have_count(0)


def test_uploaded_image_gets_its_caption(server, page, cap_run, red_png):
    from ganfuse.multimodal.captioning import load_captioner
    from ganfuse.multimodal.predict import load_image

    expected = load_captioner(cap_run).caption(load_image(red_png, 32))[0]
    page.goto(server)
    page.get_by_role("tab", name="Multimodal").click()
    page.locator("#mm-image input[type=file]").set_input_files(str(red_png))
    expect()(page.locator("#mm-image img")).to_have_count(1)
    page.locator("#mm-button").click()
    expect()(page.locator("#mm-caption textarea")).to_have_value(expected)
    expect()(page.locator("#mm-status")).to_contain_text("no matching run given")


def test_without_multimodal_runs_the_tab_says_so(cond_run, page, red_png):
    app, url = start_server([cond_run])
    try:
        page.goto(url)
        page.get_by_role("tab", name="Multimodal").click()
        expect()(page.locator("#mm-info")).to_contain_text("No multimodal run was given")
        page.locator("#mm-image input[type=file]").set_input_files(str(red_png))
        expect()(page.locator("#mm-image img")).to_have_count(1)
        page.locator("#mm-button").click()
        expect()(page.locator("#mm-status")).to_contain_text("No multimodal run was given")
    finally:
        app.close()
