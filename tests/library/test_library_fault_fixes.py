"""The library against faults a real network has (found with a fault-injecting proxy in front of the emulator):

- a connection lost after the request went out (a reset as the answer comes back, a keep-alive connection the server
  closes as a request leaves) was reported as "could not reach" with advice to switch to HTTPS, and no word that the
  publish may have been delivered, though it had been;
- a batch split into calls whose second call was sent and never answered said to send its events again;
- ``close()``/``aclose()`` waited out the back-off between retries (up to ``max_delay``) before ``ClientClosed``.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from libsupport import server

from relay import AsyncRelay, Event, Relay
from relay.errors import ClientClosed, TransportError
from relay.senders import RetryPolicy

OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
BUSY = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 8\r\nContent-Length: 0\r\n\r\n"
POLICY = RetryPolicy(attempts=3, backoff=0.01, max_delay=10.0, timeout=5.0)


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
    async with server(lambda _: BUSY) as (url, got):
        relay = Relay(url, retry=POLICY)
        threading.Timer(0.3, relay.close).start()
        started = time.monotonic()
        with pytest.raises(ClientClosed) as raised:
            await asyncio.to_thread(relay.publish, "orders", "paid", 1)
    assert time.monotonic() - started < 4  # the 503's Retry-After was 8 s
    assert len(got) == 1 and "closed during a request to 127.0.0.1" in raised.value.message


async def test_aclose_ends_the_wait_between_retries() -> None:
    async with server(lambda _: BUSY) as (url, got):
        relay = AsyncRelay(url, retry=POLICY)
        asyncio.get_running_loop().call_later(0.3, lambda: asyncio.ensure_future(relay.aclose()))
        started = time.monotonic()
        with pytest.raises(ClientClosed) as raised:
            await relay.publish("orders", "paid", 1)
    assert time.monotonic() - started < 4
    assert len(got) == 1 and "closed during a request to 127.0.0.1" in raised.value.message


async def test_a_task_cancelled_while_it_waits_to_retry_is_cancelled() -> None:
    """The wait aclose() can end is the caller's too: cancelling the caller still cancels it."""
    async with server(lambda _: BUSY) as (url, _got), AsyncRelay(url, retry=POLICY) as relay:
        task = asyncio.ensure_future(relay.publish("orders", "paid", 1))
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
