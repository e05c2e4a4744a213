"""TLS (issue 4): wss:// and https:// straight from `relay emulator --tls-cert/--tls-key`, and the documented
nginx reverse proxy (docs/nginx.conf) run with a real nginx terminating TLS, pusher-js connecting with forceTLS and
ably-python with its REST and realtime clients."""

from __future__ import annotations

import asyncio
import logging
import re
import shutil
import ssl
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from ably import AblyRealtime, AblyRest  # type: ignore[import-untyped]
from websockets.exceptions import InvalidMessage, InvalidStatus

from relay import AsyncRelay
from relay.emulator.server import TLS_ON_PLAIN_PORT
from relay.emulator.shutdown import graceful_shutdown
from relay.errors import TransportError
from tests.conftest import RunningEmulator, StartEmulator, free_port
from tests.emulator_process import EmulatorProcess
from tests.node_scenarios import app_env, node_modules, run_scenario
from tests.operations.support import (
    APP,
    NODE_SCRIPTS,
    ROOT,
    api,
    make_certificate,
    publish,
    trusting,
    ws_client,
)

NGINX_DOC = ROOT / "docs" / "nginx.conf"
NGINX = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")
CONNECTIONS_PER_ADDRESS = 3  # the documented 100, lowered to be reached
# The documented upstream server, with its parameters: the test runs one such line per emulator node.
DOCUMENTED_NODE = re.compile(r"^(?P<indent> *)server 127\.0\.0\.1:6001\b(?P<parameters>[^;]*);", re.MULTILINE)


async def test_emulator_serves_wss_and_https_with_its_own_certificate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = make_certificate(tmp_path)
    relay = await EmulatorProcess.start(
        "--app-id", APP.app_id, "--key", APP.key, "--secret", APP.secret,
        "--tls-cert", str(cert), "--tls-key", str(key),
    )  # fmt: skip
    try:
        banner = relay.banner
        assert f"listening on https://127.0.0.1:{relay.port} (WebSocket wss://127.0.0.1:{relay.port}/app/" in banner
        assert f"wssPort: {relay.port}, forceTLS: true" in banner
        context = trusting(cert)
        client = await ws_client(f"wss://127.0.0.1:{relay.port}/app/{APP.key}?protocol=7", ssl=context)
        await client.subscribe("private-orders", APP)
        base = f"https://127.0.0.1:{relay.port}"
        await publish(base, APP, "private-orders", "created", '{"id": 1}', verify=context)
        assert (await client.expect("created"))["data"] == '{"id": 1}'
        channels = await api(base, APP, "GET", "/apps/1/channels", verify=context)
        assert channels.json() == {"channels": {"private-orders": {}}}
        async with httpx.AsyncClient(verify=context) as http:
            assert (await http.get(f"{base}/health")).json() == {"status": "ok"}
        # The certificate is checked: a client that does not trust it is refused, and plain ws:// is not served.
        with pytest.raises(ssl.SSLCertVerificationError):
            await ws_client(f"wss://127.0.0.1:{relay.port}/app/{APP.key}")
        with pytest.raises(InvalidMessage, match="did not receive a valid HTTP response"):  # the server speaks TLS only
            await ws_client(f"ws://127.0.0.1:{relay.port}/app/{APP.key}")
        # The library with the banner's RELAY_URL: refused until told to trust the certificate (docs/emulator.md#tls).
        relay_url = f"emulator://{APP.key}:{APP.secret}@127.0.0.1:{relay.port}/apps/{APP.app_id}?tls=true"
        assert f"RELAY_URL:   {relay_url}" in banner
        async with AsyncRelay.from_url(relay_url) as library:
            with pytest.raises(TransportError, match="the server's TLS certificate did not verify"):
                await library.publish("private-orders", "refused", {})
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        async with AsyncRelay.from_url(relay_url) as library:
            await library.publish("private-orders", "trusted", {"id": 2})
        assert (await client.expect("trusted"))["data"] == '{"id":2}'
        await client.close()
        assert await relay.stop() == 0
    finally:
        await relay.kill()


