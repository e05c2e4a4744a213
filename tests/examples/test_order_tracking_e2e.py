"""examples/order_tracking end to end (issue 12): three headless Chromium pages, a real ``relay emulator`` process.

The app runs under uvicorn in the test's loop with ``RELAY_URL`` naming the emulator process; the customer, the
kitchen display and the delivery page are separate browser contexts (their own cookies), driven as a person would.
"""

from __future__ import annotations

import httpx
import pytest

from examples.order_tracking import create_app
from tests.emulator_process import EmulatorProcess
from tests.examples.conftest import (
    assert_not_reloaded,
    needs_chromium,
    order_pages,
    place_order,
    screenshot,
    staff_page,
    start_order_emulator,
)
from tests.gateway.conftest import serve_asgi

playwright_api = pytest.importorskip("playwright.async_api", reason="playwright is a test dependency")
expect = playwright_api.expect
pytestmark = needs_chromium()
SLOW = 15_000  # ms: pusher-js reconnecting after the emulator restart


@pytest.mark.long
async def test_order_lifecycle_across_three_pages_and_an_emulator_restart(
    browser: object, emulator_process: EmulatorProcess
) -> None:
    """The seed's story: a customer orders, the kitchen display gets the order live, the kitchen staff on shift are
    listed from the presence channel (a second cook comes and goes), the customer sees "Preparing" and then "Ready
    for pickup" and the delivery page lights up, all without a reload. Then the emulator stops: every page says
    "Reconnecting…"; the delivery driver picks the order up during the outage (the publish fails, the order is
    kept); the emulator starts again on the same port: every page is live again, the customer's page has caught up
    ("Out for delivery", re-read on resubscription), the kitchen board has dropped the order, and later updates
    ("Delivered", a second order) arrive live. Screenshots (each page with the order ready, the customer's while
    reconnecting) go to tests/artifacts/order_tracking_*.png."""
    port = emulator_process.port
    app = create_app(f"emulator://app-key:app-secret@127.0.0.1:{port}/apps/1", session_secret=b"e2e")
    problems: list[str] = []
    async with serve_asgi(app) as site:
        pages = await order_pages(browser, site, problems)
        kitchen, delivery, customer = pages["kitchen"], pages["delivery"], pages["customer"]
        for page in pages.values():
            await expect(page.locator("#connection")).to_have_text("Live", timeout=SLOW)  # type: ignore[attr-defined]
        await expect(kitchen.locator("#staff")).to_have_text("Asha")  # type: ignore[attr-defined]
        await expect(delivery.locator("#empty")).to_have_text("Nothing to pick up.")  # type: ignore[attr-defined]

        # A second cook starts a shift and leaves: presence-kitchen's member_added and member_removed.
        cook = await staff_page(browser, "/kitchen", "Biju", site, problems)
        await expect(kitchen.locator("#staff")).to_have_text("Asha, Biju")  # type: ignore[attr-defined]
        await cook.context.close()  # type: ignore[attr-defined]
        await expect(kitchen.locator("#staff")).to_have_text("Asha")  # type: ignore[attr-defined]

        # The customer orders; the kitchen display receives it on private-kitchen.
        await place_order(customer, "Meera", "Appam with vegetable stew", "Palada payasam")
        await expect(customer.locator("#order-id")).to_have_text("#1")  # type: ignore[attr-defined]
        await expect(customer.locator("#order-status")).to_have_text("Order placed")  # type: ignore[attr-defined]
        await expect(customer.locator("#order-items")).to_have_text(  # type: ignore[attr-defined]
            "Appam with vegetable stew, Palada payasam · ₹300"
        )
        ticket = kitchen.locator('[data-order-id="1"]')  # type: ignore[attr-defined]
        await expect(ticket.locator("h3")).to_have_text("#1 · Meera")
        await expect(ticket).to_contain_text("Appam with vegetable stew, Palada payasam")

        # Kitchen: start preparing, then ready. The customer's private order channel and the delivery board follow.
        await ticket.get_by_role("button", name="Start preparing").click()
        await expect(customer.locator("#order-status")).to_have_text("Preparing")  # type: ignore[attr-defined]
        await ticket.get_by_role("button", name="Mark ready").click()
        await expect(ticket).to_contain_text("Waiting for pickup")
        await expect(customer.locator("#order-status")).to_have_text("Ready for pickup")  # type: ignore[attr-defined]
        await expect(delivery.locator("#notice")).to_have_text("Order #1 is ready for pickup")  # type: ignore[attr-defined]
        pickup = delivery.locator('[data-order-id="1"]')  # type: ignore[attr-defined]
        await expect(pickup.locator("h3")).to_have_text("#1 · Meera")
        await expect(pickup.locator(".status")).to_have_text("Ready for pickup")
        await assert_not_reloaded(pages)
        for name, page in pages.items():
            await screenshot(page, f"order_tracking_{name}")

        # The emulator stops (SIGTERM: connections are closed with 4200): every page shows it is reconnecting.
        assert await emulator_process.stop() == 0
        for page in pages.values():
            await expect(page.locator("#connection")).to_have_text("Reconnecting…", timeout=SLOW)  # type: ignore[attr-defined]
            await expect(page.locator("#connection")).to_have_attribute("data-status", "reconnecting")  # type: ignore[attr-defined]
        await screenshot(customer, "order_tracking_customer_reconnecting")

        # During the outage the driver picks the order up: the backend keeps it, its publish fails.
        async with httpx.AsyncClient(base_url=site) as http:
            assert (await http.get("/api/config")).json()["wsPort"] == port
        await pickup.get_by_role("button", name="Picked up").click()
        await expect(pickup.locator(".status")).to_have_text("Out for delivery")
        await expect(customer.locator("#order-status")).to_have_text("Ready for pickup")  # type: ignore[attr-defined]
        assert app.state.orders.get(1).status == "picked_up"

        # Back on the same port: every page is live again and has caught up with what it missed.
        restarted = await start_order_emulator(port)
        try:
            assert restarted.port == port
            for page in pages.values():
                await expect(page.locator("#connection")).to_have_text("Live", timeout=SLOW)  # type: ignore[attr-defined]
            # Each page re-reads its state from the backend once live again.
            await expect(customer.locator("#order-status")).to_have_text("Out for delivery", timeout=SLOW)  # type: ignore[attr-defined]
            await expect(kitchen.locator("#empty")).to_have_text("No orders yet.", timeout=SLOW)  # type: ignore[attr-defined]
            await expect(kitchen.locator('[data-order-id="1"]')).to_have_count(0)  # type: ignore[attr-defined]

            # Later updates arrive live: delivered, and a second order reaches the kitchen.
            await pickup.get_by_role("button", name="Delivered").click()
            await expect(customer.locator("#order-status")).to_have_text("Delivered")  # type: ignore[attr-defined]
            await expect(customer.locator("#timeline li")).to_have_count(5)  # type: ignore[attr-defined]
            await expect(delivery.locator("#empty")).to_have_text("Nothing to pick up.")  # type: ignore[attr-defined]
            await expect(customer.locator("#order-form")).to_be_visible()  # type: ignore[attr-defined]
            await customer.get_by_label("Karimeen pollichathu").check()  # type: ignore[attr-defined]
            await customer.get_by_role("button", name="Place order").click()  # type: ignore[attr-defined]
            await expect(kitchen.locator('[data-order-id="2"] h3')).to_have_text("#2 · Meera")  # type: ignore[attr-defined]
            await expect(customer.locator("#order-status")).to_have_text("Order placed")  # type: ignore[attr-defined]
            await expect(customer.locator("#order-id")).to_have_text("#2")  # type: ignore[attr-defined]
            await expect(delivery.locator("#notice")).to_be_hidden()  # type: ignore[attr-defined]
            await assert_not_reloaded(pages)
        finally:
            await restarted.stop()
    assert problems == []
