"""`relay emulator` as a real process, started the way a user starts it, for tests and benchmarks."""

from __future__ import annotations

import asyncio
import re
import sys


async def spawn_emulator(*args: str, within: float = 20.0) -> tuple[asyncio.subprocess.Process, int, str]:
    """Run ``relay emulator --port 0 ARGS`` and wait for its banner: (process, port, banner)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "relay.cli", "emulator", "--port", "0", *args, stdout=asyncio.subprocess.PIPE
    )
    assert process.stdout is not None
    banner = ""
    while "RELAY_URL" not in banner:
        line = await asyncio.wait_for(process.stdout.readline(), within)
        if not line:
            raise RuntimeError(f"relay emulator exited before printing its settings: {banner!r}")
        banner += line.decode()
    match = re.search(r"https?://127\.0\.0\.1:(\d+)", banner)
    assert match is not None
    return process, int(match.group(1)), banner


async def stop_emulator(process: asyncio.subprocess.Process, grace: float = 10.0) -> None:
    """Stop it as a user would (SIGTERM, which a ``--workers`` supervisor passes on to its workers); kill it if it
    has not exited within ``grace`` seconds."""
    if process.returncode is not None:
        return
    process.terminate()
    try:
        await asyncio.wait_for(process.wait(), grace)
    except TimeoutError:
        process.kill()
        await process.wait()
