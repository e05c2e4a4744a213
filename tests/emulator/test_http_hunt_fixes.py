"""The emulator's HTTP/1.1 and Pusher HTTP API after a bug hunt: timeouts for idle and unfinished requests, reserved
event names, only signed requests using the rate limit, Upgrade headers that ask for something other than a
WebSocket, one app resolution for the API and its rate limit, ``info=subscription_count`` on apps that do not count,
the head limit whatever the reads, HEAD and ``Allow``, and ``Expect`` from HTTP/1.0 clients. Every test talks to a
real emulator on an ephemeral port, with raw sockets (to control the bytes and the reads) or pusher-http-python."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from urllib.parse import urlencode

import httpx
import pytest
from pusher.errors import PusherBadRequest  # type: ignore[import-untyped]

from relay.emulator.config import EmulatorConfig
from relay.emulator.server import EmulatorNode, start_server
from relay.protocol.signing import sign_rest_request
from tests.conformance.wsclient import Client, Connect, official_client, publish
from tests.conformance.wsclient import connect as connect
from tests.conftest import TEST_APP, RunningEmulator, StartEmulator

WAIT = 3.0
RESERVED = "The 'pusher' namespace is reserved for internal usage"
COUNTING_OFF = "Cannot retrieve the subscription count because subscription counting is not enabled"

Response = tuple[str, dict[str, str], bytes]


# -- raw HTTP ---------------------------------------------------------------------------------------------------------


def signed(method: str, path: str, body: bytes = b"", *, upper_case: bool = False, **params: str) -> str:
    """``path?query`` signed for TEST_APP (parameter names upper-cased if asked: the API reads them in any case)."""
    query = sign_rest_request(
        TEST_APP.key, TEST_APP.secret, method, path, timestamp=int(time.time()), body=body, params=params
    )
    if upper_case:
        query = {name.upper(): value for name, value in query.items()}
    return f"{path}?{urlencode(query)}"


def request(method: str, target: str, body: bytes = b"", *headers: str, version: str = "1.1") -> bytes:
    lines = [f"{method} {target} HTTP/{version}", "Host: 127.0.0.1", *headers]
    if body:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def read_response(reader: asyncio.StreamReader, *, head_only: bool = False) -> Response:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
    status_line, *lines = head.decode("latin-1").split("\r\n")[:-2]
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    length = 0 if head_only else int(headers.get("content-length", "0"))
    return status_line, headers, await asyncio.wait_for(reader.readexactly(length), WAIT)


async def exchange(emulator: RunningEmulator, data: bytes, answers: int = 1) -> list[Response]:
    """Write ``data`` in one write and read ``answers`` responses."""
    reader, writer = await asyncio.open_connection("127.0.0.1", emulator.port)
    try:
        writer.write(data)
        await writer.drain()
        return [await read_response(reader) for _ in range(answers)]
    finally:
        writer.close()


def error_of(response: Response) -> str:
    message = json.loads(response[2])["error"]
    assert isinstance(message, str)
    return message


async def read_until_closed(
    reader: asyncio.StreamReader, within: float, since: float | None = None
) -> tuple[bytes, float]:
    """Everything up to the server's end of the connection, and how long after ``since`` (the call, by default) it
    came."""
    started = time.monotonic() if since is None else since
    data = await asyncio.wait_for(reader.read(), within)
    return data, time.monotonic() - started


async def assert_nothing_published(emulator: RunningEmulator, subscriber: Client, channel: str) -> None:
    """The next event ``subscriber`` gets on ``channel`` is one published now: nothing was published before."""
    await publish(emulator, channel, "marker", "{}")
    assert (await subscriber.expect("marker", channel))["data"] == "{}"


# -- 1. timeouts before the upgrade -----------------------------------------------------------------------------------

IDLE, REQUEST = 3.0, 0.5


@pytest.fixture
async def timed() -> AsyncIterator[RunningEmulator]:
    """An emulator whose HTTP timeouts are short: 3 s idle, 0.5 s for a request (75 s and 30 s by default)."""
    node = EmulatorNode(EmulatorConfig(apps=(TEST_APP,)), http_idle_timeout=IDLE, http_request_timeout=REQUEST)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = await start_server(node, sock=sock)
    yield RunningEmulator(node=node, port=sock.getsockname()[1], app=TEST_APP)
    server.close()
    await node.close(webhook_grace=0)


async def trickle(writer: asyncio.StreamWriter, data: bytes, interval: float) -> None:
    """Send ``data`` a byte at a time (slowloris), until the server ends the connection."""
    try:
        for byte in data:
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(interval)
    except ConnectionError:
        pass


async def test_unfinished_requests_are_answered_408_and_closed(timed: RunningEmulator) -> None:
    """A request whose head or body has not all come within the request timeout of its first byte gets 408 and
    ``Connection: close``, however slowly it keeps sending (a byte every 0.1 s does not renew it); 60 of them held
    open no longer exhaust the server's descriptors, and other clients are served meanwhile."""
    body = json.dumps({"name": "e", "channel": "room", "data": "x" * 100}).encode()
    partial_line = b"GET /apps/1/chan"
    partial_body = request("POST", signed("POST", "/apps/1/events", body), body)[:-50]
    slow_head = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"s" * 100
    connections = [await asyncio.open_connection("127.0.0.1", timed.port) for _ in range(60)]
    for index, (_, writer) in enumerate(connections[1:]):
        writer.write(partial_body if index % 2 else partial_line)
    written = time.monotonic()  # the server's timers start later, when it reads these bytes
    slow_writer = connections[0][1]
    slowloris = asyncio.create_task(trickle(slow_writer, slow_head, 0.1))
    async with httpx.AsyncClient(timeout=WAIT) as http:
        assert (await http.get(timed.http_url + "/health")).status_code == 200
    try:
        answers = await asyncio.gather(*(read_until_closed(reader, REQUEST + 3, written) for reader, _ in connections))
    finally:
        slowloris.cancel()
        for _, writer in connections:
            writer.close()
    for data, elapsed in answers:
        head, _, answer = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), data[:200]
        assert b"\r\nConnection: close" in head
        assert json.loads(answer) == {"error": "request not complete within 0.5 s"}
        assert elapsed >= REQUEST - 0.05  # measured from a moment before the server read the first byte
    assert timed.node.http_connections == set()


