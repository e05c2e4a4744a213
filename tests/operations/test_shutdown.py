"""Graceful shutdown (issue 4; checklist item 19): a real `relay emulator` process with pusher-js clients gets
SIGTERM. It stops accepting, closes the clients with 4200 in jittered batches (no reconnect stampede), flushes the
webhooks it was holding, writes its usage file and exits 0; the clients reconnect to the emulator that replaced it
on the same port."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from relay.cost.usage import parse_usage
from relay.emulator.shutdown import batch_plan
from tests.conftest import whole_run
from tests.emulator_process import EmulatorProcess
from tests.node_scenarios import NODE, app_env, node_modules
from tests.operations.support import (
    APP,
    NODE_SCRIPTS,
    eventually,
    publish,
)
from tests.webhook_receiver import Receiver

CLIENTS = 8
SPREAD = 1.5


def config_file(path: Path, webhook_url: str) -> Path:
    path.write_text(
        f"""[server]
shutdown_delay = 1.0      # the port closes after it; the replacement below starts then
shutdown_spread = {SPREAD}
shutdown_webhook_grace = 3

[[apps]]
app_id = "{APP.app_id}"
key = "{APP.key}"
secret = "{APP.secret}"
webhook_batch_ms = 20
webhook_delay = 30   # vacate and member_removed are held this long: only the shutdown flush sends them in time

[[apps.webhooks]]
url = "{webhook_url}"
"""
    )
    return path


async def next_line(stream: asyncio.StreamReader, within: float) -> dict[str, Any]:
    while True:
        line = await asyncio.wait_for(stream.readline(), within)
        if not line:
            raise AssertionError("the Node script ended early")
        if line.startswith(b"{"):
            parsed: dict[str, Any] = json.loads(line)
            return parsed


@pytest.mark.long
async def test_sigterm_drains_in_jittered_batches_flushes_webhooks_and_clients_reconnect(
    tmp_path: Path, receiver: Receiver
) -> None:
    node_modules("pusher-js")
    config = config_file(tmp_path / "emulator.toml", receiver.url)
    usage_file = tmp_path / "usage.json"
    old = await EmulatorProcess.start("--config", str(config), "--usage-file", str(usage_file))
    new: EmulatorProcess | None = None
    try:
        assert NODE is not None
        node = await asyncio.create_subprocess_exec(
            NODE,
            str(NODE_SCRIPTS / "shutdown_clients.mjs"),
            env={**os.environ, **app_env("127.0.0.1", old.port, APP), "CLIENTS": str(CLIENTS)},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert node.stdout is not None and node.stderr is not None
        try:
            ready = await next_line(node.stdout, 15)
            assert ready.get("step") == "ready", ready
            base = f"http://127.0.0.1:{old.port}"
            await publish(base, APP, "news", "before", '{"n": 1}')
            await eventually(lambda: receiver.event_names().count("member_added") == CLIENTS, what="member_added hooks")
            assert "member_removed" not in receiver.event_names()

            old.process.send_signal(signal.SIGTERM)
            await old.wait_for_output("stopped accepting connections")
            # The listening socket is closed once shutdown_delay is over, before the connections are, so the replacement
            # can bind the same port while the old one drains.
            new = await EmulatorProcess.start("--config", str(config), port=old.port)
            assert await asyncio.wait_for(old.process.wait(), 15) == 0
            # Held for 30 s, yet delivered before the old process exited: flushed by the shutdown.
            names = receiver.event_names()
            assert names.count("member_removed") == CLIENTS
            assert names.count("channel_vacated") == 2
            assert receiver.signed_by(APP.secret)

            reconnected = await next_line(node.stdout, 30)
            assert reconnected.get("step") == "reconnected", reconnected
            await publish(base, APP, "news", "after", '{"n": 2}')
            summary = await next_line(node.stdout, 10)
            assert summary["ok"], summary
            assert await asyncio.wait_for(node.wait(), 5) == 0
        finally:
            if node.returncode is None:
                node.kill()
                await node.wait()
            stderr = (await node.stderr.read()).decode()
        assert summary["closeCodes"] == [4200] * CLIENTS, stderr
        assert set(summary["firstIds"]).isdisjoint(summary["secondIds"])
        assert summary["members"] == CLIENTS
        # Jittered batches: the closes are spread over the window, not one instant.
        closed = sorted(summary["closedAt"])
        assert closed[-1] - closed[0] >= 0.3 * SPREAD * 1000, closed
        assert len({t // 50 for t in closed}) >= 3, closed
        log = "\n".join(old.stderr)
        assert "closing connections with 4200" in log and f"connections={CLIENTS}" in log

        usage = parse_usage(json.loads(usage_file.read_text()))  # what `relay cost --usage` reads
        run = whole_run(usage.apps[APP.app_id].days)  # over two days for a run across midnight UTC
        assert run.peak_connections == CLIENTS
        assert (run.publishes, run.deliveries) == (1, CLIENTS)
        assert run.presence_events == 2 * CLIENTS  # everyone joined, everyone left
        assert run.webhooks >= 2 and usage.apps[APP.app_id].unique_users == CLIENTS

        assert new is not None
        assert await new.stop() == 0
    finally:  # whatever failed, no emulator is left running
        await old.kill()
        if new is not None:
            await new.kill()


def test_batch_plan_spreads_connections_over_the_window() -> None:
    assert batch_plan(0, 2.0) == (0, 0, 0.0)
    assert batch_plan(8, 1.5) == (8, 1, 1.5 / 8)  # few connections: one at a time
    batches, size, interval = batch_plan(10_000, 2.0)
    assert (batches, size, interval) == (40, 250, 0.05)  # many: a batch every 50 ms on average
    assert batch_plan(5, 0.0) == (1, 5, 0.0)  # no spread: all at once
