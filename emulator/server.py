"""The emulator's network shell: one asyncio protocol per TCP connection, HTTP/1.1 (httptools) for the API and the
WebSocket upgrade, then RFC 6455 frames (websockets' sans-I/O protocol) feeding a :class:`Session`.

It skips ASGI on purpose: fan-out writes one prebuilt frame straight to each subscriber's transport, and an HTTP
publish is handled without a task or a framework in between.
"""

from __future__ import annotations

import asyncio
import codecs
import itertools
import logging
import random
import re
import socket
import ssl
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

import httptools
import httpx
from websockets.datastructures import Headers
from websockets.exceptions import InvalidHandshake
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory
from websockets.frames import CloseCode, Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import State
from websockets.server import ServerProtocol

from relay.emulator.ably import AblyNode
from relay.emulator.ably_auth import AblyError
from relay.emulator.ably_realtime import AblySession
from relay.emulator.ably_rest import AblyRest
from relay.emulator.ably_rest import error_answer as ably_error_answer
from relay.emulator.config import App, EmulatorConfig, unprefixed
from relay.emulator.console import STREAMING, Operations
from relay.emulator.descriptors import crowded_at, open_files_limit
from relay.emulator.http_api import (
    CORS_HEADERS,
    PUBLISHED,
    HttpApi,
    Response,
    error_response,
    method_not_allowed,
)
from relay.emulator.hub import AppState
from relay.emulator.limits import TokenBucket
from relay.emulator.logs import Redactor
from relay.emulator.session import OVER_CAPACITY, Session
from relay.emulator.usage import AppMeter
from relay.emulator.webhooks import WebhookDispatcher
from relay.emulator.wire import deflated, encode_text, fast_accept, switching_protocols
from relay.errors import ConfigError, clipped
from relay.protocol import frames
from relay.protocol.codes import ErrorCode
from relay.protocol.hosts import is_dual_stack
from relay.protocol.http_framing import MAX_HEAD_BYTES, chunked_alone
from relay.protocol.socket_ids import make_socket_id

if TYPE_CHECKING:
    from relay.emulator.cluster import RedisCluster

log = logging.getLogger("relay.emulator")
_utf8_decoder = codecs.getincrementaldecoder("utf-8")
# websockets' sans-I/O protocol logs every handshake at INFO; the emulator reports connections itself.
logging.getLogger("websockets.server").setLevel(logging.WARNING)

CLOSE_TIMEOUT = 3.0
WARNING_INTERVAL = 60.0  # seconds between warnings of a flood (near the open-file limit, an address over its cap)
REFUSAL_LOGS_PER_SECOND = 1.0  # refused WebSocket connections logged (EmulatorNode.log_refusal); all are counted
LOGGED_CLIENT_TEXT = 100  # characters of what a client sent kept in a log record (see log_refusal)
TLS_HANDSHAKE_RECORD = b"\x16\x03"  # the first bytes of a TLS ClientHello: a content type, a major version
TLS_ON_PLAIN_PORT = "TLS handshake on a plain port: serve TLS (--tls-cert) or connect without (forceTLS: false)"
# A connection's reads are handled this much per turn of the event loop; the rest waits, with reading paused, for its
# next turn (HttpConnection.data_received). One read holds up to 256 KiB: some 37,000 tiny WebSocket frames or 7,000
# pipelined requests, which handled at once stopped every other connection for 0.1 s a read, and seconds under a flood
# from a few clients. A piece this size takes milliseconds. It also keeps a head from passing MAX_HEAD_BYTES unmeasured
# by arriving with other requests in one read (see HttpConnection.on_message_begin).
READ_TURN_BYTES = 16 * 1024
# Timeouts of HTTP connections, until they become WebSockets (docs/emulator.md "Limits and protection"). A kept-alive
# connection idle this long is closed: nginx's keepalive_timeout, longer than the 60 s after which AWS's load balancers
# drop an idle connection, so that a load balancer never sends a request on a connection the emulator is closing.
HTTP_IDLE_TIMEOUT = 75.0
# A request whose head and body have not all arrived this long after its first byte (or a new connection that has
# sent nothing for as long) is closed; a started request is answered 408 first. nginx gives 60 s to each of head and
# body, renewed by every read, so a byte a minute keeps its connection; this bounds the whole request, and 30 s is
# ample for a 64 KiB head and a body of max_request_bytes (1 MiB) from the servers that call this API.
HTTP_REQUEST_TIMEOUT = 30.0
# A WebSocket message may come in this many frames at most. websockets bounds a message's bytes across its fragments
# (max_size), not its frames: empty continuation frames, 6 bytes each on the wire, never reach that limit, and each
# cost a parse for no token of the frame budget (which a message takes once, whole). Clients send a message in one
# frame (browsers, the SDKs); this is room for a 16 KiB message in 16-byte pieces.
MAX_MESSAGE_FRAGMENTS = 1024
DIRECT_AFTER_IDLE = 0.001  # seconds without writes after which frames are written at once (HttpConnection.write)
LISTEN_BACKLOG = 4096
# Seconds between checks that the listening sockets still listen (EmulatorNode._watch_listeners): a check per second,
# not one per accept, which libuv does not report.
LISTENER_CHECK_INTERVAL = 1.0
# permessage-deflate (RFC 7692), which browsers offer. Without context takeover on the server's side, a message
# compresses the same way for every connection, so a fan-out compresses once (relay.emulator.wire.deflated); without
# it on the client's side, no connection keeps an inflate window between messages.
_EXTENSIONS = [ServerPerMessageDeflateFactory(server_no_context_takeover=True, client_no_context_takeover=True)]
_WS_PATH = re.compile(r"/app/([^/?]+)")
# Ably's codes for what the server refuses before a route sees the request; others are 40000 or 50000 by status
_ABLY_REFUSAL_CODES = {413: 40009}
_SERVED_METHODS = ("GET", "HEAD", "POST", "OPTIONS")
_NOT_REPEATED = (b"upgrade", b"expect")  # when a request is parsed again without its Upgrade header
_REASONS = {
    200: "OK",
    204: "No Content",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    413: "Payload Too Large",
    426: "Upgrade Required",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
}


def liveness_sweep_interval(apps: Iterable[App]) -> float:
    """Seconds between the checks that close silent or unauthenticated sockets: a quarter of the shortest timeout
    they enforce, between 0.05 s and 1 s. user_authentication_timeout counts too: left out, a socket that neither
    signed in nor joined a private channel within 0.2 s was closed up to 1.2 s after it opened."""
    shortest = min(
        min(app.activity_timeout, app.pong_timeout, app.user_authentication_timeout or app.pong_timeout) for app in apps
    )
    return max(0.05, min(1.0, shortest / 4))


