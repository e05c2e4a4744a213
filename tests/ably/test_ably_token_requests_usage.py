"""The usage meter counts Ably's token requests (``ably_token_requests``): a client that authenticates with
``authUrl`` or ``authCallback`` exchanges a TokenRequest for a token as it connects and each time its token expires,
and Ably limits those requests an hour and a second (Free: 60,000 and 50), apart from its HTTP API requests. They were
served without being metered, so `relay cost` could not check those limits. A token request counts once it
authenticated (with the key, or by a TokenRequest's MAC, which only a token issued proves) and was admitted under the
app's ``api_rate_limit``."""

from __future__ import annotations

import base64
from dataclasses import replace
from typing import Any

import httpx
from ably import AblyRest  # type: ignore[import-untyped]
from ablysupport import API_KEY, APP, KEY_NAME

from tests.ably.test_ably_api_requests_usage import usage
from tests.ably.test_ably_audit3_fixes import BASIC, OTHER, OTHER_BASIC, assert_rate_limited, signed_token_request
from tests.conftest import StartEmulator
from tests.operations.test_metrics import scrape


async def test_each_client_that_authenticates_with_an_auth_callback_makes_one(start_emulator: StartEmulator) -> None:
    """The backend signs TokenRequests with the key (no request to Ably); each of two ably-python clients exchanges
    its own for a token before its first request (ably-python's realtime client cannot: docs/ably.md, so REST
    clients here): 2 token requests, and their 2 channel status reads are the API requests; /metrics counts both."""
    running = await start_emulator(app=APP)
    backend = AblyRest(key=API_KEY, endpoint="127.0.0.1", port=running.port, tls=False)
    clients: list[Any] = []

    async def sign(params: Any) -> Any:
        return await backend.auth.create_token_request({"client_id": f"user-{len(clients)}"})

    try:
        for _ in range(2):
            client = AblyRest(auth_callback=sign, endpoint="127.0.0.1", port=running.port, tls=False)
            clients.append(client)
            assert (await client.channels.get("room").status()).channel_id == "room"
        assert [client.auth.client_id for client in clients] == ["user-1", "user-2"]
    finally:
        for client in clients:
            await client.close()
        await backend.close()
    day = usage(running, "1")
    assert (day.ably_token_requests, day.ably_api_requests, day.http_publishes) == (2, 2, 0)
    samples, _ = await scrape(running.http_url)
    assert samples[("relay_ably_token_requests_total", (("app_id", "1"),))] == 2
    assert samples[("relay_ably_api_requests_total", (("app_id", "1"),))] == 2


async def test_a_token_request_counts_once_authenticated_and_admitted(start_emulator: StartEmulator) -> None:
    """Counted: a signed TokenRequest exchanged, one made with the key (Basic auth), and one made with the key and
    refused for what it asks (a clientId that is not a string, 40012). Not counted: wrong key credentials (40101), a
    forged MAC (40101), an unsigned TokenRequest without credentials (40101), and another app's request refused over
    its api_rate_limit (42910), whose budget the one before it spent."""
    limited = replace(OTHER, api_rate_limit=0.2)  # bursts of one, then one request every five seconds
    running = await start_emulator(app=APP, apps=(limited,))
    path = f"/keys/{KEY_NAME}/requestToken"
    wrong = {"Authorization": "Basic " + base64.b64encode(f"{KEY_NAME}:wrong".encode()).decode()}
    async with httpx.AsyncClient(base_url=running.http_url, headers={"X-Ably-Version": "6"}) as http:
        assert (await http.post(path, json=signed_token_request())).status_code == 200
        assert (await http.post(path, json={"keyName": KEY_NAME}, headers=BASIC)).status_code == 200
        refused = await http.post(path, json={"keyName": KEY_NAME, "clientId": 7}, headers=BASIC)
        assert (refused.status_code, refused.json()["error"]["code"]) == (400, 40012), refused.text
        for answer in (
            await http.post(path, json={"keyName": KEY_NAME}, headers=wrong),
            await http.post(path, json={**signed_token_request(), "mac": "AAAA"}),
            await http.post(path, json={"keyName": KEY_NAME}),
        ):
            assert (answer.status_code, answer.json()["error"]["code"]) == (401, 40101), answer.text

        other = "/keys/2.other-key/requestToken"
        assert (await http.post(other, json={"keyName": "2.other-key"}, headers=OTHER_BASIC)).status_code == 200
        assert_rate_limited(
            await http.post(other, json={"keyName": "2.other-key"}, headers=OTHER_BASIC), app_id="2", rate="0.2"
        )
        assert (await http.get("/channels/room", headers=BASIC)).status_code == 200  # served throughout
    day = usage(running, "1")
    assert (day.ably_token_requests, day.ably_api_requests) == (3, 1)
    assert usage(running, "2").ably_token_requests == 1
