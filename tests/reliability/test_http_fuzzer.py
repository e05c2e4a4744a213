"""Random requests against a running server, past authentication: signed Pusher HTTP API requests, Ably REST with the
app's key and Ably realtime ProtocolMessages after CONNECTED. The server answers each with a status under 500 (a 4xx
carrying its error as JSON), or closes a realtime connection cleanly, and never logs a traceback.

The fixed examples first are the crashes the property tests found; each is the smallest input that reproduced it.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import time
from typing import Any
from urllib.parse import quote

import httpx
import msgpack  # type: ignore[import-untyped]
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from relay.protocol.signing import rest_signature, sign_rest_request
from tests.conftest import RunningEmulator

API_KEY = "1.app-key:app-secret"  # the test app's Ably key (App.ably_api_key)
BASIC = "Basic " + base64.b64encode(API_KEY.encode()).decode()
MSGPACK = "application/x-msgpack"
HEARTBEAT, CONNECTED, ERROR, ATTACH, ATTACHED, MESSAGE = 0, 4, 9, 10, 11, 15
WAIT = 3.0
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def tracebacks(caplog: pytest.LogCaptureFixture) -> list[str]:
    """ERROR records with a traceback from the server (its own loggers, and asyncio's for a protocol callback that
    raised, which drops the connection)."""
    return [
        record.getMessage()
        + "\n"
        + (logging.Formatter().formatException(record.exc_info) if record.exc_info else record.getMessage())
        for record in caplog.records
        if record.levelno >= logging.ERROR
        and record.name.startswith(("relay", "asyncio"))
        and (record.exc_info is not None or "Traceback" in record.getMessage())
    ]


def assert_no_traceback(caplog: pytest.LogCaptureFixture) -> None:
    logged = tracebacks(caplog)
    assert not logged, "the server logged an exception:\n" + "\n".join(logged)


# -- Pusher HTTP API ------------------------------------------------------------------------------------------------


def signed(
    method: str, path: str, body: bytes = b"", params: dict[str, str] | None = None, timestamp: str | None = None
) -> dict[str, str]:
    """The query of a correctly signed request (``timestamp`` replaces auth_timestamp before signing)."""
    query = sign_rest_request(
        "app-key", "app-secret", method, path, timestamp=int(time.time()), body=body, params=params
    )
    if timestamp is not None:
        query["auth_timestamp"] = timestamp
        del query["auth_signature"]
        query["auth_signature"] = rest_signature("app-secret", method, path, query)
    return query


async def pusher_request(
    client: httpx.AsyncClient,
    method: str,
    path: str,
    body: bytes = b"",
    params: dict[str, str] | None = None,
    timestamp: str | None = None,
) -> httpx.Response:
    query = signed(method, path, body, params, timestamp)
    return await client.request(method, path, params=query, content=body)


def assert_pusher_answer(response: httpx.Response) -> None:
    """2xx, or a 4xx with a JSON error, on a connection the server keeps open (it closes only after a request it
    could not parse, which every request here is not)."""
    assert response.status_code < 500, response.text
    answer = response.json()
    if response.status_code >= 400:
        assert isinstance(answer, dict) and isinstance(answer.get("error"), str), response.text
    assert answer != {"error": "malformed HTTP request"}, "a well-formed request was refused as malformed"
    assert response.headers.get("connection") != "close", response.text


async def test_pusher_api_huge_auth_timestamp(emulator: RunningEmulator, caplog: pytest.LogCaptureFixture) -> None:
    """A signed auth_timestamp too large for a float is a stale timestamp (401), not an OverflowError. Its publish
    reaches no one; the next valid one does."""
    watcher = await sentinel(emulator)
    async with httpx.AsyncClient(base_url=emulator.http_url) as client:
        body = b'{"name":"e","channel":"a","data":"x"}'
        response = await pusher_request(client, "POST", "/apps/1/events", body, timestamp="1" + "0" * 400)
        assert response.status_code == 401, response.text
        assert_pusher_answer(response)
        assert response.json()["error"] == (
            "auth_timestamp is far from the server's time; the window is 600 s, so check the sender's clock"
        ), response.text
        valid = await pusher_request(client, "POST", "/apps/1/events", b'{"name":"after","channel":"a","data":"y"}')
        assert valid.status_code == 200, valid.text
    delivered = await receive(watcher, binary=False)
    assert delivered["action"] == MESSAGE and [m["name"] for m in delivered["messages"]] == ["after"], delivered
    await assert_usable(watcher, binary=False)
    await watcher.close()
    assert_no_traceback(caplog)


text_any = st.text(st.characters(codec=None), max_size=20)  # surrogates included: json.dumps escapes them
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.sampled_from([2**63, 2**64, -(2**63) - 1, 2**70, 10**300, -(10**300)])
    | st.floats()
    | text_any
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(text_any, children, max_size=4),
    max_leaves=12,
)
CHANNELS = ["news", "presence-a", "private-a", "cache-a", "#server-to-user-1", "x" * 201, "a b", "", "#"]
pusher_event = st.fixed_dictionaries(
    {},
    optional={
        "name": st.sampled_from(["e", "client-e", "x" * 201, ""]) | json_values,
        "channel": st.sampled_from(CHANNELS) | json_values,
        "channels": st.lists(st.sampled_from(CHANNELS) | json_values, max_size=4) | json_values,
        "data": st.sampled_from(["{}", "x" * 10_241]) | json_values,
        "socket_id": st.sampled_from(["1.1", "1.", "123.456"]) | json_values,
        "info": st.sampled_from(["user_count", "subscription_count", "cache", "user_count,subscription_count"])
        | json_values,
    },
)
pusher_body = st.one_of(
    pusher_event.map(lambda value: json.dumps(value).encode()),
    st.fixed_dictionaries({"batch": st.lists(pusher_event | json_values, max_size=11) | json_values}).map(
        lambda value: json.dumps(value).encode()
    ),
    json_values.map(lambda value: json.dumps(value).encode()),
    st.binary(max_size=100),
)
segment = st.sampled_from(CHANNELS[:-2]) | st.text(max_size=20).filter(lambda s: s not in (".", ".."))
query_text = st.text(st.characters(min_codepoint=33, max_codepoint=0x2FF, exclude_characters="%+&=#"), max_size=12)
pusher_params = st.dictionaries(
    st.sampled_from(["info", "filter_by_prefix", "extra", "INFO"]) | query_text,
    st.sampled_from(["user_count", "subscription_count", "cache", "presence-", ""]) | query_text,
    max_size=3,
)
pusher_request_parts = st.one_of(
    st.tuples(st.just("POST"), st.just("/apps/1/events"), pusher_body),
    st.tuples(st.just("POST"), st.just("/apps/1/batch_events"), pusher_body),
    st.tuples(st.just("GET"), st.just("/apps/1/channels"), st.just(b"")),
    st.tuples(st.just("GET"), segment.map(lambda s: f"/apps/1/channels/{quote(s, safe='')}"), st.just(b"")),
    st.tuples(st.just("GET"), segment.map(lambda s: f"/apps/1/channels/{quote(s, safe='')}/users"), st.just(b"")),
    st.tuples(
        st.just("POST"), segment.map(lambda s: f"/apps/1/users/{quote(s, safe='')}/terminate_connections"), pusher_body
    ),
)


# auth_timestamp as signed: None is the current time.
timestamps = st.none() | st.sampled_from(["1" + "0" * 400, "-1", "0", "1e9", " 1", "1_0", "٣", "", "9" * 5000])


@FUZZ
@given(request=pusher_request_parts, params=pusher_params, timestamp=timestamps)
@pytest.mark.long
async def test_signed_pusher_api_requests_never_fail(
    emulator: RunningEmulator,
    caplog: pytest.LogCaptureFixture,
    request: tuple[str, str, bytes],
    params: dict[str, str],
    timestamp: str | None,
) -> None:
    caplog.clear()
    method, path, body = request
    async with httpx.AsyncClient(base_url=emulator.http_url) as client:
        response = await pusher_request(client, method, path, body, params, timestamp)
    assert_pusher_answer(response)
    assert_no_traceback(caplog)


# -- Ably REST ------------------------------------------------------------------------------------------------------


async def ably_request(
    client: httpx.AsyncClient,
    method: str,
    path: str,
    body: bytes = b"",
    *,
    binary: bool = False,
    params: dict[str, str] | None = None,
    headers: dict[str, str | bytes] | None = None,
) -> httpx.Response:
    sent: dict[str, str | bytes] = {
        "Authorization": BASIC,
        "Content-Type": MSGPACK if binary else "application/json",
        **(headers or {}),
    }
    return await client.request(method, path, content=body, params=params, headers=sent)


def assert_ably_answer(response: httpx.Response) -> None:
    assert response.status_code < 500, response.content[:500]
    if response.status_code >= 400:
        answer = msgpack.unpackb(response.content) if response.headers["content-type"] == MSGPACK else response.json()
        assert isinstance(answer["error"]["code"], int), answer


async def test_ably_rest_limit_with_a_non_decimal_digit(
    emulator: RunningEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    """'²'.isdigit() is true but int('²') raises: the limit is refused with 40003, not a 500."""
    watcher = await sentinel(emulator)
    async with httpx.AsyncClient(base_url=emulator.http_url) as client:
        for path in ("/channels", "/channels/a/presence"):
            response = await ably_request(client, "GET", path, params={"limit": "²"})
            assert response.status_code == 400, response.text
            assert response.json()["error"]["code"] == 40003
    await assert_usable(watcher, binary=False)
    await watcher.close()
    assert_no_traceback(caplog)


@pytest.mark.parametrize(
    ("path", "body", "binary"),
    [
        # msgpack's unpacker raises TypeError for a map keyed by an array (an unhashable list)
        ("/channels/a/messages", b"\x81\x91\x01\x01", True),
        # json.loads raises RecursionError (not a ValueError) on a deeply nested capability
        ("/keys/1.app-key/requestToken", json.dumps({"capability": "[" * 100_000}).encode(), False),
    ],
    ids=["msgpack map keyed by an array", "deeply nested capability"],
)
async def test_ably_rest_bodies_whose_parser_raises_an_unusual_error_are_malformed(
    emulator: RunningEmulator, caplog: pytest.LogCaptureFixture, path: str, body: bytes, binary: bool
) -> None:
    """A parser's TypeError or RecursionError is a malformed body like any other: 400 with 40000, not a 500."""
    async with httpx.AsyncClient(base_url=emulator.http_url) as client:
        response = await ably_request(client, "POST", path, body, binary=binary)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == 40000
    assert_no_traceback(caplog)


