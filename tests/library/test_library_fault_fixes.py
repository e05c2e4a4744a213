"""The library against faults a real network has (found with a fault-injecting proxy in front of the emulator):

- a connection lost after the request went out (a reset as the answer comes back, a keep-alive connection the server
  closes as a request leaves) was reported as "could not reach" with advice to switch to HTTPS, and no word that the
  publish may have been delivered, though it had been;
- a batch split into calls whose second call was sent and never answered said to send its events again;
- ``close()``/``aclose()`` waited out the back-off between retries (up to ``max_delay``) before ``ClientClosed``;
- ``aclose()`` left a request whose connection was still being opened to go on once it opened.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from libsupport import close_after, server

from relay import AsyncRelay, Event, Relay
from relay.errors import ClientClosed, TransportError
from relay.senders import RetryPolicy

OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
BUSY = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 8\r\nContent-Length: 0\r\n\r\n"
POLICY = RetryPolicy(attempts=3, backoff=0.01, max_delay=10.0, timeout=5.0)
KEY, SECRET = "app-key", "app-secret"


async def test_a_publish_whose_connection_is_lost_after_it_was_sent_may_have_been_delivered() -> None:
    async with server(lambda _: None) as (url, got):
        with Relay(url, retry=POLICY) as relay, pytest.raises(TransportError) as raised:
            await asyncio.to_thread(relay.publish, "orders", "paid", {"id": 42})
    message = raised.value.message
    assert len(got) == 1  # sent once: a publish that may have been delivered is not sent again
    assert message.startswith("the connection to 127.0.0.1:")
    assert "the request was sent and may have been processed: a publish may have been delivered" in message
    assert "could not reach" not in message and raised.value.outcome_unknown


async def test_a_split_batch_whose_second_call_is_unanswered_does_not_say_to_send_it_again() -> None:
    async with server(lambda n: OK if n == 1 else None) as (url, got):
        events = [Event(f"orders-{number}", "paid", number) for number in range(15)]
        async with AsyncRelay(url, retry=POLICY) as relay:
            with pytest.raises(TransportError) as raised:
                await relay.publish_batch(events)
    assert len(got) == 2 and raised.value.published == 10
    message = raised.value.message
    assert "events 0-9 were already published by the calls before this one (its first call took 10)" in message
    assert message.endswith(": those from 10 on may have been delivered in part, check before sending them again")
    assert "send only" not in message


async def test_close_ends_the_wait_between_retries() -> None:
    relay: Relay | None = None
    busy = close_after(1, lambda _: BUSY, lambda: threading.Thread(target=relay.close).start() if relay else None)
    async with server(busy) as (url, got):
        relay = Relay(url, retry=POLICY)
        started = time.monotonic()
        with pytest.raises(ClientClosed) as raised:
            await asyncio.to_thread(relay.publish, "orders", "paid", 1)
    assert time.monotonic() - started < 4  # the 503's Retry-After was 8 s
    assert len(got) == 1 and "closed during a request to 127.0.0.1" in raised.value.message


async def test_aclose_ends_the_wait_between_retries() -> None:
    relay: AsyncRelay | None = None
    busy = close_after(1, lambda _: BUSY, lambda: asyncio.ensure_future(relay.aclose()) if relay else None)
    async with server(busy) as (url, got):
        relay = AsyncRelay(url, retry=POLICY)
        started = time.monotonic()
        with pytest.raises(ClientClosed) as raised:
            await relay.publish("orders", "paid", 1)
    assert time.monotonic() - started < 4
    assert len(got) == 1 and "closed during a request to 127.0.0.1" in raised.value.message


async def test_aclose_in_the_wait_after_an_undecided_attempt_says_the_publish_may_have_been_delivered() -> None:
    """An Ably publish answered 504 (a gateway gave up waiting for Ably: it may have published) is retried as the same
    message, and the retry answered 503; closed in the wait that follows, the publish may still have been delivered
    by the first attempt. It said the provider had refused each attempt: create another client to send it again."""
    timed_out = b"HTTP/1.1 504 Gateway Timeout\r\nContent-Length: 0\r\n\r\n"
    relay: AsyncRelay | None = None
    answers = close_after(
        2, lambda n: timed_out if n == 1 else BUSY, lambda: asyncio.ensure_future(relay.aclose()) if relay else None
    )
    async with server(answers) as (url, got):
        port = url.rsplit(":", 1)[1].split("/")[0]
        relay = AsyncRelay(f"ably://appid.keyid:secret@127.0.0.1:{port}?tls=false", retry=POLICY)
        with pytest.raises(ClientClosed) as raised:
            await relay.publish("orders", "paid", 1)
    assert len(got) == 2
    assert raised.value.outcome_unknown and raised.value.sent
    assert raised.value.message == (
        f"this Relay client was closed during a request to 127.0.0.1:{port}: the request may or may not have reached "
        "the provider (a publish may have been delivered); create another client, and check before sending it again"
    )


async def test_a_task_cancelled_while_it_waits_to_retry_is_cancelled() -> None:
    """The wait aclose() can end is the caller's too: cancelling the caller still cancels it."""
    async with server(lambda _: BUSY) as (url, _got), AsyncRelay(url, retry=POLICY) as relay:
        task = asyncio.ensure_future(relay.publish("orders", "paid", 1))
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


