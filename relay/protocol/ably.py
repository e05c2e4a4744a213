"""Ably token auth: TokenRequest MACs, Ably JWT claims and capability matching (Ably docs, TokenRequest spec TE),
presence actions, the ``rewind`` and ``occupancy`` channel params (as params, or qualifying a name), and a realtime
connection's rules: ProtocolMessage actions and flags, connection keys, channel modes (granted by a capability,
requested by an ATTACH, and what each is sent), the connect query's ``remainPresentFor``, token renewal, SYNC pages
and the protocol's limits; and its messages' (how many a publish carries, what extras weigh, channelSerials, the ids
of a publish)."""

from __future__ import annotations

import base64
import difflib
import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from typing import Any, NamedTuple, TypeGuard
from urllib.parse import parse_qsl, urlsplit

from relay.errors import (
    AuthenticationError,
    ConfigError,
    InvalidChannelName,
    InvalidSignature,
    PermissionDenied,
    ProtocolError,
    StaleTimestamp,
    clipped,
)
from relay.protocol.frames import lone_surrogate_problem
from relay.protocol.socket_ids import is_valid_socket_id

MAX_TOKEN_TTL_MS = 24 * 3600 * 1000
DEFAULT_TOKEN_TTL_MS = 3600 * 1000
TIMESTAMP_WINDOW_MS = 2 * 60 * 1000
Capability = dict[str, list[str]]
# PresenceMessage actions (Ably spec TP2), in ProtocolMessages, REST answers and webhooks alike.
ABSENT, PRESENT, ENTER, LEAVE, UPDATE = range(5)
# ProtocolMessage actions (Ably spec TR2) and flags (TR3).
HEARTBEAT, ACK, NACK, CONNECT, CONNECTED, DISCONNECT, DISCONNECTED, CLOSE, CLOSED, ERROR = range(10)
ATTACH, ATTACHED, DETACH, DETACHED, PRESENCE, MESSAGE, SYNC, AUTH = range(10, 18)
HAS_PRESENCE, HAS_BACKLOG, RESUMED = 1, 2, 4
# A message's own action (TM2j), which Ably sends on every message it delivers or keeps: ably-js reads a missing one
# as message.create, but ably-python leaves it None.
MESSAGE_CREATE = 0


# Ably's channel naming rules (https://ably.com/docs/channels, "Channels are identified by their unique name"): a
# name is case sensitive, not empty, does not start with "[" (a qualifier such as [meta] or [?rewind=1]) or ":", and
# holds no newline. Ably sets no length limit but recommends under 2048 characters, as a REST request carries the
# name in its URL: longer is refused here, before it reaches a URL, and so is a name UTF-8 cannot encode (a URL's
# path is percent-encoded UTF-8).
MAX_CHANNEL_NAME = 2_048
# Metachannels: names in the [meta] qualifier's space, apart from the app's channels (a capability's "*" does not
# cover them: its resource must name the qualifier, as "[meta]*" or "[*]*" do). Ably publishes its own events there;
# no client may publish or enter presence on one (https://ably.com/docs/metadata-stats/metadata/subscribe).
METACHANNEL_PREFIX = "[meta]"
# The metachannel of channel lifecycle events: channel.opened, channel.closed and their regional counterparts.
CHANNEL_LIFECYCLE = "[meta]channel.lifecycle"


def is_metachannel(name: str) -> bool:
    return name.startswith(METACHANNEL_PREFIX)


def ably_channel_problem(name: object) -> str | None:
    """Why ``name`` is not an Ably channel name, as a phrase ("must not start with ':'"), or None when it is one."""
    if not isinstance(name, str) or not name:
        return "must be a non-empty string"
    if len(name) > MAX_CHANNEL_NAME:
        return f"must be at most {MAX_CHANNEL_NAME} characters, not {len(name)}"
    if name[0] == "[":
        return "must not start with '[' (that is a qualifier, such as [meta], not part of a name)"
    if name[0] == ":":
        return "must not start with ':'"
    if "\n" in name:
        return "must not contain a newline"
    return lone_surrogate_problem(name)


