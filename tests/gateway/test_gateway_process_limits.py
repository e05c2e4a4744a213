"""`relay serve` as run from the command line: the HTTP server's own limits, which the in-process tests' uvicorn
configuration does not have."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.conftest import free_port


@pytest.fixture
async def gateway_process() -> AsyncIterator[str]:
    port = free_port()
    env = {**os.environ, "RELAY_URL": "memory://process-limits", "RELAY_API_TOKEN": "token"}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "relay.cli", "serve", "--port", str(port), "--log-level", "warning",
        env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient() as http:
            for _ in range(100):
                try:
                    if (await http.get(f"{base}/health")).status_code == 200:
                        break
                except httpx.TransportError:
                    await asyncio.sleep(0.1)
            else:
                pytest.fail("relay serve did not start")
        yield base
    finally:
        process.terminate()
        await process.wait()


def send_unfinished_head(port: int, size: int) -> int:
    """Send a request head of ``size`` bytes of headers that never ends; how many bytes went before the server closed
    the connection (``size`` if it never did)."""
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
        client.sendall(b"GET /health HTTP/1.1\r\nHost: gateway\r\n")
        try:
            while sent < size:
                client.sendall(b"X-Padding: " + b"a" * 1000 + b"\r\n")
                sent += 1013
        except (BrokenPipeError, ConnectionResetError):
            return sent
        client.settimeout(2)
        try:
            return sent if client.recv(1) == b"" else size
        except (TimeoutError, ConnectionResetError):
            return size


async def test_an_endless_request_head_is_cut_off_and_others_are_served(gateway_process: str) -> None:
    """The gateway is what browsers call: httptools, uvicorn's default parser, buffered a request head without
    bound (100 MiB of unfinished headers grew the process by 100 MiB). Past relay.gateway.MAX_HEAD_BYTES the connection
    is closed; the next client is served."""
    port = int(gateway_process.rsplit(":", 1)[1])
    size = 16 * 1024 * 1024  # far more than the kernel's socket buffers hold, so the server must read it to take it
    assert await asyncio.to_thread(send_unfinished_head, port, size) < size
    async with httpx.AsyncClient() as http:
        assert (await http.get(f"{gateway_process}/health")).status_code == 200
