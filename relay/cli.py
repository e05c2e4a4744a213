"""The ``relay`` command line."""

from __future__ import annotations

import argparse
import asyncio
import bisect
import copy
import errno
import gc
import inspect
import ipaddress
import logging.config
import math
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import ssl
import stat
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

from relay import __version__
from relay.config import ProviderConfig, refuse_quoted, refuse_undecoded, trimmed_environment, undecoded, url_host
from relay.cost.cli import add_cost_command
from relay.emulator.config import (
    PUBLIC_SECRET,
    WEBHOOK_FORMATS,
    App,
    EmulatorConfig,
    InvalidSetting,
    Webhook,
    load_config,
    public_secret_warning,
)
from relay.errors import ConfigError
from relay.protocol.frames import dumps as literal  # a JSON string is a JS and a Python literal alike
from relay.protocol.hosts import is_dual_stack, is_loopback


class _TextOut(Protocol):
    """Where help is written (argparse's ``file``: anything with ``write(str)``)."""

    def write(self, text: str, /) -> object: ...


def _emulator_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "emulator",
        help="run the self-hosted Pusher-protocol server",
        description="Run a Pusher-protocol server (WebSocket protocol 7 and the HTTP API) on one port. "
        "The flags define the default app; --config replaces it with the TOML file's [[apps]] (with their limits and "
        "webhooks) when the file has any (the default app's flags are then refused: they would be lost), and may set "
        "[server] settings. A flag that is given wins over the file's [server] setting of the same name.",
    )
    # The [server] flags default to None, so that a flag typed out (even with the default value) can win over --config.
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port for WebSocket and HTTP API (default 6001)")
    parser.add_argument("--app-id", action=_DefaultAppFlag, default="app-id", help="default app's id (default app-id)")
    parser.add_argument("--key", action=_DefaultAppFlag, default="app-key", help="default app's key (default app-key)")
    parser.add_argument(
        "--secret",
        action=_DefaultAppFlag,
        default=PUBLIC_SECRET,
        help=f"default app's secret (default {PUBLIC_SECRET})",
    )
    parser.add_argument("--config", help="TOML file with [server] settings and [[apps]] tables")
    parser.add_argument(
        "--webhook-url", action="append", default=[], help="send the default app's webhooks here; repeat for several"
    )
    parser.add_argument(
        "--webhook-format",
        choices=WEBHOOK_FORMATS,
        help="the --webhook-url webhooks as Pusher sends them (default) or as Ably's batched webhooks",
    )
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    parser.add_argument("--redis-url", help="share state with other nodes through this Redis (redis://host:port/db)")
    parser.add_argument("--redis-prefix", help="namespace of this deployment's Redis keys and channel (default relay)")
    parser.add_argument(
        "--node-ttl", type=float, help="seconds after which a silent node's members are removed (default 10)"
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="processes on this machine, sharing --redis-url (default 1)"
    )
    parser.add_argument(
        "--reuse-port",
        action="store_true",
        default=None,
        help="bind --port with SO_REUSEPORT (Linux), so that a replacement started with --reuse-port listens beside "
        "this process before it is stopped: a restart on one host without refused connections (docs/emulator.md)",
    )
    operations = parser.add_argument_group("operations (docs/emulator.md)")
    operations.add_argument("--log-json", action="store_true", help="log one JSON object a line (stderr)")
    operations.add_argument("--tls-cert", help="PEM certificate chain: serve wss:// and https:// on --port")
    operations.add_argument("--tls-key", help="PEM private key of --tls-cert")
    operations.add_argument(
        "--console-token",
        help="token that opens /console, /metrics and /usage (else the config file's console_token, else "
        "$RELAY_CONSOLE_TOKEN); without one they are open only on a loopback --host",
    )
    operations.add_argument("--usage-file", help="write the usage meter here at shutdown (for relay cost --usage)")
    operations.add_argument(
        "--usage-checkpoint",
        type=float,
        help="seconds between writes of the run's usage beside --usage-file, which a crash leaves to the next run "
        "(default 60)",
    )
    operations.add_argument(
        "--shutdown-delay",
        type=float,
        help="on SIGTERM, seconds of /ready answering 503 and new WebSocket connections refused (the HTTP API still "
        "serves) before the port closes and the first connection is closed (default 0)",
    )
    operations.add_argument(
        "--shutdown-spread", type=float, help="seconds over which shutdown closes connections with 4200 (default 2)"
    )
    parser.set_defaults(run=_run_emulator, default_app_flags=())


class _DefaultAppFlag(argparse.Action):
    """Stores the value, and that the flag was typed out (even with its default value): with a config file's
    [[apps]], which replace the default app, such a flag is refused rather than lost."""

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any, option: str | None = None
    ) -> None:
        setattr(namespace, self.dest, values)
        namespace.default_app_flags = (*namespace.default_app_flags, option)


def _run_emulator(args: argparse.Namespace) -> int:
    try:
        config = _emulator_config(args)
    except InvalidSetting as exc:
        raise _flag_error(exc) from None
    if config.redis_url is not None:
        setting = "--redis-url" if args.redis_url is not None else f"redis_url in {args.config}"
        _require_redis(setting)
        from relay.emulator.cluster import url_option_problem

        problem = url_option_problem(config.redis_url)
        if problem is not None:  # found now, not as a traceback from inside the first connection
            raise ConfigError(f"{setting}: {problem}")
    if args.workers < 1:
        raise ConfigError("--workers must be 1 or more")
    if config.reuse_port and not hasattr(socket, "SO_REUSEPORT"):
        setting = "--reuse-port" if args.reuse_port else f"reuse_port in {args.config}"
        raise ConfigError(f"{setting} needs SO_REUSEPORT, which this platform ({sys.platform}) does not have")
    from relay.emulator.descriptors import log, open_files_limit, quota_past_limit, raise_open_files_limit

    raised = raise_open_files_limit()  # each connection is a descriptor: the soft limit (often 1024) would cap them
    if raised is not None:  # before the workers start, which inherit it
        log.info("open-file limit raised from %d to %d", *raised, extra={"before": raised[0], "after": raised[1]})
    if config.redis_url is None:  # a cluster's quota counts every node's connections, each node with its own limit
        quotas = {app.app_id: app.max_connections for app in config.apps if app.max_connections is not None}
        past = quota_past_limit(quotas, open_files_limit())
        if past is not None:
            log.warning("%s", past)
    exposed = public_secret_warning(config, args.config)
    if exposed is not None:
        log.warning("%s", exposed)
    if args.workers == 1:
        sock = _shared_socket(config) if config.reuse_port else None
        _run(_serve_emulator(config, sock, announce=True, show_secrets=not args.log_json))
        return 0
    if config.redis_url is None:
        raise ConfigError("--workers needs --redis-url: the worker processes share state through Redis")
    from relay.emulator.cluster import check_reachable

    asyncio.run(check_reachable(config.redis_url))  # once, here, rather than once from each worker
    return _run_workers(config, args.workers, log_json=args.log_json)


