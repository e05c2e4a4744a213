"""A private redis-server per test module, on a free port, so runs never share state."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port


class RedisServer:
    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.process: subprocess.Popen[bytes] | None = None
        self._started = False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start redis-server on this server's port; the first start moves to another free port if a parallel test
        process took this one meanwhile (then the server that answers there is not this one)."""
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed (Debian package redis-server); the cluster tests need it")
        first = self.process is None and not self._started
        for _ in range(3 if first else 1):
            self.process = subprocess.Popen(
                [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                cwd=self.workdir,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            if self._answers_as(self.process.pid):
                self._started = True
                return
            self.stop()
            self.port = free_port()
        pytest.fail(f"redis-server did not start on port {self.port}, or another server answers there")

    def _answers_as(self, pid: int) -> bool:
        """Whether the server listening on the port is the process ``pid`` (INFO's process_id), within 10 s."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                return False  # it exited: the port is taken
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as connection:
                    connection.sendall(b"INFO server\r\n")
                    reply = b""
                    while b"process_id:" not in reply or not reply.endswith(b"\r\n"):
                        chunk = connection.recv(65536)
                        if not chunk:
                            break
                        reply += chunk
                    return f"process_id:{pid}\r\n".encode() in reply
            except OSError:
                time.sleep(0.02)
        return False

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()
