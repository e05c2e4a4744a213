"""Fixes from an audit of the emulator's Ably side, each checked with the clients that showed it:

- ``GET /channels/{ch}/presence`` pages with ``Link: rel="next"`` (it used to cut the set at ``limit`` with no link,
  so ably-js's ``hasNext()`` was false and members went missing), followed by ably-js and ably-python;
- ``/stats`` and ``/push/…`` are answered by the Ably REST API with Ably's 40400 (they fell through to the Pusher HTTP
  API's 404, which ably-js rejected with no code);
- docs/ably.md says which operations allow an attach and where ably-python cannot exchange a TokenRequest.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import msgpack  # type: ignore[import-untyped]
import pytest
from ably import AblyRealtime, AblyRest  # type: ignore[import-untyped]
from ablysupport import (
    ACK,
    API_KEY,
    ATTACH,
    ATTACHED,
    ERROR,
    PRESENCE,
    AblyWire,
    ably_wire,
    jwt_token,
    page_links,
    run_node,
)

from relay import Relay
from tests.conftest import RunningEmulator

ROOT = Path(__file__).parents[2]
ABLY_DOC = (ROOT / "docs" / "ably.md").read_text()
PROVIDERS_DOC = (ROOT / "docs" / "providers.md").read_text()
BASIC = {"Authorization": "Basic " + base64.b64encode(API_KEY.encode()).decode()}
# Ably's capability operations (reference §B): the ones that allow an attach, and the others.
ATTACHING = ("publish", "subscribe", "presence", "*")
NOT_ATTACHING = (
    "history",
    "channel-metadata",
    "stats",
    "push-subscribe",
    "push-admin",
    "privileged-headers",
    "object-subscribe",
    "object-publish",
    "annotation-publish",
    "annotation-subscribe",
)


@pytest.fixture
async def http(ably_emulator: RunningEmulator) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=ably_emulator.http_url, headers={"X-Ably-Version": "6"}) as client:
        yield client


def assert_ably_error(response: httpx.Response, status: int, code: int, fragment: str) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert (error["code"], error["statusCode"]) == (code, status)
    assert fragment in error["message"], error
    assert response.headers["x-ably-errorcode"] == str(code)
    assert fragment in response.headers["x-ably-errormessage"]


async def enter(wire: AblyWire, channel: str, *client_ids: str, action: int = 2) -> None:
    """Enter (or, with ``action=3``, leave) ``client_ids`` on a key connection, one PRESENCE each, ACKed."""
    for client_id in client_ids:
        serial = await wire.presence(channel, {"action": action, "clientId": client_id, "data": f"data-{client_id}"})
        await wire.expect(PRESENCE)
        assert (await wire.expect(ACK))["msgSerial"] == serial


def next_link(response: httpx.Response) -> str | None:
    """The ``rel="next"`` target of a ``Link`` header, in the only form ably-js follows (``./name?query``)."""
    return page_links(response.headers.get("link")).get("next")


# -- 1. presence pages ------------------------------------------------------------------------------------------


async def test_rest_presence_pages_link_to_the_last_member(
    http: httpx.AsyncClient, ably_emulator: RunningEmulator, wires: list[Any]
) -> None:
    """§A.6/A.1: ``GET /channels/{ch}/presence?limit=2`` with five members answers two and a ``Link: rel="next"``
    (relative, as ably-js parses it) that carries the filters; following it reaches every member once, the last
    page has no link. The cursor is a member, not an offset: a member of page 1 leaving does not hide one of page 2."""
    wire = await ably_wire(ably_emulator)
    wires.append(wire)
    await wire.attach("room")
    await enter(wire, "room", "m1", "m2", "m3", "m4", "m5")

    url = httpx.URL("/channels/room/presence?limit=2")
    first = await http.get(url, headers=BASIC)
    assert first.status_code == 200 and len(first.json()) == 2
    link = next_link(first)
    assert link is not None and link.startswith("./presence?") and "limit=2" in link
    await enter(wire, "room", first.json()[0]["clientId"], action=3)  # leaves between pages
    seen = [member["clientId"] for member in first.json()]
    pages = [len(first.json())]
    while link is not None:
        url = url.join(link)
        page = await http.get(url, headers=BASIC)
        assert page.status_code == 200, page.text
        seen += [member["clientId"] for member in page.json()]
        pages.append(len(page.json()))
        link = next_link(page)
    assert pages == [2, 2, 1]
    assert sorted(seen) == ["m1", "m2", "m3", "m4", "m5"]

    filtered = await http.get("/channels/room/presence", params={"clientId": "m4", "limit": "1"}, headers=BASIC)
    assert [member["clientId"] for member in filtered.json()] == ["m4"] and next_link(filtered) is None
    await enter(wire, "room", "m1")
    by_connection = {"connectionId": wire.connected["connectionId"], "limit": "3"}
    page = await http.get("/channels/room/presence", params=by_connection, headers=BASIC)
    link = next_link(page)
    assert link is not None and f"connectionId={wire.connected['connectionId']}" in link
    rest = await http.get(httpx.URL("/channels/room/presence").join(link), headers=BASIC)
    assert len(page.json()) + len(rest.json()) == 5 and next_link(rest) is None
    whole = await http.get("/channels/room/presence", headers={**BASIC, "Accept": "application/x-msgpack"})
    assert len(msgpack.unpackb(whole.content)) == 5 and "next" not in page_links(whole.headers.get("link"))


async def test_ably_python_follows_presence_pages(ably_emulator: RunningEmulator, wires: list[Any]) -> None:
    """ably-python's ``presence.get(limit=2)``: ``has_next()`` and ``next()`` reach the third member."""
    wire = await ably_wire(ably_emulator)
    wires.append(wire)
    await wire.attach("room")
    await enter(wire, "room", "a", "b", "c")
    rest = AblyRest(key=API_KEY, endpoint="127.0.0.1", port=ably_emulator.port, tls=False, use_token_auth=True)
    try:
        page = await rest.channels.get("room").presence.get(limit=2)
        pages = [[member.client_id for member in page.items]]
        while page.has_next():
            page = await page.next()
            pages.append([member.client_id for member in page.items])
    finally:
        await rest.close()
    assert [len(items) for items in pages] == [2, 1]
    assert sorted(client_id for items in pages for client_id in items) == ["a", "b", "c"]