async def test_a_connection_that_sends_nothing_is_closed_without_an_answer(timed: RunningEmulator) -> None:
    """A connection that sends no byte (a browser's preconnect, or an attack) is closed after the request timeout,
    without a 408: there is no request to answer, and a browser might show one as the answer to its next."""
    reader, writer = await asyncio.open_connection("127.0.0.1", timed.port)
    try:
        data, elapsed = await read_until_closed(reader, REQUEST + 3)
    finally:
        writer.close()
    assert data == b""
    assert elapsed >= REQUEST - 0.05


async def test_an_idle_kept_alive_connection_lasts_the_idle_timeout_from_its_last_answer(
    timed: RunningEmulator,
) -> None:
    """Between requests the idle timeout applies, not the request timeout: a connection idle for twice the request
    timeout still serves its next request, and is closed (without a word) the idle timeout after that answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", timed.port)
    try:
        writer.write(request("GET", "/health"))
        assert (await read_response(reader))[0] == "HTTP/1.1 200 OK"
        await asyncio.sleep(2 * REQUEST)
        writer.write(request("GET", "/health"))
        status_line, headers, _ = await read_response(reader)
        assert (status_line, headers["connection"]) == ("HTTP/1.1 200 OK", "keep-alive")
        data, elapsed = await read_until_closed(reader, IDLE + 3)
    finally:
        writer.close()
    assert data == b""
    assert elapsed >= IDLE - 0.05


async def test_websockets_and_console_streams_outlive_the_http_timeouts(
    timed: RunningEmulator, connect: Connect
) -> None:
    """Once upgraded, a connection has the Pusher activity timeout only; the console's event stream is a response
    still being written: neither is closed by the HTTP timeouts."""
    subscriber = await connect(timed)
    await subscriber.subscribed("room")
    reader, writer = await asyncio.open_connection("127.0.0.1", timed.port)
    try:
        writer.write(request("GET", "/console/events?app=1"))
        assert (await read_response(reader, head_only=True))[0] == "HTTP/1.1 200 OK"
        await asyncio.sleep(IDLE + 1)
        assert await asyncio.wait_for(reader.read(65536), WAIT)  # what the stream sent meanwhile
        assert not reader.at_eof()
    finally:
        writer.close()
    await publish(timed, "room", "later", "{}")
    assert (await subscriber.expect("later", "room"))["data"] == "{}"


# -- 2. the 'pusher' event namespace ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["pusher-notification", "pusher:error", "pusher_internal:subscription_succeeded"])
async def test_event_names_starting_with_pusher_are_refused_everywhere_an_event_is_published(
    emulator: RunningEmulator, connect: Connect, name: str
) -> None:
    """Hosted Pusher answers 400 "The 'pusher' namespace is reserved for internal usage" to a trigger (or a batch)
    of such an event: clients would take it for the protocol's own (a forged pusher:error, a fake
    subscription_succeeded). The emulator refuses it the same way, nothing is published, and so does the console's
    test publish."""
    subscriber = await connect(emulator)
    await subscriber.subscribed("room")
    client = official_client(emulator)
    with pytest.raises(PusherBadRequest, match=RESERVED):
        await asyncio.to_thread(client.trigger, "room", name, {"x": 1})
    with pytest.raises(PusherBadRequest, match=RESERVED):
        await asyncio.to_thread(client.trigger_batch, [{"channel": "room", "name": name, "data": "{}"}])
    console = json.dumps({"app_id": "1", "channel": "room", "event": name, "data": "{}"}).encode()
    (answer,) = await exchange(emulator, request("POST", "/console/publish", console))
    assert answer[0] == "HTTP/1.1 400 Bad Request"
    assert error_of(answer).startswith(RESERVED)
    await assert_nothing_published(emulator, subscriber, "room")


async def test_ably_rest_keeps_its_own_event_name_rules(emulator: RunningEmulator) -> None:
    """The Ably side does not use the Pusher API's check: a message named ``pusher-notification``, which Ably allows,
    is still published through the Ably REST API."""
    basic = base64.b64encode(TEST_APP.ably_api_key.encode()).decode()
    async with httpx.AsyncClient(base_url=emulator.http_url, timeout=WAIT) as http:
        response = await http.post(
            "/channels/room/messages",
            json={"name": "pusher-notification", "data": "{}"},
            headers={"Authorization": f"Basic {basic}"},
        )
    assert response.status_code == 201, response.text


# -- 3. and 5. what uses the rate limit -------------------------------------------------------------------------------


async def test_only_signed_requests_use_the_rate_limit(start_emulator: StartEmulator) -> None:
    """Requests answered before their signature is checked (405 for the method, 404 for the route, 401) do not use
    the app's budget: a forger cannot lock its backend out. Signed requests do."""
    emulator = await start_emulator(app=replace(TEST_APP, api_rate_limit=2))
    forged = [
        request("GET", "/apps/1/events"),
        request("GET", "/apps/1/nothing"),
        request("GET", "/apps/1/channels?auth_key=app-key"),
    ]
    answers = await exchange(emulator, b"".join(forged * 3), answers=9)
    assert [status_line.split()[1] for status_line, _, _ in answers] == ["405", "404", "401"] * 3
    legitimate = [request("GET", signed("GET", "/apps/1/channels")) for _ in range(3)]
    answers = await exchange(emulator, b"".join(legitimate), answers=3)
    assert [status_line.split()[1] for status_line, _, _ in answers] == ["200", "200", "429"]


