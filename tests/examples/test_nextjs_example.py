"""examples/nextjs (issue 12): ``next build``, then ``next start`` + ``relay serve`` + the emulator + headless Chromium.

The example's realtime module, client component, server helper and route handler are the files of the Next.js
guide in docs/gateway.md, byte for byte (checked here), so the guide's code is built by Next itself and run in a
browser. npm packages come from examples/nextjs/package-lock.json (``npm ci --prefix examples/nextjs``).
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import RunningEmulator, free_port
from tests.examples.conftest import needs_chromium, screenshot
from tests.gateway.conftest import JWT_SECRET, ROOT, TOKEN, emulator_url, hs_jwt
from tests.gateway.test_gateway_nextjs_guide import EXPECTED_FILES, extract_guide
from tests.node_scenarios import NODE

playwright_api = pytest.importorskip("playwright.async_api", reason="playwright is a test dependency")
expect = playwright_api.expect
EXAMPLE = ROOT / "examples" / "nextjs"
NEXT_BIN = EXAMPLE / "node_modules" / "next" / "dist" / "bin" / "next"
BUILD_LIMIT_S = 240
# The example's demo JWTs live this long (its page's ?ttl=) and the page renews them at half of it: short, so the test
# sees the first ones expire.
DEMO_JWT_TTL_S = 6


def bearer(user: str) -> dict[str, str]:
    """The header the example's page sends to its route handler: the user's JWT, as lib/session.ts mints it."""
    return {"authorization": f"Bearer {hs_jwt(user)}"}


class Process:
    """A child process whose output lines are collected (and searched) as they come."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[str] = []
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls, *args: str, env: dict[str, str], cwd: Path = ROOT) -> Process:
        process = await asyncio.create_subprocess_exec(
            *args, cwd=cwd, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        return cls(process)

    async def _read(self) -> None:
        assert self.process.stdout is not None
        while line := await self.process.stdout.readline():
            self.lines.append(line.decode(errors="replace").rstrip())

    async def wait_for(self, pattern: str, within: float) -> re.Match[str]:
        deadline = time.monotonic() + within
        while True:
            for line in self.lines:
                if match := re.search(pattern, line):
                    return match
            if self.process.returncode is not None or time.monotonic() > deadline:
                output = "\n".join(self.lines[-40:])
                raise AssertionError(f"no /{pattern}/ (exit {self.process.returncode}); output:\n{output}")
            await asyncio.sleep(0.05)

    async def finish(self, within: float) -> int:
        code = await asyncio.wait_for(self.process.wait(), within)
        await self._reader
        return code

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), 10)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        await self._reader


async def resubscribed(gateway_url: str, channels: list[str], dropped: list[object], emulator: RunningEmulator) -> None:
    """Wait until the ``dropped`` connections are gone and each channel is subscribed again (by a new connection)."""
    async with httpx.AsyncClient(base_url=gateway_url, headers={"authorization": f"Bearer {TOKEN}"}) as api:
        async with asyncio.timeout(15):
            while True:
                if not any(connection in emulator.node.connections for connection in dropped):
                    answers = [await api.get(f"/v1/channels/{channel}") for channel in channels]
                    if all(answer.json()["occupied"] for answer in answers):
                        return
                await asyncio.sleep(0.1)


@pytest.fixture
def next_installed() -> Path:
    """The example's npm packages; their absence is a setup error, not a reason to skip."""
    if NODE is None:
        pytest.skip("node is not on PATH")
    if not NEXT_BIN.is_file():
        pytest.fail(f"{NEXT_BIN} is missing: run `npm ci --prefix examples/nextjs` first")
    return NEXT_BIN


@pytest.fixture
async def processes() -> AsyncIterator[list[Process]]:
    running: list[Process] = []
    yield running
    for process in reversed(running):
        await process.stop()


def test_the_example_is_the_guide(tmp_path: Path) -> None:
    """The example's copies of the guide's snippets are identical to docs/gateway.md's ``// file:`` blocks."""
    assert extract_guide(tmp_path) == EXPECTED_FILES
    for relative in sorted(EXPECTED_FILES):
        assert (EXAMPLE / relative).read_text() == (tmp_path / relative).read_text(), (
            f"examples/nextjs/{relative} differs from its block in docs/gateway.md"
        )


