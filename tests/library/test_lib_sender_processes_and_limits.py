"""The senders under the conditions a deployment adds: a client made before fork() (gunicorn --preload, uWSGI
without lazy-apps) used by the worker processes, ``close()`` from another thread while a request waits for an
answer, a connection pool too small for the requests at once, and what a transport error says a request may have
done and which setting switches TLS for the provider configured.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
import time
from pathlib import Path

import httpcore
import httpx
import pytest
from libsupport import KEY, SECRET, Answer, Emulator, MakeRelay, SilentServer, StartEmulator, server
from libsupport import silent as silent

from relay import AsyncRelay, Relay
from relay.adapters.base import HttpRequest
from relay.errors import ClientClosed, TransportError
from relay.senders import RetryPolicy, Sending, SyncSender
from tests.operations.support import make_certificate

# -- 1. fork() after the client was used -------------------------------------------------------------------------------

# Run in a process of its own: pytest's process has threads and an event loop, which fork() does not take along.
# The parent publishes first (a preloaded app at startup), so it holds a keep-alive connection when it forks; then
# the parent and its children publish at once, released together through a pipe.
FORKING_APP = r"""
import json, os, sys
from relay import Relay

client = Relay(sys.argv[1])
client.publish("forked", "warm-up", {})
release_read, release_write = os.pipe()


def publish_all(process):
    failures = []
    for number in range(40):
        try:
            client.publish("forked", "e", {"process": process, "number": number})
        except Exception as error:
            failures.append(f"{process}: {type(error).__name__}: {error}")
    return failures


def report(failures):
    # One write of less than PIPE_BUF bytes: the processes' reports do not interleave
    os.write(1, json.dumps([failure[:300] for failure in failures[:5]]).encode() + b"\n")


children = []
for child in range(4):
    pid = os.fork()
    if pid == 0:
        os.close(release_write)
        os.read(release_read, 1)  # the parent closed its end: all start at once
        report(publish_all(f"child {child}"))
        os._exit(0)
    children.append(pid)
os.close(release_write)
failures = publish_all("parent")
for pid in children:
    os.waitpid(pid, 0)
report(failures)
"""


class CountingProxy:
    """Forwards each TCP connection to ``target_port`` on 127.0.0.1, counting them."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.connections = 0
        self._streams: list[asyncio.StreamWriter] = []

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._forward, "127.0.0.1", 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._streams += [writer, upstream_writer]
        await asyncio.gather(self._pipe(reader, upstream_writer), self._pipe(upstream_reader, writer))

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        writer.close()

    async def close(self) -> None:
        self._server.close()
        for writer in self._streams:
            writer.close()


async def test_processes_forked_from_a_client_s_process_each_publish_on_connections_of_their_own(
    emulator: Emulator,
) -> None:
    """The children used the parent's keep-alive connection: the bytes of several processes' requests interleaved on
    it, and they failed as "401 body_md5 does not match", "400 malformed HTTP request" or "RemoteProtocolError …
    set PUSHER_SCHEME=https", hints at causes that were not the cause. Each process now opens its own connection:
    the parent's, and one per child."""
    proxy = CountingProxy(emulator.port)
    url = f"emulator://{KEY}:{SECRET}@127.0.0.1:{await proxy.start()}/apps/1"
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", FORKING_APP, url, stdout=asyncio.subprocess.PIPE
        )
        stdout, _ = await asyncio.wait_for(process.communicate(), 60)
    finally:
        await proxy.close()
    reports = [json.loads(line) for line in stdout.decode().splitlines()]
    assert process.returncode == 0
    assert len(reports) == 5  # 4 children and the parent
    assert [failure for report in reports for failure in report] == []
    assert proxy.connections == 5


async def test_the_module_level_client_closes_its_connection_at_exit(emulator: Emulator) -> None:
    """A script that calls relay.publish() has no client to close: the default client's kept-alive connection was
    left to the garbage collector at exit, and `python -X dev` printed "ResourceWarning: unclosed <socket…>"."""
    url = f"emulator://{KEY}:{SECRET}@127.0.0.1:{emulator.port}/apps/1"
    script = "import relay; relay.publish('orders', 'order-ready', {'id': 42}); print('published')"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-X",
        "dev",
        "-c",
        script,
        env={**os.environ, "RELAY_URL": url},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert (process.returncode, stdout.decode()) == (0, "published\n")
    assert stderr.decode() == ""


