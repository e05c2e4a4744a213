"""The emulator's HTTP/1.1 on its port: HEAD answers, ``Expect: 100-continue``, and the Ably REST format choice."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import msgpack  # type: ignore[import-untyped]
import pytest

from relay.protocol.signing import sign_rest_request
from tests.conformance.wsclient import Connect, publish
from tests.conformance.wsclient import connect as connect
from tests.conftest import RunningEmulator

RECV_TIMEOUT = 2.0


async def read_head(reader: asyncio.StreamReader, within: float = RECV_TIMEOUT) -> tuple[str, dict[str, str]]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), within)
    status_line, *lines = head.decode("latin-1").split("\r\n")[:-2]
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    return status_line, headers


async def test_head_response_carries_no_body_so_keep_alive_stays_in_sync(emulator: RunningEmulator) -> None:
    """RFC 9110 §9.3.2: a response to HEAD has no content. ``HEAD /health`` (what load balancers and uptime checkers
    often send) gets GET's head without its body, so the next response on a kept-alive connection starts with its
    status line."""
    reader, writer = await asyncio.open_connection("127.0.0.1", emulator.port)
    try:
        writer.write(b"HEAD /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\nGET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        await writer.drain()
        status_line, headers = await read_head(reader)
        assert status_line == "HTTP/1.1 200 OK"
        assert headers.get("connection") == "keep-alive"
        following = await asyncio.wait_for(reader.readexactly(len(b"HTTP/1.1 ")), RECV_TIMEOUT)
    finally:
        writer.close()
    assert following == b"HTTP/1.1 ", f"HEAD response was followed by a body: {following!r}"


async def test_expect_100_continue_is_answered(emulator: RunningEmulator) -> None:
    """RFC 9110 §10.1.1: a server receiving ``Expect: 100-continue`` sends 100 (Continue) or a final status right
    after the headers. curl (so Guzzle, so pusher-http-php as Laravel broadcasts with it) sends the expectation for
    bodies over 1 KiB and waits 1 s for the 100 before sending the body: without it every such publish pays that
    second."""
    body = json.dumps({"name": "e", "channel": "room", "data": "x" * 2000}).encode()
    query = httpx.QueryParams(
        sign_rest_request(
            emulator.app.key, emulator.app.secret, "POST", "/apps/1/events", timestamp=int(time.time()), body=body
        )
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", emulator.port)
    try:
        writer.write(
            f"POST /apps/1/events?{query} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\n\r\n".encode()
        )
        await writer.drain()
        try:  # without the 100, nothing would come before the body: 5 s leaves a loaded machine room
            status_line, _ = await read_head(reader, within=5)
        except TimeoutError:
            status_line = "(nothing within 5 s)"
        writer.write(body)
        await writer.drain()
    finally:
        writer.close()
    assert status_line == "HTTP/1.1 100 Continue", status_line


async def test_ably_accept_header_wins_over_format_param(emulator: RunningEmulator) -> None:
    """ably-and-pricing.md A.1: the response format is chosen by ``Accept`` or ``?format=``, and "``Accept`` wins".
    ``?format=msgpack`` does not override ``Accept: application/json``."""
    async with httpx.AsyncClient(timeout=5.0) as http:
        response = await http.get(
            emulator.http_url + "/time", params={"format": "msgpack"}, headers={"Accept": "application/json"}
        )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json", msgpack.unpackb(response.content)


@pytest.mark.parametrize(
    ("request_bytes", "status_line", "message"),
    [
        (
            b"POST /channels/room/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: " + b"x" * 90_000,
            "HTTP/1.1 431 Request Header Fields Too Large",
            "request line and headers over 65536 bytes",
        ),
        (
            b"POST /channels/room/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: ten\r\n\r\n",
            "HTTP/1.1 400 Bad Request",
            "malformed HTTP request",
        ),
    ],
    ids=["head-too-large", "malformed"],
)
async def test_refusals_before_routing_are_in_ablys_format_on_ablys_paths(
    emulator: RunningEmulator, request_bytes: bytes, status_line: str, message: str
) -> None:
    """A head over 64 KiB (431) or malformed HTTP (400) on an Ably REST path is answered in Ably's error format, as a
    413 there is: ably-js and ably-python read ``error.code`` and ``X-Ably-ErrorCode``, and found only the Pusher
    API's ``{"error": ...}``. The next request is served."""
    reader, writer = await asyncio.open_connection("127.0.0.1", emulator.port)
    try:
        writer.write(request_bytes)
        await writer.drain()
        got_status_line, headers = await read_head(reader)
        body = json.loads(await asyncio.wait_for(reader.read(), RECV_TIMEOUT))
    finally:
        writer.close()
    status = int(status_line.split()[1])
    assert got_status_line == status_line
    assert (headers["x-ably-errorcode"], headers["connection"]) == ("40000", "close")
    assert body["error"]["code"] == 40000
    assert (body["error"]["statusCode"], body["error"]["message"]) == (status, message)
    async with httpx.AsyncClient(timeout=5.0) as http:
        assert (await http.get(emulator.http_url + "/time")).status_code == 200


async def test_a_request_head_over_64_kib_is_refused_and_others_are_served(
    emulator: RunningEmulator, connect: Connect
) -> None:
    """A request line and headers are not buffered without bound: one byte past 64 KiB, still arriving, the emulator
    answers 431 and closes (a header trickled in pieces counts as it arrives). Requests with ordinary heads,
    pipelined, still work, and so does a subscriber connected all along."""
    subscriber = await connect(emulator)
    await subscriber.subscribed("bystander")
    reader, writer = await asyncio.open_connection("127.0.0.1", emulator.port)
    try:
        started = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: "
        writer.write(started)
        for _ in range(63):
            writer.write(b"x" * 1024)
            await writer.drain()
        writer.write(b"x" * (1024 - len(started) + 1))  # 65,537 bytes in all, the last header unfinished
        status_line, headers = await read_head(reader)
        assert status_line == "HTTP/1.1 431 Request Header Fields Too Large"
        assert headers["connection"] == "close"
        body = await asyncio.wait_for(reader.read(), RECV_TIMEOUT)
        assert json.loads(body) == {"error": "request line and headers over 65536 bytes"}
    finally:
        writer.close()
    reader, writer = await asyncio.open_connection("127.0.0.1", emulator.port)
    try:
        padding = b"X-Padding: " + b"y" * 30_000 + b"\r\n"
        request = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n" + padding + b"\r\n"
        writer.write(request * 3)  # three under the limit, pipelined: 90 KB in all
        for _ in range(3):
            status_line, headers = await read_head(reader)
            assert status_line == "HTTP/1.1 200 OK"
            assert json.loads(await reader.readexactly(int(headers["content-length"]))) == {"status": "ok"}
    finally:
        writer.close()
    await publish(emulator, "bystander", "after", '{"ok":true}')
    assert (await subscriber.expect("after", "bystander"))["data"] == '{"ok":true}'
