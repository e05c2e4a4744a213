"""The console as a frontend developer debugs with it: refused subscriptions and other errors sent to a connection
are in its log, webhook rows say what each request carried and which attempt it was (and never show a secret of its
URL), long data is marked as cut, the form refuses what it cannot publish (an encrypted channel) and says when the
emulator cannot be reached, and an app that does not exist is named instead of a silent retry."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import httpx
from playwright.async_api import Browser, expect

from relay.emulator.config import Webhook
from tests.conftest import StartEmulator
from tests.emulator_process import EmulatorProcess
from tests.operations.support import APP, console_log, publish, ws_client
from tests.operations.test_console import browser as browser
from tests.webhook_receiver import Receiver


async def test_the_log_shows_refusals_what_each_webhook_carried_and_cut_data(
    receiver: Receiver,  # first: it outlives the emulator, whose last webhooks then find it at once
    start_emulator: StartEmulator,
) -> None:
    """A forged private subscription's subscription_error and a client event over the rate (4301) are logged with
    the connection; a webhook answered 500 then 200 is two rows naming its events, its channel and the attempt, its
    URL's token hidden; data over 500 characters ends with "…"."""
    receiver.statuses.extend([500])
    hook = Webhook(url=f"{receiver.url}?token=hook-secret-1")
    limits = replace(APP.limits, client_events_per_second=2)  # 3 events within a second, even on a slow machine
    app = replace(APP, client_events=True, limits=limits, webhooks=(hook,), webhook_batch_ms=10, webhook_retry_for=10.0)
    emulator = await start_emulator(app=app)
    async with console_log(emulator.http_url, app.app_id) as log:
        client = await ws_client(emulator.ws_url())
        forged = {"channel": "private-orders", "auth": f"{app.key}:{'0' * 64}"}
        await client.send("pusher:subscribe", forged)
        refusal = (await client.expect("pusher:subscription_error"))["data"]
        logged = await log.until("subscription_error")
        assert logged == {
            **logged,
            "channel": "private-orders",
            "code": refusal["status"],
            "message": refusal["error"],
            "socket_id": client.socket_id,
        }
        assert refusal["status"] == 401

        await client.subscribe("private-chat", app)
        occupied = [await log.until("webhook", within=5.0) for _ in range(2)]
        for attempt, status in enumerate((500, 200), start=1):
            assert occupied[attempt - 1] == {
                **occupied[attempt - 1],
                "status": status,
                "attempt": attempt,
                "events": ["channel_occupied"],
                "events_total": 1,
                "channel": "private-chat",
                "url": f"{receiver.url}?token=***",
            }

        for n in range(3):  # one over the 2 a second
            await client.send("client-typing", {"n": n}, channel="private-chat")
        error = await log.until("error")
        assert (error["code"], error["socket_id"], error["channel"]) == (4301, client.socket_id, "private-chat")
        assert error["message"] == "Client event rejected due to rate limit (2/s)"

        await publish(emulator.http_url, app, "private-chat", "long", "x" * 600)
        published = await log.until("publish")
        assert published["data"] == "x" * 500 + "…"
        await client.close()

        signing_in = await ws_client(emulator.ws_url())  # a forged sign-in: fatal, 4009, and logged as such
        await signing_in.send("pusher:signin", {"auth": f"{app.key}:{'0' * 64}", "user_data": '{"id":"u"}'})
        fatal = await log.until("error")
        assert (fatal["code"], fatal["socket_id"]) == (4009, signing_in.socket_id)
        assert fatal["message"].startswith("Signin failed")


async def test_a_message_over_the_size_limit_is_logged_with_its_close_code(start_emulator: StartEmulator) -> None:
    """The pusher:error before close 1009 is fatal: logged with its code, as a message in too many frames is."""
    emulator = await start_emulator(app=replace(APP, max_message_bytes=1024))
    async with console_log(emulator.http_url, APP.app_id) as log:
        client = await ws_client(emulator.ws_url())
        await client.ws.send("x" * 2048)
        fatal = await log.until("error")
        message = "Message too large: this app accepts WebSocket messages up to 1024 bytes"
        assert (fatal["code"], fatal["socket_id"], fatal["message"]) == (1009, client.socket_id, message)
        assert (await client.expect("pusher:error"))["data"] == {"code": 1009, "message": message}
    await (await ws_client(emulator.ws_url())).ws.close()  # the emulator serves on


