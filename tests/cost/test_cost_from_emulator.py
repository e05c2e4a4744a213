"""A usage file measured by a real emulator run goes through `relay cost --usage`."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pusher  # type: ignore[import-untyped]
import pytest
from ably import AblyRealtime, AblyRest  # type: ignore[import-untyped]
from websockets.asyncio.client import ClientConnection, connect

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


ABLY_KEY = "1.app-key:app-secret"  # the Ably key of --app-id 1 (its key and secret are the defaults)


async def _publish_over_ably(port: int, transport: str, count: int) -> None:
    """``count`` ably-python publishes to "orders", each awaited, over REST (one HTTP request each) or a realtime
    connection (one ProtocolMessage each)."""
    if transport == "rest":
        # ably-python refuses Basic auth without TLS: it asks the emulator for a token first.
        rest = AblyRest(key=ABLY_KEY, endpoint="127.0.0.1", port=port, tls=False, use_token_auth=True)
        try:
            for index in range(count):
                await rest.channels.get("orders").publish("order-ready", {"id": index})
        finally:
            await rest.close()
        return
    realtime = AblyRealtime(key=ABLY_KEY, endpoint=f"127.0.0.1:{port}", tls=False)
    try:
        for index in range(count):
            await realtime.channels.get("orders").publish("order-ready", {"id": index})
    finally:
        await realtime.close()


async def metered_with_a_subscriber(usage: Path, channel: str) -> tuple[EmulatorProcess, ClientConnection]:
    """An emulator serving --app-id 1 that writes its usage to ``usage``, and a Pusher connection subscribed to
    ``channel``."""
    emulator = await EmulatorProcess.start("--app-id", "1", "--usage-file", str(usage))
    subscriber = await connect(f"ws://127.0.0.1:{emulator.port}/app/app-key?protocol=7")
    await subscriber.recv()
    await subscriber.send(json.dumps({"event": "pusher:subscribe", "data": {"channel": channel}}))
    await subscriber.recv()
    return emulator, subscriber


@pytest.mark.parametrize("transport", ["realtime", "rest"])
async def test_only_ablys_http_publishes_count_against_its_http_api_request_limits(
    tmp_path: Path, transport: str
) -> None:
    """ably-python publishes 30 messages, each to one Pusher subscriber, over a realtime connection or over REST. The
    meter counted both as publishes, and relay cost took every publish for an HTTP API request: the realtime run,
    extrapolated from its seconds measured, broke Ably Free's 25,000 requests an hour though it made none. The usage
    file now says which publishes came in an HTTP request (``http_publishes``): the realtime run's Free checks count
    no request, the REST run's still break the hourly limit, and both count the same messages per publish, on Ably
    and on Pusher (a publish and its delivery)."""
    usage = tmp_path / "usage.json"
    emulator, subscriber = await metered_with_a_subscriber(usage, "orders")
    await _publish_over_ably(emulator.port, transport, 30)
    for _ in range(30):
        assert json.loads(await subscriber.recv())["event"] == "order-ready"
    await subscriber.close()
    assert await emulator.stop(grace=30) == 0
    run = whole_run(json.loads(usage.read_text())["apps"]["1"]["days"])
    http_publishes = 30 if transport == "rest" else 0
    assert (run["publishes"], run["http_publishes"], run["deliveries"]) == (30, http_publishes, 30)

    priced = await run_relay(
        "cost", "--usage", str(usage), "--format", "json", "--provider", "ably_rb", "--provider", "pusher", within=60
    )
    assert priced.returncode == 0, priced.stderr
    estimate = json.loads(priced.stdout)
    workload = estimate["workload"]
    assert workload["http_publishes_per_day"] == pytest.approx(workload["publishes_per_day"] * http_publishes / 30)
    by_provider = {entry["provider"]: entry for entry in estimate["providers"]}
    for provider_id in ("ably_rb", "pusher"):  # 1 publish + 1 delivery (in 5 KiB chunks: 1 each) either way
        messages = by_provider[provider_id]["units"]["messages_per_day"]
        assert messages == pytest.approx(2 * workload["publishes_per_day"]), provider_id
    free = next(plan for plan in by_provider["ably_rb"]["plans"] if plan["plan"] == "free")
    requests = {check["limit"]: check for check in free["checks"] if check["limit"].startswith("HTTP API requests")}
    assert set(requests) == {"HTTP API requests/hour at peak", "HTTP API requests/s at peak"}
    if transport == "realtime":
        assert all(check["used"] == 0 and check["ok"] for check in requests.values()), requests
        assert any(
            "published over realtime connections are none" in line for line in by_provider["ably_rb"]["assumptions"]
        )
    else:
        # 30 publishes in the few seconds measured are hundreds of thousands a day, their peak all in one hour.
        hourly = requests["HTTP API requests/hour at peak"]
        assert hourly["used"] > hourly["max"] == 25_000 and not hourly["ok"], hourly


async def test_ablys_other_rest_requests_count_against_its_http_api_request_limits(tmp_path: Path) -> None:
    """ably-python publishes once over REST, then reads the channel's history, presence and status and asks the time,
    10 times. The meter did not count those reads, and relay cost checked Ably's HTTP API request limits against the
    one publish alone. The usage file now counts them (``ably_api_requests``, 30: not /time, which carries no
    credentials, nor the token request ably-python makes first), relay cost adds them to the HTTP publishes in Ably's
    request checks, and Pusher's count is still the one publish (Pusher has no such reads to bill)."""
    usage = tmp_path / "usage.json"
    emulator = await EmulatorProcess.start("--app-id", "1", "--usage-file", str(usage))
    rest = AblyRest(key=ABLY_KEY, endpoint="127.0.0.1", port=emulator.port, tls=False, use_token_auth=True)
    try:
        channel = rest.channels.get("orders")
        await channel.publish("order-ready", {"id": 1})
        for _ in range(10):
            assert len((await channel.history()).items) == 1
            assert (await channel.presence.get()).items == []
            assert (await channel.status()).channel_id == "orders"
            assert await rest.time() > 0
    finally:
        await rest.close()
    assert await emulator.stop(grace=30) == 0
    run = whole_run(json.loads(usage.read_text())["apps"]["1"]["days"])
    assert (run["ably_api_requests"], run["http_publishes"], run["api_requests"]) == (30, 1, 0)

    priced = await run_relay(
        "cost", "--usage", str(usage), "--format", "json", "--provider", "ably_rb", "--provider", "pusher", within=60
    )
    assert priced.returncode == 0, priced.stderr
    estimate = json.loads(priced.stdout)
    workload = estimate["workload"]
    publishes = workload["http_publishes_per_day"]
    assert publishes == workload["publishes_per_day"] > 0
    assert workload["ably_api_requests_per_day"] == pytest.approx(30 * publishes)
    by_provider = {entry["provider"]: entry for entry in estimate["providers"]}
    assert by_provider["pusher"]["units"]["messages_per_day"] == pytest.approx(publishes)
    free = next(plan for plan in by_provider["ably_rb"]["plans"] if plan["plan"] == "free")
    hourly = next(check for check in free["checks"] if check["limit"] == "HTTP API requests/hour at peak")
    busiest_hour = workload["peak_day_factor"] * min(workload["peak_factor"], 24) / 24
    assert hourly["used"] == pytest.approx(31 * publishes * busiest_hour)


async def test_an_error_answer_saved_from_get_usage_is_named_as_such(tmp_path: Path) -> None:
    """docs/deploy.md's checklist saves GET /usage with curl -s: without the console token (it lives in the unit's
    environment file, not the admin's shell) the emulator's 401 body was saved and relay cost said "unknown field
    'error' (allowed: apps, generated_by, version)"; it now says the file is an error answer and what it says."""
    emulator = await EmulatorProcess.start("--app-id", "1", "--console-token", "console-secret")
    try:
        async with httpx.AsyncClient() as http:
            answer = await http.get(f"http://127.0.0.1:{emulator.port}/usage")
    finally:
        await emulator.stop()
    assert answer.status_code == 401
    saved = tmp_path / "usage-now.json"
    saved.write_bytes(answer.content)
    priced = await run_relay("cost", "--usage", str(saved), within=60)
    assert priced.returncode == 2
    assert priced.stderr.strip() == (
        f"relay: configuration error: usage file {saved}: this is an error answer, not a usage file: "
        f"{answer.json()['error']!r}"
    )