async def test_ably_js_follows_presence_pages_and_gets_ably_errors_for_stats_and_push(
    node_modules: Path, ably_emulator: RunningEmulator
) -> None:
    """ably-js: ``presence.get({limit: 2})`` over five members is three pages, ``hasNext()`` until the last; and
    ``rest.stats()`` and ``push.admin`` lists reject with 40400/404 (they rejected with no code: Pusher's 404)."""
    run = await run_node("ably_js_rest_paging.mjs", ably_emulator)
    assert run.summary["checks"] == ["presence-pages", "presence-filter", "stats", "push"]


# -- 2. stats and push ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "fragment"),
    [
        ("GET", "/stats", "Stats are not emulated"),
        ("GET", "/stats?unit=hour&limit=5", "Stats are not emulated"),
        ("GET", "/push/channelSubscriptions?channel=room", "Push is not emulated"),
        ("GET", "/push/deviceRegistrations/dev-1", "Push is not emulated"),
        ("POST", "/push/publish", "Push is not emulated"),
        ("DELETE", "/push/channelSubscriptions", "Push is not emulated"),
    ],
)
async def test_stats_and_push_are_ably_errors(http: httpx.AsyncClient, method: str, path: str, fragment: str) -> None:
    """Not emulated, and said in Ably's format: 404, ``{"error": {code 40400, …}}`` and ``X-Ably-ErrorCode``, in
    msgpack when asked for (they were the Pusher HTTP API's 404: no code an Ably SDK reads)."""
    response = await http.request(method, path, headers=BASIC, json={} if method == "POST" else None)
    assert_ably_error(response, 404, 40400, fragment)
    packed = await http.request(method, path, headers={**BASIC, "Accept": "application/x-msgpack"})
    assert packed.headers["content-type"] == "application/x-msgpack"
    assert msgpack.unpackb(packed.content)["error"]["code"] == 40400
    assert (await http.get("/time")).status_code == 200


# -- 3. docs: which operations allow an attach ------------------------------------------------------------------