async def test_a_tls_client_on_the_plain_port_is_named_in_the_log(
    emulator: RunningEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    """pusher-js with forceTLS against a plain emulator (Laravel's echo.js sets it when its scheme variable is
    missing) saw only "unavailable", and the emulator logged nothing. The handshake fails as before; the log says
    why and what to change (once a second at most, as every refusal), and everyone else is served."""
    caplog.set_level(logging.INFO, logger="relay.emulator")
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with pytest.raises((ssl.SSLError, ConnectionError)):
        await asyncio.wait_for(asyncio.open_connection("127.0.0.1", emulator.port, ssl=context), 10)
    logged = [record for record in caplog.records if record.getMessage() == "connection refused"]
    assert [(record.code, record.reason) for record in logged] == [(400, TLS_ON_PLAIN_PORT)]  # type: ignore[attr-defined]
    async with httpx.AsyncClient() as http:
        assert (await http.get(f"http://127.0.0.1:{emulator.port}/health")).status_code == 200


def test_tls_flags_go_together(tmp_path: Path) -> None:
    from relay.cli import main

    assert main(["emulator", "--tls-cert", str(tmp_path / "cert.pem")]) == 2
    assert main(["emulator", "--tls-cert", str(tmp_path / "c"), "--tls-key", str(tmp_path / "k")]) == 2


def nginx_site(
    emulator_ports: Sequence[int], listen_port: int, cert: Path, key: Path, connections_per_address: int
) -> str:
    """docs/nginx.conf with the test's ports (an upstream server per emulator node, as the file says to list them,
    each with the documented server's parameters), certificate and WebSocket connections per address; each
    documented value must be there exactly once."""
    text = NGINX_DOC.read_text()
    servers = DOCUMENTED_NODE.findall(text)
    assert len(servers) == 1, f"docs/nginx.conf has {len(servers)} `server 127.0.0.1:6001…;` lines: update this test"

    def one_per_node(documented: re.Match[str]) -> str:
        indent, parameters = documented["indent"], documented["parameters"]
        return "\n".join(f"{indent}server 127.0.0.1:{port}{parameters};" for port in emulator_ports)

    text = DOCUMENTED_NODE.sub(one_per_node, text)
    for documented, actual in (
        ("listen 443 ssl;", f"listen 127.0.0.1:{listen_port} ssl;"),
        ("/etc/ssl/certs/relay.example.com.pem", str(cert)),
        ("/etc/ssl/private/relay.example.com.key", str(key)),
        ("limit_conn relay_per_address 100;", f"limit_conn relay_per_address {connections_per_address};"),
    ):
        assert text.count(documented) == 1, f"docs/nginx.conf no longer has {documented!r} once: update this test"
        text = text.replace(documented, actual)
    return text


@asynccontextmanager
async def documented_nginx(
    emulator_ports: Sequence[int], tmp_path: Path, *, connections_per_address: int = CONNECTIONS_PER_ADDRESS
) -> AsyncIterator[tuple[int, Path]]:
    """docs/nginx.conf run by a real nginx in front of the emulator nodes on ``emulator_ports``: the port it serves
    https:// and wss:// on at 127.0.0.1 and the certificate it presents, once it answers."""
    nginx = NGINX
    if nginx is None:
        pytest.fail("nginx is not installed: this test runs docs/nginx.conf with it (apt-get install nginx-light)")
    cert, key = make_certificate(tmp_path)
    port = free_port()
    prefix = tmp_path / "nginx"
    for directory in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi", "logs"):
        (prefix / directory).mkdir(parents=True)
    (prefix / "relay.conf").write_text(nginx_site(emulator_ports, port, cert, key, connections_per_address))
    (prefix / "nginx.conf").write_text(
        f"""daemon off;
master_process off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log stderr warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    include {prefix}/relay.conf;
}}
"""
    )
    process = await asyncio.create_subprocess_exec(
        nginx, "-e", "stderr", "-p", str(prefix), "-c", str(prefix / "nginx.conf"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        async with httpx.AsyncClient(verify=trusting(cert)) as http:
            for _ in range(100):
                try:
                    await http.get(f"https://127.0.0.1:{port}/health")
                    break
                except httpx.ConnectError:
                    if process.returncode is not None:
                        _, err = await process.communicate()
                        pytest.fail(f"nginx exited {process.returncode}: {err.decode()}")
                    await asyncio.sleep(0.05)
            else:
                pytest.fail("nginx did not start listening within 5 s")
        yield port, cert
    finally:
        if process.returncode is None:
            process.terminate()
        await asyncio.wait_for(process.wait(), 10)


async def test_documented_nginx_config_terminates_tls_for_pusher_js(
    start_emulator: StartEmulator, tmp_path: Path
) -> None:
    node_modules("pusher-js")
    emulator = await start_emulator(app=APP)
    async with documented_nginx([emulator.port], tmp_path) as (port, cert):
        base = f"https://127.0.0.1:{port}"
        async with httpx.AsyncClient(verify=trusting(cert)) as http:
            assert (await http.get(f"{base}/ready")).json() == {"status": "ready"}
            assert (await http.get(f"{base}/console")).status_code == 404  # not exposed by the documented config
        run = await run_scenario(
            NODE_SCRIPTS / "nginx_pusher_js.mjs",
            {**app_env("127.0.0.1", port, APP), "NODE_EXTRA_CA_CERTS": str(cert)},
            limit_s=30,
        )
    assert run.summary["transport"] == "wss" and run.summary["states"][-1] == "connected"
    # The emulator saw the connection and the publishes come through the proxy.
    meter = emulator.node.states["1"].meter
    assert meter.connections_opened == 1 and meter.publishes == 3


async def test_documented_nginx_config_serves_ably_clients(
    start_emulator: StartEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ably-python through nginx: realtime on / (a WebSocket upgrade), and REST's /keys/…/requestToken, /time,
    /channels/…/messages, /messages and /channels, which the documented config answered with 404."""
    emulator = await start_emulator(app=APP)
    async with documented_nginx([emulator.port], tmp_path) as (port, cert):
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # what ably-python's httpx and websockets then trust
        key = f"{APP.app_id}.{APP.key}:{APP.secret}"  # the app's Ably key (docs/ably.md)
        rest = AblyRest(key=key, endpoint="127.0.0.1", tls_port=port, use_token_auth=True)  # via requestToken
        realtime = AblyRealtime(key=key, endpoint=f"127.0.0.1:{port}")  # its port goes in endpoint (ably-python#567)
        try:
            assert abs(await rest.time() - emulator.node.ably.wall_ms()) < 5_000
            received: asyncio.Queue[Any] = asyncio.Queue()
            await realtime.channels.get("orders").subscribe(received.put_nowait)
            await rest.channels.get("orders").publish("created", {"id": 7})
            message = await asyncio.wait_for(received.get(), 5)
            assert (message.name, message.data) == ("created", {"id": 7})
            body = {"channels": ["orders"], "messages": [{"name": "batched", "data": "x"}]}
            assert (await rest.request("POST", "/messages", "5", body=body)).status_code == 201
            assert (await asyncio.wait_for(received.get(), 5)).name == "batched"
            listed = await rest.request("GET", "/channels", "5")
            assert listed.status_code == 200 and listed.items == ["orders"]
        finally:
            await realtime.close()
            await rest.close()
    assert emulator.node.states["1"].meter.connections_opened == 1  # the realtime connection, through nginx


async def test_documented_nginx_config_caps_websocket_connections_per_client_address(
    start_emulator: StartEmulator, tmp_path: Path
) -> None:
    """docs/nginx.conf's limit_conn: one address past its WebSocket connections gets 429 from nginx, the emulator
    never sees it, the open connections are served, and a slot freed is taken again."""
    emulator = await start_emulator(app=APP)
    async with documented_nginx([emulator.port], tmp_path) as (port, cert):
        context, url = trusting(cert), f"wss://127.0.0.1:{port}/app/{APP.key}?protocol=7"
        clients = [await ws_client(url, ssl=context) for _ in range(CONNECTIONS_PER_ADDRESS)]
        await clients[0].subscribe("orders", APP)
        with pytest.raises(InvalidStatus) as refused:
            await ws_client(url, ssl=context)
        assert refused.value.response.status_code == 429
        assert emulator.node.states["1"].meter.connections_opened == CONNECTIONS_PER_ADDRESS
        await publish(emulator.http_url, APP, "orders", "created", "still served")
        assert (await clients[0].expect("created"))["data"] == "still served"

        await clients[-1].close()
        deadline = asyncio.get_running_loop().time() + 5
        while True:  # nginx frees the slot once it has seen the close
            try:
                clients[-1] = await ws_client(url, ssl=context)
                break
            except InvalidStatus:
                assert asyncio.get_running_loop().time() < deadline, "the freed slot was not given back"
                await asyncio.sleep(0.05)
        for client in clients:
            await client.close()


async def test_documented_nginx_config_sends_new_connections_past_a_draining_node(
    start_emulator: StartEmulator, tmp_path: Path
) -> None:
    """During its shutdown_delay a node answers new WebSocket handshakes 503; open-source nginx does not poll /ready,
    so without proxy_next_upstream it handed that 503 to every other new client (pusher-js then waited ~15 s), while
    the other node was healthy. Now nginx tries the next node: every client connects, all of them to the healthy
    one."""
    draining = await start_emulator(app=APP, shutdown_delay=30.0)
    healthy = await start_emulator(app=APP)
    hurry = asyncio.Event()
    drain = asyncio.create_task(graceful_shutdown(draining.node, None, spread=0.1, webhook_grace=0.1, hurry=hurry))
    try:
        async with documented_nginx([draining.port, healthy.port], tmp_path) as (port, cert):
            context, url = trusting(cert), f"wss://127.0.0.1:{port}/app/{APP.key}?protocol=7"
            clients = [await ws_client(url, ssl=context) for _ in range(CONNECTIONS_PER_ADDRESS)]
            await clients[0].subscribe("orders", APP)
            await publish(healthy.http_url, APP, "orders", "created", "served")
            assert (await clients[0].expect("created"))["data"] == "served"
            assert healthy.node.states["1"].meter.connections_opened == CONNECTIONS_PER_ADDRESS
            assert draining.node.states["1"].meter.connections_opened == 0
            for client in clients:
                await client.close()
    finally:
        hurry.set()
        await drain


ROLLING_CLIENTS = 10
# Every client must be back this long after each node's replacement is ready: a bound, not a benchmark (they are back
# by then; with nginx's default max_fails, 18 of 20 were still away 35 s later in the ops audit).
RECONNECT_WITHIN_S = 5.0


async def wait_ready(node: EmulatorProcess, within: float = 10.0) -> None:
    """Poll the node's own /ready (not through nginx) as docs/deploy.md's rolling restart does."""
    deadline = asyncio.get_running_loop().time() + within
    async with httpx.AsyncClient() as http:
        while (await http.get(f"http://127.0.0.1:{node.port}/ready")).status_code != 200:
            assert asyncio.get_running_loop().time() < deadline, f"node on {node.port} not ready within {within} s"
            await asyncio.sleep(0.05)


async def test_documented_nginx_config_keeps_pusher_js_connected_through_a_rolling_restart(tmp_path: Path) -> None:
    """docs/deploy.md's rolling restart: two nodes behind docs/nginx.conf, one restarted (SIGTERM, its replacement
    started on the same port) and waited for on /ready, then the other. With nginx's default max_fails=1 the first
    node's refusals and 503s while it drained marked it failed for fail_timeout, and a WebSocket sent to it after that
    counts as a success only when it ends, so it stayed failed: when the second node drained nginx had no live
    upstream (502) and pusher-js waited ~15 s between tries. With max_fails=0 every client is back within seconds of
    each restart, the second time all of them on the first node."""
    node_modules("pusher-js")
    node_flags = (
        "--app-id", APP.app_id, "--key", APP.key, "--secret", APP.secret,
        "--shutdown-delay", "0.5", "--shutdown-spread", "0.5",
    )  # fmt: skip
    nodes: list[EmulatorProcess] = []
    try:
        for _ in range(2):
            nodes.append(await EmulatorProcess.start(*node_flags))
        ports = [node.port for node in nodes]
        async with documented_nginx(ports, tmp_path, connections_per_address=100) as (port, cert):  # as documented

            async def restart(step: dict[str, Any]) -> str:
                index = step["node"]
                assert await nodes[index].stop() == 0
                nodes[index] = await EmulatorProcess.start(*node_flags, port=ports[index])
                await wait_ready(nodes[index])
                return "ready"

            run = await run_scenario(
                NODE_SCRIPTS / "nginx_rolling_restart.mjs",
                {
                    **app_env("127.0.0.1", port, APP),
                    "NODE_EXTRA_CA_CERTS": str(cert),
                    "CLIENTS": str(ROLLING_CLIENTS),
                    "RECONNECT_WITHIN_MS": str(int(RECONNECT_WITHIN_S * 1000)),
                },
                on_step=restart,
                limit_s=40,
            )
    finally:
        for node in nodes:
            await node.kill()
    first, second = run.summary["reconnected"]
    assert 0 < first < ROLLING_CLIENTS, run.summary  # round robin put some clients on each node
    assert second == ROLLING_CLIENTS, run.summary  # all of them had moved to the second node
