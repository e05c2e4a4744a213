"""examples/order_tracking fixes: memory:// refused at start, names validated without their spaces, sign-in checked
before an order is looked up, a customer's new name on an order, the staff boards after a restart of the app
with ``ORDER_TRACKING_SECRET`` (sign-ins kept, orders gone), and a page live again soon after a long outage."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from examples.order_tracking import create_app
from tests.emulator_process import EmulatorProcess
from tests.examples.conftest import needs_chromium, new_page, staff_page, start_order_emulator
from tests.examples.test_order_tracking_backend import app as app
from tests.examples.test_order_tracking_backend import browser, refused, staff, without_provider
from tests.examples.test_order_tracking_e2e import SLOW
from tests.gateway.conftest import serve_asgi


async def test_a_memory_provider_is_refused_at_start() -> None:
    """``RELAY_URL=memory://demo`` started, and every page said "Connecting…" for ever (pusher-js: "You must pass your
    app key"): no browser can connect to a provider inside the app's process."""
    stderr = await refused("--port", "0", "--emulator-port", "0", env=without_provider(RELAY_URL="memory://demo"))
    assert "memory://" in stderr and "no browser can connect to it" in stderr


@pytest.mark.parametrize("name", ["", "   "])
def test_a_blank_name_is_refused(app: object, name: str) -> None:
    """A name of spaces was accepted, and stored as ""."""
    client = browser(app)
    assert client.post("/api/session", json={"role": "kitchen", "name": name}).status_code == 422
    assert client.post("/api/orders", json={"name": name, "items": ["payasam"]}).status_code == 422


def test_names_are_kept_without_the_spaces_around_them(app: object) -> None:
    assert browser(app).post("/api/session", json={"role": "kitchen", "name": "  Asha "}).json()["name"] == "Asha"
    order = browser(app).post("/api/orders", json={"name": " Meera  ", "items": ["payasam"]}).json()
    assert order["customer_name"] == "Meera"


def test_a_status_change_without_sign_in_is_401_whether_the_order_exists_or_not(app: object) -> None:
    """A missing order answered 404 and an existing one 401: a visitor could tell which orders exist."""
    browser(app).post("/api/orders", json={"name": "Meera", "items": ["payasam"]})
    visitor = browser(app)
    for order_id in (1, 99):
        answer = visitor.post(f"/api/orders/{order_id}/status", json={"status": "preparing"})
        assert answer.status_code == 401, (order_id, answer.text)
    kitchen = staff(app, "kitchen", "Asha")
    assert kitchen.post("/api/orders/99/status", json={"status": "preparing"}).status_code == 404


def test_a_customer_ordering_under_a_new_name_gets_the_order_under_that_name(app: object) -> None:
    """The second order of a signed-in customer was recorded under the first order's name, whatever the form said.
    The name typed is the order's (and the cookie's, for the form next time); the customer keeps their id, so both
    orders stay theirs."""
    customer: httpx.Client = browser(app)
    first = customer.post("/api/orders", json={"name": "Meera", "items": ["payasam"]}).json()
    second = customer.post("/api/orders", json={"name": "Meera K", "items": ["karimeen"]}).json()
    assert (first["customer_name"], second["customer_name"]) == ("Meera", "Meera K")
    assert first["customer_id"] == second["customer_id"]
    assert customer.get("/api/me").json()["name"] == "Meera K"
    assert [order["id"] for order in customer.get("/api/orders").json()] == [first["id"], second["id"]]


class Restartable:
    """An ASGI app that is one order-tracking app until :meth:`restart` swaps in a new one with the same session
    secret: the app restarted with ``ORDER_TRACKING_SECRET`` set, on the same address (orders gone, sign-ins kept)."""

    def __init__(self, relay_url: str) -> None:
        self.relay_url = relay_url
        self.app = create_app(relay_url, session_secret=b"kept")

    def restart(self) -> None:
        self.app = create_app(self.relay_url, session_secret=b"kept")

    async def __call__(self, scope: dict[str, object], receive: object, send: object) -> None:
        if scope["type"] == "lifespan":  # the apps' lifespans only close their relay clients
            message = await receive()  # type: ignore[operator]
            await send({"type": "lifespan.startup.complete"})  # type: ignore[operator]
            message = await receive()  # type: ignore[operator]
            assert message["type"] == "lifespan.shutdown"
            await send({"type": "lifespan.shutdown.complete"})  # type: ignore[operator]
            return
        await self.app(scope, receive, send)  # type: ignore[arg-type]


