"""The Pusher HTTP API (``/apps/{app_id}/…``): signed requests in, JSON out, every error a JSON body."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, NamedTuple
from urllib.parse import unquote

from relay.emulator.config import unprefixed
from relay.emulator.idempotency import batch_identity, events_identity
from relay.errors import (
    AuthenticationError,
    InvalidFrame,
    InvalidSignature,
    NotFound,
    PermissionDenied,
    ProtocolError,
    RelayError,
)
from relay.protocol.channels import (
    ChannelKind,
    classify,
    is_cache_channel,
    is_valid_channel_name,
    validate_channel_name,
    validate_event_name,
)
from relay.protocol.frames import check_event_size, dumps, dumps_parsed, loads, utf8_length
from relay.protocol.idempotency_keys import MAX_SENT_KEY_LENGTH, REPLAYED_HEADER, check_idempotency_key
from relay.protocol.signing import unique_params, verify_rest_request
from relay.protocol.socket_ids import validate_socket_id

if TYPE_CHECKING:
    from relay.emulator.hub import AppState

_APP_IN_PATH = re.compile(r"/apps/([^/]+)/")
_USER_ALIAS = re.compile(r"/users/[^/]+/terminate_connections")
# Hosted Pusher's answer to info=subscription_count for an app that has not enabled subscription counting
# (pusher/pusher-http-ruby#193); relay's PusherAdapter recognises it and asks again without the attribute.
SUBSCRIPTION_COUNTING_OFF = "Cannot retrieve the subscription count because subscription counting is not enabled"

# The answer to terminate_connections on a cluster node that cannot reach Redis.
TERMINATE_UNREACHED = (
    "Redis is unavailable: the user's connections on this node were closed, those on other nodes were not; retry"
)

CORS_HEADERS = (
    ("Access-Control-Allow-Origin", "*"),
    ("Access-Control-Allow-Methods", "GET, POST, OPTIONS"),
    ("Access-Control-Allow-Headers", "Content-Type, Authorization, X-Socket-Id, X-CSRF-Token, X-Requested-With"),
    ("Access-Control-Max-Age", "86400"),
)


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes
    headers: Sequence[tuple[str, str]] = field(default_factory=tuple)


def json_response(status: int, value: object) -> Response:
    return Response(status, dumps(value).encode(), (("Content-Type", "application/json"),))


def error_response(status: int, message: str) -> Response:
    return json_response(status, {"error": message})


def method_not_allowed(message: str, allowed: Sequence[str]) -> Response:
    """405 with the ``Allow`` header RFC 9110 §15.5.6 requires: the methods the resource answers."""
    return Response(
        405, dumps({"error": message}).encode(), (("Content-Type", "application/json"), ("Allow", ", ".join(allowed)))
    )


PUBLISHED = json_response(200, {})  # the answer to most publishes, built once (Response is immutable)


def replayed_answer(answer: Response) -> Response:
    """A keyed publish's first answer, given to its resend: marked, as relay serve marks its own, for the client's
    ``replayed`` (nothing was published again)."""
    return replace(answer, headers=(*answer.headers, (REPLAYED_HEADER, "true")))


def published_answer(body: bytes) -> Response:
    """A publish's answer from its body (another node's, which sent only that): the shared one for most."""
    return PUBLISHED if body == PUBLISHED.body else Response(200, body, PUBLISHED.headers)


Handler = Callable[["AppState", Sequence[str], Mapping[str, str], bytes], Response]


class HttpApi:
    def __init__(
        self,
        apps_by_id: Mapping[str, AppState],
        apps_by_key: Mapping[str, AppState],
        *,
        path_prefix: str = "",
        wall_clock: Callable[[], float] = time.time,
        on_authenticated: Callable[[AppState], None] | None = None,
    ) -> None:
        self._apps_by_id = apps_by_id
        self._apps_by_key = apps_by_key
        self._prefix = path_prefix  # EmulatorConfig.path_prefix
        self._wall_clock = wall_clock
        # Called once a request's signature is verified (the rate limit counts those requests only).
        self._on_authenticated = on_authenticated
        self._routes: tuple[tuple[str, re.Pattern[str], Handler, bool], ...] = (
            ("POST", re.compile(r"/apps/([^/]+)/events"), self._events, True),
            ("POST", re.compile(r"/apps/([^/]+)/batch_events"), self._batch_events, True),
            ("GET", re.compile(r"/apps/([^/]+)/channels"), self._channels, True),
            ("GET", re.compile(r"/apps/([^/]+)/channels/([^/]+)"), self._channel, True),
            ("GET", re.compile(r"/apps/([^/]+)/channels/([^/]+)/users"), self._users, True),
            ("POST", re.compile(r"/apps/([^/]+)/users/([^/]+)/terminate_connections"), self._terminate, True),
            ("POST", re.compile(r"/users/([^/]+)/terminate_connections"), self._terminate, False),
        )

    def app_for(self, raw_path: str, query: Sequence[tuple[str, str]]) -> AppState | None:
        """The app a request is for: by the (percent-decoded) id in ``/apps/{id}/…``, or on the bare
        ``/users/{id}/terminate_connections`` by its ``auth_key`` (parameter names in any case). The one resolution
        the API, its rate limit and its accounting share, so none can be told a different app than the others."""
        path = unprefixed(raw_path, self._prefix) if self._prefix else raw_path
        if path is None:
            return None
        match = _APP_IN_PATH.match(path)
        if match is not None:
            app_id = match.group(1)
            return self._apps_by_id.get(unquote(app_id) if "%" in app_id else app_id)
        if _USER_ALIAS.fullmatch(path) is None:
            return None
        try:
            params = unique_params(query)
        except AuthenticationError:  # a repeated parameter: the API refuses the request (401)
            return None
        return self._apps_by_key.get(params.get("auth_key", ""))

    def handle(
        self,
        method: str,
        raw_path: str,
        query: Sequence[tuple[str, str]],
        body: bytes,
        state: AppState | None = None,
    ) -> Response:
        """Answer one request (the server adds the CORS headers to every response, see ``response_head``); ``state``
        is :meth:`app_for`'s answer when the caller has it already."""
        try:
            return self._dispatch(method, raw_path, query, body, state)
        except RelayError as exc:
            return error_response(exc.http_status or 500, exc.message)

    def _dispatch(
        self, method: str, raw_path: str, query: Sequence[tuple[str, str]], body: bytes, state: AppState | None
    ) -> Response:
        path = unprefixed(raw_path, self._prefix) if self._prefix else raw_path
        if path is None:
            raise NotFound(f"no route for {raw_path}")
        if method == "OPTIONS":
            return Response(204, b"")
        allowed: list[str] = []
        for route_method, pattern, handler, app_in_path in self._routes:
            match = pattern.fullmatch(path)
            if match is None:
                continue
            # HEAD is GET without the body (RFC 9110 §9.3.2), which the server leaves out.
            if route_method != method and (method != "HEAD" or route_method != "GET"):
                allowed += ("GET", "HEAD") if route_method == "GET" else (route_method,)
                continue
            params = unique_params(query)
            if state is None:
                state = self.app_for(raw_path, query)
                if state is None and app_in_path:
                    raise NotFound(f"unknown app id {match.group(1)!r}")
                if state is None:  # the key names the app on the bare paths: a wrong one is a wrong credential
                    raise AuthenticationError("unknown auth_key: no app has this key")
            groups = match.groups()
            # An /apps/{id}/… route's first group is the app's id; the others are the handler's arguments.
            arguments = groups[1:] if app_in_path else groups
            args = [unquote(group) for group in arguments] if arguments else []
            self._authenticate(state, method, raw_path, path, params, body)
            if self._on_authenticated is not None:
                self._on_authenticated(state)
            if not state.app.enabled:
                raise PermissionDenied("the app is disabled")
            return handler(state, args, params, body)
        if allowed:
            return method_not_allowed(f"{path} accepts {', '.join(allowed)} only", [*allowed, "OPTIONS"])
        raise NotFound(f"no route for {method} {path}")

    def _authenticate(
        self, state: AppState, method: str, raw_path: str, path: str, params: Mapping[str, str], body: bytes
    ) -> None:
        """The signature may cover the path as sent, unquoted, or without the emulator's path prefix; a HEAD's may
        be the GET's it stands for (``curl -I`` on a signed GET URL)."""
        key, secret = state.app.key_pair(params.get("auth_key"))
        now = self._wall_clock()
        try:
            verify_rest_request(key=key, secret=secret, method=method, path=raw_path, params=params, body=body, now=now)
            return
        except InvalidSignature as failure:
            paths = {unquote(raw_path), path}
            candidates = [(method, candidate) for candidate in paths - {raw_path}]
            if method == "HEAD":
                candidates += [("GET", candidate) for candidate in paths | {raw_path}]
            for signed_method, candidate in candidates:
                try:
                    verify_rest_request(
                        key=key,
                        secret=secret,
                        method=signed_method,
                        path=candidate,
                        params=params,
                        body=body,
                        now=now,
                    )
                    return
                except InvalidSignature:
                    pass
            raise failure from None

    # -- handlers ---------------------------------------------------------------------------------------------

    def _events(self, state: AppState, _: Sequence[str], params: Mapping[str, str], body: bytes) -> Response:
        if not body and "name" in params:  # Pusher's API allows them there; no Pusher library sends them so
            raise ProtocolError(
                "event parameters in the query string are not supported by the emulator: send name, channel(s) and "
                "data as a JSON body, as the Pusher libraries do"
            )
        key = params.get("idempotency_key")  # the one cost of idempotency to a publish without it
        if key is not None:
            check_idempotency_key(key, MAX_SENT_KEY_LENGTH)  # before the body: a malformed key is the answer
        request = _json_object(body)
        event = _checked_event(state, request)
        info_value = request.get("info")
        info = _info_fields(state, info_value) if info_value is not None else _NO_INFO
        if key is None:
            return _published(state, event, info)
        identity = events_identity(key, event.channels)
        return state.published_keys.once(key, identity, body, lambda: _published(state, event, info), replayed_answer)

    def _batch_events(self, state: AppState, _: Sequence[str], params: Mapping[str, str], body: bytes) -> Response:
        key = params.get("idempotency_key")
        if key is not None:
            check_idempotency_key(key, MAX_SENT_KEY_LENGTH)
        batch = _json_object(body).get("batch")
        limit = state.app.limits.max_batch_events
        if not isinstance(batch, list) or not batch:
            raise ProtocolError("batch must be a non-empty list of events")
        if len(batch) > limit:
            raise ProtocolError(f"batch has {len(batch)} events; the limit is {limit}")
        events: list[_Event] = []
        infos: list[frozenset[str]] = []
        for index, item in enumerate(batch):
            if not isinstance(item, dict):
                raise ProtocolError(f"batch[{index}] must be an object")
            if "channels" in item:  # was published to each: a batch event has one channel in Pusher's API
                raise ProtocolError(f"batch[{index}]: 'channels' is not allowed in a batch event; give one 'channel'")
            try:
                events.append(_checked_event(state, item))
                infos.append(_info_fields(state, item.get("info")))
            except RelayError as exc:
                raise type(exc)(f"batch[{index}]: {exc.message}") from None
        if key is None:
            return _batch_published(state, events, infos)
        return state.published_keys.once(
            key, batch_identity(key), body, lambda: _batch_published(state, events, infos), replayed_answer
        )

    def _channels(self, state: AppState, _: Sequence[str], params: Mapping[str, str], __: bytes) -> Response:
        prefix = params.get("filter_by_prefix", "")
        info = _info_fields(state, params.get("info"))
        if "user_count" in info and not prefix.startswith("presence-"):
            raise ProtocolError(
                "user_count may only be requested for presence channels - "
                "please supply filter_by_prefix beginning with presence-"
            )
        # Only names Pusher's API can then ask about (an Ably client's "room:1" is not one): listed, a channel would
        # be refused by GET /channels/{name}
        limits = state.app.limits
        names = sorted(
            name for name in state.channel_names() if name.startswith(prefix) and is_valid_channel_name(name, limits)
        )
        # Written as text, not dumps of a dict of one dict a channel, which held the event loop several times as long
        # over 100,000 channels (with a full collection of the garbage collector while it was built): such names
        # need no escaping in JSON, nor do the attributes, which are counts.
        if not info:  # the usual listing
            text = '{"channels":{"' + '":{},"'.join(names) + '":{}}}' if names else '{"channels":{}}'
        elif info == _SUBSCRIPTION_COUNT:  # the usual counted listing: half the time of the general case
            counts = zip(names, state.subscription_counts(names), strict=True)
            entries = ",".join([f'"{name}":{{"subscription_count":{count}}}' for name, count in counts])
            text = '{"channels":{' + entries + "}}"
        else:
            entries = ",".join([f'"{name}":{_counts_json(_channel_info(state, name, info))}' for name in names])
            text = '{"channels":{' + entries + "}}"
        return Response(200, text.encode(), (("Content-Type", "application/json"),))

    def _channel(self, state: AppState, args: Sequence[str], params: Mapping[str, str], __: bytes) -> Response:
        name = validate_channel_name(args[0], state.app.limits)
        info = _info_fields(state, params.get("info"), _CHANNEL_INFO)
        body: dict[str, object] = {"occupied": state.subscription_count(name) > 0}
        body.update(_channel_info(state, name, info))
        if "cache" in info:
            if not is_cache_channel(name):
                raise ProtocolError("cache may only be requested for cache channels")
            cached = state.cached(name)
            if cached is not None:
                event, data = cached
                body["cache"] = {"event": event, "data": data, "ttl": state.cache_ttl(name)}
        return json_response(200, body)

    def _users(self, state: AppState, args: Sequence[str], _: Mapping[str, str], __: bytes) -> Response:
        name = validate_channel_name(args[0], state.app.limits)
        if classify(name) is not ChannelKind.PRESENCE:
            raise ProtocolError("users may only be requested for presence channels")
        return json_response(200, {"users": [{"id": user_id} for user_id in state.presence_hash(name)]})

    def _terminate(self, state: AppState, args: Sequence[str], _: Mapping[str, str], __: bytes) -> Response:
        if not state.terminate_user(args[0]):
            # A security action must not look done when the user's connections on other nodes stay open: the caller
            # retries (closing nothing twice) rather than trust a 200.
            return error_response(503, TERMINATE_UNREACHED)
        return json_response(200, {})