def _flag_error(exc: InvalidSetting) -> ConfigError:
    """A flag's value is wrong: name the flag, as the user typed it, rather than the setting behind it."""
    flag = "--webhook-url" if exc.setting == "url" else f"--{exc.setting.replace('_', '-')}"
    return ConfigError(f"{flag} {exc.message.removeprefix(exc.setting + ' ')}")


def _require_redis(setting: str) -> None:
    """Checked before serving: without it, the first Redis call would fail deep inside the server, as a traceback."""
    try:
        import redis  # noqa: F401
    except ImportError:
        raise ConfigError(
            f"{setting} needs the redis package: pip install 'relay-realtime[redis]' "
            "(in a checkout: pip install -e '.[redis]')"
        ) from None


def _emulator_config(args: argparse.Namespace) -> EmulatorConfig:
    app = App(
        app_id=args.app_id,
        key=args.key,
        secret=args.secret,
        webhooks=tuple(Webhook(url=url, format=args.webhook_format or "pusher") for url in args.webhook_url),
    )
    if args.webhook_format is not None and not args.webhook_url:
        raise ConfigError(
            "--webhook-format is the format of the --webhook-url webhooks: give one, or set format in a config "
            "file's [[apps.webhooks]]"
        )
    config = EmulatorConfig(apps=(app,))
    if args.config == "":  # as Path(""), the current directory: "config file . cannot be read: Is a directory"
        raise ConfigError("--config must be a non-empty string, got ''")
    if args.config is not None:
        config = load_config(Path(args.config), defaults=config)
        typed = [*dict.fromkeys(args.default_app_flags), *(["--webhook-url"] if args.webhook_url else [])]
        if typed and app not in config.apps:  # the file's [[apps]] replaced it: the flags' values would be lost
            raise ConfigError(
                f"{', '.join(typed)} set the default app, which the [[apps]] of {args.config} replace: set them in "
                "the file's [[apps]] (app_id, key, secret, [[apps.webhooks]] url) or leave them out"
            )
    given = {
        "host": args.host,
        "port": args.port,
        "redis_url": args.redis_url,
        "redis_prefix": args.redis_prefix,
        "node_ttl": args.node_ttl,
        "reuse_port": args.reuse_port,
    }
    config = replace(config, **{name: value for name, value in given.items() if value is not None})
    return _operations_config(args, config)


def cannot_listen(host: str, port: int, exc: OSError, fix: str = "") -> ConfigError:
    """The port is taken, or the host is not this machine's: one line, not a traceback, and the same line from
    every command and the examples (asyncio's message repeats the address: the errno says it alone); ``fix`` is the
    caller's way out, such as the flag that picks another port."""
    reason = exc.strerror or str(exc)
    if exc.errno is not None and exc.errno > 0 and not isinstance(exc, socket.gaierror):
        reason = os.strerror(exc.errno)
    return ConfigError(f"cannot listen on {url_host(host)}:{port}: {reason}{f'; {fix}' if fix else ''}")


def port_taken_fix(exc: OSError, command: str) -> str:
    """What to do about a port in use, for a command that takes ``--port``; nothing for other failures (a host not
    on this machine has its own reason)."""
    if exc.errno != errno.EADDRINUSE:
        return ""
    return (
        f"another server is listening there ({command} already running?): stop it, or pick another port with --port "
        "(0 picks a free one)"
    )


def _cannot_bind(config: EmulatorConfig, exc: OSError) -> ConfigError:
    """The emulator's port could not be bound: why, and what to do."""
    fix = port_taken_fix(exc, "an emulator")
    if config.reuse_port and exc.errno == errno.EADDRINUSE:  # only a socket without SO_REUSEPORT refuses to share
        fix = (
            "the server listening there does not share its port (an emulator started without --reuse-port?): stop "
            "it, or pick another port with --port (0 picks a free one)"
        )
    return cannot_listen(config.host, config.port, exc, fix)


def _shared_socket(config: EmulatorConfig) -> socket.socket:
    """The single process's socket with ``reuse_port``: bound with SO_REUSEPORT, as each ``--workers`` worker's, so
    that another emulator with ``reuse_port`` can listen on the port too (its replacement, in a restart)."""
    try:
        return _unlistening_socket(config.host, config.port)
    except OSError as exc:
        raise _cannot_bind(config, exc) from None


async def _serve_emulator(
    config: EmulatorConfig,
    sock: socket.socket | None,
    *,
    announce: bool,
    show_secrets: bool = True,
    ready: Callable[[], None] | None = None,
) -> None:
    from relay.emulator.server import EmulatorNode, start_server
    from relay.emulator.shutdown import serve_until_signalled

    node = EmulatorNode(config)
    try:
        server = await start_server(node, sock=sock)
    except OSError as exc:
        await node.close(webhook_grace=0)  # it joined the cluster in Redis: leave, rather than be counted until its TTL
        raise _cannot_bind(config, exc) from None
    # What exists now (modules, configuration, the apps' state) lives as long as the process: keep it out of the
    # full collections, whose pause stops every connection and grows with what they walk. Collected first, so no
    # start-up garbage is frozen with it.
    gc.collect()
    gc.freeze()

    def listening() -> None:
        if announce:
            _print_banner(_client_settings(config, server.sockets[0].getsockname()[1], show_secrets=show_secrets))
        if ready is not None:
            ready()

    await serve_until_signalled(node, server, listening)  # then a graceful shutdown, and the usage file
    await server.wait_closed()


