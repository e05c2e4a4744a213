"""Fixes from an audit of the library: ``relay.testing.assert_published`` compares what was published exactly (a str
is not the JSON it looks like), a request that timed out after it was sent does not say the provider was unreachable,
and one ``AsyncRelay`` across several ``asyncio.run()`` calls closes each loop's connections.
"""

from __future__ import annotations

import asyncio
import gc
import os
import subprocess
import sys
import warnings
from collections.abc import Iterator
from typing import Any
from unittest import mock

import pytest
from libsupport import SilentServer
from libsupport import silent as silent

from relay import AsyncRelay, Event, Relay
from relay.adapters.memory import Published
from relay.errors import TransportError
from relay.senders import RetryPolicy
from relay.testing import assert_published, published, store_of

# -- 1. assert_published matches exactly what was published -------------------------------------------------------


@pytest.fixture
def memory() -> Iterator[Relay]:
    client = Relay.from_url("memory://audit-assert-published")
    store_of(client).clear()
    yield client
    store_of(client).clear()
    client.close()


@pytest.mark.parametrize(("text", "value"), [("42", 42), ("null", None), ("true", True), ('{"id":1}', {"id": 1})])
def test_a_str_published_matches_that_str_and_not_the_json_it_looks_like(memory: Relay, text: str, value: Any) -> None:
    """The stored text was JSON-decoded before comparing: publish("42") then assert_published(..., "42") failed, and
    assert_published(..., 42) passed for a str the application sent."""
    memory.publish("c", "as-text", text)
    memory.publish("c", "as-json", value)
    assert_published("c", "as-text", text, client=memory)
    assert_published("c", "as-json", value, client=memory)
    with pytest.raises(AssertionError):
        assert_published("c", "as-text", value, client=memory)
    with pytest.raises(AssertionError):
        assert_published("c", "as-json", text, client=memory)


def test_json_values_match_as_json_tells_them_apart(memory: Relay) -> None:
    """``True`` and ``1`` are different JSON (Python says they are equal); a tuple is published as the list it matches;
    ``unittest.mock.ANY`` still matches anywhere."""
    memory.publish("c", "flag", True)
    memory.publish("c", "one", 1)
    memory.publish("c", "nested", {"ok": [True, 1], "at": (1, 2)})
    assert_published("c", "flag", True, client=memory)
    assert_published("c", "one", 1, client=memory)
    assert_published("c", "one", 1.0, client=memory)
    for event, wrong in [("flag", 1), ("one", True), ("nested", {"ok": [1, True], "at": [1, 2]})]:
        with pytest.raises(AssertionError):
            assert_published("c", event, wrong, client=memory)
    assert_published("c", "nested", {"ok": [True, 1], "at": [1, 2]}, client=memory)
    assert_published("c", "nested", {"ok": [True, 1], "at": (1, 2)}, client=memory)
    assert_published("c", "nested", {"ok": mock.ANY, "at": [1, mock.ANY]}, client=memory)
    assert_published("c", "flag", mock.ANY, client=memory)


def test_keys_that_json_writes_as_strings_match_as_published(memory: Relay) -> None:
    """docs/library.md: any other value matches "an equal JSON value"; ``{1: "a"}`` is published as ``{"1": "a"}``,
    yet asserting the very value published failed."""
    memory.publish("c", "keyed", {7: "a", False: [None], None: {2.5: 0}})
    assert_published("c", "keyed", {7: "a", False: [None], None: {2.5: 0}}, client=memory)
    assert_published("c", "keyed", {"7": "a", "false": [None], "null": {"2.5": 0}}, client=memory)
    for wrong in [{8: "a", False: [None], None: {2.5: 0}}, {7: "a", True: [None], None: {2.5: 0}}]:
        with pytest.raises(AssertionError):
            assert_published("c", "keyed", wrong, client=memory)


def test_every_way_to_publish_records_whether_it_was_json(memory: Relay) -> None:
    memory.publish(["a", "b"], "e", "7")
    memory.publish_batch([Event("a", "batch-text", "7"), Event("a", "batch-json", 7)])
    memory.send_to_user("alice", "note", "7")
    memory.send_to_user("alice", "note", 7)
    entries = published(client=memory)
    assert [(entry.data, entry.is_json, entry.value) for entry in entries] == [
        ("7", False, "7"),
        ("7", False, "7"),
        ("7", False, "7"),
        ("7", True, 7),
        ("7", False, "7"),
        ("7", True, 7),
    ]
    # Records still compare as they did, by the text published: Published(channel, event, data) as before
    assert entries[4] == Published("#server-to-user-alice", "note", "7") == entries[5]
    assert_published("#server-to-user-alice", "note", "7", client=memory, times=1)
    assert_published("#server-to-user-alice", "note", 7, client=memory, times=1)
    assert_published("#server-to-user-alice", "note", client=memory, times=2)