class EmulatorNode:
    """Everything one emulator process holds: the apps' state, the HTTP API and the live sessions."""

    def __init__(
        self,
        config: EmulatorConfig,
        *,
        wall_clock: Callable[[], float] = time.time,
        http_idle_timeout: float = HTTP_IDLE_TIMEOUT,
        http_request_timeout: float = HTTP_REQUEST_TIMEOUT,
    ) -> None:
        self.config = config
        self.node_id = config.node_id if config.node_id is not None else random.randrange(1, 2**31)
        self._socket_counter = itertools.count(1)
        self._wall_clock = wall_clock
        self._http: httpx.AsyncClient | None = None
        self.states: dict[str, AppState] = {}
        self.by_key: dict[str, AppState] = {}
        self.api: HttpApi | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self.connections: set[HttpConnection] = set()
        # Past this many connections the process nears its open-file limit (set at start): see connections_crowded.
        self.open_files_limit: int | None = None
        self.crowded_at = sys.maxsize
        self.per_address: dict[str, int] = {}  # open connections by client address, under max_connections_per_address
        # Ably connections held for a resume, by the address whose socket dropped, oldest first: each keeps its
        # socket's place in per_address until it is resumed or let go (see admit_address).
        self.held_by_address: dict[str, dict[AblySession, None]] = {}
        # One warning a minute at most, of each kind: a flood would otherwise log once per connection.
        self._crowded_warnings = TokenBucket(1 / WARNING_INTERVAL, time.monotonic())
        self._capped_warnings = TokenBucket(1 / WARNING_INTERVAL, time.monotonic())
        self._refusal_logs = TokenBucket(REFUSAL_LOGS_PER_SECOND, time.monotonic())  # see log_refusal
        self._refusals_unlogged = 0
        self._redact: Redactor | None = None
        # Connections still speaking HTTP (not WebSockets, not console streams), swept for their timeouts.
        self.http_connections: set[HttpConnection] = set()
        self.http_idle_timeout = http_idle_timeout
        self.http_request_timeout = http_request_timeout
        self._http_sweeper: asyncio.Task[None] | None = None
        # loop.time() at the last sweep: what HTTP connections stamp their waits with, at no cost per request.
        self.http_clock = 0.0
        self.cluster: RedisCluster | None = None
        # Set by relay.emulator.shutdown: /ready answers 503, and so do new Pusher WebSocket handshakes.
        self.draining = False
        # Set once a listening socket has stopped listening (see _watch_listeners); serve_until_signalled then stops.
        self.listener_lost = asyncio.Event()
        self._listener_watch: asyncio.Task[None] | None = None
        self.ops = Operations(self)  # /health, /ready, /metrics, /usage, /console and the HTTP API rate limit
        self.ably = AblyNode(self, wall_clock)  # Ably REST paths and realtime connections on "/" (docs/ably.md)
        # Write coalescing (HttpConnection.write). An "iteration" runs from the first frame written after the last
        # one ended to the end of the event loop's round of callbacks.
        self._unflushed: list[HttpConnection] = []  # connections with frames queued in this iteration
        self._iteration = 0  # counts iterations that wrote; HttpConnection._iteration is the last it wrote in
        self._in_iteration = False
        self._direct = True  # this iteration writes each frame at once (the loop was idle before it)
        self._iteration_ended = 0.0  # time.perf_counter() at the end of the last iteration
        self._loop: asyncio.AbstractEventLoop | None = None  # the running loop, once started

    def _begin_iteration(self) -> None:
        self._iteration += 1
        self._in_iteration = True
        # After a quiet spell a publish is alone: writing at once is quickest. Under load, frames are queued and
        # each connection gets its iteration's frames in one send.
        self._direct = time.perf_counter() - self._iteration_ended > DIRECT_AFTER_IDLE
        # The loop start() ran in: asyncio.get_running_loop() makes a getpid() system call (CPython 3.11), here once
        # per iteration that writes.
        (self._loop or asyncio.get_running_loop()).call_soon(self._end_iteration)

    def _end_iteration(self) -> None:
        connections, self._unflushed = self._unflushed, []
        for connection in connections:
            connection.write_queued()
        self._in_iteration = False
        self._iteration_ended = time.perf_counter()

    async def start(self) -> None:
        loop = self._loop = asyncio.get_running_loop()
        self.open_files_limit = open_files_limit()
        self.crowded_at = crowded_at(self.open_files_limit) or sys.maxsize
        # No cap on connections: each webhook sends one request at a time, so they are as many as the webhooks, and
        # httpx's default 100 let a hundred receivers that never answer hold up every other webhook's requests
        self._http = httpx.AsyncClient(timeout=10.0, limits=httpx.Limits(max_connections=None))
        if self.config.redis_url is not None:
            from relay.emulator.cluster import ClusterSettings, RedisCluster  # the optional extra relay[redis]

            settings = ClusterSettings(self.config.redis_url, self.config.redis_prefix, self.config.node_ttl)
            self.cluster = RedisCluster(settings, self.node_id)
        for app in self.config.apps:
            meter = AppMeter(app.app_id, self._wall_clock)
            webhooks = WebhookDispatcher(app, self._http, clock=self._wall_clock, on_delivery=meter.webhook_sent)
            state = AppState(
                app, webhooks, loop.time, self.cluster, node_id=self.node_id, wall_clock=self._wall_clock, meter=meter
            )
            self.states[app.app_id] = state
            for key in app.keys:
                self.by_key[key] = state
        # Built when an Ably client first comes, but at once where other nodes' Ably members need somewhere to go, or
        # where an Ably-format webhook tells of Pusher members' presence (as Ably members) before any Ably client.
        if self.cluster is not None or any(hook.format == "ably" for app in self.config.apps for hook in app.webhooks):
            self.ably.ready()
        if self.cluster is not None:
            await self.cluster.start(self.states)
        limited = any(app.api_rate_limit is not None for app in self.config.apps)
        self.api = HttpApi(
            self.states,
            self.by_key,
            path_prefix=self.config.path_prefix,
            wall_clock=self._wall_clock,
            on_authenticated=self.ops.api_authenticated if limited else None,  # no call per request without a limit
        )
        self._sweeper = asyncio.create_task(self._sweep_liveness())
        self.http_clock = loop.time()
        self._http_sweeper = asyncio.create_task(self._sweep_http())

    def admit_address(self, connection: HttpConnection, transport: asyncio.BaseTransport) -> bool:
        """Count ``connection`` against its address's cap (``max_connections_per_address``), or close it at once:
        a refused connection costs a descriptor for no longer than it takes to close."""
        peer = transport.get_extra_info("peername")
        address = peer[0] if isinstance(peer, tuple) else str(peer)
        held = self.per_address.get(address, 0)
        limit = self.config.max_connections_per_address
        if limit is not None and held >= limit and address in self.held_by_address:
            # A live socket goes before a connection waiting for one: the oldest held one is let go (its members
            # leave, as when its time to resume is up), freeing its place.
            next(iter(self.held_by_address[address])).release()
            held = self.per_address.get(address, 0)
        if limit is not None and held >= limit:
            self.ops.metrics.address_refused += 1
            if self._capped_warnings.take_if_available(time.monotonic()):
                log.warning(
                    "%s holds %d connections, the most one address may (max_connections_per_address): closing more",
                    address,
                    held,
                    extra={"address": address, "max_connections_per_address": limit},
                )
            transport.abort()  # type: ignore[attr-defined]
            return False
        self.per_address[address] = held + 1
        connection._address = address
        return True

    def release_address(self, address: str) -> None:
        held = self.per_address.pop(address, 1) - 1
        if held:
            self.per_address[address] = held

    def hold_address(self, address: str, session: AblySession) -> Callable[[], None]:
        """Keep the place of ``session``'s dropped socket under ``address``'s cap while the connection is held for a
        resume: else one address dropping its sockets held any number of connections (2,000 in 5 s, with their
        channels). What frees the place, once the connection is resumed or let go."""
        self.held_by_address.setdefault(address, {})[session] = None

        def free() -> None:
            held = self.held_by_address.get(address)
            if held is None or session not in held:
                return
            del held[session]
            if not held:
                del self.held_by_address[address]
            self.release_address(address)

        return free

    def connections_crowded(self) -> None:
        """Connections near the open-file limit: say so (once a minute at most), as past it the kernel refuses them
        and libuv drops them unanswered, unlogged."""
        if not self._crowded_warnings.take_if_available(time.monotonic()):
            return
        log.warning(
            "%d connections open, near the open-file limit of %s: connections past it are dropped unanswered; "
            "raise it (ulimit -n, or LimitNOFILE= in a systemd unit)",
            len(self.connections),
            self.open_files_limit,
            extra={"connections": len(self.connections), "open_files_limit": self.open_files_limit},
        )

    def log_refusal(self, code: int, reason: str, path: str) -> None:
        """Log a refused WebSocket connection, at most once a second: anyone can send refused handshakes, as many and
        as long as they like. Every refusal is counted (relay_connections_refused_total); a line says how many went
        unlogged before it. What the client sent (the key in the path and the reason) is cut to 100 characters, after
        the secrets in it are redacted, so that a cut cannot leave part of one."""
        if not self._refusal_logs.take_if_available(time.monotonic()):
            self._refusals_unlogged += 1
            return
        unlogged, self._refusals_unlogged = self._refusals_unlogged, 0
        if self._redact is None:
            self._redact = Redactor(self.config.secrets)
        fields = {
            "code": int(code),
            "reason": clipped(self._redact(reason), LOGGED_CLIENT_TEXT),
            "path": clipped(self._redact(path), LOGGED_CLIENT_TEXT),
        }
        log.info("connection refused", extra={**fields, "unlogged": unlogged} if unlogged else fields)

    def new_socket_id(self) -> str:
        return make_socket_id(self.node_id, next(self._socket_counter))

    async def _sweep_liveness(self) -> None:
        loop = asyncio.get_running_loop()
        interval = liveness_sweep_interval(self.config.apps)
        while True:
            await asyncio.sleep(interval)
            now = loop.time()
            for state in self.states.values():
                for peer in list(state.peers.values()):
                    if isinstance(peer, Session | AblySession):
                        peer.check_liveness(now)

    async def _sweep_http(self) -> None:
        """Close HTTP connections past their timeouts: one pass over the HTTP connections a second (a quarter of the
        shortest timeout when shorter), rather than a timer per request."""
        loop = asyncio.get_running_loop()
        interval = min(1.0, self.http_idle_timeout / 4, self.http_request_timeout / 4)
        # A wait is stamped with the clock of the sweep before it began, up to an interval early: the interval is
        # added so that no connection is closed before its time (it is within two intervals after).
        idle_limit = self.http_idle_timeout + interval
        request_limit = self.http_request_timeout + interval
        while True:
            await asyncio.sleep(interval)
            now = self.http_clock = loop.time()
            for connection in list(self.http_connections):
                began = connection.request_began
                if began is not None:
                    if now - began >= request_limit:
                        connection.timed_out(self.http_request_timeout)
                elif now - connection.idle_since >= idle_limit:
                    connection.timed_out(self.http_idle_timeout)

    def watch_listeners(self, server: asyncio.Server) -> None:
        """Check once a second that ``server``'s sockets still listen (see :meth:`_watch_listeners`)."""
        self._listener_watch = asyncio.create_task(self._watch_listeners(server))

    async def _watch_listeners(self, server: asyncio.Server) -> None:
        """Notice a listening socket that no longer listens, and say so: draining (/ready answers 503) and
        ``listener_lost`` set, which stops ``relay emulator`` with exit status 1 for its supervisor to restart it.

        Nothing else would tell. The libuv in uvloop 0.23 drops a failed ``accept`` unreported: on a listener the
        kernel stopped (shut down, as ``shutdown(SHUT_RD)`` does) each one fails with EINVAL and the loop wakes for it
        again at once, spinning a core and logging nothing (older libuv passed the error on, and uvloop closed the
        listener; asyncio's selector loop logs a traceback at each wake). Meanwhile the process ran on, and /health
        and /ready, over connections already open, answered that it was well."""
        listeners = [(sock, sock.getsockname()) for sock in server.sockets]  # taken now: once closed, uvloop lists none
        while True:
            await asyncio.sleep(LISTENER_CHECK_INTERVAL)
            if not server.is_serving():  # closed on purpose (a shutdown)
                return
            for sock, address in listeners:
                if not _listens(sock):
                    log.error(
                        "the listening socket on %s port %s stopped listening: new connections are refused; "
                        "/ready answers 503",
                        address[0],
                        address[1],
                        extra={"host": address[0], "port": address[1]},
                    )
                    self.draining = True
                    self.listener_lost.set()
                    return

    async def close(self, *, webhook_grace: float = 5.0) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._listener_watch is not None:
            self._listener_watch.cancel()
        if self._http_sweeper is not None:
            self._http_sweeper.cancel()
        self.ops.close()
        for connection in list(self.connections):
            connection.shutdown()
        self.ably.release_held()
        if self.cluster is not None:
            await self.cluster.close()
        # One grace for all apps, not one after another: with several receivers down, the drain would outlast a
        # service manager's stop timeout and the process be killed before the usage file is written.
        await asyncio.gather(*(state.webhooks.close(grace=webhook_grace) for state in self.states.values()))
        if self._http is not None:
            await self._http.aclose()