async def test_an_encoded_app_id_or_upper_case_auth_key_is_limited_and_counted(start_emulator: StartEmulator) -> None:
    """The rate limit and the usage meter find the app the way the API does: ``/apps/%31/…`` is app 1, and so is
    ``AUTH_KEY=app-key`` on the bare ``/users/{id}/terminate_connections``; neither gets past the limit any more."""
    emulator = await start_emulator(app=replace(TEST_APP, api_rate_limit=2))
    meter = emulator.node.states["1"].meter
    encoded = [request("GET", signed("GET", "/apps/%31/channels")) for _ in range(3)]
    answers = await exchange(emulator, b"".join(encoded), answers=3)
    assert [status_line.split()[1] for status_line, _, _ in answers] == ["200", "200", "429"]
    assert meter.api_requests == 2
    await asyncio.sleep(1.1)  # the budget refills: two a second
    path = "/users/u1/terminate_connections"
    aliases = [request("POST", signed("POST", path, b"{}", upper_case=True), b"{}") for _ in range(3)]
    answers = await exchange(emulator, b"".join(aliases), answers=3)
    assert [status_line.split()[1] for status_line, _, _ in answers] == ["200", "200", "429"]
    assert meter.api_requests == 4


# -- 4. Upgrade headers that are no WebSocket handshake ---------------------------------------------------------------

