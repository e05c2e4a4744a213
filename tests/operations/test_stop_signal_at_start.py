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
import multiprocessing, os, signal
from relay.cli import _Supervisor

supervisor = _Supervisor(lambda: multiprocessing.get_context("fork").Process(target=lambda: None))
status = supervisor.run(0, None, lambda: os.kill(os.getpid(), signal.SIGTERM))
print(f"supervisor stopped with {status}")
"""

# Two real workers; the supervisor signals itself as it makes the second, so the first is forked and starting, and
# the second is forked after the stop was handled.
SUPERVISE_STARTING = """
import logging, multiprocessing, os, signal
from relay.cli import _Supervisor, _worker
from relay.emulator.config import App, EmulatorConfig

logging.basicConfig(level=logging.INFO)
config = EmulatorConfig(apps=(App(app_id="1", key="k", secret="s"),), host="127.0.0.1", port=0)
context = multiprocessing.get_context("fork")
started = context.Semaphore(0)
made = []

def new_process():
    if made:
        os.kill(os.getpid(), signal.SIGTERM)
    made.append(context.Process(target=_worker, args=(config, os.getpid(), started, False), daemon=True))
    return made[-1]

status = _Supervisor(new_process).run(2, started, lambda: print("banner"))
print(f"supervisor stopped with {status}; workers alive: {sum(process.is_alive() for process in made)} of {len(made)}")
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


def test_a_sigterm_while_the_workers_are_starting_stops_them_all_and_prints_no_banner() -> None:
    done = run(SUPERVISE_STARTING)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "supervisor stopped with 0; workers alive: 0 of 2", done.stderr[-2000:]