async def test_a_client_refused_in_a_loop_cannot_push_everything_else_out_of_the_log(
    start_emulator: StartEmulator,
) -> None:
    """Refusals are shown at most 20 a second (the page keeps 500 rows, which one connection's loop filled in a
    second); the next one shown says how many were not, so every refusal is accounted for. A refused channel name is
    cut to 200 characters (a frame can carry 256 KiB of one)."""
    emulator = await start_emulator(app=replace(APP, client_events=True))
    async with console_log(emulator.http_url, APP.app_id) as log:
        client = await ws_client(emulator.ws_url())
        await log.until("connected")
        for _ in range(60):
            await client.send("client-typing", {}, channel="private-" + "x" * 1000)
        errors = [await client.expect("pusher:error") for _ in range(60)]  # the client got every one
        await asyncio.sleep(1.0)  # past the second of the refusals
        await client.send("client-typing", {}, channel="private-late")
        errors.append(await client.expect("pusher:error"))
        # What the log showed of the 60 is what comes before the late one (a quiet spell of 0.5 s, taken before as
        # their end, can be a loaded machine's pause: the late one's wait then met one of them)
        shown = []
        while (event := await log.next()).get("channel") != "private-late":
            shown.append(event)
        late = event
        assert 0 < len(shown) < 60 and {event["type"] for event in (*shown, late)} == {"error"}
        assert shown[0]["channel"] == "private-" + "x" * 192 + "…"
        assert len(shown) + sum(event.get("unshown", 0) for event in (*shown, late)) == 60
        assert {error["data"]["code"] for error in errors} == {None}
        await client.close()


async def test_the_form_refuses_an_encrypted_channel_it_cannot_encrypt(start_emulator: StartEmulator) -> None:
    """The emulator never holds an encrypted channel's key: a console publish to one would reach subscribers as data
    pusher-js cannot decrypt (it drops it), so it is refused with what to do instead."""
    emulator = await start_emulator(app=APP)
    async with httpx.AsyncClient(base_url=emulator.http_url, timeout=5) as http:
        body = {"app_id": APP.app_id, "channel": "private-encrypted-orders", "event": "e", "data": "{}"}
        answer = await http.post("/console/publish", json=body)
        assert answer.status_code == 400
        assert answer.json()["error"].startswith(
            "'private-encrypted-orders' is end-to-end encrypted and the emulator does not hold its key: publish to it"
        )
        body["channel"] = "orders"
        assert (await http.post("/console/publish", json=body)).json() == {"ok": True, "recipients": 0}


async def test_the_page_names_a_missing_app_shows_refusals_and_an_unreachable_emulator(browser: Browser) -> None:
    """In Chromium: /console?app=999 says there is no such app and shows app 1 (an EventSource retried the 404 for
    ever, "reconnecting…"); a refused subscription is a row of the log; the form, once the emulator has stopped,
    says it cannot be reached (it kept the previous answer and threw "Failed to fetch" unhandled)."""
    emulator = await EmulatorProcess.start("--app-id", APP.app_id, "--key", APP.key, "--secret", APP.secret)
    try:
        page = await browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        await page.goto(f"http://127.0.0.1:{emulator.port}/console?app=999")
        await expect(page.locator("#status")).to_have_text('live — no app "999" on this emulator: showing app 1')
        await expect(page.locator("#app")).to_have_value("1")
        await page.goto(f"http://127.0.0.1:{emulator.port}/console?app=")
        await expect(page.locator("#status")).to_have_text('live — no app "" on this emulator: showing app 1')

        client = await ws_client(f"ws://127.0.0.1:{emulator.port}/app/{APP.key}?protocol=7")
        await client.send("pusher:subscribe", {"channel": "private-orders", "auth": f"{APP.key}:{'0' * 64}"})
        await client.expect("pusher:subscription_error")
        row = page.locator('#log tr[data-type="subscription_error"]')
        await expect(row.locator(".channel")).to_have_text("private-orders")
        await expect(row.locator(".what")).to_have_text("401")
        await expect(row.locator(".details")).to_contain_text(client.socket_id)
        for _ in range(60):  # refused in a loop: 20 rows a second at most, then the next one says what was not shown
            await client.send("client-typing", {}, channel="private-orders")
        await asyncio.sleep(1.1)
        await client.send("client-typing", {}, channel="private-orders")
        newest = page.locator('#log tr[data-type="error"] .details').first
        await expect(newest).to_contain_text("more refused before this one, not shown")
        for _ in range(61):
            await client.expect("pusher:error")
        await client.close()

        assert await emulator.stop() == 0
        await page.fill("#pub-channel", "orders")
        await page.fill("#pub-event", "e")
        await page.click("#pub-send")
        await expect(page.locator("#pub-result")).to_contain_text("not sent: the emulator cannot be reached")
        assert errors == []
    finally:
        await emulator.kill()