H2C = ("Connection: Upgrade, HTTP2-Settings", "Upgrade: h2c", "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA")
WEBSOCKET = (
    "Connection: Upgrade",
    "Upgrade: websocket",
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
    "Sec-WebSocket-Version: 13",
)


async def test_an_h2c_upgrade_is_ignored_and_answered_over_http_1_1(
    emulator: RunningEmulator, connect: Connect
) -> None:
    """curl --http2 (and Java's HttpClient) on http:// ask to switch to h2c; RFC 9110 §7.8 lets a server ignore that
    and answer over HTTP/1.1, which the client then keeps speaking. A GET is answered (not with 426), a POST is
    published (not 400), and the next request on the connection is served."""
    subscriber = await connect(emulator)
    await subscriber.subscribed("room")
    body = json.dumps({"name": "over-h1", "channel": "room", "data": "{}"}).encode()
    data = (
        request("GET", signed("GET", "/apps/1/channels"), b"", *H2C)
        + request("POST", signed("POST", "/apps/1/events", body), body, *H2C)
        + request("GET", "/health")
    )
    channels, published, health = await exchange(emulator, data, answers=3)
    assert (channels[0], json.loads(channels[2])) == ("HTTP/1.1 200 OK", {"channels": {"room": {}}})
    assert (published[0], published[2]) == ("HTTP/1.1 200 OK", b"{}")
    assert health[0] == "HTTP/1.1 200 OK"
    assert (await subscriber.expect("over-h1", "room"))["data"] == "{}"


async def test_a_thousand_pipelined_requests_for_another_protocol_are_each_answered(emulator: RunningEmulator) -> None:
    """Each request asking for another protocol is parsed again without its Upgrade header, and so is what follows
    it: done nested, a thousand in one write went past Python's recursion limit and the connection died after ~330."""
    smallest = b"GET / HTTP/1.1\r\nUpgrade:a\r\nConnection:upgrade\r\n\r\n"  # 334 to a read of 16 KiB
    answers = await exchange(emulator, smallest * 1000, answers=1000)
    assert [answer[0] for answer in answers] == ["HTTP/1.1 404 Not Found"] * 1000
    (health,) = await exchange(emulator, request("GET", "/health"))
    assert health[0] == "HTTP/1.1 200 OK"


async def test_only_a_get_is_upgraded_to_a_websocket(emulator: RunningEmulator, connect: Connect) -> None:
    """A POST carrying WebSocket handshake headers is an HTTP request (it used to be answered 101, its method taken
    for GET): it is published and answered over HTTP/1.1."""
    subscriber = await connect(emulator)
    await subscriber.subscribed("room")
    body = json.dumps({"name": "posted", "channel": "room", "data": "{}"}).encode()
    (answer,) = await exchange(emulator, request("POST", signed("POST", "/apps/1/events", body), body, *WEBSOCKET))
    assert (answer[0], answer[2]) == ("HTTP/1.1 200 OK", b"{}")
    assert (await subscriber.expect("posted", "room"))["data"] == "{}"


