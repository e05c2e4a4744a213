"""A client closed, or its event loop ended, while requests are in flight:

- ``ClientClosed`` said a request "may or may not have reached the provider" (``outcome_unknown`` true) when none of
  it had been sent (its connection being opened, its TLS handshake under way), and when the provider had answered
  every attempt with a 503 it did not process: a caller told to check before sending again had nothing to check.
  It now has ``sent``, from what httpcore traces, and ``outcome_unknown`` only when what was sent got no answer;
- ``aclose()``, a task's cancellation or the end of ``asyncio.run()`` during a TLS handshake left that connection's
  socket open (httpcore closes the connection of a failed handshake, not of a cancelled one) until the garbage
  collector closed it with a ResourceWarning;
- ``close()`` or ``reset_default_client()`` from another thread did not end a ``Relay`` request during its TLS
  handshake: it waited for the timeout, or for ever with ``timeout=None`` (ssl moves the socket's descriptor to a
  socket object of its own, which close() could not reach);
- a publish cancelled mid-request left its generator of requests suspended, for the garbage collector to close.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import inspect
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from libsupport import SilentServer, server
from libsupport import silent as silent

import relay
from relay import AsyncRelay, Relay
from relay.errors import ClientClosed
from relay.idempotency import NOTHING_DELIVERED
from relay.senders import RetryPolicy

KEY, SECRET = "app-key", "app-secret"
OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
# The end of the body of a publish of {"id": 42}: its data, JSON in a JSON string
PUBLISH_END = rb'{\"id\":42}"}'
NO_TIMEOUT = RetryPolicy(attempts=1, timeout=None)  # only closing the client ends a request


def silent_url(silent: SilentServer, *, tls: bool) -> str:
    return f"emulator://{KEY}:{SECRET}@127.0.0.1:{silent.port}/apps/1" + ("?tls=true" if tls else "")


def first_bytes(silent: SilentServer, *, until: bytes) -> bytes:
    """What the client wrote on its first connection, once it holds ``until``: the request's body, or a TLS record
    (a ClientHello) — so the test closes the client knowing where the request is."""
    silent.wait_for_connections(1)
    conn = silent.accepted[0]
    conn.settimeout(5)
    got = b""
    while until not in got:
        chunk = conn.recv(65536)
        assert chunk, f"the client closed the connection after {got!r}"
        got += chunk
    return got


def closed_by_the_client(silent: SilentServer) -> bytes:
    """Waits until the client closed its first connection (fails after 5 s): what else it wrote before."""
    conn = silent.accepted[0]
    conn.settimeout(5)
    rest = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := conn.recv(65536):
            rest += chunk
    return rest


@contextlib.contextmanager
def nothing_left_to_the_garbage_collector() -> Iterator[None]:
    """What the body opens is closed by the time it ends: with the collector off, a socket left open stays open (so
    the server sees no end of its connection), and the collector run afterwards finds nothing to warn about or to
    fail at finalising."""
    gc.collect()
    finalising: list[str] = []
    previous_hook = sys.unraisablehook
    sys.unraisablehook = lambda unraisable: finalising.append(repr(unraisable.exc_value))
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ResourceWarning)
            gc.disable()
            try:
                yield
            finally:
                gc.enable()
            gc.collect()
    finally:
        sys.unraisablehook = previous_hook
    assert [str(warning.message) for warning in caught if warning.category is ResourceWarning] == []
    assert finalising == []


async def aclose_from(client: AsyncRelay, where: str) -> None:
    if where == "another task":
        await asyncio.ensure_future(client.aclose())
    else:  # another thread, in a loop of its own
        await asyncio.to_thread(asyncio.run, client.aclose())


# -- AsyncRelay: aclose() during a request -----------------------------------------------------------------------------


@pytest.mark.parametrize("closed_from", ["another task", "another thread"])
@pytest.mark.parametrize("operation", ["publish", "query"])
async def test_aclose_during_a_sent_request_is_client_closed_and_closes_its_connection(
    silent: SilentServer, operation: str, closed_from: str
) -> None:
    """Sent and unanswered: ``sent``, and for a publish ``outcome_unknown`` (it may have been delivered); a query
    changes nothing. The connection is closed by aclose(), not left to the garbage collector."""
    with nothing_left_to_the_garbage_collector():
        client = AsyncRelay(silent_url(silent, tls=False), retry=NO_TIMEOUT)
        if operation == "publish":
            request = asyncio.ensure_future(client.publish("orders", "paid", {"id": 42}))
            written = await asyncio.to_thread(first_bytes, silent, until=PUBLISH_END)
        else:
            request = asyncio.ensure_future(client.channel("orders"))
            written = await asyncio.to_thread(first_bytes, silent, until=b"\r\n\r\n")
        started = time.monotonic()
        await aclose_from(client, closed_from)
        with pytest.raises(ClientClosed) as raised:
            await asyncio.wait_for(request, 5)
        assert time.monotonic() - started < 2, "not at once"
        assert await asyncio.to_thread(closed_by_the_client, silent) == b""
    assert written.startswith(b"POST " if operation == "publish" else b"GET ")
    error = raised.value
    assert error.sent
    where = f"127.0.0.1:{silent.port}"
    if operation == "publish":
        assert error.outcome_unknown
        assert error.message == (
            f"this Relay client was closed during a request to {where}: the request may or may not have reached "
            "the provider (a publish may have been delivered); create another client, and check before sending it "
            "again"
        )
    else:
        assert not error.outcome_unknown
        assert error.message == (
            f"this Relay client was closed during a query to {where}: create another client to ask again"
        )


@pytest.mark.parametrize("closed_from", ["another task", "another thread"])
async def test_aclose_during_a_tls_handshake_is_client_closed_of_a_request_not_sent(
    silent: SilentServer, closed_from: str
) -> None:
    """The ClientHello went out, no byte of the request: ``sent`` and ``outcome_unknown`` are false and the message
    says to send it again (it said the publish may have been delivered). The handshake's socket is closed (it was
    left to the garbage collector)."""
    with nothing_left_to_the_garbage_collector():
        client = AsyncRelay(silent_url(silent, tls=True), retry=NO_TIMEOUT)
        publish = asyncio.ensure_future(client.publish("orders", "paid", {"id": 42}))
        hello = await asyncio.to_thread(first_bytes, silent, until=b"\x16\x03")  # a TLS handshake record
        await aclose_from(client, closed_from)
        with pytest.raises(ClientClosed) as raised:
            await asyncio.wait_for(publish, 5)
        assert await asyncio.to_thread(closed_by_the_client, silent) == b""
    assert hello.startswith(b"\x16\x03")
    error = raised.value
    assert not error.sent and not error.outcome_unknown
    assert error.message == (
        f"this Relay client was closed during a request to 127.0.0.1:{silent.port}, before any of it was sent: the "
        "provider got nothing; create another client to send it again"
    )


async def test_a_request_cancelled_during_its_tls_handshake_leaves_no_socket_open(silent: SilentServer) -> None:
    """The caller's own timeout cancels the request, as it did: its handshake's socket is closed all the same."""
    with nothing_left_to_the_garbage_collector():
        async with AsyncRelay(silent_url(silent, tls=True), retry=NO_TIMEOUT) as client:
            publish = asyncio.ensure_future(client.publish("orders", "paid", 1))
            await asyncio.to_thread(first_bytes, silent, until=b"\x16\x03")
            publish.cancel()
            with pytest.raises(asyncio.CancelledError):
                await publish
            assert await asyncio.to_thread(closed_by_the_client, silent) == b""


async def test_a_publish_cancelled_mid_request_closes_its_requests_generator(silent: SilentServer) -> None:
    """The publish's generator of requests (the engine AsyncRelay drives) was left suspended where the cancellation
    found it, for the garbage collector to close whenever it ran: it is closed as the cancellation passes, as a
    finished one is. The publish is the one ``publish()`` makes, driven as ``publish()`` drives it."""
    async with AsyncRelay(silent_url(silent, tls=False), retry=NO_TIMEOUT) as client:
        requests = client._publishing("orders", "paid", {"id": 42}, None, None).requests(NOTHING_DELIVERED)
        publish = asyncio.ensure_future(client._drive(requests))
        await asyncio.to_thread(first_bytes, silent, until=PUBLISH_END)
        assert inspect.getgeneratorstate(requests) == inspect.GEN_SUSPENDED
        publish.cancel()
        with pytest.raises(asyncio.CancelledError):
            await publish
        assert inspect.getgeneratorstate(requests) == inspect.GEN_CLOSED


# -- Relay: close() and reset_default_client() from another thread -----------------------------------------------------


@pytest.mark.parametrize("tls", [False, True], ids=["sent", "tls-handshake"])
@pytest.mark.parametrize("closing", ["close", "reset_default_client"])
def test_close_from_another_thread_ends_a_request_and_says_whether_it_was_sent(
    silent: SilentServer, monkeypatch: pytest.MonkeyPatch, closing: str, tls: bool
) -> None:
    """A request during its TLS handshake waited for its timeout after close(), for ever with ``timeout=None``;
    ended at once, it is ``ClientClosed`` of a request not sent. One sent and unanswered may have been delivered."""
    url = silent_url(silent, tls=tls)
    publish: Callable[..., Any]
    close: Callable[[], None]
    if closing == "close":
        client = Relay(url, retry=NO_TIMEOUT)
        publish, close = client.publish, client.close
    else:
        monkeypatch.setenv("RELAY_URL", url)  # its timeout is the default 10 s, over the 5 s the test waits
        relay.reset_default_client()
        publish, close = relay.publish, relay.reset_default_client
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            publish("orders", "paid", {"id": 42})
        except BaseException as error:
            outcome.append(error)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    first_bytes(silent, until=b"\x16\x03" if tls else PUBLISH_END)
    close()
    worker.join(5)
    assert not worker.is_alive(), "the request still waits after the client was closed"
    assert closed_by_the_client(silent) == b""
    (error,) = outcome
    assert isinstance(error, ClientClosed), repr(error)
    assert (error.sent, error.outcome_unknown) == (not tls, not tls)
    assert ("before any of it was sent" in error.message) is tls


# -- the end of an event loop -----------------------------------------------------------------------------------------


async def test_a_loop_that_ends_during_a_request_leaves_the_client_working_in_the_next() -> None:
    """asyncio.run() ends with a publish waiting for its answer (it cancels it): its loop's connection is closed
    with the loop, and the same client publishes from the next loop."""

    async with server(lambda n: b"" if n == 1 else OK) as (url, got):
        client = AsyncRelay(url, retry=NO_TIMEOUT)

        async def leave_a_request_in_flight() -> None:
            in_flight = asyncio.ensure_future(client.publish("orders", "paid", 1))
            while not got:  # noqa: ASYNC110 (the server runs in another thread's loop): the request arrived
                await asyncio.sleep(0.01)
            assert not in_flight.done()  # it waits for an answer that never comes, until its loop ends

        with nothing_left_to_the_garbage_collector():
            await asyncio.to_thread(asyncio.run, leave_a_request_in_flight())
            result = await asyncio.to_thread(asyncio.run, client.publish("orders", "paid", 2))
            await asyncio.to_thread(asyncio.run, client.aclose())
    assert result.channels == ("orders",)
    assert [request.split(b"\r\n\r\n")[1] for request in got] == [
        b'{"name":"paid","channels":["orders"],"data":"1"}',
        b'{"name":"paid","channels":["orders"],"data":"2"}',
    ]


async def test_a_loop_that_ends_during_a_tls_handshake_leaves_no_socket_open(silent: SilentServer) -> None:
    client = AsyncRelay(silent_url(silent, tls=True), retry=NO_TIMEOUT)

    async def leave_a_handshake_in_flight() -> None:
        in_flight = asyncio.ensure_future(client.publish("orders", "paid", 1))
        await asyncio.to_thread(first_bytes, silent, until=b"\x16\x03")
        assert not in_flight.done()  # its TLS handshake waits for the server, until its loop ends

    with nothing_left_to_the_garbage_collector():
        await asyncio.to_thread(asyncio.run, leave_a_handshake_in_flight())
        assert await asyncio.to_thread(closed_by_the_client, silent) == b""
        await asyncio.to_thread(asyncio.run, client.aclose())