def qualified_params(name: str) -> tuple[str, dict[str, str]] | None:
    """A name qualified with channel params, Ably's other way of passing them (``[?rewind=1]orders``: the channel
    ``orders`` with ``{"rewind": "1"}``), as (channel, params); None for a name without such a qualifier.
    ValueError, with the reason, for a qualifier that does not end or whose params are not ``key=value`` pairs."""
    if not name.startswith("[?"):
        return None
    end = name.find("]")
    if end < 0:
        raise ValueError("a qualifier '[?…' ends with ']'")
    params: dict[str, str] = {}
    for pair in name[2:end].split("&"):
        key, equals, value = pair.partition("=")
        if not key or not equals:
            raise ValueError(f"the qualifier's params are key=value pairs joined by '&', got {pair!r:.40}")
        params[key] = value
    return name[end + 1 :], params


def validate_channel_name(name: object) -> str:
    """``name`` if it is an Ably channel name (:func:`ably_channel_problem`), else InvalidChannelName (40010)."""
    problem = ably_channel_problem(name)
    if problem is None and isinstance(name, str):
        return name
    raise InvalidChannelName(f"invalid Ably channel name {name!r:.80}: {problem}", code=40010)


# The rewind channel param (https://ably.com/docs/channels/options/rewind): a number of messages, or a time
# ("30s", "2m") with at most rewindLimit messages; never more than the last 100.
MAX_REWIND_MESSAGES = 100
_REWIND = re.compile(r"([0-9]{1,9})([sm]?)")


def is_whole_number(text: object, most_digits: int) -> TypeGuard[str]:
    """Whether ``text`` is a whole number in ASCII digits, at most ``most_digits`` of them (a query or channel
    param; ``int`` refuses more than 4,300 digits, and ``str.isdigit`` takes other scripts' digits)."""
    return isinstance(text, str) and 0 < len(text) <= most_digits and text.isascii() and text.isdigit()


class Rewind(NamedTuple):
    """What an attachment is sent first: at most the last ``messages`` messages, and for a time only those published
    in the last ``window_ms``. ``capped``: the request asked for more than Ably sends (over 100 messages, or a time
    without a ``rewindLimit`` of 100 or fewer), so a backlog longer than ``messages`` is a truncation Ably reports."""

    messages: int
    window_ms: int | None = None
    capped: bool = False


def parse_rewind(params: Mapping[str, object]) -> Rewind | None:
    """The rewind an ATTACH's ``params`` ask for (``rewind`` and ``rewindLimit``), None without one; ValueError,
    with the reason, for a value Ably would refuse."""
    value = params.get("rewind")
    if value is None:
        return None
    match = _REWIND.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"rewind must be a number of messages or a time such as '30s' or '2m', got {value!r:.40}")
    amount, unit = int(match[1]), match[2]
    limit = params.get("rewindLimit")
    if limit is not None and not (is_whole_number(limit, 9) and int(limit) > 0):
        raise ValueError(f"rewindLimit must be a positive number of messages, got {limit!r:.40}")
    wanted = int(limit) if limit is not None else None  # a time rewind without a limit wants all in its window
    if not unit:
        wanted = amount if wanted is None else min(amount, wanted)
    capped = wanted is None or wanted > MAX_REWIND_MESSAGES
    messages = MAX_REWIND_MESSAGES if wanted is None else min(wanted, MAX_REWIND_MESSAGES)
    return Rewind(messages, amount * (60_000 if unit == "m" else 1_000) if unit else None, capped)


# The occupancy channel param (https://ably.com/docs/channels/options#occupancy): "metrics" streams every count,
# "metrics.<category>" one of them, as [meta]occupancy messages.
OCCUPANCY_CATEGORIES = (
    "connections",
    "presenceConnections",
    "presenceMembers",
    "presenceSubscribers",
    "publishers",
    "subscribers",
    "objectPublishers",
    "objectSubscribers",
)


def parse_occupancy(params: Mapping[str, object]) -> tuple[str, ...] | None:
    """The occupancy categories an ATTACH's ``params`` ask to be sent (``occupancy``), None without the param;
    ValueError, with the reason, for a value that is not ``metrics`` or ``metrics.<category>``."""
    value = params.get("occupancy")
    if value is None:
        return None
    if value == "metrics":
        return OCCUPANCY_CATEGORIES
    category = value.removeprefix("metrics.") if isinstance(value, str) and value.startswith("metrics.") else None
    if category not in OCCUPANCY_CATEGORIES:
        raise ValueError(
            f"occupancy must be 'metrics' or 'metrics.' and one of {', '.join(OCCUPANCY_CATEGORIES)}, got {value!r:.40}"
        )
    return (category,)


