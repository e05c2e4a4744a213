"""A webhook receiver that is down, then back: every pending webhook arrives, and the queue stays bounded."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import socket
from collections.abc import AsyncIterator
from dataclasses import replace

import httpx
import pytest
import uvicorn
from websockets.asyncio.client import connect

from relay.emulator.config import Webhook
from relay.emulator.webhooks import WebhookDispatcher
from relay.protocol.signing import webhook_signature
from tests.conftest import TEST_APP, StartEmulator, free_port
from tests.webhook_receiver import Receiver, until_dropped

# How long the receiver stays down; RELAY_WEBHOOK_OUTAGE_SECONDS=120 is the two-minute run of the issue.
OUTAGE = float(os.environ.get("RELAY_WEBHOOK_OUTAGE_SECONDS", "2.5"))


class LateReceiver:
    """A receiver whose port is known before it listens, so webhooks to it fail with 'connection refused'."""

    def __init__(self) -> None:
        self.port = free_port()
        self.app = Receiver(url=f"http://127.0.0.1:{self.port}")
        self.server: uvicorn.Server | None = None
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        self.server = uvicorn.Server(uvicorn.Config(self.app, lifespan="off", log_level="warning"))
        self.task = asyncio.create_task(self.server.serve(sockets=[sock]))
        while not self.server.started:  # noqa: ASYNC110
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        if self.server is not None and self.task is not None:
            self.server.should_exit = True
            await self.task


@pytest.fixture
async def late_receiver() -> AsyncIterator[LateReceiver]:
    receiver = LateReceiver()
    yield receiver
    await receiver.stop()


async def churn(url: str, channels: int) -> None:
    for index in range(channels):
        async with connect(url) as ws:
            await ws.recv()
            await ws.send(json.dumps({"event": "pusher:subscribe", "data": {"channel": f"room-{index}"}}))
            await ws.recv()


async def test_webhooks_sent_while_the_receiver_is_down_arrive_when_it_returns(
    start_emulator: StartEmulator, late_receiver: LateReceiver
) -> None:
    app = replace(
        TEST_APP,
        webhooks=(Webhook(url=late_receiver.app.url, event_types=frozenset({"channel_occupied"})),),
        webhook_batch_ms=10,
        webhook_retry_for=max(60, OUTAGE * 2),
    )
    emulator = await start_emulator(app=app)
    await churn(emulator.ws_url(), 5)
    await asyncio.sleep(OUTAGE)
    # The emulator tried (and retried: the second attempt comes at most 1 s after the first), every attempt was
    # refused, and it still holds all five events rather than having given up on them.
    state = emulator.node.states["1"]
    assert state.webhooks.pending == 5
    assert state.webhooks.dropped == 0
    assert state.meter.webhook_failures >= 2
    assert set(state.meter.webhook_statuses) == {"error"}
    await late_receiver.start()
    # retries back off up to 60 s between attempts, so the last one may come that long after the receiver returns
    await late_receiver.app.until(lambda: len(late_receiver.app.events()) == 5, within=10 + min(OUTAGE, 60))
    assert sorted(event["channel"] for event in late_receiver.app.events()) == [f"room-{i}" for i in range(5)]
    for _ in range(100):  # the delivery task ends just after the receiver has answered
        if emulator.node.states["1"].webhooks.pending == 0:
            break
        await asyncio.sleep(0.02)
    assert emulator.node.states["1"].webhooks.pending == 0


async def test_the_pending_queue_is_bounded_and_overflow_is_counted_and_logged(
    start_emulator: StartEmulator, late_receiver: LateReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    app = replace(
        TEST_APP,
        webhooks=(Webhook(url=late_receiver.app.url, event_types=frozenset({"channel_occupied"})),),
        webhook_batch_ms=10,
        webhook_retry_for=60,
        webhook_max_pending=3,
    )
    emulator = await start_emulator(app=app)
    dispatcher = emulator.node.states["1"].webhooks
    with caplog.at_level(logging.ERROR, logger="relay.emulator.webhooks"):
        await churn(emulator.ws_url(), 8)
    await until_dropped(dispatcher, 5, within=2.0)  # the last event is batched for webhook_batch_ms first
    assert dispatcher.pending == 3
    assert dispatcher.dropped == 5
    # The first drop is logged at once: of one event, or of several when a slow machine batched them together.
    full = rf"webhook queue for {re.escape(late_receiver.app.url)} full \(3 events pending\): dropped [1-5] event"
    assert re.search(full, caplog.text), caplog.text
    await late_receiver.start()
    await late_receiver.app.until(lambda: len(late_receiver.app.events()) == 3, within=10)
    assert sorted(event["channel"] for event in late_receiver.app.events()) == ["room-0", "room-1", "room-2"]
    async with connect(emulator.http_url.replace("http", "ws") + "/app/app-key") as ws:  # still serving
        assert json.loads(await ws.recv())["event"] == "pusher:connection_established"


async def test_each_retry_is_stamped_and_signed_when_it_is_sent(receiver: Receiver) -> None:
    """Receivers refuse a webhook whose time_ms is over five minutes old (pusher-http-python, relay's
    verify_webhook): retries sent the first attempt's body, so with webhook_retry_for over 300 s the receiver, back
    after five minutes, refused every retry, and the events queued behind them waited for nothing."""
    app = replace(TEST_APP, webhooks=(Webhook(url=receiver.url + "/hooks"),), webhook_batch_ms=0, webhook_retry_for=600)
    receiver.statuses.append(503)
    now = [1_000.0]
    async with httpx.AsyncClient() as client:
        dispatcher = WebhookDispatcher(app, client, clock=lambda: now[0])
        dispatcher.emit({"name": "channel_occupied", "channel": "news"})
        await receiver.wait_for(1)
        now[0] += 400  # the receiver came back minutes later
        first, retry = await receiver.wait_for(2, within=3.0)  # retried after about a second
        await dispatcher.close(grace=1.0)
    assert [json.loads(delivery.body)["time_ms"] for delivery in (first, retry)] == [1_000_000, 1_400_000]
    for delivery in (first, retry):
        assert delivery.headers["x-pusher-signature"] == webhook_signature(app.secret, delivery.body)
    assert first.events == retry.events == [{"name": "channel_occupied", "channel": "news"}]


async def test_events_given_up_after_webhook_retry_for_are_counted_and_logged_with_the_last_status(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    """A receiver refusing every attempt (401: a secret being rotated) past ``webhook_retry_for``: the events are
    dropped, counted in what relay_webhook_dropped_total reports (they were not), and the log line says how many and
    the last answer, which tells a refused signature from a receiver that is down. The next event is still sent."""
    app = replace(TEST_APP, webhooks=(Webhook(url=receiver.url + "/hooks"),), webhook_batch_ms=0, webhook_retry_for=0)
    receiver.status = 401
    async with httpx.AsyncClient() as client:
        dispatcher = WebhookDispatcher(app, client)
        with caplog.at_level(logging.ERROR, logger="relay.emulator.webhooks"):
            dispatcher.emit({"name": "channel_occupied", "channel": "news"})
            await receiver.wait_for(1)
            await until_dropped(dispatcher, 1)
        assert dispatcher.dropped == 1
        expected = "/hooks dropped 1 event(s) after retrying for 0 s (1 attempts, the last: status 401)"
        assert expected in caplog.text, caplog.text
        receiver.status = 200
        dispatcher.emit({"name": "channel_vacated", "channel": "news"})
        second = (await receiver.wait_for(2))[1]
        await dispatcher.close(grace=1.0)
    assert second.events == [{"name": "channel_vacated", "channel": "news"}]
    assert dispatcher.dropped == 1


async def test_the_last_retry_is_made_at_webhook_retry_for_not_a_back_off_before_it(receiver: Receiver) -> None:
    """The dispatcher gave up as soon as the next back-off would pass ``webhook_retry_for``: with back-offs growing to
    a minute, up to a minute early, and a receiver back by the deadline lost the events. Now the last try is made at
    the deadline: here the receiver answers from 1.4 s on, and retry_for is 1.5 s (back-offs of about 1 s then 2 s)."""
    app = replace(TEST_APP, webhooks=(Webhook(url=receiver.url + "/hooks"),), webhook_batch_ms=0, webhook_retry_for=1.5)
    receiver.status = 503
    async with httpx.AsyncClient() as client:
        dispatcher = WebhookDispatcher(app, client)
        dispatcher.emit({"name": "channel_occupied", "channel": "news"})
        started = asyncio.get_running_loop().time()
        await receiver.wait_for(2, within=3.0)
        await asyncio.sleep(max(0.0, 1.4 - (asyncio.get_running_loop().time() - started)))
        receiver.status = 200
        deliveries = await receiver.wait_for(3, within=3.0)
        await dispatcher.close(grace=1.0)
    assert dispatcher.dropped == 0
    assert deliveries[-1].at - deliveries[0].at >= 1.4
    assert deliveries[-1].events == [{"name": "channel_occupied", "channel": "news"}]
