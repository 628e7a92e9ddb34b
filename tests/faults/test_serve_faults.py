"""The web app's faults (oversized and malformed requests, bursts, clients that disconnect, paths
outside the served runs) are tested with the app itself in ``tests/serve``, owned by the serve
engineer; this placeholder keeps the fault table complete."""

import pytest


@pytest.mark.skip(reason="web app faults live in tests/serve (another engineer's part of issue 9)")
def test_web_app_faults():
    """See tests/serve."""
