"""A mirror's errors keep what one provider's would say: a client closed during a request is ``ClientClosed`` (not
a ``MirrorError`` of it and of the next provider's "is closed"), and a publish that may have been delivered somewhere
says so on the ``MirrorError`` itself."""

from __future__ import annotations

import asyncio
import threading

import pytest
from libsupport import close_after, server

from relay import AsyncRelay, MirrorError, Relay
from relay.errors import ClientClosed, TransportError
from relay.senders import RetryPolicy

BUSY = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 8\r\nContent-Length: 0\r\n\r\n"
POLICY = RetryPolicy(attempts=3, backoff=0.01, max_delay=10.0, timeout=5.0)


async def test_close_during_a_mirrored_publish_is_client_closed_and_the_next_provider_is_not_tried() -> None:
    relay: Relay | None = None
    busy = close_after(1, lambda _: BUSY, lambda: threading.Thread(target=relay.close).start() if relay else None)
    async with server(busy) as (first, got_first), server(lambda _: BUSY) as (second, got_second):
        relay = Relay(f"mirror:{first}|{second}", retry=POLICY)
        with pytest.raises(ClientClosed) as raised:
            await asyncio.to_thread(relay.publish, "orders", "paid", 1)
    port = first.split("@")[1].split("/")[0]
    assert raised.value.message.startswith(f"this Relay client was closed during a request to {port}, while it waited")
    # The provider answered 503, which it did not process: the outcome is known (it said it was not, and it may be
    # sent again)
    assert raised.value.sent and not raised.value.outcome_unknown
    assert len(got_first) == 1 and got_second == []


async def test_aclose_during_a_mirrored_publish_is_client_closed() -> None:
    relay: AsyncRelay | None = None
    busy = close_after(1, lambda _: BUSY, lambda: asyncio.ensure_future(relay.aclose()) if relay else None)
    async with server(busy) as (first, got_first), server(lambda _: BUSY) as (second, got_second):
        relay = AsyncRelay(f"mirror:{first}|{second}", retry=POLICY)
        with pytest.raises(ClientClosed) as raised:
            await relay.publish("orders", "paid", 1)
    port = first.split("@")[1].split("/")[0]
    assert raised.value.message.startswith(f"this Relay client was closed during a request to {port}, while it waited")
    # The provider answered 503, which it did not process: the outcome is known (it said it was not, and it may be
    # sent again)
    assert raised.value.sent and not raised.value.outcome_unknown
    assert len(got_first) == 1 and got_second == []


async def test_a_mirror_error_says_a_publish_may_have_been_delivered_when_a_provider_may_have() -> None:
    """Both connections lost once the requests were sent: each provider's error says the outcome is unknown, and so
    must the MirrorError, or a caller checking it alone sends the event again and it arrives twice."""
    async with server(lambda _: None) as (first, _), server(lambda _: None) as (second, _):
        with Relay(f"mirror:{first}|{second}", retry=POLICY) as relay, pytest.raises(MirrorError) as raised:
            await asyncio.to_thread(relay.publish, "orders", "paid", 1)
    errors = list(raised.value.errors.values())
    assert [type(error) for error in errors] == [TransportError, TransportError]
    assert all(error.outcome_unknown for error in errors)
    assert raised.value.outcome_unknown


async def test_a_mirror_error_of_refusals_is_not_of_unknown_outcome() -> None:
    refused = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 3\r\n\r\nbad"
    async with server(lambda _: refused) as (first, _), server(lambda _: BUSY) as (second, _):
        policy = RetryPolicy(attempts=1, backoff=0.01, max_delay=0.1, timeout=5.0)
        async with AsyncRelay(f"mirror:{first}|{second}", retry=policy) as relay:
            with pytest.raises(MirrorError) as raised:
                await relay.publish("orders", "paid", 1)
    assert len(raised.value.errors) == 2
    assert not raised.value.outcome_unknown
