"""A usage file measured by a real emulator run goes through `relay cost --usage`."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pusher  # type: ignore[import-untyped]
import pytest
from websockets.asyncio.client import connect

from tests.cli_support import run_relay
from tests.conftest import whole_run
from tests.emulator_process import EmulatorProcess


async def test_a_measured_day_is_priced(tmp_path: Path) -> None:
    usage = tmp_path / "usage.json"
    emulator = await EmulatorProcess.start("--app-id", "1", "--usage-file", str(usage))
    port = emulator.port
    subscribers = [await connect(f"ws://127.0.0.1:{port}/app/app-key?protocol=7") for _ in range(5)]
    for ws in subscribers:
        await ws.recv()
        await ws.send(json.dumps({"event": "pusher:subscribe", "data": {"channel": "orders"}}))
        await ws.recv()
    client = pusher.Pusher(app_id="1", key="app-key", secret="app-secret", host="127.0.0.1", port=port, ssl=False)
    for index in range(10):
        await asyncio.to_thread(client.trigger, "orders", "order-ready", {"id": index})
    for ws in subscribers:
        for _ in range(10):
            await ws.recv()
    assert await emulator.stop(grace=30) == 0
    document = json.loads(usage.read_text())
    run = whole_run(document["apps"]["1"]["days"])  # over two days for a run across midnight UTC
    assert (run["peak_connections"], run["publishes"], run["deliveries"]) == (5, 10, 50)
    seconds = sum(end - start for start, end in run["measured"])  # the seconds of the day(s) the run was measuring

    priced = await run_relay("cost", "--usage", str(usage), "--format", "json", within=60)
    assert priced.returncode == 0, priced.stderr
    estimate = json.loads(priced.stdout)
    by_provider = {entry["provider"]: entry for entry in estimate["providers"]}
    pusher_estimate = by_provider["pusher"]
    # 10 API calls + 10 x 5 deliveries in the seconds measured, priced as a whole day at that rate
    assert pusher_estimate["units"]["messages_per_day"] == pytest.approx(60 * 86_400 / seconds)
    assert pusher_estimate["status"] == "fits"
    assert any(name.startswith("ably") for name in by_provider)
    assert estimate["workload"]["origin"].startswith(f"measured: {usage}")
    assert f"relay cost: warning: {usage}: less than an hour measured" in priced.stderr
    scaled = await run_relay("cost", "--usage", str(usage), "--scale", "1000", "--format", "csv", within=60)
    assert scaled.returncode == 0, scaled.stderr
    assert scaled.stdout.count("\n") > 3
