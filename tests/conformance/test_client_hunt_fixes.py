"""Bugs found driving the emulator with the official browser clients (pusher-js 8, laravel-echo 2), each shown with the
real client against a real emulator on an ephemeral port."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import pytest

from tests.conformance.test_node_clients import APP
from tests.gateway.test_gateway_browser import CHROMIUM, PUSHER_JS
from tests.gateway.test_gateway_browser import browser as browser

# pusher-js in a blank page, connected to the emulator: resolves with its socket id; `window.refusals` collects the
# pusher:error codes it is sent.
CONNECT_PUSHER_JS = """(port) => new Promise((resolve) => {
  window.refusals = [];
  window.pusher = new Pusher('app-key', {
    cluster: 'mt1', wsHost: '127.0.0.1', wsPort: port, forceTLS: false, enabledTransports: ['ws'], enableStats: false,
  });
  pusher.connection.bind('error', (error) => refusals.push(error.data ? error.data.code : error.type));
  pusher.connection.bind('connected', () => resolve(pusher.connection.socket_id));
})"""


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Chromium is not installed at /usr/bin/chromium")
async def test_a_browser_tab_whose_script_is_busy_answers_the_servers_ping(browser: Any, start_emulator: Any) -> None:
    """Hosted Pusher pings an RFC 6455 client with a WebSocket ping frame (its protocol docs), which the browser
    answers itself: a tab whose script is busy or paused (a long task, alert(), a debugger breakpoint) stays
    connected. The emulator sent only ``pusher:ping``, which pusher-js's script must answer, and closed such a tab
    with 4201 after ``pong_timeout``."""
    emulator = await start_emulator(app=replace(APP, activity_timeout=1, pong_timeout=2.0))
    page = await browser.new_page()
    await page.set_content("<!doctype html><title>busy tab</title>")
    await page.add_script_tag(path=str(PUSHER_JS))
    socket_id = await page.evaluate(CONNECT_PUSHER_JS, emulator.port)
    # Past activity_timeout and then pong_timeout with the page's script busy: the server pings meanwhile.
    await page.evaluate("() => { const end = Date.now() + 5000; while (Date.now() < end) {} }")
    assert socket_id in emulator.node.states[APP.app_id].peers
    await asyncio.sleep(0.3)  # what the busy script missed, handled
    assert await page.evaluate("window.refusals") == []
    assert await page.evaluate("pusher.connection.socket_id") == socket_id
    await page.close()