class HttpConnection(asyncio.Protocol):
    """One TCP connection: HTTP requests until an upgrade, then a WebSocket carrying one Pusher or Ably session."""

    def __init__(self, node: EmulatorNode) -> None:
        self.node = node
        self.transport: asyncio.Transport | None = None
        self.parser: httptools.HttpRequestParser | None = httptools.HttpRequestParser(self)
        self._url = b""
        self._raw_headers: list[tuple[bytes, bytes]] = []
        self._headers: list[tuple[str, str]] | None = None
        self._body: bytes | bytearray = b""
        self._refused = False  # answered before its end (413, 431), or its body grew over the limit: not handled
        # Bytes read since the current request's head began, at least as many as the head has so far, until the head
        # is complete (then -1); 0 between requests.
        self._head_bytes = 0
        self._finished = False
        # For the timeouts (EmulatorNode._sweep_http): node.http_clock when the current request's first byte came,
        # None between requests (a new connection counts as a request begun: one that sends nothing gets its
        # timeout); and when the last answer was sent.
        self.request_began: float | None = node.http_clock
        self.idle_since = node.http_clock
        self.ws: ServerProtocol | None = None
        self.session: Session | AblySession | None = None
        self._fragments = bytearray()  # a fragmented message's bytes so far
        self._fragment_count = 0  # and its frames
        self._fragmented_opcode = Opcode.TEXT
        self._queued: list[bytes] = []  # frames written in this loop iteration, sent together (see write)
        self._address: str | None = None  # the client's address, counted while a per-address cap is set
        self.ending: asyncio.Transport | None = None  # the transport once half-closed after a WebSocket's close

    # -- asyncio.Protocol -------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not asyncio subclasses
        # Past this much unsent output the client is not reading what it is sent: see pause_writing.
        transport.set_write_buffer_limits(high=self.node.config.max_send_buffer)  # type: ignore[attr-defined]
        node = self.node
        if node.config.max_connections_per_address is not None and not node.admit_address(self, transport):
            return
        node.connections.add(self)
        node.http_connections.add(self)
        if len(node.connections) >= node.crowded_at:
            node.connections_crowded()

    def connection_lost(self, exc: Exception | None) -> None:
        address = self._address
        self.node.connections.discard(self)
        self.node.http_connections.discard(self)
        session = self.session
        if isinstance(session, AblySession):
            session.connection_lost(self)
            if address is not None and session.held and session.address_place is None:
                session.address_place = self.node.hold_address(address, session)
                address = None
        elif session is not None:
            session.connection_lost()
        if address is not None:
            self.node.release_address(address)

    # What was read beyond this turn's share (READ_TURN_BYTES), with reading paused until its turn: None when reading.
    _held: bytes | None = None

    # The client has sent its last byte: what is left is handled at once (nothing more can come, so it is bounded).
    _at_eof = False

    def data_received(self, data: bytes) -> None:
        rest = b""
        if len(data) > READ_TURN_BYTES and not self._at_eof:
            data, rest = data[:READ_TURN_BYTES], data[READ_TURN_BYTES:]
        if self.ws is not None:
            self._websocket_data(data)
            session = self.session
            wait = session.flood_wait() if isinstance(session, Session) else 0.0
            if rest or wait > 0.0:
                self._wait_turn(rest, wait)
            return
        # A request that asked to switch to another protocol than WebSocket is parsed again without its Upgrade
        # header, and so is each one pipelined behind it: in turn, not nested (hundreds fit in one read).
        while data:
            data = self._parse(data)
        if rest:
            self._wait_turn(rest, 0.0)

    def _wait_turn(self, rest: bytes, wait: float) -> None:
        """Pause reading; after the other connections' turns (or, for a client flooding its frame budget, ``wait``
        seconds, so the kernel holds its frames and its sends slow down) handle ``rest`` and read again."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        self._held = rest
        transport.pause_reading()
        loop = asyncio.get_running_loop()
        if wait > 0.0:
            loop.call_later(wait, self._take_turn)
        else:
            loop.call_soon(self._take_turn)

    def _take_turn(self) -> None:
        transport = self.transport
        if self._held is None or transport is None or transport.is_closing():
            return
        if self._writing_paused and self.ws is None:
            return  # an HTTP client not reading its answers: resume_writing takes the turn once it has
        held, self._held = self._held, None
        if held:
            self.data_received(held)
        if self._held is None and not self._writing_paused:  # not waiting again, nor for the client to read
            transport.resume_reading()

    def eof_received(self) -> None:
        """The client closed its side. Over TLS this comes while reading is paused, and the transport closes after
        its last read: what is held is handled now, else it was lost (pipelined requests, or frames, sent just
        before a half-close). The transport then closes, once what was written has gone out."""
        self._at_eof = True
        held, self._held = self._held, None
        if held:
            self.data_received(held)

    def _parse(self, data: bytes) -> bytes:
        """Feed ``data`` to the parser; what is to be parsed again (see ``_without_upgrade``), or nothing."""
        parser = self.parser
        if parser is None or self._finished:  # answered with Connection: close, or a refused upgrade: drop the rest
            return b""
        size = len(data)
        if self._head_bytes >= 0:  # the current request's head is not complete yet
            self._head_bytes += size
        else:
            self._after_head_bytes += size
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            if self._finished:  # its head was refused (431)
                return b""
            return self._switch_protocols(data[upgrade.args[0] :])
        except httptools.HttpParserCallbackError as exc:
            # Not malformed HTTP (httptools wraps what a callback raised in a subclass of HttpParserError): a request
            # this server failed to answer. The parser stops at the error, so the connection ends after the 500;
            # every other connection goes on.
            path = split_target(self._url.decode("latin-1"))[0][:200]
            log.error("HTTP request failed", exc_info=exc.__context__ or exc, extra={"path": path})
            self._refuse(500, "internal error")
            return b""
        except httptools.HttpParserError:
            if self._head_bytes == len(data) and data.startswith(TLS_HANDSHAKE_RECORD):  # a head's first bytes
                # A client set for TLS (pusher-js forceTLS, an https:// URL) sees only a failed connection: the log
                # says why, as nothing else will
                self.node.log_refusal(400, TLS_ON_PLAIN_PORT, "/")
            self._refuse(400, "malformed HTTP request")
            return b""
        # Checked after parsing: the callbacks mark a head completed in this read (-1) or a request ended (0). A head
        # is measured exactly when it is complete (on_headers_complete); this bounds one that never ends.
        if self._head_bytes > self._unfinished_head_limit:
            self._head_too_large()
        elif self._after_head_bytes > 2 * self.node.config.max_request_bytes + MAX_HEAD_BYTES:
            # The body is bounded as it comes (on_body), but not a chunked body's framing nor its trailers, which
            # httptools gathers line by line: 300 MB of trailer lines grew the process by as much. Room is left for a
            # body of the limit sent in small chunks, and for a head's worth of trailers.
            self._refuse_body(" (with its chunk framing and trailers)")
        return b""

    def _refuse_body(self, detail: str = "") -> None:
        """413, and the connection closed: the rest of a body over the limit is not read."""
        self._refused = True
        self._refuse(413, f"request body is over {self.node.config.max_request_bytes} bytes{detail}")

    def _head_too_large(self) -> None:
        self._refused = True
        self._refuse(431, f"request line and headers over {MAX_HEAD_BYTES} bytes")

    def _refuse(self, status: int, message: str) -> None:
        """Answer ``status`` and close: on Ably's paths in Ably's error format, which ably-js and ably-python read
        (the Pusher API's ``{"error": "..."}`` left them only the raw body), with what of the path has arrived."""
        if AblyRest.owns(split_target(self._url.decode("latin-1"))[0]):
            code = _ABLY_REFUSAL_CODES.get(status, 50000 if status >= 500 else 40000)
            self._respond(ably_error_answer(AblyError(code, message, status)), keep_alive=False)
        else:
            self._respond(error_response(status, message), keep_alive=False)

    def _head_size(self) -> int:
        """The request line and headers as parsed: each header as ``Name: value``, each line ending in CRLF."""
        parser = self.parser
        assert parser is not None  # its callbacks are why this is asked
        request_line = len(parser.get_method()) + len(self._url) + len("  HTTP/1.1\r\n")
        return request_line + sum(len(name) + len(value) + len(": \r\n") for name, value in self._raw_headers) + 2

    def timed_out(self, timeout: float) -> None:
        """Past a timeout (EmulatorNode._sweep_http): a request begun and not complete is answered 408, as RFC 9110
        §15.5.9 has it, so its client knows it was not handled (nginx closes without a word; an HTTP client then
        reports an empty reply); an idle connection, or one that never sent a byte, is closed."""
        self.node.http_connections.discard(self)
        transport = self.transport
        if transport is None or self._finished:  # answered with Connection: close: its own timer ends it
            return
        log.debug("HTTP connection timed out", extra={"timeout_s": timeout, "request": self._head_bytes != 0})
        if self._writing_paused:
            transport.abort()  # it reads nothing: close() would wait for it to take what is unsent
        elif self.request_began is not None and self._head_bytes != 0:
            self._refuse(408, f"request not complete within {timeout:g} s")
        else:
            transport.close()

    def answer_held(self) -> None:
        """At shutdown, before the drain: answer at once the requests read and waiting for their turn
        (data_received), as they would have been without the stop, then end the connection after those answers; the
        client sends again what it pipelined behind them (RFC 9112 §9.3.2), as none of it was handled. A client not
        reading its answers keeps its turns (resume_writing): answered at once, a read of requests for large answers
        would pile them up in memory."""
        transport = self.transport
        if self._held is None or transport is None or transport.is_closing() or self._writing_paused:
            return
        while self._held is not None and not self._writing_paused:
            self._take_turn()
        if self.ws is None and not self._finished:  # not upgraded, nor closed by an answer
            self.node.http_connections.discard(self)
            self._close_after_answers(transport)

    def close_if_idle(self) -> None:
        """Close an HTTP keep-alive between requests (at shutdown, once the listener is closed: see
        emulator/shutdown.py). A proxy sees the close and drops it from its pool; a request it had already sent on it
        is retried on a new connection, as RFC 9112 §9.3.1 lets a client do when a connection closes under it."""
        transport = self.transport
        if self.request_began is not None or self.ws is not None or self._held is not None or self._finished:
            return
        if transport is not None and not transport.is_closing():
            self.node.http_connections.discard(self)
            transport.close()

    # Half-closed after its last answer, its client not gone yet: a shutdown waits for it (emulator/shutdown.py), as
    # the process's exit would reset it, unread requests pipelined behind those answers in the kernel's buffer.
    half_closed = False

    def _close_after_answers(self, transport: asyncio.Transport) -> None:
        """Handle no further request, and close once the client has taken what was written (see _half_close)."""
        self._finished = self.half_closed = True
        _half_close(transport)

    # -- httptools callbacks ----------------------------------------------------------------------------------

    # Bytes read since the current request's head was complete: its body, with a chunked body's framing and trailers.
    _after_head_bytes = 0
    # How many bytes of a head still arriving are refused (431). A head begun in a read of its own is counted exactly;
    # one pipelined behind another request is charged a whole read (on_message_begin), so room is left for that.
    _unfinished_head_limit = MAX_HEAD_BYTES

    def on_message_begin(self) -> None:
        if self._after_head_bytes:  # set on the instance only by a request with a body (a WebSocket's has none)
            self._after_head_bytes = 0
        self._url = b""
        self._raw_headers = []
        self._headers = None
        self._body = b""
        self._refused = False
        self.request_began = self.node.http_clock
        if self._head_bytes == 0:
            # Another request ended earlier in this read, so this head's share of it is unknown, but no larger than
            # the read (READ_TURN_BYTES at most): charged that much, and measured in full if that passes the limit.
            self._head_bytes = READ_TURN_BYTES
            self._unfinished_head_limit = MAX_HEAD_BYTES + READ_TURN_BYTES
        elif self._unfinished_head_limit != MAX_HEAD_BYTES:
            self._unfinished_head_limit = MAX_HEAD_BYTES

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._head_bytes < 0:  # a trailer: not kept, nor merged into the headers (RFC 9110 §6.5.1)
            return
        self._raw_headers.append((name, value))

    @property
    def headers(self) -> list[tuple[str, str]]:
        """The request's headers as text, decoded when first read (the Pusher API never reads them)."""
        if self._headers is None:
            self._headers = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in self._raw_headers]
        return self._headers

    def on_headers_complete(self) -> None:
        # What was read since the head began also holds what followed it in the last read: measured when over.
        if self._head_bytes > MAX_HEAD_BYTES and self._head_size() > MAX_HEAD_BYTES:
            self._head_too_large()
            return
        self._head_bytes = -1
        limit = self.node.config.max_request_bytes
        expects_continue = False
        transfer_encodings: list[bytes] = []
        for name, value in self._raw_headers:
            lowered = name.lower()
            if lowered == b"content-length" and value.isdigit() and int(value) > limit:  # bytes: ASCII digits only
                # Answer now rather than after the body: it may be huge, or never come at all.
                self._refuse_body()
                return
            if lowered == b"expect" and value.lower() == b"100-continue":
                expects_continue = True
            elif lowered == b"transfer-encoding":
                transfer_encodings.append(value)
        if transfer_encodings and not chunked_alone(transfer_encodings):
            self._refused = True
            named = b", ".join(transfer_encodings).decode("latin-1")[:100]
            self._refuse(
                501,
                f"Transfer-Encoding {named!r} is not supported (only chunked is): send the body with Content-Length, "
                "or with Transfer-Encoding: chunked alone",
            )
            return
        if expects_continue:
            self._continue()

    def _continue(self) -> None:
        """Answer ``Expect: 100-continue``: curl (so Guzzle and pusher-http-php) waits a second for it before it sends
        a body over 1 KiB. An HTTP/1.0 client does not know 1xx answers, so its expectation is ignored (RFC 9110
        §10.1.1)."""
        parser, transport = self.parser, self.transport
        if parser is not None and transport is not None and not self._finished and parser.get_http_version() != "1.0":
            transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        if self._refused:
            return
        held = self._body
        if not held:
            held = body  # the usual body, in one piece: kept as it came, not copied
        else:
            if type(held) is bytes:
                held = bytearray(held)
            held += body
        self._body = held
        if len(held) > self.node.config.max_request_bytes:
            self._refused = True
            self._body = b""

    def on_message_complete(self) -> None:
        if self._finished:  # answered with Connection: close: no request after it is handled (RFC 9112 §9.6)
            return
        parser = self.parser
        assert parser is not None  # this is its callback
        if parser.should_upgrade():
            return  # answered where httptools stops, in data_received (_switch_protocols)
        self._head_bytes = 0  # what follows is the next request's head
        self.request_began = None
        self.idle_since = self.node.http_clock
        # Draining, each answer closes its connection: a proxy keeping it for later requests would bring them here
        # (WebSocket handshakes answered 503) rather than to the replacement or another node.
        keep_alive = parser.should_keep_alive() and not self.node.draining
        if self._refused:  # its body grew over the limit (those refused earlier were answered with close)
            self._refuse_body()
            return
        method = parser.get_method().decode()
        path, query_string = split_target(self._url.decode("latin-1"))
        prefix = self.node.config.path_prefix
        endpoint = unprefixed(path, prefix) if prefix else path  # as the API does: no call per request without one
        if endpoint is not None and endpoint.startswith("/app/") and _WS_PATH.fullmatch(endpoint):
            response = error_response(426, "this path is the WebSocket endpoint: connect with a WebSocket client")
        else:
            assert self.node.api is not None and self.transport is not None
            query = parse_query(query_string)
            body = bytes(self._body)
            started = time.perf_counter()
            ops = self.node.ops
            if ops.owns(path):
                answer = ops.handle(self.transport, method, path, query, self.headers, body)
                if answer is STREAMING:  # the console's event stream owns the connection from now on
                    self._finished = True
                    self.node.http_connections.discard(self)
                else:
                    keep = keep_alive and not ops.closes_connection(path)
                    self._respond(answer, keep_alive=keep, head=method == "HEAD")
                return
            api = self.node.api
            app = api.app_for(path, query)  # resolved once per request: the rate limit, the API, the accounting
            ably = None if app is not None else self.node.ably.handle(method, path, query, self.headers, body)
            response = ably or ops.rate_limited(method, app) or api.handle(method, path, query, body, app)
            ops.api_answered(method, path, app, response, started)
        self._respond(response, keep_alive=keep_alive, head=method == "HEAD")

    def _respond(self, response: Response, *, keep_alive: bool, head: bool = False) -> None:
        """Write ``response``; to a HEAD request, only its head (RFC 9110 §9.3.2: else a kept-alive client would read
        the body as the next response)."""
        transport = self.transport
        if transport is None or transport.is_closing() or self._finished:
            return
        if response is PUBLISHED and not head:  # most answers: its bytes are made once per keep_alive
            wire = _published_wire.get(keep_alive)
            if wire is None:
                wire = _published_wire[keep_alive] = response_head(response, keep_alive) + response.body
            transport.write(wire)
        else:
            transport.write(response_head(response, keep_alive) + (b"" if head else response.body))
        if not keep_alive:
            self._close_after_answers(transport)

    # -- WebSocket --------------------------------------------------------------------------------------------

    def _switch_protocols(self, rest: bytes) -> bytes:
        """httptools stopped after the head of a request asking to switch protocols. A WebSocket handshake (a GET
        offering websocket) is answered as one on any path, since a bad path is refused after the upgrade (4005);
        another (curl --http2's ``Upgrade: h2c``, Java's HttpClient, a POST) is answered over HTTP/1.1, ignoring
        its Upgrade header as RFC 9110 §7.8 lets a server do: what to parse again for that, or nothing."""
        if self.node.draining and self._pusher_handshake():
            # Accepted and closed with 4200, pusher-js would reconnect at once, hundreds of times a second for the
            # whole shutdown_delay; a failed handshake sends it to its back-off (or to another node).
            self._respond(error_response(503, "Server is shutting down: connect again shortly"), keep_alive=False)
            return b""
        ws = self._accept_fast()
        if ws is None and not self._asks_for_websocket():
            return self._without_upgrade(rest)
        ws = ws or self._accept()
        if ws is not None:
            self._upgrade(ws, rest)
        # The handshake was this connection's last HTTP. A WebSocket keeps neither the headers nor the parser, which
        # holds seven bound methods of this object: a cycle for every full garbage collection to walk.
        self.parser, self._raw_headers, self._headers = None, [], None
        return b""

    def _pusher_handshake(self) -> bool:
        """A WebSocket handshake on a Pusher path (Ably's realtime endpoint is ``/``: its clients get their own
        draining answer)."""
        return self._asks_for_websocket() and not is_ably_endpoint(self._url.decode("latin-1"))

    def _asks_for_websocket(self) -> bool:
        parser = self.parser
        assert parser is not None  # the upgrade is answered before the parser is dropped
        return parser.get_method() == b"GET" and any(
            name.lower() == b"upgrade" and b"websocket" in (token.strip() for token in value.lower().split(b","))
            for name, value in self._raw_headers
        )

    def _without_upgrade(self, rest: bytes) -> bytes:
        """Answer a request over HTTP/1.1 despite its Upgrade header: httptools stopped before its body, so the head
        is to be parsed again without the header (returned) by a new parser, which goes on to the body and what
        follows. A ``100 Continue`` already sent is not sent twice."""
        parser = self.parser
        assert parser is not None
        method = parser.get_method()
        if method == b"CONNECT":  # httptools takes any CONNECT for a switch of protocols
            refusal = method_not_allowed("CONNECT is not supported: the emulator is no proxy", _SERVED_METHODS)
            self._respond(refusal, keep_alive=False)
            return b""
        head = [b"%s %s HTTP/%s" % (method, self._url, parser.get_http_version().encode())]
        head += [name + b": " + value for name, value in self._raw_headers if name.lower() not in _NOT_REPEATED]
        self.parser = httptools.HttpRequestParser(self)
        self._head_bytes = 0
        return b"\r\n".join(head) + b"\r\n\r\n" + rest

    def _upgrade(self, ws: ServerProtocol, rest: bytes) -> None:
        transport = self.transport
        assert transport is not None
        target = self._url.decode("latin-1")
        self.ws = ws
        self.node.http_connections.discard(self)
        if self._writing_paused:  # the answers to its earlier requests are still unread: asyncio will not say again
            self.close(ErrorCode.OVER_CAPACITY, OVER_CAPACITY)
            return
        # permessage-deflate: data frames go out compressed, once per message for all recipients, and the session's
        # app meters them as written (AppState.compressing).
        window = None
        if ws.extensions:
            window = self._window_bits = getattr(ws.extensions[0], "local_max_window_bits", None) or 15
            self.write = self._write_deflated  # type: ignore[method-assign]
        if is_ably_endpoint(target):
            ably = self.session = self.node.ably.open_session(self, target, self.headers, window)
            if ably is not None:
                ws.max_size = ably.max_frame_size  # the maxFrameSize its CONNECTED advertised
                if rest:
                    self._websocket_data(rest)
            return
        config = self.node.config
        admission = pusher_admission(target, config.path_prefix, self.node.by_key, self.headers)
        if isinstance(admission, tuple):
            code, message = admission
            self.node.ops.metrics.connection_refused(code)
            self.node.log_refusal(code, message, split_target(target)[0])
            transport.write(encode_text(frames.error(code, message)))
            self.close(code, message)
            return
        ws.max_size = config.frame_limit(admission.app)
        session = self.session = Session(admission, self.node.new_socket_id(), self, asyncio.get_running_loop().time)
        if window is not None:
            admission.compressing[session.socket_id] = window
        session.open()
        if rest:
            self._websocket_data(rest)

    _window_bits = 15  # the server's deflate window, when permessage-deflate was negotiated

    def _accept_fast(self) -> ServerProtocol | None:
        """Answer a plainly valid handshake from what httptools parsed (most of a connect's cost otherwise)."""
        parser = self.parser
        assert parser is not None  # the upgrade is answered before the parser is dropped
        accepted = fast_accept(parser.get_method(), parser.get_http_version(), self.headers)
        if accepted is None:
            return None
        key, offer = accepted
        # Parsing starts with the first frame, so max_size and extensions may still change before any data arrives.
        ws = ServerProtocol(extensions=_EXTENSIONS, state=State.OPEN, max_size=self.node.config.max_frame_bytes)
        extensions_header = None
        if offer is not None:
            try:
                extensions_header, ws.extensions = ws.process_extensions(Headers([("Sec-WebSocket-Extensions", offer)]))
            except InvalidHandshake:
                return None  # websockets' own path answers it
        assert self.transport is not None
        self.transport.write(switching_protocols(key, extensions_header))
        return ws

    def _accept(self) -> ServerProtocol | None:
        """The opening handshake by websockets: the answer to anything :meth:`_accept_fast` does not take."""
        transport = self.transport
        assert transport is not None
        ws = ServerProtocol(extensions=_EXTENSIONS, max_size=self.node.config.max_frame_bytes)
        target = self._url.decode("latin-1")
        # websockets parses the handshake itself, so it is handed the request as it arrived on the wire.
        head = [f"GET {target} HTTP/1.1", *(f"{name}: {value}" for name, value in self.headers)]
        ws.receive_data(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
        request = next((event for event in ws.events_received() if isinstance(event, Request)), None)
        if request is None:
            self._respond(error_response(400, "malformed WebSocket handshake"), keep_alive=False)
            return None
        response = ws.accept(request)
        ws.send_response(response)
        for chunk in ws.data_to_send():
            transport.write(chunk)
        if response.status_code != 101:
            transport.close()
            return None
        return ws

    def _websocket_data(self, data: bytes) -> None:
        ws = self.ws
        assert ws is not None
        ws.receive_data(data)
        # A close in this read (the client's close frame, or a message websockets refused as too big) has queued the
        # close frame and the end of the stream: flushed before the frames read with it, they ended the session first
        # and those frames were dropped (a client event written just before the close never reached anyone). They
        # are handled first then, their answers going out before the close.
        closing = ws.state is not State.OPEN
        for event in ws.events_received():
            if isinstance(event, Frame):
                if not closing:
                    self._flush()  # pongs queued by websockets go out before our answers
                self._frame(event)
        if ws.close_sent is not None and ws.close_sent.code == CloseCode.MESSAGE_TOO_BIG and self.session is not None:
            self._too_big(self.session)  # an app's max_message_bytes or the server's max_frame_bytes refused it
        self._flush()

    def _frame(self, frame: Frame) -> None:
        session = self.session
        if session is None or session.closed:
            return
        opcode = frame.opcode
        if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
            if not frame.fin:
                # Held as its bytes alone (max_size bounds them): a list of 1-byte fragments took 42 bytes each
                self._fragments = bytearray(frame.data)
                self._fragment_count = 1
                self._fragmented_opcode = opcode
                if opcode is Opcode.TEXT:
                    self._fragment_utf8 = _utf8_decoder()
                    self._check_fragment(frame.data)
                return
            self._message(opcode, bytes(frame.data))
        elif opcode is Opcode.CONT:
            self._fragment_count += 1
            if self._fragment_count > MAX_MESSAGE_FRAGMENTS:
                self._too_fragmented(session)
                return
            self._fragments += frame.data
            if self._fragment_utf8 is not None:
                self._check_fragment(frame.data)
            if frame.fin:
                self._fragment_utf8 = None
                self._message(self._fragmented_opcode, bytes(self._fragments))
                self._fragments = bytearray()
        elif opcode is Opcode.PING or opcode is Opcode.PONG:
            session.pong_received()

    _fragment_utf8: codecs.IncrementalDecoder | None = None  # while a fragmented text message is being received

    def _check_fragment(self, data: bytes | bytearray | memoryview) -> None:
        """Fail the connection at the first fragment of a text message that cannot be UTF-8, not after its last
        (RFC 6455 §8.1; Autobahn's 6.4 cases call waiting for the end non-strict)."""
        decoder = self._fragment_utf8
        assert decoder is not None
        try:
            decoder.decode(data)
        except UnicodeDecodeError:
            self._fragment_utf8, self._fragments = None, bytearray()
            self._fail_invalid_utf8()

    def _fail_invalid_utf8(self) -> None:
        """RFC 6455 §8.1: an endpoint MUST fail the connection on invalid UTF-8 in a text message."""
        assert self.ws is not None and self.session is not None
        self.session.closed = True
        self.ws.fail(CloseCode.INVALID_DATA, "text message is not valid UTF-8")

    def _message(self, opcode: Opcode, payload: bytes) -> None:
        session = self.session
        assert session is not None
        session.state.meter.received(len(payload))
        if isinstance(session, AblySession):
            if opcode is Opcode.TEXT and not payload.isascii() and not _is_utf8(payload):
                session.text_not_utf8()
                self._fail_invalid_utf8()
                return
            session.receive(payload, binary=opcode is Opcode.BINARY)
            return
        if opcode is Opcode.BINARY:
            session.receive_binary()
            return
        try:
            text = payload.decode()
        except UnicodeDecodeError:
            self._fail_invalid_utf8()
            return
        session.receive(text)

    def _too_big(self, session: Session | AblySession, message: str | None = None) -> None:
        """A message refused with 1009, over the size limit (websockets is closing already) or in too many frames
        (``message`` says so): say why first (to an Ably connection, over either limit: its CONNECTED advertised the
        one it has)."""
        if isinstance(session, AblySession):
            session.frame_too_big(message)
            self.write_queued()
            return
        if session.closed or self.transport is None or self.ws is None:
            return
        session.closed = True
        if message is None:
            whose = "this server" if self.ws.max_size == self.node.config.max_frame_bytes else "this app"
            message = f"Message too large: {whose} accepts WebSocket messages up to {self.ws.max_size} bytes"
        # A fatal error's code is the close code that follows (what Pusher clients read to decide what to do).
        self.write(encode_text(frames.error(CloseCode.MESSAGE_TOO_BIG, message)))
        self.write_queued()
        session.state.meter.refused("error", session.socket_id, None, CloseCode.MESSAGE_TOO_BIG, message)

    def _too_fragmented(self, session: Session | AblySession) -> None:
        """A message in more than MAX_MESSAGE_FRAGMENTS frames: say so, as over the size limit, and close 1009."""
        assert self.ws is not None
        self._fragment_utf8, self._fragments = None, bytearray()
        self._too_big(
            session,
            f"Message too fragmented: this server accepts a WebSocket message in up to {MAX_MESSAGE_FRAGMENTS} frames",
        )
        self.ws.fail(CloseCode.MESSAGE_TOO_BIG, f"message in over {MAX_MESSAGE_FRAGMENTS} frames")

    def _flush(self) -> None:
        ws, transport = self.ws, self.transport
        if ws is None or transport is None:
            return
        if self._queued:
            self.write_queued()  # what the session wrote goes first
        for chunk in ws.data_to_send():
            if chunk:
                transport.write(chunk)
            else:
                # The WebSocket is closed: a Pusher session ends now, not when the client closes TCP (up to
                # CLOSE_TIMEOUT later, for a client not reading), so its presence leave is heard at once. An Ably
                # session is kept for a resume until connection_lost.
                if isinstance(self.session, Session):
                    self.session.connection_lost()
                # Half-closed, not closed: a client failed while still sending (1009, 1007) would lose its
                # pusher:error to the reset
                _half_close(transport)
                # Nothing is written after the close frame (a write after write_eof raises): the transport is the
                # abort timer's, or shutdown's (ending)
                self.transport, self.ending = None, transport

    # -- Link (what a Session writes to) ----------------------------------------------------------------------

    _iteration = 0

    def write(self, frame: bytes) -> None:
        """Send ``frame`` now, or queue it to go with this connection's other frames at the end of the iteration.

        Under load a subscriber gets several publishes per event-loop iteration; queued, they cost one send instead
        of one each (the send, with loopback's receive path charged to it, is most of a delivery's cost). After an
        idle spell frames go out at once, until one connection gets a second frame in the same iteration. Everything
        else written to this WebSocket (control frames, the close handshake) goes through :meth:`_flush`, which
        sends the queue first.
        """
        queued = self._queued
        if queued:
            queued.append(frame)
            return
        transport = self.transport
        if transport is None:
            return
        node = self.node
        if not node._in_iteration:
            node._begin_iteration()
        if node._direct:
            if self._iteration != node._iteration:
                self._iteration = node._iteration
                transport.write(frame)
                return
            node._direct = False  # a second frame for one connection in one iteration: coalesce from now on
        node._unflushed.append(self)
        queued.append(frame)

    def _write_deflated(self, frame: bytes) -> None:
        HttpConnection.write(self, deflated(frame, self._window_bits))

    def write_queued(self) -> None:
        queued, transport = self._queued, self.transport
        if not queued or transport is None:
            return
        if not transport.is_closing():
            transport.write(queued[0] if len(queued) == 1 else b"".join(queued))
        queued.clear()

    _writing_paused = False

    def pause_writing(self) -> None:
        """Over ``max_send_buffer`` bytes wait in the transport: the client is not reading what it is sent. asyncio
        says so once per crossing, so the fan-out needs no check per frame. A session is cut off with 4100; an HTTP
        connection reads no further request until the client has taken its answers."""
        self._writing_paused = True
        session, transport = self.session, self.transport
        if session is not None:
            # Not from inside transport.write, which called this: the session's close writes to the transport too.
            asyncio.get_running_loop().call_soon(session.terminate, ErrorCode.OVER_CAPACITY, OVER_CAPACITY)
        elif transport is not None:
            transport.pause_reading()

    def resume_writing(self) -> None:
        self._writing_paused = False
        transport = self.transport
        if self.session is None and self.ws is None and transport is not None and not transport.is_closing():
            if self._held is None:
                transport.resume_reading()
            else:  # its turn, which waited for the client to read; reading resumes at the end of it
                asyncio.get_running_loop().call_soon(self._take_turn)

    def close(self, code: int, reason: str) -> None:
        ws, transport = self.ws, self.transport
        if ws is None or transport is None or transport.is_closing():
            return
        try:
            # RFC 6455 §5.5: a close reason is at most 123 bytes of UTF-8; cut on a character's boundary
            ws.send_close(code, reason.encode(errors="replace")[:123].decode(errors="ignore"))
        except Exception:  # the close handshake already started; the timer below still ends it
            log.debug("close frame not sent", exc_info=True)
        self._flush()
        asyncio.get_running_loop().call_later(CLOSE_TIMEOUT, transport.abort)

    def abandon(self, reason: str) -> None:
        """The Ably session moved to another socket (the client resumed it there): close without it."""
        self.session = None
        self.close(1000, reason)

    def shutdown(self) -> None:
        if self.session is not None and not self.session.closed:
            self.session.terminate(ErrorCode.RECONNECT, "Server is shutting down; reconnect")
        elif self.transport is not None:
            self.transport.close()


def is_ably_endpoint(target: str) -> bool:
    """Whether a WebSocket handshake's target is Ably's realtime endpoint, ``/`` (never under the path prefix: the
    Ably SDKs take a host, not a path)."""
    return split_target(target)[0] in ("", "/")


def pusher_admission(
    target: str, prefix: str, apps_by_key: Mapping[str, AppState], headers: Sequence[tuple[str, str]]
) -> AppState | tuple[int, str]:
    """The app a Pusher WebSocket handshake for ``target`` connects to, or why it is refused (the ``pusher:error``
    code and message it gets before the close): a path that is not ``{prefix}/app/{key}``, an unknown or disabled
    app, an Origin the app does not allow, a protocol version other than 5 to 7, or the app at its connection
    quota."""
    path, query = split_target(target)
    endpoint = unprefixed(path, prefix)
    match = None if endpoint is None else _WS_PATH.fullmatch(endpoint)
    if match is None:
        return ErrorCode.PATH_NOT_FOUND, f"Path not found: connect to {prefix}/app/{{key}}"
    state = apps_by_key.get(match.group(1))
    if state is None:
        given = match.group(1)
        # new Pusher("1", …) with the app id where the key goes, the id that every server SDK takes
        meant = (
            ": that is an app's id, and new Pusher(KEY, …) takes the app's key (the emulator's banner prints it)"
            if any(other.app.app_id == given for other in apps_by_key.values())
            else ""
        )
        return ErrorCode.APP_NOT_FOUND, f"Application does not exist: no app has key {given!r}{meant}"
    app = state.app
    if not app.enabled:
        return ErrorCode.APP_DISABLED, "Application disabled"
    refused = app.origin_refusal(headers)
    if refused is not None:
        return ErrorCode.UNAUTHORIZED, refused
    protocol = dict(parse_qsl(query, keep_blank_values=True)).get("protocol", "7")  # "protocol=" is no version
    if not (protocol.isascii() and protocol.isdigit()):  # '²' is a digit to isdigit() but not to int()
        return ErrorCode.INVALID_VERSION, f"Invalid version string format: protocol={protocol[:16]!r}"
    if len(protocol) > 8 or not 5 <= int(protocol) <= 7:  # int() refuses over 4,300 digits, with a ValueError
        return ErrorCode.UNSUPPORTED_PROTOCOL, f"Unsupported protocol version {protocol[:16]}; use 5 to 7"
    if state.over_connection_quota():
        return ErrorCode.OVER_CONNECTION_QUOTA, f"Application is over connection quota ({app.max_connections})"
    return state


def _half_close(transport: asyncio.Transport) -> None:
    """Close after what was written, and keep reading meanwhile: closing with unread input would reset the
    connection, and the client could lose the last answer (an HTTP response, a WebSocket's error and close frame).
    The client closes after reading it (eof_received); else it is aborted."""
    if transport.can_write_eof():
        transport.write_eof()
        asyncio.get_running_loop().call_later(CLOSE_TIMEOUT, transport.abort)
    else:
        transport.close()


def _listens(sock: socket.socket) -> bool:
    """Whether ``sock`` (a server's, as asyncio or uvloop hands it out) is a listening socket still."""
    try:
        return bool(sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN))
    except (OSError, ValueError):  # closed under the server (uvloop's closed handle has descriptor -1: ValueError)
        return False


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True


