"""The Ably REST subset with a plain HTTP client (httpx), for what the SDKs hide: Ably's error format (body and
``X-Ably-Error*`` headers) and codes, Basic and Bearer auth, TokenRequest checks, msgpack negotiation, protocol v1
shapes, pagination, CORS, and bad input answered without disturbing other requests (reference §A)."""

from __future__ import annotations

import base64
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import msgpack  # type: ignore[import-untyped]
import pytest
from ablysupport import ACK, API_KEY, KEY_NAME, KEY_SECRET, MESSAGE, NACK, ably_wire, jwt_token, page_links

from relay.emulator.ably_auth import NONCE_KEPT_MS, AblyAuth, AblyError, AblyKey
from relay.protocol.ably import TIMESTAMP_WINDOW_MS, build_token_request
from tests.conftest import RunningEmulator

BASIC = {"Authorization": "Basic " + base64.b64encode(API_KEY.encode()).decode()}


@pytest.fixture
async def http(ably_emulator: RunningEmulator) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=ably_emulator.http_url, headers={"X-Ably-Version": "6"}) as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": "Bearer " + base64.b64encode(token.encode()).decode()}


def assert_ably_error(response: httpx.Response, status: int, code: int, fragment: str = "") -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert (error["code"], error["statusCode"]) == (code, status)
    assert fragment in error["message"]
    assert error["href"] == f"https://help.ably.io/error/{code}"
    assert response.headers["x-ably-errorcode"] == str(code)
    assert response.headers["x-ably-errormessage"]


async def test_time_needs_no_auth(http: httpx.AsyncClient) -> None:
    """§A.9: ``GET /time`` is ``[ms]`` without credentials."""
    response = await http.get("/time")
    [now] = response.json()
    assert response.status_code == 200 and abs(now - time.time() * 1000) < 5_000


@pytest.mark.parametrize(
    ("headers", "code", "fragment"),
    [
        ({}, 40101, "Authentication required"),
        ({"Authorization": "Basic " + base64.b64encode(b"1.app-key:nope").decode()}, 40101, "wrong key secret"),
        ({"Authorization": "Basic !!!"}, 40101, "base64"),
        ({"Authorization": "Digest abc"}, 40101, "Unsupported Authorization scheme"),
        (bearer("garbage"), 40144, "Invalid"),
        (bearer(jwt_token(issued_at=1_000_000, ttl_s=60)), 40142, "expired"),
        (bearer(jwt_token(key_name="9.other", ttl_s=86_400)), 40101, "no app has the Ably key name"),
    ],
    ids=["none", "wrong-secret", "not-base64", "scheme", "garbage-token", "expired-jwt", "unknown-kid"],
)
async def test_auth_failures(http: httpx.AsyncClient, headers: dict[str, str], code: int, fragment: str) -> None:
    """§A.2: Basic with the key (accepted over plain HTTP by the emulator) or Bearer base64(token); failures are 401
    with Ably's code, and the next request is served."""
    response = await http.post("/channels/room/messages", json={"name": "n"}, headers=headers)
    assert_ably_error(response, 401, code, fragment)
    ok = await http.post("/channels/room/messages", json={"name": "n"}, headers=BASIC)
    assert ok.status_code == 201


async def test_jwt_with_an_empty_client_id_is_refused(http: httpx.AsyncClient) -> None:
    """A client id is a non-empty string: a JWT claiming ``x-ably-clientId: ""`` (neither anonymous nor an identity)
    is 40012, as a TokenRequest with ``clientId: ""`` is."""
    response = await http.post("/channels/room/messages", json={"name": "n"}, headers=bearer(jwt_token(client_id="")))
    assert_ably_error(response, 400, 40012, "x-ably-clientId can't be an empty string")
    ok = await http.post("/channels/room/messages", json={"name": "n"}, headers=BASIC)
    assert ok.status_code == 201


