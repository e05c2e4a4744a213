"""docs/library.md's examples, run in order in one namespace, as a reader would paste them."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

import relay
from tests.gateway.conftest import serve_asgi_in_thread

DOC = Path(__file__).parents[2] / "docs" / "library.md"


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), re.DOTALL)


def test_the_library_guide_runs(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("RELAY_URL", "memory://docs")
    relay.reset_default_client()
    blocks = python_blocks(DOC)
    assert len(blocks) >= 8
    namespace: dict[str, object] = {"__name__": "docs"}
    try:
        for block in blocks:
            exec(compile(block, str(DOC), "exec"), namespace)
    finally:
        relay.reset_default_client()
    assert "Relay('memory://docs')" in capsys.readouterr().out
    assert_auth_routes_answer_cors(namespace["app"])


def assert_auth_routes_answer_cors(app: object) -> None:
    """The guide's CORS block lets a page on the listed origin through the browser's preflight and read the auth
    answer; another origin gets no CORS header, so its browser refuses the answer."""
    page = "http://localhost:5173"
    preflight = {
        "origin": page,
        "access-control-request-method": "POST",
        "access-control-request-headers": "content-type,x-demo-user",
    }
    with serve_asgi_in_thread(app) as url, httpx.Client(base_url=url) as http:  # type: ignore[arg-type]
        allowed = http.options("/pusher/auth", headers=preflight)
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == page
        assert allowed.headers["access-control-allow-credentials"] == "true"
        refused = http.options("/pusher/auth", headers={**preflight, "origin": "http://elsewhere.test"})
        assert refused.status_code == 400
        assert "access-control-allow-origin" not in refused.headers
        answer = http.post(
            "/pusher/auth",
            data={"socket_id": "123.456", "channel_name": "private-orders.42"},
            headers={"origin": page, "x-demo-user": "1"},
        )
        assert answer.headers["access-control-allow-origin"] == page
        assert answer.status_code == 200
        assert answer.json()["auth"].startswith("app-key:")
