"""Conformance with the official Node clients: pusher-js 8, laravel-echo 2 and pusher-http-node 5 (checklist §8).

Each test starts the emulator in-process, runs one ES-module scenario from ``tests/node/`` with the real client
libraries (installed by ``npm ci --prefix tests/node``), and checks its exit status and JSON summary. Scenarios
print one JSON object per line on stdout: ``{"step": …}`` lines ask this driver to act inside the emulator (for
example close every connection with 4200) and are answered with one line on the script's stdin; the last line is the
summary ``{"scenario", "ok", "checks", …}``.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from relay.emulator.config import App, Webhook
from tests.conftest import RunningEmulator
from tests.node_scenarios import NODE_DIR, NodeRun, StepHandler, app_env, run_scenario
from tests.node_scenarios import node_modules as installed_modules
from tests.webhook_receiver import Receiver

APP = App(app_id="1", key="app-key", secret="app-secret", activity_timeout=120)


@pytest.fixture(scope="module")
def node_modules() -> Path:
    return installed_modules("pusher-js", "laravel-echo", "pusher")


async def scenario(script: str, emulator: RunningEmulator, *, on_step: StepHandler | None = None) -> NodeRun:
    return await run_scenario(NODE_DIR / script, app_env(emulator.host, emulator.port, emulator.app), on_step=on_step)


async def test_pusher_js_channels(node_modules: Path, emulator: Any) -> None:
    """§8 item 89 (with 21, 22, 24, 25, 27–31, 34, 42, 43, 65, 78): pusher-js public, private, presence and
    private-encrypted channels, members.me, unique-user counts, client events and subscription errors."""
    run = await scenario("pusher_js_channels.mjs", emulator)
    assert run.summary["checks"] == [
        "connect",
        "public",
        "private",
        "client-events",
        "presence",
        "presence-client-events",
        "private-encrypted",
        "subscription-error-auth-endpoint",
        "subscription-error-forbidden-channel",
        "subscription-error-bad-signature",
        "still-serving",
    ]


async def test_pusher_js_user(node_modules: Path, emulator: Any) -> None:
    """§8 items 89 and 91 (with 49, 53–55, 57): pusher-js signin, server-to-user events from pusher-http-node
    ``sendToUser``, watchlist online/offline, and ``terminateUserConnections`` closing with 4009."""
    run = await scenario("pusher_js_user.mjs", emulator)
    assert run.summary["checks"] == [
        "signin",
        "watchlist-online",
        "send-to-user",
        "watchlist-offline",
        "terminate-user-connections",
    ]
    assert run.summary["terminatedMessage"]


async def test_pusher_js_subscription_count(node_modules: Path, start_emulator: Any) -> None:
    """§8 items 89 and 38: with subscription_count on, pusher-js gets ``pusher:subscription_count`` on public and
    private channels as subscribers come and go (``channel.subscriptionCount``), and never on presence channels."""
    emulator = await start_emulator(app=replace(APP, subscription_count=True))
    run = await scenario("pusher_js_subscription_count.mjs", emulator)
    assert run.summary["checks"] == ["public", "private", "not-on-presence"]


async def test_pusher_js_reconnects_after_4200(node_modules: Path, emulator: Any) -> None:
    """§8 item 89 (with 9): the server closes every connection with ``pusher:error`` 4200; pusher-js reconnects at
    once with a new socket id, re-authorizes and resubscribes, and receives a later publish."""
    closed: list[int] = []

    async def close_all(step: dict[str, Any]) -> str:
        assert step["step"] == "close-all-4200"
        websockets = [c for c in emulator.node.connections if c.session is not None]
        closed.append(len(websockets))
        for connection in list(emulator.node.connections):
            connection.shutdown()
        return "ok"

    run = await scenario("pusher_js_reconnect.mjs", emulator, on_step=close_all)
    assert closed == [1]
    assert run.summary["checks"] == ["reconnected", "resubscribed", "receives-after-reconnect"]
    old, new = run.summary["socketIds"]
    assert old != new


async def test_laravel_echo(node_modules: Path, emulator: Any) -> None:
    """§8 item 90 (with 42, 66, 76): laravel-echo over pusher-js — ``listen('.x')`` and namespaced names,
    ``whisper``/``listenForWhisper``, ``join().here/joining/leaving``, ``.error()`` on a refused channel, and
    ``toOthers`` through the X-Socket-ID header that Echo's axios interceptor adds."""
    run = await scenario("laravel_echo.mjs", emulator)
    assert run.summary["checks"] == [
        "connect",
        "listen",
        "private-auth",
        "whisper",
        "presence",
        "error",
        "to-others",
    ]


async def test_pusher_http_node(node_modules: Path, start_emulator: Any) -> None:
    """§8 item 91 (with 24, 26, 49, 63, 65–69, 71–74): pusher-http-node ``trigger`` (several channels,
    ``socket_id``, ``info``), ``triggerBatch``, ``get`` on /channels, /channels/{name} and /channels/{presence}/users,
    error statuses, and the published ``authorizeChannel``/``authenticateUser``/webhook vectors. The app counts
    subscriptions, which ``info=subscription_count`` needs."""
    emulator = await start_emulator(app=replace(APP, subscription_count=True))
    run = await scenario("pusher_http_node.mjs", emulator)
    assert run.summary["checks"] == [
        "vectors",
        "trigger-multi",
        "trigger-socket-id",
        "trigger-info",
        "trigger-batch",
        "get-channels",
        "get-channel",
        "get-users",
        "errors",
    ]


async def test_pusher_http_node_webhook_is_valid(node_modules: Path, start_emulator: Any, receiver: Receiver) -> None:
    """§8 items 91 and 81–82 (with 83, 84, 48): webhooks the emulator really sent, for presence traffic made by
    pusher-js, pass pusher-http-node ``webhook({headers, rawBody}).isValid()``; tampered copies fail."""
    hook = Webhook(url=f"{receiver.url}/pusher/webhooks")
    app = replace(APP, webhooks=(hook,), webhook_batch_ms=10, webhook_delay=0.2)
    emulator = await start_emulator(app=app)

    async def collect(step: dict[str, Any]) -> str:
        assert step["step"] == "collect-webhooks"
        expected = set(step["expect"])
        await receiver.until(lambda: expected <= {event["name"] for event in receiver.events()}, within=5.0)
        await asyncio.sleep(0.1)  # let any trailing batch land too
        return json.dumps([{"headers": d.headers, "body": d.body.decode()} for d in receiver.deliveries])

    run = await scenario("pusher_http_node_webhook.mjs", emulator, on_step=collect)
    assert run.summary["checks"] == ["valid", "events"]
    assert all((d.method, d.path) == ("POST", "/pusher/webhooks") for d in receiver.deliveries)
    names = run.summary["events"]
    assert names.count("channel_occupied") == 1
    assert names.count("channel_vacated") == 1
    assert sorted(n for n in names if n.startswith("member_")) == ["member_added"] * 2 + ["member_removed"] * 2