def split_api_key(api_key: str) -> tuple[str, str]:
    """``APPID.KEYID:SECRET`` → (key name ``APPID.KEYID``, secret), else ConfigError (which never shows the secret).

    An Ably API key has three parts, none of them empty (https://ably.com/docs/auth, "API key format"): the app id
    and the key id, which together are the key name, and the secret after the first colon.
    """
    key_name, _, secret = api_key.partition(":")
    app_id, dot, key_id = key_name.partition(".")
    if not (app_id and dot and key_id and secret):
        raise ConfigError("an Ably API key looks like 'APPID.KEYID:SECRET' (Ably dashboard → API Keys)")
    return key_name, secret


def token_request_text(
    key_name: str, ttl: int | None, capability: str | None, client_id: str | None, timestamp: int, nonce: str
) -> str:
    """The string Ably's TokenRequest ``mac`` signs; empty fields keep their newline, nonce has a trailing one."""
    # ``ttl or ""`` as both SDKs write it: a ttl of 0 means "the default" and is signed as empty.
    fields = (key_name, str(ttl) if ttl else "", capability or "", client_id or "", str(timestamp), nonce)
    return "".join(f"{field}\n" for field in fields)


def token_request_mac(
    key_secret: str,
    key_name: str,
    *,
    ttl: int | None,
    capability: str | None,
    client_id: str | None,
    timestamp: int,
    nonce: str,
) -> str:
    text = token_request_text(key_name, ttl, capability, client_id, timestamp, nonce)
    return _mac(key_secret, text.encode())


def webhook_signature(key_secret: str, body: bytes) -> str:
    """``X-Ably-Signature`` of a webhook request: base64(HMAC-SHA256(key secret, body))."""
    return _mac(key_secret, body)


def _mac(key_secret: str, message: bytes) -> str:
    return base64.b64encode(hmac.new(key_secret.encode(), message, hashlib.sha256).digest()).decode()


def token_ttl_within(signed_in_until: float | None, now: float) -> int | None:
    """The ``ttl`` (ms) of a token that must end by ``signed_in_until`` (seconds since the epoch, a JWT's ``exp``):
    None, Ably's default hour, when that ends sooner. A sign-in already ended gets no token."""
    if signed_in_until is None:
        return None
    ttl = int((signed_in_until - now) * 1000)
    if ttl < 1:
        raise AuthenticationError("the user's sign-in has ended (signed_in_until is past): a token would outlive it")
    return ttl if ttl < DEFAULT_TOKEN_TTL_MS else None


def build_token_request(
    key_name: str,
    key_secret: str,
    *,
    timestamp: int,
    nonce: str,
    capability: Capability | None = None,
    client_id: str | None = None,
    ttl: int | None = None,
) -> dict[str, object]:
    """A signed TokenRequest, as ably-js and ably-python accept from an authUrl."""
    capability_text = canonical_capability(capability) if capability is not None else None
    request: dict[str, object] = {"keyName": key_name, "timestamp": timestamp, "nonce": nonce}
    if ttl is not None:
        request["ttl"] = ttl
    if capability_text is not None:
        request["capability"] = capability_text
    if client_id is not None:
        request["clientId"] = client_id
    request["mac"] = token_request_mac(
        key_secret,
        key_name,
        ttl=ttl,
        capability=capability_text,
        client_id=client_id,
        timestamp=timestamp,
        nonce=nonce,
    )
    return request