def _print_banner(banner: str) -> None:
    """The client settings on standard output, once the emulator listens. Standard output that cannot take them (a
    closed pipe, a full disk, an encoding without one of their characters) is said in the log, and the emulator
    serves on: its clients do not need the banner (it was a traceback, and the emulator gone)."""
    from relay.emulator.descriptors import log

    try:
        print(banner, flush=True)
    except UnicodeEncodeError as exc:  # encoded whole before anything is written: written again, escaped
        encoding = sys.stdout.encoding
        log.warning(
            "standard output's encoding (%s) cannot write %r of the client settings: they are shown escaped; set "
            "PYTHONIOENCODING=utf-8 to see them as they are",
            encoding,
            exc.object[exc.start : exc.end],
        )
        _print_banner(banner.encode(encoding, "backslashreplace").decode(encoding))
    except OSError as exc:
        # What could not be written stays buffered: without this, every later flush (at exit too) fails again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        log.warning("the client settings could not be written to standard output (%s); serving on", exc.strerror or exc)


# A worker that exits while the supervisor is not stopping is replaced, after a delay that grows with the deaths of
# the last WORKER_FAILURE_WINDOW seconds (the first at once) and, while another worker is serving, with the
# replacements that failed in a row, up to the last delay. Replacements start one at a time, and one serves once it
# reports that it listens. With no worker serving, the WORKER_FAILURE_LIMIT-th death within the window stops the
# emulator (a worker that dies at start-up would otherwise be restarted for ever). While one serves, the supervisor
# keeps it and retries: during a Redis outage every replacement fails at start-up, but the workers serving do not.
WORKER_FAILURE_LIMIT = 5
WORKER_FAILURE_WINDOW = 60.0
WORKER_RESTART_DELAYS = (0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0)
# A worker not listening this long after it started is stuck (Redis answering nothing while it registers): the first
# workers are then given up on, a replacement is stopped and counted as a failed start, so the others are replaced.
WORKER_START_SECONDS = 30.0
# Stopping signals: the supervisor forwards them to its workers as SIGTERM; each worker drains on its own. (Looked up
# by name: Windows has no SIGHUP, and this module serves every command there.)
STOP_SIGNALS: tuple[signal.Signals, ...] = tuple(
    getattr(signal, name) for name in ("SIGTERM", "SIGINT", "SIGHUP") if hasattr(signal, name)
)


def _run_workers(config: EmulatorConfig, workers: int, *, log_json: bool) -> int:
    """N processes, each an emulator node of the same cluster with its own SO_REUSEPORT listening socket, so the
    kernel spreads new connections across them. The supervisor holds the port bound (never listening, so it is
    handed no connection) to resolve --port 0 and keep the port while a dead worker's replacement starts."""
    if not config.reuse_port:  # else the SO_REUSEPORT sockets would share the port with another emulator's
        _check_can_listen(config.host, config.port, "an emulator", dual_stack=is_dual_stack(config.host))
    reservation = socket.socket(_family(config.host))
    reservation.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        reservation.bind((config.host, config.port))
    except OSError as exc:
        raise _cannot_bind(config, exc) from None
    config = replace(config, port=reservation.getsockname()[1])
    context = multiprocessing.get_context("fork")
    listening = context.Semaphore(0)
    supervisor = _Supervisor(
        lambda: context.Process(target=_worker, args=(config, os.getpid(), listening, log_json), daemon=True)
    )
    banner = _client_settings(config, config.port, show_secrets=not log_json)
    return supervisor.run(workers, listening, lambda: _print_banner(banner))


