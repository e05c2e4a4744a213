"""The debug console (issue 4): the page in headless Chromium showing live connections, channels, presence members
and the event stream, its test-publish form, and who may open it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, async_playwright, expect

from relay.emulator.config import Webhook
from tests.conftest import StartEmulator
from tests.operations.support import APP, ARTIFACTS, publish, ws_client
from tests.webhook_receiver import Receiver

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
CHROMIUM_INSTALLED = Path(CHROMIUM).is_file()
TOKEN = "console-token-for-tests"


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not CHROMIUM_INSTALLED:
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium)")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        await browser.close()


async def test_console_shows_connections_channels_members_and_events_and_publishes(
    start_emulator: StartEmulator, browser: Browser, receiver: Receiver
) -> None:
    """The page lists what real clients do, live: connections, occupied channels with subscriber counts, presence
    members; its event stream shows HTTP publishes, client events, subscribes/unsubscribes and webhooks with their
    status; its form publishes to a real subscriber. The token travels from the page's URL to its requests."""
    app = replace(
        APP, webhooks=(Webhook(url=receiver.url),), webhook_batch_ms=20, webhook_delay=0.2, webhook_retry_for=0.1
    )
    emulator = await start_emulator(app=app, console_token=TOKEN)
    page = await browser.new_page(viewport={"width": 1400, "height": 1100})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    await page.goto(f"{emulator.http_url}/console?token={TOKEN}")
    await expect(page.locator("#status")).to_have_text("live")
    await expect(page.locator("#app")).to_have_value("1")

    alice = await ws_client(emulator.ws_url())
    bob = await ws_client(emulator.ws_url())
    await alice.subscribe("news", app)
    await alice.subscribe("presence-room", app, user_id="alice")
    await bob.subscribe("presence-room", app, user_id="bob")
    await bob.send("client-typing", {"who": "bob"}, channel="presence-room")
    typed = await alice.expect("client-typing")
    assert typed["user_id"] == "bob"
    await publish(emulator.http_url, app, "news", "price", '{"amount": 42}')
    assert (await alice.expect("price"))["data"] == '{"amount": 42}'

    await expect(page.locator("#stat-connections")).to_have_text("2")
    await expect(page.locator("#stat-channels")).to_have_text("2")
    await expect(page.locator("#stat-subscriptions")).to_have_text("3")
    news = page.locator('#channels tr[data-channel="news"]')
    room = page.locator('#channels tr[data-channel="presence-room"]')
    await expect(news.locator(".subscribers")).to_have_text("1")
    await expect(room.locator(".subscribers")).to_have_text("2")
    await expect(room.locator(".members")).to_have_text("alice, bob")
    await expect(room.locator(".kind")).to_have_text("presence")
    for client in (alice, bob):
        await expect(page.locator(f'#connections tr[data-socket-id="{client.socket_id}"]')).to_have_count(1)

    log = page.locator("#log tbody tr")
    await expect(log.filter(has_text="price").and_(page.locator('[data-type="publish"]'))).to_have_count(1)
    await expect(page.locator('#log tr[data-type="publish"] .details')).to_contain_text('{"amount": 42}')
    await expect(page.locator('#log tr[data-type="client_event"] .what')).to_have_text("client-typing")
    await expect(page.locator('#log tr[data-type="subscribed"]')).to_have_count(3)
    await expect(page.locator('#log tr[data-type="member_added"] .what')).to_have_text(["bob", "alice"])
    webhooks = page.locator('#log tr[data-type="webhook"]')
    await expect(webhooks.first).to_be_visible()
    await expect(webhooks.first.locator(".details")).to_contain_text("HTTP 200")
    await expect(webhooks.first.locator(".details")).to_have_class("mono details status-ok")
    assert receiver.deliveries and receiver.signed_by(APP.secret)

    # The form publishes a test event; the real subscriber receives it.
    await page.fill("#pub-channel", "news")
    await page.fill("#pub-event", "from-console")
    await page.fill("#pub-data", '{"sent": "by the console"}')
    await page.click("#pub-send")
    await expect(page.locator("#pub-result")).to_have_text("published from-console on news to 1 subscriber(s)")
    received = await alice.expect("from-console")
    assert received["channel"] == "news" and json.loads(received["data"]) == {"sent": "by the console"}
    await expect(page.locator('#log tr[data-type="publish"]')).to_have_count(2)

    # An invalid channel is refused with the emulator's message.
    await page.fill("#pub-channel", "bad channel!")
    await page.click("#pub-send")
    await expect(page.locator("#pub-result")).to_contain_text("refused (HTTP 400)")

    await bob.send("pusher:unsubscribe", {"channel": "presence-room"})
    await expect(page.locator('#log tr[data-type="unsubscribed"]')).to_have_count(1)
    await expect(page.locator('#log tr[data-type="member_removed"] .what')).to_have_text("bob")
    await expect(room.locator(".members")).to_have_text("alice")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "console.png"), full_page=True)

    await bob.close()
    await expect(page.locator("#stat-connections")).to_have_text("1")
    await expect(page.locator('#log tr[data-type="disconnected"]')).to_have_count(1)
    assert errors == []
    await alice.close()