async def test_ably_publish_extras_beyond_msgpack_to_a_msgpack_subscriber(
    emulator: RunningEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    """JSON extras may hold an integer msgpack cannot encode: delivering the message to a msgpack connection must not
    raise (OverflowError) in the publisher's request. The publish is accepted and the msgpack subscriber gets the
    message, with that integer as decimal text."""
    subscriber = await ably_connect(emulator, binary=True)
    await send(subscriber, {"action": ATTACH, "channel": "a"}, binary=True)
    assert (await receive(subscriber, binary=True))["action"] == ATTACHED
    body = json.dumps({"name": "n", "data": "x", "extras": {"big": 2**70}}).encode()
    async with httpx.AsyncClient(base_url=emulator.http_url) as client:
        response = await ably_request(client, "POST", "/channels/a/messages", body)
    assert response.status_code == 201, response.text
    delivered = await receive(subscriber, binary=True)
    assert delivered["action"] == MESSAGE and delivered["channel"] == "a", delivered
    (serial,) = response.json()["serials"]
    big = {"big": str(2**70)}
    assert delivered["messages"] == [{"name": "n", "data": "x", "extras": big, "action": 0, "serial": serial}]
    assert_no_traceback(caplog)
    await assert_usable(subscriber, binary=True)
    await subscriber.close()


msgpack_ints = st.integers(min_value=-(2**63), max_value=2**64 - 1)  # what msgpack can encode


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [
        pytest.param({"Authorization": "Basic é".encode("latin-1")}, 401, 40101, id="basic"),
        pytest.param({"Authorization": "Bearer é".encode("latin-1")}, 401, 40144, id="bearer"),
        pytest.param({"X-Ably-ClientId": "é".encode("latin-1")}, 400, 40012, id="client-id"),
    ],
)
async def test_ably_rest_credentials_that_are_not_ascii(
    emulator: RunningEmulator, caplog: pytest.LogCaptureFixture, headers: dict[str, str | bytes], status: int, code: int
) -> None:
    """base64.b64decode raises a plain ValueError (not binascii.Error) for non-ASCII text: invalid credentials."""
    watcher = await sentinel(emulator)
    async with httpx.AsyncClient(base_url=emulator.http_url) as client:
        response = await ably_request(client, "GET", "/channels", headers=headers)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    await assert_usable(watcher, binary=False)
    await watcher.close()
    assert_no_traceback(caplog)


