"""Fixes from a code review of the emulator: the path prefix applies to Pusher WebSockets as it does to the HTTP API
(one rule for both, and for the operations endpoints), the Pusher connection rules as a pure function, an Ably
connection with permessage-deflate metered as written, and two apps sharing an identity refused however the config
is built."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import struct
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect as ws_connect

from relay.emulator.config import App, EmulatorConfig, load_config, unprefixed
from relay.emulator.hub import AppState
from relay.emulator.server import pusher_admission
from relay.emulator.webhooks import WebhookDispatcher
from relay.errors import ConfigError
from relay.protocol.codes import ErrorCode
from tests.ably.ablysupport import ACK, API_KEY, ATTACHED, CONNECTED, HEARTBEAT, PRESENCE, SYNC, ably_wire
from tests.conformance.wsclient import WS_OPTIONS, expect_fatal, recv_json
from tests.conftest import TEST_APP, StartEmulator
from tests.operations.test_reliability_hunt_fixes import WireClient, sent_so_far

# -- the path prefix --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "prefix", "expected"),
    [
        ("/app/k", "", "/app/k"),
        ("/ws/app/k", "/ws", "/app/k"),
        ("/ws/", "/ws", "/"),
        ("/app/k", "/ws", None),  # the bare path
        ("/ws", "/ws", None),  # the prefix alone is not a route
        ("/wsapp/k", "/ws", None),  # a longer first segment is another prefix
        ("/other/app/k", "/ws", None),
    ],
)
def test_unprefixed(path: str, prefix: str, expected: str | None) -> None:
    assert unprefixed(path, prefix) == expected


def test_path_prefix_is_kept_without_its_trailing_slash() -> None:
    """So "/ws/" serves /ws/app/{key} (not /ws//app/{key}), and "/" is no prefix."""
    config = EmulatorConfig(apps=(TEST_APP,), path_prefix="/ws/")
    assert config.path_prefix == "/ws"
    assert replace(config, path_prefix="/").path_prefix == ""


async def test_a_websocket_outside_the_path_prefix_is_refused_like_a_bad_path(start_emulator: StartEmulator) -> None:
    """With path_prefix "/ws", ws://host/app/{key} was accepted (connection_established) while the HTTP API answered
    404 for the same bare path: now it is refused as any bad path is, after the upgrade with pusher:error 4005 and
    close 4005, and the prefixed endpoint, the operations endpoints (with or without the prefix) and Ably's endpoint
    (at the root) keep serving."""
    emulator = await start_emulator(path_prefix="/ws")
    base = f"ws://127.0.0.1:{emulator.port}"
    async with ws_connect(f"{base}/app/{TEST_APP.key}?protocol=7", **WS_OPTIONS) as bare:
        assert await expect_fatal(bare, ErrorCode.PATH_NOT_FOUND) == "Path not found: connect to /ws/app/{key}"
    async with ws_connect(f"{base}/ws/app/{TEST_APP.key}?protocol=7", **WS_OPTIONS) as prefixed:
        assert (await recv_json(prefixed))["event"] == "pusher:connection_established"
    async with httpx.AsyncClient(base_url=emulator.http_url, timeout=5) as http:
        # A plain GET on the WebSocket endpoint: 426 under the prefix; the bare path is no endpoint (it got 426).
        assert (await http.get(f"/ws/app/{TEST_APP.key}")).status_code == 426
        bare_get = await http.get(f"/app/{TEST_APP.key}")
        assert (bare_get.status_code, bare_get.json()) == (404, {"error": f"no route for /app/{TEST_APP.key}"})
        for path in ("/health", "/ws/health", "/ready", "/ws/ready", "/metrics", "/ws/metrics"):
            assert (await http.get(path)).status_code == 200, path
    ably = await ably_wire(emulator)
    assert ably.connected["action"] == CONNECTED
    await ably.ws.close()


# -- the Pusher connection rules, without sockets ------------------------------------------------------------------


def _states(*apps: App) -> dict[str, AppState]:
    return {app.key: AppState(app, WebhookDispatcher(app, httpx.AsyncClient()), float) for app in apps}


ADMISSION_APPS = (
    replace(TEST_APP, allowed_origins=("https://shop.example.com",), max_connections=1),
    App(app_id="2", key="off-key", secret="s", enabled=False),
)


@pytest.mark.parametrize(
    ("target", "headers", "refusal"),
    [
        ("/p/app/app-key", [], None),
        ("/p/app/app-key?protocol=5", [("origin", "https://shop.example.com")], None),
        ("/app/app-key", [], (4005, "Path not found: connect to /p/app/{key}")),
        ("/p/apps/app-key", [], (4005, "Path not found: connect to /p/app/{key}")),
        ("/p/app/nope", [], (4001, "Application does not exist: no app has key 'nope'")),
        # the app id where pusher-js takes the key (new Pusher("1", …)): "no app has key '1'" alone
        (
            "/p/app/2",
            [],
            (
                4001,
                "Application does not exist: no app has key '2': that is an app's id, and new Pusher(KEY, …) takes "
                "the app's key (the emulator's banner prints it)",
            ),
        ),
        ("/p/app/off-key", [], (4003, "Application disabled")),
        ("/p/app/app-key", [("Origin", "https://evil.example")], (4009, "Origin not allowed: https://evil.example")),
        ("/p/app/app-key?protocol=%C2%B2", [], (4006, "Invalid version string format: protocol='²'")),
        ("/p/app/app-key?protocol=8", [], (4007, "Unsupported protocol version 8; use 5 to 7")),
        ("/p/app/app-key?protocol=00000007", [], None),
        # int() of over 4,300 digits raised ValueError: a traceback in the log, and no pusher:error
        ("/p/app/app-key?protocol=" + "7" * 4301, [], (4007, f"Unsupported protocol version {'7' * 16}; use 5 to 7")),
    ],
)
def test_pusher_admission(target: str, headers: list[tuple[str, str]], refusal: tuple[int, str] | None) -> None:
    states = _states(*ADMISSION_APPS)
    admission = pusher_admission(target, "/p", states, headers)
    assert admission == (refusal or states["app-key"])


def test_pusher_admission_over_the_connection_quota() -> None:
    states = _states(*ADMISSION_APPS)
    states["app-key"].peers["1.1"] = object()  # type: ignore[assignment]  # one connection: the quota
    quota = (ErrorCode.OVER_CONNECTION_QUOTA, "Application is over connection quota (1)")
    assert pusher_admission("/p/app/app-key", "/p", states, []) == quota
    assert list(states["app-key"].peers) == ["1.1"]  # a refusal changes nothing


def test_origin_refusal_is_one_rule_for_both_protocols() -> None:
    app = replace(TEST_APP, allowed_origins=("*.example.com",))
    assert app.origin_refusal([]) is None  # not a browser
    assert app.origin_refusal([("ORIGIN", "https://a.example.com")]) is None
    assert (
        app.origin_refusal([("Origin", "https://x.test" + "t" * 200)])
        == f"Origin not allowed: https://x.test{'t' * 86}"
    )
    assert app.origin_refusal([("Origin", "")]) == "Origin not allowed: "


def test_frame_limit() -> None:
    config = EmulatorConfig(apps=(TEST_APP,), max_frame_bytes=1000)
    assert config.frame_limit(TEST_APP) == 1000
    assert config.frame_limit(replace(TEST_APP, max_message_bytes=10)) == 10
    assert config.frame_limit(replace(TEST_APP, max_message_bytes=5000)) == 1000


# -- two apps sharing an identity ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("second", "message"),
    [
        (App(app_id="1", key="other", secret="s"), "two apps share the app_id '1'"),
        (App(app_id="2", key="app-key", secret="s"), "two apps share the key 'app-key' (app_id '1' and app_id '2')"),
        (
            App(app_id="2", key="other", secret="s", ably_key="1.app-key:x"),
            "two apps share the Ably key name '1.app-key' (app_id '1' and app_id '2': give one an ably_key)",
        ),
    ],
)
def test_two_apps_sharing_an_identity_are_refused_however_built(second: App, message: str, tmp_path: Path) -> None:
    """Only a config file was checked: apps given in code (or a replace()) reached EmulatorNode.start, which kept
    the last app of each id and key, silently."""
    with pytest.raises(ConfigError) as caught:
        EmulatorConfig(apps=(TEST_APP, second))
    assert caught.value.message == message
    with pytest.raises(ConfigError) as caught:
        replace(EmulatorConfig(apps=(TEST_APP,)), apps=(TEST_APP, second))
    assert caught.value.message == message
    path = tmp_path / "relay.toml"
    tables = [
        "[[apps]]\n" + "".join(f"{name} = {json.dumps(value)}\n" for name, value in fields.items())
        for fields in (
            {"app_id": TEST_APP.app_id, "key": TEST_APP.key, "secret": TEST_APP.secret},
            {"app_id": second.app_id, "key": second.key, "secret": second.secret}
            | ({"ably_key": second.ably_key} if second.ably_key else {}),
        )
    ]
    path.write_text("".join(tables))
    with pytest.raises(ConfigError) as caught:
        load_config(path, defaults=EmulatorConfig(apps=(TEST_APP,)))
    assert caught.value.message == f"{path}: {message}"