@contextlib.contextmanager
def never_connecting() -> Iterator[int]:
    """A port whose new connections stay being opened: its listener accepts none and its backlog is full, so Linux
    drops their SYNs (a connect then retries them for as long as its timeout)."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=0)
    queued: list[socket.socket] = []
    try:
        for _ in range(10):
            probe = socket.create_connection(listener.getsockname(), timeout=5)  # into the backlog
            queued.append(probe)
            with socket.socket() as extra:
                extra.settimeout(0.2)
                try:
                    extra.connect(listener.getsockname())
                except TimeoutError:
                    break  # the backlog is full
        else:
            pytest.fail("the listener's backlog never filled")
        yield listener.getsockname()[1]
    finally:
        for sock in [*queued, listener]:
            sock.close()


async def connections_being_opened(port: int, count: int) -> None:
    """Returns once ``count`` connections to ``port`` are being opened (SYN sent): a fixed sleep was too short for the
    other thread's request on a loaded machine, which then started after aclose() (ClientClosed, nothing sent)."""
    syn_sent = "02"
    for _ in range(200):
        rows = [line.split() for line in Path("/proc/net/tcp").read_text().splitlines()[1:]]  # noqa: ASYNC240
        if sum(row[2].endswith(f":{port:04X}") and row[3] == syn_sent for row in rows) >= count:
            return
        await asyncio.sleep(0.05)
    pytest.fail(f"{count} connections to port {port} were never being opened")


@pytest.mark.parametrize("closed_from", ["its loop", "another thread"])
async def test_aclose_ends_at_once_a_request_whose_connection_is_being_opened(closed_from: str) -> None:
    """docs/library.md: closed during a request, the request fails with ClientClosed at once whatever the timeout.
    aclose() closed each loop's connections, which left out one still being opened: its request went on once it
    opened, to its answer or its timeout. One client used from two loops: aclose() from either, or from a third,
    ends the requests of both."""
    with never_connecting() as port:
        relay = AsyncRelay(f"emulator://{KEY}:{SECRET}@127.0.0.1:{port}/apps/1", retry=RetryPolicy(timeout=30.0))
        here = asyncio.ensure_future(relay.publish("orders", "paid", 1))
        there = asyncio.ensure_future(asyncio.to_thread(asyncio.run, relay.publish("orders", "paid", 2)))
        await connections_being_opened(port, 2)
        assert not here.done() and not there.done()
        started = time.monotonic()
        if closed_from == "its loop":
            await relay.aclose()
        else:
            await asyncio.to_thread(asyncio.run, relay.aclose())
        outcomes = await asyncio.wait_for(asyncio.gather(here, there, return_exceptions=True), 10)
    assert time.monotonic() - started < 5, "not at once"  # the timeout is 30 s: 5 leaves a loaded machine room
    for outcome in outcomes:
        assert isinstance(outcome, ClientClosed), repr(outcome)
        # Nothing was sent on a connection never opened: the request may be sent again (it said it may have been
        # delivered)
        assert not outcome.sent and not outcome.outcome_unknown
        assert "before any of it was sent: the provider got nothing" in outcome.message


async def test_aclose_from_another_thread_ends_a_request_reading_its_answer() -> None:
    """A request whose answer is coming (its body never ends) fails with ClientClosed at once too."""
    head_only = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 10\r\n\r\n{"
    async with server(lambda _: head_only) as (url, got):
        relay = AsyncRelay(url, retry=RetryPolicy(timeout=30.0))
        publish = asyncio.ensure_future(relay.publish("orders", "paid", 1))
        for _ in range(500):  # the request sent (a fixed 0.5 s was sometimes before it came, on a loaded machine)
            if got:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)  # the head read, the body awaited
        assert got and not publish.done()
        started = time.monotonic()
        await asyncio.to_thread(asyncio.run, relay.aclose())
        with pytest.raises(ClientClosed) as raised:
            await asyncio.wait_for(publish, 10)
    assert time.monotonic() - started < 5, "not at once"  # the timeout is 30 s: 5 leaves a loaded machine room
    assert raised.value.outcome_unknown