async def test_a_body_over_the_limit_is_refused_in_ablys_format(
    http: httpx.AsyncClient, ably_emulator: RunningEmulator
) -> None:
    """A body over ``max_request_bytes`` (1 MiB) is refused before it is read whole, as on the Pusher API, but on
    Ably's paths in Ably's error format (status 413, code 40009, ``X-Ably-Error*`` headers): ably-js and ably-python
    read that, where the Pusher API's ``{"error": "..."}`` left them only the raw body. The Pusher API's answer is
    unchanged, and the next request is served."""
    limit = ably_emulator.node.config.max_request_bytes
    body = b'{"name": "n", "data": "' + b"x" * limit + b'"}'
    refused = await http.post(
        "/channels/room/messages", content=body, headers={**BASIC, "Content-Type": "application/json"}
    )
    assert_ably_error(refused, 413, 40009, f"request body is over {limit} bytes")
    assert refused.headers["x-ably-errorcode"] == "40009"
    pusher = await http.post("/apps/1/events", content=body, headers={"Content-Type": "application/json"})
    assert (pusher.status_code, pusher.json()) == (413, {"error": f"request body is over {limit} bytes"})
    ok = await http.post("/channels/room/messages", json={"name": "n"}, headers=BASIC)
    assert ok.status_code == 201


async def test_publish_shapes_and_idempotency(
    http: httpx.AsyncClient, ably_emulator: RunningEmulator, wires: list[Any]
) -> None:
    """§A.3: one object or an array; ``{channel, messageId, serials}``; unknown fields ignored; a repeat of the same
    ids within the window answers the same serials and is not delivered again; a raw JSON object becomes
    ``encoding: json``; the X-Ably-ClientId header identifies a Basic-auth client (40012 on a mismatch)."""
    wire = await ably_wire(ably_emulator)
    wires.append(wire)
    await wire.attach("room")
    body = [{"name": "a", "data": {"k": 1}, "id": "abc:0", "size": 9, "action": 0}, {"name": "b", "id": "abc:1"}]
    first = await http.post("/channels/room/messages", json=body, headers=BASIC)
    assert first.status_code == 201
    assert first.json() == {"channel": "room", "messageId": "abc", "serials": first.json()["serials"]}
    again = await http.post("/channels/room/messages", json=body, headers=BASIC)
    assert again.json() == first.json()
    delivered = await wire.expect(MESSAGE)
    serial = first.json()["serials"][0]  # each message carries the serial the publish answered with, as on Ably
    assert delivered["messages"][0] == {
        "name": "a",
        "data": '{"k":1}',
        "encoding": "json",
        "id": "abc:0",
        "action": 0,
        "serial": serial,
    }
    await http.post("/channels/room/messages", json={"name": "marker"}, headers=BASIC)
    assert (await wire.expect(MESSAGE))["messages"][0]["name"] == "marker"

    bad_ids = await http.post("/channels/room/messages", json=[{"id": "x:0"}, {"id": "y:1"}], headers=BASIC)
    assert_ably_error(bad_ids, 400, 40031)
    as_ivy = {**BASIC, "X-Ably-ClientId": base64.b64encode(b"ivy").decode()}
    mismatch = await http.post("/channels/room/messages", json={"clientId": "eve"}, headers=as_ivy)
    assert_ably_error(mismatch, 400, 40012)
    assert (await http.post("/channels/room/messages", json={"name": "n"}, headers=as_ivy)).status_code == 201
    assert (await wire.expect(MESSAGE))["messages"][0]["clientId"] == "ivy"