class _Supervisor:
    """Starts the workers, replaces those that die until a stopping signal, then waits for them. Its signal handlers
    are in place before the first worker is forked, so a stop sent at any moment (even while the workers are still
    starting, or as soon as the banner is seen) is forwarded to the workers rather than killing the supervisor."""

    def __init__(self, new_process: Callable[[], Any]) -> None:
        self.new_process = new_process  # an unstarted multiprocessing (fork) Process running one worker
        self.processes: list[Any] = []  # the live workers
        self.workers = 0  # how many there should be
        self.stopping = False

    def stop(self, signum: int, _: object) -> None:  # each signal is forwarded: a second one hurries the workers' drain
        self.stopping = True
        for process in self.processes:
            if process.is_alive():
                os.kill(process.pid, signal.SIGTERM)

    def start_worker(self) -> Any:
        process = self.new_process()
        # Blocked over the fork: the stop handler cannot run between the start and the append (and miss the new
        # worker), and the worker unblocks them once it has dropped the supervisor's handlers.
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            process.start()
            self.processes.append(process)
            if self.stopping:  # the stop came after this process was made, before the fork: not forwarded to it
                os.kill(process.pid, signal.SIGTERM)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        return process

    def run(self, workers: int, started: Any, listening: Callable[[], None]) -> int:
        """Start ``workers`` workers, each releasing the semaphore ``started`` once it listens, then call
        ``listening`` (the banner) and supervise. The exit status: 0 when every worker shut down cleanly after a stop
        (whatever happened to the workers replaced before), else 1; 2 when a worker printed a configuration error."""
        from relay.emulator.shutdown import heeded

        self.workers = workers
        for signum in STOP_SIGNALS:
            if heeded(signum):
                signal.signal(signum, self.stop)
        for _ in range(workers):
            if not self.stopping:
                self.start_worker()
        deadline = time.monotonic() + WORKER_START_SECONDS
        for _ in range(workers):
            while not started.acquire(timeout=0.1):
                if self.stopping:  # stopped before serving: wait for the workers, print no banner
                    return self.supervise(started)
                ended = next((process.exitcode for process in self.processes if process.exitcode is not None), None)
                if ended is not None or time.monotonic() > deadline:
                    for process in self.processes:  # the others would serve a cluster missing one of its workers
                        if process.is_alive():
                            process.terminate()
                    if ended is not None:
                        return 2 if ended == 2 else 1  # 2: the worker printed its configuration error
                    raise ConfigError(
                        f"a worker did not start listening within {WORKER_START_SECONDS:g} s (see its log above)"
                    )
        if not self.stopping:
            listening()
        return self.supervise(started)

    def supervise(self, started: Any) -> int:
        """Replace the workers that die until a stopping signal, then wait for them; when workers keep dying and none
        is left serving, stop them all. ``started`` is the semaphore each worker releases once it listens. Returns
        the exit status described in ``run``."""
        from relay.emulator.descriptors import log

        failed = False  # a worker did not shut down cleanly
        gave_up: int | None = None  # the exit status, when the workers kept dying
        # The workers that died unexpectedly within the last WORKER_FAILURE_WINDOW seconds: when, and whether before
        # they listened (a failed start, forgotten once a replacement listens: what failed it, such as Redis, is over).
        deaths: list[tuple[float, bool]] = []
        failed_starts = 0  # replacements in a row that died before they listened
        restarts: list[float] = []  # when each replacement is due, soonest first
        # The replacement started and not listening yet. One at a time: the semaphore says that a worker listens, not
        # which, and a replacement that cannot reach Redis is only one process retrying, not several.
        starting: Any = None
        started_at = 0.0  # when it started
        while self.processes or (restarts and not self.stopping):
            if starting is not None and started.acquire(False):
                log.info(
                    "worker %d serving: %d of %d workers",
                    starting.pid,
                    len(self.processes),
                    self.workers,
                    extra={"pid": starting.pid},
                )
                starting, failed_starts = None, 0
                deaths = [death for death in deaths if not death[1]]
            now = time.monotonic()
            if starting is None and restarts and restarts[0] <= now and not self.stopping:
                restarts.pop(0)
                starting, started_at = self.start_worker(), now
                log.info("worker %d started", starting.pid, extra={"pid": starting.pid})
            elif starting is not None and now - started_at > WORKER_START_SECONDS and starting.is_alive():
                log.error(
                    "worker %d did not start listening within %g s; stopping it",
                    starting.pid,
                    WORKER_START_SECONDS,
                    extra={"pid": starting.pid},
                )
                starting.kill()  # its death below counts as a failed start
                started_at = now  # not asked again while it dies
            if self.stopping:
                timeout = None
            elif starting is not None:  # polling its semaphore
                timeout = 0.25
            else:
                timeout = min(max(0.0, restarts[0] - now), 0.25) if restarts else None
            ready = multiprocessing.connection.wait([process.sentinel for process in self.processes], timeout)
            if starting is not None and starting.sentinel in ready and started.acquire(False):
                starting = None  # it listened before it died: a serving worker's death, not a failed start
            for process in [process for process in self.processes if process.sentinel in ready]:
                process.join()
                self.processes.remove(process)
                code = process.exitcode
                fields = {"pid": process.pid, "exit_status": code}
                if self.stopping:
                    if code not in (0, -signal.SIGTERM):
                        failed = True
                        log.error("worker %d %s while shutting down", process.pid, _exit_reason(code), extra=fields)
                    continue
                failed_start = process is starting
                if failed_start:
                    starting = None
                    failed_starts += 1
                now = time.monotonic()
                deaths = [*(death for death in deaths if death[0] > now - WORKER_FAILURE_WINDOW), (now, failed_start)]
                serving = len([other for other in self.processes if other is not starting])
                if not serving and len(deaths) >= WORKER_FAILURE_LIMIT:
                    reason = f"{len(deaths)} workers died within {WORKER_FAILURE_WINDOW:g} s and none serving"
                    log.error(
                        "worker %d %s; giving up: %s; stopping the emulator",
                        process.pid,
                        _exit_reason(code),
                        reason,
                        extra=fields,
                    )
                    gave_up = 2 if code == 2 else 1
                    self.stop(signal.SIGTERM, None)
                    continue
                # With a worker serving, failed starts (Redis still down) keep the delay growing, up to the cap,
                # however spread out they are; with none, the quick retries before giving up.
                failures = max(len(deaths), failed_starts) if serving else len(deaths)
                delay = WORKER_RESTART_DELAYS[min(failures, len(WORKER_RESTART_DELAYS)) - 1]
                when = f" in {delay:g} s" if delay else ""
                log.error(
                    "worker %d %s; starting a replacement%s (%d of %d workers still serving)",
                    process.pid,
                    _exit_reason(code),
                    when,
                    serving,
                    self.workers,
                    extra=fields,
                )
                bisect.insort(restarts, now + delay)
        if gave_up is not None:
            return gave_up
        return 0 if self.stopping and not failed else 1


def _exit_reason(code: int | None) -> str:
    """How a worker ended, from its exit code (negative: the signal that killed it)."""
    if code is not None and code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with status {code}"


