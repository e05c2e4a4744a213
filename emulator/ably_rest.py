"""The Ably REST subset on the emulator's port: publish (single, array, batch), history and presence history, channel
status and enumeration, presence (each paginated with ``Link: rel="next"``), time and ``requestToken``, with Ably's
errors (``{"error": {code, statusCode, message, href}}`` and the ``X-Ably-ErrorCode``/``X-Ably-ErrorMessage``
headers; 40400 for stats and push, which are not emulated). Bodies are JSON or msgpack, chosen by ``Content-Type`` in
and ``Accept`` (or ``?format=``) out, as the SDKs send them. An app's ``api_rate_limit`` is
shared with the Pusher HTTP API: over it, an authenticated request is refused with Ably's 42910 (429). The usage
meter counts each request that authenticated and was admitted, but a publish or a token request, as an Ably API
request (``ably_api_requests``), and token requests apart (``ably_token_requests``).
"""

from __future__ import annotations

import heapq
import hmac
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, TypeVar
from urllib.parse import quote, unquote, urlencode

from relay.emulator.ably_auth import AblyAuth, AblyError, Credentials
from relay.emulator.ably_history import OrderKey, cursor_text, parse_cursor
from relay.emulator.ably_hub import (
    AblyApp,
    Message,
    check_channel_name,
    check_messages,
    decode_body,
    encode_json,
    encode_msgpack,
    parse_message,
    qualified_channel,
)
from relay.emulator.ably_realtime import AblySession
from relay.emulator.config import App
from relay.emulator.http_api import Response
from relay.emulator.hub import AppState
from relay.emulator.session import Session
from relay.emulator.usage import AppMeter
from relay.errors import ProtocolError
from relay.protocol.ably import CHANNEL_LIFECYCLE, allows, check_message_count, is_metachannel, is_whole_number
from relay.protocol.media_types import media_type

log = logging.getLogger("relay.emulator")
MSGPACK = "application/x-msgpack"
# Ably's limit on the channels of one BatchSpec and of one batch presence request: 90010 (400) past it, "Max number of
# channels permitted in a single bulk publish request (100) exceeded" (ably-common errors/codes/90010.md; ably-js's
# batchPublish and batchPresence: "up to a maximum of 100 channels")
MAX_BATCH_CHANNELS = 100
# Messages a batch publish delivers in all (a channel's message counting once per channel): 100 channels × 1,000
# messages a spec, and any number of specs, held the event loop for seconds from a body of a few KB
MAX_BATCH_DELIVERIES = 10_000
DEFAULT_LIST_LIMIT = 100
MAX_LIST_LIMIT = 1_000
ROOTS = frozenset({"time", "keys", "channels", "messages", "presence", "stats", "push"})
NOT_EMULATED = {"stats": "Stats are not emulated", "push": "Push is not emulated"}  # 40400 (404)
CORS = (
    ("Access-Control-Allow-Methods", "GET, POST, OPTIONS"),
    (
        "Access-Control-Allow-Headers",
        "Authorization, Content-Type, Accept, X-Ably-Version, Ably-Agent, X-Ably-Lib, X-Ably-ClientId",
    ),
    ("Access-Control-Expose-Headers", "Link, X-Ably-ErrorCode, X-Ably-ErrorMessage, X-Ably-Serial, Retry-After"),
    ("Access-Control-Max-Age", "86400"),
)


def cors(origin: str | None) -> tuple[tuple[str, str], ...]:
    """The CORS headers of an answer to a page from ``origin``: ably-js in a browser sends its Authorization header
    with credentials included, which a browser refuses to combine with "*", so the page's origin is allowed by name
    (as Ably answers). The emulator sets no cookies: what a page may send is only what it holds itself."""
    if origin is None:
        return (("Access-Control-Allow-Origin", "*"), *CORS)
    return (
        ("Access-Control-Allow-Origin", origin),
        ("Access-Control-Allow-Credentials", "true"),
        ("Vary", "Origin"),
        *CORS,
    )