async def test_unenveloped_and_form_encoded_publishes_are_refused_as_not_emulated(
    http: httpx.AsyncClient, ably_emulator: RunningEmulator, wires: list[Any]
) -> None:
    """docs/ably.md lists them as not emulated, but ``?enveloped=false`` was read as Message objects: a webhook's
    ``{"status": "shipped"}`` under ``X-Ably-Name`` got a 201 and every subscriber an empty message. Both are 40000
    saying so, nothing is published, and the next publish is delivered."""
    wire = await ably_wire(ably_emulator)
    wires.append(wire)
    await wire.attach("hook")
    unenveloped = await http.post(
        "/channels/hook/messages?enveloped=false",
        json={"status": "shipped", "order": 42},
        headers={**BASIC, "X-Ably-Name": "order-update"},
    )
    assert_ably_error(unenveloped, 400, 40000)
    assert unenveloped.json()["error"]["message"] == (
        'Unenveloped publishes (enveloped=false) are not emulated: send Message objects, {"name": …, "data": …}, '
        "as JSON or msgpack"
    )
    form = await http.post("/channels/hook/messages", data={"name": "order-update", "data": "shipped"}, headers=BASIC)
    assert_ably_error(form, 400, 40000)
    assert form.json()["error"]["message"] == (
        "Form-encoded publishes are not emulated: send Message objects as JSON or msgpack"
    )
    mixed_case = await http.post(
        "/channels/hook/messages",
        content=b"name=order-update&data=shipped",
        headers={**BASIC, "Content-Type": "Application/X-WWW-Form-Urlencoded; charset=UTF-8"},
    )
    assert (mixed_case.status_code, mixed_case.json()["error"]["message"]) == (400, form.json()["error"]["message"])
    history = await http.get("/channels/hook/messages", headers=BASIC)
    assert history.json() == []
    assert (await http.post("/channels/hook/messages", json={"name": "after"}, headers=BASIC)).status_code == 201
    assert (await wire.expect(MESSAGE))["messages"][0]["name"] == "after"


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code"),
    [
        (b"{not json", "application/json", 400, 40000),
        (b"\xc1", "application/x-msgpack", 400, 40000),
        (b"", "application/json", 400, 40000),
        (b"[]", "application/json", 400, 40000),
        (b'{"name": 5}', "application/json", 400, 40016),
        (b'{"data": true}', "application/json", 400, 40013),
        (b'{"extras": []}', "application/json", 400, 40000),
        (b'{"data": "' + b"x" * 70_000 + b'"}', "application/json", 413, 40009),
        (b'{"name": "\\ud800"}', "application/json", 400, 40000),
        (b"[" * 100_000 + b"]" * 100_000, "application/json", 400, 40000),
        (msgpack.packb({"data": msgpack.ExtType(1, b"x")}), "application/x-msgpack", 400, 40013),
    ],
    ids=["json", "msgpack", "empty", "no-messages", "name", "data", "extras", "too-large", "surrogate", "deep", "ext"],
)
async def test_bad_publish_bodies(
    http: httpx.AsyncClient,
    ably_emulator: RunningEmulator,
    wires: list[Any],
    body: bytes,
    content_type: str,
    status: int,
    code: int,
) -> None:
    """A refused body reaches no subscriber, and the next valid publish does."""
    wire = await ably_wire(ably_emulator)
    wires.append(wire)
    await wire.attach("room")
    response = await http.post("/channels/room/messages", content=body, headers={**BASIC, "Content-Type": content_type})
    assert_ably_error(response, status, code)
    assert (await http.post("/channels/room/messages", json={"name": "after"}, headers=BASIC)).status_code == 201
    delivered = await wire.expect(MESSAGE)
    assert [message["name"] for message in delivered["messages"]] == ["after"], delivered


async def test_routes_and_channel_names(http: httpx.AsyncClient) -> None:
    """Unknown Ably paths are 40400, a wrong method 40500, metachannels and Pusher's per-user channels are not Ably
    channel names (40010); a preflight is answered with CORS headers."""
    assert_ably_error(await http.get("/stats/x", headers=BASIC), 404, 40400, "Stats are not emulated")
    wrong_method = await http.get("/messages", headers=BASIC)
    assert_ably_error(wrong_method, 405, 40500, "/messages accepts POST only")
    assert wrong_method.headers["allow"] == "POST, OPTIONS"  # RFC 9110 §15.5.6
    assert_ably_error(await http.get("/keys/x/nothing", headers=BASIC), 404, 40400)
    assert_ably_error(await http.get("/channels/%5Bmeta%5Dlog", headers=BASIC), 400, 40010)
    assert_ably_error(await http.get("/channels/%23server-to-user-1", headers=BASIC), 400, 40010)
    preflight = await http.options("/channels/room/messages", headers={"Origin": "http://localhost:3000"})
    assert preflight.status_code == 204
    assert "X-Ably-Version" in preflight.headers["access-control-allow-headers"]
    assert (await http.get("/apps/1/channels")).status_code == 401  # the Pusher API still answers its own paths


