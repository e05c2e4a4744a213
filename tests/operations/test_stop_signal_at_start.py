"""A stop signal sent the moment the emulator says it is serving (a service manager or a test that stops it as soon
as the banner or readiness is seen) gets a graceful shutdown: the handlers are in place before the banner is printed
and readiness reported (they were installed just after, and a SIGTERM in between killed the process, or left the
``--workers`` supervisor's workers behind). Each case runs in its own Python process, which signals itself."""

from __future__ import annotations

import subprocess
import sys
import textwrap

SERVE = """
import asyncio, logging, os, signal
from relay.cli import _serve_emulator
from relay.emulator.config import App, EmulatorConfig

logging.basicConfig(level=logging.INFO)
config = EmulatorConfig(apps=(App(app_id="1", key="k", secret="s"),), host="127.0.0.1", port=0)
stop_now = lambda: os.kill(os.getpid(), signal.SIGTERM)
asyncio.run(_serve_emulator(config, None, announce=False, ready=stop_now))
print("drained and stopped")
"""

SUPERVISE = """
import os, signal
from relay.cli import _supervise

status = _supervise([], lambda: None, lambda: os.kill(os.getpid(), signal.SIGTERM))
print(f"supervisor stopped with {status}")
"""


def run(script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True, timeout=60, check=False
    )


def test_a_sigterm_as_the_emulator_reports_it_is_ready_is_a_graceful_stop() -> None:
    done = run(SERVE)
    assert (done.returncode, done.stdout.strip()) == (0, "drained and stopped"), done.stderr[-2000:]
    assert "shutdown: done" in done.stderr


def test_a_sigterm_as_the_workers_supervisor_prints_its_banner_is_a_stop_it_handles() -> None:
    done = run(SUPERVISE)
    assert (done.returncode, done.stdout.strip()) == (0, "supervisor stopped with 0"), done.stderr[-2000:]
