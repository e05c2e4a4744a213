"""Conformance with the official Node clients: pusher-js 8, laravel-echo 2 and pusher-http-node 5 (checklist §8).

Each test starts the emulator in-process, runs one ES-module scenario from ``tests/node/`` with the real client
libraries (installed by ``npm ci --prefix tests/node``), and checks its exit status and JSON summary. Scenarios
print one JSON object per line on stdout: ``{"step": …}`` lines ask this driver to act inside the emulator (for
example close every connection with 4200) and are answered with one line on the script's stdin; the last line is the
summary ``{"scenario", "ok", "checks", …}``.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from relay.emulator.config import App, Webhook

NODE_DIR = Path(__file__).resolve().parent.parent / "node"
NODE = shutil.which("node")
APP = App(app_id="1", key="app-key", secret="app-secret", activity_timeout=120)
SCENARIO_TIMEOUT = 20.0

pytestmark = pytest.mark.skipif(NODE is None, reason="node is not on PATH: the Node client conformance tests need it")

StepHandler = Callable[[dict[str, Any]], Awaitable[str]]


@dataclass
class WebhookReceiver:
    """A bare asyncio HTTP/1.1 endpoint that answers 200 and records each request's headers and raw body."""

    requests: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""
    server: asyncio.Server | None = None
    writers: set[asyncio.StreamWriter] = field(default_factory=set)

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/pusher/webhooks"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.add(writer)
        try:
            while True:  # keep-alive: the emulator's HTTP client reuses connections
                head = await reader.readuntil(b"\r\n\r\n")
                request_line, *header_lines = head.decode("latin-1").split("\r\n")
                headers: dict[str, str] = {}
                for line in header_lines:
                    if ":" in line:
                        name, value = line.split(":", 1)
                        headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                self.requests.append({"request_line": request_line, "headers": headers, "body": body.decode()})
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.writers.discard(writer)
            writer.close()

    def event_names(self) -> list[str]:
        return [event["name"] for request in self.requests for event in json.loads(request["body"])["events"]]

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            for writer in list(self.writers):  # wait_closed() waits for open keep-alive connections (3.12+)
                writer.close()
            await self.server.wait_closed()


@pytest.fixture(scope="module")
def node_modules() -> Path:
    """The pinned client libraries; their absence is a setup error, not a reason to skip."""
    modules = NODE_DIR / "node_modules"
    for package in ("pusher-js", "laravel-echo", "pusher"):
        if not (modules / package / "package.json").is_file():
            pytest.fail(f"{modules / package} is missing: run `npm ci --prefix tests/node` first")
    return modules


@dataclass
class NodeRun:
    summary: dict[str, Any]
    steps: list[dict[str, Any]] = field(default_factory=list)
    stderr: str = ""


