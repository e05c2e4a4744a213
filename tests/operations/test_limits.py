"""Per-app limits and protection (issue 4): connection quota, WebSocket message size, HTTP API rate limit,
allowed origins; and their configuration."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import socket
import time
from dataclasses import replace
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.typing import Origin

from relay.emulator.config import App, EmulatorConfig, load_config
from relay.emulator.limits import TokenBucket, origin_allowed
from relay.errors import ConfigError
from relay.protocol.signing import sign_rest_request
from tests.conftest import StartEmulator
from tests.operations.support import APP, Client, api, eventually, publish, ws_client


async def refused(url: str, **options: object) -> tuple[dict[str, object], int | None]:
    """Connect, expect pusher:error and then the close; return the error data and the close code."""
    from websockets.asyncio.client import connect

    async with connect(url, open_timeout=5, **options) as ws:  # type: ignore[arg-type]
        error = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert error["event"] == "pusher:error"
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)
        return error["data"], ws.close_code


async def still_serves(client: Client, url: str, app: App) -> None:
    await client.send("pusher:ping", {})
    await client.expect("pusher:pong")
    await client.subscribe("alive-check", app)
    await publish(url, app, "alive-check", "alive", "1")
    assert (await client.expect("alive"))["data"] == "1"


async def test_max_connections_refuses_with_4004_and_frees_the_slot(start_emulator: StartEmulator) -> None:
    app = replace(APP, max_connections=2)
    emulator = await start_emulator(app=app)
    first, second = await ws_client(emulator.ws_url()), await ws_client(emulator.ws_url())
    await first.subscribe("news", app)
    data, code = await refused(emulator.ws_url())
    assert data["code"] == 4004 and code == 4004 and "quota" in str(data["message"])
    await second.close()
    await eventually(lambda: len(emulator.node.states[app.app_id].peers) == 1, what="the closed connection's slot")
    third = await ws_client(emulator.ws_url())
    await still_serves(first, emulator.http_url, app)
    assert emulator.node.ops.metrics.refused == {4004: 1}
    await first.close()
    await third.close()


async def test_max_message_size_closes_only_the_sender_with_1009(start_emulator: StartEmulator) -> None:
    """A message over the app's max_message_bytes: a pusher:error saying why, then close 1009 (RFC 6455 "message
    too big"; pusher-js reconnects after a second). A message under the limit, and the other sockets, are fine."""
    app = replace(APP, max_message_bytes=1024)
    emulator = await start_emulator(app=app)
    sender, bystander = await ws_client(emulator.ws_url()), await ws_client(emulator.ws_url())
    await bystander.subscribe("news", app)
    await sender.send("pusher:ping", {"pad": "x" * 900})  # under the limit
    await sender.expect("pusher:pong")
    await sender.send("pusher:ping", {"pad": "x" * 2000})
    error = await sender.expect("pusher:error")
    assert error["data"] == {
        "code": 1009,  # the close code that follows, as for every fatal error
        "message": "Message too large: this app accepts WebSocket messages up to 1024 bytes",
    }
    with pytest.raises(ConnectionClosed):
        await sender.next()
    assert sender.ws.close_code == 1009
    await still_serves(bystander, emulator.http_url, app)
    await bystander.close()


async def test_http_api_rate_limit_answers_429_with_retry_after(start_emulator: StartEmulator) -> None:
    """Per app, authenticated requests only: forged requests do not use up the app's budget, another app is not
    limited, and the limit lifts after Retry-After seconds."""
    app = replace(APP, api_rate_limit=2)
    other = App(app_id="2", key="other-key", secret="other-secret")
    emulator = await start_emulator(app=app, apps=(other,))
    for _ in range(5):
        forged = await api(emulator.http_url, app, "GET", "/apps/1/channels", secret="wrong")
        assert forged.status_code == 401
    assert (await api(emulator.http_url, app, "GET", "/apps/1/channels")).status_code == 200
    assert (await api(emulator.http_url, app, "GET", "/apps/1/channels")).status_code == 200
    for _ in range(5):  # the budget refills at 2/s: on a loaded machine the requests so far may have taken a while
        limited = await api(
            emulator.http_url, app, "POST", "/apps/1/events", {"name": "e", "channel": "c", "data": "1"}
        )
        if limited.status_code != 200:
            break
    assert limited.status_code == 429
    assert limited.headers["retry-after"] == "1"
    assert limited.headers["content-type"] == "application/json"
    assert "rate limit of 2 requests per second" in limited.json()["error"]
    for _ in range(3):
        assert (await api(emulator.http_url, other, "GET", "/apps/2/channels")).status_code == 200
    await asyncio.sleep(float(limited.headers["retry-after"]))
    assert (await api(emulator.http_url, app, "GET", "/apps/1/channels")).status_code == 200
    assert emulator.node.ops.metrics.http_responses["429"] == 1