_NO_INFO: frozenset[str] = frozenset()
# The attributes a publish's answer and the channel list have; one channel's (GET /channels/{name}) has its cache too.
_COUNTS = frozenset({"user_count", "subscription_count"})
_CHANNEL_INFO = _COUNTS | {"cache"}
_SUBSCRIPTION_COUNT = frozenset({"subscription_count"})


class _Event(NamedTuple):  # built per publish: a NamedTuple costs half of a frozen dataclass's __init__
    name: str
    channels: list[str]
    data: str
    socket_id: str | None


_new_tuple = tuple.__new__


def _json_object(body: bytes) -> dict[str, object]:
    try:
        value = loads(body, "the request body")
    except InvalidFrame as exc:
        raise ProtocolError(exc.message) from None
    if not isinstance(value, dict):
        raise ProtocolError("the request body must be a JSON object")
    return value


def _checked_event(state: AppState, request: Mapping[str, object]) -> _Event:
    limits = state.app.limits
    name = validate_event_name(request.get("name"), limits)
    if "channels" in request and "channel" in request:
        # Pusher's reference has channel "instead of channels"; with both, channel was dropped without a word.
        raise ProtocolError("an event has channels (a list) or channel (a name), not both: give one")
    if "channels" in request:
        channels = request["channels"]
        if not isinstance(channels, list) or not channels:
            raise ProtocolError("channels must be a non-empty list of channel names")
    elif "channel" in request:
        channels = [request["channel"]]
    else:
        raise ProtocolError("an event needs channels (a list) or channel (a name)")
    if len(channels) > limits.max_channels_per_event:
        raise ProtocolError(f"{len(channels)} channels given; the limit is {limits.max_channels_per_event}")
    if len(channels) == 1:  # the usual publish: no generator, dict and list to drop repeats from one name
        checked = [validate_channel_name(channels[0], limits)]
    else:
        checked = list(dict.fromkeys(validate_channel_name(channel, limits) for channel in channels))  # once each
    raw_data = request.get("data")
    if raw_data is None:
        raise ProtocolError("data is required (a string, usually JSON-encoded)")
    data = raw_data if isinstance(raw_data, str) else dumps_parsed(raw_data, "data")
    check_event_size(utf8_length(data), limits, checked)
    socket_id = request.get("socket_id")
    # _Event(...) without its generated Python __new__
    return _new_tuple(_Event, (name, checked, data, None if socket_id is None else validate_socket_id(socket_id)))


