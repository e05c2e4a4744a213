"""Graceful shutdown: answer /ready with 503 for shutdown_delay, stop accepting, close connections with 4200 in
jittered batches, flush webhooks, stop.

Pusher clients reconnect at once after 4200. Closing every socket in the same instant (soketi does) sends them all
back at the same moment; spreading the closes over ``spread`` seconds, in shuffled batches at jittered intervals,
spreads their reconnects over the same window (onto this node's replacement or its peers behind a load balancer).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import itertools
import json
import logging
import math
import os
import random
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from relay.emulator.console import generated_by
from relay.emulator.server import CLOSE_TIMEOUT
from relay.emulator.usage import add_peaks, check_usage_document, merge_documents, read_peaks, usage_document
from relay.errors import RelayError
from relay.protocol.frames import loads

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
    # /ready answers 503, and so does a new Pusher WebSocket handshake; a new Ably connection gets DISCONNECTED.
    node.draining = True
    if config.shutdown_delay > 0:
        # Time for load balancers to see /ready fail. Their health checks open new connections, so the listener
        # stays open meanwhile: closed, they would find the port refusing (and so would requests still routed here).
        log.info("shutdown: draining; /ready answers 503", extra={"delay_s": config.shutdown_delay})
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(hurry.wait(), config.shutdown_delay)
    if server is not None:
        server.close()  # the port is free from now on: a replacement can start on it
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


SAME_SIGNAL_WINDOW_S = 1.0  # see serve_until_signalled


async def serve_until_signalled(node: EmulatorNode, server: asyncio.Server) -> None:
    """Serve until SIGTERM, SIGINT or SIGHUP (a closed terminal; unless it is ignored, as under nohup), then shut
    down gracefully (a second signal hurries it) and write the usage file when the config names one."""
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
        if signum != signal.SIGHUP or signal.getsignal(signum) != signal.SIG_IGN:  # nohup: SIGHUP stays ignored
            loop.add_signal_handler(signum, signalled)
    await stop.wait()
    await graceful_shutdown(node, server, hurry=hurry)
    if node.config.usage_file is not None:
        try:
            write_usage_file(node, Path(node.config.usage_file))
        except OSError as exc:  # checked at start-up; its directory went away (or read-only) since
            log.error("usage file %s could not be written: %s; this run's usage is lost", node.config.usage_file, exc)
            raise SystemExit(1) from None


def write_usage_file(node: EmulatorNode, path: Path) -> Path:
    """Write the node's usage, added to what earlier runs left in ``path``; returns the file written.

    The file is replaced atomically under an exclusive lock on ``<path>.lock`` (several worker processes may share
    it). A file that is not a usage file is left alone: the usage goes to ``<path>.new`` instead, added to what that
    holds, or, when that is not a usage file either, to a new ``<path>.new.<UTC time>-<pid>``; each is logged.

    Peaks: runs that were serving at the same time (the workers of one ``--workers`` run, the nodes of a cluster)
    add theirs up; a run that started after the last writer stopped keeps the larger peak. The lock file remembers,
    per file, when its last writer stopped and the summed peaks of the runs that were serving together then.
    """
    meters = [state.meter for state in node.states.values()]
    own = usage_document(meters, generated_by=generated_by())
    started = min((meter.started_at for meter in meters), default=time.time())
    descriptor = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
    with open(descriptor, "r+", encoding="utf-8") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        runs = _read_runs(lock.read())
        target, old = _usage_target(path)
        last = runs.get(target.name)
        together = old is not None and last is not None and started < last["until"]
        concurrent = last["peaks"] if together and last is not None else {}
        document = own if old is None else merge_documents(old, own, concurrent)
        temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        temporary.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
        os.replace(temporary, target)
        if target.name in (path.name, path.name + ".new"):  # not a file named after the time: it has no successor
            runs[target.name] = {"until": time.time(), "peaks": add_peaks(concurrent, own)}
            lock.seek(0)
            lock.truncate()
            lock.write(json.dumps({"version": 1, "files": runs}) + "\n")
    log.info("usage written", extra={"path": str(target), "apps": len(document["apps"])})
    return target


def _read_runs(text: str) -> dict[str, dict[str, Any]]:
    """What the lock file remembers of the last writers, per file name; nothing when it holds anything else."""
    try:
        value = json.loads(text) if text.strip() else {}
    except ValueError:
        return {}
    files = value.get("files") if isinstance(value, dict) else None
    runs: dict[str, dict[str, Any]] = {}
    for name, run in files.items() if isinstance(files, dict) else ():
        if isinstance(run, dict) and isinstance(run.get("until"), int | float):
            runs[name] = {"until": float(run["until"]), "peaks": read_peaks(run.get("peaks"))}
    return runs


def _usage_target(path: Path) -> tuple[Path, dict[str, Any] | None]:
    """The file to write and the usage it already holds (None: a new file)."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    candidates = [path, path.with_name(path.name + ".new"), path.with_name(f"{path.name}.new.{stamp}-{os.getpid()}")]
    for candidate, following in itertools.pairwise(candidates):
        try:
            return candidate, _read_usage(candidate)
        except ValueError as exc:
            log.error("usage file %s is not a usage file (%s); writing %s instead", candidate, exc, following)
    return candidates[-1], None


def _read_usage(path: Path) -> dict[str, Any] | None:
    """The usage file at ``path``, None when there is none; ValueError when something else is there."""
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ValueError(f"it cannot be read: {exc.strerror or exc}") from None
    try:
        return check_usage_document(loads(text, "the file"))
    except RelayError as exc:
        raise ValueError(exc.message) from None


def usage_file_problem(path: Path) -> str | None:
    """Why the usage file could not be written at ``path`` at shutdown (its directory is missing, is not one, or
    cannot be written to; the path is a directory), or None. Creates the lock file, as writing it would."""
    directory = path.parent
    if not directory.exists():
        return f"its directory {directory} does not exist"
    if not directory.is_dir():
        return f"{directory} is not a directory"
    if path.is_dir():
        return "it is a directory"
    lock = path.with_name(path.name + ".lock")
    probe = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    for created in (lock, probe):
        try:
            os.close(os.open(created, os.O_WRONLY | os.O_CREAT, 0o644))
        except OSError as exc:
            return f"{created} cannot be created: {exc.strerror or exc}"
    probe.unlink()
    return None
