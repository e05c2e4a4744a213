"""Operations audit of ``relay emulator``'s process handling, with real processes: a ``--workers`` supervisor
replaces a worker that dies (and gives up, with a reason, on one that keeps dying at start-up), TLS files the process
cannot read are configuration errors, and SIGHUP (a closed terminal) shuts down gracefully like SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from relay.cost.usage import parse_usage
from tests.cli_support import assert_refused, run_relay
from tests.cluster.conftest import RedisServer
from tests.emulator_process import EmulatorProcess
from tests.operations.support import (
    APP,
    CREDENTIALS,
    children,
    eventually,
    make_certificate,
    node_ids,
    publish,
    ws_client,
)


async def nodes_serving(port: int, including: str, tries: int = 60) -> set[str]:
    """The nodes (socket id prefixes) that new connections to ``port`` reach, connecting until two, one of them
    ``including``, have been seen or ``tries`` connections were made."""
    seen: set[str] = set()
    clients = []
    try:
        while not (including in seen and len(seen) >= 2) and len(clients) < tries:
            client = await ws_client(f"ws://127.0.0.1:{port}/app/{APP.key}?protocol=7")
            clients.append(client)
            seen.add(client.socket_id.split(".")[0])
    finally:
        for client in clients:
            await client.close()
    return seen


# -- 1. --workers: a worker that dies is logged and replaced --------------------------------------------------------


async def test_a_killed_worker_is_logged_and_replaced_and_sigterm_then_exits_0(redis: RedisServer) -> None:
    """SIGKILL of one of two workers: the supervisor logs it (error, with the signal), starts a replacement on the
    same port, connections reach both live workers again, and SIGTERM still ends the run with exit 0 (the killed
    worker was replaced, not a failure of the shutdown)."""
    supervisor = await EmulatorProcess.start(
        *CREDENTIALS, "--workers", "2", "--redis-url", redis.url, "--shutdown-spread", "0"
    )
    try:
        await eventually(lambda: len(node_ids(supervisor)) == 2, what="both workers listening")
        before = children(supervisor.process.pid)
        assert len(before) == 2
        victim = before[0]
        os.kill(victim, signal.SIGKILL)
        line = await supervisor.wait_for_output(rf"ERROR .*worker {victim} killed by SIGKILL", within=10)
        assert "replacement" in line, line
        await eventually(lambda: len(node_ids(supervisor)) == 3, within=15, what="the replacement listening")
        after = children(supervisor.process.pid)
        assert len(after) == 2, after
        assert victim not in after and before[1] in after
        first_two, replacement = node_ids(supervisor)[:2], node_ids(supervisor)[2]
        # The port is served by two live workers, the survivor and the replacement: the kernel hands new connections
        # to the replacement too.
        seen = await nodes_serving(supervisor.port, including=replacement)
        assert replacement in seen and len(seen) == 2, (seen, first_two, replacement)
        assert len(seen & set(first_two)) == 1
        await publish(f"http://127.0.0.1:{supervisor.port}", APP, "news", "e", "still served")
        supervisor.process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(supervisor.process.wait(), 20) == 0
    finally:
        await supervisor.stop()
    assert not any("Traceback" in line for line in supervisor.stderr), supervisor.stderr


# -- 2. TLS files that cannot be read -------------------------------------------------------------------------------

# Unreadable even for root (whose CAP_DAC_OVERRIDE reads a mode 000 file): a write-only sysctl, which the kernel
# refuses to open for reading with EACCES whoever asks.
UNREADABLE = Path("/proc/sys/vm/drop_caches")


@pytest.mark.skipif(not UNREADABLE.exists(), reason="needs Linux's /proc/sys/vm/drop_caches")
@pytest.mark.parametrize("which", ["--tls-key", "--tls-cert"])
async def test_a_tls_file_that_cannot_be_read_is_a_configuration_error(tmp_path: Path, which: str) -> None:
    cert, key = make_certificate(tmp_path)
    files = {"--tls-cert": str(cert), "--tls-key": str(key), which: str(UNREADABLE)}
    outcome = await run_relay("emulator", "--port", "0", *(part for item in files.items() for part in item))
    assert_refused(outcome, f"TLS file {UNREADABLE} cannot be read: Permission denied")


async def test_a_tls_file_that_is_a_directory_says_so(tmp_path: Path) -> None:
    _, key = make_certificate(tmp_path)
    outcome = await run_relay("emulator", "--port", "0", "--tls-cert", str(tmp_path), "--tls-key", str(key))
    assert_refused(outcome, f"TLS file {tmp_path} is a directory")
    assert "does not exist" not in outcome.stderr


async def test_a_key_that_is_not_the_certificates_says_so(tmp_path: Path) -> None:
    """A renewal that replaced one file of the pair: it was "… are not a PEM certificate chain and its private key
    (KEY_VALUES_MISMATCH)", which read as if the files were not PEM at all."""
    cert, _ = make_certificate(tmp_path)
    (tmp_path / "other").mkdir()
    _, other_key = make_certificate(tmp_path / "other")
    outcome = await run_relay("emulator", "--port", "0", "--tls-cert", str(cert), "--tls-key", str(other_key))
    assert_refused(outcome, f"TLS key {other_key} is not the private key of the certificate in {cert}")
    assert "not a PEM" not in outcome.stderr


