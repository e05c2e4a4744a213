"""Ctrl-C while the ``relay`` command starts, as the installed console script runs it."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import types
from pathlib import Path

import pytest

from relay.cli import _run
from tests.cli_support import SERVING

RELAY_SCRIPT = Path(sys.executable).with_name("relay")


async def _interrupted_after_import(module: str, delay: float, *args: str) -> tuple[int, str, str]:
    """Run ``relay ARGS`` and send it SIGINT, as Ctrl-C does, ``delay`` seconds after it has imported ``module``: its
    exit status, standard output and standard error. The moment is told by Python's own report of each import it
    completes (PYTHONPROFILEIMPORTTIME), not by a clock, which a busy machine stretches into another phase."""
    clean = {name: value for name, value in os.environ.items() if not name.startswith(("RELAY_", "PUSHER_", "ABLY_"))}
    process = await asyncio.create_subprocess_exec(
        RELAY_SCRIPT,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**clean, "PYTHONPROFILEIMPORTTIME": "1"},
    )
    assert process.stderr is not None
    said: list[str] = []
    try:
        async with asyncio.timeout(20):
            while line := (await process.stderr.readline()).decode(errors="replace"):
                said.append(line)
                if line.startswith("import time:") and line.rpartition("|")[2].strip() == module:
                    break
            await asyncio.sleep(delay)
            if process.returncode is None:
                process.send_signal(signal.SIGINT)
            stdout, stderr = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    errors = [line for line in [*said, *stderr.decode(errors="replace").splitlines(True)] if "import time:" not in line]
    return process.returncode, stdout.decode(errors="replace"), "".join(errors)


# Modules that `relay emulator` imports before it runs the command, each completed inside the entry point's guard (not
# the relay package or relay.__main__ itself: a signal in the instant between either's loading and the guard, which a
# busy machine can stretch by descheduling the process there, is Python's to report, as one while it imports its own
# site module is).
@pytest.mark.parametrize(
    ("module", "delay"),
    [("relay.errors", 0.0), ("relay.errors", 0.05), ("relay.config", 0.0), ("relay.emulator.config", 0.0)],
)
async def test_ctrl_c_while_relay_starts_is_a_quiet_status_130(module: str, delay: float) -> None:
    """Ctrl-C while Python loaded relay and its dependencies (its first fifth of a second) was a KeyboardInterrupt
    traceback and status -2, where a moment later it is "relay emulator: interrupted" and 130, and once it serves a
    graceful stop (0)."""
    status, stdout, stderr = await _interrupted_after_import(module, delay, "emulator", "--port", "0")
    assert "Traceback" not in stderr, stderr[-1500:]
    if SERVING.search(stdout + stderr):
        assert status == 0, stderr[-800:]
    else:
        assert status == 130, stderr[-800:]
        assert stderr.splitlines()[-1] in ("relay: interrupted", "relay emulator: interrupted")


async def test_ctrl_c_while_relay_help_starts_is_quiet() -> None:
    """``relay --help`` interrupted as it loads the command line: status 130 and one line, or the help if it was done
    first; never a traceback."""
    status, stdout, stderr = await _interrupted_after_import("relay.errors", 0.0, "--help")
    assert "Traceback" not in stderr, stderr[-1500:]
    if status == 0:
        assert stdout.startswith("usage: relay"), stdout[:300]
    else:
        assert (status, stderr.splitlines()[-1]) == (130, "relay: interrupted")


def test_a_ctrl_c_before_the_server_runs_closes_its_coroutine(monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGINT as the event loop was being made left the server's coroutine never run, and Python's "coroutine ... was
    never awaited" RuntimeWarning was printed after "relay emulator: interrupted" (seen once in CI, at 0.05 s)."""

    def interrupted(_: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setitem(sys.modules, "uvloop", types.SimpleNamespace(run=interrupted))

    async def serve() -> None:
        raise AssertionError("not run")

    server = serve()
    with pytest.raises(KeyboardInterrupt):
        _run(server)
    assert server.cr_frame is None, "the coroutine was left unclosed"
