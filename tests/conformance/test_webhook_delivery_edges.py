"""Webhook delivery edges: what counts as delivered, and custom headers that collide with the signed ones."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket

import pusher  # type: ignore[import-untyped]
import pytest

from relay.emulator.config import App, Webhook
from relay.protocol.signing import webhook_signature
from tests.conformance.wsclient import Connect
from tests.conftest import StartEmulator
from tests.webhook_receiver import Receiver

KEY, SECRET = "app-key", "app-secret"


def hooked_app(*webhooks: Webhook) -> App:
    return App(app_id="1", key=KEY, secret=SECRET, webhooks=webhooks, webhook_batch_ms=20, webhook_retry_for=10.0)


async def test_a_redirect_answer_is_not_a_delivery_and_the_same_events_are_sent_again(
    receiver: Receiver, start_emulator: StartEmulator, connect: Connect
) -> None:
    """Only a 2xx answer delivers a webhook: a receiver answering 302 (a misconfigured URL, a login page) gets the
    same events again on the retry, and none is lost."""
    receiver.statuses.append(302)
    emulator = await start_emulator(app=hooked_app(Webhook(url=receiver.url)))
    client = await connect(emulator)
    await client.subscribed("room")
    with contextlib.suppress(TimeoutError):  # the assertion below says what is missing
        await receiver.wait_for(2, within=4.0)
    occupied = [{"name": "channel_occupied", "channel": "room"}]
    assert [delivery.events for delivery in receiver.deliveries] == [occupied, occupied], (
        "a 302 answer must be retried with the same events"
    )
    await receiver.quiet(2, 0.3)


async def test_a_burst_of_events_goes_out_in_requests_of_at_most_20_as_hosted_pusher_sends_them(
    receiver: Receiver, start_emulator: StartEmulator, connect: Connect
) -> None:
    """Everything waiting went out in one request of up to 1,000 events: a burst (or what piled up while the receiver
    was down) made a body of any size, which a receiver's body limit refused with 413 at every retry, until all of
    it was dropped. Hosted Pusher closes a batch at 20 events; so does the emulator, in order."""
    app = App(app_id="1", key=KEY, secret=SECRET, webhooks=(Webhook(url=receiver.url),), webhook_batch_ms=300)
    emulator = await start_emulator(app=app)
    client = await connect(emulator)
    channels = [f"room-{number}" for number in range(45)]
    for channel in channels:
        await client.send_subscribe(channel)
    for channel in channels:
        await client.expect("pusher_internal:subscription_succeeded", channel)
    await receiver.wait_for(3, within=5.0)
    await receiver.quiet(3, 0.3)
    assert [len(delivery.events) for delivery in receiver.deliveries] == [20, 20, 5]
    assert receiver.events() == [{"name": "channel_occupied", "channel": channel} for channel in channels]
    assert receiver.signed_by(SECRET)


async def test_an_answer_later_than_4_seconds_is_a_failure_and_the_events_are_sent_again(
    receiver: Receiver, start_emulator: StartEmulator, connect: Connect
) -> None:
    """Hosted Pusher wants a 2xx within 4 seconds and retries otherwise; the emulator waited 10 s, so a handler that
    took 6 s passed locally and got every webhook twice in production. Now it is retried here too."""
    receiver.delays.append(4.6)
    emulator = await start_emulator(app=hooked_app(Webhook(url=receiver.url)))
    client = await connect(emulator)
    await client.subscribed("room")
    first, second = await receiver.wait_for(2, within=10.0)
    occupied = [{"name": "channel_occupied", "channel": "room"}]
    assert first.events == second.events == occupied
    # With a 10 s limit the slow 200 was a delivery, and nothing came again; now 4 s, then a back-off of 0.5-1 s.
    assert 4.5 <= second.at - first.at < 5.5
    await receiver.quiet(2, 0.5)


async def test_custom_headers_named_like_the_signed_ones_in_capitals_are_dropped(
    receiver: Receiver, start_emulator: StartEmulator, connect: Connect
) -> None:
    """A webhook's custom headers whose names are Content-Type or X-Pusher-Key in another case do not go out next to
    (or instead of) the real ones: the POST has one ``application/json`` content type and one ``X-Pusher-Key`` (the
    app key), other custom headers are kept, and pusher-http-python's ``validate_webhook`` accepts it."""
    headers = {"CONTENT-TYPE": "text/plain", "X-PUSHER-KEY": "no", "X-Extra": "1"}
    emulator = await start_emulator(app=hooked_app(Webhook(url=receiver.url, headers=headers)))
    client = await connect(emulator)
    await client.subscribed("room")
    (delivery,) = await receiver.wait_for(1)
    assert delivery.header_values("content-type") == ["application/json"]
    assert delivery.header_values("x-pusher-key") == [KEY]
    assert delivery.header_values("x-extra") == ["1"]
    (signature,) = delivery.header_values("x-pusher-signature")
    assert signature == webhook_signature(SECRET, delivery.body)
    validator = pusher.Pusher(app_id="1", key=KEY, secret=SECRET)
    validated = await asyncio.to_thread(validator.validate_webhook, KEY, signature, delivery.body.decode())
    assert validated == json.loads(delivery.body)
    assert validated["events"] == [{"name": "channel_occupied", "channel": "room"}]