def _publish(state: AppState, event: _Event) -> None:
    for channel in event.channels:
        state.publish(channel, event.name, event.data, event.socket_id)


def _published(state: AppState, event: _Event, info: frozenset[str]) -> Response:
    """``event`` published, and the answer: the channels' ``info`` attributes, if asked."""
    _publish(state, event)
    state.meter.publish_request()
    if info:
        channels = {name: _channel_info(state, name, info, where_allowed=True) for name in event.channels}
        return json_response(200, {"channels": channels})
    return PUBLISHED


def _batch_published(state: AppState, events: Sequence[_Event], infos: Sequence[frozenset[str]]) -> Response:
    for event in events:
        _publish(state, event)
    state.meter.publish_request()
    if any(infos):
        return json_response(
            200,
            {
                "batch": [
                    _channel_info(state, e.channels[0], i, where_allowed=True) if i else {}
                    for e, i in zip(events, infos, strict=True)
                ]
            },
        )
    return json_response(200, {})


def _info_fields(state: AppState, value: object, allowed: frozenset[str] = _COUNTS) -> frozenset[str]:
    """The attributes an ``info`` parameter asks for, of those ``allowed`` where it is given, checked before anything
    is published."""
    if value is None or value == "":
        return frozenset()
    if not isinstance(value, str):
        raise ProtocolError("info must be a comma-separated string")
    fields = frozenset(part.strip() for part in value.split(","))
    if "" in fields:  # "user_count," or "a,,b": named as such, not as an unknown attribute called ""
        raise ProtocolError(f"info {value[:100]!r} has an empty attribute: list them separated by single commas")
    unknown = fields - _CHANNEL_INFO
    if unknown:
        raise ProtocolError(f"unknown info attribute(s): {', '.join(sorted(unknown))}")
    if not fields <= allowed:  # cache, of a publish or the list: answered as if not asked, {} for every channel
        where = f"/apps/{state.app.app_id}/channels/{{name}}?info=cache"
        raise ProtocolError(f"info=cache is answered for one channel only: ask GET {where}")
    if "subscription_count" in fields and not state.app.subscription_count:
        raise ProtocolError(SUBSCRIPTION_COUNTING_OFF)
    return fields


def _channel_info(
    state: AppState, name: str, info: frozenset[str], *, where_allowed: bool = False
) -> dict[str, object]:
    """The requested attributes; ``where_allowed`` (trigger responses) skips ``user_count`` on non-presence channels
    instead of refusing, since the event has already been published to them."""
    result: dict[str, object] = {}
    if "user_count" in info and not (where_allowed and classify(name) is not ChannelKind.PRESENCE):
        if classify(name) is not ChannelKind.PRESENCE:
            raise ProtocolError("Cannot retrieve the user count unless the channel is a presence channel")
        result["user_count"] = len(state.presence_hash(name))
    if "subscription_count" in info:
        result["subscription_count"] = state.subscription_count(name)
    return result


def _counts_json(counts: Mapping[str, object]) -> str:
    """:func:`dumps` of :func:`_channel_info`'s attributes, which are whole numbers under plain names."""
    return "{" + ",".join([f'"{field}":{count}' for field, count in counts.items()]) + "}"
