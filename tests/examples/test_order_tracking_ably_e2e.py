"""examples/order_tracking on Ably: the pages speak ably-js to a real ``relay emulator`` process in headless Chromium.

``RELAY_URL`` is the emulator's Ably URL, so ``/api/config`` names ably-js (served from the local npm install), relay's
``/ably/token`` as its authUrl, and the emulator's endpoint, port and TLS as its client options.
"""

from __future__ import annotations

import os

import httpx
import pytest

from examples.order_tracking import create_app
from examples.order_tracking.app import find_browser_library
from tests.emulator_process import EmulatorProcess
from tests.examples.conftest import assert_not_reloaded, needs_chromium, order_pages, place_order, start_order_emulator
from tests.gateway.conftest import serve_asgi

playwright_api = pytest.importorskip("playwright.async_api", reason="playwright is a test dependency")
expect = playwright_api.expect
pytestmark = [
    needs_chromium(),
    pytest.mark.skipif(
        find_browser_library("ably", os.environ.get("ABLY_JS_PATH")) is None,
        reason="ably-js is not installed (npm ci --prefix tests/node) and the CDN is not reachable from the tests",
    ),
]
SLOW = 15_000  # ms: a page's ably-js connections (one per channel) each fetch a token first, on a busy CI machine
RECONNECT = 45_000  # ms: after a failed first retry ably-js waits disconnectedRetryTimeout (15 s, with backoff)


@pytest.mark.long
async def test_order_lifecycle_over_ably_across_three_pages_and_an_emulator_restart(
    browser: object, emulator_process: EmulatorProcess
) -> None:
    """The Pusher end-to-end story, on ably-js: the cook on shift is listed from presence-kitchen, the customer's
    order reaches the kitchen live, the kitchen's status changes reach the customer's page and light up the delivery
    page, all without a reload. Then the emulator stops: every page says "Reconnecting…"; the driver picks the order
    up during the outage (the publish fails, the order is kept); the emulator starts again on the same port: every
    page is live again (ably-js retries on its own schedule), the customer's page has caught up on re-attach, the cook
    is present again, and later updates arrive live."""
    port = emulator_process.port
    app = create_app(f"ably://1.app-key:app-secret@127.0.0.1:{port}?tls=false", session_secret=b"e2e")
    problems: list[str] = []
    async with serve_asgi(app) as site:
        async with httpx.AsyncClient(base_url=site) as http:
            config = (await http.get("/api/config")).json()
            assert config["library"] == "/vendor/ably.min.js"
            assert (await http.get(config["library"])).status_code == 200
            # Until its script has taken over the form, a click would submit it the browser's way (a reload).
            assert '<button type="submit" disabled>Place order</button>' in (await http.get("/")).text
        assert config["clientOptions"] == {"endpoint": "127.0.0.1", "port": port, "tls": False, "fallbackHosts": []}

        pages = await order_pages(browser, site, problems)
        kitchen, delivery, customer = pages["kitchen"], pages["delivery"], pages["customer"]
        await expect(kitchen.locator("#connection")).to_have_text("Live", timeout=SLOW)  # type: ignore[attr-defined]
        await expect(kitchen.locator("#staff")).to_have_text("Asha", timeout=SLOW)  # type: ignore[attr-defined]
        assert await kitchen.evaluate("typeof Ably.Realtime") == "function"  # type: ignore[attr-defined]

        await place_order(customer, "Meera", "Fish moilee with rice")
        await expect(customer.locator("#order-id")).to_have_text("#1", timeout=SLOW)  # type: ignore[attr-defined]
        for page in pages.values():
            await expect(page.locator("#connection")).to_have_text("Live", timeout=SLOW)  # type: ignore[attr-defined]
        ticket = kitchen.locator('[data-order-id="1"]')  # type: ignore[attr-defined]
        await expect(ticket.locator("h3")).to_have_text("#1 · Meera", timeout=SLOW)
        await expect(ticket).to_contain_text("Fish moilee with rice")

        await ticket.get_by_role("button", name="Start preparing").click()
        await expect(customer.locator("#order-status")).to_have_text("Preparing", timeout=SLOW)  # type: ignore[attr-defined]
        await ticket.get_by_role("button", name="Mark ready").click()
        await expect(customer.locator("#order-status")).to_have_text(  # type: ignore[attr-defined]
            "Ready for pickup", timeout=SLOW
        )
        await expect(delivery.locator("#notice")).to_have_text("Order #1 is ready for pickup")  # type: ignore[attr-defined]
        pickup = delivery.locator('[data-order-id="1"]')  # type: ignore[attr-defined]
        await expect(pickup.locator(".status")).to_have_text("Ready for pickup")
        await expect(customer.locator("#timeline li")).to_have_count(3)  # type: ignore[attr-defined]
        await assert_not_reloaded(pages)

        assert await emulator_process.stop() == 0
        for page in pages.values():
            await expect(page.locator("#connection")).to_have_text("Reconnecting…", timeout=SLOW)  # type: ignore[attr-defined]
        await pickup.get_by_role("button", name="Picked up").click()
        await expect(pickup.locator(".status")).to_have_text("Out for delivery")
        await expect(customer.locator("#order-status")).to_have_text("Ready for pickup")  # type: ignore[attr-defined]
        assert app.state.orders.get(1).status == "picked_up"

        restarted = await start_order_emulator(port)
        try:
            for page in pages.values():
                await expect(page.locator("#connection")).to_have_text("Live", timeout=RECONNECT)  # type: ignore[attr-defined]
            await expect(customer.locator("#order-status")).to_have_text("Out for delivery", timeout=SLOW)  # type: ignore[attr-defined]
            await expect(kitchen.locator("#empty")).to_have_text("No orders yet.", timeout=SLOW)  # type: ignore[attr-defined]
            await expect(kitchen.locator("#staff")).to_have_text("Asha", timeout=SLOW)  # type: ignore[attr-defined]

            await pickup.get_by_role("button", name="Delivered").click()
            await expect(customer.locator("#order-status")).to_have_text("Delivered", timeout=SLOW)  # type: ignore[attr-defined]
            await expect(customer.locator("#timeline li")).to_have_count(5)  # type: ignore[attr-defined]
            await expect(delivery.locator("#empty")).to_have_text("Nothing to pick up.")  # type: ignore[attr-defined]
            await assert_not_reloaded(pages)
        finally:
            await restarted.stop()
    assert problems == []