def msgpack_keys() -> st.SearchStrategy[Any]:
    # A tuple is packed as an array, which the server's unpacker then has to use as a map key.
    return st.text(max_size=10) | msgpack_ints | st.binary(max_size=5) | st.tuples(msgpack_ints)


msgpack_scalars = (
    st.none()
    | st.booleans()
    | msgpack_ints
    | st.floats()
    | st.text(max_size=20)
    | st.binary(max_size=20)
    | st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=8))
)
msgpack_values = st.recursive(
    msgpack_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(msgpack_keys(), children, max_size=4),
    max_leaves=12,
)
ENCODINGS = ["json", "base64", "json/base64", "utf-8/base64", "utf-8/cipher+aes-128-cbc/base64", "utf-8/cipher", ""]


def ably_message(values: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {},
        optional={
            "name": st.sampled_from(["e", "pusher:x", ""]) | values,
            "data": st.sampled_from(["eyJhIjoxfQ==", "{}", "not base64!"]) | values,
            "encoding": st.sampled_from(ENCODINGS) | values,
            "clientId": st.sampled_from(["u", "*", ""]) | values,
            "id": st.sampled_from(["b:0", "b:1", ""]) | values,
            "extras": st.just({"push": {"x": 1}}) | values,
            "connectionKey": st.sampled_from(["1.1!abc", "x"]) | values,
        },
    )