def verify_token_request(request: Mapping[str, object], key_name: str, key_secret: str, *, now_ms: int) -> None:
    """Check a signed TokenRequest's MAC over the fields exactly as received, and its timestamp."""
    if request.get("keyName") != key_name:
        raise AuthenticationError("TokenRequest keyName is not this key", code=40101)
    timestamp, nonce, mac = request.get("timestamp"), request.get("nonce"), request.get("mac")
    if not isinstance(timestamp, int) or not isinstance(nonce, str) or not isinstance(mac, str):
        raise AuthenticationError("a signed TokenRequest needs integer timestamp, nonce and mac", code=40100)
    ttl = request.get("ttl")
    if isinstance(ttl, str) and ttl.isascii() and ttl.isdigit():
        ttl = int(ttl)
    if ttl is not None and not isinstance(ttl, int):
        raise AuthenticationError("TokenRequest ttl must be milliseconds", code=40003)
    capability, client_id = request.get("capability"), request.get("clientId")
    if capability is not None and not isinstance(capability, str):
        raise AuthenticationError("TokenRequest capability must be a JSON string", code=40000)
    if client_id is not None and not isinstance(client_id, str):
        raise AuthenticationError("TokenRequest clientId must be a string", code=40000)
    expected = token_request_mac(
        key_secret, key_name, ttl=ttl, capability=capability, client_id=client_id, timestamp=timestamp, nonce=nonce
    )
    if not hmac.compare_digest(mac.encode(), expected.encode()):
        raise InvalidSignature("TokenRequest mac does not verify", code=40101)
    if abs(now_ms - timestamp) > TIMESTAMP_WINDOW_MS:
        raise StaleTimestamp("TokenRequest timestamp not current", code=40104)


def canonical_capability(capability: Mapping[str, list[str]]) -> str:
    """No whitespace, resources and operations sorted: the form Ably signs and compares."""
    return json.dumps(
        {resource: sorted(capability[resource]) for resource in sorted(capability)}, separators=(",", ":")
    )


# Ably's capability operations (its docs' auth/capabilities page), "*" for all of them. One outside them is a typo
# ("publsh") that would otherwise be granted silently and surface later as a 40160 on the operation meant.
OPERATIONS = frozenset(
    {"*", "subscribe", "publish", "presence", "history", "channel-metadata", "stats", "push-subscribe", "push-admin",
     "privileged-headers", "object-subscribe", "object-publish", "annotation-subscribe", "annotation-publish",
     "message-update-own", "message-update-any", "message-delete-own", "message-delete-any"}
)  # fmt: skip