async def test_a_backend_over_its_rate_limit_is_logged_once_a_second(
    start_emulator: StartEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    """Each 429 was a log line: a backend retrying in a loop filled the log. One line a second; every 429 counted."""
    app = replace(APP, api_rate_limit=1)
    emulator = await start_emulator(app=app)
    caplog.set_level(logging.INFO, logger="relay.emulator")
    started = time.monotonic()
    statuses = [(await api(emulator.http_url, app, "GET", "/apps/1/channels")).status_code for _ in range(20)]
    seconds = math.ceil(time.monotonic() - started)  # a loaded machine may take more than one
    assert statuses[0] == 200 and statuses.count(200) <= seconds + 1 and statuses.count(429) >= 20 - (seconds + 1)
    logged = [record for record in caplog.records if record.getMessage() == "HTTP API rate limit"]
    assert 1 <= len(logged) <= seconds + 1 < statuses.count(429), (len(logged), seconds)
    assert emulator.node.ops.metrics.http_responses["429"] == statuses.count(429)


def test_token_bucket_refills_at_its_rate() -> None:
    bucket = TokenBucket(0.5, now=0.0)  # one request every two seconds, bursts of one
    assert bucket.retry_after(0.0) is None
    bucket.take(0.0)
    assert bucket.retry_after(0.5) == 2
    assert bucket.retry_after(2.0) is None


def test_a_token_is_taken_only_when_there_is_one() -> None:
    bucket = TokenBucket(1 / 60, now=0.0)  # a warning a minute
    assert bucket.take_if_available(0.0)
    assert not bucket.take_if_available(59.0)
    assert not bucket.take_if_available(59.5)  # a refusal takes nothing: the minute still ends at 60
    assert bucket.take_if_available(60.001)  # a minute on (1/60 a second adds up to a hair under 1 at 60.0)


async def test_allowed_origins_refuse_other_sites_with_4009(start_emulator: StartEmulator) -> None:
    app = replace(APP, allowed_origins=("https://shop.example.com", "*.trusted.test"))
    emulator = await start_emulator(app=app)
    data, code = await refused(emulator.ws_url(), origin="https://evil.example")
    assert data["code"] == 4009 and code == 4009
    assert data["message"] == "Origin not allowed: https://evil.example"
    for origin in ("https://shop.example.com", "http://a.trusted.test:8080", "https://SHOP.example.com"):
        client = await ws_client(emulator.ws_url(), origin=origin)
        await client.close()
    no_origin = await ws_client(emulator.ws_url())  # servers and mobile SDKs send none
    await still_serves(no_origin, emulator.http_url, app)
    await no_origin.close()
    assert emulator.node.ops.metrics.refused == {4009: 1}


async def test_allowed_origins_refuse_an_ably_connection_from_another_site_with_40300(
    start_emulator: StartEmulator,
) -> None:
    """The same list guards Ably's realtime endpoint: ERROR 40300 naming the origin, then the close."""
    from websockets.asyncio.client import connect

    emulator = await start_emulator(app=replace(APP, allowed_origins=("https://shop.example.com",)))
    url = f"ws://127.0.0.1:{emulator.port}/?key={quote(APP.ably_api_key)}&format=json"
    async with connect(url, origin=Origin("https://evil.example"), open_timeout=5) as ws:
        error = json.loads(await asyncio.wait_for(ws.recv(), 5))
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)
    assert error["action"] == 9  # ERROR
    assert (error["error"]["code"], error["error"]["statusCode"]) == (40300, 403)
    assert error["error"]["message"] == "Origin not allowed: https://evil.example"
    async with connect(url, origin=Origin("https://shop.example.com"), open_timeout=5) as ws:
        assert json.loads(await asyncio.wait_for(ws.recv(), 5))["action"] == 4  # CONNECTED


async def test_a_refusal_whose_reason_is_long_in_utf_8_still_closes_with_its_code(
    start_emulator: StartEmulator,
) -> None:
    """The close reason was cut to 120 characters: 95 'é' are 190 bytes of UTF-8, over RFC 6455's 123, so no close
    frame went out and the socket ended without a code seconds later."""
    emulator = await start_emulator(app=replace(APP, allowed_origins=("https://shop.example.com",)))
    origin = "https://" + "\u00e9" * 95 + ".com"
    data, code = await refused(emulator.ws_url(), origin=origin)
    assert (data["code"], code) == (4009, 4009)
    assert str(data["message"]).startswith("Origin not allowed: https://\u00c3\u00a9")  # header bytes read as Latin-1
    allowed = await ws_client(emulator.ws_url(), origin="https://shop.example.com")
    await still_serves(allowed, emulator.http_url, APP)
    await allowed.close()


def test_origin_matching() -> None:
    assert origin_allowed((), "https://anything.example")
    assert origin_allowed(("*",), "https://anything.example")
    assert origin_allowed(("https://a.example",), None)
    assert not origin_allowed(("https://a.example",), "http://a.example")  # the scheme is part of an origin
    assert not origin_allowed(("https://a.example",), "https://a.example:8443")
    assert origin_allowed(("a.example",), "http://a.example:3000")  # a bare host matches any scheme and port
    assert not origin_allowed(("*.example.com",), "https://example.com.evil.test")
    assert not origin_allowed(("a.example",), "null")