def _worker(config: EmulatorConfig, parent: int, listening: Any, log_json: bool) -> None:
    # A replacement is forked from the supervisor, with its handlers (and those signals blocked): back to the defaults
    # a worker starts with (a signal ignored, as nohup ignores SIGHUP, stays so); its server installs its own handlers
    # once it is listening. SIGINT is ignored until then: Ctrl-C in a terminal signals the whole process group, and
    # the supervisor passes the stop on as SIGTERM, which ends a starting worker quietly (a KeyboardInterrupt printed
    # multiprocessing's traceback, and a worker it reached before the supervisor was replaced as a crashed one).
    for signum in STOP_SIGNALS:
        if signal.getsignal(signum) != signal.SIG_IGN:
            signal.signal(signum, signal.SIG_IGN if signum == signal.SIGINT else signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()
    sock = _unlistening_socket(config.host, config.port)
    try:
        _run(_serve_emulator(config, sock, announce=False, ready=listening.release))
    except ConfigError as exc:  # found by the worker (Redis went away since the supervisor's check): as main says it
        _print_configuration_error(exc, json_format=log_json)
        sys.exit(2)


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _unlistening_socket(host: str, port: int) -> socket.socket:
    """A worker's socket, bound to the shared port as ``socket.create_server`` binds it, but not listening: the kernel
    hands connections only to listening sockets, so none waits on a worker that is still starting (reaching Redis
    may take seconds) and is reset if it fails to start. Its server listens once the node has started."""
    sock = socket.socket(_family(host))
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if sock.family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if is_dual_stack(host) else 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def _exit_with_parent(parent: int) -> None:
    """A worker whose supervisor died (even by SIGKILL) shuts down too, instead of serving on as an orphan."""
    while os.getppid() == parent:
        time.sleep(0.5)
    os.kill(os.getpid(), signal.SIGTERM)


def _serve_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run the HTTP gateway: publish with one fetch, channel auth for browsers",
        description="Run the gateway configured by RELAY_URL (else PUSHER_URL; PUSHER_APP_ID, PUSHER_KEY, "
        "PUSHER_SECRET, PUSHER_CLUSTER or PUSHER_HOST; ABLY_API_KEY, as relay publish), RELAY_API_TOKEN, "
        "RELAY_JWT_SECRET or RELAY_JWT_PUBLIC_KEY or RELAY_JWKS_FILE, RELAY_JWT_AUDIENCE, RELAY_JWT_ISSUER, "
        "RELAY_JWT_LEEWAY, RELAY_JWT_COOKIE, RELAY_JWT_USER_CLAIM, RELAY_RULES_FILE, RELAY_CORS_ORIGINS, "
        "RELAY_PUBLIC_URL, RELAY_PUBLIC_WS_URL, RELAY_PROVIDER_TIMEOUT, RELAY_PROVIDER_ATTEMPTS, "
        "RELAY_PROVIDER_DEADLINE and RELAY_WEBHOOK_FORWARD_URL. OpenAPI docs at /docs.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    parser.add_argument(
        "--request-timeout",
        type=float,
        default=30.0,
        help="seconds a request may take to arrive whole, from the connection opening or the previous answer on it; "
        "past them it is answered 408 and its connection closed (default %(default)g)",
    )
    parser.add_argument(
        "--shutdown-timeout",
        type=float,
        default=30.0,
        help="on SIGTERM, seconds to let the requests in flight finish before they are cut off (default %(default)g)",
    )
    parser.set_defaults(run=_run_serve)


def _run_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from relay.gateway import GatewaySettings, create_app
    from relay.serve import server_options

    try:  # the emulator's checks and messages: uvicorn took --port 70000 and listened on 70000 % 65536
        EmulatorConfig(apps=(), host=args.host, port=args.port)
    except InvalidSetting as exc:
        raise _flag_error(exc) from None
    for flag, seconds in (("--request-timeout", args.request_timeout), ("--shutdown-timeout", args.shutdown_timeout)):
        if not (math.isfinite(seconds) and seconds > 0):
            raise ConfigError(f"{flag} must be a number of seconds > 0, got {seconds:g}")
    settings = GatewaySettings.from_env()
    log_config = _gateway_logging(args.log_level)
    logging.config.dictConfig(log_config)  # before create_app, which may warn
    app = create_app(settings)
    _check_can_listen(args.host, args.port, "relay serve")
    from relay.emulator.descriptors import raise_open_files_limit

    gateway_log = logging.getLogger("relay.gateway")
    # Each caller's connection, and each to the provider, is a descriptor: under a service's usual soft limit of
    # 1024, a burst of serverless functions' publishes had the connections past it closed unanswered. Logged at
    # debug: the info lines at start are what the gateway was given (docs/gateway.md shows them)
    raised = raise_open_files_limit()
    if raised is not None:
        gateway_log.debug("open-file limit raised from %d to %d", *raised)
    for line in settings.summary():
        gateway_log.info("%s", line)
    # h11 with the gateway's refusals and head limit (server_options says why not httptools).
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        access_log=False,
        log_config=log_config,
        **server_options(args.request_timeout, args.shutdown_timeout),
    )
    return 0


def _publish_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "publish",
        help="publish one event to one or more channels, through the provider RELAY_URL names",
        description="Publish one event through the provider that --url, RELAY_URL or the conventional variables "
        "(PUSHER_URL; PUSHER_APP_ID, PUSHER_KEY, PUSHER_SECRET, PUSHER_CLUSTER or PUSHER_HOST; ABLY_API_KEY) name, as "
        "relay.publish() does. Example: relay publish orders order-ready '{\"id\": 42}'",
        epilog="Exit status: 0 published; 1 the provider refused or could not be reached; 2 nothing was sent "
        "(no provider configured, or input the provider would refuse). Prefer RELAY_URL to --url, which shows the "
        "secret to ps and the shell's history.",
    )
    parser.add_argument("channels", nargs="+", metavar="CHANNEL", help="one or more channel names")
    parser.add_argument("event", metavar="EVENT", help="the event name")
    parser.add_argument(
        "data",
        metavar="DATA",
        help="the event's data as JSON, or - to read it from standard input (one final newline left out)",
    )
    parser.add_argument("--string", action="store_true", help="send DATA as a string, not read as JSON")
    parser.add_argument("--socket-id", help="leave out this connection (the publisher's own browser tab)")
    parser.add_argument(
        "--idempotency-key",
        help="Ably delivers a publish with this key once in 2 minutes, so a script may run it again after a failure "
        "(so does the emulator, with an emulator:// URL; Pusher has no such thing: each run sends)",
    )
    parser.add_argument("--url", help="the provider URL (default: RELAY_URL, or the conventional variables)")
    parser.set_defaults(run=_run_publish)