def parse_capability(text: str) -> Capability:
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: nested deeper than the parser goes
        raise AuthenticationError("capability is not valid JSON", code=40000) from None
    if not isinstance(value, dict) or not all(
        isinstance(ops, list) and all(isinstance(op, str) for op in ops) for ops in value.values()
    ):
        raise AuthenticationError("capability must map resource names to lists of operations", code=40000)
    for resource, ops in value.items():
        for op in ops:
            if op not in OPERATIONS:
                close = difflib.get_close_matches(op, OPERATIONS, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise AuthenticationError(
                    f"resource {resource[:100]!r} has the unknown operation {op[:100]!r}{hint}; the operations are "
                    f"{', '.join(sorted(OPERATIONS))}",
                    code=40000,
                )
    return value


def resource_matches(pattern: str, channel: str) -> bool:
    """Whether a capability resource covers ``channel``: wildcards span whole ``:``-separated segments."""
    if pattern in ("[*]*", channel):
        return True
    if pattern == "*":
        return not channel.startswith("[")
    if pattern.startswith("[") and pattern.endswith("]*"):
        return channel.startswith(pattern[:-1])
    if "*" not in pattern:
        return False
    pattern_parts, channel_parts = pattern.split(":"), channel.split(":")
    if pattern_parts[-1] == "*" and len(channel_parts) >= len(pattern_parts):
        channel_parts = [*channel_parts[: len(pattern_parts) - 1], "*"]
    if len(pattern_parts) != len(channel_parts):
        return False
    return all(p == "*" or p == c for p, c in zip(pattern_parts, channel_parts, strict=True))


def allows(capability: Mapping[str, list[str]], channel: str, operation: str) -> bool:
    return any(
        resource_matches(resource, channel) and ("*" in ops or operation in ops) for resource, ops in capability.items()
    )


def require(capability: Mapping[str, list[str]], channel: str, operation: str) -> None:
    if not allows(capability, channel, operation):
        raise PermissionDenied(f"operation {operation!r} on channel {channel!r} is not permitted", code=40160)


def _covers(granted: str, requested: str) -> bool:
    """Whether the granted resource covers every channel the requested resource names."""
    if granted in ("[*]*", requested):
        return True
    if "*" not in requested:
        return resource_matches(granted, requested)
    if granted == "*":
        return not requested.startswith("[")
    # A trailing "*" spans any number of segments, so "ns:*" covers every pattern under "ns:".
    return granted.endswith(":*") and requested.startswith(granted[:-1])


def intersect_capability(requested: Mapping[str, list[str]], granted: Mapping[str, list[str]]) -> Capability:
    """The capability a token gets when ``requested`` is asked of a key (or token) holding ``granted``.

    Each requested resource keeps the operations that the granted resources covering it allow; a requested wildcard
    is covered only by an equal or wider granted one. Resources left with no operation are dropped, so an empty
    result means nothing was permitted (Ably refuses the token with 40160).
    """
    result: Capability = {}
    for resource, operations in requested.items():
        allowed = {op for granted_resource, ops in granted.items() if _covers(granted_resource, resource) for op in ops}
        if "*" in allowed:
            kept = set(operations)
        elif "*" in operations:
            kept = allowed
        else:
            kept = set(operations) & allowed
        if kept:
            result[resource] = sorted(kept)
    return result


def jwt_claims(
    key_name: str, capability: Capability, *, issued_at: int, ttl_seconds: int, client_id: str | None = None
) -> tuple[dict[str, str], dict[str, object]]:
    """(header, claims) of an Ably JWT signed HS256 with the key secret; times in seconds."""
    if not 0 < ttl_seconds * 1000 <= MAX_TOKEN_TTL_MS:
        raise ValueError("an Ably token lives between 1 second and 24 hours")
    claims: dict[str, object] = {
        "iat": issued_at,
        "exp": issued_at + ttl_seconds,
        "x-ably-capability": canonical_capability(capability),
    }
    if client_id is not None:
        claims["x-ably-clientId"] = client_id
    return {"typ": "JWT", "alg": "HS256", "kid": key_name}, claims


# -- realtime connections ------------------------------------------------------------------------------------------

# Channel modes (ProtocolMessage flags, Ably spec TR3): an ATTACH's request, and an ATTACHED's grant.
MODE_PRESENCE, MODE_PUBLISH, MODE_SUBSCRIBE, MODE_PRESENCE_SUBSCRIBE = 1 << 16, 1 << 17, 1 << 18, 1 << 19
MODES = MODE_PRESENCE | MODE_PUBLISH | MODE_SUBSCRIBE | MODE_PRESENCE_SUBSCRIBE
MAX_CHANNELS_PER_CONNECTION = 200  # Ably's limit (90010)
# The channel params the emulator applies, shown in ATTACHED.
APPLIED_PARAMS = ("rewind", "rewindLimit", "occupancy", "modes")
# Ably's inbound limit: messages and presence items a connection may publish per second (CONNECTED's maxInboundRate;
# beyond it, NACK 42911). The burst is one second's worth.
MAX_INBOUND_RATE = 50
CONNECTION_STATE_TTL_MS = 120_000  # how long a connection whose socket dropped can be resumed (Ably's two minutes)
# How long the members a dropped connection entered stay present, waiting for it to resume (Ably's 15 seconds), unless
# the client chose another time with the ``remainPresentFor`` transport param (remain_present_for below).
PRESENCE_HOLD_SECONDS = 15.0
# remainPresentFor, in milliseconds: Ably's documented minimum (a smaller value gets it), and the emulator's maximum,
# the connection's own lifetime once dropped (its members leave when it is released, whatever they asked).
MIN_REMAIN_PRESENT_MS = 1_000
MAX_REMAIN_PRESENT_MS = CONNECTION_STATE_TTL_MS
# How long before a token expires the server asks for the next one (an AUTH message, RTN22): SDKs then fetch a token
# (authCallback, authUrl, key) and send it in an AUTH of their own, on the same connection. Left to expire, the token
# drops the socket (DISCONNECTED 40142) and the SDK resumes the connection with a new token.
RENEWAL_LEAD_MS = 30_000
SYNC_PAGE_BYTES = 256 * 1024  # well under the 1 MiB a client's WebSocket may accept (ably-python's default)
_OPERATION_MODES = {
    "subscribe": MODE_SUBSCRIBE | MODE_PRESENCE_SUBSCRIBE,
    "publish": MODE_PUBLISH,
    "presence": MODE_PRESENCE,
}
# The mode names of the ``modes`` channel param (ably-js's channelModes, lower case; message_subscribe is ably-js
# 2.30's name for subscribe), with the modes the emulator grants for them: annotations and LiveObjects are not
# emulated, so theirs grant nothing.
_PARAM_MODES = {
    "presence": MODE_PRESENCE,
    "publish": MODE_PUBLISH,
    "subscribe": MODE_SUBSCRIBE,
    "message_subscribe": MODE_SUBSCRIBE,
    "presence_subscribe": MODE_PRESENCE_SUBSCRIBE,
    "annotation_publish": 0,
    "annotation_subscribe": 0,
    "object_subscribe": 0,
    "object_publish": 0,
}


def allowed_modes(capability: Mapping[str, list[str]], channel: str) -> int:
    """The channel modes ``capability`` allows on ``channel`` (0: it may not attach); on a metachannel the subscribe
    mode at most, whatever the capability: nobody publishes or enters presence there."""
    modes = 0
    for resource, operations in capability.items():
        if resource_matches(resource, channel):
            if "*" in operations:
                modes = MODES
                break
            for operation in operations:
                modes |= _OPERATION_MODES.get(operation, 0)
    return modes & MODE_SUBSCRIBE if is_metachannel(channel) else modes


def sent_to(modes: int, *, presence: bool, own: bool, echo: bool) -> bool:
    """Whether a name attached with ``modes`` is sent a message (``presence``: a presence change): SUBSCRIBE for a
    message, PRESENCE_SUBSCRIBE for presence; and a message its ``own`` connection published only with ``echo``
    (presence changes are sent to their own connection whatever its echo). AblySession.deliver_foreign applies it
    inline, once per subscriber of each publish, where a call costs as much as the rule."""
    wanted = MODE_PRESENCE_SUBSCRIBE if presence else MODE_SUBSCRIBE
    return bool(modes & wanted) and (echo or presence or not own)


def requested_modes(params: Mapping[str, object], flags: object) -> int:
    """The modes an ATTACH asks for: its ``modes`` param (comma-separated names), which wins over its mode flags
    (ably-js's attachWithChannelParamsModesAndChannelModes), else the flags; all of them when it names none the
    emulator grants. ProtocolError 40000 for a mode name Ably does not know."""
    raw = params.get("modes")
    if raw is None:
        requested = flags & MODES if isinstance(flags, int) else 0
    elif not isinstance(raw, str):
        raise ProtocolError("Invalid channel params: modes is a comma-separated string of channel modes", code=40000)
    else:
        requested = 0
        for mode in raw.split(","):
            granted = _PARAM_MODES.get(mode.strip().lower())
            if granted is None:
                raise ProtocolError(f"Invalid channel params: unknown channel mode {mode.strip()[:100]!r}", code=40000)
            requested |= granted
    return requested or MODES


def channel_params(params: Mapping[str, object]) -> tuple[Rewind | None, tuple[str, ...] | None]:
    """The rewind and the occupancy categories an ATTACH's params ask for; ProtocolError 40003 for a value Ably would
    refuse."""
    try:
        return parse_rewind(params), parse_occupancy(params)
    except ValueError as exc:
        raise ProtocolError(f"Invalid channel params: {exc}", code=40003) from None


def renewal_time(expires_ms: int | None, now_ms: int) -> int | None:
    """When to ask for a token expiring at ``expires_ms`` to be renewed: ``RENEWAL_LEAD_MS`` before, as Ably asks.
    ``None`` when that has passed (a token of under 30 s): as on Ably, it expires into DISCONNECTED 40142 and the
    SDK reconnects with a new one (ably-js's sandbox tests expect this of a 5 s token)."""
    if expires_ms is None or expires_ms - RENEWAL_LEAD_MS <= now_ms:
        return None
    return expires_ms - RENEWAL_LEAD_MS


def is_msg_serial(value: object) -> TypeGuard[int]:
    """A msgSerial: an integer an ACK can carry back in msgpack as well as JSON."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63


def sync_pages(members: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """A presence set in SYNC pages of about SYNC_PAGE_BYTES of member data each (at least one member a page)."""
    pages: list[list[dict[str, Any]]] = [[]]
    size = 0
    for member in members:
        data = member.get("data")
        weight = 200 + (len(data) * 4 // 3 if isinstance(data, str | bytes) else 0)  # base64 for binary, in JSON
        if pages[-1] and size + weight > SYNC_PAGE_BYTES:
            pages.append([])
            size = 0
        pages[-1].append(member)
        size += weight
    return pages


def connect_query(target: str) -> dict[str, str]:
    """The query params of a realtime connection's request target (``/?key=…&format=msgpack``), blank ones kept."""
    return dict(parse_qsl(urlsplit(target).query, keep_blank_values=True))


def remain_present_for(query: Mapping[str, str]) -> float:
    """How long, in seconds, the members of the connection stay present once its socket drops: the
    ``remainPresentFor`` transport param (milliseconds; ably-js ``transportParams: { remainPresentFor: 5000 }``), or
    Ably's 15 seconds without it. Ably documents a minimum of one second, which a smaller value gets (0 included); a
    value that is not a whole number of milliseconds (a sign, a fraction, a unit, empty) or is over two minutes (the
    time a dropped connection is kept at all) is refused with ProtocolError 40003, as the emulator's choice: Ably
    does not document what it does with one (docs/ably.md#connection-resume)."""
    raw = query.get("remainPresentFor")
    if raw is None:
        return PRESENCE_HOLD_SECONDS
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 9 or int(raw) > MAX_REMAIN_PRESENT_MS:
        most = MAX_REMAIN_PRESENT_MS
        raise ProtocolError(
            f"Invalid remainPresentFor {clipped(raw, 20)!r}: a whole number of milliseconds up to {most}", code=40003
        )
    return max(int(raw), MIN_REMAIN_PRESENT_MS) / 1000


# -- messages ------------------------------------------------------------------------------------------------------

MAX_MESSAGE_SIZE = 65_536  # bytes of name + clientId + data + extras (Ably's default limit, A.3)
# The messages (or presence messages) one publish carries: empty ones weigh nothing against the size limit, and
# 100,000 of them in one request held the event loop for a second and pushed every other channel out of history
MAX_MESSAGES_PER_PUBLISH = 1_000


def check_message_count(count: int, where: str) -> None:
    """At most MAX_MESSAGES_PER_PUBLISH in one publish, checked before any of them is read: Ably's own code for it,
    40034 (400), "Too many messages in one publish" (ably-common errors/codes/40034.md), which the SDKs hand over as
    is, so code that tells it from a malformed request (40000) works here as on Ably. ProtocolError otherwise."""
    if count > MAX_MESSAGES_PER_PUBLISH:
        raise ProtocolError(
            f"{where}: Too many messages in one publish ({count}; the maximum is {MAX_MESSAGES_PER_PUBLISH})",
            code=40034,
        )


def extras_size(extras: dict[str, Any]) -> int:
    """What ``extras`` count towards a message's size: the length of its JSON as ably-js measures it
    (``getMessageSize``: ``JSON.stringify(extras).length``, UTF-16 code units), so ``"é"`` is one, not the six of
    its ``\\u00e9`` escape, and a character outside the BMP is two."""
    text = json.dumps(extras, separators=(",", ":"), ensure_ascii=False)
    return len(text) if text.isascii() else len(text.encode("utf-16-le", "surrogatepass")) // 2


def channel_serial(serial: int) -> str:
    """A channelSerial: the serial a node gave a delivery, as 16 hex digits (so that they sort as they were given)."""
    return f"{serial:016x}"


def numbered(base: str, count: int) -> list[str]:
    """The ids (or serials) of a ProtocolMessage's ``count`` messages: ``base:0``, ``base:1``, …"""
    return [f"{base}:{index}" for index in range(count)]


def are_numbered_ids(ids: list[str | None]) -> bool:
    """Whether the ids of a publish's messages are as Ably requires of an idempotent publish of several: none at all,
    or ``base:0``, ``base:1``, … (one message may carry any id)."""
    if len(ids) <= 1 or not any(ids):
        return True
    base = (ids[0] or "").rpartition(":")[0]
    return bool(base) and ids == numbered(base, len(ids))


def publish_id(ids: tuple[str, ...]) -> str:
    """The messageId of a publish whose messages carry ``ids``: the base the SDKs number them from (``base:0``)."""
    return ids[0].rpartition(":")[0] or ids[0]


def is_connection_key(key: str) -> bool:
    """A connection key (``{socket id}!{secret}``, a realtime connection's ``connection.key``), or a Pusher socket id: a
    publish "as" either leaves that connection out. A well-formed key of a connection that has closed is not refused:
    it leaves nobody out."""
    socket_id, _, secret = key.partition("!")
    return is_valid_socket_id(socket_id) and (key == socket_id or (secret.isascii() and secret.isalnum()))
