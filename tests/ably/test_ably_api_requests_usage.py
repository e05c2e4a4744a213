"""The usage meter counts Ably's REST requests other than publishes (``ably_api_requests``): history, presence,
channel status and enumeration were served without being metered, so a workload that reads over REST came to
`relay cost` with none of the HTTP API requests Ably limits (Free: 25,000 an hour, 50 a second). A request counts
once it authenticated as the app and was admitted under its ``api_rate_limit``, whatever its answer; a publish
(``http_publishes``), a token request (Ably limits those apart), ``GET /time`` (no credentials: no app's) and a
request that did not authenticate do not. Pusher's ``api_requests`` stays the Pusher HTTP API's."""

from __future__ import annotations

import base64
from dataclasses import replace

import httpx
from ably import AblyRest  # type: ignore[import-untyped]
from ablysupport import API_KEY, APP, KEY_NAME

from relay.emulator.usage import DayUsage
from tests.ably.test_ably_audit3_fixes import (
    BASIC,
    OTHER,
    OTHER_BASIC,
    assert_rate_limited,
    signed_token_request,
)
from tests.conftest import RunningEmulator, StartEmulator, whole_run


def usage(running: RunningEmulator, app_id: str) -> DayUsage:
    run: DayUsage = whole_run(running.node.states[app_id].meter.days())
    return run


async def test_ably_rest_reads_are_metered_as_api_requests(start_emulator: StartEmulator) -> None:
    """ably-python (token auth, as it must without TLS) publishes once and reads the channel's history, presence and
    status, and asks the time: 3 API requests. Its token request and publish are not among them (the publish is an
    HTTP publish), nor is /time; the Pusher count of API calls stays 0."""
    running = await start_emulator(app=APP)
    rest = AblyRest(key=API_KEY, endpoint="127.0.0.1", port=running.port, tls=False, use_token_auth=True)
    try:
        channel = rest.channels.get("room")
        await channel.publish("greeting", "hello")
        assert [message.name for message in (await channel.history()).items] == ["greeting"]
        assert (await channel.presence.get()).items == []
        assert (await channel.status()).channel_id == "room"
        assert await rest.time() > 0
    finally:
        await rest.close()
    day = usage(running, "1")
    assert (day.ably_api_requests, day.http_publishes, day.api_requests) == (3, 1, 0)
    assert day.pusher_messages == 1  # the publish; Pusher has nothing to bill for Ably's reads


async def test_refused_requests_count_only_once_authenticated_and_admitted(start_emulator: StartEmulator) -> None:
    """Counted: a capability refusal (40160) and a bad parameter (40003) of an authenticated request, and channel
    enumeration and batch presence. Not counted: wrong credentials (401), a token request (signed or not), a batch
    publish, an unknown route and the unemulated /stats (nothing served), and a request refused over the app's
    api_rate_limit (42910), whose budget the one before it spent."""
    limited = replace(OTHER, api_rate_limit=0.2)  # bursts of one, then one request every five seconds
    running = await start_emulator(app=APP, apps=(limited,))
    wrong = {"Authorization": "Basic " + base64.b64encode(f"{KEY_NAME}:wrong".encode()).decode()}
    async with httpx.AsyncClient(base_url=running.http_url, headers={"X-Ably-Version": "6"}) as http:
        assert (await http.get("/channels/room/messages", headers=wrong)).status_code == 401
        token = await http.post(
            f"/keys/{KEY_NAME}/requestToken",
            json={"keyName": KEY_NAME, "capability": '{"lobby":["subscribe"]}'},
            headers=BASIC,
        )
        assert token.status_code == 200, token.text
        assert (await http.post(f"/keys/{KEY_NAME}/requestToken", json=signed_token_request())).status_code == 200
        bearer = {"Authorization": "Bearer " + base64.b64encode(token.json()["token"].encode()).decode()}
        refused = await http.get("/channels/room/messages", headers=bearer)
        assert refused.status_code == 401 and refused.json()["error"]["code"] == 40160, refused.text
        bad = await http.get("/channels/room/messages", params={"limit": "0"}, headers=BASIC)
        assert bad.status_code == 400 and bad.json()["error"]["code"] == 40003, bad.text
        assert (await http.get("/channels", headers=BASIC)).status_code == 200
        assert (await http.get("/presence", params={"channels": "room,lobby"}, headers=BASIC)).status_code == 200
        batch = await http.post(
            "/messages", json={"channels": ["room", "lobby"], "messages": {"name": "x"}}, headers=BASIC
        )
        assert batch.status_code == 201, batch.text
        assert (await http.get("/stats", headers=BASIC)).status_code == 404
        assert (await http.get("/channels/room/nothing", headers=BASIC)).status_code == 404

        assert (await http.get("/channels/room", headers=OTHER_BASIC)).status_code == 200
        assert_rate_limited(await http.get("/channels/room", headers=OTHER_BASIC), app_id="2", rate="0.2")
    day = usage(running, "1")
    assert (day.ably_api_requests, day.http_publishes, day.api_requests) == (4, 2, 0)
    assert usage(running, "2").ably_api_requests == 1
