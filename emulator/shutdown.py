"""Graceful shutdown: answer /ready with 503 for shutdown_delay, stop accepting, close connections with 4200 in
jittered batches, flush webhooks, stop.

Pusher clients reconnect at once after 4200. Closing every socket in the same instant (soketi does) sends them all
back at the same moment; spreading the closes over ``spread`` seconds, in shuffled batches at jittered intervals,
spreads their reconnects over the same window (onto this node's replacement or its peers behind a load balancer).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from relay.emulator.server import CLOSE_TIMEOUT
from relay.emulator.usage_file import start_checkpoint, write_usage_file

if TYPE_CHECKING:
    from relay.emulator.server import EmulatorNode

log = logging.getLogger("relay.emulator.shutdown")
# The start line is the server's, not the shutdown's: logged under the logger of the emulator's other server lines
start_log = logging.getLogger("relay.emulator")

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
    for connection in list(node.http_connections):  # requests read before the stop, waiting for their turn
        connection.answer_held()
    # /ready answers 503, and so does a new Pusher WebSocket handshake; a new Ably connection gets DISCONNECTED.
    node.draining = True
    # The delay keeps the listener open for health checks; a listener lost (EmulatorNode._watch_listeners) refuses them
    if config.shutdown_delay > 0 and not node.listener_lost.is_set():
        # Time for load balancers to see /ready fail. Their health checks open new connections, so the listener
        # stays open meanwhile: closed, they would find the port refusing (and so would requests still routed here).
        log.info("shutdown: draining; /ready answers 503", extra={"delay_s": config.shutdown_delay})
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(hurry.wait(), config.shutdown_delay)
    if server is not None:
        server.close()  # the port is free from now on: a replacement can start on it
    # A proxy's idle connections to this node would carry its clients' reconnections here (503) instead of to the
    # replacement listening beside it (reuse_port) or another node.
    for connection in list(node.http_connections):
        connection.close_if_idle()
    sessions = [c for c in node.connections if c.session is not None and not c.session.closed]
    random.shuffle(sessions)
    batches, size, interval = batch_plan(len(sessions), spread)
    log.info(
        "shutdown: stopped accepting connections; closing connections with 4200",
        extra={"connections": len(sessions), "batches": batches, "spread_s": spread},
    )
    for index in range(batches):
        if index and not hurry.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(hurry.wait(), interval * rng(0.5, 1.5))
        for connection in sessions[index * size : (index + 1) * size]:
            connection.shutdown()
    # Wait for the close handshakes (each session released its channels and presence, and emitted their webhooks,
    # as it was closed), and for HTTP clients to take their last answers, before the webhooks are flushed; the abort
    # timer of each close bounds this.
    deadline = time.monotonic() + CLOSE_TIMEOUT + 0.5
    while any(c.session is not None or c.half_closed for c in node.connections):  # a lost one leaves the set
        if time.monotonic() > deadline or hurry.is_set():
            break
        await asyncio.sleep(0.02)
    for connection in list(node.connections):  # idle HTTP keep-alives, console streams, stuck handshakes
        if connection.transport is not None:
            if connection.session is None:
                connection.transport.close()
            else:
                connection.transport.abort()
        elif connection.ending is not None:  # closed, its client not gone yet
            connection.ending.abort()
    await asyncio.sleep(0)  # let connection_lost run
    log.info("shutdown: connections closed; flushing webhooks", extra={"grace_s": webhook_grace})
    await node.close(webhook_grace=0.0 if hurry.is_set() else webhook_grace)
    log.info("shutdown: done", extra={"seconds": round(time.monotonic() - started, 3)})


SAME_SIGNAL_WINDOW_S = 1.0  # see serve_until_signalled


def heeded(signum: int) -> bool:
    """Whether the emulator stops on ``signum`` (SIGTERM, SIGINT or SIGHUP): not on a SIGHUP that is ignored, as
    nohup leaves it, which stays ignored."""
    return signum != signal.SIGHUP or signal.getsignal(signum) != signal.SIG_IGN


async def serve_until_signalled(
    node: EmulatorNode, server: asyncio.Server, listening: Callable[[], None] | None = None
) -> None:
    """Serve until SIGTERM, SIGINT or SIGHUP (a closed terminal; unless it is ignored, as under nohup), or until the
    listening socket stops listening (then raising SystemExit(1) at the end, for a supervisor to restart it), then shut
    down gracefully (a second signal hurries it) and write the usage file when the config names one (checkpointing
    the run's usage beside it meanwhile, for a crash). ``listening`` (the banner, the readiness report) is called once
    the handlers are in place: a stop sent as soon as it is seen must not find the default handler, which kills."""
    loop = asyncio.get_running_loop()
    stop, hurry = asyncio.Event(), asyncio.Event()
    address = server.sockets[0].getsockname() if server.sockets else (node.config.host, node.config.port)
    start_log.info(
        "emulator listening",
        extra={
            "host": address[0],
            "port": address[1],
            "tls": node.config.tls_cert is not None,
            "apps": [state.app.app_id for state in node.states.values()],
            "node_id": node.node_id,
            "open_files_limit": node.open_files_limit,
        },
    )

    first_signal: list[float] = []

    def signalled() -> None:
        now = loop.time()
        # Within a second it is the same stop told twice, not an operator's second Ctrl-C: a service manager signals
        # every process of the group (systemd's default KillMode), and the --workers supervisor passes it on as well.
        if first_signal and now - first_signal[0] >= SAME_SIGNAL_WINDOW_S and not hurry.is_set():
            log.warning("shutdown: second signal, closing what is left now")
            hurry.set()
        if not first_signal:
            first_signal.append(now)
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        if heeded(signum):
            loop.add_signal_handler(signum, signalled)
    if listening is not None:
        listening()
    usage_file = node.config.usage_file
    checkpoint = None if usage_file is None else start_checkpoint(node)

    async def stop_when_listener_lost() -> None:
        await node.listener_lost.wait()
        stop.set()

    watch = asyncio.create_task(stop_when_listener_lost())
    await stop.wait()
    watch.cancel()
    if node.listener_lost.is_set():
        log.error("shutdown: no longer listening; stopping with exit status 1 for a supervisor to restart the emulator")
    await graceful_shutdown(node, server, hurry=hurry)
    if usage_file is not None:
        if checkpoint is not None:
            await checkpoint.stop()
        try:
            write_usage_file(node, Path(usage_file), checkpoint)
        except OSError as exc:  # checked at start-up; its directory went away (or read-only) since
            lost = "this run's usage is lost" if checkpoint is None else checkpoint.lost()
            log.error("usage file %s could not be written: %s; %s", usage_file, exc, lost)
            raise SystemExit(1) from None
    if node.listener_lost.is_set():
        raise SystemExit(1)
