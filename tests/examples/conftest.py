"""Shared by the examples' end-to-end tests: headless Chromium (the gateway tests' fixture) and screenshots."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.gateway.test_gateway_browser import ARTIFACTS, CHROMIUM
from tests.gateway.test_gateway_browser import browser as browser

__all__ = ["ARTIFACTS", "CHROMIUM", "browser", "screenshot"]


async def screenshot(page: object, name: str) -> Path:
    """Save a full-page screenshot as tests/artifacts/<name>.png (look at them)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)  # type: ignore[attr-defined]
    return path


def needs_chromium() -> pytest.MarkDecorator:
    return pytest.mark.skipif(not CHROMIUM.exists(), reason="Chromium is not installed at /usr/bin/chromium")
