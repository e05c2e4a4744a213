"""Fixes from an operations audit of the emulator's server: TLS handshakes that never finish, webhooks dropped at
shutdown, secrets in configuration errors, and refused connections flooding the logs."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import socket
import ssl
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
import uvloop
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from relay.emulator.config import App, EmulatorConfig, Webhook, load_config
from relay.emulator.logs import JsonFormatter, Redactor, redact_urls
from relay.emulator.server import EmulatorNode, start_server
from relay.errors import ConfigError
from tests.cli_support import assert_refused, run_relay, write
from tests.conftest import StartEmulator
from tests.operations.support import APP, make_certificate, trusting, ws_client

# -- 1. TLS handshakes that never finish ---------------------------------------------------------------------------

HANDSHAKE_TIMEOUT = 1.0  # the node's HTTP request timeout, which the TLS handshake timeout follows when shorter
STALLED = 20


@asynccontextmanager
async def tls_node(tmp_path: Path, **server: object) -> AsyncIterator[tuple[int, ssl.SSLContext]]:
    cert, key = make_certificate(tmp_path)
    config = replace(EmulatorConfig(apps=(APP,)), tls_cert=str(cert), tls_key=str(key), **server)  # type: ignore[arg-type]
    node = EmulatorNode(config, http_request_timeout=HANDSHAKE_TIMEOUT)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server_handle = await start_server(node, sock=sock)
    try:
        yield sock.getsockname()[1], trusting(cert)
    finally:
        server_handle.close()
        await node.close(webhook_grace=0)


async def closed_by_server(sock: socket.socket, within: float) -> bool:
    """Whether the server closes ``sock`` (end of stream or a reset) within ``within`` seconds; the client has sent
    nothing, so the server has nothing to answer."""
    loop = asyncio.get_running_loop()
    try:
        data = await asyncio.wait_for(loop.sock_recv(sock, 1024), within)
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True
    return data == b""


async def stalled_handshakes_are_closed_and_tls_clients_served(tmp_path: Path) -> None:
    # Capped at 3 per address: the stalled sockets are not counted against it (asyncio makes the connection only
    # once its handshake is complete), so they are what the timeout bounds.
    async with tls_node(tmp_path, max_connections_per_address=3) as (port, context):
        loop = asyncio.get_running_loop()
        stalled = []
        for _ in range(STALLED):  # TCP connections that never send a ClientHello
            sock = socket.socket()
            sock.setblocking(False)
            await loop.sock_connect(sock, ("127.0.0.1", port))
            stalled.append(sock)
        started = time.monotonic()
        try:
            # While they wait, a real TLS client is served, over HTTPS and over WebSocket.
            async with httpx.AsyncClient(verify=context) as http:
                assert (await http.get(f"https://127.0.0.1:{port}/health")).json() == {"status": "ok"}
            client = await ws_client(f"wss://127.0.0.1:{port}/app/{APP.key}?protocol=7", ssl=context)
            outcomes = await asyncio.gather(*(closed_by_server(sock, HANDSHAKE_TIMEOUT + 2.0) for sock in stalled))
            elapsed = time.monotonic() - started
            assert all(outcomes), (
                f"{outcomes.count(False)} of {STALLED} stalled handshakes still open after {elapsed:.1f} s"
            )
            # Closed by the timeout, not at once.
            assert elapsed >= HANDSHAKE_TIMEOUT * 0.8
            # The WebSocket outlives the timeout: it applies to the handshake only.
            await client.subscribe("news", APP)
            await client.close()
        finally:
            for sock in stalled:
                sock.close()


async def test_tls_handshakes_that_never_start_are_closed_within_the_timeout(tmp_path: Path) -> None:
    """The audit: 200 sockets from one address that never finished the TLS handshake held 216 descriptors for 60 s
    (the event loop's default handshake timeout), past max_connections_per_address = 5."""
    await stalled_handshakes_are_closed_and_tls_clients_served(tmp_path)


def test_tls_handshakes_that_never_start_are_closed_within_the_timeout_on_uvloop(tmp_path: Path) -> None:
    """The same on uvloop, the event loop `relay emulator` runs on."""
    uvloop.run(stalled_handshakes_are_closed_and_tls_clients_served(tmp_path))


# -- 2. webhooks dropped at shutdown -------------------------------------------------------------------------------


@asynccontextmanager
async def slow_receiver() -> AsyncIterator[tuple[str, list[bytes], asyncio.Event]]:
    """A real HTTP server that reads each webhook request and never answers it: its URL, the requests' heads and an
    event set when the first arrives."""
    heads: list[bytes] = []
    arrived = asyncio.Event()
    released = asyncio.Event()  # set when the test is done: the handlers return
    writers: list[asyncio.StreamWriter] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        head = await reader.readuntil(b"\r\n\r\n")
        heads.append(head)
        arrived.set()
        lines = head.lower().split(b"\r\n")
        length = next((int(line.partition(b":")[2]) for line in lines if line.startswith(b"content-length:")), 0)
        await reader.readexactly(length)
        await released.wait()  # a receiver taking its time: the request is read, its answer never comes
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://hooks:PASSWORD-42@127.0.0.1:{port}/pusher", heads, arrived
    finally:
        server.close()
        released.set()
        for writer in writers:
            writer.close()
        await asyncio.sleep(0)


async def test_webhooks_dropped_at_shutdown_are_logged_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The audit: with a slow receiver, the member_removed and channel_vacated events still pending at shutdown were
    cancelled without a log line or a count in relay_webhook_dropped_total."""
    async with slow_receiver() as (url, heads, arrived):
        app = replace(APP, webhooks=(Webhook(url=url),), webhook_batch_ms=10)
        node = EmulatorNode(EmulatorConfig(apps=(app,)))
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        server_handle = await start_server(node, sock=sock)
        port = sock.getsockname()[1]
        client = await ws_client(f"ws://127.0.0.1:{port}/app/{app.key}?protocol=7")
        await client.subscribe("presence-room", app, user_id="ann")  # channel_occupied and member_added: one request
        await asyncio.wait_for(arrived.wait(), 5)
        assert len(heads) == 1
        await client.close()  # member_removed and channel_vacated, held webhook_delay (3 s) and released at close
        await asyncio.sleep(0.1)
        server_handle.close()
        with caplog.at_level(logging.WARNING, logger="relay.emulator.webhooks"):
            await node.close(webhook_grace=0.3)
    dropped = [record for record in caplog.records if "dropped" in record.getMessage()]
    assert len(dropped) == 1, caplog.text
    message = dropped[0].getMessage()
    # Two events in the request that got no answer, two queued behind it in a second one.
    assert "dropped 4 webhook event(s) in 2 request(s)" in message, message
    assert f"http://***@127.0.0.1:{url.rsplit(':', 1)[1]}" in message, message
    assert "PASSWORD-42" not in caplog.text
    assert dropped[0].levelno == logging.WARNING
    assert node.states[app.app_id].webhooks.dropped == 4  # what relay_webhook_dropped_total reports


# -- 3. configuration errors without secrets -----------------------------------------------------------------------

APP_HEAD = 'app_id = "1"\nkey = "k"\nsecret = "s1234"\n'
HOOK = f'[[apps]]\n{APP_HEAD}[[apps.webhooks]]\nurl = "http://x/h"\n'


def assert_refused_without_the_secret(tmp_path: Path, toml: str, secret: str, fragments: list[str]) -> None:
    """Loading ``toml`` is refused with a message naming every fragment and never showing ``secret``."""
    with pytest.raises(ConfigError) as raised:
        load_config(write(tmp_path, toml), defaults=EmulatorConfig(apps=(APP,)))
    message = str(raised.value)
    assert secret not in message, message
    for fragment in fragments:
        assert fragment in message, message


@pytest.mark.parametrize(
    ("toml", "fragments"),
    [
        pytest.param(
            '[apps]\napp_id = "1"\nkey = "k"\nsecret = "TOPSECRET-abc123"\n',
            ["apps must be [[apps]] tables", "got a table", "write [[apps]]"],
            id="apps-table-for-array",
        ),
        pytest.param(
            f'[[apps]]\n{APP_HEAD}webhooks = {{ url = "http://u:TOPSECRET@x/h" }}\n',
            ["apps[0]", "webhooks must be [[apps.webhooks]] tables", "got a table"],
            id="webhooks-table-for-array",
        ),
        pytest.param(
            f'[[apps]]\n{APP_HEAD}[apps.webhooks]\nurl = "http://u:TOPSECRET@x/h"\n',
            ["webhooks must be [[apps.webhooks]] tables", "write [[apps.webhooks]]"],
            id="webhooks-subtable",
        ),
        pytest.param(
            '[[apps]]\napp_id = "1"\nkey = "k"\nsecret = ["TOPSECRET-list"]\n',
            ["apps[0]", "secret must be a non-empty string, got an array"],
            id="secret-array",
        ),
        pytest.param(
            '[[apps]]\napp_id = "1"\nkey = "k"\nsecret = { value = "TOPSECRET-t" }\n',
            ["secret must be a non-empty string, got a table"],
            id="secret-table",
        ),
        pytest.param(
            '[server]\nconsole_token = ["TOPSECRET-tok"]\n',
            ["[server]", "console_token must be a non-empty string, got an array"],
            id="console-token-array",
        ),
        pytest.param(
            '[[server]]\nconsole_token = "TOPSECRET-tok"\n',
            ["server must be a table ([server]), got an array"],
            id="server-array-of-tables",
        ),
        pytest.param(
            f'[[apps]]\n{APP_HEAD}ably_key = ["1.k:TOPSECRET"]\n',
            ["ably_key must be a non-empty string, got an array"],
            id="ably-key-array",
        ),
        pytest.param(
            f"[[apps]]\n{APP_HEAD}extra_keys = [{{ key = 'k2', secret = ['TOPSECRET-x'] }}]\n",
            ["extra_keys[0]", "secret must be a non-empty string, got an array"],
            id="extra-key-secret-array",
        ),
        pytest.param(
            HOOK + 'headers = { Authorization = "Bearer TOPSECRET\\n" }\n',
            ["webhooks[0]", "headers 'Authorization'", "value (not shown) has a line break"],
            id="header-value-line-break",
        ),
        pytest.param(
            HOOK + 'headers = { Authorization = "Bearer TOPSECRÉT" }\n',
            ["headers 'Authorization'", "not ASCII"],
            id="header-value-not-ascii",
        ),
        pytest.param(
            HOOK + 'headers = { Authorization = ["TOPSECRET"] }\n',
            ["headers 'Authorization'", "value must be a string, got an array"],
            id="header-value-array",
        ),
        pytest.param(
            HOOK + 'headers = { "Authorization: Bearer TOPSECRET" = "x" }\n',
            ["headers have a name that is not an HTTP token", "'Authorization…'"],
            id="header-name-holding-a-credential",
        ),
        pytest.param(
            HOOK + 'headers = ["Authorization: Bearer TOPSECRET"]\n',
            ["headers must be a table", "got an array"],
            id="headers-array",
        ),
        pytest.param(
            f'[[apps]]\n{APP_HEAD}[[apps.webhooks]]\nurl = ["http://u:TOPSECRET@x/h"]\n',
            ["webhooks[0]", "url must be an http:// or https:// URL, got an array"],
            id="webhook-url-array",
        ),
        pytest.param(
            '[server]\nredis_url = ["redis://:TOPSECRET@127.0.0.1:6379"]\n',
            ["redis_url must be a redis://, rediss:// or unix:// URL, got an array"],
            id="redis-url-array",
        ),
    ],
)
def test_configuration_errors_name_the_key_and_never_show_a_secret(
    tmp_path: Path, toml: str, fragments: list[str]
) -> None:
    assert_refused_without_the_secret(tmp_path, toml, "TOPSECRET", fragments)


@pytest.mark.parametrize(
    ("toml", "fragments"),
    [
        (
            '[[apps]]\napp_id = "1"\nkey = "k"\nsecret = 987654321\n',
            ["secret must be a non-empty string, got an integer"],
        ),
        ("[server]\nconsole_token = 987654321\n", ["console_token must be a non-empty string, got an integer"]),
        (f"[[apps]]\n{APP_HEAD}ably_key = 987654321\n", ["ably_key must be a non-empty string, got an integer"]),
    ],
)
def test_a_secret_written_unquoted_is_not_shown(tmp_path: Path, toml: str, fragments: list[str]) -> None:
    """A number where a secret's string belongs is still the secret."""
    assert_refused_without_the_secret(tmp_path, toml, "987654321", fragments)


async def test_the_printed_configuration_error_hides_the_secret_of_an_apps_table(tmp_path: Path) -> None:
    """What `relay emulator` prints for the audit's first case: `[apps]` instead of `[[apps]]`."""
    config = write(tmp_path, '[apps]\napp_id = "1"\nkey = "k"\nsecret = "TOPSECRET-abc123"\n')
    outcome = await run_relay("emulator", "--port", "0", "--config", str(config))
    assert_refused(outcome, "apps must be [[apps]] tables, got a table")
    assert "TOPSECRET" not in outcome.stdout + outcome.stderr


def test_settings_given_in_python_do_not_show_a_secret_either() -> None:
    with pytest.raises(ConfigError) as raised:
        App(app_id="1", key="k", secret=b"TOPSECRET-bytes")  # type: ignore[arg-type]
    assert "TOPSECRET" not in str(raised.value) and "secret must be a non-empty string" in str(raised.value)
    with pytest.raises(ConfigError) as raised:
        Webhook(url="http://x/h", headers={"Authorization": "Bearer TOPSECRET\r\nX-Injected: 1"})
    assert "TOPSECRET" not in str(raised.value) and "'Authorization'" in str(raised.value)


# -- 4. refused connections cannot flood the logs ------------------------------------------------------------------

HUGE_KEY = "k" * 30_000
LOG_LINE = JsonFormatter(Redactor(APP.secrets))  # `relay emulator --log-json`'s


def formatted(records: list[logging.LogRecord]) -> list[str]:
    return [LOG_LINE.format(record) for record in records]


REFUSED = 30


async def refused(port: int, key: str) -> None:
    async with connect(f"ws://127.0.0.1:{port}/app/{key}?protocol=7", open_timeout=5, max_size=None) as ws:
        frame = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert frame["event"] == "pusher:error" and frame["data"]["code"] == 4001
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)


