"""Shared by the examples' end-to-end tests: headless Chromium (the gateway tests' fixture), screenshots, the
apps a test visits served by uvicorn, and the order-tracking pages' emulator process and browser pages."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
from starlette.types import ASGIApp

from tests.emulator_process import EmulatorProcess
from tests.gateway.conftest import serve_asgi_in_thread
from tests.gateway.test_gateway_browser import ARTIFACTS, CHROMIUM
from tests.gateway.test_gateway_browser import browser as browser

__all__ = [
    "ARTIFACTS",
    "CHROMIUM",
    "SITES",
    "assert_not_reloaded",
    "browser",
    "emulator_process",
    "new_page",
    "order_pages",
    "place_order",
    "screenshot",
    "staff_page",
    "start_order_emulator",
    "start_shift",
]
VIEWPORT = {"width": 720, "height": 720}


class Sites:
    """The apps one test visits, each served by uvicorn from the first visit (as a browser finds a site up) until the
    test ends, with the visitors' clients."""

    def __init__(self) -> None:
        self._open = ExitStack()
        self._urls: dict[int, str] = {}

    def visitor(self, app: ASGIApp) -> httpx.Client:
        """A new visitor of ``app``: a client with cookies of its own."""
        if id(app) not in self._urls:
            self._urls[id(app)] = self._open.enter_context(serve_asgi_in_thread(app))
        client = httpx.Client(base_url=self._urls[id(app)])
        self._open.callback(client.close)
        return client

    def close(self) -> None:
        self._open.close()
        self._urls.clear()


SITES = Sites()


@pytest.fixture(autouse=True)
def _sites_closed_after_each_test() -> Iterator[None]:
    yield
    SITES.close()


async def screenshot(page: object, name: str) -> Path:
    """Save a full-page screenshot as tests/artifacts/<name>.png (look at them)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)  # type: ignore[attr-defined]
    return path


def needs_chromium() -> pytest.MarkDecorator:
    return pytest.mark.skipif(not CHROMIUM.exists(), reason="Chromium is not installed at /usr/bin/chromium")


# -- examples/order_tracking in headless Chromium against a `relay emulator` process -----------------------------


async def start_order_emulator(port: int = 0) -> EmulatorProcess:
    """``relay emulator`` for the order-tracking pages: app 1, its connections closed at once on a stop; a fixed
    ``port`` to start it again where the pages reconnect."""
    return await EmulatorProcess.start("--app-id", "1", "--shutdown-spread", "0", port=port)


@pytest.fixture
async def emulator_process() -> AsyncIterator[EmulatorProcess]:
    process = await start_order_emulator()
    yield process
    await process.kill()


async def new_page(browser: object, path: str, site: str, problems: list[str]) -> object:
    """``site``'s ``path`` in a browser context of its own (its own cookies), its page errors added to ``problems``."""
    context = await browser.new_context(viewport=VIEWPORT)  # type: ignore[attr-defined]
    page = await context.new_page()
    page.on("pageerror", lambda error: problems.append(f"{path}: {error}"))
    await page.goto(f"{site}{path}")
    await page.evaluate("window.notReloaded = true")  # a reload would start a new window without it
    return page


async def assert_not_reloaded(pages: dict[str, object]) -> None:
    for name, page in pages.items():
        assert await page.evaluate("window.notReloaded === true"), f"the {name} page reloaded"  # type: ignore[attr-defined]


async def start_shift(page: object, name: str) -> None:
    form = page.locator("#signin")  # type: ignore[attr-defined]
    await form.locator("input[name=name]").fill(name)
    await form.get_by_role("button", name="Start shift").click()


async def staff_page(browser: object, path: str, name: str, site: str, problems: list[str]) -> object:
    """A staff page (``/kitchen`` or ``/delivery``, see :func:`new_page`) with ``name``'s shift started on it."""
    page = await new_page(browser, path, site, problems)
    await start_shift(page, name)
    return page


async def order_pages(browser: object, site: str, problems: list[str]) -> dict[str, object]:
    """The story's three pages, opened in this order: the kitchen's (Asha on shift), the delivery page's (Ravi on
    shift) and a customer's; by name."""
    kitchen = await staff_page(browser, "/kitchen", "Asha", site, problems)
    delivery = await staff_page(browser, "/delivery", "Ravi", site, problems)
    customer = await new_page(browser, "/", site, problems)
    return {"customer": customer, "kitchen": kitchen, "delivery": delivery}


async def place_order(customer: object, name: str, *dishes: str) -> None:
    """On the customer's page: ``name`` typed, ``dishes`` ticked, and "Place order" pressed."""
    await customer.locator("input[name=name]").fill(name)  # type: ignore[attr-defined]
    for dish in dishes:
        await customer.get_by_label(dish).check()  # type: ignore[attr-defined]
    await customer.get_by_role("button", name="Place order").click()  # type: ignore[attr-defined]
