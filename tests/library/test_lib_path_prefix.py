"""An emulator (or another Pusher-protocol server) behind a proxy path: its ``path_prefix`` in the provider URL,
``emulator://KEY:SECRET@HOST:PORT/PREFIX/apps/APP_ID``, reaches the library's requests and signatures, the page's
settings (pusher-js's ``wsPath``) and the ``relay emulator`` banner. Real emulators, real pusher-js."""

from __future__ import annotations

import asyncio
import json

import pytest
from libsupport import KEY, SECRET, MakeRelay, StartEmulator, emulator_url
from websockets.asyncio.client import connect

from relay import ChannelInfo, PublishResult, Relay
from relay.config import parse_url
from relay.errors import ConfigError, NotFound
from relay.gateway import frontend_config
from tests.conftest import TEST_APP
from tests.node_scenarios import app_env, node_modules, run_scenario

NODE_SCRIPT = node_modules("pusher-js").parent / "pusher_js_frontend_config.mjs"


@pytest.mark.parametrize(
    ("url", "prefix", "app_id", "written"),
    [
        ("emulator://k:s@127.0.0.1:6001/apps/1", "", "1", "emulator://k:***@127.0.0.1:6001/apps/1"),
        (
            "emulator://k:s@127.0.0.1:6001/pusher/apps/1",
            "/pusher",
            "1",
            "emulator://k:***@127.0.0.1:6001/pusher/apps/1",
        ),
        ("emulator://k:s@h:6001/a/b/apps/7/", "/a/b", "7", "emulator://k:***@h:6001/a/b/apps/7"),
        ("emulator://k:s@h:6001/my%20proxy/apps/1", "/my%20proxy", "1", "emulator://k:***@h:6001/my%20proxy/apps/1"),
        ("emulator://k:s@h:6001/v1:pusher+x/apps/1", "/v1:pusher+x", "1", "emulator://k:***@h:6001/v1:pusher+x/apps/1"),
        ("pusher://k:s@soketi.example.com/ws/apps/9", "/ws", "9", "pusher://k:***@soketi.example.com/ws/apps/9"),
        ("emulator://k:s@h:6001/apps/apps/1", "/apps", "1", "emulator://k:***@h:6001/apps/apps/1"),
    ],
)
def test_the_path_before_apps_is_the_server_s_prefix(url: str, prefix: str, app_id: str, written: str) -> None:
    config = parse_url(url)
    assert (config.path_prefix, config.app_id, config.url()) == (prefix, app_id, written)
    assert parse_url(config.url(privacy=False)) == config


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("emulator://k:s@h:6001/pusher/app/1", "URL must end with /apps/APP_ID (after a path prefix, if"),
        ("emulator://k:s@h:6001/pusher/apps", "URL must end with /apps/APP_ID (after a path prefix, if"),
        ("emulator://k:s@h:6001/a/../apps/1", "URL's path prefix cannot have a '..' segment"),
        ("emulator://k:s@h:6001/./apps/1", "URL's path prefix cannot have a '.' segment"),
        (
            "emulator://k:s@h:6001/a b/apps/1",
            "URL's path prefix has 'a b': a segment is letters, digits, -._~!$&'()*+,;=:@ and %XX escapes",
        ),
        ("emulator://k:s@h:6001/a%zz/apps/1", "URL's path prefix has 'a%zz': a segment is letters"),
        (
            "pusher://k:s@eu/foo/apps/1",
            "pusher:// URL of hosted Pusher (api-eu.pusher.com) takes no path prefix: its API is /apps/APP_ID",
        ),
        ("pusher://k:s@api-eu.pusher.com/v1/apps/1", "URL of hosted Pusher (api-eu.pusher.com) takes no path prefix"),
        ("pusher://k:s@api.pusherapp.com/v1/apps/1", "URL of hosted Pusher (api.pusherapp.com) takes no path prefix"),
    ],
)
def test_a_path_that_does_not_end_with_apps_and_an_id_is_refused(url: str, message: str) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_url(url)
    assert message in refused.value.message


@pytest.mark.parametrize("prefix", ["/pusher", "/v1:pusher+x/%7Eteam"])
async def test_the_library_publishes_and_queries_through_the_prefix(
    start_emulator: StartEmulator, make_relay: MakeRelay, prefix: str
) -> None:
    """Publishes and queries go to {prefix}/apps/1/…, signed over that path, the prefix byte for byte as the server
    has it (characters quote() would escape, an escape kept as written); a subscriber on the prefixed WebSocket path
    receives them. The URL without the prefix reaches nothing the server serves: NotFound."""
    emulator = await start_emulator(path_prefix=prefix)
    relay = make_relay(f"emulator://{KEY}:{SECRET}@127.0.0.1:{emulator.port}{prefix}/apps/1")
    async with connect(f"ws://127.0.0.1:{emulator.port}{prefix}/app/{KEY}?protocol=7") as ws:
        assert json.loads(await ws.recv())["event"] == "pusher:connection_established"
        await ws.send(json.dumps({"event": "pusher:subscribe", "data": {"channel": "orders"}}))
        assert json.loads(await ws.recv())["event"] == "pusher_internal:subscription_succeeded"

        assert await relay.publish("orders", "order-ready", {"id": 7}) == PublishResult(("orders",))
        frame = json.loads(await asyncio.wait_for(ws.recv(), 2))
        assert (frame["event"], frame["channel"], json.loads(frame["data"])) == ("order-ready", "orders", {"id": 7})
        assert await relay.channels() == {"orders": ChannelInfo("orders", occupied=True)}
        assert [(sent.method, sent.url.raw_path.partition(b"?")[0].decode()) for sent in relay.requests] == [
            ("POST", f"{prefix}/apps/1/events"),
            ("GET", f"{prefix}/apps/1/channels"),
        ]

        bare = make_relay(emulator_url(emulator))
        with pytest.raises(NotFound):
            await bare.publish("orders", "lost", {})


async def test_pusher_js_connects_with_the_page_settings_of_a_prefixed_emulator(start_emulator: StartEmulator) -> None:
    """``frontend_config`` (the gateway's /v1/client-config) gives pusher-js ``wsPath``, the prefix as the server has
    it: real pusher-js connects on {prefix}/app/{key} with exactly those settings and receives what the library
    publishes."""
    prefix = "/v1:pusher+x"  # characters a percent-encoding of the prefix would change
    emulator = await start_emulator(path_prefix=prefix)
    url = f"emulator://{KEY}:{SECRET}@127.0.0.1:{emulator.port}{prefix}/apps/1"
    with Relay.from_url(url) as client:
        settings = frontend_config(client)
        assert (settings["wsPath"], settings["wsPort"]) == (prefix, emulator.port)

        async def publish(_: dict[str, object]) -> str:
            await asyncio.to_thread(client.publish, "orders", "order-ready", {"id": 7})
            return "ok"

        env = {**app_env("127.0.0.1", emulator.port, TEST_APP), "RELAY_FRONTEND_CONFIG": json.dumps(settings)}
        run = await run_scenario(NODE_SCRIPT, env, on_step=publish)
    assert run.summary["checks"] == ["connected", "received"]
