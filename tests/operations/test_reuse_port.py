"""A restart with `reuse_port` (docs/emulator.md "Restarting on one host"): the replacement is started on the same
port while the old process still listens, and the old one is stopped only then, so the clients it closes with 4200
reconnect at once. The documented way before, a replacement started once the old one had stopped accepting,
left a moment with nothing listening: the first clients closed were refused and pusher-js waited about 15 s (three
laravel-echo pages were back only after 16.5 s)."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path
from typing import Any

import httpx
from websockets.exceptions import InvalidStatus

from tests.cli_support import assert_refused, run_relay, write
from tests.cluster.conftest import RedisServer
from tests.emulator_process import EmulatorProcess
from tests.node_scenarios import app_env, node_modules, run_scenario
from tests.operations.support import APP, CREDENTIALS, NODE_SCRIPTS, Client, publish, trusting, ws_client
from tests.operations.test_tls import documented_nginx

CLIENTS = 10
# Every client must be back this long after the old process got SIGTERM: a bound, not a benchmark (with
# --shutdown-spread 0.5 they are back within about a second; a refused reconnection costs pusher-js about 15 s).
RECONNECT_WITHIN_S = 3.0
SHARED = (*CREDENTIALS, "--reuse-port", "--shutdown-spread", "0.5")
PORT_IN_USE = (
    "Address already in use; another server is listening there (an emulator already running?): stop it, or pick "
    "another port with --port (0 picks a free one)"
)


async def wait_ready(process: EmulatorProcess, within: float = 10.0) -> None:
    """Poll /ready on ``process``'s port until it answers 200."""
    deadline = asyncio.get_running_loop().time() + within
    async with httpx.AsyncClient(timeout=2) as http:
        while (await http.get(f"http://127.0.0.1:{process.port}/ready")).status_code != 200:
            assert process.process.returncode is None, process.stderr[-10:]
            assert asyncio.get_running_loop().time() < deadline, f"/ready on {process.port} not 200 within {within} s"
            await asyncio.sleep(0.05)


async def test_pusher_js_clients_move_to_a_replacement_started_beside_the_old_process() -> None:
    """As documented: start the new process (same port, --reuse-port), wait for its banner, SIGTERM the old one.
    Every client is closed with 4200 and is subscribed again on the new process within seconds, and a publish made
    once the old process has exited reaches all of them."""
    node_modules("pusher-js", "pusher")
    old = await EmulatorProcess.start(*SHARED)
    processes = [old]
    try:

        async def driver(step: dict[str, Any]) -> str:
            if step["step"] == "restart":
                # Ready once it prints its banner (its socket listens only once it has started): /ready on the port
                # says nothing of it, the old process answers it too.
                processes.append(await EmulatorProcess.start(*SHARED, port=old.port))
                old.process.send_signal(signal.SIGTERM)
                return "stopped"
            assert step["step"] == "publish", step
            assert await old.stop() == 0  # exited: the publish can only reach the new process
            await publish(f"http://127.0.0.1:{old.port}", APP, "private-orders", "after-restart", '{"n": 2}')
            return "published"

        run = await run_scenario(
            NODE_SCRIPTS / "reuse_port_restart.mjs",
            {
                **app_env("127.0.0.1", old.port, APP),
                "CLIENTS": str(CLIENTS),
                "RECONNECT_WITHIN_MS": str(int(RECONNECT_WITHIN_S * 1000)),
            },
            on_step=driver,
            limit_s=40,
        )
        new = processes[1]
        assert new.process.returncode is None, new.stderr[-10:]
    finally:
        for process in processes:
            await process.kill()
    assert run.summary["closeCodes"] == [4200] * CLIENTS, run.summary
    assert run.summary["backAfterMs"] < RECONNECT_WITHIN_S * 1000, run.summary
    assert run.summary["received"] == [{"n": 2}] * CLIENTS, run.summary
    closed = next(line for line in old.stderr if "stopped accepting connections" in line)
    assert f"connections={CLIENTS}" in closed, closed