# -- 6. subscription_count on an app that does not count, and channels in a batch ------------------------------------


async def test_subscription_count_is_refused_unless_the_app_counts_subscriptions(
    emulator: RunningEmulator, connect: Connect
) -> None:
    """Hosted Pusher refuses ``info=subscription_count`` with 400 and this text unless subscription counting is on
    (off by default): on a channel query, and on a trigger or batch, which are then not published."""
    subscriber = await connect(emulator)
    await subscriber.subscribed("room")
    client = official_client(emulator)
    with pytest.raises(PusherBadRequest, match=COUNTING_OFF):
        await asyncio.to_thread(client.channel_info, "room", ["subscription_count"])
    body = json.dumps({"name": "counted", "channel": "room", "data": "{}", "info": "subscription_count"}).encode()
    (trigger,) = await exchange(emulator, request("POST", signed("POST", "/apps/1/events", body), body))
    assert (trigger[0], error_of(trigger)) == ("HTTP/1.1 400 Bad Request", COUNTING_OFF)
    batch = [{"channel": "room", "name": "counted", "data": "{}", "info": "subscription_count"}]
    with pytest.raises(PusherBadRequest, match=COUNTING_OFF):
        await asyncio.to_thread(client.trigger_batch, batch)
    await assert_nothing_published(emulator, subscriber, "room")
    assert await asyncio.to_thread(client.channel_info, "room") == {"occupied": True}


async def test_a_batch_event_with_a_channels_list_is_refused(emulator: RunningEmulator, connect: Connect) -> None:
    """A batch event names one ``channel``: one with ``channels`` was published to every channel listed, which
    Pusher does not do. It is refused with 400 naming the field, and nothing in the batch is published."""
    subscriber = await connect(emulator)
    await subscriber.subscribed("room")
    body = json.dumps(
        {
            "batch": [
                {"name": "first", "channel": "room", "data": "{}"},
                {"name": "listed", "channels": ["room", "other"], "data": "{}"},
            ]
        }
    ).encode()
    (answer,) = await exchange(emulator, request("POST", signed("POST", "/apps/1/batch_events", body), body))
    assert answer[0] == "HTTP/1.1 400 Bad Request"
    assert error_of(answer) == "batch[1]: 'channels' is not allowed in a batch event; give one 'channel'"
    await assert_nothing_published(emulator, subscriber, "room")


# -- 7. the head limit whatever the reads -----------------------------------------------------------------------------


def with_padding(size: int, target: str = "/health") -> bytes:
    return f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: {'p' * size}\r\n\r\n".encode()


@pytest.mark.parametrize("size", [70_000, 120_000])
async def test_a_head_over_64_kib_is_refused_when_it_arrives_in_one_write(emulator: RunningEmulator, size: int) -> None:
    """The 64 KiB limit on a request line and headers held only for heads that came in several reads: 70 KB and
    120 KB heads written at once (one read for the server) were served. They get 431, alone or behind another
    request in the same write."""
    (alone,) = await exchange(emulator, with_padding(size))
    assert alone[0] == "HTTP/1.1 431 Request Header Fields Too Large"
    assert error_of(alone) == "request line and headers over 65536 bytes"
    first, second = await exchange(emulator, request("GET", "/health") + with_padding(size), answers=2)
    assert (first[0], second[0]) == ("HTTP/1.1 200 OK", "HTTP/1.1 431 Request Header Fields Too Large")


