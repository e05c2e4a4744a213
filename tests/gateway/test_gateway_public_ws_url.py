"""``RELAY_PUBLIC_WS_URL``: where browsers open their WebSocket when it is not ``RELAY_URL``'s address. With
docs/deploy.md's gateway (the emulator at 127.0.0.1:6001, browsers through nginx at relay.example.com),
``/v1/client-config`` told every page to connect to 127.0.0.1, its own machine, and nothing said so. Real gateways
under uvicorn, real emulators, real pusher-js."""

from __future__ import annotations

import asyncio
import json
import logging
import socket

import pytest

from relay import Relay
from relay.emulator.config import App
from relay.errors import ConfigError
from relay.gateway import GatewaySettings
from tests.cli_support import assert_refused, run_relay
from tests.conftest import TEST_APP, RunningEmulator, StartEmulator
from tests.gateway.conftest import ROOT, StartGateway, emulator_url
from tests.gateway.test_gateway_browser_facing_fixes import client_config
from tests.node_scenarios import app_env, run_scenario

NODE_SCRIPT = ROOT / "tests" / "node" / "pusher_js_frontend_config.mjs"
ABLY_APP = App(app_id="1", key="app-key", secret="app-secret")


def closed_port() -> int:
    """A loopback port nothing listens on: the address the gateway has, and no browser reaches."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_client_config_gives_pages_the_public_websocket_address(
    emulator: RunningEmulator, start_emulator: StartEmulator, start_gateway: StartGateway
) -> None:
    """deploy.md's set-up: pages get relay.example.com:443 with TLS, not the emulator's 127.0.0.1; a path is wsPath,
    and replaces the provider URL's path prefix, which is the emulator's own address (none without one)."""
    behind_nginx = await start_gateway(
        env={
            "RELAY_URL": emulator_url(emulator),
            "RELAY_PUBLIC_URL": "https://relay.example.com",
            "RELAY_PUBLIC_WS_URL": "wss://relay.example.com/",
        }
    )
    config = await client_config(behind_nginx.url)
    assert {name: config.get(name) for name in ("wsHost", "wsPort", "wssPort", "forceTLS", "wsPath")} == {
        "wsHost": "relay.example.com",
        "wsPort": 443,
        "wssPort": 443,
        "forceTLS": True,
        "wsPath": None,
    }

    prefixed = f"emulator://app-key:app-secret@127.0.0.1:{emulator.port}/pusher/apps/1"
    for public, expected in [
        ("ws://rt.example.com:8080/realtime", ("rt.example.com", 8080, False, "/realtime")),
        ("wss://[::1]:8443", ("[::1]", 8443, True, None)),
        ("ws://rt.example.com", ("rt.example.com", 80, False, None)),
    ]:
        gateway = await start_gateway(env={"RELAY_URL": prefixed, "RELAY_PUBLIC_WS_URL": public})
        config = await client_config(gateway.url)
        assert (config["wsHost"], config["wssPort"], config["forceTLS"], config.get("wsPath")) == expected, public

    ably_emulator = await start_emulator(app=ABLY_APP)
    ably = await start_gateway(
        env={
            "RELAY_URL": f"ably://{ABLY_APP.ably_api_key}@127.0.0.1:{ably_emulator.port}?tls=false",
            "RELAY_PUBLIC_WS_URL": "wss://relay.example.com",
        }
    )
    assert (await client_config(ably.url))["clientOptions"] == {
        "endpoint": "relay.example.com",
        "tlsPort": 443,
        "tls": True,
        "fallbackHosts": [],
    }


async def test_pusher_js_connects_where_the_setting_says(
    start_emulator: StartEmulator, start_gateway: StartGateway
) -> None:
    """The gateway reaches the emulator at an address no page reaches (a closed port, under another prefix); pusher-js,
    given exactly /v1/client-config, connects at RELAY_PUBLIC_WS_URL, the emulator behind its path prefix, and
    receives what is published there."""
    prefix = "/realtime"
    emulator = await start_emulator(path_prefix=prefix)
    gateway = await start_gateway(
        env={
            "RELAY_URL": f"emulator://app-key:app-secret@127.0.0.1:{closed_port()}/pusher/apps/1",
            "RELAY_PUBLIC_WS_URL": f"ws://127.0.0.1:{emulator.port}{prefix}",
        }
    )
    config = await client_config(gateway.url)
    with Relay.from_url(f"emulator://app-key:app-secret@127.0.0.1:{emulator.port}{prefix}/apps/1") as client:

        async def publish(_: dict[str, object]) -> str:
            await asyncio.to_thread(client.publish, "orders", "order-ready", {"id": 7})
            return "ok"

        env = {**app_env("127.0.0.1", emulator.port, TEST_APP), "RELAY_FRONTEND_CONFIG": json.dumps(config)}
        run = await run_scenario(NODE_SCRIPT, env, on_step=publish)
    assert run.summary["checks"] == ["connected", "received"]


WS_EXAMPLE = "such as wss://relay.example.com or wss://example.com:8443/realtime"


@pytest.mark.parametrize(
    ("relay_url", "value", "message"),
    [
        (
            "emulator://k:s@127.0.0.1:6001/apps/1",
            "https://relay.example.com",
            f"RELAY_PUBLIC_WS_URL: 'https://relay.example.com' is not a ws:// or wss:// URL with a host, {WS_EXAMPLE}",
        ),
        (
            "emulator://k:s@127.0.0.1:6001/apps/1",
            "wss:///app",
            f"RELAY_PUBLIC_WS_URL: 'wss:///app' is not a ws:// or wss:// URL with a host, {WS_EXAMPLE}",
        ),
        (
            "emulator://k:s@127.0.0.1:6001/apps/1",
            "wss://relay.example.com/?v=1",
            "RELAY_PUBLIC_WS_URL: 'wss://relay.example.com/?v=1' has a query or a fragment; give the address pages "
            f"append /app/KEY to, {WS_EXAMPLE}",
        ),
        (
            "emulator://k:s@127.0.0.1:6001/apps/1",
            "wss://relay.example.com#ws",
            "RELAY_PUBLIC_WS_URL: 'wss://relay.example.com#ws' has a query or a fragment; give the address pages "
            f"append /app/KEY to, {WS_EXAMPLE}",
        ),
        (
            "emulator://k:s@127.0.0.1:6001/apps/1",
            "wss://admin:hunter2@relay.example.com",
            "RELAY_PUBLIC_WS_URL: 'wss://***@relay.example.com' has credentials before its host: /v1/client-config "
            "gives this address to every page, so leave them out",
        ),
        (
            "pusher://k:s@eu/apps/1",
            "wss://relay.example.com",
            "RELAY_PUBLIC_WS_URL cannot be used: pages of hosted Pusher (api-eu.pusher.com) connect where pusher-js's "
            "cluster sends them; leave it out",
        ),
        (
            "ably://name.key:secret@rest.ably.io",
            "wss://relay.example.com",
            "RELAY_PUBLIC_WS_URL cannot be used: pages of Ably's cloud (rest.ably.io) connect to Ably's own endpoints; "
            "leave it out",
        ),
        (
            "memory://pages",
            "wss://relay.example.com",
            "RELAY_PUBLIC_WS_URL cannot be used: memory:// has no WebSocket for pages to open; leave it out",
        ),
        (
            "ably://name.key:secret@127.0.0.1:6001?tls=false",
            "wss://relay.example.com/ably",
            "RELAY_PUBLIC_WS_URL cannot be used: ably-js connects at the root of its endpoint and takes no path "
            "(/ably); leave it out",
        ),
    ],
    ids=["https", "no-host", "query", "fragment", "credentials", "hosted-pusher", "ably-cloud", "memory", "ably-path"],
)
def test_a_websocket_url_pages_cannot_use_is_refused_at_start(relay_url: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError) as refused:
        GatewaySettings.from_env({"RELAY_URL": relay_url, "RELAY_PUBLIC_WS_URL": value})
    assert refused.value.message == message


async def test_relay_serve_refuses_a_bad_websocket_url_in_one_line() -> None:
    env = {"RELAY_URL": "emulator://k:s@127.0.0.1:6001/apps/1", "RELAY_PUBLIC_WS_URL": "relay.example.com"}
    assert_refused(await run_relay("serve", "--port", "0", env=env), "RELAY_PUBLIC_WS_URL: 'relay.example.com'")


def test_the_start_up_summary_names_the_websocket_url() -> None:
    settings = GatewaySettings.from_env(
        {"RELAY_URL": "emulator://k:s@127.0.0.1:6001/apps/1", "RELAY_PUBLIC_WS_URL": "wss://relay.example.com/"}
    )
    assert settings.summary()[-1] == "pages open their WebSocket at RELAY_PUBLIC_WS_URL: wss://relay.example.com"


async def test_a_loopback_provider_with_a_public_gateway_is_a_warning_at_start(
    emulator: RunningEmulator, start_gateway: StartGateway, caplog: pytest.LogCaptureFixture
) -> None:
    """deploy.md's gateway.env without RELAY_PUBLIC_WS_URL: pages would be told 127.0.0.1, so the log says so and
    names the setting. Nothing is said when the setting is given, or when the gateway's own address is loopback too
    (a developer's machine, where 127.0.0.1 is the browser's machine)."""
    base = {"RELAY_URL": emulator_url(emulator), "RELAY_PUBLIC_URL": "https://relay.example.com"}
    caplog.set_level(logging.WARNING, logger="relay.gateway")
    gateway = await start_gateway(env=base)
    assert (await client_config(gateway.url))["wsHost"] == "127.0.0.1"  # what the warning is about
    assert [record.getMessage() for record in caplog.records if record.name == "relay.gateway"] == [
        f"/v1/client-config tells pages to open their WebSocket at 127.0.0.1:{emulator.port}, RELAY_URL's loopback "
        "address, while RELAY_PUBLIC_URL says browsers reach the gateway at relay.example.com: each browser would "
        "connect to its own machine. Set RELAY_PUBLIC_WS_URL to the address browsers reach the provider at, such as "
        "wss://relay.example.com"
    ]
    caplog.clear()
    await start_gateway(env={**base, "RELAY_PUBLIC_WS_URL": "wss://relay.example.com"})
    await start_gateway(env={**base, "RELAY_PUBLIC_URL": "http://localhost:8000"})
    await start_gateway(env={"RELAY_URL": emulator_url(emulator)})
    assert [record for record in caplog.records if record.name == "relay.gateway"] == []