async def test_refused_connections_with_a_huge_key_give_bounded_logs(
    start_emulator: StartEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    """The audit: each refused connection logged its key twice (reason and path), so a 30 KB key gave some 60 KB of
    log per attempt, unauthenticated and without limit."""
    emulator = await start_emulator(app=APP)
    with caplog.at_level(logging.INFO, logger="relay.emulator"):
        started = time.monotonic()
        for _ in range(REFUSED):
            await refused(emulator.port, HUGE_KEY)
        elapsed = time.monotonic() - started
        first = [record for record in caplog.records if record.getMessage() == "connection refused"]
        await asyncio.sleep(1.1)  # a second later, the next refusal is logged again, saying how many were not
        await refused(emulator.port, HUGE_KEY)
    records = [record for record in caplog.records if record.getMessage() == "connection refused"]
    # The first refusal is logged, with its code and what the client sent cut short.
    assert first, "the first refused connection was not logged"
    head = first[0]
    assert head.code == 4001  # type: ignore[attr-defined]
    assert head.reason.startswith("Application does not exist: no app has key 'kkk")  # type: ignore[attr-defined]
    assert head.reason.endswith("…") and len(head.reason) <= 101  # type: ignore[attr-defined]
    assert head.path.startswith("/app/kkk") and head.path.endswith("…") and len(head.path) <= 101  # type: ignore[attr-defined]
    # Bounded: a line a second of a few hundred bytes, not 60 KB a refusal.
    assert len(first) <= math.ceil(elapsed) + 1, (len(first), elapsed)
    assert len(records) > len(first)
    lines = formatted(records)
    assert max(map(len, lines)) < 600, lines
    # Every refusal is either logged or counted as unlogged on the next line; all are in the metric.
    unlogged = sum(getattr(record, "unlogged", 0) for record in records)
    assert len(records) + unlogged == REFUSED + 1
    assert emulator.node.ops.metrics.refused[4001] == REFUSED + 1


async def test_a_refused_key_holding_the_secret_is_redacted_before_it_is_cut(
    start_emulator: StartEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    """Cutting what a client sent could leave the start of a secret it put there, which the log's redactor would no
    longer recognise: the secret is redacted first."""
    emulator = await start_emulator(app=APP)
    key = "x" * 90 + APP.secret
    with caplog.at_level(logging.INFO, logger="relay.emulator"):
        await refused(emulator.port, key)
    record = next(record for record in caplog.records if record.getMessage() == "connection refused")
    assert record.path == "/app/" + "x" * 90 + "***"  # type: ignore[attr-defined]
    assert record.reason.endswith("…") and len(record.reason) <= 101  # type: ignore[attr-defined]
    (line,) = formatted([record])
    assert APP.secret[:4] not in line and APP.secret[-4:] not in line, line


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://user:pw@h/hook?token=T1", "http://***@h/hook?token=***"),
        (
            "http://h/x?a=1&access_token=T2&api_key=K&sig=S&client_secret=C#frag",
            "http://h/x?a=1&access_token=***&api_key=***&sig=***&client_secret=***#frag",
        ),
        ("https://u:token=p@host/x?b=2", "https://***@host/x?b=2"),  # a password holding "token=": the host stays
        ("https://h/hook/token=abc/more?x=1", "https://h/hook/token=abc/more?x=1"),  # a path segment is no secret
    ],
)
def test_a_url_shown_hides_its_user_info_and_secret_query_values_only(url: str, shown: str) -> None:
    """What the console and configuration errors show of a URL (a webhook's, Redis'): user-info and the values of
    secret-looking query parameters become ***, and nothing else of the URL is cut (a `token=` in the path or the
    password took the rest of the URL, the host included, with it)."""
    assert redact_urls(url) == shown
    # A log line goes through the same, then hides any `token=`-like value, in a URL's path too (log text is not
    # parsed as URLs): the host of a password holding "token=" still shows.
    assert Redactor()("https://u:token=p@host/x?b=2") == "https://***@host/x?b=2"
