"""`relay emulator` as a real process, started the way a user starts it, for tests and benchmarks."""

from __future__ import annotations

import asyncio
import os
import re
import resource
import signal
import sys
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Literal

LISTENING = re.compile(r"listening on https?://(?:\[[^\]]+\]|[^:]+):(\d+)")


def _limit(open_files: tuple[int, int] | None, largest_file: int | None) -> None:
    """The resource limits of a ``relay emulator`` process, set in it before it runs."""
    if open_files is not None:
        resource.setrlimit(resource.RLIMIT_NOFILE, open_files)
    if largest_file is not None:
        # A write past it then fails with EFBIG, as one on a full disk fails, instead of killing the process
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (largest_file, largest_file))


@dataclass
class EmulatorProcess:
    """``relay emulator`` running; what it prints is collected line by line: stdout (the banner with the client
    settings) and stderr (the logs)."""

    process: asyncio.subprocess.Process
    port: int = 0
    stdout: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)
    _readers: list[asyncio.Task[None]] = field(default_factory=list)

    @classmethod
    async def start(
        cls,
        *args: str,
        port: int = 0,
        env: dict[str, str] | None = None,
        within: float = 20.0,
        open_files: tuple[int, int] | None = None,
        largest_file: int | None = None,
        cwd: Path | None = None,
    ) -> EmulatorProcess:
        """Run ``relay emulator ARGS --port PORT`` (0: a free port; a fixed one to restart on the same port), with
        ``env`` added to this process's environment, ``open_files`` as its (soft, hard) open-file limits and
        ``largest_file`` as the bytes a file it writes may hold, ``cwd`` its working directory, and wait for its
        banner."""
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "relay.cli", "emulator", *args, "--port", str(port),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env={**os.environ, **(env or {})},
            preexec_fn=partial(_limit, open_files, largest_file), cwd=cwd,
        )  # fmt: skip
        running = cls(process)
        running._readers = [
            asyncio.create_task(running._read(process.stdout, running.stdout)),
            asyncio.create_task(running._read(process.stderr, running.stderr)),
        ]
        try:
            # The banner is printed in one write, so once its first line is in, all of it is.
            listening = await running.wait_for_output(LISTENING.pattern, stream="stdout", within=within)
        except AssertionError:
            await running.kill()
            raise
        match = LISTENING.search(listening)
        assert match is not None
        running.port = int(match.group(1))
        return running

    @staticmethod
    async def _read(stream: asyncio.StreamReader | None, into: list[str]) -> None:
        assert stream is not None
        while line := await stream.readline():
            into.append(line.decode(errors="replace").rstrip("\n"))

    @property
    def banner(self) -> str:
        """The client settings it printed on stdout."""
        return "\n".join(self.stdout)

    async def wait_for_output(
        self, pattern: str, *, stream: Literal["stdout", "stderr"] = "stderr", within: float = 10.0
    ) -> str:
        """The first line of ``stream`` that matches ``pattern``, waiting up to ``within`` seconds for it."""
        lines = self.stdout if stream == "stdout" else self.stderr
        regex = re.compile(pattern)
        deadline = time.monotonic() + within
        while True:
            found = next((line for line in lines if regex.search(line)), None)
            if found is not None:
                return found
            if self.process.returncode is not None or time.monotonic() > deadline:
                raise AssertionError(
                    f"relay emulator never printed /{pattern}/ (exit {self.process.returncode}); "
                    f"stdout: {self.stdout[-20:]}; stderr: {self.stderr[-20:]}"
                )
            await asyncio.sleep(0.02)

    async def stop(self, grace: float = 30.0) -> int:
        """Stop it as a user would (SIGTERM, which a ``--workers`` supervisor passes on to its workers), kill it if
        it has not exited within ``grace`` seconds, and return its exit code once its output is collected. (A cluster
        node's leaving is bounded at 3 s a step, five steps, and 5 s for its webhooks: a loaded machine has taken
        over 15 s of that.)"""
        if self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), grace)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        # Forked workers share the pipes: one outliving its supervisor must not keep the readers waiting forever.
        _, still_reading = await asyncio.wait(self._readers, timeout=grace)
        for reader in still_reading:
            reader.cancel()
        code = self.process.returncode
        assert code is not None
        return code

    async def kill(self) -> None:
        """SIGKILL, with no chance to shut down gracefully."""
        if self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
        for reader in self._readers:
            reader.cancel()