def _run_publish(args: argparse.Namespace) -> int:
    import json

    from relay.client import Relay, configuration_from_env, parse_configuration
    from relay.errors import ProtocolError, RelayError

    environ = os.environ if args.url is None else {**os.environ, "RELAY_URL": _url_flag(args.url)}
    try:
        configuration = configuration_from_env(environ)  # --url as RELAY_URL: the master key variable applies to both
    except ConfigError as exc:
        # Named as the flag typed out: "RELAY_URL: …" sent the user to a variable they may not have set, or whose
        # value is fine (--url wins over it).
        if args.url is not None and exc.message.startswith("RELAY_URL: "):
            raise type(exc)(f"--url: {exc.message.removeprefix('RELAY_URL: ')}") from None
        raise
    if all(config.scheme == "memory" for config in parse_configuration(configuration)[1]):
        raise ConfigError("memory:// keeps events inside one process: name a provider that subscribers can reach")
    try:
        text = _read_data(args.data)
    except KeyboardInterrupt:
        print("relay publish: interrupted while reading standard input; nothing was sent", file=sys.stderr)
        return 130
    if text is None:
        return 2
    if args.string:
        data: object = text
    else:
        try:
            data = json.loads(text)
        except ValueError as exc:
            hint = "write a string in quotes, or pass --string"
            print(f"relay publish: DATA is not JSON ({exc}): {hint}", file=sys.stderr)
            return 2
        except RecursionError:
            print("relay publish: DATA is JSON nested too deeply to be read (or sent)", file=sys.stderr)
            return 2
    with Relay(configuration) as client:
        try:
            result = client.publish(
                args.channels, args.event, data, socket_id=args.socket_id, idempotency_key=args.idempotency_key
            )
        except KeyboardInterrupt:
            print(
                "relay publish: interrupted before the provider answered: the event may have been published",
                file=sys.stderr,
            )
            return 130
        except ConfigError:
            raise  # nothing sent: the configuration lacks what this publish needs (an encrypted channel's key)
        except ProtocolError as exc:
            if exc.answered_by is None:  # refused before anything was sent
                print(f"relay publish: {exc.message}", file=sys.stderr)
                return 2
            print(f"relay: publish failed: {exc.message}", file=sys.stderr)
            return 1
        except RelayError as exc:
            print(f"relay: publish failed: {exc.message}", file=sys.stderr)
            return 1
    ids = f" (message id {', '.join(result.message_ids)})" if result.message_ids else ""
    # A resend of its key the emulator answered: nothing went out this time, which a script retrying needs to know
    done = "already published (replayed for its idempotency key)" if result.replayed else "published"
    try:
        print(f"{done} {args.event} to {', '.join(result.channels)}{ids}", flush=True)
    except OSError:  # a closed pipe or a full disk: the event went out all the same, so no failure to retry
        # What could not be written stays buffered: without this, Python's flush at exit fails again (status 120).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def _url_flag(url: str) -> str:
    """``--url`` as RELAY_URL would be read (the whitespace around it dropped), checked here to name the flag: an
    empty RELAY_URL counts as unset, so an empty --url would publish through PUSHER_URL or ABLY_API_KEY instead."""
    if not url.strip():
        raise ConfigError(f"--url must be a provider URL (scheme://…), got {url!r}")
    problem = undecoded(url)
    if problem is not None:
        raise ConfigError(f"--url {problem}")
    return url


def _read_data(argument: str) -> str | None:
    """DATA as given, or standard input's for ``-`` (None, said why, when there is none to read)."""
    if argument != "-":
        return argument
    if sys.stdin is None:
        print("relay publish: DATA is -, but there is no standard input to read it from", file=sys.stderr)
        return None
    try:
        text = sys.stdin.read()
    except UnicodeDecodeError:  # a UTF-8 locale's strict decoding; Python's UTF-8 mode keeps the bytes as surrogates
        text = None
    if text is None or undecoded(text) is not None:
        print("relay publish: DATA is -, but standard input is not UTF-8 text", file=sys.stderr)
        return None
    return text.removesuffix("\n")  # as the shell's $(...) leaves the newline out


def _gateway_logging(level: str) -> dict[str, Any]:
    """uvicorn's logging configuration, with the ``relay`` loggers in its format at ``--log-level``: a warning at
    start or a logged 500 reads ``WARNING:  relay.gateway: …`` (it was a bare line from Python's last-resort
    handler, with no level or logger)."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["formatters"]["relay"] = {
        "()": "uvicorn.logging.DefaultFormatter",
        "fmt": "%(levelprefix)s %(name)s: %(message)s",
        "use_colors": None,
    }
    config["handlers"]["relay"] = {"formatter": "relay", "class": "logging.StreamHandler", "stream": "ext://sys.stderr"}
    config["loggers"]["relay"] = {"handlers": ["relay"], "level": level.upper(), "propagate": False}
    return config


def _check_can_listen(host: str, port: int, holder: str, *, dual_stack: bool = False) -> None:
    """Bind each address ``host`` resolves to as uvicorn (or asyncio) binds it, or for ``::`` with IPv4 too as the
    emulator binds it (``dual_stack``), then let go: uvicorn reports a failed bind only as a logged exception and exit
    status 3, and the ``--workers`` sockets would share a port in use. Something else may take the port in between;
    the check is for mistakes. ``holder``: what may be holding it."""
    try:
        addresses = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        for family, kind, protocol, _, address in addresses:
            with socket.socket(family, kind, protocol) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if dual_stack else 1)
                probe.bind(address)
    except OSError as exc:
        raise cannot_listen(host, port, exc, port_taken_fix(exc, holder)) from None


def _operations_config(args: argparse.Namespace, config: EmulatorConfig) -> EmulatorConfig:
    """Apply the operations flags and set up logging (structured, secrets redacted)."""
    from relay.emulator.logs import configure_logging

    for flag, path in (("--tls-cert", args.tls_cert), ("--tls-key", args.tls_key)):
        if path == "":  # as an operator may try to turn off the file's TLS: the flags can only set it, not unset it
            off = " (to serve without the TLS the config file sets, remove tls_cert and tls_key from its [server])"
            raise ConfigError(f"{flag} is empty: an empty path is not a file{off if config.tls_cert else ''}")
    if (args.tls_cert is None) != (args.tls_key is None):
        raise ConfigError("--tls-cert and --tls-key go together (a PEM certificate chain and its private key)")
    env = trimmed_environment()
    flags = {
        "tls_cert": args.tls_cert,
        "tls_key": args.tls_key,
        # The flag, then the file's, then the environment's: a token written in the file for this server is meant
        # more precisely than one the environment may hold for others.
        "console_token": _console_token(args.console_token) or config.console_token or _env_console_token(env),
        "usage_file": args.usage_file,
        "usage_checkpoint": args.usage_checkpoint,
        "shutdown_delay": args.shutdown_delay,
        "shutdown_spread": args.shutdown_spread,
    }
    config = replace(config, **{name: value for name, value in flags.items() if value is not None})
    if config.usage_file is not None:
        from relay.emulator.usage_file import usage_file_problem

        # Absolute from here on, as it is at start: the errors and the "usage written" log line name the file itself.
        usage_file = Path(config.usage_file).absolute()
        config = replace(config, usage_file=str(usage_file))
        problem = usage_file_problem(usage_file)
        if problem is not None:  # found now rather than at shutdown, with the run's usage lost
            raise ConfigError(f"usage file {usage_file} cannot be written: {problem}")
    elif args.usage_checkpoint is not None:
        raise ConfigError("--usage-checkpoint needs --usage-file (or usage_file in the config's [server])")
    for path in (config.tls_cert, config.tls_key):
        if path is not None:
            _check_tls_file(path)
    if config.tls_cert is not None and config.tls_key is not None:
        from relay.emulator.server import make_ssl_context

        try:
            make_ssl_context(config.tls_cert, config.tls_key)
        except ssl.SSLError as exc:
            if exc.reason == "KEY_VALUES_MISMATCH":  # both PEM: one of them was replaced without the other
                raise ConfigError(
                    f"TLS key {config.tls_key} is not the private key of the certificate in {config.tls_cert}: give"
                    " the key the certificate was issued for"
                ) from None
            raise ConfigError(
                f"TLS files {config.tls_cert} and {config.tls_key} are not a PEM certificate chain and its private key"
                f" ({exc.reason or exc})"
            ) from None
        except OSError as exc:  # read above, but not now (it changed in between): the error does not say which file
            reason = exc.strerror or str(exc)
            raise ConfigError(f"TLS files {config.tls_cert} and {config.tls_key} cannot be read: {reason}") from None
    configure_logging(args.log_level, json_format=args.log_json, secrets=config.secrets)
    if config.usage_file is not None:
        from relay.emulator.usage_file import recover_usage

        try:
            recover_usage(Path(config.usage_file))  # what runs that did not stop left beside it
        except OSError as exc:
            raise ConfigError(f"usage file {config.usage_file} cannot be written: {exc.strerror or exc}") from None
    return config


def _console_token(flag: str | None) -> str | None:
    """``--console-token`` read as RELAY_CONSOLE_TOKEN is (the whitespace around it dropped); typed out, one left
    empty is refused, where the variable's would count as unset and the file's or the environment's token be used."""
    if flag is None:
        return None
    if not flag.strip():
        raise ConfigError("--console-token must be a non-empty string (whitespace is not a token)")
    return flag.strip()