async def run_scenario(
    script: str,
    emulator: Any,
    *,
    on_step: StepHandler | None = None,
    limit_s: float = SCENARIO_TIMEOUT,
) -> NodeRun:
    """Run ``tests/node/<script>`` against ``emulator``; assert it exits 0 with an ``ok`` summary."""
    assert NODE is not None
    app: App = emulator.app
    env = {
        **os.environ,
        "RELAY_HOST": emulator.host,
        "RELAY_PORT": str(emulator.port),
        "RELAY_APP_ID": app.app_id,
        "RELAY_KEY": app.key,
        "RELAY_SECRET": app.secret,
    }
    process = await asyncio.create_subprocess_exec(
        NODE,
        str(NODE_DIR / script),
        cwd=NODE_DIR,
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdin is not None and process.stdout is not None and process.stderr is not None
    stderr_task = asyncio.create_task(process.stderr.read())
    lines: list[dict[str, Any]] = []
    steps: list[dict[str, Any]] = []
    other_output: list[str] = []

    async def drive() -> None:
        assert process.stdin is not None and process.stdout is not None
        async for raw in process.stdout:
            text = raw.decode(errors="replace").strip()
            if not text.startswith("{"):
                other_output.append(text)
                continue
            message = json.loads(text)
            if "step" in message:
                steps.append(message)
                assert on_step is not None, f"{script} asked for step {message['step']!r} but the test has no handler"
                answer = await on_step(message)
                process.stdin.write(answer.encode() + b"\n")
                await process.stdin.drain()
            else:
                lines.append(message)
        await process.wait()

    try:
        await asyncio.wait_for(drive(), limit_s)
    except TimeoutError:
        process.kill()
        await process.wait()
        stderr = (await stderr_task).decode(errors="replace")
        pytest.fail(f"{script} did not finish within {limit_s} s; output {lines + steps}; stderr:\n{stderr}")
    finally:
        if process.returncode is None:  # a step handler failed: don't leave the script waiting on its stdin
            process.kill()
            await process.wait()
    stderr = (await stderr_task).decode(errors="replace")
    assert lines, f"{script} printed no summary (exit {process.returncode}); stdout {other_output}; stderr:\n{stderr}"
    summary = lines[-1]
    assert process.returncode == 0 and summary.get("ok") is True, (
        f"{script} failed (exit {process.returncode}): {summary}\nstderr:\n{stderr}"
    )
    return NodeRun(summary=summary, steps=steps, stderr=stderr)


async def test_pusher_js_channels(node_modules: Path, emulator: Any) -> None:
    """§8 item 89 (with 21, 22, 24, 25, 27–31, 34, 42, 43, 65, 78): pusher-js public, private, presence and
    private-encrypted channels, members.me, unique-user counts, client events and subscription errors."""
    run = await run_scenario("pusher_js_channels.mjs", emulator)
    assert run.summary["checks"] == [
        "connect",
        "public",
        "private",
        "client-events",
        "presence",
        "presence-client-events",
        "private-encrypted",
        "subscription-error-auth-endpoint",
        "subscription-error-forbidden-channel",
        "subscription-error-bad-signature",
        "still-serving",
    ]


async def test_pusher_js_user(node_modules: Path, emulator: Any) -> None:
    """§8 items 89 and 91 (with 49, 53–55, 57): pusher-js signin, server-to-user events from pusher-http-node
    ``sendToUser``, watchlist online/offline, and ``terminateUserConnections`` closing with 4009."""
    run = await run_scenario("pusher_js_user.mjs", emulator)
    assert run.summary["checks"] == [
        "signin",
        "watchlist-online",
        "send-to-user",
        "watchlist-offline",
        "terminate-user-connections",
    ]
    assert run.summary["terminatedMessage"]


async def test_pusher_js_subscription_count(node_modules: Path, start_emulator: Any) -> None:
    """§8 items 89 and 38: with subscription_count on, pusher-js gets ``pusher:subscription_count`` on public and
    private channels as subscribers come and go (``channel.subscriptionCount``), and never on presence channels."""
    emulator = await start_emulator(app=replace(APP, subscription_count=True))
    run = await run_scenario("pusher_js_subscription_count.mjs", emulator)
    assert run.summary["checks"] == ["public", "private", "not-on-presence"]


async def test_pusher_js_reconnects_after_4200(node_modules: Path, emulator: Any) -> None:
    """§8 item 89 (with 9): the server closes every connection with ``pusher:error`` 4200; pusher-js reconnects at
    once with a new socket id, re-authorizes and resubscribes, and receives a later publish."""
    closed: list[int] = []

    async def close_all(step: dict[str, Any]) -> str:
        assert step["step"] == "close-all-4200"
        websockets = [c for c in emulator.node.connections if c.session is not None]
        closed.append(len(websockets))
        for connection in list(emulator.node.connections):
            connection.shutdown()
        return "ok"

    run = await run_scenario("pusher_js_reconnect.mjs", emulator, on_step=close_all)
    assert closed == [1]
    assert run.summary["checks"] == ["reconnected", "resubscribed", "receives-after-reconnect"]
    old, new = run.summary["socketIds"]
    assert old != new


async def test_laravel_echo(node_modules: Path, emulator: Any) -> None:
    """§8 item 90 (with 42, 66, 76): laravel-echo over pusher-js — ``listen('.x')`` and namespaced names,
    ``whisper``/``listenForWhisper``, ``join().here/joining/leaving``, ``.error()`` on a refused channel, and
    ``toOthers`` through the X-Socket-ID header that Echo's axios interceptor adds."""
    run = await run_scenario("laravel_echo.mjs", emulator)
    assert run.summary["checks"] == [
        "connect",
        "listen",
        "private-auth",
        "whisper",
        "presence",
        "error",
        "to-others",
    ]


async def test_pusher_http_node(node_modules: Path, emulator: Any) -> None:
    """§8 item 91 (with 24, 26, 49, 63, 65–69, 71–74): pusher-http-node ``trigger`` (several channels,
    ``socket_id``, ``info``), ``triggerBatch``, ``get`` on /channels, /channels/{name} and /channels/{presence}/users,
    error statuses, and the published ``authorizeChannel``/``authenticateUser``/webhook vectors."""
    run = await run_scenario("pusher_http_node.mjs", emulator)
    assert run.summary["checks"] == [
        "vectors",
        "trigger-multi",
        "trigger-socket-id",
        "trigger-info",
        "trigger-batch",
        "get-channels",
        "get-channel",
        "get-users",
        "errors",
    ]


async def test_pusher_http_node_webhook_is_valid(node_modules: Path, start_emulator: Any) -> None:
    """§8 items 91 and 81–82 (with 83, 84, 48): webhooks the emulator really sent, for presence traffic made by
    pusher-js, pass pusher-http-node ``webhook({headers, rawBody}).isValid()``; tampered copies fail."""
    receiver = WebhookReceiver()
    await receiver.start()
    try:
        app = replace(APP, webhooks=(Webhook(url=receiver.url),), webhook_batch_ms=10, webhook_delay=0.2)
        emulator = await start_emulator(app=app)

        async def collect(step: dict[str, Any]) -> str:
            assert step["step"] == "collect-webhooks"
            expected = set(step["expect"])
            deadline = asyncio.get_running_loop().time() + 5.0
            while not expected <= set(receiver.event_names()):
                assert asyncio.get_running_loop().time() < deadline, f"webhooks seen: {receiver.event_names()}"
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.1)  # let any trailing batch land too
            return json.dumps([{"headers": r["headers"], "body": r["body"]} for r in receiver.requests])

        run = await run_scenario("pusher_http_node_webhook.mjs", emulator, on_step=collect)
    finally:
        await receiver.close()
    assert run.summary["checks"] == ["valid", "events"]
    assert all(r["request_line"] == "POST /pusher/webhooks HTTP/1.1" for r in receiver.requests)
    names = run.summary["events"]
    assert names.count("channel_occupied") == 1
    assert names.count("channel_vacated") == 1
    assert sorted(n for n in names if n.startswith("member_")) == ["member_added"] * 2 + ["member_removed"] * 2