# At the fork, a thread of the parent's is publishing under a key (its answer held by the server) and another holds
# the lock of the client's keys, as every publish with a key does for an instant. The child then publishes under
# that key and under another; SIGALRM ends a child that hangs. The parent's publish is answered once the child is done.
FORKED_MID_PUBLISH = r"""
import json, os, signal, sys, threading
from relay import Relay

client = Relay(sys.argv[1])
paid = ("orders", "order-paid", {"id": 42})
first = threading.Thread(target=client.publish, args=paid, kwargs={"idempotency_key": "order-42-paid"})
first.start()
sys.stdin.readline()  # the server has the first request
locked, release = threading.Event(), threading.Event()


def hold_the_keys_lock():
    with client._published.memory._lock:
        locked.set()
        release.wait()


holder = threading.Thread(target=hold_the_keys_lock)
holder.start()
locked.wait()
if os.fork() == 0:
    signal.alarm(30)
    results = [
        client.publish(*paid, idempotency_key="order-42-paid"),
        client.publish("orders", "order-shipped", {"id": 42}, idempotency_key="order-42-shipped"),
    ]
    os.write(1, json.dumps([result.replayed for result in results]).encode() + b"\n")
    os._exit(0)
os.wait()
os.write(1, b"child done\n")
release.set()
first.join()
"""

PUBLISHED = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


async def test_a_process_forked_while_its_parent_publishes_under_keys_publishes_under_them_too() -> None:
    """The child of a fork() inherited the parent's memory of idempotency keys as the parent's threads left it: with
    its lock held, every publish with a key hung for ever; with a key's publish in flight, its resend waited for ever
    on a publish that no thread of the child was making. The child now starts with its own lock and no publish in
    flight, and sends both."""
    first_arrived = asyncio.Event()
    first_answer: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def answer(number: int) -> Answer:
        if number > 1:
            return PUBLISHED
        first_arrived.set()
        return first_answer

    async with server(answer) as (url, got):
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", FORKED_MID_PUBLISH, url, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
        )
        assert process.stdin is not None and process.stdout is not None
        await asyncio.wait_for(first_arrived.wait(), 60)
        process.stdin.write(b"go\n")
        child_report = await asyncio.wait_for(process.stdout.readline(), 60)
        first_answer.set_result(PUBLISHED)
        rest, _ = await asyncio.wait_for(process.communicate(), 60)
    assert (child_report, rest, process.returncode) == (b"[false, false]\n", b"child done\n", 0)
    assert [request.count(b"order-42-paid") for request in got] == [1, 1, 0]


# At the fork, a thread of the parent's has published under a key and is about to wake the publishes waiting on it
# (paused by a trace function as it calls the Future's set_result, after its key was remembered). The child then
# publishes under that key; SIGALRM ends a child that hangs.
FORKED_BEFORE_WAKING = r"""
import concurrent.futures, json, os, signal, sys, threading
from relay import Relay

client = Relay(sys.argv[1])
paid = ("orders", "order-paid", {"id": 42})
waking, release = threading.Event(), threading.Event()


def pause_before_waking(frame, event, arg):
    if event == "call" and frame.f_code is concurrent.futures.Future.set_result.__code__:
        waking.set()
        release.wait()


threading.settrace(pause_before_waking)  # the next thread started alone
first = threading.Thread(target=client.publish, args=paid, kwargs={"idempotency_key": "order-42-paid"})
first.start()
threading.settrace(None)
waking.wait()
if os.fork() == 0:
    signal.alarm(30)
    result = client.publish(*paid, idempotency_key="order-42-paid")
    os.write(1, json.dumps(result.replayed).encode() + b"\n")
    os._exit(0)
os.wait()
release.set()
first.join()
"""


async def test_a_process_forked_as_its_parent_settles_a_key_replays_the_key() -> None:
    """A publish the parent had remembered under its key but whose waiters it had not yet woken at the fork: the
    child's resend waited for ever on a wake-up that no thread of the child's would give. It is now replayed."""
    async with server(lambda number: PUBLISHED) as (url, got):
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", FORKED_BEFORE_WAKING, url, stdout=asyncio.subprocess.PIPE
        )
        stdout, _ = await asyncio.wait_for(process.communicate(), 60)
    assert (stdout, process.returncode, len(got)) == (b"true\n", 0, 1)