Handler = Callable[["_Request"], tuple[int, Any]]
T = TypeVar("T")


class ApiBudget(Protocol):
    """An app's HTTP API rate limit (``api_rate_limit``), the one the Pusher HTTP API uses (the node's
    ``Operations``): what is left of it is checked before a request is served, and a request that authenticated
    spends it."""

    def api_wait(self, state: AppState) -> int | None:
        """None when ``state``'s app may make a request now, else the whole seconds to wait."""

    def api_authenticated(self, state: AppState) -> None:
        """One request of ``state``'s app authenticated."""


class _Request:
    """One REST request: its path arguments, query, headers and decoded body; ``credentials`` once checked."""

    def __init__(
        self,
        args: list[str],
        query: Mapping[str, str],
        headers: Mapping[str, str],
        body: bytes,
        now_ms: int,
        metered: Callable[[AppMeter], None] | None,
    ) -> None:
        self.args = args
        self.metered = metered  # what the app's meter counts it as once it authenticates
        self.query = query
        self.headers = headers
        self.raw_body = body
        self.now_ms = now_ms
        self.link: str | None = None
        self.rels: dict[str, str] = {}  # the Link header's URLs by rel, for an envelope
        self.media_type = media_type(headers.get("content-type", ""))
        version = headers.get("x-ably-version") or query.get("v") or "1"
        try:
            self.version = float(version)
        except ValueError:
            raise AblyError(40000, f"Invalid X-Ably-Version {version[:16]!r}") from None

    def body(self) -> Any:
        if not self.raw_body:
            raise AblyError(40000, "The request body is empty")
        return decode_body(self.raw_body, self.media_type == MSGPACK, "The request body")