def test_times_zero_asserts_it_was_not_published(memory: Relay) -> None:
    """times=0 always failed (no match was a failure whatever times said)."""
    memory.publish("c", "e", "x")
    assert_published("c", "never-sent", client=memory, times=0)
    assert_published("c", "e", "y", client=memory, times=0)
    with pytest.raises(AssertionError) as raised:
        assert_published("c", "e", client=memory, times=0)
    assert str(raised.value) == "expected 'e' on 'c' never, found 1; published: [('c', 'e', 'x')]"
    with pytest.raises(ValueError, match="times must be 0 or more"):
        assert_published("c", "e", client=memory, times=-1)


def test_the_failure_message_shows_the_data_only_when_given_and_as_published(memory: Relay) -> None:
    """Without data the message printed the sentinel: "with data <object object at 0x…>"; the data published is
    shown as it was given (the str '42', the number 42)."""
    memory.publish("c", "e", "42")
    memory.publish("c", "e", 42)
    with pytest.raises(AssertionError) as raised:
        assert_published("c", "other", client=memory)
    assert str(raised.value) == "expected 'other' on 'c' at least once; published: [('c', 'e', '42'), ('c', 'e', 42)]"
    with pytest.raises(AssertionError) as raised:
        assert_published("c", "e", "42", client=memory, times=2)
    assert str(raised.value) == (
        "expected 'e' on 'c' 2 times with data '42', found 1; published: [('c', 'e', '42'), ('c', 'e', 42)]"
    )


# -- 2. a request sent that got no answer is not "could not reach" ------------------------------------------------


NO_ANSWER = (
    "no answer from 127.0.0.1:{port} within the 0.3s timeout: ReadTimeout; the request was sent and may have been "
    "processed: a publish may have been delivered, check before sending it again"
)
SILENT_RETRY = RetryPolicy(attempts=3, backoff=0.01, timeout=0.3)


def test_a_publish_that_timed_out_says_it_was_sent_not_that_the_host_was_unreachable(silent: SilentServer) -> None:
    """It said "could not reach HOST:PORT: ReadTimeout; check the host, port and network", which invites sending the
    publish again: it was sent, and may have been delivered."""
    with Relay(f"emulator://k:s@127.0.0.1:{silent.port}/apps/1", retry=SILENT_RETRY) as client:
        with pytest.raises(TransportError) as raised:
            client.publish("orders", "e", {"id": 1})
        assert str(raised.value) == NO_ANSWER.format(port=silent.port)
        assert len(silent.accepted) == 1  # a publish that may have been delivered is not retried
        with pytest.raises(TransportError) as raised:  # a query is retried, and then fails without the publish part
            client.channel("orders")
        assert str(raised.value) == f"no answer from 127.0.0.1:{silent.port} within the 0.3s timeout: ReadTimeout"


async def test_an_async_publish_that_timed_out_says_it_was_sent(silent: SilentServer) -> None:
    async with AsyncRelay(f"emulator://k:s@127.0.0.1:{silent.port}/apps/1", retry=SILENT_RETRY) as client:
        with pytest.raises(TransportError) as raised:
            await client.publish("orders", "e", {"id": 1})
    assert str(raised.value) == NO_ANSWER.format(port=silent.port)
    assert "could not reach" not in str(raised.value)


# -- 3. one AsyncRelay across several asyncio.run() calls ---------------------------------------------------------

# A provider in another process, so that every socket this process holds is the client's: HTTP/1.1, keep-alive
KEEP_ALIVE_SERVER = """
import http.server, sys

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass

server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
"""


@pytest.fixture
def keep_alive_port() -> Iterator[int]:
    process = subprocess.Popen([sys.executable, "-c", KEEP_ALIVE_SERVER], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        yield int(process.stdout.readline())
    finally:
        process.kill()
        process.wait()
        if process.stdout is not None:
            process.stdout.close()


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts open files in /proc/self/fd")
def test_one_async_client_over_several_asyncio_runs_leaves_no_socket_open(keep_alive_port: int) -> None:
    """Each asyncio.run() left its loop's keep-alive connection open (the httpx client of a finished loop was dropped,
    not closed): one socket per run until the garbage collector found them, with a ResourceWarning each, and
    aclose() from a new loop closed none of them."""
    client = AsyncRelay(f"emulator://k:s@127.0.0.1:{keep_alive_port}/apps/1")

    async def publish() -> None:
        await client.publish("orders", "e", {"id": 1})

    asyncio.run(asyncio.sleep(0))  # what a first loop opens once for good
    gc.collect()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        before = _open_fds()
        gc.disable()  # what is left open stays open: not closed by chance, when the collector runs
        try:
            for _ in range(5):
                asyncio.run(publish())
            after_runs = _open_fds() - before
            asyncio.run(client.aclose())
            after_close = _open_fds() - before
        finally:
            gc.enable()
        gc.collect()
    assert (after_runs, after_close) == (set(), set())
    assert [str(warning.message) for warning in caught if warning.category is ResourceWarning] == []