def _env_console_token(env: dict[str, str]) -> str | None:
    """RELAY_CONSOLE_TOKEN, refused by its own name when it holds a byte that is not UTF-8 (it was said to be
    --console-token's, a flag not given), or is in quotes (docker's --env-file keeps them: every scrape was a 401)."""
    token = env.get("RELAY_CONSOLE_TOKEN")
    if token is not None:
        refuse_undecoded(token, "RELAY_CONSOLE_TOKEN")
        refuse_quoted(token, "RELAY_CONSOLE_TOKEN")
    return token


def _check_tls_file(path: str) -> None:
    """A TLS file that is missing, not a file or cannot be read (permissions) is a configuration error naming it and
    why, rather than a traceback from the TLS library (whose error does not say which of the two files it was)."""
    try:
        mode = os.stat(path).st_mode
        if stat.S_ISDIR(mode):
            raise ConfigError(f"TLS file {path} is a directory")
        if not stat.S_ISREG(mode):
            raise ConfigError(f"TLS file {path} is not a regular file")
        with open(path, "rb") as file:
            file.read(1)
    except FileNotFoundError:
        raise ConfigError(f"TLS file {path} does not exist") from None
    except OSError as exc:  # permissions (of the file or a directory on its path), a path through a file, I/O errors
        raise ConfigError(f"TLS file {path} cannot be read: {exc.strerror or exc}") from None


def _client_settings(config: object, port: int, *, show_secrets: bool = True) -> str:
    """The settings each kind of client needs, printed at start. With ``--log-json`` (a service, whose output goes to
    a journal or a log store) the secrets are hidden: they are in the configuration."""
    from relay.emulator.ably import ably_client_settings

    assert isinstance(config, EmulatorConfig)
    in_url = url_host(reachable_host(config.host))  # what every client line takes: pusher-js, the SDKs and Ably's
    tls = config.tls_cert is not None
    http, ws, port_option = ("https", "wss", "wssPort") if tls else ("http", "ws", "wsPort")
    # pusher-js's TLS strategy is its "ws" transport with TLS on: ["wss"] alone leaves it no transport (failed).
    transports = '["ws", "wss"]' if tls else '["ws"]'
    prefix = config.path_prefix  # as requests must carry it (the server compares the raw path)
    listening = f"{http}://{in_url}:{port} (WebSocket {ws}://{in_url}:{port}{prefix}/app/{{key}})"
    ws_path = f'wsPath: "{prefix}", ' if prefix else ""
    # The Pusher server SDKs have no path setting: they send /apps/… without the prefix, which is then refused (404).
    sdks_note = f" (not with path_prefix {prefix}: they send /apps/… without it; use RELAY_URL)" if prefix else ""
    if config.console_token:
        token = quote(config.console_token, safe="") if show_secrets else "***"
        console = f"{http}://{in_url}:{port}/console?token={token}"
    elif is_loopback(config.host):
        console = f"{http}://{in_url}:{port}/console"
    else:  # the console's own rule: off the loopback only with a token
        console = "off (not bound to a loopback address: start with --console-token to open it)"
    lines = [f"Relay emulator listening on {listening}", f"Console:     {console}"]
    if reachable_host(config.host) != config.host:  # every address (0.0.0.0, ::): the settings name the loopback's
        lines.append(
            f"Elsewhere:   bound to every address ({config.host}); the settings here use {in_url}, which reaches it "
            f"from this machine alone: from another machine or a container, use this machine's address or host name "
            f"in place of {in_url}"
        )
    lines.append("")
    for app in config.apps:
        secret = app.secret if show_secrets else "***"
        lines += [
            f"app {app.app_id}:" if app.enabled else f"app {app.app_id} (disabled: connections get 4003, the API 403):",
            "  pusher-js:   new Pusher("
            f"{literal(app.key)}, {{ wsHost: {literal(in_url)}, {port_option}: {port}, {ws_path}forceTLS: "
            f'{str(tls).lower()}, enabledTransports: {transports}, cluster: "mt1" }})',
            f"  server SDKs: app_id={literal(app.app_id)} key={literal(app.key)} secret={literal(secret)} "
            f"host={literal(in_url)} port={port} ssl={str(tls).lower()}{sdks_note}{_python_sdk_note(app.app_id)}",
            f"  RELAY_URL:   {_relay_url(app, reachable_host(config.host), port, tls, prefix, show_secrets)}",
        ]
    lines += ["", ably_client_settings(config, reachable_host(config.host), port, show_secrets=show_secrets)]
    return "\n".join(lines)


