"""Found hunting webhook bugs end to end (the emulator's side), with a real emulator and a real HTTP receiver: each
test failed before its fix."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace

import httpx
import pytest

from relay.emulator.config import Webhook
from relay.emulator.webhooks import WebhookDispatcher
from tests.cli_support import assert_refused, run_relay
from tests.conformance.wsclient import Connect
from tests.conformance.wsclient import connect as connect
from tests.conftest import TEST_APP, RunningEmulator, StartEmulator
from tests.webhook_receiver import Receiver, until_dropped


async def refused_twice_then_left(running: RunningEmulator, receiver: Receiver, connect: Connect) -> None:
    """A subscriber comes and goes: its channel_occupied is refused twice (its third attempt waits 1 to 2 s), and its
    channel_vacated is held for the webhook delay (3 s)."""
    client = await connect(running)
    await client.subscribe("orders")
    await receiver.wait_for(2, within=3)  # the first attempt, and its retry 0.5 to 1 s later
    await client.ws.close()
    while "orders" in running.node.states[TEST_APP.app_id].channels:  # noqa: ASYNC110  (no event for "left")
        await asyncio.sleep(0.01)


async def test_a_webhook_waiting_out_its_back_off_is_sent_again_at_shutdown(
    start_emulator: StartEmulator, receiver: Receiver, connect: Connect, caplog: pytest.LogCaptureFixture
) -> None:
    """A request refused twice waits 1 to 2 s for its third attempt (up to a minute after a longer outage). Closing
    waited out that back-off, past the grace, and dropped the events though the receiver was answering again (the
    held channel_vacated behind them too); now the shutdown retries at once what is waiting, within the grace."""
    receiver.statuses.extend([503, 503])
    running = await start_emulator(app=replace(TEST_APP, webhooks=(Webhook(url=f"{receiver.url}/hooks"),)))
    await refused_twice_then_left(running, receiver, connect)
    started = time.monotonic()
    await running.node.close(webhook_grace=0.8)
    assert time.monotonic() - started < 0.8
    assert receiver.event_names() == ["channel_occupied"] * 3 + ["channel_vacated"]
    assert receiver.signed_by(TEST_APP.secret)
    assert running.node.states[TEST_APP.app_id].webhooks.dropped == 0
    assert not [record for record in caplog.records if record.getMessage().startswith("shutdown: dropped")]


async def test_a_receiver_still_failing_at_shutdown_is_retried_once_more_not_in_a_loop(
    start_emulator: StartEmulator, receiver: Receiver, connect: Connect, caplog: pytest.LogCaptureFixture
) -> None:
    """The retry a shutdown brings forward is one: a receiver still refusing is not sent the request again and again
    for the whole grace, and what it refused is dropped, counted and logged when the grace runs out."""
    receiver.status = 503
    running = await start_emulator(app=replace(TEST_APP, webhooks=(Webhook(url=f"{receiver.url}/hooks"),)))
    await refused_twice_then_left(running, receiver, connect)
    caplog.set_level(logging.WARNING, "relay.emulator.webhooks")
    await running.node.close(webhook_grace=0.4)
    assert len(receiver.deliveries) == 3
    assert running.node.states[TEST_APP.app_id].webhooks.dropped == 2  # channel_occupied, and channel_vacated behind it
    [dropped] = [record for record in caplog.records if record.getMessage().startswith("shutdown: dropped")]
    assert dropped.getMessage() == (
        f"shutdown: dropped 2 webhook event(s) in 2 request(s) for {receiver.url}/hooks: "
        "not delivered within the 0.4 s grace"
    )


async def test_webhook_retry_for_runs_from_when_an_event_was_queued_not_from_when_its_request_starts(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    """Hosted Pusher retries each webhook for 5 minutes from its creation. The emulator started a request's
    ``webhook_retry_for`` only when the request before it was done: events queued behind a request being retried
    waited untried, then were retried for another 5 minutes each, so a receiver down for an hour was sent, when back,
    events an hour old (restamped, so it could not tell) while the newest ones had been dropped from a full queue.
    Now an event whose time ran out while it waited is tried once, and dropped if that fails."""
    app = replace(TEST_APP, webhooks=(Webhook(url=receiver.url + "/hooks"),), webhook_batch_ms=0, webhook_retry_for=300)
    receiver.status = 503
    now = [1_000.0]
    async with httpx.AsyncClient() as client:
        dispatcher = WebhookDispatcher(app, client, clock=lambda: now[0])
        with caplog.at_level(logging.ERROR, logger="relay.emulator.webhooks"):
            dispatcher.emit({"name": "channel_occupied", "channel": "first"})
            await receiver.wait_for(1)
            dispatcher.emit({"name": "channel_occupied", "channel": "second"})  # waits behind the first's back-off
            await asyncio.sleep(0.05)
            now[0] += 400  # both were queued more than webhook_retry_for ago
            await receiver.wait_for(3, within=3.0)  # the first's last try, then the second's only one
            await until_dropped(dispatcher, 2)
        assert dispatcher.dropped == 2
        assert dispatcher.pending == 0
        assert caplog.text.count("/hooks dropped 1 event(s)") == 2, caplog.text
        receiver.status = 200  # an event queued now has its whole webhook_retry_for
        dispatcher.emit({"name": "channel_vacated", "channel": "second"})
        await receiver.wait_for(4)
        await dispatcher.close(grace=1.0)
    assert [delivery.events[0]["channel"] for delivery in receiver.deliveries] == ["first", "first", "second", "second"]
    assert receiver.deliveries[3].events == [{"name": "channel_vacated", "channel": "second"}]


async def test_a_batch_holding_a_request_s_worth_of_events_is_sent_before_its_window_closes(
    receiver: Receiver,
) -> None:
    """Hosted Pusher sends a batch after 250 ms or once it holds 20 events. The emulator waited out its window
    whatever it held, so a burst reached the receiver a window late; now 20 events go at once, and what follows them
    waits for the window as before."""
    app = replace(TEST_APP, webhooks=(Webhook(url=receiver.url + "/hooks"),), webhook_batch_ms=60_000)
    async with httpx.AsyncClient() as client:
        dispatcher = WebhookDispatcher(app, client)
        for number in range(21):
            dispatcher.emit({"name": "channel_occupied", "channel": f"room-{number}"})
        await receiver.wait_for(1, within=3.0)
        assert [event["channel"] for event in receiver.deliveries[0].events] == [f"room-{n}" for n in range(20)]
        for _ in range(200):  # the request is answered, and the 21st waits for the minute's window
            if dispatcher.pending == 1:
                break
            await asyncio.sleep(0.01)
        assert dispatcher.pending == 1
        assert len(receiver.deliveries) == 1
        await dispatcher.close(grace=1.0)
    assert [event["channel"] for delivery in receiver.deliveries for event in delivery.events] == [
        f"room-{n}" for n in range(21)
    ]


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://localhost:99999/hooks", "its port is not a number from 1 to 65535"),
        ("http://localhost:30a0/hooks", "its port is not a number from 1 to 65535"),
        ("http://localhost:0/hooks", "its port is not a number from 1 to 65535"),
        ("http:///hooks", "it has no host"),
        ("http://[::1/hooks", "its host in [] is not an IPv6 address"),
        ("http://localhost:3000/my hooks", "it has a space or a control character in it"),
    ],
)
async def test_a_refused_webhook_url_says_what_is_wrong_with_it(url: str, reason: str) -> None:
    """An http:// URL refused for its port, its host or a space was told only "must be an http:// or https:// URL",
    which it is: the error now ends with the reason."""
    outcome = await run_relay("emulator", "--port", "0", "--webhook-url", url)
    assert_refused(outcome, f"--webhook-url must be an http:// or https:// URL, got {url!r}: {reason}")


async def test_a_failing_webhook_is_logged_without_its_url_s_credentials(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    """Each failed attempt logged the webhook's URL as configured, a ``user:password@`` in it included, unless the
    emulator's log redaction was set up (an embedding app's logging has none); only the final drop hid it."""
    authority = receiver.url.removeprefix("http://")
    app = replace(
        TEST_APP,
        webhooks=(Webhook(url=f"http://relay:hunter2@{authority}/hooks"),),
        webhook_batch_ms=0,
        webhook_retry_for=0,
    )
    receiver.status = 503
    async with httpx.AsyncClient() as client:
        dispatcher = WebhookDispatcher(app, client)
        with caplog.at_level(logging.WARNING, logger="relay.emulator.webhooks"):
            dispatcher.emit({"name": "channel_occupied", "channel": "orders"})
            await receiver.wait_for(1)
            await until_dropped(dispatcher, 1)
        await dispatcher.close(grace=0)
    assert dispatcher.dropped == 1
    assert f"webhook to http://***@{authority}/hooks failed: answered 503" in caplog.text
    assert "hunter2" not in caplog.text