async def test_a_head_just_under_the_limit_is_served_in_any_reads(emulator: RunningEmulator) -> None:
    """A 65,000-byte head is served, written alone or behind another request in one write."""
    head = with_padding(65_000 - len(with_padding(0)))
    assert len(head) == 65_000
    (alone,) = await exchange(emulator, head)
    first, second = await exchange(emulator, request("GET", "/health") + head, answers=2)
    assert (alone[0], first[0], second[0]) == ("HTTP/1.1 200 OK",) * 3


async def test_a_pipelined_head_under_the_limit_arriving_in_pieces_is_served(emulator: RunningEmulator) -> None:
    """A head that begins in the read that ended the request before it is charged a whole read up front (its share
    of the read is unknown): that estimate, growing with each later piece, refused a 60 KB head at ~48 KB with 431.
    Heads are measured exactly when complete."""
    head = with_padding(60_000)
    reader, writer = await asyncio.open_connection("127.0.0.1", emulator.port)
    try:
        writer.write(request("GET", "/health") + head[:100])
        await writer.drain()
        first = await read_response(reader)
        for start in range(100, len(head), 5_000):
            writer.write(head[start : start + 5_000])
            await writer.drain()
            await asyncio.sleep(0.01)  # one read each
        second = await read_response(reader)
    finally:
        writer.close()
    assert (first[0], second[0]) == ("HTTP/1.1 200 OK", "HTTP/1.1 200 OK")


# -- 8. HEAD on the API's GET routes, and Allow on 405 ---------------------------------------------------------------


@pytest.mark.parametrize("signed_as", ["HEAD", "GET"])
async def test_a_signed_head_is_answered_like_its_get_without_the_body(
    emulator: RunningEmulator, signed_as: str
) -> None:
    """HEAD is GET without the content (RFC 9110 §9.3.2): a HEAD on a GET route, signed as HEAD or as the GET it
    stands for (``curl -I`` on a signed URL), gets GET's status and headers, no body, and the next response on the
    connection follows at once."""
    (get,) = await exchange(emulator, request("GET", signed("GET", "/apps/1/channels")))
    reader, writer = await asyncio.open_connection("127.0.0.1", emulator.port)
    try:
        writer.write(request("HEAD", signed(signed_as, "/apps/1/channels")) + request("GET", "/health"))
        head_status, head_headers, _ = await read_response(reader, head_only=True)
        following = await read_response(reader)
    finally:
        writer.close()
    assert (head_status, head_headers["content-length"]) == (get[0], get[1]["content-length"])
    assert head_headers["content-type"] == "application/json"
    assert following[0] == "HTTP/1.1 200 OK" and json.loads(following[2]) == {"status": "ok"}


async def test_every_405_says_what_is_allowed(emulator: RunningEmulator) -> None:
    """RFC 9110 §15.5.6: a 405 carries ``Allow`` with the methods the resource answers."""
    body = b"{}"
    wrong_methods = (
        request("POST", signed("POST", "/apps/1/channels", body), body)
        + request("GET", "/apps/1/events")
        + request("GET", "/console/publish")
    )
    answers = await exchange(emulator, wrong_methods, answers=3)
    assert [(status_line, headers["allow"]) for status_line, headers, _ in answers] == [
        ("HTTP/1.1 405 Method Not Allowed", "GET, HEAD, OPTIONS"),
        ("HTTP/1.1 405 Method Not Allowed", "POST, OPTIONS"),
        ("HTTP/1.1 405 Method Not Allowed", "POST"),
    ]


# -- 9. Expect: 100-continue from an HTTP/1.0 client ------------------------------------------------------------------


async def test_an_http_1_0_expectation_gets_no_100_continue(emulator: RunningEmulator) -> None:
    """An HTTP/1.0 client does not know 1xx responses, and RFC 9110 §10.1.1 says to ignore its ``Expect``: the
    first thing it reads is the answer to its request, sent once the body has come."""
    body = json.dumps({"name": "e", "channel": "room", "data": "x"}).encode()
    head = request("POST", signed("POST", "/apps/1/events", body), body, "Expect: 100-continue", version="1.0")
    reader, writer = await asyncio.open_connection("127.0.0.1", emulator.port)
    try:
        writer.write(head[: -len(body)])
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reader.read(1), 0.3)
        writer.write(body)
        status_line, headers, answer = await read_response(reader)
    finally:
        writer.close()
    assert (status_line, headers["connection"], answer) == ("HTTP/1.1 200 OK", "close", b"{}")