async def test_a_filter_lists_what_the_first_hundred_hide(start_emulator: StartEmulator, browser: Browser) -> None:
    """With 150 channels named before it, a presence channel and its member's connection were past the first 100
    listed, with no way to reach them ("… and 51 more"): the filter lists only the channels whose name, and the
    connections whose socket id or user, holds its text, with their counts; in Chromium, typing it reopens the
    stream."""
    emulator = await start_emulator(app=APP)
    crowd = await ws_client(emulator.ws_url())
    for n in range(150):
        await crowd.send("pusher:subscribe", {"channel": f"many-{n:03d}"})
    for _ in range(150):
        await crowd.expect("pusher_internal:subscription_succeeded")
    member = await ws_client(emulator.ws_url())
    await member.subscribe("presence-big", APP, user_id="zoe")
    state = emulator.node.states[APP.app_id]

    everything = emulator.node.ops.snapshot(state)
    assert (len(everything["channels"]), everything["channels_total"], everything["matching"]) == (100, 151, None)
    assert "presence-big" not in {channel["name"] for channel in everything["channels"]}
    found = emulator.node.ops.snapshot(state, "big")
    assert ([channel["name"] for channel in found["channels"]], found["connections"]) == (["presence-big"], [])
    assert (found["filter"], found["channels_total"]) == ("big", 151)
    assert found["matching"] == {"connections": 0, "channels": 1}
    by_user = emulator.node.ops.snapshot(state, "zoe")
    assert [connection["socket_id"] for connection in by_user["connections"]] == [member.socket_id]
    by_socket = emulator.node.ops.snapshot(state, crowd.socket_id)
    assert [connection["socket_id"] for connection in by_socket["connections"]] == [crowd.socket_id]

    page = await browser.new_page()
    await page.goto(f"{emulator.http_url}/console")
    await expect(page.locator("#channels tr.more")).to_have_text("… and 51 more channels")
    await page.fill("#filter", "big")
    await expect(page.locator("#channels tbody tr")).to_have_count(1)
    await expect(page.locator('#channels tr[data-channel="presence-big"] .members')).to_have_text("zoe")
    await page.fill("#filter", "zoe")
    await expect(page.locator("#connections tbody tr")).to_have_count(1)
    await expect(page.locator(f'#connections tr[data-socket-id="{member.socket_id}"]')).to_have_count(1)
    await page.fill("#filter", "nothing-has-this")
    await expect(page.locator("#channels tbody")).to_have_text("no channel has “nothing-has-this”")
    for client in (crowd, member):
        await client.close()


async def test_the_log_pauses_keeping_what_comes_meanwhile_and_clears(
    start_emulator: StartEmulator, browser: Browser
) -> None:
    """Rows scrolled away under the reader while a busy app published: Pause holds the new events (the button says
    how many) and Resume shows them in order; Clear empties the log and its count."""
    emulator = await start_emulator(app=APP)
    page = await browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    await page.goto(f"{emulator.http_url}/console")
    await expect(page.locator("#status")).to_have_text("live")
    events = page.locator('#log tr[data-type="publish"] .what')
    await publish(emulator.http_url, APP, "news", "first", "1")
    await expect(events).to_have_text(["first"])

    await page.click("#log-pause")
    for name in ("second", "third"):
        await publish(emulator.http_url, APP, "news", name, "1")
    await expect(page.locator("#log-pause")).to_have_text("Resume (2 new)")
    await expect(events).to_have_text(["first"])
    await page.click("#log-pause")
    await expect(events).to_have_text(["third", "second", "first"])
    await expect(page.locator("#log-count")).to_have_text("(3)")
    await expect(page.locator("#log-pause")).to_have_text("Pause")

    await page.click("#log-clear")
    await expect(page.locator("#log tbody tr")).to_have_count(0)
    await expect(page.locator("#log-count")).to_have_text("")
    await publish(emulator.http_url, APP, "news", "fourth", "1")
    await expect(events).to_have_text(["fourth"])
    await expect(page.locator("#log-count")).to_have_text("(1)")
    assert errors == []