@needs_chromium()
@pytest.mark.long
async def test_staff_boards_drop_the_orders_a_restarted_app_no_longer_has(
    browser: object, emulator_process: EmulatorProcess
) -> None:
    """After a restart of the app (and its emulator) with the sign-ins kept, the kitchen and delivery boards merged
    the re-read list into what they had: the old orders stayed on them for ever. The re-read now replaces them."""
    expect = pytest.importorskip("playwright.async_api").expect
    port = emulator_process.port
    app = Restartable(f"emulator://app-key:app-secret@127.0.0.1:{port}/apps/1")
    problems: list[str] = []
    async with serve_asgi(app) as site:  # type: ignore[arg-type]
        kitchen = await staff_page(browser, "/kitchen", "Asha", site, problems)
        delivery = await staff_page(browser, "/delivery", "Ravi", site, problems)
        for page in (kitchen, delivery):
            await expect(page.locator("#connection")).to_have_text("Live", timeout=SLOW)  # type: ignore[attr-defined]
        customer = (await browser.new_context()).request  # type: ignore[attr-defined]
        for name in ("Meera", "Biju"):
            assert (await customer.post(f"{site}/api/orders", data={"name": name, "items": ["payasam"]})).ok
        cook = (await browser.new_context()).request  # type: ignore[attr-defined]
        assert (await cook.post(f"{site}/api/session", data={"role": "kitchen", "name": "Asha"})).ok
        for status in ("preparing", "ready"):
            assert (await cook.post(f"{site}/api/orders/2/status", data={"status": status})).ok
        await expect(kitchen.locator("[data-order-id]")).to_have_count(2)  # type: ignore[attr-defined]
        await expect(delivery.locator("[data-order-id]")).to_have_count(1)  # type: ignore[attr-defined]

        # The app restarts (its orders are gone) and so does the emulator, on the same port: the pages resubscribe.
        assert await emulator_process.stop() == 0
        app.restart()
        restarted = await start_order_emulator(port)
        try:
            for page in (kitchen, delivery):
                await expect(page.locator("#connection")).to_have_text("Live", timeout=SLOW)  # type: ignore[attr-defined]
            await expect(kitchen.locator("#empty")).to_be_visible(timeout=SLOW)  # type: ignore[attr-defined]
            await expect(kitchen.locator("[data-order-id]")).to_have_count(0)  # type: ignore[attr-defined]
            await expect(delivery.locator("#empty")).to_be_visible()  # type: ignore[attr-defined]
            await expect(delivery.locator("[data-order-id]")).to_have_count(0)  # type: ignore[attr-defined]
        finally:
            await restarted.kill()
    assert problems == []


@needs_chromium()
@pytest.mark.long
async def test_after_a_reconnect_the_customer_page_stays_on_its_current_order(
    browser: object, emulator_process: EmulatorProcess
) -> None:
    """Every order channel the page had subscribed re-read its order after a reconnect, and the page showed whichever
    answer came last: a delivered first order answering after the second took the page back to it (status
    *Delivered*, the order form shown) while the second was being prepared. Its re-read is held back here."""
    expect = pytest.importorskip("playwright.async_api").expect
    port = emulator_process.port
    problems: list[str] = []
    async with serve_asgi(Restartable(f"emulator://app-key:app-secret@127.0.0.1:{port}/apps/1")) as site:  # type: ignore[arg-type]
        customer = await new_page(browser, "/", site, problems)
        await expect(customer.locator("#connection")).to_have_text("Live", timeout=SLOW)  # type: ignore[attr-defined]
        await customer.locator("input[name=name]").fill("Meera")  # type: ignore[attr-defined]
        for dish, order_id in (("Palada payasam", "#1"), ("Karimeen pollichathu", "#2")):
            await customer.get_by_label(dish).check()  # type: ignore[attr-defined]
            await customer.get_by_role("button", name="Place order").click()  # type: ignore[attr-defined]
            await expect(customer.locator("#order-id")).to_have_text(order_id)  # type: ignore[attr-defined]
            if order_id == "#1":  # delivered, so the form comes back for a second order
                kitchen = (await browser.new_context()).request  # type: ignore[attr-defined]
                assert (await kitchen.post(f"{site}/api/session", data={"role": "kitchen", "name": "Asha"})).ok
                rider = (await browser.new_context()).request  # type: ignore[attr-defined]
                assert (await rider.post(f"{site}/api/session", data={"role": "delivery", "name": "Ravi"})).ok
                for staff_member, status in ((kitchen, "preparing"), (kitchen, "ready"), (rider, "picked_up")):
                    assert (await staff_member.post(f"{site}/api/orders/1/status", data={"status": status})).ok
                assert (await rider.post(f"{site}/api/orders/1/status", data={"status": "delivered"})).ok
                await expect(customer.locator("#order-status")).to_have_text("Delivered")  # type: ignore[attr-defined]
        assert (await kitchen.post(f"{site}/api/orders/2/status", data={"status": "preparing"})).ok
        await expect(customer.locator("#order-status")).to_have_text("Preparing")  # type: ignore[attr-defined]

        async def answer_late(route: object) -> None:
            await asyncio.sleep(1.5)
            await route.continue_()  # type: ignore[attr-defined]

        await customer.route("**/api/orders/1", answer_late)  # type: ignore[attr-defined]
        assert await emulator_process.stop() == 0
        await expect(customer.locator("#connection")).not_to_have_text("Live", timeout=SLOW)  # type: ignore[attr-defined]
        restarted = await start_order_emulator(port)
        try:
            # pusher-js, gone 'unavailable' while the emulator was down, retries on its own back-off: it may take
            # more than SLOW to try again once the emulator is back
            await expect(customer.locator("#connection")).to_have_text("Live", timeout=2 * SLOW)  # type: ignore[attr-defined]
            await customer.wait_for_timeout(2500)  # type: ignore[attr-defined]  # past the first order's late answer
            await expect(customer.locator("#order-id")).to_have_text("#2")  # type: ignore[attr-defined]
            await expect(customer.locator("#order-status")).to_have_text("Preparing")  # type: ignore[attr-defined]
            await expect(customer.locator("#order-form")).to_be_hidden()  # type: ignore[attr-defined]
        finally:
            await restarted.kill()
    assert problems == []