class AblyRest:
    def __init__(
        self,
        auth: AblyAuth,
        app_for: Callable[[str], AblyApp | None],
        wall_ms: Callable[[], int],
        budget: ApiBudget | None = None,
    ) -> None:
        self._auth = auth
        self._app_for = app_for  # by key name
        self._wall_ms = wall_ms
        self._budget = budget
        self._routes: dict[tuple[str, ...], dict[str, Handler]] = {
            ("time",): {"GET": self._time},
            ("keys", "*", "requestToken"): {"POST": self._request_token},
            ("channels",): {"GET": self._channels},
            ("channels", "*"): {"GET": self._channel},
            ("channels", "*", "messages"): {"POST": self._publish, "GET": self._history},
            ("channels", "*", "presence"): {"GET": self._presence},
            ("channels", "*", "presence", "history"): {"GET": self._presence_history},
            ("messages",): {"POST": self._batch_publish},
            ("presence",): {"GET": self._batch_presence},
        }
        # Every other request is metered as an Ably API request. A publish request is counted once admitted, whatever
        # its answer (its messages are metered one by one as publishes, once published); Ably limits token requests
        # apart from its HTTP API requests ("token requests/hour", ably-and-pricing §A.13), metered once issued.
        self._metered: dict[Handler, Callable[[AppMeter], None] | None] = {
            self._publish: AppMeter.publish_request,
            self._batch_publish: AppMeter.publish_request,
            self._request_token: None,
        }

    @staticmethod
    def owns(path: str) -> bool:
        return path.split("/", 2)[1] in ROOTS if path.startswith("/") else False

    def handle(
        self, method: str, path: str, query: Sequence[tuple[str, str]], headers: Sequence[tuple[str, str]], body: bytes
    ) -> Response:
        lowered = {name.lower(): value for name, value in headers}
        params = dict(query)
        accept = lowered.get("accept", "")
        if MSGPACK in accept or "application/json" in accept:  # Accept wins over ?format= (reference A.1)
            binary = MSGPACK in accept
        else:
            binary = params.get("format") == "msgpack"
        allowed = cors(lowered.get("origin"))
        # ?envelope=json (or msgpack, which ably-js sends in a browser when it uses msgpack): the answer wrapped
        # as Ably's "envelope response format", for clients that cannot read statuses or headers (ably-js in
        # browsers sends it on every paginated GET)
        envelope = params.get("envelope") in ("json", "msgpack")
        request: _Request | None = None
        extra: tuple[tuple[str, str], ...]
        try:
            if method == "OPTIONS":
                return Response(204, b"", allowed)
            handler, args = self._route(method, path)
            metered = self._metered.get(handler, AppMeter.ably_api_request)
            request = _Request(args, params, lowered, body, self._wall_ms(), metered)
            status, value = handler(request)
            extra = (("Link", request.link),) if request.link else ()
        except AblyError as exc:
            answer: dict[str, Any] = {"error": exc.body()}
            if isinstance(exc, _BatchError):
                answer["batchResponse"] = exc.outcomes
            status, value, extra = exc.status, answer, _error_headers(exc)
        except Exception:  # a bug must cost one request, not the connection's other requests
            log.exception("Ably REST request failed", extra={"method": method, "path": path[:200]})
            error = AblyError(50000, "Internal error")
            status, value, extra = 500, {"error": error.body()}, _error_headers(error)
        if envelope:
            value = _enveloped(status, value, extra, request.rels if request is not None else {})
            status = 200
        try:
            return _encoded(status, value, binary, (*extra, *allowed))
        except Exception:  # an answer that cannot be encoded is a bug too: it costs this request only
            log.exception("Ably REST answer failed", extra={"method": method, "path": path[:200]})
            error = AblyError(50000, "Internal error")
            return _encoded(500, {"error": error.body()}, binary, (*_error_headers(error), *allowed))

    def _route(self, method: str, path: str) -> tuple[Handler, list[str]]:
        segments = [unquote(segment) for segment in path.strip("/").split("/")]
        if segments[0] in NOT_EMULATED:  # any method: ably-js and ably-python read Ably's error, not a Pusher 404
            raise AblyError(40400, f"{NOT_EMULATED[segments[0]]}: {method} {path[:100]}", 404)
        for pattern, methods in self._routes.items():
            if len(pattern) != len(segments) or any(p not in ("*", s) for p, s in zip(pattern, segments, strict=True)):
                continue
            handler = methods.get(method)
            if handler is None:
                raise _MethodNotAllowed(path, [*methods, "OPTIONS"])
            return handler, [s for p, s in zip(pattern, segments, strict=True) if p == "*"]
        raise AblyError(40400, f"Not found: the emulator does not serve {method} {path[:100]}", 404)

    def _caller(self, request: _Request) -> tuple[Credentials, AblyApp]:
        credentials = self._auth.authorization(
            request.headers.get("authorization"), request.headers.get("x-ably-clientid"), now_ms=request.now_ms
        )
        app = self._app_for(credentials.key.key_name)
        assert app is not None  # every key the auth knows is an app's
        self._admit(app.state)
        self._spend(app.state)
        # Here, not per handler: a request Ably would count is one that authenticated as the app and was not refused
        # over its rate limit, whatever its answer (a capability refused, a bad parameter) after that.
        if request.metered is not None:
            request.metered(app.state.meter)
        if not app.state.app.enabled:
            raise AblyError(40120, "Application disabled")
        return credentials, app

    def _admit(self, state: AppState) -> None:
        """Refuse the request with 42910 when its app's HTTP API budget (shared with the Pusher HTTP API) is spent.
        Only requests that authenticated are checked and spend it (:meth:`_spend`), as on the Pusher side: forged ones
        cannot lock an app's backend out."""
        if state.app.api_rate_limit is None or self._budget is None:  # the usual case: no call per request
            return
        wait = self._budget.api_wait(state)
        if wait is not None:
            raise _RateLimited(state.app, wait)

    def _spend(self, state: AppState) -> None:
        if state.app.api_rate_limit is not None and self._budget is not None:
            self._budget.api_authenticated(state)

    # -- handlers ---------------------------------------------------------------------------------------------

    def _time(self, request: _Request) -> tuple[int, Any]:
        return 200, [request.now_ms]

    def _request_token(self, request: _Request) -> tuple[int, Any]:
        token_request = request.body() if request.raw_body else {}
        if not isinstance(token_request, dict):
            raise AblyError(40000, "A TokenRequest is an object")
        if token_request.get("mac") is None:  # unsigned: Basic auth, which spends the budget like any request
            caller, authenticated = self._caller(request)
            authenticated.state.meter.ably_token_request()
            details = self._auth.request_token(request.args[0], token_request, caller, now_ms=request.now_ms)
            return 200, details.to_dict()
        # Signed: the MAC authenticates it. The budget is checked first, so a refused request does not use up its
        # nonce, and spent once the token is issued (a forged TokenRequest spends nothing).
        app = self._app_for(request.args[0])  # None: an unknown key, which request_token refuses (40101)
        if app is not None:
            self._admit(app.state)
        details = self._auth.request_token(request.args[0], token_request, None, now_ms=request.now_ms)
        if app is not None:
            self._spend(app.state)
            app.state.meter.ably_token_request()
        return 200, details.to_dict()

    def _publish(self, request: _Request) -> tuple[int, Any]:
        credentials, app = self._caller(request)
        if request.args[0] == CHANNEL_LIFECYCLE:  # a metachannel, where only Ably publishes
            raise AblyError(
                40160, f"Unable to publish to {CHANNEL_LIFECYCLE!r}: no capability permits that on a metachannel"
            )
        name = _channel_in_path(request)
        _require(credentials, name, "publish")
        _refuse_unemulated_publish(request)
        body = request.body()
        raw = body if isinstance(body, list) else [body]
        if not raw:
            raise AblyError(40000, "Publish at least one message")
        try:
            check_message_count(len(raw), "messages")
        except ProtocolError as exc:
            raise AblyError.of(exc) from None
        messages = [parse_message(item, f"messages[{index}]") for index, item in enumerate(raw)]
        check_messages(messages, credentials, "messages")
        connection_id, exclude = _publishing_connection(app, messages)
        message_id, serials = app.publish(name, messages, connection_id=connection_id, exclude=exclude)
        return 201, {"channel": name, "messageId": message_id, "serials": serials}

    def _batch_publish(self, request: _Request) -> tuple[int, Any]:
        credentials, app = self._caller(request)
        body = request.body()
        specs = body if isinstance(body, list) else [body]
        if not specs:
            raise AblyError(40000, "A batch publish needs at least one BatchSpec")
        checked = []
        deliveries = 0
        for index, spec in enumerate(specs):
            channels, messages = _batch_spec(spec, index, credentials)
            deliveries += len(channels) * len(messages)
            if deliveries > MAX_BATCH_DELIVERIES:  # each spec within its limits, the request's total is not
                raise AblyError(
                    40000,
                    f"batch: more than {MAX_BATCH_DELIVERIES} messages to channels in one request (channels × messages,"
                    f" summed over the BatchSpecs, reached {deliveries} at batch[{index}])",
                )
            checked.append((channels, messages))
        results: list[dict[str, Any]] = []
        flat: list[dict[str, Any]] = []
        for channels, messages in checked:
            outcomes: list[dict[str, Any]] = []
            connection_id, exclude = _publishing_connection(app, messages)  # as a channel's own publish reads it
            for channel in channels:
                try:
                    name = check_channel_name(channel)
                    _require(credentials, name, "publish")
                    message_id, serials = app.publish(name, messages, connection_id=connection_id, exclude=exclude)
                    outcomes.append({"channel": name, "messageId": message_id, "serials": serials})
                except AblyError as exc:
                    outcomes.append({"channel": channel, "error": exc.body()})
            failures = sum(1 for outcome in outcomes if "error" in outcome)
            results.append({"successCount": len(outcomes) - failures, "failureCount": failures, "results": outcomes})
            flat += outcomes
        if request.version >= 2:
            return 201, results
        if any("error" in outcome for outcome in flat):
            error = AblyError(40020, "Batch error: some channels were not published to", 400)
            raise _BatchError(error, flat)
        return 201, [{"channel": outcome["channel"], "messageId": outcome["messageId"]} for outcome in flat]

    def _history(self, request: _Request) -> tuple[int, Any]:
        """``channel.history()``: the messages published through Ably's protocol within the app's retention, newest
        first unless ``direction=forwards``; ``from_serial`` (``untilAttach``) leaves out those kept after the
        ATTACHED whose channelSerial it is."""
        return self._kept(request, presence=False)

    def _presence_history(self, request: _Request) -> tuple[int, Any]:
        """``channel.presence.history()``: the members' enters, updates and leaves, as ``_history`` answers."""
        return self._kept(request, presence=True)

    def _kept(self, request: _Request, *, presence: bool) -> tuple[int, Any]:
        credentials, app = self._caller(request)
        name = _channel_in_path(request, metachannel=True)
        _require(credentials, name, "history")
        query = request.query
        limit = _limit(query.get("limit"), DEFAULT_LIST_LIMIT)
        direction = query.get("direction") or "backwards"
        if direction not in ("backwards", "forwards"):
            raise AblyError(40003, f"direction must be backwards or forwards, got {direction[:20]!r}")
        start = _milliseconds(query, "start", 0)
        # Pinned in the next page's link: later messages stay out. A start ahead of this clock is an empty answer.
        end = _milliseconds(query, "end", max(request.now_ms, start))
        if start > end:
            raise AblyError(40003, "start must not be later than end")
        serial_param = "from_serial" if "from_serial" in query else "fromSerial"  # ably-js's, other SDKs'
        until = _serial(query.get(serial_param))
        if until is not None and direction == "forwards":
            raise AblyError(40003, "untilAttach (from_serial) needs direction=backwards")
        if until is not None and not app.gave_serial(until):
            # Compared with this node's serials, another node's cut nothing or everything, silently
            raise AblyError(
                40003,
                f"{serial_param} {query[serial_param]!r} is not a channelSerial this node sent: untilAttach is "
                "answered by the node the channel was attached on (in a cluster, another node's, or a restarted "
                "node's, cuts nothing here)",
            )
        found, more = (app.presence_history if presence else app.history).page(
            name,
            request.now_ms,
            start=start,
            end=end,
            backwards=direction == "backwards",
            limit=limit,
            until=until,
            after=_history_cursor(query.get("cursor")),
        )
        params = {"start": str(start), "end": str(end), "direction": direction, "limit": str(limit)}
        if until is not None:
            params[serial_param] = query[serial_param]
        next_cursor = cursor_text(found[-1]) if more else None
        _link_pages(request, "history" if presence else "messages", params, next_cursor)
        app.state.meter.history_read(len(found))
        return 200, [message.item() for message in found]

    def _channel(self, request: _Request) -> tuple[int, Any]:
        credentials, app = self._caller(request)
        name = _channel_in_path(request)
        _require(credentials, name, "channel-metadata")
        return 200, app.channel_details(name)

    def _channels(self, request: _Request) -> tuple[int, Any]:
        credentials, app = self._caller(request)
        _require(credentials, "*", "channel-metadata")
        prefix = request.query.get("prefix", "")
        limit = _limit(request.query.get("limit"), DEFAULT_LIST_LIMIT)
        by = request.query.get("by") or ("id" if request.version >= 3 else "value")
        if by not in ("id", "value"):
            raise AblyError(40003, "by must be id or value")
        # Not the lifecycle metachannel its subscribers hold open: the "*" this request needs does not cover [meta]
        names = [name for name in app.state.channel_names() if name.startswith(prefix) and not is_metachannel(name)]
        page = _page(request, "channels", names, str, limit, {"prefix": prefix, "by": by})
        return 200, page if by == "id" else [app.channel_details(name) for name in page]

    def _presence(self, request: _Request) -> tuple[int, Any]:
        credentials, app = self._caller(request)
        name = _channel_in_path(request)
        _require(credentials, name, "subscribe")
        filters = {field: request.query[field] for field in ("clientId", "connectionId") if field in request.query}
        limit = _limit(request.query.get("limit"), DEFAULT_LIST_LIMIT)
        members = _page(request, "presence", _members(app, name, filters), _member_key, limit, filters)
        app.state.meter.history_read(len(members))
        return 200, members

    def _batch_presence(self, request: _Request) -> tuple[int, Any]:
        credentials, app = self._caller(request)
        separator = request.query.get("separator") or ","
        names = [name for name in request.query.get("channels", "").split(separator) if name]
        if not names:
            raise AblyError(40000, "channels is required: a list of channel names")
        if len(names) > MAX_BATCH_CHANNELS:
            raise AblyError(
                90010,
                f"Max number of channels permitted in a single batch presence request ({MAX_BATCH_CHANNELS}) "
                f"exceeded: {len(names)} channels",
            )
        outcomes: list[dict[str, Any]] = []
        for channel in names:
            try:
                name = check_channel_name(channel)
                _require(credentials, name, "subscribe")
                members = _members(app, name, {})  # the whole set: a batch answer has no next page to follow
                app.state.meter.history_read(len(members))
                outcomes.append({"channel": name, "presence": members})
            except AblyError as exc:
                outcomes.append({"channel": channel, "error": exc.body()})
        if request.version < 2:
            return 200, outcomes
        failures = sum(1 for outcome in outcomes if "error" in outcome)
        return 200, {"successCount": len(outcomes) - failures, "failureCount": failures, "results": outcomes}


