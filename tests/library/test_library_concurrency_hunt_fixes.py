"""Fixes from a bug hunt on how applications use the library concurrently: threads sharing a client, event loops in
turn and at once, fork() (gunicorn --preload, multiprocessing, celery's prefork pool), a client closed while used.

1. An error raised in a ``multiprocessing`` worker reaches the parent pickled: ``ClientClosed``,
   ``UnsupportedCapability`` and ``MirrorError`` could not be unpickled (their ``__init__`` does not take the message
   alone), so ``Pool.map`` waited for ever and a ``ProcessPoolExecutor`` broke, failing every task.
2. The default client, once closed by its user (``with relay.default_client() as client:``), stayed the default:
   every module-level call raised ``ClientClosed`` for the process's life.
3. A signal handler that used the default client (a worker's SIGTERM handler saying it stops) while the main thread
   made it (about 30 ms at the first call: its TLS settings are loaded) waited for ever for the lock that thread held.
4. A ``Relay`` shared by more than 20 threads kept 20 connections alive between bursts: httpcore's pool, closing its
   surplus idle ones, closed some it had just handed to a waiting request (encode/httpcore#1110), and 64 threads
   publishing 100 events each to the emulator saw a few publishes it had delivered fail, outcome unknown, after the
   10 s timeout or at once.
"""

from __future__ import annotations

import asyncio
import copy
import inspect
import json
import os
import pickle
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
from libsupport import Subscribe, emulator_url

import relay
import relay.errors
from relay import Relay
from relay.client import MirrorError
from relay.errors import ClientClosed, DuplicateKey, RelayError, TransportError, UnsupportedCapability
from tests.conftest import RunningEmulator

# -- 1. errors pickled to a multiprocessing pool's parent --------------------------------------------------------------


def _every_error() -> list[Exception]:
    """One of each error the library raises, with the attributes that say what happened set."""
    plain = [
        kind("what went wrong", http_status=418, code=40000, retry_after=1.5, answered_by="Pusher")
        for kind in vars(relay.errors).values()
        if inspect.isclass(kind) and issubclass(kind, RelayError) and kind not in (ClientClosed, UnsupportedCapability)
    ]
    unknown = TransportError("no answer from 127.0.0.1:6001")
    unknown.outcome_unknown, unknown.published = True, 3
    return [
        *plain,
        unknown,
        ClientClosed(),
        ClientClosed(in_flight_to="127.0.0.1:6001", sent=True, unanswered=True, publishes=True),
        UnsupportedCapability("Ably", "send_to_user", hint="Ably has no server-to-user channel"),
        MirrorError({"memory://old": None}, {"pusher://…": unknown}),
        DuplicateKey("channel"),
    ]


@pytest.mark.parametrize("error", _every_error(), ids=lambda error: type(error).__name__)
def test_every_error_is_the_same_error_once_pickled_and_copied(error: Exception) -> None:
    """ClientClosed, UnsupportedCapability and MirrorError raised TypeError when unpickled (and copied); DuplicateKey
    came back with its message quoted as its key."""
    for again in (pickle.loads(pickle.dumps(error)), copy.deepcopy(error)):
        assert type(again) is type(error)
        assert (str(again), again.args) == (str(error), error.args)
        if isinstance(error, MirrorError):
            assert isinstance(again, MirrorError)
            assert again.results == error.results and again.outcome_unknown
            assert [str(failed) for failed in again.errors.values()] == [
                str(failed) for failed in error.errors.values()
            ]
        else:
            assert vars(again) == vars(error)


# Run in a process of its own: pytest's process has threads and an event loop, which fork() does not take along.
# Its workers raise the errors as an application's tasks would: Ably has no send_to_user, and a client closed.
POOL_OF_WORKERS = r"""
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
import relay
from relay import Relay

def send_to_user(number):
    Relay.from_url("ably://app.key:secret@127.0.0.1:9?tls=false").send_to_user("42", "notice", number)

def publish_closed(number):
    client = Relay.from_url("memory://pool")
    client.close()
    client.publish("orders", "order-ready", number)

def outcome(run):
    try:
        return f"{type(run()).__name__}"
    except Exception as error:
        return f"{type(error).__name__}: {error}"

context = multiprocessing.get_context("fork")  # as celery's prefork pool, and Linux's default before 3.14
with context.Pool(2) as pool:
    for task in (send_to_user, publish_closed):
        print("Pool:", outcome(lambda: pool.apply_async(task, (1,)).get(timeout=30)))
    print("Pool:", outcome(lambda: pool.apply_async(len, ("after",)).get(timeout=30)))
with ProcessPoolExecutor(2, mp_context=context) as executor:
    for task in (send_to_user, publish_closed):
        print("ProcessPoolExecutor:", outcome(lambda: executor.submit(task, 1).result(timeout=30)))
    print("ProcessPoolExecutor:", outcome(lambda: executor.submit(len, "after").result(timeout=30)))
"""