def reachable_host(host: str) -> str:
    """The address a client on this machine connects to for a server listening on ``host``: for every address of a
    family (0.0.0.0, ::), that family's loopback (:: serves IPv4 too, but the settings name the address bound)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:  # a name, such as localhost
        return host
    if not address.is_unspecified:
        return host
    return "::1" if address.version == 6 else "127.0.0.1"


def _python_sdk_note(app_id: str) -> str:
    # pusher-http-python raises "ValueError: Invalid app id" for an id that is not ASCII digits; the others take any.
    if app_id.isascii() and app_id.isdigit():
        return ""
    return (
        ' (pusher-http-python takes only a numeric app_id: give the app one, as --app-id 1 or app_id = "1" in the '
        "config; the Relay library's RELAY_URL takes any)"
    )


def _relay_url(app: App, host: str, port: int, tls: bool, prefix: str, show_secrets: bool) -> str:
    """The app's ``emulator://`` URL as the library writes one (its credentials percent-encoded)."""
    config = ProviderConfig("emulator", app.key, app.secret, app.app_id, host, port, tls, path_prefix=prefix)
    return config.url(privacy=not show_secrets)


def _run(coroutine: Coroutine[Any, Any, None]) -> None:
    try:
        # Only the import may fall back: an ImportError from inside the server is the server's, and the coroutine
        # cannot be run twice.
        try:
            import uvloop
        except ImportError:  # not installed on Windows
            asyncio.run(coroutine)
            return
        uvloop.run(coroutine)
    finally:
        # A Ctrl-C while uvloop loaded or the loop was made left the coroutine never run, and Python's "coroutine
        # was never awaited" RuntimeWarning followed "relay emulator: interrupted". One that ran is left to the loop.
        if inspect.getcoroutinestate(coroutine) == inspect.CORO_CREATED:
            coroutine.close()


# The help's characters beyond ASCII (relay cost's × and ÷), as plain text for an output whose encoding lacks them.
_PLAIN = str.maketrans({"×": "x", "÷": "/", "≥": ">=", "≤": "<=", "–": "-", "—": "-", "…": "...", "→": "->"})


class _Parser(argparse.ArgumentParser):
    """The ``relay`` parser, and its subcommands' (argparse makes them of the same class)."""

    def print_help(self, file: _TextOut | None = None) -> None:
        """The help, written whatever standard output's encoding: in an ASCII locale (PYTHONIOENCODING=ascii, a
        locale without UTF-8), ``relay cost --help`` raised UnicodeEncodeError at its ×, a traceback."""
        out = sys.stdout if file is None else file
        text = self.format_help()
        encoding = getattr(out, "encoding", None) or "utf-8"
        try:
            text.encode(encoding)
        except UnicodeEncodeError:
            text = text.translate(_PLAIN).encode(encoding, "replace").decode(encoding)
        except LookupError:  # an encoding Python does not know: written as it is
            pass
        self._print_message(text, out)


def build_parser() -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = _Parser(  # the subcommands' parsers are made of its class
        prog="relay", description="Relay: one realtime API over Pusher, Ably and a self-hosted Pusher-protocol server."
    )
    parser.add_argument("--version", action="version", version=f"relay {__version__}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND", dest="command", required=True)
    _emulator_parser(subparsers)
    _serve_parser(subparsers)
    _publish_parser(subparsers)
    add_cost_command(subparsers)
    for command in subparsers.choices.values():
        command.set_defaults(command_parser=command)
    return parser


def _fill_closed_standard_descriptors() -> None:
    """Open /dev/null as each of standard input, output and error that was closed (``relay emulator >&-``): else the
    first socket took its number, and uvloop, which never closes descriptors 0 to 2, aborted at the server's stop."""
    for descriptor in (0, 1, 2):
        try:
            os.fstat(descriptor)
        except OSError:
            os.open(os.devnull, os.O_RDWR)  # the lowest free number: this one, as those below it are open


def _print_configuration_error(exc: ConfigError, *, json_format: bool) -> None:
    """``relay: configuration error: …`` on stderr; with ``--log-json`` (known before any configuration error: the
    flags are parsed first) as a JSON log line holding that text, as every other line of the run is one, for a log
    pipeline that reads one JSON object a line."""
    line = f"relay: configuration error: {exc.message}"
    if json_format:
        from relay.emulator.logs import JsonFormatter, Redactor

        record = logging.LogRecord("relay.emulator", logging.ERROR, __file__, 0, line, None, None)
        line = JsonFormatter(Redactor()).format(record)  # the message holds no secret; URLs are redacted in it
    print(line, file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    _fill_closed_standard_descriptors()
    parser = build_parser()
    args, unrecognized = parser.parse_known_args(argv)
    if unrecognized:  # said by the command's parser, with its usage: the top-level one showed only "relay COMMAND"
        args.command_parser.error(f"unrecognized arguments: {' '.join(unrecognized)}")
    try:
        result: int = args.run(args)
    except ConfigError as exc:
        _print_configuration_error(exc, json_format=getattr(args, "log_json", False))
        return 2
    except KeyboardInterrupt:  # Ctrl-C before the command handles SIGINT itself (the servers then stop cleanly)
        print(f"relay {args.command}: interrupted", file=sys.stderr)
        return 130  # as a shell reports a command that SIGINT ended
    return result


if __name__ == "__main__":
    sys.exit(main())