async def test_receivers_that_never_answer_do_not_hold_up_another_webhook(
    receiver: Receiver, start_emulator: StartEmulator, connect: Connect
) -> None:
    """Every webhook's requests shared one HTTP client with httpx's cap of 100 connections: 120 receivers that
    accept and never answer (a hung handler, a host dropping packets) held them all, and the healthy webhook's
    request waited for a connection until its 4 s ran out, retried. docs/security.md: other URLs are not held up."""
    held: list[asyncio.StreamWriter] = []

    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    hung = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = hung.sockets[0].getsockname()[1]
    try:
        stuck = [Webhook(url=f"http://127.0.0.1:{port}/hook-{number}") for number in range(120)]
        emulator = await start_emulator(app=hooked_app(*stuck, Webhook(url=receiver.url)))
        client = await connect(emulator)
        await client.subscribed("room")
        subscribed = asyncio.get_running_loop().time()
        await receiver.wait_for(1, within=5.0)
        assert receiver.deliveries[0].at - subscribed < 2.0, "the healthy webhook waited for a connection"
        assert receiver.events() == [{"name": "channel_occupied", "channel": "room"}]
        for _ in range(100):  # every stuck webhook's request open at once
            if len(held) == len(stuck):
                break
            await asyncio.sleep(0.05)
        assert len(held) == len(stuck)
    finally:
        for writer in held:
            writer.close()
        hung.close()


async def test_each_failed_attempt_is_logged_with_what_went_wrong(
    receiver: Receiver, start_emulator: StartEmulator, connect: Connect, caplog: pytest.LogCaptureFixture
) -> None:
    """A refused port, a name that does not resolve and a failed TLS handshake were all logged as 'failed:
    ConnectError', and an answer that is not 2xx (a 401 from a mismatched secret, a redirect) not at all until its
    events were dropped, 5 minutes later. Each attempt now says what happened."""
    receiver.statuses.extend([401, 307])
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        refused = f"http://127.0.0.1:{unused.getsockname()[1]}/hook"
    hooks = (Webhook(url=receiver.url), Webhook(url=refused), Webhook(url=f"https://{receiver.url[len('http://') :]}"))
    emulator = await start_emulator(app=hooked_app(*hooks))
    client = await connect(emulator)
    caplog.set_level(logging.WARNING, "relay.emulator.webhooks")
    await client.subscribed("room")
    await receiver.wait_for(3, within=8.0)  # the 401, the 307 and the delivery

    def failures(url: str) -> list[str]:
        return [
            record.getMessage() for record in caplog.records if record.getMessage().startswith(f"webhook to {url} ")
        ]

    await receiver.until(lambda: bool(failures(refused) and failures(hooks[2].url)), within=3.0)
    assert failures(receiver.url) == [
        f"webhook to {receiver.url} failed: answered 401",
        f"webhook to {receiver.url} failed: answered 307",
    ]
    assert failures(refused)[0] == f"webhook to {refused} failed: ConnectError: Connection refused"
    assert failures(hooks[2].url)[0].startswith(
        f"webhook to {hooks[2].url} failed: ConnectError: [SSL: WRONG_VERSION_NUMBER]"
    )
