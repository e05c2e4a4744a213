"""`relay serve` as run from the command line: the HTTP server's own limits, which the in-process tests' uvicorn
configuration does not have."""

from __future__ import annotations

import asyncio
import functools
import os
import re
import resource
import socket
import sys
import tempfile
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.conftest import free_port


async def wait_until_served(base: str) -> None:
    async with httpx.AsyncClient() as http:
        for _ in range(100):
            try:
                if (await http.get(f"{base}/health")).status_code == 200:
                    return
            except httpx.TransportError:
                await asyncio.sleep(0.1)
    pytest.fail("relay serve did not start")


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
        await wait_until_served(base)
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
    bound (100 MiB of unfinished headers grew the process by 100 MiB). Past MAX_HEAD_BYTES
    (relay.protocol.http_framing) the connection is closed; the next client is served."""
    port = int(gateway_process.rsplit(":", 1)[1])
    size = 16 * 1024 * 1024  # far more than the kernel's socket buffers hold, so the server must read it to take it
    assert await asyncio.to_thread(send_unfinished_head, port, size) < size
    async with httpx.AsyncClient() as http:
        assert (await http.get(f"{gateway_process}/health")).status_code == 200


def _open_files_limit(limit: tuple[int, int]) -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, limit)


async def _health_kept_open(port: int) -> tuple[asyncio.StreamWriter, bytes]:
    """``GET /health`` on a connection of its own, left open after the answer (as a kept-alive client leaves it); the
    answer's body, or b"" when the gateway closed the connection unanswered."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /health HTTP/1.1\r\nHost: gateway\r\n\r\n")
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return writer, b""
    length = re.search(rb"content-length: (\d+)", head, re.IGNORECASE)
    assert length is not None, head
    return writer, await reader.readexactly(int(length[1]))


@pytest.mark.skipif(not hasattr(resource, "prlimit"), reason="reading another process's limits needs Linux")
async def test_the_open_file_limit_is_raised_so_a_burst_of_connections_is_answered_whole() -> None:
    """Services start with a soft open-file limit of 1024 (systemd's): a burst of serverless functions' publishes past
    it had the connections over the limit closed unanswered. Started at 64 here, `relay serve` raises it to the hard
    limit and answers 150 connections open at once."""
    hard = min(4096, resource.getrlimit(resource.RLIMIT_NOFILE)[1])  # raising a hard limit needs root
    port = free_port()
    env = {**os.environ, "RELAY_URL": "memory://process-limits", "RELAY_API_TOKEN": "token"}
    with tempfile.TemporaryFile() as stderr:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "relay.cli", "serve", "--port", str(port), "--log-level", "debug",
            env=env, stdout=asyncio.subprocess.DEVNULL, stderr=stderr,
            preexec_fn=functools.partial(_open_files_limit, (64, hard)),
        )  # fmt: skip
        writers: list[asyncio.StreamWriter] = []
        try:
            await wait_until_served(f"http://127.0.0.1:{port}")
            answers = await asyncio.gather(*(_health_kept_open(port) for _ in range(150)))
            writers = [writer for writer, _ in answers]
            assert [body for _, body in answers] == [b'{"status":"ok"}'] * 150
            stderr.seek(0)
            assert f"relay.gateway: open-file limit raised from 64 to {hard}".encode() in stderr.read()
            assert resource.prlimit(process.pid, resource.RLIMIT_NOFILE)[0] == hard
        finally:
            for writer in writers:
                writer.close()
            process.terminate()
            await process.wait()
