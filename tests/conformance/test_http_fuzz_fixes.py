"""The emulator's HTTP API after generated input: an event whose name, channel or socket id is not a string is refused
by its kind. The 400 showed the value's ``repr``, as long as the JSON it came in (a list nested 900 deep came back as
1,800 brackets), and one nested as deeply as the parser reads raised RecursionError where it was checked a few calls
deeper than it was parsed. A real emulator on an ephemeral port (tests/conftest.py)."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from relay.protocol.signing import sign_rest_request
from tests.conftest import RunningEmulator

NESTED = json.loads("[" * 900 + "]" * 900)
EVENT = {"name": "e", "channel": "room", "data": "x"}


async def post(emulator: RunningEmulator, path: str, body: object) -> httpx.Response:
    raw = json.dumps(body).encode()
    app = emulator.app
    query = sign_rest_request(app.key, app.secret, "POST", path, timestamp=int(time.time()), body=raw)
    async with httpx.AsyncClient(timeout=5.0) as http:
        return await http.post(
            emulator.http_url + path, params=query, content=raw, headers={"Content-Type": "application/json"}
        )


@pytest.mark.parametrize(
    ("field", "error"),
    [
        ("name", "event name must be a non-empty string, got a list"),
        ("channel", "channel name must be a non-empty string, got a list"),
        ("channels", "channel name must be a non-empty string, got a list"),
        ("socket_id", "invalid socket_id (a list): expected digits '.' digits, such as '1234.5678'"),
    ],
)
async def test_a_nested_list_for_a_name_or_socket_id_is_refused_by_its_kind(
    emulator: RunningEmulator, field: str, error: str
) -> None:
    event = {**EVENT, field: [NESTED] if field == "channels" else NESTED}
    if field == "channels":
        del event["channel"]
    answer = await post(emulator, f"/apps/{emulator.app.app_id}/events", event)
    assert (answer.status_code, answer.json()) == (400, {"error": error})
    batch = await post(emulator, f"/apps/{emulator.app.app_id}/batch_events", {"batch": [EVENT, event]})
    if field != "channels":  # a batch event has one channel
        assert (batch.status_code, batch.json()) == (400, {"error": f"batch[1]: {error}"})
    # and the emulator goes on serving
    published = await post(emulator, f"/apps/{emulator.app.app_id}/events", EVENT)
    assert (published.status_code, published.json()) == (200, {})