def split_target(target: str) -> tuple[str, str]:
    """(path, query) of an HTTP request target; ``urlsplit`` only for an absolute-form target (``http://host/…``). An
    origin-form target is a path even when it starts ``//``, which ``urlsplit`` would read as a host."""
    if target.startswith("/"):
        path, _, query = target.partition("#")[0].partition("?")
        return path, query
    url = urlsplit(target)
    return url.path, url.query


def parse_query(query: str) -> list[tuple[str, str]]:
    """``parse_qsl(query, keep_blank_values=True)``, without its per-field unquoting when nothing is escaped."""
    if "%" in query or "+" in query:
        return parse_qsl(query, keep_blank_values=True)
    return [field.partition("=")[::2] for field in query.split("&") if field]


_heads: dict[tuple[int, tuple[tuple[str, str], ...], bool], tuple[bytes, bytes]] = {}
_published_wire: dict[bool, bytes] = {}  # the whole answer to a publish (http_api.PUBLISHED), by keep_alive


def response_head(response: Response, keep_alive: bool) -> bytes:
    """The status line and headers of ``response``; all but Content-Length is built once per kind of response."""
    headers = response.headers
    key = (response.status, headers, keep_alive) if isinstance(headers, tuple) else None
    parts = _heads.get(key) if key is not None else None
    if parts is None:
        listed = list(headers)
        if not any(name.lower() == "access-control-allow-origin" for name, _ in listed):
            listed.extend(CORS_HEADERS)
        head = [f"HTTP/1.1 {response.status} {_REASONS.get(response.status, 'Unknown')}"]
        head += [f"{name}: {value}" for name, value in listed]
        before = ("\r\n".join(head) + "\r\nContent-Length: ").encode("latin-1")
        after = b"\r\nConnection: keep-alive\r\n\r\n" if keep_alive else b"\r\nConnection: close\r\n\r\n"
        parts = (before, after)
        if key is not None:
            if len(_heads) >= 256:
                _heads.clear()
            _heads[key] = parts
    return parts[0] + b"%d" % len(response.body) + parts[1]


