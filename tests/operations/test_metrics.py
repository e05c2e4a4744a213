"""Prometheus /metrics (parsed with prometheus_client's own parser), /health and /ready (issue 4)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
import websockets
from prometheus_client.parser import text_string_to_metric_families
from websockets.exceptions import ConnectionClosed

from relay.emulator.config import Webhook
from relay.emulator.shutdown import graceful_shutdown
from tests.cluster.conftest import RedisServer
from tests.conftest import StartEmulator
from tests.emulator_process import EmulatorProcess
from tests.operations.support import APP, CREDENTIALS, api, eventually, node_ids, publish, ws_client
from tests.webhook_receiver import StartReceiver

METRICS_DOC = Path(__file__).parents[2] / "docs" / "emulator.md"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> tuple[Samples, dict[str, str]]:
    samples: Samples = {}
    kinds: dict[str, str] = {}
    for family in text_string_to_metric_families(text):
        kinds[family.name] = family.type
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples, kinds


async def scrape(base_url: str) -> tuple[Samples, dict[str, str]]:
    async with httpx.AsyncClient() as http:
        response = await http.get(f"{base_url}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse(response.text)


APP_LABEL = (("app_id", "1"),)


async def test_metrics_count_connections_subscriptions_messages_webhooks_and_requests(
    start_emulator: StartEmulator, start_receiver: StartReceiver
) -> None:
    good = await start_receiver()
    bad = await start_receiver(status=500)
    app = replace(
        APP,
        webhooks=(Webhook(url=good.url), Webhook(url=bad.url)),
        webhook_batch_ms=10,
        webhook_retry_for=0.1,  # one attempt, then dropped
    )
    emulator = await start_emulator(app=app)
    alice = await ws_client(emulator.ws_url())
    bob = await ws_client(emulator.ws_url())
    await alice.subscribe("news", app)
    await bob.subscribe("news", app)
    await bob.subscribe("presence-room", app, user_id="bob")
    for n in range(3):
        await publish(emulator.http_url, app, "news", "tick", str(n))
    for client in (alice, bob):
        for _ in range(3):
            await client.expect("tick")
    forged = await api(
        emulator.http_url, app, "POST", "/apps/1/events", {"name": "x", "channel": "news", "data": "1"}, secret="wrong"
    )
    assert forged.status_code == 401
    assert (await api(emulator.http_url, app, "GET", "/apps/1/channels")).status_code == 200
    with contextlib.suppress(Exception):  # refused with 4001 after the upgrade
        await ws_client(emulator.ws_url(key="no-such-key"))
    # A receiver records a request before it answers: the emulator counts it once the answer is back.
    dispatcher = emulator.node.states["1"].webhooks
    await eventually(lambda: good.deliveries and bad.deliveries and dispatcher.pending == 0, what="webhook answers")

    samples, kinds = await scrape(emulator.http_url)
    assert kinds["relay_connections"] == "gauge" and kinds["relay_publishes"] == "counter"
    assert kinds["relay_publish_to_write_seconds"] == "histogram"
    assert samples[("relay_ready", ())] == 1
    assert samples[("relay_connections", APP_LABEL)] == 2
    assert samples[("relay_channels", APP_LABEL)] == 2
    assert samples[("relay_subscriptions", APP_LABEL)] == 3
    assert samples[("relay_presence_members", APP_LABEL)] == 1
    assert samples[("relay_connections_opened_total", APP_LABEL)] == 2
    assert samples[("relay_publishes_total", APP_LABEL)] == 3
    assert samples[("relay_presence_events_total", APP_LABEL)] == 1
    assert samples[("relay_api_requests_total", APP_LABEL)] == 1
    assert samples[("relay_messages_received_total", APP_LABEL)] == 3  # the three subscribes
    # 2 connection_established + 3 subscription_succeeded + 3 publishes × 2 subscribers = 11 frames at least.
    assert samples[("relay_messages_sent_total", APP_LABEL)] >= 11
    assert samples[("relay_bytes_sent_total", APP_LABEL)] > samples[("relay_bytes_received_total", APP_LABEL)] > 0
    assert samples[("relay_webhook_requests_total", (("app_id", "1"), ("status", "200")))] >= 1
    assert samples[("relay_webhook_requests_total", (("app_id", "1"), ("status", "500")))] >= 1
    assert samples[("relay_webhook_failures_total", APP_LABEL)] >= 1
    assert samples[("relay_http_requests_total", (("status", "200"),))] == 4
    assert samples[("relay_http_requests_total", (("status", "401"),))] == 1
    assert samples[("relay_connections_refused_total", (("code", "4001"),))] == 1
    histogram = {labels[0][1]: value for (name, labels), value in samples.items()
                 if name == "relay_publish_to_write_seconds_bucket"}  # fmt: skip
    assert histogram["+Inf"] == 3 == samples[("relay_publish_to_write_seconds_count", ())]
    bounds = sorted(histogram, key=lambda le: math.inf if le == "+Inf" else float(le))
    assert [histogram[b] for b in bounds] == sorted(histogram.values())  # cumulative
    assert 0 < samples[("relay_publish_to_write_seconds_sum", ())] < 1

    # Closing a connection is reflected at the next scrape.
    await alice.close()
    await eventually(lambda: len(emulator.node.states["1"].peers) == 1, what="alice to be gone")
    samples, _ = await scrape(emulator.http_url)
    assert samples[("relay_connections", APP_LABEL)] == 1
    assert samples[("relay_subscriptions", APP_LABEL)] == 2
    await bob.close()


async def test_health_and_ready_while_serving_and_while_draining(start_emulator: StartEmulator) -> None:
    """/ready turns 503 once a graceful shutdown starts (load balancers stop routing), /health stays 200; the
    connections are closed only after shutdown_delay (here cut short by a second signal). Each answer while draining
    closes its HTTP connection, so a proxy does not keep it to send later requests here."""
    emulator = await start_emulator(app=APP, shutdown_delay=30.0)
    client = await ws_client(emulator.ws_url())
    hurry = asyncio.Event()
    async with httpx.AsyncClient(base_url=emulator.http_url) as http:
        ready = await http.get("/ready")
        assert (ready.json(), ready.headers["connection"]) == ({"status": "ready"}, "keep-alive")
        drain = asyncio.create_task(graceful_shutdown(emulator.node, None, spread=0.3, webhook_grace=0.1, hurry=hurry))
        await asyncio.sleep(0)
        ready = await http.get("/ready")
        assert ready.status_code == 503 and ready.json() == {"status": "draining"}
        assert ready.headers["connection"] == "close"
        assert ready.reason_phrase == "Service Unavailable"  # was "Unknown"
        assert (await http.get("/health")).json() == {"status": "ok"}
        samples, _ = parse((await http.get("/metrics")).text)
        assert samples[("relay_ready", ())] == 0
        assert not drain.done()
        hurry.set()
        error = await client.expect("pusher:error")
        assert error["data"]["code"] == 4200
        await asyncio.wait_for(drain, 5)


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})? (\S+)$")


async def test_metrics_samples_belong_to_the_family_their_type_line_names(start_emulator: StartEmulator) -> None:
    """Text format 0.0.4: a sample's name is its metric family's name (only histogram and summary samples add
    _bucket/_sum/_count), as the official clients write "# TYPE relay_publishes_total counter"; strict parsers
    (client_golang's, so promtool, the Pushgateway and federation) read samples named otherwise as untyped."""
    node = await start_emulator(app=APP)
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"{node.http_url}/metrics")).text
    types: dict[str, str] = {}
    untyped: list[str] = []
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            types[name] = kind
        elif line and not line.startswith("#"):
            match = _SAMPLE.match(line)
            assert match is not None, line
            name = match.group(1)
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            if name not in types and types.get(base) != "histogram":
                untyped.append(name)
    assert types["relay_publishes_total"] == "counter"  # the page was read, with its families
    assert untyped == []


