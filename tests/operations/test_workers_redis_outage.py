"""A ``--workers`` supervisor during a Redis outage, with real processes: a worker that dies while Redis is down
cannot be replaced (a replacement's start-up needs Redis), but the workers still serving keep serving, so the
supervisor keeps retrying with a capped back-off instead of stopping the emulator, and the replacement that starts once
Redis is back restores the worker count. With no worker left serving, it still gives up."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import multiprocessing
import os
import re
import signal
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

import httpx
import pytest

from relay import cli
from tests.cluster.conftest import RedisServer
from tests.emulator_process import EmulatorProcess
from tests.operations.support import APP, CREDENTIALS, children, eventually, node_ids, publish, ws_client

WORKER_DIED = re.compile(r"ERROR .*worker \d+ (killed by|exited with)")


def worker_deaths(process: EmulatorProcess) -> list[str]:
    return [line for line in process.stderr if WORKER_DIED.search(line)]


async def nodes_reached(port: int, until: str, tries: int = 40) -> set[str]:
    """The nodes (socket id prefixes) that new connections to ``port`` reach, connecting until ``until`` is one of
    them or ``tries`` connections were made."""
    seen: set[str] = set()
    for _ in range(tries):
        client = await ws_client(f"ws://127.0.0.1:{port}/app/{APP.key}?protocol=7")
        await client.close()
        seen.add(client.socket_id.split(".")[0])
        if until in seen:
            break
    return seen


@pytest.mark.long
async def test_a_worker_lost_during_a_redis_outage_does_not_stop_the_one_still_serving(redis: RedisServer) -> None:
    """Redis killed, then one of two workers: every replacement fails at start-up (it cannot reach Redis), past the
    five deaths in 60 s that stop a crash loop; the other worker was serving all along, so the emulator keeps serving
    (health, a WebSocket subscriber receives a publish) and retries; once Redis is back, a replacement starts and the
    emulator has two workers again."""
    supervisor = await EmulatorProcess.start(
        *CREDENTIALS, "--workers", "2", "--redis-url", redis.url, "--shutdown-spread", "0"
    )
    try:
        await eventually(lambda: len(node_ids(supervisor)) == 2, what="both workers listening")
        victim, survivor = children(supervisor.process.pid)
        redis.stop()
        os.kill(victim, signal.SIGKILL)
        # The victim and four replacements: the fifth death within 60 s, which stops an emulator with no worker left.
        await eventually(lambda: len(worker_deaths(supervisor)) >= 5, within=20, what="five worker deaths")
        await asyncio.sleep(1)  # time to give up, if it were to
        log = "\n".join(supervisor.stderr)
        assert supervisor.process.returncode is None, log
        assert not any("giving up" in line for line in supervisor.stderr), log
        assert survivor in children(supervisor.process.pid)
        fifth = worker_deaths(supervisor)[4]
        assert "still serving" in fifth and re.search(r"replacement in \d+ s", fifth), fifth

        base_url = f"http://127.0.0.1:{supervisor.port}"
        async with httpx.AsyncClient() as http:
            assert (await http.get(f"{base_url}/health", timeout=5)).status_code == 200
        client = await ws_client(f"ws://127.0.0.1:{supervisor.port}/app/{APP.key}?protocol=7")
        try:
            await client.subscribe("news", APP)
            assert (await publish(base_url, APP, "news", "update", "during the outage")).status_code == 200
            received = await client.expect("update")
            assert received["data"] == "during the outage"
        finally:
            await client.close()

        redis.start()  # the same port: the next replacement reaches it
        await eventually(lambda: len(node_ids(supervisor)) == 3, within=25, what="a replacement listening")
        await supervisor.wait_for_output(r"INFO .*worker \d+ serving: 2 of 2 workers", within=5)
        assert len(children(supervisor.process.pid)) == 2
        assert survivor in children(supervisor.process.pid)
        replacement = node_ids(supervisor)[2]
        assert await nodes_reached(supervisor.port, until=replacement) >= {replacement}
        supervisor.process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(supervisor.process.wait(), 20) == 0
    finally:
        await supervisor.stop()
    assert not any("Traceback" in line for line in supervisor.stderr), supervisor.stderr


async def test_with_no_worker_left_serving_a_crash_loop_still_stops_the_emulator(redis: RedisServer) -> None:
    """Redis killed, then both workers: no worker is serving, so the replacements that keep failing at start-up are
    given up on, as before: the fifth death within 60 s stops the emulator, which exits 2 (the workers' own error)."""
    supervisor = await EmulatorProcess.start(
        *CREDENTIALS, "--workers", "2", "--redis-url", redis.url, "--shutdown-spread", "0"
    )
    try:
        await eventually(lambda: len(node_ids(supervisor)) == 2, what="both workers listening")
        redis.stop()
        for worker in children(supervisor.process.pid):
            os.kill(worker, signal.SIGKILL)
        code = await asyncio.wait_for(supervisor.process.wait(), 30)
    finally:
        await supervisor.stop()
    log = "\n".join(supervisor.stderr)
    assert code == 2, log
    assert "cannot reach Redis" in log
    assert len(worker_deaths(supervisor)) == 5, log
    gave_up = next(line for line in supervisor.stderr if "giving up" in line)
    assert "5 workers died within 60 s" in gave_up and "none serving" in gave_up, gave_up
    # Back-off: the replacements were retried after 1 and 2 s (one at a time), not in a tight loop of respawns.
    assert logged_at(gave_up) - logged_at(worker_deaths(supervisor)[0]) >= 2, log


def logged_at(line: str) -> float:
    """The time of a text log line (``2026-11-30 06:51:31,444 INFO …``), in seconds."""
    return dt.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()


@contextmanager
def silent_server(port: int) -> Iterator[None]:
    """A socket listening on ``port`` that never answers (connections complete into its backlog), like a Redis host
    that hangs."""
    with socket.create_server(("127.0.0.1", port)):
        yield


@asynccontextmanager
async def replacement_waiting_for_redis(
    supervisor: EmulatorProcess, redis: RedisServer
) -> AsyncIterator[tuple[int, int]]:
    """Redis stops answering and one of the two workers is killed: yields the replacement, forked and waiting for
    Redis, and the worker still serving."""
    await eventually(lambda: len(node_ids(supervisor)) == 2, what="both workers listening")
    victim, survivor = children(supervisor.process.pid)
    redis.stop()
    with silent_server(redis.port):
        os.kill(victim, signal.SIGKILL)
        await supervisor.wait_for_output(r"INFO .*worker \d+ started", within=5)
        await asyncio.sleep(0.5)  # the replacement is forked and waiting for Redis
        (replacement,) = set(children(supervisor.process.pid)) - {survivor}
        yield replacement, survivor


async def test_a_replacement_waiting_for_redis_is_handed_no_connection(redis: RedisServer) -> None:
    """While a replacement waits for a Redis that does not answer (seconds, before it gives up and exits), the
    kernel must not hand it connections: it listened on the shared port from the start, so new connections spread
    to it sat unanswered, then were reset when it exited. Every connection made meanwhile is served by the survivor."""
    supervisor = await EmulatorProcess.start(
        *CREDENTIALS, "--workers", "2", "--redis-url", redis.url, "--shutdown-spread", "0"
    )
    try:
        async with replacement_waiting_for_redis(supervisor, redis) as (replacement, _):
            for _ in range(16):  # were the replacement listening, about half would land on it
                client = await ws_client(f"ws://127.0.0.1:{supervisor.port}/app/{APP.key}?protocol=7")
                await client.close()
            # All made while the replacement was still waiting for Redis, not after it gave up.
            assert replacement in children(supervisor.process.pid) and len(node_ids(supervisor)) == 2
    finally:
        await supervisor.stop()


def _never_listens() -> None:
    """A worker stuck at start-up (as one is when Redis accepts its connection and then answers nothing)."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, cli.STOP_SIGNALS)  # the supervisor blocks them over the fork
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    time.sleep(60)


def test_a_replacement_that_never_listens_is_stopped_so_the_next_can_start(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Replacements start one at a time: one stuck at start-up held back every other replacement for as long as it
    hung. Past WORKER_START_SECONDS it is stopped and counted as a failed start, and the next one starts; the worker
    still serving is kept throughout."""
    monkeypatch.setattr(cli, "WORKER_START_SECONDS", 0.3)
    monkeypatch.setattr(cli, "WORKER_RESTART_DELAYS", (0.0, 0.1))
    context = multiprocessing.get_context("fork")
    started = context.Semaphore(0)
    supervisor = cli._Supervisor(lambda: context.Process(target=_never_listens, daemon=True))
    supervisor.workers = 2
    serving = supervisor.start_worker()  # never released the semaphore either, but counted as serving from here
    supervisor.start_worker().kill()  # the other worker dies: its replacements never listen

    def stuck() -> list[logging.LogRecord]:
        return [record for record in caplog.records if "did not start listening within 0.3 s" in record.getMessage()]

    def stop_after_three() -> None:
        """Stop once three replacements were stopped in turn (a fixed time left a slow fork only two)."""
        deadline = time.monotonic() + 15
        while len(stuck()) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        supervisor.stop(signal.SIGTERM, None)

    threading.Thread(target=stop_after_three, daemon=True).start()
    with caplog.at_level(logging.INFO, logger="relay.emulator"):
        supervisor.supervise(started)
    assert len(stuck()) >= 3, caplog.text  # each replacement stopped in turn, none holding the next back for good
    assert serving.exitcode == -signal.SIGTERM  # kept serving until the stop
    assert "giving up" not in caplog.text