@needs_chromium()
@pytest.mark.long
async def test_after_a_long_outage_a_page_is_live_again_within_15_s_of_the_server(
    browser: object, emulator_process: EmulatorProcess
) -> None:
    """pusher-js, once "unavailable" (10 s without a connection), waits 15 s, then 30 s, then a minute between its
    attempts: an emulator back 20 s into an outage was reached only 26 s later (measured: 9.6, 26.5, 14.5 and 59.5 s
    after outages of 5, 18, 30 and 45 s), while the README promised 15 s. The page starts pusher-js's attempts over
    5 s after each time it reports "unavailable" (an attempt under way keeps the 15 s pusher-js gives it), so it is
    live again within about 15 s (here about 10: its restarts come 15 and 30 s into the outage), and says *Not
    live* meanwhile, never *Offline* (the restart's "disconnected")."""
    expect = pytest.importorskip("playwright.async_api").expect
    port = emulator_process.port
    app = create_app(f"emulator://app-key:app-secret@127.0.0.1:{port}/apps/1", session_secret=b"t")
    problems: list[str] = []
    async with serve_asgi(app) as site:
        kitchen = await staff_page(browser, "/kitchen", "Asha", site, problems)
        badge = kitchen.locator("#connection")  # type: ignore[attr-defined]
        await expect(badge).to_have_text("Live", timeout=SLOW)
        await kitchen.evaluate(  # type: ignore[attr-defined]
            """() => {
                const badge = document.getElementById('connection');
                window.badges = [];
                new MutationObserver(() => window.badges.push(badge.textContent))
                    .observe(badge, { childList: true, characterData: true, subtree: true });
            }"""
        )
        assert await emulator_process.stop() == 0
        down = time.monotonic()
        await expect(badge).to_have_text("Not live", timeout=SLOW)
        await expect(kitchen.locator("#realtime-problems")).to_contain_text("cannot be reached")  # type: ignore[attr-defined]
        # pusher-js's own attempts come about 1, 16 and 46 s into the outage: back at 20 s, it waited 26 s
        await asyncio.sleep(max(0.0, down + 20 - time.monotonic()))
        restarted = await start_order_emulator(port)
        try:
            back = time.monotonic()
            await expect(badge).to_have_text("Live", timeout=20_000)  # pusher-js alone: 26 s
            print(f"live again {time.monotonic() - back:.1f} s after the emulator was back")
            await expect(kitchen.locator("#realtime-problems")).to_have_count(0)  # type: ignore[attr-defined]
            await expect(kitchen.locator("#staff")).to_have_text("Asha")  # type: ignore[attr-defined]
            badges = await kitchen.evaluate("window.badges")  # type: ignore[attr-defined]
            assert "Offline" not in badges, badges
        finally:
            await restarted.kill()
    assert problems == []