# At the fork, a thread of the parent's holds the module-level client's lock and the memory store's, as each
# relay.publish() does for an instant. SIGALRM ends a child that hangs.
FORKED_WITH_LOCKS_HELD = r"""
import os, signal, threading
import relay
from relay.testing import assert_published, store_of

relay.publish("orders", "warm-up", {})
locked, release = threading.Event(), threading.Event()


def hold_the_locks(store):
    with relay.default._default_lock, store.lock:
        locked.set()
        release.wait()


holder = threading.Thread(target=hold_the_locks, args=(store_of(),))
holder.start()
locked.wait()
if os.fork() == 0:
    try:
        signal.alarm(30)
        relay.publish("orders", "order-ready", {"id": 42})
        assert_published("orders", "order-ready", {"id": 42})
        os.write(1, b"the child published\n")
    finally:
        os._exit(0)
os.wait()
release.set()
"""


async def test_a_process_forked_while_its_parent_publishes_through_relay_publish_publishes_too() -> None:
    """The module-level client's lock and a memory:// store's were inherited as the parent's threads held them:
    relay.publish() in the child hung for ever. The child now makes them anew."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        FORKED_WITH_LOCKS_HELD,
        env={**os.environ, "RELAY_URL": "memory://forked"},
        stdout=asyncio.subprocess.PIPE,
    )
    stdout, _ = await asyncio.wait_for(process.communicate(), 60)
    assert (stdout, process.returncode) == (b"the child published\n", 0)


# -- 2. close() from another thread interrupts a request waiting for its answer --------------------------------------


def silent_url(server: SilentServer) -> str:
    return f"emulator://{KEY}:{SECRET}@127.0.0.1:{server.port}/apps/1"


@pytest.mark.parametrize("timeout", [None, 30.0], ids=["no-timeout", "timeout"])
def test_close_from_another_thread_interrupts_a_request_waiting_for_its_answer(
    silent: SilentServer, timeout: float | None
) -> None:
    """docs/library.md: closed while a request was under way, the request fails with ClientClosed. It did only when
    the timeout ran out, and with timeout=None never."""
    client = Relay(silent_url(silent), retry=RetryPolicy(timeout=timeout))
    outcome: list[BaseException] = []

    def publish() -> None:
        try:
            client.publish("orders", "e", {"id": 1})
        except BaseException as error:
            outcome.append(error)

    worker = threading.Thread(target=publish, daemon=True)
    worker.start()
    silent.wait_for_request()  # the request sent, waiting for the answer
    started = time.monotonic()
    client.close()
    worker.join(5)
    assert not worker.is_alive(), "the request still waits after close()"
    assert time.monotonic() - started < 2
    (error,) = outcome
    assert isinstance(error, ClientClosed), error
    assert "may or may not have reached the provider" in str(error)


# -- 3. a full connection pool -----------------------------------------------------------------------------------------


async def test_a_full_connection_pool_says_so_not_that_the_host_was_unreachable(silent: SilentServer) -> None:
    """110 queries at once on 100 connections to a server that does not answer in time: the 10 that waited for a
    connection fail saying the pool was full and the request was not sent, not that the host was unreachable. The
    timeout is 3s, not 1s, because on a loaded machine 110 connects at once can outlast 1s (then a ConnectTimeout)."""
    where = f"127.0.0.1:{silent.port}"
    async with AsyncRelay(silent_url(silent), retry=RetryPolicy(attempts=1, timeout=3.0)) as client:
        outcomes = await asyncio.gather(*(client.channel(f"c{n}") for n in range(110)), return_exceptions=True)
    messages = [str(outcome) for outcome in outcomes if isinstance(outcome, TransportError)]
    assert len(messages) == 110
    pool = [message for message in messages if "PoolTimeout" in message]
    assert len(pool) == 10
    assert set(pool) == {
        f"could not send to {where}: PoolTimeout; the client's connection pool was full: its 100 connections were all "
        "busy with earlier requests throughout the 3s timeout (more requests at once than the server answers in time: "
        "find why it is slow, or make fewer requests at once); the request was not sent"
    }
    assert set(messages) - set(pool) == {f"no answer from {where} within the 3s timeout: ReadTimeout"}


# -- 4. what a transport error says ------------------------------------------------------------------------------------

NO_ANSWER = "no answer from 127.0.0.1:{port} within the 0.3s timeout: ReadTimeout"
MAY_HAVE_BEEN_PROCESSED = "; the request was sent and may have been processed"
MAY_HAVE_BEEN_DELIVERED = ": a publish may have been delivered, check before sending it again"


def test_a_timeout_says_a_publish_may_have_been_delivered_only_for_a_publish(silent: SilentServer) -> None:
    """A query (channel()) that timed out said "a publish may have been delivered"."""
    no_answer = NO_ANSWER.format(port=silent.port)
    with Relay(silent_url(silent), retry=RetryPolicy(attempts=1, timeout=0.3)) as client:
        with pytest.raises(TransportError) as raised:
            client.channel("orders")
        assert str(raised.value) == no_answer
        with pytest.raises(TransportError) as raised:
            client.terminate_user_connections("42")
        assert str(raised.value) == no_answer + MAY_HAVE_BEEN_PROCESSED
        for publish in (
            lambda: client.publish("orders", "e", 1),
            lambda: client.publish_batch([{"channel": "orders", "name": "e", "data": 1}]),
            lambda: client.send_to_user("42", "e", 1),
        ):
            with pytest.raises(TransportError) as raised:
                publish()
            assert str(raised.value) == no_answer + MAY_HAVE_BEEN_PROCESSED + MAY_HAVE_BEEN_DELIVERED


ABLY_KEY = f"1.{KEY}:{SECRET}"


async def test_https_to_a_plain_server_names_ably_s_tls_setting(emulator: Emulator, make_relay: MakeRelay) -> None:
    """An ably:// URL (HTTPS unless ?tls=false) at a plain-HTTP server said "set PUSHER_SCHEME=http or ?tls=false
    (emulator:// URLs are …)": Ably has no PUSHER_SCHEME."""
    relay = make_relay(f"ably://{ABLY_KEY}@127.0.0.1:{emulator.port}")
    with pytest.raises(TransportError) as raised:
        await relay.publish("orders", "e", "x")
    assert str(raised.value).startswith(f"could not reach 127.0.0.1:{emulator.port}: ConnectError; the TLS handshake")
    assert str(raised.value).endswith(
        "): if the server speaks plain HTTP, add ?tls=false to the ably:// URL (it is HTTPS unless ?tls=false)"
    )


async def test_plain_http_to_a_tls_server_names_ably_s_tls_setting(
    tmp_path: Path, start_emulator: StartEmulator, make_relay: MakeRelay
) -> None:
    cert, key = make_certificate(tmp_path)
    emulator = await start_emulator(tls_cert=str(cert), tls_key=str(key))
    relay = make_relay(f"ably://{ABLY_KEY}@127.0.0.1:{emulator.port}?tls=false")
    with pytest.raises(TransportError) as raised:
        await relay.publish("orders", "e", "x")
    # The request went out, so a publish may have been delivered (a reset after the answer looks the same)
    assert str(raised.value) in {
        f"the connection to 127.0.0.1:{emulator.port} failed during the request: {name}; the request was sent and "
        "may have been processed: a publish may have been delivered, check before sending it again; the server "
        "closed the connection without an HTTP answer: if it serves HTTPS, remove ?tls=false from the ably:// URL"
        for name in ("RemoteProtocolError", "ReadError")
    }


def test_a_given_client_whose_connections_have_no_socket_still_sends() -> None:
    """The sender notes each socket its client opens (to shut it down at close()); a connection with none, such as
    httpcore's in-memory backends that tests use, is sent on as before (it raised TypeError from the note)."""
    answer = [b"HTTP/1.1 200 OK\r\n", b"Content-Type: application/json\r\n", b"Content-Length: 2\r\n", b"\r\n", b"{}"]
    transport = httpx.HTTPTransport()
    transport._pool = httpcore.ConnectionPool(network_backend=httpcore.MockBackend(answer))
    sender = SyncSender(client=httpx.Client(transport=transport))
    sending = Sending(
        error_for=lambda response: AssertionError(response),
        provider="emulator",
        publishes=True,
        answered_by="the Relay emulator",
    )
    response = sender.send(HttpRequest("POST", "http://mock.test/apps/1/events", body=b"{}"), sending)
    assert (response.status, response.body) == (200, b"{}")
    sender.close()
