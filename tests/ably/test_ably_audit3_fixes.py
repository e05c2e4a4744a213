"""Fixes from a third audit of the emulator's Ably side, checked with the clients that showed them (ably-js 2.28,
ably-python) and on the wire:

- an app's ``api_rate_limit`` limited the Pusher HTTP API only: Ably's REST API (publish, requestToken, …) of the same
  app now spends the same budget and is refused with Ably's 42910 (429, ``Retry-After``);
- a publish or presence outside the modes an ATTACH requested was 40160 (capability); it is Ably's 40165;
- ``requestToken`` with ``clientId: ""`` issued a token with an empty client id; it is 40012, as ably-js and Ably say;
- ATTACHED carries a ``channelSerial``, so ably-js's ``history({untilAttach: true})`` reaches the REST API (now
  answered: tests/ably/test_ably_history.py) instead of failing in the SDK with a 40000 that blames the attach;
- docs/ably.md: channel params other than rewind and occupancy are accepted and dropped, and names with ``:`` are
  the gateway's to refuse.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import re
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from ably import AblyException, AblyRest  # type: ignore[import-untyped]
from ablysupport import (
    ACK,
    API_KEY,
    APP,
    ATTACHED,
    KEY_NAME,
    KEY_SECRET,
    MESSAGE,
    NACK,
    ably_wire,
    jwt_token,
    run_node,
)

from relay.emulator.config import App
from relay.protocol.ably import build_token_request
from tests.conftest import RunningEmulator, StartEmulator
from tests.operations.support import api

ROOT = Path(__file__).parents[2]
ABLY_DOC = (ROOT / "docs" / "ably.md").read_text()
BASIC = {"Authorization": "Basic " + base64.b64encode(API_KEY.encode()).decode()}
OTHER = App(app_id="2", key="other-key", secret="other-secret")
OTHER_BASIC = {"Authorization": "Basic " + base64.b64encode(b"2.other-key:other-secret").decode()}


def refusal_message(app_id: str, rate: str, retry_after: str) -> str:
    return (
        f"Rate limit exceeded; request rejected (nonfatal); metric = api_rate_limit: app '{app_id}' allows {rate} "
        f"HTTP API requests a second, Pusher and Ably REST together; retry in {retry_after} s"
    )


def assert_rate_limited(response: httpx.Response, app_id: str = "1", rate: str = "0.5") -> None:
    """Ably's 42910 (status 429) in Ably's error format, with ``Retry-After`` (at 0.5 a second, one request every two
    seconds: 1 or 2 seconds to wait, depending on how long ago the budget was spent)."""
    assert response.status_code == 429, response.text
    retry_after = response.headers["retry-after"]
    assert 1 <= int(retry_after) <= math.ceil(1 / float(rate)), retry_after
    message = refusal_message(app_id, rate, retry_after)
    assert response.json() == {
        "error": {
            "code": 42910,
            "statusCode": 429,
            "message": message,
            "href": "https://help.ably.io/error/42910",
        }
    }
    assert response.headers["x-ably-errorcode"] == "42910"
    assert response.headers["x-ably-errormessage"] == message
    assert "Retry-After" in response.headers["access-control-expose-headers"]  # a page's ably-js may read it


def signed_token_request(**fields: Any) -> dict[str, object]:
    return build_token_request(
        KEY_NAME, KEY_SECRET, timestamp=int(time.time() * 1000), nonce=f"nonce-{time.time_ns()}", **fields
    )


# -- A. api_rate_limit on Ably's REST API ---------------------------------------------------------------------


async def test_ably_rest_spends_the_api_rate_limit_the_pusher_api_spends(
    start_emulator: StartEmulator, wires: list[Any]
) -> None:
    """One budget per app: an Ably publish spends what the Pusher HTTP API then lacks (Pusher's 429) and the other
    way round; over it, Ably's REST answers 42910 (429) with ``Retry-After``. Forged credentials, ``/time`` and
    preflights spend nothing; a signed TokenRequest refused for the limit keeps its nonce (the same one is exchanged
    once the budget refills); another app and the realtime connections of this one are served throughout."""
    app = replace(APP, api_rate_limit=0.2)  # one request every five seconds, bursts of one: room for a slow machine
    running = await start_emulator(app=app, apps=(OTHER,))
    realtime = await ably_wire(running)
    wires.append(realtime)
    await realtime.attach("room")
    async with httpx.AsyncClient(base_url=running.http_url, headers={"X-Ably-Version": "6"}) as http:
        wrong = {"Authorization": "Basic " + base64.b64encode(f"{KEY_NAME}:wrong".encode()).decode()}
        for _ in range(3):
            assert (await http.post("/channels/room/messages", json={"name": "x"}, headers=wrong)).status_code == 401
            forged = {**signed_token_request(), "mac": "AAAA"}
            assert (await http.post(f"/keys/{KEY_NAME}/requestToken", json=forged)).status_code == 401
            assert (await http.get("/time")).status_code == 200
            assert (await http.options("/channels/room/messages")).status_code == 204
        assert (await http.post("/channels/room/messages", json={"name": "first"}, headers=BASIC)).status_code == 201
        assert (await realtime.expect(MESSAGE))["messages"][0]["name"] == "first"

        assert_rate_limited(await http.post("/channels/room/messages", json={"name": "x"}, headers=BASIC), rate="0.2")
        assert_rate_limited(await http.get("/channels/room", headers=BASIC), rate="0.2")
        unsigned = await http.post(f"/keys/{KEY_NAME}/requestToken", json={"keyName": KEY_NAME}, headers=BASIC)
        assert_rate_limited(unsigned, rate="0.2")
        kept = signed_token_request(client_id="kept")
        assert_rate_limited(await http.post(f"/keys/{KEY_NAME}/requestToken", json=kept), rate="0.2")
        pusher = await api(running.http_url, app, "GET", "/apps/1/channels")
        assert pusher.status_code == 429 and "rate limit of 0.2 requests per second" in pusher.json()["error"]

        # Served meanwhile: the other app's REST, and this app's realtime publishes.
        for _ in range(3):
            other = await http.post("/channels/room/messages", json={"name": "o"}, headers=OTHER_BASIC)
            assert other.status_code == 201
        serial = await realtime.publish("room", {"name": "realtime"})
        assert (await realtime.expect(MESSAGE))["messages"][0]["name"] == "realtime"
        assert (await realtime.expect(ACK))["msgSerial"] == serial

        await asyncio.sleep(5.05)
        exchanged = await http.post(f"/keys/{KEY_NAME}/requestToken", json=kept)  # its nonce was not used up
        assert exchanged.status_code == 200 and exchanged.json()["clientId"] == "kept"
        assert_rate_limited(await http.post("/channels/room/messages", json={"name": "x"}, headers=BASIC), rate="0.2")

        await asyncio.sleep(5.05)
        assert (await api(running.http_url, app, "GET", "/apps/1/channels")).status_code == 200  # Pusher spends it
        assert_rate_limited(await http.post("/channels/room/messages", json={"name": "x"}, headers=BASIC), rate="0.2")
    assert running.node.ops.metrics.http_responses["429"] == 7


async def test_ably_rest_of_an_app_without_a_limit_is_never_refused(ably_emulator: RunningEmulator) -> None:
    """No ``api_rate_limit``, no refusal (and no budget consulted): 60 publishes and token requests back to back."""
    async with httpx.AsyncClient(base_url=ably_emulator.http_url) as http:
        for index in range(30):
            published = await http.post("/channels/room/messages", json={"name": str(index)}, headers=BASIC)
            assert published.status_code == 201
            token = await http.post(f"/keys/{KEY_NAME}/requestToken", json=signed_token_request())
            assert token.status_code == 200
    assert "429" not in ably_emulator.node.ops.metrics.http_responses


async def test_ably_js_rest_past_the_rate_limit_gets_42910(start_emulator: StartEmulator) -> None:
    """ably-js: of ten publishes at once, one goes and nine reject with 42910/429 and Ably's message; requestToken
    too, and pusher-http-node's trigger (same budget) gets 429. The realtime connection keeps publishing, a client
    whose token exchange is refused goes DISCONNECTED (80019 caused by the 42910) and connects when the budget
    refills; then REST publishes again."""
    running = await start_emulator(app=replace(APP, api_rate_limit=0.2))
    run = await run_node("ably_js_rate_limit.mjs", running, limit_s=40)
    assert run.summary["checks"] == ["rest-refused-42910", "realtime-unaffected", "token-exchange-retried", "refilled"]


async def test_ably_python_rest_past_the_rate_limit_gets_42910(start_emulator: StartEmulator) -> None:
    """ably-python (``use_token_auth``: its token exchange is the app's one request for five seconds) raises
    AblyException 42910/429 for the publish that follows."""
    running = await start_emulator(app=replace(APP, api_rate_limit=0.2))
    rest = AblyRest(key=API_KEY, endpoint="127.0.0.1", port=running.port, tls=False, use_token_auth=True)
    try:
        with pytest.raises(AblyException) as refused:
            await rest.channels.get("room").publish("n", "d")
        assert (refused.value.code, refused.value.status_code) == (42910, 429)
        assert refused.value.message in [refusal_message("1", "0.2", str(seconds)) for seconds in range(1, 6)]
    finally:
        await rest.close()


# -- B. 40165: a mode the ATTACH did not request ----------------------------------------------------------------


async def test_operations_outside_the_requested_modes_are_40165(
    ably_emulator: RunningEmulator, wires: list[Any]
) -> None:
    """Ably's 40165 (401) when the capability allows the operation but the ATTACH did not request its mode; 40160
    when the capability does not allow it (whatever was requested). The connection and the channel stay."""
    wire = await ably_wire(ably_emulator, f"key={API_KEY}&clientId=sam")
    token = jwt_token({"room": ["subscribe", "presence"]}, client_id="ro")
    limited = await ably_wire(ably_emulator, f"access_token={token}")
    wires += [wire, limited]
    subscribe_only = 1 << 18
    assert (await wire.attach("room", flags=subscribe_only))["flags"] == subscribe_only
    serial = await wire.publish("room", {"name": "n", "data": "d"})
    nack = await wire.expect(NACK)
    assert nack["msgSerial"] == serial
    assert nack["error"] == {
        "code": 40165,
        "statusCode": 401,
        "message": "Unable to publish to 'room': the client did not request the PUBLISH mode when attaching",
        "href": "https://help.ably.io/error/40165",
    }
    serial = await wire.presence("room", {"action": 2, "data": "here"})
    nack = await wire.expect(NACK)
    assert (nack["msgSerial"], nack["error"]["code"], nack["error"]["statusCode"]) == (serial, 40165, 401)
    expected = "Unable to use presence on 'room': the client did not request the PRESENCE mode when attaching"
    assert nack["error"]["message"] == expected

    await limited.attach("room", flags=subscribe_only)  # neither publish allowed nor PUBLISH requested: capability
    serial = await limited.publish("room", {"name": "n", "data": "d"})
    nack = await limited.expect(NACK)
    assert (nack["msgSerial"], nack["error"]["code"], nack["error"]["statusCode"]) == (serial, 40160, 401)
    expected = "Unable to publish to 'room': not permitted by the capability (it needs 'publish' on the channel)"
    assert nack["error"]["message"] == expected
    serial = await limited.publish("elsewhere", {"name": "n"})  # not attached: the capability decides
    assert (await limited.expect(NACK))["error"]["code"] == 40160

    everything = await wire.attach("room")  # attaching again with the default modes fixes it
    assert everything["flags"] == 983_040
    serial = await wire.publish("room", {"name": "fixed", "data": "d"})
    assert (await wire.expect(MESSAGE))["messages"][0]["name"] == "fixed"
    assert (await wire.expect(ACK))["msgSerial"] == serial
    await limited.ping("still-connected")


# -- E. ATTACHED's channelSerial; the rest with ably-js ---------------------------------------------------------


async def test_attached_carries_a_channel_serial(ably_emulator: RunningEmulator, wires: list[Any]) -> None:
    """ATTACHED has a ``channelSerial`` of the form messages carry (16 hex digits): the app's newest, so the next
    message's is greater; an ATTACH sending one back is answered all the same, with the newest again (at least the
    last message's: delivering a message takes a serial too, for resumes)."""
    wire = await ably_wire(ably_emulator)
    wires.append(wire)
    attached = await wire.attach("room")
    assert re.fullmatch(r"[0-9a-f]{16}", attached["channelSerial"]), attached
    await wire.publish("room", {"name": "n"})
    message = await wire.expect(MESSAGE)
    assert message["channelSerial"] > attached["channelSerial"]
    await wire.expect(ACK)
    again = await wire.attach("room", channelSerial=message["channelSerial"])
    assert again["action"] == ATTACHED and again["channelSerial"] >= message["channelSerial"]
    await wire.publish("room", {"name": "n"})
    assert (await wire.expect(MESSAGE))["channelSerial"] > again["channelSerial"]
    await wire.expect(ACK)


async def test_ably_js_modes_until_attach_and_an_empty_client_id(ably_emulator: RunningEmulator) -> None:
    """ably-js: 40165 for a publish and a presence enter outside the requested modes (channel and connection stay;
    ``setOptions`` with the modes fixes it), 40160 where the capability lacks publish; a renewal with a narrower
    capability changes ``channel.modes`` at once and keeps presence and attach serial; ``history({untilAttach:
    true})`` gives what was published before the attach only (it was a 40000 from the SDK: no attachSerial); a
    backend's TokenRequest with ``clientId: ""`` is refused with 40012."""
    request = signed_token_request(client_id="")
    run = await run_node(
        "ably_js_modes_history.mjs", ably_emulator, env={"ABLY_EMPTY_CLIENT_ID_REQUEST": json.dumps(request)}
    )
    assert run.summary["checks"] == [
        "mode-not-requested-40165",
        "attach-with-the-mode",
        "capability-40160",
        "narrowed-modes-shown",
        "until-attach",
        "empty-client-id-40012",
    ]


# -- D. clientId "" -----------------------------------------------------------------------------------------------


async def test_request_token_refuses_an_empty_client_id(ably_emulator: RunningEmulator) -> None:
    """A client id is "any non-empty string": ``clientId: ""`` is 40012 (400), unsigned (Basic auth) or signed (whose
    MAC is that of no clientId: the same TokenRequest without it is an anonymous token, as before)."""
    message = "Invalid clientId: it can't be an empty string; omit it for an anonymous token"
    async with httpx.AsyncClient(base_url=ably_emulator.http_url) as http:
        for body, headers in (
            ({"keyName": KEY_NAME, "clientId": ""}, BASIC),
            (signed_token_request(client_id=""), {}),
        ):
            refused = await http.post(f"/keys/{KEY_NAME}/requestToken", json=body, headers=headers)
            assert refused.status_code == 400, refused.text
            assert refused.json()["error"] == {
                "code": 40012,
                "statusCode": 400,
                "message": message,
                "href": "https://help.ably.io/error/40012",
            }
            assert refused.headers["x-ably-errorcode"] == "40012"
        anonymous = signed_token_request(client_id="")
        del anonymous["clientId"]
        issued = await http.post(f"/keys/{KEY_NAME}/requestToken", json=anonymous)
        assert issued.status_code == 200 and "clientId" not in issued.json()
        named = await http.post(
            f"/keys/{KEY_NAME}/requestToken", json={"keyName": KEY_NAME, "clientId": "x"}, headers=BASIC
        )
        assert named.status_code == 200 and named.json()["clientId"] == "x"


# -- C, E, F and A: the docs ----------------------------------------------------------------------------------------


def test_docs_say_what_is_dropped_and_how_a_gap_is_filled() -> None:
    """docs/ably.md: channel params other than rewind, occupancy and modes (delta) accepted and dropped, with what
    ``channel.params`` shows; Ably's untilAttach recovery answered from history; ``:`` names and the gateway's rules;
    40165 and 42910 are named. The api_rate_limit lines of the other docs say the Ably REST API shares the budget."""
    not_emulated = " ".join(ABLY_DOC.split("## Not emulated", 1)[1].split())
    assert "delta" in not_emulated
    assert "other than `rewind` (with `rewindLimit`), `occupancy` and `modes`" in not_emulated
    assert "accepted and dropped" in not_emulated and "`channel.params` holds only `rewind`" in not_emulated
    assert (
        "untilAttach" in not_emulated
        and "80008" in not_emulated
        and "answers from the emulator's history" in not_emulated
    )
    assert "(gateway.md#channel-rules)" in ABLY_DOC
    assert "40165" in ABLY_DOC and "42910" in ABLY_DOC
    for name in ("emulator.md", "configuration.md", "security.md"):
        text = (ROOT / "docs" / name).read_text()
        lines = [line for line in text.splitlines() if "api_rate_limit" in line or "HTTP API floods" in line]
        assert any("Ably" in line for line in lines), (name, lines)
