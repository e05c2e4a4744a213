"""Running ``relay`` as a user does, for tests of its command line: exit codes, messages, no tracebacks."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

RELAY = [sys.executable, "-m", "relay.cli"]
SERVING = re.compile(r"listening on https?://|Uvicorn running on")
NOT_UTF8 = b"\xff\xfe[server]\n"


# -- running `relay` as a user does -------------------------------------------------------------------------------


@dataclass
class Outcome:
    returncode: int | None  # None: it started serving, and was stopped by the test
    stdout: str
    stderr: str


async def run_relay(
    *args: str, env: dict[str, str] | None = None, within: float = 20.0, stdin: str | None = None
) -> Outcome:
    """Run ``relay ARGS`` (``stdin`` its standard input); return when it exits, or stop it as soon as it says it is
    serving."""
    clean = {name: value for name, value in os.environ.items() if not name.startswith(("RELAY_", "PUSHER_", "ABLY_"))}
    process = await asyncio.create_subprocess_exec(
        *RELAY,
        *args,
        stdin=asyncio.subprocess.DEVNULL if stdin is None else asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**clean, **(env or {})},
    )
    if stdin is not None:
        assert process.stdin is not None
        process.stdin.write(stdin.encode())
        process.stdin.close()
    out: list[str] = []
    err: list[str] = []

    async def read(stream: asyncio.StreamReader | None, into: list[str]) -> None:
        assert stream is not None
        while line := await stream.readline():
            into.append(line.decode(errors="replace"))

    readers = [asyncio.create_task(read(process.stdout, out)), asyncio.create_task(read(process.stderr, err))]
    serving = False
    async with asyncio.timeout(within):
        while process.returncode is None:
            if SERVING.search("".join(out) + "".join(err)):
                serving = True
                process.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(process.wait(), 5)
                except TimeoutError:
                    process.kill()
                break
            await asyncio.sleep(0.05)
        await process.wait()
        await asyncio.gather(*readers)
    return Outcome(None if serving else process.returncode, "".join(out), "".join(err))


def assert_refused(outcome: Outcome, *fragments: str) -> None:
    """Exit 2 with a one-line configuration error naming ``fragments``; no traceback, never serving."""
    assert outcome.returncode is not None, f"relay started serving instead of refusing: {outcome.stdout[:300]!r}"
    assert "Traceback" not in outcome.stderr, f"a traceback instead of a configuration error:\n{outcome.stderr[-1500:]}"
    assert outcome.returncode == 2, (outcome.returncode, outcome.stderr[-800:])
    assert "relay: configuration error:" in outcome.stderr
    for fragment in fragments:
        assert fragment in outcome.stderr, f"{fragment!r} not named in {outcome.stderr!r}"


def write(tmp_path: Path, text: str | bytes, name: str = "relay.toml") -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def not_installed(tmp_path: Path, *modules: str) -> dict[str, str]:
    """``run_relay``'s ``env`` for a ``relay`` without the optional ``modules`` (extras such as redis, matplotlib),
    while this venv has them: packages of those names first on PYTHONPATH fail to import as a missing one does."""
    shadows = tmp_path / "not-installed"
    for module in modules:
        (shadows / module).mkdir(parents=True)
        (shadows / module / "__init__.py").write_text(
            f"raise ModuleNotFoundError({f'No module named {module!r}'!r}, name={module!r})\n"
        )
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(shadows), os.environ.get("PYTHONPATH")]))}
