"""Uploads to the web app: the folder they land in stays bounded, and every upload is answered in
words, over HTTP on loopback as a client (or an attacker) would send them."""

from __future__ import annotations

import io
import os
import time

import pytest
from PIL import Image

from ganfuse.serve.uploads import app_upload_folder, folder_bytes, prune_folder
from tests.serve.conftest import start_server
from tests.serve.test_burst_and_api import call

httpx = pytest.importorskip("httpx")

MB = 2**20
UPLOAD_BYTES = MB
FOLDER_BYTES = 4 * MB


def test_prune_folder_deletes_the_oldest_files_down_to_the_bound(tmp_path):
    for i in range(6):
        (tmp_path / f"u{i}").mkdir()
        path = tmp_path / f"u{i}" / "image.png"
        path.write_bytes(b"x" * 1000)
        os.utime(path, (1000 + i, 1000 + i))  # u0 oldest
    assert prune_folder(tmp_path, 2500) == 4000
    assert sorted(p.parent.name for p in tmp_path.rglob("*.png")) == ["u4", "u5"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["u4", "u5"]  # emptied folders go too
    assert prune_folder(tmp_path, 2500) == 0 and folder_bytes(tmp_path) == 2000


@pytest.fixture(scope="module")
def small_server(cap_run):
    """The app over a caption run, with a 1 MB upload limit and a 4 MB upload folder."""
    app, url = start_server(
        [cap_run], max_upload_bytes=UPLOAD_BYTES, max_upload_folder_bytes=FOLDER_BYTES
    )
    yield url
    app.close()


def upload(client, base: str, name: str, data: bytes) -> dict:
    r = client.post(f"{base}/gradio_api/upload", files={"files": (name, data, "image/png")})
    r.raise_for_status()
    return {"path": r.json()[0], "orig_name": name, "meta": {"_type": "gradio.FileData"}}


def png_bytes(colour=(255, 0, 0), format: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), colour).save(buffer, format=format)
    return buffer.getvalue()


def test_many_uploads_leave_the_folder_bounded(small_server):
    folder = app_upload_folder()
    with httpx.Client(timeout=60) as client:
        for i in range(20):  # 20 MB sent, each upload different so none is deduplicated
            upload(client, small_server, f"noise{i}.png", os.urandom(UPLOAD_BYTES - 1024))
        assert folder_bytes(folder) <= FOLDER_BYTES
        # the newest uploads survive and are analysed as usual
        image = upload(client, small_server, "red.png", png_bytes())
        kind, (status, _, _, _, caption) = call(client, small_server, "analyse", [image, ""])
    assert kind == "complete" and "Error" not in status and caption
    assert folder_bytes(folder) <= FOLDER_BYTES


@pytest.mark.parametrize(
    "name, data",
    [
        ("notes.png", b"not an image at all"),  # PIL cannot identify it
        ("cut.png", png_bytes()[:60]),  # a PNG header whose pixels are missing
        ("anim.png", png_bytes(format="GIF")),  # a GIF: PIL reads it, the app decodes no GIF
    ],
)
def test_a_non_image_upload_is_answered_in_one_line_without_a_traceback(
    small_server, capfd, name, data
):
    with httpx.Client(timeout=60) as client:
        kind, payload = call(
            client, small_server, "analyse", [upload(client, small_server, name, data), "x"]
        )
    status = payload[0]
    assert kind == "complete", payload
    assert status == (
        "**Error:** the upload is not an image this app can read; use PNG, JPEG, WebP or BMP"
    )
    assert "Traceback" not in capfd.readouterr().err


def test_an_upload_deleted_before_it_is_analysed_asks_for_it_again(small_server):
    with httpx.Client(timeout=60) as client:
        image = upload(client, small_server, "red.png", png_bytes((0, 255, 0)))
        os.remove(image["path"])
        kind, (status, *_) = call(client, small_server, "analyse", [image, ""])
    assert kind == "complete"
    assert status == "**Error:** the uploaded image is gone from the server; upload it again"


def test_closing_the_app_deletes_its_uploads(cap_run):
    app, url = start_server([cap_run])
    with httpx.Client(timeout=60) as client:
        image = upload(client, url, "blue.png", png_bytes((0, 0, 255)))
    assert os.path.isfile(image["path"])
    app.close()
    deadline = time.monotonic() + 10
    while os.path.exists(image["path"]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not os.path.exists(image["path"])