async def test_msgpack_negotiation(http: httpx.AsyncClient) -> None:
    """§A.1: a msgpack body in, ``Accept: application/x-msgpack`` out (errors too)."""
    headers = {**BASIC, "Content-Type": "application/x-msgpack", "Accept": "application/x-msgpack"}
    body = msgpack.packb({"name": "bin", "data": b"\x00\x01"}, use_bin_type=True)
    response = await http.post("/channels/room/messages", content=body, headers=headers)
    assert response.headers["content-type"] == "application/x-msgpack"
    assert msgpack.unpackb(response.content)["channel"] == "room"
    error = await http.post("/channels/room/messages", content=b"\xc1", headers=headers)
    assert error.status_code == 400 and msgpack.unpackb(error.content)["error"]["code"] == 40000


async def test_batch_v2_and_legacy_v1(http: httpx.AsyncClient) -> None:
    """§A.4: protocol ≥ 2 answers one BatchResult per spec (per-channel errors inside, HTTP 201); protocol 1 answers
    a list on success and 400/40020 with ``batchResponse`` on a partial failure."""
    token = jwt_token({"ok:*": ["publish"]})
    specs = [{"channels": ["ok:1", "no"], "messages": {"name": "n"}}, {"channels": "ok:2", "messages": [{"name": "m"}]}]
    response = await http.post("/messages", json=specs, headers=bearer(token))
    assert response.status_code == 201
    first, second = response.json()
    assert (first["successCount"], first["failureCount"], second["successCount"]) == (1, 1, 1)
    assert first["results"][1]["error"]["code"] == 40160
    legacy = await http.post("/messages", json=specs, headers={**bearer(token), "X-Ably-Version": "1.2"})
    assert legacy.status_code == 400 and legacy.json()["error"]["code"] == 40020
    assert [r["channel"] for r in legacy.json()["batchResponse"]] == ["ok:1", "no", "ok:2"]
    legacy_ok = await http.post(
        "/messages", json={"channels": ["ok:3"], "messages": {}}, headers=BASIC | {"X-Ably-Version": "1"}
    )
    assert legacy_ok.status_code == 201 and legacy_ok.json()[0]["channel"] == "ok:3"
    too_many = await http.post(
        "/messages", json={"channels": [f"c{i}" for i in range(101)], "messages": {}}, headers=BASIC
    )
    assert_ably_error(too_many, 400, 90010, "single bulk publish request (100) exceeded")


async def test_channels_enumeration_and_status(
    http: httpx.AsyncClient, ably_emulator: RunningEmulator, wires: list[Any]
) -> None:
    """§A.7/A.8: ``GET /channels`` lists active channels (``by=id`` from v3, ChannelDetails before), paginated with a
    ``Link: rel="next"``; needs channel-metadata on ``*`` (40160 otherwise); status counts attachments."""
    for name in ("c:1", "c:2", "c:3"):
        wire = await ably_wire(ably_emulator)
        wires.append(wire)
        await wire.attach(name)
    page = await http.get("/channels", params={"prefix": "c:", "limit": "2"}, headers=BASIC)
    assert page.json() == ["c:1", "c:2"]
    next_url = page_links(page.headers["link"])["next"].removeprefix(".")
    assert (await http.get(next_url, headers=BASIC)).json() == ["c:3"]
    values = await http.get("/channels", params={"prefix": "c:1"}, headers={**BASIC, "X-Ably-Version": "2"})
    assert values.json()[0]["status"]["occupancy"]["metrics"]["connections"] == 1
    denied = await http.get("/channels", headers=bearer(jwt_token({"c:1": ["channel-metadata"]})))
    assert_ably_error(denied, 401, 40160)
    status = await http.get("/channels/c:1", headers=bearer(jwt_token({"c:1": ["channel-metadata"]})))
    assert status.json()["status"]["isActive"] is True
    assert_ably_error(await http.get("/channels", params={"limit": "0"}, headers=BASIC), 400, 40003)


