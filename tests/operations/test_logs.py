"""Logs (issue 4): structured records, one JSON object a line with --log-json, --log-level, and secrets (app
secrets, the console token, credentials in URLs) never written."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from relay.emulator.logs import configure_logging
from tests.emulator_process import EmulatorProcess
from tests.operations.support import APP, api, ws_client

TOKEN = "tok-3f9a8c1d2e"
HOOK_PASSWORD = "hookpass-77aa"


async def test_json_logs_are_structured_and_never_contain_secrets(tmp_path: Path) -> None:
    config = tmp_path / "emulator.toml"
    config.write_text(
        f"""[server]
shutdown_webhook_grace = 0.3

[[apps]]
app_id = "{APP.app_id}"
key = "{APP.key}"
secret = "{APP.secret}"
webhook_batch_ms = 10

[[apps.webhooks]]
url = "http://hooks:{HOOK_PASSWORD}@127.0.0.1:9/pusher"   # nothing listens there: the failure is logged
"""
    )
    relay = await EmulatorProcess.start(
        "--config", str(config), "--log-json", "--log-level", "debug", "--console-token", TOKEN
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{relay.port}"
        client = await ws_client(f"ws://127.0.0.1:{relay.port}/app/{APP.key}")
        await client.subscribe("private-orders", APP)  # channel_occupied → a webhook that fails
        assert (await api(base, APP, "GET", "/apps/1/channels")).status_code == 200
        assert (await api(base, APP, "GET", "/apps/1/channels", secret="wrong")).status_code == 401
        async with httpx.AsyncClient() as http:
            assert (await http.get(f"{base}/metrics", params={"token": TOKEN})).status_code == 200
            assert (await http.get(f"{base}/metrics", params={"token": TOKEN + "x"})).status_code == 401
        with pytest.raises(ConnectionClosed) as refused:  # refused after the upgrade
            await ws_client(f"ws://127.0.0.1:{relay.port}/app/wrong-key")
        assert refused.value.rcvd is not None and refused.value.rcvd.code == 4001
        await relay.wait_for_output("webhook to .* failed")
        await client.close()
        assert await relay.stop() == 0
    finally:
        await relay.kill()

    records = [json.loads(line) for line in relay.stderr]  # every line is one JSON object
    assert all({"ts", "level", "logger", "msg"} <= record.keys() for record in records)
    by_message = {record["msg"]: record for record in records}
    listening = by_message["emulator listening"]
    assert listening["port"] == relay.port and listening["apps"] == [APP.app_id] and listening["level"] == "info"
    assert listening["logger"] == "relay.emulator"  # the server's, not relay.emulator.shutdown's
    refused = by_message["connection refused"]
    assert refused["code"] == 4001 and refused["path"] == "/app/wrong-key"
    assert any(r["msg"] == "HTTP API request" and r["status"] == 200 and r["level"] == "debug" for r in records)
    webhook = next(record for record in records if record["msg"].startswith("webhook to "))
    assert webhook["level"] == "warning" and "http://***@127.0.0.1:9/pusher" in webhook["msg"]
    assert by_message["shutdown: done"]["logger"] == "relay.emulator.shutdown"
    everything = "\n".join(relay.stderr)
    for secret in (APP.secret, TOKEN, HOOK_PASSWORD):
        assert secret not in everything
    # Under a service manager stdout goes to the journal too: the banner hides the secrets (they are in the config)
    assert APP.secret not in relay.banner
    assert f'key="{APP.key}" secret="***"' in relay.banner
    assert f"RELAY_URL:   emulator://{APP.key}:***@127.0.0.1:{relay.port}/apps/{APP.app_id}" in relay.banner
    assert f'new Ably.Realtime({{ key: "{APP.app_id}.{APP.key}:***"' in relay.banner


@pytest.fixture
def root_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


@pytest.mark.usefixtures("root_logging")
def test_text_logs_append_fields_and_redact_whatever_logged_the_secret() -> None:
    stream = io.StringIO()
    configure_logging("info", json_format=False, secrets=["s3cr3t-value", None], stream=stream)
    log = logging.getLogger("relay.emulator.test")
    log.info("oops %s", "s3cr3t-value", extra={"app_id": "1", "url": "https://u:p@host/x?auth_signature=abc&x=1"})
    log.debug("not at info level")
    line = stream.getvalue().strip()
    assert "s3cr3t-value" not in line and "oops ***" in line
    assert "app_id=1" in line and "url=https://***@host/x?auth_signature=***&x=1" in line
    assert "not at info level" not in line
    configure_logging("debug", json_format=True, secrets=['quote"secret'], stream=stream)
    log.debug("has %s", 'quote"secret')
    record = json.loads(stream.getvalue().splitlines()[-1])
    assert record["msg"] == "has ***" and record["level"] == "debug"


@pytest.mark.usefixtures("root_logging")
def test_json_lines_stay_json_whatever_a_client_sent_after_token() -> None:
    """A refused handshake's path is a client's text: ``token="x`` redacted in the encoded line took the backslash
    escaping its quote, and the line was no JSON. Each value is redacted before encoding."""
    stream = io.StringIO()
    configure_logging("info", json_format=True, secrets=["s3cr3t-value"], stream=stream)
    log = logging.getLogger("relay.emulator.test")
    sent = ['/app/token="x', '/app/sec%22password="', '/app/token=a\\"', "/app/x?token=abc&y=s3cr3t-value"]
    for path in sent:
        log.info("connection refused", extra={"path": path, "reason": f"no app has key {path!r}"})
    records = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [record["path"] for record in records[:3]] == ['/app/token="x', '/app/sec%22password="', '/app/token=***"']
    assert records[3]["path"] == "/app/x?token=***&y=***"
    assert records[3]["reason"] == "no app has key '/app/x?token=***&y=***'"


# An Origin header the HTTP parser lets through (bytes 0x80-0xFF, read as Latin-1): C1 controls, a terminal's CSI
# clearing the screen, OSC setting its title, and NEL, a line break to Python's splitlines, before a forged line.
FORGED_ORIGIN = b"https://evil\x9b2J\x9d0;pwned\x9c\x85 INFO relay.emulator: forged"


@pytest.mark.parametrize("json_format", [False, True], ids=["text", "json"])
async def test_a_client_s_control_characters_are_escaped_in_the_log(tmp_path: Path, json_format: bool) -> None:
    config = tmp_path / "emulator.toml"
    config.write_text(
        f"""[[apps]]
app_id = "{APP.app_id}"
key = "{APP.key}"
secret = "{APP.secret}"
allowed_origins = ["https://ok.example"]
"""
    )
    relay = await EmulatorProcess.start("--config", str(config), *(["--log-json"] if json_format else []))
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
        writer.write(
            f"GET /app/{APP.key}?protocol=7 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n".encode()
            + b"Origin: "
            + FORGED_ORIGIN
            + b"\r\n\r\n"
        )
        assert (await reader.readline()).startswith(b"HTTP/1.1 101")  # refused after the upgrade (4009)
        line = await relay.wait_for_output("connection refused")
        writer.close()
    finally:
        await relay.kill()
    assert line.isprintable()
    if json_format:
        assert json.loads(line)["reason"] == "Origin not allowed: " + FORGED_ORIGIN.decode("latin-1")
    else:
        assert r"reason=Origin not allowed: https://evil\x9b2J\x9d0;pwned\x9c\x85 INFO relay.emulator: forged" in line