def make_ssl_context(cert: str, key: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)

    def passphrase() -> bytes:
        # Asked for by an encrypted key only. Without this, OpenSSL prompts on the terminal (at the check, at the
        # start, in each worker) or, with none (a service), fails as "Invalid argument".
        raise ConfigError(
            f"TLS key {key} is encrypted (it needs a passphrase), which the emulator cannot be given: decrypt it "
            f"into a file only the emulator's user can read (openssl pkey -in {key} -out KEY.pem) and give that"
        )

    context.load_cert_chain(cert, key, password=passphrase)
    return context


# Seconds a client has to complete its TLS handshake (or the HTTP request timeout, when shorter), not the event loop's
# 60 s: a connection is an HttpConnection, counted and capped per address, only once its handshake is complete, so a
# socket that never sends its ClientHello held a descriptor that long outside every limit (docs/emulator.md "TLS").
TLS_HANDSHAKE_TIMEOUT = 10.0


async def start_server(
    node: EmulatorNode, *, sock: socket.socket | None = None, ssl_context: ssl.SSLContext | None = None
) -> asyncio.Server:
    """Start serving; pass ``sock`` (already bound) to serve on a port the caller chose, such as 0 in tests."""
    await node.start()
    loop = asyncio.get_running_loop()
    if ssl_context is None and node.config.tls_cert is not None and node.config.tls_key is not None:
        ssl_context = make_ssl_context(node.config.tls_cert, node.config.tls_key)
    # A deep accept queue: with the default (100), a burst of connects overflows it and clients wait for SYN retries.
    options: dict[str, Any] = {"ssl": ssl_context, "backlog": LISTEN_BACKLOG}
    if ssl_context is not None:  # asyncio refuses a handshake timeout without TLS
        options["ssl_handshake_timeout"] = min(TLS_HANDSHAKE_TIMEOUT, node.http_request_timeout)
    if sock is None and is_dual_stack(node.config.host) and socket.has_dualstack_ipv6():  # else IPv6 alone
        address = (node.config.host, node.config.port)
        sock = socket.create_server(address, family=socket.AF_INET6, dualstack_ipv6=True, backlog=LISTEN_BACKLOG)
    if sock is not None:
        server = await loop.create_server(lambda: HttpConnection(node), sock=sock, **options)
    else:
        server = await loop.create_server(
            lambda: HttpConnection(node), node.config.host, node.config.port, reuse_address=True, **options
        )
    node.watch_listeners(server)
    return server