async def test_request_token_checks(http: httpx.AsyncClient) -> None:
    """§A.10: signed requests need no auth and are checked (MAC 40101, timestamp 40104, replay 40105, ttl 40003,
    a capability outside the key's 40160 — here a key with everything, so a malformed one, 40000); an unsigned
    request needs the key; the token works as Bearer."""
    now = int(time.time() * 1000)

    def signed(**overrides: Any) -> dict[str, object]:
        return build_token_request(KEY_NAME, KEY_SECRET, timestamp=now, nonce=f"nonce-{time.time_ns()}", **overrides)

    path = f"/keys/{KEY_NAME}/requestToken"
    good = await http.post(path, json=signed(client_id="tia", ttl=60_000, capability={"room": ["subscribe"]}))
    details = good.json()
    assert good.status_code == 200 and details["expires"] - details["issued"] == 60_000
    assert (details["keyName"], details["clientId"], details["capability"]) == (
        KEY_NAME,
        "tia",
        '{"room":["subscribe"]}',
    )
    tampered = {**signed(), "clientId": "mallory"}
    assert_ably_error(await http.post(path, json=tampered), 401, 40101)
    stale = build_token_request(KEY_NAME, KEY_SECRET, timestamp=now - 600_000, nonce="0123456789abcdef0")
    assert_ably_error(await http.post(path, json=stale), 401, 40104)
    replay = signed()
    assert (await http.post(path, json=replay)).status_code == 200
    assert_ably_error(await http.post(path, json=replay), 401, 40105)
    assert_ably_error(await http.post(path, json=signed(ttl=25 * 3600 * 1000)), 400, 40003)
    bad_capability = {"keyName": KEY_NAME, "timestamp": now, "capability": "[1]"}
    assert_ably_error(await http.post(path, json=bad_capability, headers=BASIC), 400, 40000)
    assert_ably_error(await http.post(path, json={"keyName": KEY_NAME, "timestamp": now}), 401, 40101)
    assert_ably_error(await http.post("/keys/9.other/requestToken", json=signed()), 401, 40101)
    unsigned = await http.post(path, json={"keyName": KEY_NAME, "ttl": "3600000"}, headers=BASIC)
    assert unsigned.status_code == 200 and unsigned.json()["capability"] == '{"*":["*"]}'

    token = details["token"]
    assert (await http.get("/channels/room/presence", headers=bearer(token))).json() == []
    assert (await http.get("/channels/room/presence", headers={"Authorization": f"Bearer {token}"})).status_code == 200
    assert_ably_error(await http.post("/channels/room/messages", json={}, headers=bearer(token)), 401, 40160)
    narrower = await http.post(path, json={"keyName": KEY_NAME, "capability": '{"other":["*"]}'}, headers=bearer(token))
    assert_ably_error(narrower, 401, 40106)


async def test_batch_presence(http: httpx.AsyncClient, ably_emulator: RunningEmulator, wires: list[Any]) -> None:
    """§A.5: ``GET /presence?channels=a,b`` answers a BatchResult with each channel's members."""
    wire = await ably_wire(ably_emulator, f"key={API_KEY}&clientId=pia")
    wires.append(wire)
    await wire.attach("p:1")
    await wire.presence("p:1", {"action": 2, "data": "x"})
    await wire.expect(14)
    response = await http.get("/presence", params={"channels": "p:1,p:2"}, headers=BASIC)
    body = response.json()
    assert (body["successCount"], body["failureCount"]) == (2, 0)
    assert [len(result["presence"]) for result in body["results"]] == [1, 0]
    assert body["results"][0]["presence"][0]["clientId"] == "pia"
    assert_ably_error(await http.get("/presence", headers=BASIC), 400, 40000)