class _BatchError(AblyError):
    """The legacy (protocol v1) partial-failure answer: 400, error 40020 and the per-channel ``batchResponse``."""

    def __init__(self, error: AblyError, outcomes: list[dict[str, Any]]) -> None:
        super().__init__(error.code, error.message, error.status)
        self.outcomes = outcomes


class _RateLimited(AblyError):
    """42910 (429), Ably's "rate limit exceeded (nonfatal): request rejected", with ``Retry-After``."""

    def __init__(self, app: App, retry_after: int) -> None:
        super().__init__(
            42910,
            f"Rate limit exceeded; request rejected (nonfatal); metric = api_rate_limit: app {app.app_id[:100]!r} "
            f"allows {app.api_rate_limit:g} HTTP API requests a second, Pusher and Ably REST together; "
            f"retry in {retry_after} s",
            429,
        )
        self.retry_after = retry_after


class _MethodNotAllowed(AblyError):
    """405, with the ``Allow`` header RFC 9110 §15.5.6 requires."""

    def __init__(self, path: str, allowed: list[str]) -> None:
        super().__init__(40500, f"{path} accepts {', '.join(allowed[:-1])} only", 405)
        self.allowed = allowed


def _batch_spec(spec: object, index: int, credentials: Credentials) -> tuple[list[str], list[Message]]:
    where = f"batch[{index}]"
    if not isinstance(spec, dict):
        raise AblyError(40000, f"{where}: a BatchSpec is an object with channels and messages")
    channels = spec.get("channels")
    channels = [channels] if isinstance(channels, str) else channels
    if not isinstance(channels, list) or not channels or not all(isinstance(c, str) for c in channels):
        raise AblyError(40000, f"{where}: channels is a channel name or a non-empty array of them")
    if len(channels) > MAX_BATCH_CHANNELS:
        raise AblyError(
            90010,
            f"{where}: Max number of channels permitted in a single bulk publish request ({MAX_BATCH_CHANNELS}) "
            f"exceeded: {len(channels)} channels",
        )
    raw = spec.get("messages")
    raw = [raw] if isinstance(raw, dict) else raw
    if not isinstance(raw, list) or not raw:
        raise AblyError(40000, f"{where}: messages is a message or a non-empty array of them")
    try:
        check_message_count(len(raw), f"{where}.messages")
    except ProtocolError as exc:
        raise AblyError.of(exc) from None
    messages = [parse_message(item, f"{where}.messages[{i}]") for i, item in enumerate(raw)]
    check_messages(messages, credentials, f"{where}.messages")
    return channels, messages