def documented_attach_operations() -> set[str]:
    """The operations docs/ably.md's capability paragraph names for attaching ("attaching needs … on the channel")."""
    match = re.search(r"attaching needs (.+?) on the channel", ABLY_DOC, re.DOTALL)
    assert match is not None, "docs/ably.md no longer says what attaching needs"
    return set(re.findall(r"`([^`]+)`", match.group(1)))


async def test_docs_name_exactly_the_operations_that_allow_an_attach(
    ably_emulator: RunningEmulator, wires: list[Any]
) -> None:
    """A token with one operation on a channel attaches to it for ``publish``, ``subscribe``, ``presence`` and
    ``*`` only (``history`` or ``channel-metadata`` alone is 40160), and docs/ably.md names exactly those (it said
    "some operation")."""
    attached = set()
    for operation in (*ATTACHING, *NOT_ATTACHING):
        wire = await ably_wire(ably_emulator, f"access_token={jwt_token({'capch': [operation]})}")
        wires.append(wire)
        await wire.send({"action": ATTACH, "channel": "capch"})
        answer = await wire.recv()
        if answer["action"] == ATTACHED:
            attached.add(operation)
        else:
            assert answer["action"] == ERROR and answer["error"]["code"] == 40160, (operation, answer)
    assert attached == set(ATTACHING)
    assert documented_attach_operations() == set(ATTACHING)


# -- 4. docs: where ably-python exchanges a TokenRequest --------------------------------------------------------


@pytest.fixture
def auth_endpoint() -> Iterator[tuple[str, dict[str, bytes]]]:
    """An app's token endpoint on 127.0.0.1: answers ``answer["body"]`` as JSON to GET and POST."""
    answer: dict[str, bytes] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = answer["body"]
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_POST = do_GET

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/ably/token", answer
    server.shutdown()
    server.server_close()


async def test_ably_python_exchanges_token_requests_over_rest_only_as_documented(
    ably_emulator: RunningEmulator, http: httpx.AsyncClient, auth_endpoint: tuple[str, dict[str, bytes]]
) -> None:
    """The library's signed TokenRequest from an ``auth_url``: ably-python's REST client exchanges it; its realtime
    client cannot (ably-python#567: the port in ``endpoint`` makes its requestToken URL ``…:6001:80``) and is
    disconnected with ``Invalid port``, but connects when the endpoint answers TokenDetails. docs/ably.md and
    docs/providers.md said both ably-python clients exchange it here."""
    url, answer = auth_endpoint
    with Relay(f"ably://{API_KEY}@127.0.0.1:{ably_emulator.port}?tls=false") as library:
        token_request = library.authorize_channel("1.1", "room", {"id": "py"})
        another = library.authorize_channel("1.1", "room", {"id": "py"})  # a nonce is exchanged once
    answer["body"] = json.dumps(token_request).encode()
    rest = AblyRest(auth_url=url, endpoint="127.0.0.1", port=ably_emulator.port, tls=False)
    try:
        assert (await rest.channels.get("room").presence.get()).items == []
    finally:
        await rest.close()
    realtime = AblyRealtime(auth_url=url, endpoint=f"127.0.0.1:{ably_emulator.port}", tls=False)
    try:  # it fails at once, before connecting: wait for it from here, with no await in between
        change = await asyncio.wait_for(realtime.connection.once_async("disconnected"), 5)
        assert "Invalid port" in str(change.reason)
    finally:
        await realtime.close()

    exchanged = await http.post(f"/keys/{another['keyName']}/requestToken", json=another)
    assert exchanged.status_code == 200, exchanged.text
    answer["body"] = exchanged.content
    realtime = AblyRealtime(auth_url=url, endpoint=f"127.0.0.1:{ably_emulator.port}", tls=False)
    try:
        await asyncio.wait_for(realtime.connection.once_async("connected"), 5)
        await asyncio.wait_for(realtime.channels.get("room").attach(), 5)
        assert realtime.auth.client_id == "py"
    finally:
        await realtime.close()

    authentication = ABLY_DOC.split("## Authentication", 1)[1].split("\n## ", 1)[0]
    assert "Invalid port" in authentication and "ably-python#567" in authentication
    assert "ably-python's REST client" in authentication
    [row] = [line for line in PROVIDERS_DOC.splitlines() if line.startswith("| channel auth body")]
    assert "ably.md#authentication" in row and "realtime" in row