async def test_batch_presence_answers_each_channel_s_whole_set(
    http: httpx.AsyncClient, ably_emulator: RunningEmulator, wires: list[Any]
) -> None:
    """A batch answer has no ``Link`` to a next page, yet each channel's set was cut to its first 100 members without a
    word: 150 members came back as 100, where ``/channels/{ch}/presence`` pages through all 150."""
    wire = await ably_wire(ably_emulator, f"key={API_KEY}")
    wires.append(wire)
    await wire.attach("crowd")
    entered = await wire.presence("crowd", *({"action": 2, "clientId": f"member-{n}"} for n in range(150)))
    while (message := await wire.recv()).get("action") != ACK:
        assert message["action"] != NACK, message
    assert message["msgSerial"] == entered
    response = await http.get("/presence", params={"channels": "crowd"}, headers=BASIC)
    assert response.status_code == 200
    [result] = response.json()["results"]
    assert sorted(member["clientId"] for member in result["presence"]) == sorted(f"member-{n}" for n in range(150))


def test_nonces_are_forgotten_in_the_order_they_came_once_no_replay_could_pass() -> None:
    """Past 1,000 nonces held, every signed TokenRequest rebuilt the whole set (0.3 ms a request at 1,000 held, 5.7
    ms at 26,000, which 110 requests a second hold). Each is now dropped once its request's timestamp is out of the
    window whatever the time it came: a replay is still refused until then."""
    key = AblyKey.parse(API_KEY)
    auth = AblyAuth({key.key_name: key})
    start = 1_800_000_000_000

    def signed(nonce: str, timestamp: int) -> dict[str, object]:
        return build_token_request(key.key_name, key.secret, timestamp=timestamp, nonce=nonce)

    first = signed("first-nonce-0000000", start + TIMESTAMP_WINDOW_MS)  # ahead of the clock, within the window
    auth.request_token(key.key_name, first, None, now_ms=start)
    for number in range(5_000):
        auth.request_token(key.key_name, signed(f"nonce-{number:016d}", start), None, now_ms=start)
    later = start + 2 * TIMESTAMP_WINDOW_MS  # the first request's timestamp is still within the window
    with pytest.raises(AblyError) as replayed:
        auth.request_token(key.key_name, first, None, now_ms=later)
    assert replayed.value.code == 40105
    auth.request_token(key.key_name, signed("after-the-window-0", later + 1), None, now_ms=later + 1)
    assert len(auth._nonces) == 1  # the 5,001 earlier ones are gone


def test_a_nonce_another_node_accepted_is_refused_until_it_would_have_been_forgotten_here() -> None:
    """In a cluster each node is told of the nonces the others accepted (over the bus at once, or read from Redis with
    the time they have left): refused as if accepted here, then forgotten with the rest."""
    key = AblyKey.parse(API_KEY)
    auth, told = AblyAuth({key.key_name: key}), list[tuple[str, str, int]]()
    auth.share = lambda *used: told.append(used)
    start = 1_800_000_000_000
    heard = build_token_request(key.key_name, key.secret, timestamp=start, nonce="heard-over-the-bus")
    read = build_token_request(key.key_name, key.secret, timestamp=start, nonce="read-from-redis-000")
    auth.used_elsewhere(key.key_name, "heard-over-the-bus", start, NONCE_KEPT_MS, start)
    auth.used_elsewhere(key.key_name, "read-from-redis-000", start, NONCE_KEPT_MS - 60_000, start)  # a minute ago
    for token_request in (heard, read):
        with pytest.raises(AblyError) as replayed:
            auth.request_token(key.key_name, token_request, None, now_ms=start + 1)
        assert replayed.value.code == 40105
    assert told == []  # another node's nonce is not told again
    mine = build_token_request(key.key_name, key.secret, timestamp=start, nonce="accepted-here-00000")
    auth.request_token(key.key_name, mine, None, now_ms=start + 1)
    assert told == [(key.key_name, "accepted-here-00000", start)]
    auth.used_elsewhere(key.key_name, "too-old-to-keep-000", start, -1, start)
    assert len(auth._nonces) == 3
    later = start + NONCE_KEPT_MS + 2
    fresh = build_token_request(key.key_name, key.secret, timestamp=later, nonce="after-them-all-0000")
    auth.request_token(key.key_name, fresh, None, now_ms=later)
    assert len(auth._nonces) == 1  # the others went when they were due
