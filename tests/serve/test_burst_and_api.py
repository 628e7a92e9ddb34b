"""The server under a burst, and what a request may read, over HTTP on loopback."""

from __future__ import annotations

import threading
from collections import Counter

import pytest

httpx = pytest.importorskip("httpx")

CLIENTS, PER_CLIENT, IMAGES = 10, 5, 4


def call(client, base: str, api: str, data: list) -> tuple[str, object]:
    """One request through Gradio's REST API: ``("complete", outputs)``, ``("refused", message)``
    or ``("error", message)``."""
    import json

    r = client.post(f"{base}/gradio_api/call/{api}", json={"data": data})
    if r.status_code == 503:
        return "refused", r.json()["detail"]
    r.raise_for_status()
    event_id = r.json()["event_id"]
    with client.stream("GET", f"{base}/gradio_api/call/{api}/{event_id}") as stream:
        lines = [line for line in stream.iter_lines() if line]
    event = [line.split(":", 1)[1].strip() for line in lines if line.startswith("event:")][-1]
    payload = json.loads([line.split(":", 1)[1] for line in lines if line.startswith("data:")][-1])
    return event, payload


def generate_payload(seed: int) -> list:
    return ["tiny-cond", "3: 3", "", IMAGES, seed, 0]


def test_burst_is_answered_or_refused_cleanly_and_the_server_survives(server):
    outcomes: list[tuple[str, object]] = []
    lock = threading.Lock()

    def client_loop(k: int) -> None:
        with httpx.Client(timeout=120) as client:
            for i in range(PER_CLIENT):
                result = call(client, server, "generate", generate_payload(k * PER_CLIENT + i))
                with lock:
                    outcomes.append(result)

    threads = [threading.Thread(target=client_loop, args=(k,)) for k in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads)

    kinds = Counter(kind for kind, _ in outcomes)
    assert sum(kinds.values()) == CLIENTS * PER_CLIENT
    assert set(kinds) <= {"complete", "refused"}, kinds
    assert kinds["complete"] >= CLIENTS  # the queue keeps working through the burst
    for kind, payload in outcomes:
        if kind == "complete":
            gallery, status = payload
            assert len(gallery) == IMAGES and status.startswith(f"{IMAGES} images")
        else:
            assert "Queue is full" in payload
    with httpx.Client(timeout=60) as client:
        kind, (gallery, _) = call(client, server, "generate", generate_payload(0))
    assert kind == "complete" and len(gallery) == IMAGES


def test_requests_cannot_read_files_outside_the_uploads(server, cond_run):
    with httpx.Client(timeout=60) as client:
        # the analyse handler only accepts files uploaded to the app
        kind, payload = call(
            client,
            server,
            "analyse",
            [{"path": "/etc/passwd", "meta": {"_type": "gradio.FileData"}}, "x"],
        )
        assert kind == "error" and "root:" not in str(payload)
        # nor does the server hand out files of the runs it serves
        r = client.get(f"{server}/gradio_api/file={cond_run / 'config.yaml'}")
        assert r.status_code == 403