def ably_body(values: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    message = ably_message(values)
    token_request = st.fixed_dictionaries(
        {},
        optional={
            "keyName": st.sampled_from(["1.app-key", "x"]) | values,
            "ttl": st.sampled_from([0, 1, 86_400_001, "1000"]) | values,
            "capability": st.sampled_from(['{"*":["*"]}', '{"a":["publish"]}', "[]", "{", '{"a":"x"}']) | values,
            "clientId": st.sampled_from(["u", "*"]) | values,
            "timestamp": values,
            "nonce": values,
            "mac": values,
        },
    )
    batch_spec = st.fixed_dictionaries(
        {},
        optional={
            "channels": st.lists(st.sampled_from(["a", "b", ""]) | values, max_size=3) | values,
            "messages": st.lists(message, max_size=3) | message | values,
        },
    )
    return st.one_of(
        message,
        st.lists(message | values, max_size=4),
        token_request,
        batch_spec,
        st.lists(batch_spec, max_size=3),
        values,
    )


ABLY_CHANNELS = ["a", "presence-a", "cache-a", "[meta]x", ":x", "a\x01", "#server-to-user-1", "x" * 2049]
ably_channel = st.sampled_from(ABLY_CHANNELS) | st.text(max_size=20)
ably_path = st.one_of(
    ably_channel.map(lambda c: ("POST", f"/channels/{quote(c, safe='')}/messages")),
    ably_channel.map(lambda c: ("GET", f"/channels/{quote(c, safe='')}/presence")),
    ably_channel.map(lambda c: ("GET", f"/channels/{quote(c, safe='')}")),
    ably_channel.map(lambda c: ("GET", f"/channels/{quote(c, safe='')}/history")),
    st.sampled_from([("GET", "/channels"), ("POST", "/messages"), ("GET", "/presence"), ("GET", "/time")]),
    st.sampled_from(["1.app-key", "x", "1.app-key%2F"]).map(lambda k: ("POST", f"/keys/{k}/requestToken")),
)
ably_params = st.dictionaries(
    st.sampled_from(["limit", "prefix", "by", "cursor", "clientId", "connectionId", "format", "v", "channels"])
    | st.sampled_from(["separator"]),
    st.sampled_from(["1", "0", "1001", "²", "id", "value", "msgpack", "json", "2", "3", "a,b", "nan", ""])
    | st.text(max_size=10),
    max_size=4,
)


def signed_jwt(header: dict[str, Any], claims: dict[str, Any]) -> str:
    """A JWT signed HS256 with the app's key secret whatever its header and claims hold (PyJWT checks claims)."""

    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    signing_input = f"{part(header)}.{part(claims)}"
    mac = hmac.new(b"app-secret", signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


now_s = int(time.time())
jwt_header = st.fixed_dictionaries(
    {"alg": st.just("HS256"), "kid": st.just("1.app-key") | json_values}, optional={"typ": st.just("JWT")}
)
jwt_claims = st.fixed_dictionaries(
    {
        "iat": st.just(now_s) | json_values,
        "exp": st.just(now_s + 600) | json_values,
        "x-ably-capability": st.sampled_from(['{"*":["*"]}', '{"a":["subscribe"]}', "[" * 2000, "{}"]) | json_values,
    },
    optional={"x-ably-clientId": st.sampled_from(["u", "*"]) | json_values, "nbf": json_values},
)
header_text = st.text(st.characters(min_codepoint=32, max_codepoint=255, exclude_characters="\x7f"), max_size=20)
authorizations = (
    st.just(BASIC)
    | st.tuples(st.sampled_from(["Basic ", "Bearer "]), header_text).map(
        lambda parts: "".join(parts).strip().encode("latin-1")  # HTTP trims a header value's outer whitespace
    )
    | st.builds(
        lambda header, claims: "Bearer " + base64.b64encode(signed_jwt(header, claims).encode()).decode(),
        jwt_header,
        jwt_claims,
    )
)
ably_headers = st.fixed_dictionaries(
    {"Authorization": authorizations},
    optional={
        "Accept": st.sampled_from([MSGPACK, "application/json", "*/*"]),
        "X-Ably-Version": st.sampled_from(["1", "2", "3", "x", "nan", "1e400"]),
        "X-Ably-ClientId": st.sampled_from([base64.b64encode(b"u").decode(), "!!", base64.b64encode(b"*").decode()])
        | header_text.map(lambda text: text.strip().encode("latin-1")),
    },
)
ably_rest_body = st.one_of(
    ably_body(json_values).map(lambda value: (json.dumps(value).encode(), False)),
    ably_body(msgpack_values).map(lambda value: (msgpack.packb(value, use_bin_type=True), True)),
    st.tuples(st.binary(max_size=60), st.booleans()),
)


@FUZZ
@given(route=ably_path, body=ably_rest_body, params=ably_params, headers=ably_headers)
async def test_ably_rest_requests_never_fail(
    emulator: RunningEmulator,
    caplog: pytest.LogCaptureFixture,
    route: tuple[str, str],
    body: tuple[bytes, bool],
    params: dict[str, str],
    headers: dict[str, str | bytes],
) -> None:
    caplog.clear()
    method, path = route
    content, binary = body
    async with httpx.AsyncClient(base_url=emulator.http_url) as client:
        response = await ably_request(client, method, path, content, binary=binary, params=params, headers=headers)
    assert_ably_answer(response)
    assert_no_traceback(caplog)


# -- Ably realtime --------------------------------------------------------------------------------------------------


async def ably_connect(emulator: RunningEmulator, *, binary: bool) -> ClientConnection:
    fmt = "msgpack" if binary else "json"
    ws = await connect(f"ws://127.0.0.1:{emulator.port}/?key={API_KEY}&format={fmt}", open_timeout=WAIT)
    assert (await receive(ws, binary=binary))["action"] == CONNECTED
    return ws


async def send(ws: ClientConnection, message: Any, *, binary: bool) -> None:
    await ws.send(msgpack.packb(message, use_bin_type=True) if binary else json.dumps(message))


async def receive(ws: ClientConnection, *, binary: bool) -> dict[str, Any]:
    raw = await asyncio.wait_for(ws.recv(), WAIT)
    value = msgpack.unpackb(raw, raw=False, strict_map_key=False) if binary else json.loads(raw)
    assert isinstance(value, dict) and isinstance(value.get("action"), int), value
    return value


async def assert_usable(ws: ClientConnection, *, binary: bool) -> None:
    """The connection answers a HEARTBEAT with an id (ably-js ``connection.ping()``)."""
    await send(ws, {"action": HEARTBEAT, "id": "probe"}, binary=binary)
    while (message := await receive(ws, binary=binary)) != {"action": HEARTBEAT, "id": "probe"}:
        assert message.get("error", {}).get("code") != 50000, message


async def sentinel(emulator: RunningEmulator) -> ClientConnection:
    """A JSON connection attached to channel "a", opened before a malformed input so that :func:`assert_usable`
    afterwards shows the server kept serving the others."""
    ws = await ably_connect(emulator, binary=False)
    await send(ws, {"action": ATTACH, "channel": "a"}, binary=False)
    assert (await receive(ws, binary=False))["action"] == ATTACHED
    return ws


async def test_ably_realtime_msgpack_map_with_an_array_key(
    emulator: RunningEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    """The unpacker's TypeError escaped the session and asyncio dropped the connection: a protocol error instead."""
    ws = await ably_connect(emulator, binary=True)
    await ws.send(b"\x82\xa6action\x00\x91\x01\x01")  # {"action": 0, [1]: 1}
    message: dict[str, Any] | None = None
    try:
        message = await receive(ws, binary=True)
    except ConnectionClosed:
        assert ws.protocol.close_rcvd is not None, "the server dropped the connection without a close frame"
    assert message is None or message["action"] in (HEARTBEAT, ERROR), message
    assert_no_traceback(caplog)
    await ws.close()


async def test_ably_realtime_msg_serial_beyond_msgpack(
    emulator: RunningEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    """A JSON frame on a msgpack connection may carry a msgSerial msgpack cannot encode in the ACK or NACK."""
    ws = await ably_connect(emulator, binary=True)
    for action in (15, 20):
        frame = {"action": action, "channel": "a", "msgSerial": 2**70, "messages": [{"name": "n"}]}
        await ws.send(json.dumps(frame))
        try:
            message = await receive(ws, binary=True)
        except ConnectionClosed:
            message = {"closed": ws.protocol.close_rcvd}
            ws = await ably_connect(emulator, binary=True)
        assert message.get("error", {}).get("code") != 50000, message
    assert_no_traceback(caplog)
    await ws.close()


async def test_ably_realtime_access_token_that_is_not_ascii(
    emulator: RunningEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    """The same ValueError on a realtime connection: at connect it escaped data_received and dropped the socket, in
    AUTH it ended the connection with an internal error."""
    watcher = await sentinel(emulator)
    ws = await connect(f"ws://127.0.0.1:{emulator.port}/?access_token=%C3%A9&format=json", open_timeout=WAIT)
    refusal = await receive(ws, binary=False)
    assert refusal["action"] == ERROR and refusal["error"]["code"] == 40144, refusal
    await ws.close()
    ws = await ably_connect(emulator, binary=False)
    await send(ws, {"action": 17, "auth": {"accessToken": "é"}}, binary=False)
    reply = await receive(ws, binary=False)
    assert reply["action"] == ERROR and reply["error"]["code"] == 40144, reply
    await ws.close()
    await assert_usable(watcher, binary=False)
    await watcher.close()
    assert_no_traceback(caplog)


ACTIONS = st.integers(0, 22) | msgpack_ints


def realtime_presence(values: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {},
        optional={
            "action": st.integers(0, 5) | values,
            "clientId": st.sampled_from(["u", "*", ""]) | values,
            "data": values,
            "encoding": st.sampled_from(ENCODINGS) | values,
        },
    )


def protocol_message(values: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {"action": ACTIONS | values},
        optional={
            "channel": st.sampled_from(["fuzz", "presence-fuzz", *ABLY_CHANNELS]) | values,
            "msgSerial": st.integers(0, 5) | st.sampled_from([2**64 - 1, -1]) | values,
            "messages": st.lists(ably_message(values), max_size=3) | values,
            "presence": st.lists(realtime_presence(values), max_size=3) | values,
            "flags": st.sampled_from([0, 1 << 16, 1 << 17, 983_040, 2**40]) | values,
            "id": values,
            "auth": st.fixed_dictionaries({"accessToken": st.text(max_size=20) | values}) | values,
            "params": values,
        },
    )


# (payload, sent as binary): a frame's format need not match the connection's.
realtime_frame = st.one_of(
    protocol_message(json_values).map(lambda value: (json.dumps(value).encode(), False)),
    protocol_message(msgpack_values).map(lambda value: (msgpack.packb(value, use_bin_type=True), True)),
    st.tuples(st.binary(max_size=60), st.booleans()),
)


@FUZZ
@given(binary=st.booleans(), batch=st.lists(realtime_frame, min_size=1, max_size=5))
async def test_random_protocol_messages_never_break_the_server(
    emulator: RunningEmulator, caplog: pytest.LogCaptureFixture, binary: bool, batch: list[tuple[bytes, bool]]
) -> None:
    caplog.clear()
    # Subscribers in both formats, so every publish is encoded for each.
    subscribers = [await ably_connect(emulator, binary=fmt) for fmt in (False, True)]
    for subscriber, fmt in zip(subscribers, (False, True), strict=True):
        await send(subscriber, {"action": ATTACH, "channel": "fuzz"}, binary=fmt)
        assert (await receive(subscriber, binary=fmt))["action"] == ATTACHED
    ws = await ably_connect(emulator, binary=binary)
    try:
        for payload, as_binary in batch:
            await ws.send(payload if as_binary else payload.decode(errors="replace"))
        await assert_usable(ws, binary=binary)
    except ConnectionClosed:
        assert ws.protocol.close_rcvd is not None and ws.protocol.close_rcvd.code == 1000, (
            f"closed with {ws.protocol.close_rcvd}"
        )
    finally:
        await ws.close()
    assert_no_traceback(caplog)
    sentinel = await ably_connect(emulator, binary=binary)
    await assert_usable(sentinel, binary=binary)
    for subscriber, fmt in zip(subscribers, (False, True), strict=True):  # every publish was encoded for them
        await assert_usable(subscriber, binary=fmt)
    for subscriber in [sentinel, *subscribers]:
        await subscriber.close()


# -- Pusher WebSocket handshake -------------------------------------------------------------------------------------


async def test_pusher_handshake_protocol_with_a_non_decimal_digit(
    emulator: RunningEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    """?protocol=² passed isdigit() and int() raised inside data_received: an invalid version (4006) instead."""
    watcher = await sentinel(emulator)
    ws = await connect(emulator.ws_url(query="protocol=%C2%B2"), open_timeout=WAIT)
    try:
        frame = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
        assert frame["event"] == "pusher:error" and frame["data"]["code"] == 4006, frame
    finally:
        await ws.close()
    await assert_usable(watcher, binary=False)
    await watcher.close()
    assert_no_traceback(caplog)