def _members(app: AblyApp, name: str, filters: Mapping[str, str]) -> list[dict[str, Any]]:
    """The presence set of ``name``, only the members matching ``filters`` (``clientId``, ``connectionId``)."""
    return [m for m in app.members(name) if all(m[field] == value for field, value in filters.items())]


def _member_key(member: dict[str, Any]) -> str:
    """A member's key, its place in presence pages: connection ids (socket ids, ``digits.digits``) hold no ``:``."""
    return f"{member['connectionId']}:{member['clientId']}"


def _page(
    request: _Request, resource: str, items: Sequence[T], key: Callable[[T], str], limit: int, params: Mapping[str, str]
) -> list[T]:
    """One page of ``items`` in ``key`` order: those after the request's ``cursor`` (the key of the last item of the
    page before), at most ``limit``; with the links to pages (:func:`_link_pages`) of ``params`` and the limit. A
    cursor, not an offset: an item added or removed between pages does not shift the next page (reference §A.8)."""
    cursor = request.query.get("cursor", "")
    # The page and whether another follows: the first limit + 1, not every item sorted (100,000 channels' names)
    after = heapq.nsmallest(limit + 1, (item for item in items if key(item) > cursor), key=key)
    page = after[:limit]
    next_cursor = key(page[-1]) if len(after) > limit else None
    _link_pages(request, resource, {**params, "limit": str(limit)}, next_cursor)
    return page


