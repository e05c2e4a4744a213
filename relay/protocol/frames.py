"""Pusher WebSocket frames: one JSON object per text frame.

Server to client, ``data`` is a JSON-encoded *string* for every event except ``pusher:error`` and
``pusher:signin_success``, whose data are objects. Client to server, ``data`` is an object for ``pusher:*`` events
and an object or a string for client events. Every frame that names a channel also carries ``data`` (pysher indexes
it unconditionally).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from json.encoder import encode_basestring

from relay.errors import InvalidFrame, PayloadTooLarge, ProtocolError
from relay.protocol.channels import ChannelKind, Limits, classify

CONNECTION_ESTABLISHED = "pusher:connection_established"
ERROR = "pusher:error"
PING = "pusher:ping"
PONG = "pusher:pong"
SUBSCRIBE = "pusher:subscribe"
UNSUBSCRIBE = "pusher:unsubscribe"
SUBSCRIPTION_SUCCEEDED = "pusher_internal:subscription_succeeded"
SUBSCRIPTION_ERROR = "pusher:subscription_error"
SUBSCRIPTION_COUNT = "pusher_internal:subscription_count"
MEMBER_ADDED = "pusher_internal:member_added"
MEMBER_REMOVED = "pusher_internal:member_removed"
CACHE_MISS = "pusher:cache_miss"
SIGNIN = "pusher:signin"
SIGNIN_SUCCESS = "pusher:signin_success"
WATCHLIST_EVENTS = "pusher_internal:watchlist_events"

_compact = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_JSON_WHITESPACE = " \t\n\r"


class _NotFinite(ValueError):
    """A number JSON cannot carry (RFC 8259 §6): ``NaN``, ``Infinity``, ``-Infinity``, or one too large for a double
    (``1e400``), which Python would read as infinity and write back as ``Infinity``: text a browser's
    ``JSON.parse`` refuses, losing the whole frame for every subscriber."""


def _refuse_constant(name: str) -> object:
    raise _NotFinite(name)


def _finite_float(text: str) -> float:
    """Called by the C scanner for number literals with a fraction or an exponent only (never for integers), so a
    document without such numbers costs nothing more (about 0.1 µs per float literal otherwise). Checking the text
    instead costs more on most frames: a regular expression for long exponents or digit runs reads every character
    (measured 0.3 µs on a 33-byte frame and 8 µs on 4 KB of text, against 0.6 µs and 4 µs for the parse itself)."""
    value = float(text)
    if value - value != 0.0:  # inf - inf is nan; a finite float minus itself is 0.0
        raise _NotFinite(text)
    return value


# The C scanner that json.loads ends in, called without json.loads' three Python frames around it (a third of the
# cost of a small document). It accepts what json.loads accepts except non-finite numbers (above); loads checks the
# rest of the document itself. (typeshed lacks the attribute JSONDecoder.__init__ sets.)
_scan: Callable[[str, int], tuple[object, int]] = json.JSONDecoder(  # type: ignore[attr-defined]
    parse_constant=_refuse_constant, parse_float=_finite_float
).scan_once


def loads(text: str | bytes, what: str = "frame") -> object:
    """Parse untrusted JSON (bytes must be UTF-8, RFC 8259 §8.1): malformed, too deeply nested, holding a number
    JSON has no room for (``NaN``, ``Infinity``, ``1e400``) or not encodable as UTF-8 is :class:`InvalidFrame`."""
    try:
        raw = text if isinstance(text, str) else text.decode()
    except UnicodeDecodeError:  # gzip, UTF-16, Latin-1: said, for the sender to see what it sent
        raise InvalidFrame(f"{what} is not valid JSON: it is not UTF-8 text") from None
    if raw.startswith("\ufeff"):  # RFC 8259 §8.1: a sender must not add one (Windows tools do)
        raise InvalidFrame(f"{what} is not valid JSON: it starts with a byte order mark (U+FEFF)")
    document = raw.strip(_JSON_WHITESPACE)
    if not document:
        raise InvalidFrame(f"{what} is not valid JSON: it is empty")
    try:
        value, end = _scan(document, 0)
    except _NotFinite as exc:
        raise InvalidFrame(f"{what} is not valid JSON: {str(exc)[:20]} is not a finite number") from None
    except RecursionError:  # valid JSON perhaps, past what the parser follows
        raise InvalidFrame(f"{what} nests arrays and objects too deeply") from None
    except (ValueError, StopIteration):
        raise InvalidFrame(f"{what} is not valid JSON") from None
    if end != len(document):
        raise InvalidFrame(f"{what} is not valid JSON")
    # A lone surrogate escape ("\ud800") decodes to a str that cannot be encoded, so it could never be sent on.
    if "\\u" in raw and _SURROGATE_ESCAPE.search(raw):  # a substring test first: most documents have no escape
        try:
            _compact(value).encode()
        except UnicodeEncodeError:
            raise InvalidFrame(f"{what} contains a lone UTF-16 surrogate escape") from None
        except RecursionError:  # read at the parser's depth limit, one level too deep to write back
            raise InvalidFrame(f"{what} nests arrays and objects too deeply") from None
    return value


def utf8_length(text: str) -> int:
    """The size of ``text`` on the wire, without encoding it when it is ASCII (most payloads)."""
    return len(text) if text.isascii() else len(text.encode())


def check_event_size(size: int, limits: Limits, channels: Sequence[str] = ()) -> None:
    """An event's ``data`` of ``size`` UTF-8 bytes within Pusher's size limit (10 KB by default). To ``channels``
    that are encrypted, ``data`` is the encrypted form, which its sender never saw: the refusal says so."""
    if size > limits.max_event_bytes:
        encrypted = any(classify(channel) is ChannelKind.ENCRYPTED for channel in channels)
        what = (
            " encrypted (the nonce and ciphertext in base64: about 4/3 of the plaintext, plus 84)" if encrypted else ""
        )
        raise PayloadTooLarge(f"data is {size} bytes{what}; the limit is {limits.max_event_bytes}")


def dumps(value: object) -> str:
    """Compact JSON, the one encoding used for every frame and payload."""
    return _compact(value)


def dumps_parsed(value: object, what: str) -> str:
    """:func:`dumps` of a value :func:`loads` read from a client: one nested at the parser's limit may be a level too
    deep to write back (a RecursionError, which would drop the connection or answer 500), so it is refused as
    :class:`InvalidFrame` as a level deeper would have been."""
    try:
        return _compact(value)
    except RecursionError:
        raise InvalidFrame(f"{what} nests arrays and objects too deeply") from None


def channel_event(event: str, channel: str, data: str, user_id: str | None = None) -> str:
    """A channel event; ``data`` is forwarded verbatim as the string the publisher sent.

    Built from the encoded strings rather than a dict: this is the one frame built per publish, and the output is
    what ``dumps`` gives for the same object.
    """
    quote = encode_basestring
    head = f'{{"event":{quote(event)},"channel":{quote(channel)},"data":{quote(data)}'
    return f"{head}}}" if user_id is None else f'{head},"user_id":{quote(user_id)}}}'


def connection_established(socket_id: str, activity_timeout: int) -> str:
    data = _compact({"socket_id": socket_id, "activity_timeout": activity_timeout})
    return _compact({"event": CONNECTION_ESTABLISHED, "data": data})


def error(code: int | None, message: str) -> str:
    return _compact({"event": ERROR, "data": {"code": code, "message": message}})


def pong() -> str:
    return _compact({"event": PONG, "data": {}})


def ping() -> str:
    return _compact({"event": PING, "data": {}})


def subscription_succeeded(channel: str, data: str = "{}") -> str:
    return channel_event(SUBSCRIPTION_SUCCEEDED, channel, data)


def presence_data(members: dict[str, str]) -> str:
    """``subscription_succeeded`` data for presence, from user id → encoded user_info (built without re-parsing)."""
    ids = _compact(list(members))
    hash_body = ",".join(f"{_compact(user_id)}:{info}" for user_id, info in members.items())
    return f'{{"presence":{{"ids":{ids},"hash":{{{hash_body}}},"count":{len(members)}}}}}'


def subscription_error(channel: str, error_type: str, message: str, status: int) -> str:
    data = {"type": error_type, "error": message, "status": status}
    return _compact({"event": SUBSCRIPTION_ERROR, "channel": channel, "data": data})


def member_added(channel: str, user_id: str, user_info_json: str) -> str:
    return channel_event(MEMBER_ADDED, channel, f'{{"user_id":{_compact(user_id)},"user_info":{user_info_json}}}')


def member_removed(channel: str, user_id: str) -> str:
    return channel_event(MEMBER_REMOVED, channel, _compact({"user_id": user_id}))


def subscription_count(channel: str, count: int) -> str:
    return channel_event(SUBSCRIPTION_COUNT, channel, _compact({"subscription_count": count}))


def cache_miss(channel: str) -> str:
    return channel_event(CACHE_MISS, channel, "{}")


def signin_success(user_data: str) -> str:
    return _compact({"event": SIGNIN_SUCCESS, "data": {"user_data": user_data}})


def watchlist_events(online: list[str], offline: list[str]) -> str:
    events = [{"name": name, "user_ids": ids} for name, ids in (("online", online), ("offline", offline)) if ids]
    return _compact({"event": WATCHLIST_EVENTS, "data": {"events": events}})


@dataclass(frozen=True, slots=True)
class ClientFrame:
    """A decoded client frame. ``data`` is the object or string sent; ``channel`` is None when absent."""

    event: str
    data: object
    channel: str | None


def client_frame_limit(limits: Limits) -> int:
    """The largest client frame worth parsing: one carrying the largest payload ``limits`` allow with every byte of
    it escaped (JSON writes a byte as at most six: ``\\u0022`` for a quote, ``\\u00e9`` for the two bytes of "é").

    That payload is a client event's data or a sign-in's ``user_data`` (an id and a full watchlist of the longest ids
    at UTF-8's four bytes a character, and the largest ``user_info``), whichever is larger, plus the longest event
    name and channel; 1 KiB more holds the keys and a channel's auth. Payloads are checked on their decoded sizes,
    so this only spares the parser frames no valid message makes. (A ``user_data`` escaped by its own encoder and
    again inside the frame takes at most 14 bytes for a character of an id, within the 24 counted.)
    """
    user_data = (limits.max_watchlist + 1) * (4 * limits.max_user_id_length + 3) + limits.max_user_info_bytes + 64
    payload = max(limits.max_event_bytes, user_data) + 4 * limits.max_event_name + limits.max_channel_name
    return 6 * payload + 1024


def decode_client_frame(text: str | bytes, max_bytes: int) -> ClientFrame:
    """Parse one client frame, raising :class:`InvalidFrame` (or :class:`PayloadTooLarge`) on anything malformed."""
    if len(text) > max_bytes // 4:  # a character is at most 4 bytes: a frame under this needs no encoding to measure
        size = len(text) if isinstance(text, bytes) else len(text.encode("utf-8", "surrogatepass"))
        if size > max_bytes:
            raise PayloadTooLarge(f"Message too large: the frame is {size} bytes; the limit is {max_bytes}")
    message = loads(text)
    if not isinstance(message, dict):
        raise InvalidFrame("frame must be a JSON object")
    event = message.get("event")
    if not isinstance(event, str) or not event:
        raise InvalidFrame("frame must have a string 'event'")
    channel = message.get("channel")
    if channel is not None and not isinstance(channel, str):
        raise InvalidFrame("'channel' must be a string")
    return ClientFrame(event=event, data=message.get("data"), channel=channel)


def data_object(frame: ClientFrame) -> dict[str, object]:
    """The ``data`` of a ``pusher:*`` frame, which must be an object (``""`` and absent count as empty)."""
    if frame.data is None or frame.data == "":
        return {}
    if not isinstance(frame.data, dict):
        raise InvalidFrame(f"{frame.event} data must be a JSON object")
    return frame.data


def client_event_data(data: object) -> str:
    """Client-event data as relayed: a string stays as sent, an object is encoded once."""
    return data if isinstance(data, str) else dumps_parsed(data, "client event data")


def lone_surrogate_problem(text: str) -> str | None:
    """What is wrong with ``text`` when it holds half a UTF-16 pair, as a phrase ("contains a lone UTF-16 surrogate
    …"), else None. JavaScript strings may hold one (JSON.stringify of an emoji cut in two); UTF-8 cannot encode it,
    so no provider can carry it."""
    if text.isascii():
        return None
    try:
        text.encode()
    except UnicodeEncodeError as exc:
        return (
            f"contains a lone UTF-16 surrogate ({text[exc.start]!r} at character {exc.start}), which UTF-8 cannot "
            "encode: a string cut in the middle of a character"
        )
    return None


def refuse_lone_surrogates(text: str, what: str, error: type[ProtocolError]) -> None:
    """``error`` naming ``what`` when ``text`` holds a lone surrogate (:func:`lone_surrogate_problem`)."""
    problem = lone_surrogate_problem(text)
    if problem is not None:
        raise error(f"{what} {problem}")


# The first character of a JSON document (after whitespace): anything else is text without trying the parser
_JSON_START = frozenset('{["-0123456789tfn')
NOT_JSON = object()


def looks_like_json(data: str) -> bool:
    """Whether pusher-js would ``JSON.parse`` this data successfully: then Ably clients are sent it with encoding
    json, so they get what pusher-js gets.

    Strict JSON (:func:`loads`): ``NaN`` or ``1e400`` is not JSON to a browser, and data nested deeper than the
    parser goes is not treated as JSON either: it is the text it is. Never raises (it runs inside a delivery's loop
    over subscribers)."""
    return strict_json(data) is not NOT_JSON


def strict_json(data: str) -> object:
    """The value of ``data`` as one strict JSON document, else :data:`NOT_JSON`."""
    # JSON's whitespace only: str.strip would also take "\xa0" off, which JSON.parse refuses.
    start = data.lstrip(_JSON_WHITESPACE)
    if not start or start[0] not in _JSON_START:
        return NOT_JSON
    try:
        return loads(data, "data")
    except InvalidFrame:
        return NOT_JSON
