"""The emulator after a hostile-client audit: a trigger naming both ``channels`` and ``channel`` is refused (it went to
``channels`` alone, and ``channel`` was dropped without a word), and ``max_frame_bytes`` has an upper bound (10 GB was
taken: one client could make the server hold that much). Real emulators on ephemeral ports."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from relay.emulator.config import MAX_FRAME_BYTES, EmulatorConfig, load_config
from relay.errors import ConfigError
from relay.protocol.signing import sign_rest_request
from tests.conformance.wsclient import Connect, publish
from tests.conformance.wsclient import connect as connect
from tests.conftest import TEST_APP, RunningEmulator, StartEmulator

BOTH = "an event has channels (a list) or channel (a name), not both: give one"


async def trigger(emulator: RunningEmulator, body: dict[str, object]) -> httpx.Response:
    raw = json.dumps(body).encode()
    path = f"/apps/{TEST_APP.app_id}/events"
    params = sign_rest_request(TEST_APP.key, TEST_APP.secret, "POST", path, timestamp=int(time.time()), body=raw)
    async with httpx.AsyncClient(timeout=5) as http:
        return await http.post(
            f"{emulator.http_url}{path}", params=params, content=raw, headers={"Content-Type": "application/json"}
        )


@pytest.mark.parametrize(
    "targets",
    [
        {"channels": ["room-a"], "channel": "room-b"},
        {"channel": "room-b", "channels": ["room-a"]},
        {"channels": ["room-a", "room-b"], "channel": "room-a"},  # even naming a channel of the list
    ],
    ids=["channels-first", "channel-first", "channel-in-channels"],
)
async def test_a_trigger_with_both_channels_and_channel_is_refused_and_publishes_nothing(
    emulator: RunningEmulator, connect: Connect, targets: dict[str, object]
) -> None:
    """Pusher's HTTP API reference gives ``channel`` "instead of channels" (docs/channels/library_auth_reference/
    rest-api.md): one or the other. With both, the emulator published to ``channels`` and dropped ``channel``, so a
    caller who meant ``channel`` saw a 200 and no delivery. Now a 400 naming both, and nothing is published."""
    client = await connect(emulator)
    for channel in ("room-a", "room-b"):
        await client.subscribed(channel)
    response = await trigger(emulator, {"name": "update", "data": "first", **targets})
    assert (response.status_code, response.json()) == (400, {"error": BOTH})
    # Nothing reached the subscriber: the next event it gets is the one published after, on room-a.
    await publish(emulator, "room-a", "update", "second")
    frame = await client.expect("update", "room-a")
    assert frame["data"] == "second"
    with pytest.raises(asyncio.TimeoutError):
        await client.recv(wait=0.3)


async def test_channels_or_channel_alone_still_publish(emulator: RunningEmulator, connect: Connect) -> None:
    client = await connect(emulator)
    await client.subscribed("room-a")
    for targets in ({"channels": ["room-a"]}, {"channel": "room-a"}):
        response = await trigger(emulator, {"name": "update", "data": json.dumps(targets), **targets})
        assert (response.status_code, response.json()) == (200, {})
        assert (await client.expect("update", "room-a"))["data"] == json.dumps(targets)


# -- max_frame_bytes ------------------------------------------------------------------------------------------------

FRAME_BOUND = (
    "max_frame_bytes must be at most 4194304 (4 MiB), got {value}: a WebSocket message is held in memory whole until "
    "it is handled, so this is what each connection can make the server hold; no Pusher message the default limits "
    "allow is over 320 KiB, nor an Ably frame over 512 KiB"
)


@pytest.mark.parametrize("value", [MAX_FRAME_BYTES + 1, 10_000_000_000])
def test_max_frame_bytes_over_4_mib_is_refused_with_the_reason(tmp_path: Path, value: int) -> None:
    path = tmp_path / "emulator.toml"
    path.write_text(f"[server]\nmax_frame_bytes = {value}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, defaults=EmulatorConfig(apps=()))
    assert caught.value.message == f"{path} [server]: {FRAME_BOUND.format(value=value)}"


def test_relay_emulator_stops_with_status_2_on_max_frame_bytes_over_the_bound(tmp_path: Path) -> None:
    path = tmp_path / "emulator.toml"
    path.write_text("[server]\nmax_frame_bytes = 10000000000\n[[apps]]\napp_id = '1'\nkey = 'k'\nsecret = 's'\n")
    run = subprocess.run(
        [sys.executable, "-m", "relay.cli", "emulator", "--config", str(path), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert run.returncode == 2
    assert run.stderr.strip() == (
        f"relay: configuration error: {path} [server]: {FRAME_BOUND.format(value=10_000_000_000)}"
    )


async def test_max_frame_bytes_at_the_bound_is_served(start_emulator: StartEmulator, connect: Connect) -> None:
    """4 MiB itself is accepted, and the server serves with it."""
    emulator = await start_emulator(max_frame_bytes=MAX_FRAME_BYTES)
    assert emulator.node.config.max_frame_bytes == MAX_FRAME_BYTES
    client = await connect(emulator)
    await client.subscribed("room-a")
    await publish(emulator, "room-a", "update", "x" * 5000)
    assert (await client.expect("update", "room-a"))["data"] == "x" * 5000