# -- an Ably connection with permessage-deflate --------------------------------------------------------------------


class AblyDeflateWire(WireClient):
    """An Ably realtime connection (JSON) on a bare TCP stream offering permessage-deflate, as browsers do: every
    byte written after the 101 is counted."""

    @classmethod
    async def open_ably(cls, port: int) -> AblyDeflateWire:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        key = base64.b64encode(os.urandom(16)).decode()
        head = (
            f"GET /?key={API_KEY}&format=json HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n"
        )
        writer.write(head.encode())
        response = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)).decode("latin-1")
        assert response.startswith("HTTP/1.1 101 ") and "permessage-deflate" in response, response
        client = cls(reader, writer, "permessage-deflate")
        assert (await client.next())["action"] == CONNECTED
        return client

    async def send_message(self, message: dict[str, Any]) -> None:
        payload = json.dumps(message).encode()
        assert len(payload) < 126
        mask = os.urandom(4)
        head = struct.pack("!BB", 0x81, 0x80 | len(payload))
        self.writer.write(head + mask + bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload)))


async def test_an_ably_connection_with_deflate_is_metered_as_written(start_emulator: StartEmulator) -> None:
    """The server wrote an Ably connection's frames compressed once it negotiated permessage-deflate, but metered
    them whole (/metrics relay_bytes_sent_total, /usage bytes_out): its CONNECTED, ATTACHED, the SYNC listing a
    channel's members and its HEARTBEAT replies are now counted as the bytes on the wire."""
    emulator = await start_emulator()
    members = await ably_wire(emulator)
    await members.attach("lobby")
    entered = [
        {"action": 2, "clientId": f"member-{n}", "data": json.dumps({"seat": n, "role": "guest"})} for n in range(40)
    ]
    await members.presence("lobby", *entered)
    await members.expect(PRESENCE)
    await members.expect(ACK)
    messages_before, bytes_before, bytes_out_before = await sent_so_far(emulator.http_url)

    browser = await AblyDeflateWire.open_ably(emulator.port)
    await browser.send_message({"action": 10, "channel": "lobby"})  # ATTACH
    assert (await browser.next())["action"] == ATTACHED
    synced: list[str] = []
    while True:
        page = await browser.next()
        assert page["action"] == SYNC
        synced += [member["clientId"] for member in page["presence"]]
        if page["channelSerial"].endswith(":"):  # an empty cursor ends the SYNC
            break
    assert sorted(synced) == sorted(item["clientId"] for item in entered)
    await browser.send_message({"action": HEARTBEAT, "id": "p1"})
    assert await browser.next() == {"action": HEARTBEAT, "id": "p1"}

    messages, bytes_sent, bytes_out = await sent_so_far(emulator.http_url)
    written = browser.received
    assert written < sum(len(text) for text, _ in browser.frames)  # compressed on the wire: the test can fail
    assert (messages - messages_before, bytes_sent - bytes_before, bytes_out - bytes_out_before) == (
        len(browser.frames),
        written,
        written,
    )
    browser.close()
    await members.ws.close()