async def test_every_metric_served_is_in_the_docs_table_with_its_type(start_emulator: StartEmulator) -> None:
    """docs/emulator.md "Metrics and health checks" lists each family /metrics serves, with its type."""
    node = await start_emulator(app=APP)
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"{node.http_url}/metrics")).text
    served = dict(line.split(" ", 3)[2:] for line in text.splitlines() if line.startswith("# TYPE "))
    documented: dict[str, str] = {}
    for row in re.findall(r"^\| (`relay_.*|`process_.*)$", METRICS_DOC.read_text(), re.MULTILINE):
        names, kind = row.split(" | ")[:2]
        documented.update((name, kind) for name in re.findall(r"`([a-z_]+)`", names))
    assert "process_max_fds" in served
    assert served == documented


async def test_the_frame_a_connection_is_closed_with_is_metered(start_emulator: StartEmulator) -> None:
    """A terminated session's ``pusher:error`` (here 4009, not signed in in time) is written like any frame, and
    counted like one: it was left out of relay_messages_sent_total, relay_bytes_sent_total and the usage meter."""
    emulator = await start_emulator(app=replace(APP, user_authentication_timeout=1.0))
    async with websockets.connect(emulator.ws_url(), compression=None) as ws:  # the bytes as the client gets them
        received = [await ws.recv(), await asyncio.wait_for(ws.recv(), 5)]
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4009
    assert [json.loads(frame)["event"] for frame in received] == ["pusher:connection_established", "pusher:error"]
    written = sum(len(frame) + (2 if len(frame) < 126 else 4) for frame in received)  # payload and frame header
    samples, _ = await scrape(emulator.http_url)
    assert samples[("relay_messages_sent_total", APP_LABEL)] == 2
    assert samples[("relay_bytes_sent_total", APP_LABEL)] == written


async def test_a_scraper_keeping_its_connection_alive_reads_every_worker(redis: RedisServer) -> None:
    """Prometheus keeps its scrape connection alive, and each worker of --workers answers /metrics for itself: every
    scrape reached the worker that had accepted the connection, so the other workers' connections and publishes were
    never seen. A cluster node closes the connection after /metrics, so successive scrapes reach every worker."""
    workers = await EmulatorProcess.start(*CREDENTIALS, "--workers", "2", "--redis-url", redis.url)
    try:
        await eventually(lambda: len(node_ids(workers)) == 2, within=20, what="both workers listening")
        scraped: set[str] = set()
        async with httpx.AsyncClient() as http:  # one client: it reuses a kept-alive connection, as Prometheus does
            for _ in range(40):  # a new connection reaches one worker or the other: 2^-39 to miss one in 40
                samples, _ = parse((await http.get(f"http://127.0.0.1:{workers.port}/metrics")).text)
                scraped.update(dict(labels)["node"] for name, labels in samples if name == "relay_ready")
                if len(scraped) == 2:
                    break
        assert scraped == set(node_ids(workers))
    finally:
        await workers.stop()