def _link_pages(request: _Request, resource: str, params: Mapping[str, str], next_cursor: str | None) -> None:
    """The answer's ``Link`` header, as Ably's: ``rel="first"`` (``params`` alone), ``rel="current"`` (this page
    again: the request's cursor) and, when more follow, ``rel="next"`` (``next_cursor``), each to
    ``./{resource}?{query}``, the relative form ably-js follows and ably-python joins to the request URL (reference
    §A.1). The SDKs' ``first()`` and ``current()`` follow the first two."""
    cursor = request.query.get("cursor")
    queries = {"first": params, "current": {**params, "cursor": cursor} if cursor else params}
    if next_cursor is not None:
        queries["next"] = {**params, "cursor": next_cursor}
    # quote: no "+" nor ",", for ably-js
    request.rels = {rel: f"./{resource}?{urlencode(query, quote_via=quote)}" for rel, query in queries.items()}
    request.link = ", ".join(f'<{url}>; rel="{rel}"' for rel, url in request.rels.items())


def _milliseconds(query: Mapping[str, str], name: str, default: int) -> int:
    value = query.get(name)
    if value is None:
        return default
    if not is_whole_number(value, 16):
        raise AblyError(40003, f"{name} must be a time in milliseconds since the epoch, got {value[:20]!r}")
    return int(value)


