"""The operations endpoints next to the Pusher API: ``/health``, ``/ready``, ``/metrics``, ``/usage`` and the debug
console (``/console``, its Server-Sent Events stream and its test-publish form); plus the HTTP API rate limit.

Access: ``/health`` and ``/ready`` are open. The others need the console token (``?token=`` or
``Authorization: Bearer``) when one is configured; without one they are open only while the emulator is bound to a
loopback host, the request did not come through a proxy (``X-Forwarded-For``/``Forwarded``) and names a loopback
host (against DNS rebinding); bound to another host they answer 404. Their responses allow no other origin to read
them, none may be sniffed as another type, the page runs under a Content-Security-Policy that allows its own inline
script and stylesheet alone, and the publish form refuses cross-site requests and bodies not sent as JSON.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import heapq
import hmac
import importlib.resources
import itertools
import logging
import re
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from relay.emulator import metrics
from relay.emulator.ably_realtime import AblySession
from relay.emulator.config import unprefixed
from relay.emulator.http_api import Response, error_response, json_response, method_not_allowed
from relay.emulator.limits import TokenBucket
from relay.emulator.usage import local_reach, usage_document, usage_summary
from relay.errors import ProtocolError, RelayError, clipped
from relay.protocol.channels import ChannelKind, classify, validate_channel_name, validate_event_name
from relay.protocol.frames import check_event_size, dumps, dumps_parsed, loads, utf8_length
from relay.protocol.hosts import is_loopback
from relay.protocol.media_types import is_json_media_type

if TYPE_CHECKING:
    from relay.emulator.hub import AppState, Peer
    from relay.emulator.server import EmulatorNode

log = logging.getLogger("relay.emulator.console")

# Returned by :meth:`Operations.handle` when it took the connection over (the console's event stream).
STREAMING = Response(0, b"")
STATE_INTERVAL = 0.5
# The share of the event loop's time the state snapshots may take: a state so large that building its snapshot takes
# longer than STATE_DUTY × STATE_INTERVAL is looked at less often (up to HEARTBEAT_INTERVAL apart).
STATE_DUTY = 0.05
HEARTBEAT_INTERVAL = 10.0
MAX_STREAM_BUFFER = 1 << 20
# A state event lists at most these, with the totals, so that its size does not grow with the app's state
# (docs/emulator.md, "Debug console"): the connections in the order they opened, channels by name (a connection's
# too), a channel's presence members in the order they joined.
LISTED_CONNECTIONS = 100
LISTED_CHANNELS = 100
LISTED_CHANNELS_PER_CONNECTION = 10
LISTED_MEMBERS = 10
USER_INFO_CHARS = 100  # a member's user_info (JSON) is cut there, with "…"
LIST_BYTES = 100_000  # and each of the two lists stops before its JSON would pass this size
LISTING_FILTER_CHARACTERS = 200  # a filter is compared with every connection and channel each tick: kept short
# OPTIONS is answered as GET: HAProxy's `option httpchk` checks with OPTIONS unless told otherwise, and takes a node
# whose /health or /ready answers it with a 4xx or 5xx out of service. The events stream has no head to give alone (a
# HEAD would open it): GET only.
_READ = ("GET", "HEAD", "OPTIONS")
_OPS_METHODS: dict[str, tuple[str, ...]] = {
    "/health": _READ, "/ready": _READ, "/metrics": _READ, "/usage": _READ, "/console": _READ, "/console/": _READ,
    "/console/apps": _READ, "/console/events": ("GET",), "/console/publish": ("POST",),
}  # fmt: skip
_OPEN_PATHS = frozenset({"/health", "/ready"})  # for load balancers: no token, no origin check
# A JSON answer (a refusal quoting a channel name) read as HTML or a script by a browser that guesses types would be
# markup a client chose: every protected answer, the event stream's too, says its type is the one it names.
_NOSNIFF = ("X-Content-Type-Options", "nosniff")
_STREAM_HEAD = (
    "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\nCache-Control: no-store\r\n"
    f"{_NOSNIFF[0]}: {_NOSNIFF[1]}\r\n"
    "X-Accel-Buffering: no\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n"
).encode()
_INLINE = re.compile(rb"<(script|style)>(.*?)</\1>", re.DOTALL)


@functools.cache
def _console_page() -> tuple[bytes, str]:
    """The console page and its Content-Security-Policy, read once: the policy allows the page's own inline script
    and stylesheet by their hashes and nothing else, so markup that ever reached the page could run no script, load
    nothing and send nothing elsewhere (defence in depth: the page sets what clients sent only as text)."""
    page = importlib.resources.files("relay.emulator").joinpath("console.html").read_bytes()
    hashes: dict[bytes, list[str]] = {b"script": [], b"style": []}
    for tag, content in _INLINE.findall(page):
        hashes[tag].append(f"'sha256-{base64.b64encode(hashlib.sha256(content).digest()).decode()}'")
    policy = (
        f"default-src 'none'; script-src {' '.join(hashes[b'script'])}; style-src {' '.join(hashes[b'style'])}; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
    return page, policy


def _header(headers: Sequence[tuple[str, str]], name: str) -> str | None:
    name = name.lower()
    return next((value for key, value in headers if key.lower() == name), None)


class _Stream:
    """One console watching one app over Server-Sent Events (chunked, so proxies see where each event ends)."""

    __slots__ = ("app_id", "last_state", "listing", "transport")

    def __init__(self, transport: asyncio.Transport, app_id: str, listing: str) -> None:
        self.transport = transport
        self.app_id = app_id
        self.listing = listing  # the text the listed connections and channels must contain; "" lists all
        self.last_state = ""

    def send(self, payload: str) -> bool:
        transport = self.transport
        if transport.is_closing():
            return False
        if transport.get_write_buffer_size() > MAX_STREAM_BUFFER:  # the page stopped reading
            transport.abort()  # close() would wait, holding the buffer, for a reader that is not reading
            return False
        data = payload.encode()
        transport.write(b"%x\r\n%b\r\n" % (len(data), data))
        return True


class Operations:
    """One per node: routes the operations endpoints and keeps the rate limiters and console streams."""

    def __init__(self, node: EmulatorNode) -> None:
        self.node = node
        self.metrics = metrics.NodeMetrics()
        self._buckets: dict[str, TokenBucket] = {}
        # A backend over its rate limit may send thousands of requests a second, each answered 429: one line a second
        self._rate_limit_logs = TokenBucket(1.0, time.monotonic())
        self._streams: dict[str, set[_Stream]] = {}
        self._ticker: asyncio.Task[None] | None = None
        self._prefix = node.config.path_prefix
        self._wall_offset: float | None = None  # time.time() - loop.time(), taken once (see _now_ms)

    # -- routing ----------------------------------------------------------------------------------------------

    def owns(self, raw_path: str) -> bool:
        if not self._prefix:  # _path's answer without a call (once per request)
            return raw_path in _OPS_METHODS
        return self._path(raw_path) in _OPS_METHODS

    def _path(self, path: str) -> str:
        """The endpoint asked for: under the path prefix, or without it (a load balancer's health check, or a
        Prometheus scraping, goes to the node itself, not through the proxy path; docs/emulator.md)."""
        stripped = unprefixed(path, self._prefix) if self._prefix else None
        return path if stripped is None else stripped

    def closes_connection(self, raw_path: str) -> bool:
        """Whether the answer to ``raw_path`` closes its connection: a cluster node's /metrics does. The workers of
        ``--workers`` share one port and each answers /metrics for itself alone, and Prometheus keeps its scrape
        connection alive: every scrape reached the worker that had accepted it, and the others were never read.
        Closed, the next scrape connects anew and the kernel (SO_REUSEPORT) hands it to any worker."""
        return self.node.cluster is not None and self._path(raw_path) == "/metrics"

    def handle(
        self,
        transport: asyncio.Transport,
        method: str,
        raw_path: str,
        query: Sequence[tuple[str, str]],
        headers: Sequence[tuple[str, str]],
        body: bytes,
    ) -> Response:
        """Answer a request for one of the operations endpoints (see :meth:`owns`)."""
        path = self._path(raw_path)
        allowed = _OPS_METHODS[path]
        if method not in allowed:
            refusal = method_not_allowed(f"{path} accepts {', '.join(allowed)} only", allowed)
            return self._with_origin(path, headers, refusal)
        if path == "/health":
            return json_response(200, {"status": "ok"})
        if path == "/ready":
            ready = self.ready
            return json_response(200 if ready else 503, {"status": "ready" if ready else "draining"})
        response = self._authorize(query, headers) or self._protected(transport, method, path, query, headers, body)
        return self._with_origin(path, headers, response)

    def _with_origin(self, path: str, headers: Sequence[tuple[str, str]], response: Response) -> Response:
        """Every answer of the protected endpoints, refusals and errors too, names the node's own origin (without
        it the response would get the Pusher API's ``*``, any origin) and may not be sniffed."""
        if response is STREAMING or path in _OPEN_PATHS:
            return response
        own_origin = ("Access-Control-Allow-Origin", self._own_origin(headers))
        return Response(response.status, response.body, (*response.headers, own_origin, _NOSNIFF))

    def _protected(
        self,
        transport: asyncio.Transport,
        method: str,
        path: str,
        query: Sequence[tuple[str, str]],
        headers: Sequence[tuple[str, str]],
        body: bytes,
    ) -> Response:
        """Answer an authorized request for the console, /metrics or /usage (``handle`` adds the origin header)."""
        if path == "/metrics":
            cluster = self.node.cluster
            text = metrics.render(
                self.node.states.values(),
                self.metrics,
                ready=self.ready,
                cluster_lost=0 if cluster is None else cluster.lost_operations,
                cluster_missed=0 if cluster is None else cluster.missed_messages,
                tcp_connections=len(self.node.connections),
                open_files_limit=self.node.open_files_limit,
                node_id=None if cluster is None else self.node.node_id,
            )
            return Response(200, text.encode(), (("Content-Type", metrics.CONTENT_TYPE),))
        if path == "/usage":
            meters = [state.meter for state in self.node.states.values()]
            if dict(query).get("summary") in ("1", "true"):
                document = usage_summary(meters)
            else:
                document = usage_document(meters, generated_by=generated_by())
            return Response(200, dumps(document).encode(), (("Content-Type", "application/json"),))
        if path in ("/console", "/console/"):
            page, policy = _console_page()
            return Response(
                200,
                page,
                (
                    ("Content-Type", "text/html; charset=utf-8"),
                    ("Cache-Control", "no-store"),
                    ("Content-Security-Policy", policy),
                    ("X-Frame-Options", "DENY"),
                    ("Referrer-Policy", "no-referrer"),
                ),
            )
        if path == "/console/apps":
            apps = [{"app_id": s.app.app_id, "key": s.app.key} for s in self.node.states.values()]
            return Response(200, dumps({"apps": apps}).encode(), (("Content-Type", "application/json"),))
        if path == "/console/events":
            params = dict(query)
            state = self.node.states.get(params.get("app", ""))
            if state is None:
                return error_response(404, "unknown app: give ?app=<app_id>")
            self._open_stream(transport, state, params.get("filter", "")[:LISTING_FILTER_CHARACTERS])
            return STREAMING
        return self._publish(headers, body)

    @property
    def ready(self) -> bool:
        return self.node.api is not None and not self.node.draining

    def _own_origin(self, headers: Sequence[tuple[str, str]]) -> str:
        scheme = "https" if self.node.config.tls_cert else "http"
        return f"{scheme}://{_header(headers, 'host') or 'localhost'}"

    def _authorize(self, query: Sequence[tuple[str, str]], headers: Sequence[tuple[str, str]]) -> Response | None:
        expected = self.node.config.console_token
        given = dict(query).get("token")
        authorization = _header(headers, "authorization") or ""
        if given is None and authorization.lower().startswith("bearer "):
            given = authorization[7:].strip()
        if expected:
            if given is not None and hmac.compare_digest(given.encode(), expected.encode()):
                return None
            return Response(
                401,
                dumps(
                    {"error": "this endpoint needs the console token: add ?token=… or Authorization: Bearer …"}
                ).encode(),
                (("Content-Type", "application/json"), ("WWW-Authenticate", 'Bearer realm="relay emulator"')),
            )
        if not is_loopback(self.node.config.host):
            return error_response(
                404,
                "the console, /metrics and /usage are off: the emulator is not bound to a loopback address; "
                "start it with --console-token to open them",
            )
        if _header(headers, "x-forwarded-for") is not None or _header(headers, "forwarded") is not None:
            return error_response(
                403, "the console, /metrics and /usage are not served through a proxy without a console token"
            )
        host = urlsplit("//" + (_header(headers, "host") or "")).hostname or ""
        if not is_loopback(host):  # a DNS-rebinding page would arrive with its own name here
            return error_response(403, "without a console token, open the console as http://127.0.0.1 or localhost")
        return None

    # -- HTTP API rate limit and accounting -------------------------------------------------------------------

    def rate_limited(self, method: str, state: AppState | None) -> Response | None:
        """The 429 answer when ``state``'s app is over its HTTP API rate limit, else None."""
        if method == "OPTIONS" or state is None or state.app.api_rate_limit is None:
            return None
        wait = self.api_wait(state)
        if wait is None:
            return None
        body = {"error": f"rate limit of {state.app.api_rate_limit:g} requests per second exceeded; retry later"}
        return Response(429, dumps(body).encode(), (("Content-Type", "application/json"), ("Retry-After", str(wait))))

    def api_wait(self, state: AppState) -> int | None:
        """None when ``state``'s app may make an HTTP API request now (the Pusher API or Ably's REST API: one budget),
        else the whole seconds to wait, logged at most once a second."""
        if state.app.api_rate_limit is None:
            return None
        now = time.monotonic()
        bucket = self._buckets.get(state.app.app_id)
        if bucket is None:
            bucket = self._buckets[state.app.app_id] = TokenBucket(state.app.api_rate_limit, now)
        wait = bucket.retry_after(now)
        if wait is not None and self._rate_limit_logs.take_if_available(now):
            log.info("HTTP API rate limit", extra={"app_id": state.app.app_id, "retry_after": wait})
        return wait

    def api_authenticated(self, state: AppState) -> None:
        """A request's signature was verified (``HttpApi`` calls this): only such requests use the app's rate limit,
        so forged ones, whatever they are answered (401, 404, 405), cannot lock its backend out."""
        bucket = self._buckets.get(state.app.app_id)
        if bucket is not None:
            bucket.take(time.monotonic())

    def api_answered(
        self, method: str, raw_path: str, state: AppState | None, response: Response, started: float
    ) -> None:
        """Account for a Pusher API response: status counts, latency and the usage meter."""
        status = response.status
        self.metrics.http_response(status)
        # Only the two publish routes are POSTs ending in "events" (and a publish is only timed when it succeeded).
        publish = method == "POST" and raw_path.endswith("events") and state is not None
        if publish and status == 200:
            self.metrics.publish_latency.observe(time.perf_counter() - started)
        if method == "OPTIONS" or state is None:
            return
        if 200 <= status < 300 and not publish:  # only an authenticated request is answered with a 2xx
            state.meter.api_request()
        if log.isEnabledFor(logging.DEBUG):
            log.debug("HTTP API request", extra={"app_id": state.app.app_id, "method": method, "status": status})

    # -- the console's test publish ---------------------------------------------------------------------------

    def _publish(self, headers: Sequence[tuple[str, str]], body: bytes) -> Response:
        origin = _header(headers, "origin")
        host = _header(headers, "host")
        if origin is not None and urlsplit(origin).netloc != host:
            return error_response(403, "cross-site request refused: publish from the console page itself")
        content_type = _header(headers, "content-type")
        if not is_json_media_type(content_type or ""):
            # A text/plain POST needs no CORS preflight: such a body is refused, not read as JSON regardless, in the
            # words of the gateway's publish routes.
            sent = f"this request's is {content_type!r}" if content_type else "this request has none"
            return error_response(415, f"the body must be JSON: send Content-Type: application/json ({sent})")
        try:
            request = loads(body or b"null", "the body")
            if not isinstance(request, dict):
                raise ProtocolError("the body must be a JSON object {app_id, channel, event, data}")
            state = self.node.states.get(str(request.get("app_id", "")))
            if state is None:
                raise ProtocolError("unknown app_id")
            limits = state.app.limits
            channel = validate_channel_name(request.get("channel"), limits)
            event = validate_event_name(request.get("event"), limits)
            if classify(channel) is ChannelKind.ENCRYPTED:  # the key is the app's backend's, never the server's
                raise ProtocolError(
                    f"{channel!r} is end-to-end encrypted and the emulator does not hold its key: publish to it with "
                    "the library (encryption_master_key in RELAY_URL), whose data subscribers can decrypt"
                )
            raw = request.get("data", "")
            data = raw if isinstance(raw, str) else dumps_parsed(raw, "data")
            check_event_size(utf8_length(data), limits)
        except RelayError as exc:
            return error_response(exc.http_status or 400, exc.message)
        reached = local_reach(state, channel, None)  # a #server-to-user- channel reaches the user's connections
        state.publish(channel, event, data)
        state.meter.publish_request()
        log.info("console publish", extra={"app_id": state.app.app_id, "channel": channel, "event": event})
        answer = dumps({"ok": True, "recipients": reached}).encode()
        return Response(200, answer, (("Content-Type", "application/json"),))

    # -- the console's live stream ----------------------------------------------------------------------------

    def _open_stream(self, transport: asyncio.Transport, state: AppState, listing: str) -> None:
        transport.write(_STREAM_HEAD)
        stream = _Stream(transport, state.app.app_id, listing)
        stream.send("retry: 1000\n\n")
        self._send_state(stream, self._state_text(state, listing))
        streams = self._streams.setdefault(state.app.app_id, set())
        streams.add(stream)
        if state.meter.observer is None:
            app_id = state.app.app_id
            state.meter.observer = lambda event: self._broadcast(app_id, event)
        if self._ticker is None or self._ticker.done():
            self._ticker = asyncio.get_running_loop().create_task(self._tick())

    def _broadcast(self, app_id: str, event: Mapping[str, object]) -> None:
        payload = "event: log\ndata: " + dumps({"t": int(time.time() * 1000), **event}) + "\n\n"
        streams = self._streams.get(app_id, set())
        for stream in list(streams):
            if not stream.send(payload):
                streams.discard(stream)
        if not streams:
            self._forget(app_id)

    def _forget(self, app_id: str) -> None:
        self._streams.pop(app_id, None)
        state = self.node.states.get(app_id)
        if state is not None:
            state.meter.observer = None

    def _send_state(self, stream: _Stream, text: str, *, force: bool = True) -> bool:
        """Send the state ``text`` (:meth:`_state_text`) unless the stream was last sent the same."""
        if text == stream.last_state and not force:
            return not stream.transport.is_closing()
        stream.last_state = text
        # "now" goes with each event, outside the comparison: the page counts the connections' ages from it.
        return stream.send(f'event: state\ndata: {{"now":{self._now_ms()},{text[1:]}\n\n')

    async def _tick(self) -> None:
        beat = time.monotonic()
        interval = STATE_INTERVAL
        while self._streams:
            await asyncio.sleep(interval)
            started = time.perf_counter()
            heartbeat = time.monotonic() - beat > HEARTBEAT_INTERVAL
            if heartbeat:
                beat = time.monotonic()
            for app_id, streams in list(self._streams.items()):
                texts: dict[str, str] = {}  # once for all the app's viewers with the same filter
                for stream in list(streams):
                    text = texts.get(stream.listing)
                    if text is None:
                        text = texts[stream.listing] = self._state_text(self.node.states[app_id], stream.listing)
                    alive = self._send_state(stream, text, force=False)
                    if alive and heartbeat:
                        alive = stream.send(": heartbeat\n\n")
                    if not alive:
                        streams.discard(stream)
                if not streams:
                    self._forget(app_id)
            spent = time.perf_counter() - started
            interval = min(max(STATE_INTERVAL, spent / STATE_DUTY), HEARTBEAT_INTERVAL)

    def _now_ms(self) -> int:
        return self._epoch_ms(asyncio.get_running_loop().time())

    def _epoch_ms(self, loop_time: float) -> int:
        """A time of the event loop's clock (the one connections are stamped with) in milliseconds since the epoch,
        with one offset taken once: a connection's ``opened_at`` stays the same from one snapshot to the next, and
        ``now - opened_at`` is its age even if the wall clock is set meanwhile."""
        if self._wall_offset is None:
            self._wall_offset = time.time() - asyncio.get_running_loop().time()
        return round((loop_time + self._wall_offset) * 1000)

    def _state_text(self, state: AppState, listing: str) -> str:
        return dumps(self.snapshot(state, listing))

    def snapshot(self, state: AppState, listing: str = "") -> dict[str, Any]:
        """What the console shows of one app: the counts, the first connections and occupied channels with their
        first presence members, and today's usage. Its size is bounded whatever the app holds (``LISTED_*``,
        ``LIST_BYTES``), and nothing in it changes while the app's state does not (a connection's age is
        ``now - opened_at``, with ``now`` added to each event as it is sent). With ``listing``, only the channels
        whose name contains it are listed, and the connections whose socket id or user does; ``matching`` then
        counts them (a pass over all of them, where the unfiltered lists stop early)."""
        peers: Iterable[Peer] = state.peers.values()
        names: Iterable[str] = state.channels
        matching: dict[str, int] | None = None
        if listing:
            matched_peers = [peer for peer in peers if _peer_matches(peer, listing)]
            matched_names = [name for name in names if listing in name]
            peers, names = matched_peers, matched_names
            matching = {"connections": len(matched_peers), "channels": len(matched_names)}
        connections = []
        for peer in itertools.islice(peers, LISTED_CONNECTIONS):
            user_id, channels_of = _listed(peer)
            opened_at = getattr(peer, "opened_at", None)
            connections.append(
                {
                    "socket_id": peer.socket_id,
                    "user_id": user_id,
                    "channels": _first(channels_of, LISTED_CHANNELS_PER_CONNECTION),
                    "channels_total": len(channels_of),
                    "opened_at": None if opened_at is None else self._epoch_ms(opened_at),
                }
            )
        channels = []
        for name in _first(names, LISTED_CHANNELS):
            channel = state.channels[name]
            members, members_total = _members(state, name)
            channels.append(
                {
                    "name": name,
                    "kind": channel.kind.value,
                    "subscribers": state.subscription_count(name),
                    "members": members,
                    "members_total": members_total,
                }
            )
        today = state.meter.today()
        return {
            "app_id": state.app.app_id,
            "connections_total": len(state.peers),
            "connections": _within(connections, LIST_BYTES),
            "channels_total": len(state.channels),
            "channels": _within(channels, LIST_BYTES),
            "subscriptions": sum(len(c.subscribers) for c in state.channels.values()),
            "filter": listing,
            "matching": matching,
            "today": {
                "publishes": today.publishes,
                "client_events": today.client_events,
                "webhooks": today.webhooks,
                **today.summary(),
            },
            "ready": self.ready,
        }

    def close(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
        for app_id in list(self._streams):
            for stream in self._streams[app_id]:
                stream.transport.close()
            self._forget(app_id)


def _listed(peer: Peer) -> tuple[str | None, Collection[str]]:
    """A connection's user and channels as the console lists them: an Ably connection's client id and the channels
    it is attached to; a Pusher connection's signed-in user (or the user it is present as) and its subscriptions."""
    if isinstance(peer, AblySession):
        return peer.credentials.identified(), peer.channels.keys()
    subscriptions: dict[str, str | None] = getattr(peer, "subscriptions", {})
    return peer.user_id or next(filter(None, subscriptions.values()), None), subscriptions.keys()


def _peer_matches(peer: Peer, listing: str) -> bool:
    """Whether the console's filter ``listing`` lists ``peer``: in its socket id or its user. Not in its channels'
    names: a connection may be on a thousand, and every connection is looked at each tick, on the event loop (a
    Pusher connection's presence user is looked up among its subscriptions too, up to the first presence one)."""
    user, _ = _listed(peer)
    return listing in peer.socket_id or (user is not None and listing in user)


def _first(names: Iterable[str], count: int) -> list[str]:
    """The ``count`` first of ``names`` by name, in one pass over them (not a sort of all of them)."""
    return heapq.nsmallest(count, names)


def _members(state: AppState, name: str) -> tuple[list[dict[str, str]], int]:
    """The first LISTED_MEMBERS members of a presence channel on any node (their user_info cut at USER_INFO_CHARS),
    and how many there are, without copying them all."""
    listed: list[dict[str, str]] = []
    total = 0
    for user_id, info in state.presence_members(name):
        total += 1
        if total <= LISTED_MEMBERS:
            listed.append({"user_id": user_id, "user_info": clipped(info, USER_INFO_CHARS)})
    return listed, total


def _within(items: list[dict[str, Any]], size: int) -> list[dict[str, Any]]:
    """The first of ``items`` whose JSON fits in ``size`` bytes (a list of long names or ids stops early)."""
    used = 0
    for index, item in enumerate(items):
        used += utf8_length(dumps(item)) + 1
        if used > size:
            return items[:index]
    return items


def generated_by() -> str:
    from relay import __version__

    return f"relay emulator {__version__}"