async def test_behind_the_documented_nginx_reconnections_reach_the_replacement_not_the_old_process(
    tmp_path: Path,
) -> None:
    """docs/nginx.conf keeps idle connections to the node (keepalive) for the API requests it proxies. The old process
    kept them open through its drain, so nginx carried the clients' reconnections over them to it, and it answered
    503 (2 of 20 pusher-js clients were away 10 s in an ops audit). It closes them with its listener now: every client
    closed with 4200 reconnects through nginx at once, to the replacement."""
    old = await EmulatorProcess.start(*SHARED)
    processes = [old]
    try:
        async with documented_nginx([old.port], tmp_path, connections_per_address=100) as (port, cert):
            base, context = f"https://127.0.0.1:{port}", trusting(cert)
            url = f"wss://127.0.0.1:{port}/app/{APP.key}?protocol=7"
            clients = [await ws_client(url, ssl=context) for _ in range(CLIENTS)]
            # Concurrent publishes through nginx leave as many idle connections to the old process in its pool.
            answers = await asyncio.gather(*(publish(base, APP, "orders", "e", "{}", verify=context) for _ in range(8)))
            assert [answer.status_code for answer in answers] == [200] * 8
            new = await EmulatorProcess.start(*SHARED, port=old.port)
            processes.append(new)
            old.process.send_signal(signal.SIGTERM)

            async def reconnect(client: Client) -> int:
                await client.ws.wait_closed()
                assert client.ws.close_code == 4200
                try:
                    again = await ws_client(url, ssl=context)
                except InvalidStatus as refused:
                    return refused.response.status_code
                await again.close()
                return 101

            assert await asyncio.gather(*(reconnect(client) for client in clients)) == [101] * CLIENTS
            assert await old.stop() == 0
            assert new.process.returncode is None, new.stderr[-10:]
    finally:
        for process in processes:
            await process.kill()


async def test_reuse_port_in_the_config_file_shares_the_port_and_is_checked(tmp_path: Path) -> None:
    shared = write(tmp_path, "[server]\nreuse_port = true\nshutdown_spread = 0.5\n")
    old = await EmulatorProcess.start(*CREDENTIALS, "--config", str(shared))
    try:
        new = await EmulatorProcess.start(*CREDENTIALS, "--config", str(shared), port=old.port)
        try:
            assert old.process.returncode is None
            assert await old.stop() == 0
            await wait_ready(new)  # the port is served by the new process alone now
        finally:
            await new.kill()
    finally:
        await old.kill()
    wrong = write(tmp_path, '[server]\nreuse_port = "yes"\n', name="wrong.toml")
    refused = await run_relay("emulator", "--port", "0", "--config", str(wrong))
    assert_refused(refused, "[server]: reuse_port must be true or false, got 'yes'")


async def test_without_reuse_port_on_both_the_second_emulator_is_refused_as_before() -> None:
    """A second emulator started on the port by mistake still gets the port-in-use hint unless both share it; one
    with --reuse-port beside one without is told why the port is not shared."""
    shared = await EmulatorProcess.start(*CREDENTIALS, "--reuse-port")
    plain = await EmulatorProcess.start(*CREDENTIALS)
    try:
        refused = await run_relay("emulator", "--port", str(shared.port))
        assert_refused(refused, f"cannot listen on 127.0.0.1:{shared.port}: {PORT_IN_USE}")
        refused = await run_relay("emulator", "--port", str(plain.port), "--reuse-port")
        assert_refused(
            refused,
            f"cannot listen on 127.0.0.1:{plain.port}: Address already in use; the server listening there does not "
            "share its port (an emulator started without --reuse-port?): stop it, or pick another port with --port",
        )
    finally:
        await shared.kill()
        await plain.kill()


async def test_workers_share_a_port_in_use_only_with_reuse_port(redis: RedisServer) -> None:
    """The workers bind with SO_REUSEPORT to share the port among themselves: a --workers emulator started on a port
    another emulator with SO_REUSEPORT listened on shared it silently, where a single process is refused."""
    shared = await EmulatorProcess.start(*CREDENTIALS, "--reuse-port")
    try:
        workers = ("emulator", "--port", str(shared.port), "--workers", "2", "--redis-url", redis.url)
        assert_refused(await run_relay(*workers), f"cannot listen on 127.0.0.1:{shared.port}: {PORT_IN_USE}")
        assert (await run_relay(*workers, "--reuse-port")).returncode is None  # served, then stopped by run_relay
    finally:
        await shared.kill()


async def test_reuse_port_where_the_platform_lacks_so_reuseport_is_refused(tmp_path: Path) -> None:
    """Windows has no SO_REUSEPORT: the setting is refused, naming where it was set, rather than failing as an
    AttributeError (or being ignored, with the replacement refused)."""
    shadows = tmp_path / "no-reuseport"
    shadows.mkdir()
    (shadows / "sitecustomize.py").write_text("import socket\n\ndel socket.SO_REUSEPORT\n")
    without = {"PYTHONPATH": str(shadows)}
    message = f"needs SO_REUSEPORT, which this platform ({sys.platform}) does not have"
    assert_refused(await run_relay("emulator", "--port", "0", "--reuse-port", env=without), f"--reuse-port {message}")
    config = write(tmp_path, "[server]\nreuse_port = true\n")
    refused = await run_relay("emulator", "--port", "0", "--config", str(config), env=without)
    assert_refused(refused, f"reuse_port in {config} {message}")