@needs_chromium()
@pytest.mark.long
async def test_next_build_and_start_publish_through_relay_serve(
    next_installed: Path, emulator: RunningEmulator, processes: list[Process], browser: object
) -> None:
    """``next build`` (type-checked, telemetry off) succeeds; with ``next start``, ``relay serve`` (a real process)
    and the emulator, two users' pages in Chromium connect ("Live") and log no error, alice's "Mark ready" calls the
    route handler with her JWT, which publishes through the gateway's /v1/publish to private-user-alice; only alice's
    page shows the order, bob's private channel stays his own, and the route handler publishes to its caller's
    channel only (no JWT: 401). With JWTs that expire in seconds, after the ones the pages started with expired,
    the emulator drops every connection: the pages reconnect and re-authorize with the renewed JWT, and events still
    arrive (the JWT was a fixed header, refused with 401 after a reconnect). A screenshot goes to
    tests/artifacts/nextjs_example.png."""
    base_env = {name: value for name, value in os.environ.items() if not name.startswith(("RELAY_", "NEXT_PUBLIC_"))}
    next_port = free_port()
    site = f"http://127.0.0.1:{next_port}"
    gateway = await Process.start(
        sys.executable,
        "-m",
        "relay.cli",
        "serve",
        "--port",
        "0",
        env={
            **base_env,
            "RELAY_URL": emulator_url(emulator),
            "RELAY_API_TOKEN": TOKEN,
            "RELAY_JWT_SECRET": JWT_SECRET,
            "RELAY_CORS_ORIGINS": site,
        },
    )
    processes.append(gateway)
    gateway_url = (await gateway.wait_for(r"Uvicorn running on (http://127\.0\.0\.1:\d+)", 20)).group(1)

    next_env = {
        **base_env,
        "NEXT_TELEMETRY_DISABLED": "1",
        "NEXT_PUBLIC_RELAY_GATEWAY_URL": gateway_url,  # inlined into the browser bundle at build time
        "RELAY_GATEWAY_URL": gateway_url,
        "RELAY_API_TOKEN": TOKEN,
        "RELAY_JWT_SECRET": JWT_SECRET,
    }
    assert NODE is not None
    started = time.monotonic()
    build = await Process.start(NODE, str(next_installed), "build", env=next_env, cwd=EXAMPLE)
    code = await build.finish(BUILD_LIMIT_S)
    output = "\n".join(build.lines)
    assert code == 0, output
    assert "Compiled successfully" in output and "Finished TypeScript" in output, output
    assert re.search(r"ƒ /api/orders/\[orderId\]/ready", output), output
    print(f"next build took {time.monotonic() - started:.1f} s")

    server = await Process.start(
        NODE, str(next_installed), "start", "-H", "127.0.0.1", "-p", str(next_port), env=next_env, cwd=EXAMPLE
    )
    processes.append(server)
    await server.wait_for(r"Ready in", 30)

    pages = {}
    problems: list[str] = []
    logged: list[str] = []  # console errors: a missing /favicon.ico was one
    for user in ("alice", "bob"):
        context = await browser.new_context(viewport={"width": 640, "height": 420})  # type: ignore[attr-defined]
        page = await context.new_page()
        page.on("pageerror", lambda error: problems.append(str(error)))
        page.on("console", lambda message: logged.append(message.text) if message.type == "error" else None)
        await page.goto(f"{site}/?user={user}&ttl={DEMO_JWT_TTL_S}")
        await expect(page.locator("[role=status]")).to_have_text("Live", timeout=10_000)
        pages[user] = page
    first_jwts_expire = time.time() + DEMO_JWT_TTL_S  # the pages' first JWTs were minted before now
    alice, bob = pages["alice"], pages["bob"]
    await expect(alice.get_by_role("heading")).to_have_text("Orders of Alice")

    await alice.get_by_role("button", name="Mark ready").click()
    await expect(alice.get_by_test_id("publish-result")).to_have_text("published: order 42")
    await expect(alice.locator("li")).to_have_text(["Order 42 is ready"])
    await bob.locator("input[name=orderId]").fill("7")
    await bob.get_by_role("button", name="Mark ready").click()
    await expect(bob.locator("li")).to_have_text(["Order 7 is ready"])
    await expect(alice.locator("li")).to_have_text(["Order 42 is ready"])
    assert await alice.locator("main [role=alert]").count() == 0  # the component's errors (Next has its own alert)

    # The route handler publishes to its caller's channel, from the session's JWT: a request naming alice in its body
    # reached alice's page from anyone (bob's page, or any HTTP client); without a JWT it is refused, with bob's it
    # reaches bob. Alice's own JWT reaches her page from another client too.
    async with httpx.AsyncClient(base_url=site) as http:
        answer = await http.post("/api/orders/9/ready", json={"customerId": "alice"})
        assert answer.status_code == 401
        assert answer.json() == {"error": "sign in first (Authorization: Bearer <your JWT>)"}
        answer = await http.post("/api/orders/8/ready", headers=bearer("bob"), json={"customerId": "alice"})
        assert answer.json() == {"ok": True, "orderId": "8"}
        await expect(bob.locator("li")).to_have_text(["Order 7 is ready", "Order 8 is ready"])
        answer = await http.post("/api/orders/9/ready", headers=bearer("alice"))
        assert answer.json() == {"ok": True, "orderId": "9"}
        # A malformed X-Socket-ID is the gateway's 400, passed on with its reason (it was a 502, "the gateway failed")
        answer = await http.post("/api/orders/10/ready", headers={**bearer("alice"), "x-socket-id": "not-a-socket-id"})
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"].startswith("realtime: invalid socket_id 'not-a-socket-id'")
    await expect(alice.locator("li")).to_have_text(["Order 42 is ready", "Order 9 is ready"])
    assert logged == []
    # An empty order id is Next's 404 page, not JSON: the button says so (it was an unhandled rejection).
    await bob.locator("input[name=orderId]").fill("")
    await bob.get_by_role("button", name="Mark ready").click()
    await expect(bob.get_by_test_id("publish-result")).to_have_text("HTTP 404: Not Found")

    # Past the JWTs the pages were rendered with, every connection drops: the re-authorization sends a renewed one.
    await asyncio.sleep(max(0.0, first_jwts_expire + 1.5 - time.time()))
    dropped = list(emulator.node.connections)
    for connection in dropped:
        connection.shutdown()
    await resubscribed(gateway_url, [f"private-user-{user}" for user in pages], dropped, emulator)
    for user, page in pages.items():
        async with httpx.AsyncClient(base_url=site) as http:
            answer = await http.post("/api/orders/77/ready", headers=bearer(user))
            assert answer.json() == {"ok": True, "orderId": "77"}
        await expect(page.locator("li").last).to_have_text("Order 77 is ready")
        assert await page.locator("main [role=alert]").count() == 0
    assert problems == []
    await screenshot(alice, "nextjs_example")

    # The gateway down: the route handler answers a JSON 502 naming it (fetch's rejection was a 500 without a body,
    # which the button could not read, so nothing was shown)
    await gateway.stop()
    await alice.get_by_role("button", name="Mark ready").click()
    await expect(alice.get_by_test_id("publish-result")).to_contain_text(
        f"HTTP 502: realtime: could not reach the gateway at {gateway_url}"
    )
    # and a page opened then names the gateway it cannot reach (it said only "TypeError: Failed to fetch")
    await alice.reload()
    await expect(alice.locator("main [role=alert]")).to_contain_text(
        f"cannot reach the gateway at {gateway_url}/v1/client-config: is relay serve running there"
    )
    # A gateway for Ably at that address: the page says pusher-js cannot use it (it said "You must pass your app
    # key when you instantiate Pusher", and stayed "Connecting…")
    ably_gateway = await Process.start(
        sys.executable, "-m", "relay.cli", "serve", "--port", gateway_url.rpartition(":")[2],
        env={
            **base_env,
            "RELAY_URL": f"ably://1.app-key:app-secret@127.0.0.1:{emulator.port}?tls=false",
            "RELAY_API_TOKEN": TOKEN,
            "RELAY_JWT_SECRET": JWT_SECRET,
            "RELAY_CORS_ORIGINS": site,
        },
    )  # fmt: skip
    processes.append(ably_gateway)
    await ably_gateway.wait_for(r"Uvicorn running on", 20)
    await alice.reload()
    await expect(alice.locator("main [role=alert]")).to_contain_text("the gateway's provider is Ably")
    assert problems == []