# -- 3. SIGHUP ------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def sighup_in_children(disposition: signal.Handlers) -> Iterator[None]:
    """Processes started meanwhile inherit ``disposition`` for SIGHUP: SIG_DFL as from a terminal, whatever this
    run's is (a CI runner under nohup has it ignored, and the emulator then leaves it ignored), or SIG_IGN as under
    nohup."""
    previous = signal.signal(signal.SIGHUP, disposition)
    try:
        yield
    finally:
        signal.signal(signal.SIGHUP, previous)


def usage_publishes(path: Path) -> int:
    return sum(day.publishes for day in parse_usage(json.loads(path.read_text())).apps[APP.app_id].days.values())


async def test_sighup_shuts_down_gracefully_and_writes_the_usage_file(tmp_path: Path) -> None:
    usage = tmp_path / "usage.json"
    with sighup_in_children(signal.SIG_DFL):
        relay = await EmulatorProcess.start(*CREDENTIALS, "--usage-file", str(usage), "--shutdown-spread", "0")
    try:
        await publish(f"http://127.0.0.1:{relay.port}", APP, "news", "e", "x")
        relay.process.send_signal(signal.SIGHUP)
        assert await asyncio.wait_for(relay.process.wait(), 15) == 0
    finally:
        await relay.stop()
    assert any("shutdown: done" in line for line in relay.stderr), relay.stderr
    assert usage_publishes(usage) == 1


async def test_sighup_to_a_workers_supervisor_shuts_every_worker_down_gracefully(
    tmp_path: Path, redis: RedisServer
) -> None:
    usage = tmp_path / "usage.json"
    with sighup_in_children(signal.SIG_DFL):
        supervisor = await EmulatorProcess.start(
            *CREDENTIALS, "--workers", "2", "--redis-url", redis.url, "--usage-file", str(usage),
            "--shutdown-spread", "0",
        )  # fmt: skip
    try:
        await eventually(lambda: len(node_ids(supervisor)) == 2, what="both workers listening")
        await publish(f"http://127.0.0.1:{supervisor.port}", APP, "news", "e", "x")
        supervisor.process.send_signal(signal.SIGHUP)
        assert await asyncio.wait_for(supervisor.process.wait(), 20) == 0
    finally:
        await supervisor.stop()
    assert sum("shutdown: done" in line for line in supervisor.stderr) == 2, supervisor.stderr
    assert usage_publishes(usage) == 1


async def test_an_ignored_sighup_stays_ignored_as_under_nohup() -> None:
    """Started with SIGHUP ignored (nohup, or a shell's trap), the emulator leaves it so: a SIGHUP then stops
    nothing, and the emulator keeps serving until SIGTERM."""
    with sighup_in_children(signal.SIG_IGN):
        relay = await EmulatorProcess.start(*CREDENTIALS, "--shutdown-spread", "0")
    try:
        relay.process.send_signal(signal.SIGHUP)
        await asyncio.sleep(0.5)
        assert relay.process.returncode is None
        assert not [line for line in relay.stderr if "shutdown: draining" in line]
        await publish(f"http://127.0.0.1:{relay.port}", APP, "news", "e", "x")
        relay.process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(relay.process.wait(), 20) == 0
    finally:
        await relay.stop()


async def test_the_same_stop_signalled_twice_at_once_does_not_cut_the_drain_short() -> None:
    """systemd's default KillMode signals every process of the service, and a --workers supervisor passes the signal
    on too, so a worker got SIGTERM twice in a row and took it for an operator's second Ctrl-C: it skipped
    shutdown_delay and dropped held webhooks. A second signal within a second is the same stop; one later hurries."""
    relay = await EmulatorProcess.start(*CREDENTIALS, "--shutdown-delay", "2", "--shutdown-spread", "0")
    try:
        started = time.monotonic()
        relay.process.send_signal(signal.SIGTERM)
        await relay.wait_for_output("shutdown: draining", within=5)
        # as the supervisor's, a moment after the service manager's: at once, so that a loaded machine's delays
        # keep it within the second
        relay.process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(relay.process.wait(), 15) == 0
        assert time.monotonic() - started >= 2.0  # the delay was kept
    finally:
        await relay.stop()
    assert not any("second signal" in line for line in relay.stderr), relay.stderr
    hurried = await EmulatorProcess.start(*CREDENTIALS, "--shutdown-delay", "30", "--shutdown-spread", "0")
    try:
        hurried.process.send_signal(signal.SIGTERM)
        await hurried.wait_for_output("shutdown: draining", within=5)
        await asyncio.sleep(1.2)
        hurried.process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(hurried.process.wait(), 10) == 0  # not the 30 s delay
    finally:
        await hurried.stop()
    assert any("second signal" in line for line in hurried.stderr), hurried.stderr
