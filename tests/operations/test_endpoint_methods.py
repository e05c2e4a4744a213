"""The operations endpoints answer the methods they serve and refuse the others with 405 and ``Allow`` (RFC 9110
§15.5.6), as the Pusher API's routes do: a ``DELETE /health`` or ``POST /metrics`` used to be answered as a GET."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import RunningEmulator, StartEmulator

REFUSED = [
    ("POST", "/health", "GET, HEAD, OPTIONS"),
    ("DELETE", "/ready", "GET, HEAD, OPTIONS"),
    ("PUT", "/metrics", "GET, HEAD, OPTIONS"),
    ("POST", "/usage", "GET, HEAD, OPTIONS"),
    ("POST", "/console", "GET, HEAD, OPTIONS"),
    ("PATCH", "/console/apps", "GET, HEAD, OPTIONS"),
    ("HEAD", "/console/events", "GET"),
    ("OPTIONS", "/console/events", "GET"),
    ("GET", "/console/publish", "POST"),
]


@pytest.mark.parametrize(("method", "path", "allowed"), REFUSED)
async def test_a_method_an_operations_endpoint_does_not_serve_is_a_405_naming_the_ones_it_does(
    emulator: RunningEmulator, method: str, path: str, allowed: str
) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{emulator.port}") as http:
        refused = await http.request(method, path)
        health = await http.get("/health")
    assert refused.status_code == 405
    assert refused.headers["allow"] == allowed
    if method != "HEAD":
        assert refused.json() == {"error": f"{path} accepts {allowed} only"}
    assert health.status_code == 200 and health.json() == {"status": "ok"}


async def test_the_served_methods_are_answered(emulator: RunningEmulator) -> None:
    """GET and HEAD on the read-only endpoints (HEAD without a body), POST on the console's publish."""
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{emulator.port}") as http:
        ready = await http.get("/ready")
        head = await http.head("/metrics")
        metrics = await http.get("/metrics")
        published = await http.post(
            "/console/publish",
            json={"app_id": emulator.app.app_id, "channel": "news", "event": "e", "data": "x"},
            headers={"Origin": f"http://127.0.0.1:{emulator.port}"},
        )
    assert ready.status_code == 200 and ready.json() == {"status": "ready"}
    assert head.status_code == 200 and head.content == b""
    assert metrics.status_code == 200 and b"relay_" in metrics.content
    assert published.status_code == 200 and published.json() == {"ok": True, "recipients": 0}


async def test_options_on_the_health_checks_answers_as_get_for_haproxy(start_emulator: StartEmulator) -> None:
    """HAProxy's ``option httpchk /health`` sends OPTIONS and counts only 2xx and 3xx as up: a 405 took every node out
    of service, and /ready's 503 while draining must still take one out."""
    running = await start_emulator()
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{running.port}") as http:
        health, ready = await http.options("/health"), await http.options("/ready")
        running.node.draining = True
        draining = await http.options("/ready")
    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    assert (ready.status_code, ready.json()) == (200, {"status": "ready"})
    assert (draining.status_code, draining.json()) == (503, {"status": "draining"})


async def test_a_refusal_of_a_protected_endpoint_names_the_nodes_own_origin(emulator: RunningEmulator) -> None:
    """Not the Pusher API's ``*``: a page elsewhere cannot read what the console answers, refusals included."""
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{emulator.port}") as http:
        refused = await http.post("/metrics")
        health = await http.post("/health")
    assert refused.headers["access-control-allow-origin"] == f"http://127.0.0.1:{emulator.port}"
    assert health.status_code == 405