_CHANNEL_SERIAL = re.compile(r"[0-9a-f]{16}")


def _serial(value: str | None) -> int | None:
    """The position an ATTACHED's ``channelSerial`` names (``untilAttach``'s ``from_serial``)."""
    if value is None:
        return None
    if not _CHANNEL_SERIAL.fullmatch(value):
        raise AblyError(40003, f"from_serial {value[:40]!r} is not a channelSerial this emulator sent")
    return int(value, 16)


def _history_cursor(value: str | None) -> OrderKey | None:
    if value is None:
        return None
    try:
        return parse_cursor(value)
    except ValueError:
        raise AblyError(40003, f"cursor {value[:40]!r} is not one this emulator sent") from None


def _publishing_connection(app: AblyApp, messages: Sequence[Message]) -> tuple[str | None, str | None]:
    """(connectionId, excluded socket) for a publish "as" a connection (``connectionKey``): an Ably connection that
    set ``echo=false`` does not get its own message back; a Pusher socket id is excluded, as Pusher's ``socket_id``.
    In a cluster the connection may be another node's: the bus carries the excluded socket, and the message's
    connectionId keeps an echo=false connection's own message from it there."""
    key = next((message.connection_key for message in messages if message.connection_key), None)
    if key is None:
        return None, None
    socket_id = key.partition("!")[0]
    peer = app.state.peers.get(socket_id)
    if isinstance(peer, AblySession) and hmac.compare_digest(peer.connection_key, key):
        return peer.socket_id, None if peer.echo else peer.socket_id
    if isinstance(peer, Session):
        return peer.socket_id, peer.socket_id
    if app.state.cluster is not None and peer is None:
        if key == socket_id:  # a Pusher socket id, left out wherever it is, as Pusher's socket_id; but whose it is
            return None, socket_id  # cannot be told here (an Ably connection's id has the same form): not named
        if hmac.compare_digest(key, app.connection_key(socket_id)):
            return socket_id, None
    return None, None