async def test_no_request_after_an_answer_that_closes_the_connection_is_handled(
    start_emulator: StartEmulator, connect: Connect
) -> None:
    """RFC 9112 §9.6: after answering with ``Connection: close`` the server handles no further request. A body over
    ``max_request_bytes`` is answered 413 as soon as its ``Content-Length`` is read, but the parser goes on through
    it: a publish pipelined behind it was handled (published) and its answer dropped."""
    emulator = await start_emulator(max_request_bytes=1000)
    subscriber = await connect(emulator)
    await subscriber.subscribed("room")
    too_large = json.dumps({"name": "too-large", "channel": "room", "data": "x" * 2000}).encode()
    behind = json.dumps({"name": "behind", "channel": "room", "data": "{}"}).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", emulator.port)
    try:
        writer.write(
            request("POST", signed("POST", "/apps/1/events", too_large), too_large)
            + request("POST", signed("POST", "/apps/1/events", behind), behind)
        )
        status_line, headers, _ = await read_response(reader)
        rest, _ = await read_until_closed(reader, WAIT)
    finally:
        writer.close()
    assert (status_line, headers["connection"], rest) == ("HTTP/1.1 413 Payload Too Large", "close", b"")
    await assert_nothing_published(emulator, subscriber, "room")


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


async def test_data_nested_at_the_parsers_limit_is_refused_not_fatal(
    start_emulator: StartEmulator, connect: Connect
) -> None:
    """Data the parser just reads may be a level too deep to write back: a client event's RecursionError escaped the
    session (no pusher:error, the socket aborted, a traceback logged), and the HTTP API and the console answered 500.
    Around that depth, each event is relayed or refused as malformed; the sender stays connected, the API and the
    console answer 200 or 400."""
    app = replace(TEST_APP, limits=replace(TEST_APP.limits, client_events_per_second=1000))
    emulator = await start_emulator(app=app)
    sender, receiver = await connect(emulator), await connect(emulator)
    for client in (sender, receiver):
        await client.subscribed("private-deep")
    outcomes: set[str] = set()
    for depth in range(500, 1020):
        await sender.ws.send('{"event":"client-deep","channel":"private-deep","data":' + _nested(depth) + "}")
        await sender.send("pusher:ping", {})
        frame = await sender.recv()
        if frame["event"] == "pusher:error":
            assert frame["data"]["message"] in (
                "client event data nests arrays and objects too deeply",
                "frame nests arrays and objects too deeply",
            ), frame
            outcomes.add(frame["data"]["message"])
            frame = await sender.recv()
        else:
            assert (await receiver.expect("client-deep"))["data"] == _nested(depth)  # relayed as text
            outcomes.add("relayed")
        assert frame["event"] == "pusher:pong", frame
    assert "relayed" in outcomes and len(outcomes) >= 2, outcomes
    statuses, console_statuses = set(), set()
    async with httpx.AsyncClient(base_url=emulator.http_url) as http:
        for depth in range(500, 1020):
            body = ('{"name":"deep","channel":"room","data":' + _nested(depth) + "}").encode()
            answer = await http.post(signed("POST", "/apps/1/events", body), content=body)
            assert answer.status_code in (200, 400), (depth, answer.text)
            statuses.add(answer.status_code)
            console = ('{"app_id":"1","channel":"room","event":"deep","data":' + _nested(depth) + "}").encode()
            answer = await http.post("/console/publish", content=console, headers={"content-type": "application/json"})
            assert answer.status_code in (200, 400), (depth, answer.text)
            console_statuses.add(answer.status_code)
    assert statuses == console_statuses == {200, 400}
    await sender.sync()
