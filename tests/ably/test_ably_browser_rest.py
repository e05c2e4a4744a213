"""ably-js's REST client in Chromium, on a page of another origin: it sends its Authorization header with
credentials included, which a browser refuses when the answer allows the origin "*", so every REST call with a key or
a token failed with "XHR error occurred" (the realtime connection, and the TokenRequest exchange, which send no
Authorization, worked). The emulator now allows the page's origin by name, as Ably does."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
from ablysupport import API_KEY, MESSAGE, AblyWire, PusherWire, ably_wire
from playwright.async_api import Browser

from tests.conftest import RunningEmulator
from tests.operations.test_console import browser as browser

ABLY_JS = Path(__file__).resolve().parents[1] / "node" / "node_modules" / "ably" / "build" / "ably.min.js"
PAGE = b'<!doctype html><meta charset="utf-8"><script src="/ably.min.js"></script>'


async def serve_page(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """The page and ably-js, from another port than the emulator's: another origin, on loopback as it is (Chromium
    refuses a page of a public address to reach loopback at all)."""
    path = (await reader.readline()).split()[1]
    while (await reader.readline()) not in (b"\r\n", b""):
        pass
    body, kind = (ABLY_JS.read_bytes(), "text/javascript") if path == b"/ably.min.js" else (PAGE, "text/html")
    head = f"HTTP/1.1 200 OK\r\nContent-Type: {kind}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    writer.write(head.encode() + body)
    await writer.drain()
    writer.close()


async def test_ably_js_rest_with_a_key_works_from_a_page_of_another_origin(
    ably_emulator: RunningEmulator, browser: Browser, wires: list[AblyWire | PusherWire]
) -> None:
    subscriber = await ably_wire(ably_emulator)
    wires.append(subscriber)
    await subscriber.attach("orders")
    pages = await asyncio.start_server(serve_page, "127.0.0.1", 0)
    page_origin = f"http://127.0.0.1:{pages.sockets[0].getsockname()[1]}"
    page = await browser.new_page()
    await page.goto(f"{page_origin}/")
    options = {"key": API_KEY, "endpoint": "127.0.0.1", "port": ably_emulator.port, "tls": False, "fallbackHosts": []}
    answers = await page.evaluate(
        """async (options) => {
            const rest = new Ably.Rest(options);
            const channel = rest.channels.get('orders');
            await channel.publish('shipped', {id: 7});
            const status = await channel.status();
            return {occupied: status.status.isActive, members: (await channel.presence.get()).items.length};
        }""",
        options,
    )
    assert answers == {"occupied": True, "members": 0}
    message = await subscriber.expect(MESSAGE)
    assert [(m["name"], json.loads(m["data"]), m["encoding"]) for m in message["messages"]] == [
        ("shipped", {"id": 7}, "json")
    ]

    async with httpx.AsyncClient(base_url=ably_emulator.http_url) as http:  # what a browser's preflight gets
        preflight = await http.options("/channels/orders/messages", headers={"Origin": page_origin})
        plain = await http.get("/time")
    assert preflight.status_code == 204
    assert (preflight.headers["access-control-allow-origin"], preflight.headers["vary"]) == (page_origin, "Origin")
    assert preflight.headers["access-control-allow-credentials"] == "true"
    assert plain.headers["access-control-allow-origin"] == "*"  # no Origin: not a browser's request
    assert "access-control-allow-credentials" not in plain.headers
    pages.close()


async def test_ably_js_in_a_browser_pages_and_fails_through_the_envelope(
    ably_emulator: RunningEmulator, browser: Browser
) -> None:
    """ably-js in a browser cannot read Link headers (its XHR ``supportsLinkHeaders`` is false), so it asks every
    paginated GET for ``envelope=json`` and reads the status, the answer and the next page's ``link`` from the body:
    history pages forward with ``next()``, and an error keeps its code and status."""
    pages = await asyncio.start_server(serve_page, "127.0.0.1", 0)
    page = await browser.new_page()
    await page.goto(f"http://127.0.0.1:{pages.sockets[0].getsockname()[1]}/")
    options = {"key": API_KEY, "endpoint": "127.0.0.1", "port": ably_emulator.port, "tls": False, "fallbackHosts": []}
    answers = await page.evaluate(
        """async (options) => {
            const channel = new Ably.Rest(options).channels.get('paged');
            await channel.publish([{name: 'a'}, {name: 'b'}, {name: 'c'}]);
            const first = await channel.history({limit: 2});
            const second = await first.next();
            let error = null;
            try { await channel.history({limit: 5000}); } catch (e) { error = [e.code, e.statusCode]; }
            return {
                first: first.items.map((m) => m.name), more: first.hasNext(),
                second: second.items.map((m) => m.name), last: second.isLast(), error,
            };
        }""",
        options,
    )
    assert answers == {"first": ["c", "b"], "more": True, "second": ["a"], "last": True, "error": [40003, 400]}
    pages.close()
