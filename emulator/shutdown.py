"""Graceful shutdown: stop accepting, close connections with 4200 in jittered batches, flush webhooks, stop.

Pusher clients reconnect at once after 4200. Closing every socket in the same instant (soketi does) sends them all
back at the same moment; spreading the closes over ``spread`` seconds, in shuffled batches at jittered intervals,
spreads their reconnects over the same window (onto this node's replacement or its peers behind a load balancer).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import math
import os
import random
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from relay.emulator.console import generated_by
from relay.emulator.server import CLOSE_TIMEOUT
from relay.emulator.usage import merge_documents, usage_document
from relay.protocol.codes import ErrorCode

if TYPE_CHECKING:
    from relay.emulator.server import EmulatorNode

log = logging.getLogger("relay.emulator.shutdown")

MIN_BATCH_INTERVAL = 0.05


def batch_plan(count: int, spread: float) -> tuple[int, int, float]:
    """(batches, connections per batch, mean seconds between batches) for ``count`` connections over ``spread``."""
    if count == 0:
        return 0, 0, 0.0
    batches = max(1, min(count, int(spread / MIN_BATCH_INTERVAL)))
    return batches, math.ceil(count / batches), spread / batches


async def graceful_shutdown(
    node: EmulatorNode,
    server: asyncio.AbstractServer | None,
    *,
    spread: float | None = None,
    webhook_grace: float | None = None,
    hurry: asyncio.Event | None = None,
    rng: Callable[[float, float], float] = random.uniform,
) -> None:
    """Drain ``node``. ``hurry`` (a second signal) closes what is left at once; the whole drain is bounded by
    ``spread`` + the close handshake timeout + ``webhook_grace``."""
    config = node.config
    spread = config.shutdown_spread if spread is None else spread
    webhook_grace = config.shutdown_webhook_grace if webhook_grace is None else webhook_grace
    hurry = hurry or asyncio.Event()
    started = time.monotonic()
    node.draining = True
    if server is not None:
        server.close()
    sessions = [c for c in node.connections if c.session is not None and not c.session.closed]
    random.shuffle(sessions)
    batches, size, interval = batch_plan(len(sessions), spread)
    log.info(
        "shutdown: stopped accepting connections; closing connections with 4200",
        extra={"connections": len(sessions), "batches": batches, "delay_s": config.shutdown_delay, "spread_s": spread},
    )
    if config.shutdown_delay > 0:  # time for load balancers to see /ready fail and for a replacement to start
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(hurry.wait(), config.shutdown_delay)
    for index in range(batches):
        if index and not hurry.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(hurry.wait(), interval * rng(0.5, 1.5))
        for connection in sessions[index * size : (index + 1) * size]:
            if connection.session is not None and not connection.session.closed:
                connection.session.terminate(ErrorCode.RECONNECT, "Server is shutting down; reconnect")
    # Wait for the close handshakes so each connection's channels and presence are released (and their webhooks
    # emitted) before the webhooks are flushed; the abort timer of each close bounds this.
    deadline = time.monotonic() + CLOSE_TIMEOUT + 0.5
    while any(c.session is not None for c in node.connections):  # a connection leaves the set when it is lost
        if time.monotonic() > deadline or hurry.is_set():
            break
        await asyncio.sleep(0.02)
    for connection in list(node.connections):  # idle HTTP keep-alives, console streams, stuck handshakes
        if connection.transport is not None:
            if connection.session is None:
                connection.transport.close()
            else:
                connection.transport.abort()
    await asyncio.sleep(0)  # let connection_lost run
    log.info("shutdown: connections closed; flushing webhooks", extra={"grace_s": webhook_grace})
    await node.close(webhook_grace=0.0 if hurry.is_set() else webhook_grace)
    log.info("shutdown: done", extra={"seconds": round(time.monotonic() - started, 3)})


async def serve_until_signalled(node: EmulatorNode, server: asyncio.Server) -> None:
    """Serve until SIGTERM or SIGINT, then shut down gracefully (a second signal hurries it) and write the usage
    file when the config names one."""
    loop = asyncio.get_running_loop()
    stop, hurry = asyncio.Event(), asyncio.Event()
    address = server.sockets[0].getsockname() if server.sockets else (node.config.host, node.config.port)
    log.info(
        "emulator listening",
        extra={
            "host": address[0],
            "port": address[1],
            "tls": node.config.tls_cert is not None,
            "apps": [state.app.app_id for state in node.states.values()],
            "node_id": node.node_id,
        },
    )

    def signalled() -> None:
        if stop.is_set():
            log.warning("shutdown: second signal, closing what is left now")
            hurry.set()
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, signalled)
    await stop.wait()
    await graceful_shutdown(node, server, hurry=hurry)
    if node.config.usage_file is not None:
        write_usage_file(node, Path(node.config.usage_file))


def write_usage_file(node: EmulatorNode, path: Path) -> Path:
    """Write the node's usage, added to what an earlier run left in ``path``; returns the file written.

    The file is replaced atomically under an exclusive lock (several worker processes may share it). A file that is
    not a usage file is left alone: the usage goes to ``<path>.new`` instead, and an error is logged.
    """
    document = usage_document((state.meter for state in node.states.values()), generated_by=generated_by())
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        target = path
        if path.exists():
            try:
                document = merge_documents(json.loads(path.read_text()), document)
            except (ValueError, OSError) as exc:
                target = path.with_name(path.name + ".new")
                log.error("usage file %s is not a usage file (%s); writing %s instead", path, exc, target)
        temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        temporary.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
        os.replace(temporary, target)
    log.info("usage written", extra={"path": str(target), "apps": len(document["apps"])})
    return target