def _refuse_unemulated_publish(request: _Request) -> None:
    """Ably's publishes whose body is not Message objects (reference §A.1, §A.3): read as Message objects, an
    unenveloped body (a third party's webhook posted to a channel) was published as empty messages, with a 201."""
    if request.query.get("enveloped") == "false":
        raise AblyError(
            40000,
            "Unenveloped publishes (enveloped=false) are not emulated: send Message objects, "
            '{"name": …, "data": …}, as JSON or msgpack',
        )
    if request.media_type == "application/x-www-form-urlencoded":
        raise AblyError(40000, "Form-encoded publishes are not emulated: send Message objects as JSON or msgpack")


def _channel_in_path(request: _Request, *, metachannel: bool = False) -> str:
    """The channel a route's path names: as an ATTACH reads it, ``[?rewind=1]orders`` is ``orders``. With
    ``metachannel`` (history, which Ably answers for a metachannel too) the lifecycle metachannel is one."""
    if metachannel and request.args[0] == CHANNEL_LIFECYCLE:
        return CHANNEL_LIFECYCLE
    return qualified_channel(request.args[0])[0]


def _require(credentials: Credentials, channel: str, operation: str) -> None:
    if not allows(credentials.capability, channel, operation):
        raise AblyError(40160, f"Action not permitted: {operation!r} on channel {channel[:100]!r} by this capability")


def _limit(value: str | None, default: int) -> int:
    if value is None:
        return default
    if not is_whole_number(value, 4) or not 1 <= int(value) <= MAX_LIST_LIMIT:
        raise AblyError(40003, f"limit must be between 1 and {MAX_LIST_LIMIT}")
    return int(value)


def error_answer(error: AblyError) -> Response:
    """``error`` as an Ably REST answer in JSON, for a request refused before it is read (a body over the limit)."""
    return _encoded(error.status, {"error": error.body()}, False, _error_headers(error))


def _enveloped(status: int, value: Any, headers: Sequence[tuple[str, str]], rels: Mapping[str, str]) -> dict[str, Any]:
    """An answer in Ably's envelope response format: ``{statusCode, response, rel}`` (``rel``, the page links by
    relation, only when paginated; Ably's REST API docs, "Envelope response format"), and the ``headers`` it would
    have carried, where ably-js reads the ``link`` of the next page from (its ``unenvelope``)."""
    answer: dict[str, Any] = {"statusCode": status, "response": value}
    if headers:
        answer["headers"] = {name.lower(): header for name, header in headers}
    if rels:
        answer["rel"] = dict(rels)
    return answer


def _encoded(status: int, value: Any, binary: bool, headers: Sequence[tuple[str, str]]) -> Response:
    if binary:
        return Response(status, encode_msgpack(value), (("Content-Type", MSGPACK), *headers))
    body = encode_json(value).encode()
    return Response(status, body, (("Content-Type", "application/json"), *headers))


def _error_headers(error: AblyError) -> tuple[tuple[str, str], ...]:
    # Header values must stay latin-1: anything else becomes "?".
    message = error.message.encode("ascii", "replace").decode()[:500]
    headers = (("X-Ably-ErrorCode", str(error.code)), ("X-Ably-ErrorMessage", message))
    if isinstance(error, _RateLimited):
        return (*headers, ("Retry-After", str(error.retry_after)))
    return (*headers, ("Allow", ", ".join(error.allowed))) if isinstance(error, _MethodNotAllowed) else headers