async def test_console_token_is_required_when_configured(start_emulator: StartEmulator) -> None:
    emulator = await start_emulator(app=APP, console_token=TOKEN)
    async with httpx.AsyncClient(base_url=emulator.http_url) as http:
        for path in ("/console", "/metrics", "/usage", "/console/apps", "/console/events?app=1"):
            refused = await http.get(path)
            assert refused.status_code == 401, path
            assert "console token" in refused.json()["error"]
            assert (await http.get(path, params={"token": "wrong"})).status_code == 401
        assert (await http.get("/console", params={"token": TOKEN})).status_code == 200
        metrics = await http.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        assert metrics.status_code == 200 and "relay_connections" in metrics.text
        assert (await http.get("/health")).json() == {"status": "ok"}
        assert (await http.get("/ready")).json() == {"status": "ready"}
        # The Pusher API is untouched by the token.
        assert (await publish(emulator.http_url, APP, "news", "e", "1")).json() == {}


async def test_console_is_off_on_a_public_host_without_a_token(start_emulator: StartEmulator) -> None:
    """Bound to 0.0.0.0 (the config says so; the test socket is still on loopback) and no token: the console,
    /metrics and /usage answer 404 naming the fix; health checks still work."""
    emulator = await start_emulator(app=APP, host="0.0.0.0")
    async with httpx.AsyncClient(base_url=emulator.http_url) as http:
        for path in ("/console", "/metrics", "/usage"):
            response = await http.get(path)
            assert response.status_code == 404
            assert "--console-token" in response.json()["error"]
        assert (await http.get("/health")).status_code == 200


async def test_console_on_loopback_refuses_proxied_and_cross_site_requests(start_emulator: StartEmulator) -> None:
    emulator = await start_emulator(app=APP)
    async with httpx.AsyncClient(base_url=emulator.http_url) as http:
        page = await http.get("/console")
        assert page.status_code == 200 and "Relay emulator console" in page.text
        assert page.headers["access-control-allow-origin"] == emulator.http_url  # never "*"
        proxied = await http.get("/metrics", headers={"X-Forwarded-For": "203.0.113.9"})
        assert proxied.status_code == 403
        rebound = await http.get("/usage", headers={"Host": f"attacker.example:{emulator.port}"})  # DNS rebinding
        assert rebound.status_code == 403 and "127.0.0.1 or localhost" in rebound.json()["error"]
        assert (await http.get("/usage", headers={"Host": f"localhost:{emulator.port}"})).status_code == 200
        body = {"app_id": "1", "channel": "news", "event": "e", "data": "x"}
        cross = await http.post("/console/publish", json=body, headers={"Origin": "http://evil.example"})
        assert cross.status_code == 403 and "cross-site" in cross.json()["error"]
        same = await http.post("/console/publish", json=body, headers={"Origin": emulator.http_url})
        assert same.status_code == 200 and same.json() == {"ok": True, "recipients": 0}
        too_big = await http.post("/console/publish", json={**body, "data": "x" * 20_000})
        assert too_big.status_code == 413
        unknown = await http.post("/console/publish", json={**body, "app_id": "nope"})
        assert unknown.status_code == 400 and "unknown app_id" in unknown.json()["error"]
        assert (await http.get("/console/events", params={"app": "nope"})).status_code == 404


async def test_console_stream_sends_state_and_events(start_emulator: StartEmulator) -> None:
    """The Server-Sent Events stream itself: chunked text/event-stream with a state snapshot, then log events."""
    emulator = await start_emulator(app=APP)
    async with (
        httpx.AsyncClient(base_url=emulator.http_url, timeout=5) as http,
        http.stream("GET", "/console/events", params={"app": "1"}) as stream,
    ):
        assert stream.headers["content-type"].startswith("text/event-stream")
        events: list[tuple[str, dict[str, object]]] = []
        lines = stream.aiter_lines()

        async def next_event() -> tuple[str, dict[str, object]]:
            kind = ""
            async for line in lines:
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: ") and kind:
                    return kind, json.loads(line[6:])
            raise AssertionError("stream ended")

        kind, state = await asyncio.wait_for(next_event(), 5)
        assert kind == "state" and state["connections_total"] == 0 and state["app_id"] == "1"
        client = await ws_client(emulator.ws_url())
        await publish(emulator.http_url, APP, "nobody-here", "ping-event", "{}")
        while not any(k == "log" and e["type"] == "publish" for k, e in events):
            events.append(await asyncio.wait_for(next_event(), 5))
        logged = [e for k, e in events if k == "log"]
        assert logged[0]["type"] == "connected" and logged[0]["socket_id"] == client.socket_id
        assert logged[-1] == {**logged[-1], "channel": "nobody-here", "event": "ping-event", "recipients": 0}
        await client.close()
