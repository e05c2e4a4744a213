"""Shared by the examples' end-to-end tests: headless Chromium (the gateway tests' fixture), screenshots, and the
apps a test visits served by uvicorn."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
from starlette.types import ASGIApp

from tests.gateway.conftest import serve_asgi_in_thread
from tests.gateway.test_gateway_browser import ARTIFACTS, CHROMIUM
from tests.gateway.test_gateway_browser import browser as browser

__all__ = ["ARTIFACTS", "CHROMIUM", "SITES", "browser", "screenshot"]


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
