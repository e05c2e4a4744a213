"""A hunt through ``relay emulator --workers`` run as a user runs it (real processes, a real redis-server): what it
found, each fixed and kept fixed here."""

from __future__ import annotations

import asyncio
import os
import re
import signal

from tests.cluster.conftest import RedisServer
from tests.emulator_process import EmulatorProcess
from tests.operations.support import CREDENTIALS
from tests.operations.test_workers_redis_outage import replacement_waiting_for_redis


async def test_ctrl_c_reaching_a_starting_worker_first_stops_the_emulator_without_a_traceback(
    redis: RedisServer,
) -> None:
    """Ctrl-C in a terminal sends SIGINT to every process of the group, in no set order. A worker still starting
    (here a replacement waiting for a Redis that does not answer) turned it into a KeyboardInterrupt: multiprocessing
    printed its traceback, and the worker's exit (status 1) was taken for a crash, logged and replaced, before the
    supervisor's own SIGINT stopped everything. Now a starting worker leaves SIGINT to the supervisor, whose SIGTERM
    ends it; the emulator exits 0 with nothing but the stop in its log."""
    supervisor = await EmulatorProcess.start(
        *CREDENTIALS, "--workers", "2", "--redis-url", redis.url, "--shutdown-spread", "0"
    )
    try:
        async with replacement_waiting_for_redis(supervisor, redis) as (replacement, survivor):
            os.kill(replacement, signal.SIGINT)  # the group's Ctrl-C, reaching the starting worker first
            await asyncio.sleep(0.5)
            for pid in (supervisor.process.pid, survivor):
                os.kill(pid, signal.SIGINT)
            assert await asyncio.wait_for(supervisor.process.wait(), 30) == 0, supervisor.stderr[-20:]
    finally:
        await supervisor.stop()
    log = "\n".join(supervisor.stderr)
    assert "Traceback" not in log and "ForkProcess" not in log and "KeyboardInterrupt" not in log, log
    assert not re.search(rf"worker {replacement} (exited|killed)", log), log  # not taken for a crash