def test_config_file_reads_and_checks_the_operations_settings(tmp_path: Path) -> None:
    config = tmp_path / "emulator.toml"
    config.write_text(
        '[server]\nconsole_token = "t0ken"\nshutdown_spread = 5\nusage_file = "u.json"\n'
        'tls_cert = "c.pem"\ntls_key = "k.pem"\n'
        '[[apps]]\napp_id = "1"\nkey = "k"\nsecret = "s"\nallowed_origins = ["https://a.example"]\n'
        "max_message_bytes = 4096\napi_rate_limit = 10\n"
    )
    loaded = load_config(config, defaults=EmulatorConfig(apps=()))
    assert loaded.console_token == "t0ken" and "t0ken" not in repr(loaded)
    # relative paths in a config file are beside it
    beside = (str(tmp_path / "u.json"), str(tmp_path / "c.pem"))
    assert (loaded.shutdown_spread, loaded.usage_file, loaded.tls_cert) == (5, *beside)
    assert loaded.apps[0].allowed_origins == ("https://a.example",)
    assert (loaded.apps[0].max_message_bytes, loaded.apps[0].api_rate_limit) == (4096, 10)
    bad = {
        'allowed_origins = "https://a.example"': "allowed_origins must be a list",
        "api_rate_limit = 0": "api_rate_limit must be a number of requests per second > 0",
        "max_message_bytes = -1": "max_message_bytes must be a whole number, 1 or more",
    }
    for line, message in bad.items():
        config.write_text(f'[[apps]]\napp_id = "1"\nkey = "k"\nsecret = "s"\n{line}\n')
        with pytest.raises(ConfigError, match=message):
            load_config(config, defaults=EmulatorConfig(apps=()))
    config.write_text('[server]\ntls_cert = "c.pem"\n')
    with pytest.raises(ConfigError, match="tls_cert and tls_key go together"):
        load_config(config, defaults=EmulatorConfig(apps=(APP,)))
    config.write_text("[server]\nshutdown_spread = -1\n")
    with pytest.raises(ConfigError, match="shutdown_spread must be a number of seconds"):
        load_config(config, defaults=EmulatorConfig(apps=(APP,)))


def from_address(port: int, address: str) -> socket.socket:
    connection = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(address, 0))
    connection.setblocking(False)
    return connection


async def closed_by_server(connection: socket.socket, within: float = 0.5) -> bool:
    """Whether the server closed ``connection`` within ``within`` seconds: 0.5 where it must not (a longer wait only
    slows the test), more where it must (a loaded machine may take longer to accept and close it)."""
    try:
        return await asyncio.wait_for(asyncio.get_running_loop().sock_recv(connection, 1), within) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


async def test_max_connections_per_address_closes_an_address_s_extra_connections_as_they_arrive(
    start_emulator: StartEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    """[server] max_connections_per_address: one address's connections past the cap are closed at once, whatever
    they are; other addresses, and the address's open connections, are served."""
    emulator = await start_emulator(app=APP, max_connections_per_address=3)
    port = emulator.port
    sentinel = await ws_client(emulator.ws_url())  # from 127.0.0.1: one of its 3
    await sentinel.subscribe("news", APP)
    held = [from_address(port, "127.0.0.1"), from_address(port, "127.0.0.1")]
    extra = from_address(port, "127.0.0.1")
    assert await closed_by_server(extra, within=5)
    assert any(
        record.getMessage()
        == "127.0.0.1 holds 3 connections, the most one address may (max_connections_per_address): closing more"
        for record in caplog.records
    )
    assert not any([await closed_by_server(connection) for connection in held])
    other = httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(local_address="127.0.0.2"))
    async with other:
        base = f"http://127.0.0.1:{port}"
        body = json.dumps({"name": "update", "channel": "news", "data": "from elsewhere"}).encode()
        params = sign_rest_request(APP.key, APP.secret, "POST", "/apps/1/events", timestamp=int(time.time()), body=body)
        published = await other.post(f"{base}/apps/1/events", params=params, content=body)
        assert published.status_code == 200, published.text
        assert (await sentinel.expect("update"))["data"] == "from elsewhere"
        metrics = (await other.get(f"{base}/metrics")).text
    assert "relay_address_cap_refusals_total 1\n" in metrics
    assert emulator.node.ops.metrics.address_refused == 1
    await eventually(lambda: emulator.node.per_address == {"127.0.0.1": 3}, what="127.0.0.2's connection to close")

    held.pop().close()
    await eventually(lambda: emulator.node.per_address == {"127.0.0.1": 2}, what="the closed connection's slot")
    again = from_address(port, "127.0.0.1")
    assert not await closed_by_server(again)
    for connection in (*held, extra, again):
        connection.close()


def test_max_connections_per_address_is_a_whole_number_of_one_or_more() -> None:
    with pytest.raises(ConfigError, match="max_connections_per_address must be a whole number, 1 or more, got 0"):
        EmulatorConfig(apps=(APP,), max_connections_per_address=0)