def test_a_pool_s_worker_that_raises_a_library_error_hands_it_to_the_parent() -> None:
    """Pool.map waited for ever (its result thread died unpickling the error), and a ProcessPoolExecutor failed this
    task and every other one with BrokenProcessPool."""
    process = subprocess.run(
        [sys.executable, "-c", POOL_OF_WORKERS],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert process.returncode == 0, process.stderr
    unsupported = "the Ably-protocol server at 127.0.0.1:9 does not support send_to_user"
    assert process.stdout.splitlines() == [
        f"{pool}: {line}"
        for pool in ("Pool", "ProcessPoolExecutor")
        for line in (
            f"UnsupportedCapability: {unsupported}: publish to a per-user channel instead",
            f"ClientClosed: {ClientClosed()}",
            "int",  # the pool still works
        )
    ], process.stderr


# -- 2. the default client closed by its user ------------------------------------------------------------------------


async def test_the_module_level_functions_publish_again_once_the_default_client_was_closed(
    emulator: RunningEmulator, subscriber: Subscribe, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ``with`` block over the default client (a Relay is a context manager) closed it and left it the default:
    ``relay.publish`` raised ClientClosed, "create another one", which a module-level caller cannot do, until
    ``reset_default_client()``. The next call makes it again from the environment, as after a reset."""
    monkeypatch.setenv("RELAY_URL", emulator_url(emulator))
    relay.reset_default_client()
    watching = await subscriber(emulator)
    await watching.subscribe("orders")

    def close_then_publish() -> None:
        with relay.default_client() as client:
            client.publish("orders", "order-created", {"id": 41})
        with pytest.raises(ClientClosed):  # the client closed is closed still, to whoever holds it
            client.publish("orders", "order-created", {"id": 0})
        relay.publish("orders", "order-ready", {"id": 42})
        assert relay.default_client() is not client

    try:
        await asyncio.to_thread(close_then_publish)
    finally:
        relay.reset_default_client()
    assert json.loads((await watching.expect("order-created", "orders"))["data"]) == {"id": 41}
    assert json.loads((await watching.expect("order-ready", "orders"))["data"]) == {"id": 42}


# -- 3. the default client used from a signal handler -----------------------------------------------------------------

# Run in a process of its own, whose main thread the signal interrupts. The signal is sent as the first publish makes
# the default client, when it lands at random otherwise: the handler then runs inside that call.
SIGNAL_DURING_THE_FIRST_PUBLISH = r"""
import os, signal, threading
import relay
from relay import Relay

def stopping(signum, frame):
    relay.publish("workers", "stopping", {"signal": signum})
    print("the handler published", flush=True)

signal.signal(signal.SIGTERM, stopping)
make = Relay.from_env
signalled = threading.Event()

def made_as_the_signal_comes(*args, **kwargs):
    if not signalled.is_set():
        signalled.set()
        os.kill(os.getpid(), signal.SIGTERM)
    return make(*args, **kwargs)

Relay.from_env = made_as_the_signal_comes
threading.Timer(20, lambda: (print("waited for ever", flush=True), os._exit(3))).start()
relay.publish("orders", "order-ready", {"id": 42})
from relay.testing import published
print([(event.channel, event.event) for event in published()], flush=True)
os._exit(0)
"""


def test_a_signal_handler_publishing_while_the_first_publish_makes_the_default_client_does_not_hang() -> None:
    process = subprocess.run(
        [sys.executable, "-c", SIGNAL_DURING_THE_FIRST_PUBLISH],
        env={**os.environ, "RELAY_URL": "memory://signalled"},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert (process.returncode, process.stdout.splitlines()) == (
        0,
        ["the handler published", "[('workers', 'stopping'), ('orders', 'order-ready')]"],
    ), process.stderr


# -- 4. the connections of a Relay shared by many threads -------------------------------------------------------------

OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


async def test_a_relay_s_threads_publishing_at_once_find_their_connections_open_at_the_next_burst() -> None:
    """Each burst's requests are answered once all of them arrived, so that the threads hold as many connections at
    once. httpcore's pool kept 20 alive after the first burst and opened 20 more for the second: closing the surplus
    is where it closed connections handed to waiting requests (a race a test cannot time; run against the emulator,
    64 threads publishing 100 events each saw 1 to 3 publishes the emulator had delivered fail, outcome unknown)."""
    burst, arrived, connections = 40, 0, 0
    all_in = [asyncio.Event(), asyncio.Event()]

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal arrived, connections
        connections += 1
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                length = next(
                    int(line[15:]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
                )
                await reader.readexactly(length)
                arrived += 1
                if arrived % burst == 0:
                    all_in[arrived // burst - 1].set()
                await all_in[(arrived - 1) // burst].wait()
                writer.write(OK)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    listening = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = listening.sockets[0].getsockname()[1]
    client = Relay(f"emulator://app-key:app-secret@127.0.0.1:{port}/apps/1")
    loop = asyncio.get_running_loop()
    try:
        with ThreadPoolExecutor(burst) as threads:
            for number in range(2):
                publishes = [
                    loop.run_in_executor(threads, client.publish, "orders", "order-ready", {"burst": number})
                    for _ in range(burst)
                ]
                results = await asyncio.wait_for(asyncio.gather(*publishes), 30)
                assert {result.channels for result in results} == {("orders",)}
                assert connections == burst, f"burst {number + 1}: {connections} connections opened in all"
    finally:
        await asyncio.to_thread(client.close)
        listening.close()
