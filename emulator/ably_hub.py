"""The Ably side of one app's channels: messages, presence, idempotent publishing and the Ably wire encodings.

Ably and Pusher share the hub's channels (``relay.emulator.hub``): an Ably connection attached to ``room`` is one of
``room``'s subscribers next to Pusher sessions. A publish from either side is one hub delivery: Pusher peers get the
Pusher frame bytes, Ably peers (``ForeignPeer``\\s) get an Ably ProtocolMessage encoded at most once per wire format
(JSON text or msgpack binary) per delivery. docs/ably.md describes the mapping of names, data and presence.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import bisect
import hashlib
import hmac
import itertools
import json
import logging
import re
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import msgpack  # type: ignore[import-untyped]

from relay.emulator.ably_auth import AblyError, AblyKey, Credentials
from relay.emulator.ably_history import (
    EXPIRY_STEP,
    PRESENCE_HISTORY_BYTES,
    MessageHistory,
    delivered_message,
    is_ephemeral,
)
from relay.emulator.hub import AppState, Channel, ForeignPeer, ForeignTally
from relay.emulator.session import Session
from relay.emulator.usage import local_reach
from relay.emulator.webhooks import ABLY_SITE, WebhookEvent
from relay.emulator.wire import binary_frame, encode_text, payload_offset
from relay.errors import InvalidFrame
from relay.protocol import frames
from relay.protocol.ably import (
    CHANNEL_LIFECYCLE,
    ENTER,
    LEAVE,
    MAX_MESSAGE_SIZE,
    MESSAGE,
    MESSAGE_CREATE,
    MODE_PRESENCE,
    MODE_PRESENCE_SUBSCRIBE,
    MODE_PUBLISH,
    MODE_SUBSCRIBE,
    PRESENCE,
    PRESENT,
    UPDATE,
    ably_channel_problem,
    are_numbered_ids,
    channel_serial,
    extras_size,
    is_connection_key,
    numbered,
    publish_id,
    qualified_params,
)
from relay.protocol.channels import SERVER_TO_USER_PREFIX, ChannelKind, Limits, classify, is_cache_channel
from relay.protocol.members import Member

if TYPE_CHECKING:
    from relay.emulator.ably_realtime import AblySession


MAX_PRESENCE_MEMBERS = 200  # per channel on Ably-only channels; presence- channels use the app's Pusher limit
IDEMPOTENCY_WINDOW_MS = 120_000
# The message ids of idempotent publishes one app remembers at most, the oldest publishes forgotten first past it (a
# retry that late is published again): the SDKs give every REST publish ids, so without a bound what a node holds would
# follow the publish rate. A publish of one message takes about 640 bytes, one of many about 150 bytes a message: 64 MB
# an app at most.
MAX_REMEMBERED_IDS = 100_000
RESERVED_NAME_PREFIXES = ("pusher:", "pusher_internal:")
UNNAMED_EVENT = "message"  # the Pusher event name of an Ably message without a name
DELIVERED = object()  # a hub delivery's origin when Ably peers already have the ProtocolMessage
# Inband occupancy: how often the channels watched are looked at (Ably sends a change within 15 s, one that takes a
# count from or to zero at once), how soon a new watch gets its first message (the attachments of a burst share one
# count of the channel), and the name of the messages.
OCCUPANCY_INTERVAL = 1.0
FIRST_OCCUPANCY_DELAY = 0.05
OCCUPANCY_EVENT = "[meta]occupancy"
# The events of [meta]channel.lifecycle, in the order they are sent: the channel's one region first, then globally.
LIFECYCLE_OPENED = ("channel.region.active", "channel.opened")
LIFECYCLE_CLOSED = ("channel.region.inactive", "channel.closed")

log = logging.getLogger("relay.emulator")


# -- messages ------------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Message:
    """An Ably message as the emulator keeps it: ``data`` decoded from any transport base64 (so binary is ``bytes``),
    ``encoding`` what is left for the client to apply (for example ``json``)."""

    name: str | None
    data: str | bytes | None
    encoding: str | None = None
    client_id: str | None = None
    id: str | None = None
    extras: dict[str, Any] | None = None
    connection_key: str | None = None

    def size(self) -> int:
        data = self.data.encode() if isinstance(self.data, str) else self.data or b""
        extras = extras_size(self.extras) if self.extras else 0
        return len((self.name or "").encode()) + len((self.client_id or "").encode()) + len(data) + extras

    def item(self) -> dict[str, Any]:
        """The message's wire fields (binary-capable; :func:`jsonable` turns bytes into base64)."""
        item: dict[str, Any] = {}
        if self.name is not None:
            item["name"] = self.name
        if self.data is not None:
            item["data"] = self.data
        if self.encoding:
            item["encoding"] = self.encoding
        if self.client_id is not None:
            item["clientId"] = self.client_id
        if self.id is not None:
            item["id"] = self.id
        if self.extras:
            item["extras"] = self.extras
        return item

    def pusher_event(self) -> str:
        return self.name if self.name else UNNAMED_EVENT

    def pusher_data(self) -> str:
        """Pusher data is a string: text as it is (JSON text for ``encoding: json``), binary as base64."""
        if isinstance(self.data, bytes):
            return base64.b64encode(self.data).decode()
        return self.data or ""


def parse_message(raw: object, where: str) -> Message:
    """One message from a client (REST body or realtime MESSAGE), checked; unknown fields are ignored."""
    if not isinstance(raw, dict):
        raise AblyError(40000, f"{where}: a message is an object")
    name = raw.get("name")
    if name is not None and not isinstance(name, str):
        raise AblyError(40016, f"{where}: name must be a string")
    if name is not None and name.startswith(RESERVED_NAME_PREFIXES):
        raise AblyError(40016, f"{where}: names starting with 'pusher:' are reserved for the Pusher protocol")
    encoding = raw.get("encoding")
    if encoding is not None and not isinstance(encoding, str):
        raise AblyError(40013, f"{where}: encoding must be a string")
    data, encoding = decoded_data(raw.get("data"), encoding or None, where)
    client_id = raw.get("clientId")
    if client_id is not None and not isinstance(client_id, str):
        raise AblyError(40012, f"{where}: clientId must be a string")
    if client_id == "*":
        raise AblyError(40012, f"{where}: '*' is not a client id")
    if client_id == "":  # a client id is any non-empty string: "" was delivered as the sender's
        raise AblyError(40012, f"{where}: clientId can't be an empty string; omit it")
    message_id = raw.get("id")
    if message_id is not None and (not isinstance(message_id, str) or not message_id):
        raise AblyError(40031, f"{where}: id must be a non-empty string")
    extras = raw.get("extras")
    if extras is not None and not isinstance(extras, dict):
        raise AblyError(40000, f"{where}: extras must be an object")
    if extras:
        _json_text(extras, f"{where}: extras", 40000)
    connection_key = raw.get("connectionKey")
    if connection_key is not None and not isinstance(connection_key, str):
        raise AblyError(40000, f"{where}: connectionKey must be a string")
    if connection_key is not None and not is_connection_key(connection_key):
        # Ably refuses the whole publish, as here (a Pusher client's socket id sent to Ably's REST API gets this). The
        # message names the connection, not the part after "!", which is what lets a sender act as that connection.
        raise AblyError(
            40006,
            f"Malformed message; invalid connectionKey {connection_key.partition('!')[0][:40]!r} ({where}): expected "
            "a connection's key (connection.key in ably-js) or a Pusher socket id",
        )
    return Message(name, data, encoding, client_id, message_id, extras, connection_key)


def decoded_data(data: object, encoding: str | None, where: str) -> tuple[str | bytes | None, str | None]:
    if isinstance(data, dict | list):  # a JSON body may carry an object: keep it as JSON text, as SDKs send it
        return _json_text(data, f"{where}: data", 40013), f"{encoding}/json" if encoding else "json"
    if isinstance(data, bytearray):
        data = bytes(data)
    if data is not None and not isinstance(data, str | bytes):
        raise AblyError(40013, f"{where}: data must be a string, binary, an object or an array")
    if encoding is not None and isinstance(data, str) and encoding.rsplit("/", 1)[-1] == "base64":
        try:
            data = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise AblyError(40013, f"{where}: data is not valid base64 although its encoding says so") from None
        encoding = encoding.rpartition("/")[0] or None
    return data, encoding


def message_too_large(where: str, total: int, limit: int) -> AblyError:
    """Ably's 40009 for messages (a publish's, a presence message's) over ``limit`` bytes, in Ably's own words, which
    users search for; ``where`` says which part of the request."""
    return AblyError(
        40009, f"{where}: Maximum message length exceeded (size was {total} bytes, limit is {limit} bytes)", 413
    )


def check_messages(
    messages: Sequence[Message], credentials: Credentials, where: str, limit: int = MAX_MESSAGE_SIZE
) -> None:
    """Client ids against the credentials (40012), the size limit (40009; a realtime connection's is the
    ``maxMessageSize`` its CONNECTED said) and idempotent ids (40031)."""
    total = 0
    for index, message in enumerate(messages):
        if message.client_id is None:
            message.client_id = credentials.identified()
        elif not credentials.may_use_client_id(message.client_id):
            raise AblyError(
                40012, f"{where}[{index}]: clientId {message.client_id!r} is incompatible with the credentials"
            )
        total += message.size()
    if total > limit:
        raise message_too_large(where, total, limit)
    if not are_numbered_ids([message.id for message in messages]):
        raise AblyError(40031, f"{where}: ids of a multi-message publish must be <base>:0, <base>:1, …")


_CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f]")


# Characters of a channel name's qualifier (``[?rewind=1&modes=subscribe]``): the params Ably has fit in far fewer,
# and a connection keeps each name it attached a channel by (90010 counts them).
MAX_QUALIFIER = 1024


def qualified_channel(raw: object) -> tuple[str, dict[str, str]]:
    """The channel a name denotes and the params its qualifier gives: ``[?rewind=1]orders`` is the channel ``orders``
    with ``{"rewind": "1"}``, on REST routes as on an ATTACH; 40010 for a bad name or qualifier."""
    if isinstance(raw, str):
        try:
            qualified = qualified_params(raw)
        except ValueError as exc:
            raise AblyError(40010, f"Invalid channel name {raw!r:.100}: {exc}") from None
        if qualified is not None:
            qualifier = len(raw) - len(qualified[0])
            if qualifier > MAX_QUALIFIER:
                problem = f"its qualifier is {qualifier} characters, the most is {MAX_QUALIFIER}"
                raise AblyError(40010, f"Invalid channel name {raw!r:.100}: {problem}")
            return check_channel_name(qualified[0]), qualified[1]
    return check_channel_name(raw), {}


def check_channel_name(name: object) -> str:
    """``name`` if it is an Ably channel name (``relay.protocol.ably``'s rules) the emulator serves, else 40010."""
    problem = ably_channel_problem(name)
    if problem is None and isinstance(name, str):
        if _CONTROL_CHARACTER.search(name):  # Ably refuses only a newline of them, but any breaks the bus's framing
            problem = "control characters are not allowed"
        elif name.startswith(SERVER_TO_USER_PREFIX):
            problem = f"must not start with {SERVER_TO_USER_PREFIX!r}: that is Pusher's per-user channel"
        else:
            return name
    raise AblyError(40010, f"Invalid channel name {name!r:.100}: {problem}")


# -- the wire ------------------------------------------------------------------------------------------------------


def jsonable(value: Any) -> Any:
    """Ably JSON: binary ``data`` becomes base64 with ``base64`` appended to its encoding (nested in lists too)."""
    if isinstance(value, list):
        return [jsonable(item) for item in value]
    if isinstance(value, dict):
        data = value.get("data")
        if isinstance(data, bytes):
            encoding = value.get("encoding")
            value = {**value, "data": base64.b64encode(data).decode()}
            value["encoding"] = f"{encoding}/base64" if encoding else "base64"
        return {key: jsonable(item) if isinstance(item, list) else item for key, item in value.items()}
    return value


def encode_json(value: Any) -> str:
    return json.dumps(jsonable(value), separators=(",", ":"), ensure_ascii=False)


def encode_msgpack(value: Any) -> bytes:
    try:
        packed: bytes = msgpack.packb(value, use_bin_type=True)
    except OverflowError:  # JSON extras may hold integers msgpack has no room for: those go as decimal text
        packed = msgpack.packb(_msgpack_ints(value), use_bin_type=True)
    return packed


def _msgpack_ints(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**64:
        return str(value)
    if isinstance(value, dict):
        return {key: _msgpack_ints(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_msgpack_ints(item) for item in value]
    return value


def decode_body(body: bytes, binary: bool, what: str) -> Any:
    """Untrusted JSON (no lone surrogates: they could never be sent on) or msgpack (strict UTF-8 strings)."""
    if not binary:
        try:
            return frames.loads(body, what)
        except InvalidFrame as exc:
            raise AblyError(40000, exc.message) from None
    try:
        return msgpack.unpackb(body, raw=False, strict_map_key=False)
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError, RecursionError) as exc:
        # TypeError: a map keyed by an array or a map (unhashable)
        raise AblyError(40000, f"{what} is not valid msgpack: {str(exc)[:100]}") from None


# Levels of nesting a checked value keeps to spare: it is encoded again inside the ProtocolMessage, deeper in the stack
# (a delivery's loop over subscribers), where a RecursionError would cost every later subscriber the message.
_DEPTH_HEADROOM = 32


def _json_text(value: object, what: str, code: int) -> str:
    """Compact JSON of a value from a msgpack body, which may hold what JSON cannot (binary, extension types, and
    NaN or infinite floats, which JSON subscribers could not parse: RFC 8259 has no such numbers), or from a JSON
    body: a value nested within ``_DEPTH_HEADROOM`` levels of what the encoder can take is refused here, where input
    is checked, rather than failing when it is delivered."""
    wrapped = value
    for _ in range(_DEPTH_HEADROOM):
        wrapped = [wrapped]
    try:
        text = json.dumps(wrapped, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError):
        raise AblyError(
            code, f"{what} must be JSON-compatible (no binary, extension values, NaN or infinities inside)"
        ) from None
    except RecursionError:
        raise AblyError(code, f"{what} is nested too deeply") from None
    return text[_DEPTH_HEADROOM:-_DEPTH_HEADROOM]


def ws_frame(value: Any, binary: bool) -> bytes:
    return binary_frame(encode_msgpack(value)) if binary else encode_text(encode_json(value))


def compact_json(data: str) -> str | None:
    """The compact JSON of ``data`` when it is one strict JSON document (:func:`frames.strict_json`), else None."""
    value = frames.strict_json(data)
    if value is frames.NOT_JSON:
        return None
    try:
        return frames.dumps_parsed(value, "data")
    except InvalidFrame:  # read at the parser's limit, a little too deep to write back: not JSON either
        return None


@dataclass(slots=True)
class Outbound:
    """One server-to-client ProtocolMessage (MESSAGE, PRESENCE or SYNC), encoded once per wire format."""

    fields: dict[str, Any]
    presence: bool = False
    _encoded: dict[object, bytes] = field(default_factory=dict)

    def frame(self, binary: bool) -> bytes:
        encoded = self._encoded.get(binary)
        if encoded is None:
            encoded = self._encoded[binary] = ws_frame(self.fields, binary)
        return encoded

    def frame_as(self, channel: str, binary: bool) -> bytes:
        """The frame with ``channel`` for its channel: the name a client attached with (``[?rewind=1]orders``),
        which its SDK routes the message by."""
        if channel == self.fields["channel"]:
            return self.frame(binary)
        key = (channel, binary)
        encoded = self._encoded.get(key)
        if encoded is None:
            encoded = self._encoded[key] = ws_frame({**self.fields, "channel": channel}, binary)
        return encoded


def replayed(outbound: Outbound) -> Outbound | None:
    """What a resumed connection is sent again of ``outbound``, which it missed: all of it but its ephemeral messages
    (Ably delivers those once, to whoever is connected), each other one with the id it was delivered with; None when
    nothing is left."""
    if outbound.presence:
        return outbound
    fields = outbound.fields
    messages: list[dict[str, Any]] = fields["messages"]
    if not any(is_ephemeral(item.get("extras")) for item in messages):
        return outbound
    kept = [
        delivered_message(fields, index) for index, item in enumerate(messages) if not is_ephemeral(item.get("extras"))
    ]
    return Outbound({**fields, "messages": kept}) if kept else None


# -- presence ------------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class PresenceRecord:
    client_id: str
    connection_id: str
    data: str | bytes | None
    encoding: str | None
    id: str
    timestamp: int

    def item(self, action: int) -> dict[str, Any]:
        item: dict[str, Any] = {
            "action": action,
            "clientId": self.client_id,
            "connectionId": self.connection_id,
            "id": self.id,
            "timestamp": self.timestamp,
        }
        if self.data is not None:
            item["data"] = self.data
        if self.encoding:
            item["encoding"] = self.encoding
        return item

    def user_info_json(self) -> str:
        return user_info_json(self.data, self.encoding)

    @classmethod
    def of(cls, item: dict[str, Any]) -> PresenceRecord:
        """A record from its wire item (another node's member)."""
        data, encoding = item.get("data"), item.get("encoding")
        return cls(item["clientId"], item["connectionId"], data, encoding, item["id"], item["timestamp"])


def user_info_json(data: str | bytes | None, encoding: str | None) -> str:
    """Ably presence data as Pusher ``user_info``: JSON data as it is, text (and JSON that is not strict JSON, or
    nested too deeply) as a JSON string, binary as base64."""
    if data is None:
        return "{}"
    if isinstance(data, bytes):
        return json.dumps(base64.b64encode(data).decode())
    if encoding == "json":
        compact = compact_json(data)
        if compact is not None:
            return compact
    return json.dumps(data, ensure_ascii=False)


class OccupancyWatcher(Protocol):
    """An Ably connection (``AblySession``), as occupancy events are sent to it."""

    socket_id: str

    def send_meta(self, channel: str, outbound: Outbound) -> None: ...


@dataclass(slots=True)
class OccupancyWatch:
    watcher: OccupancyWatcher
    categories: tuple[str, ...]
    sent: dict[str, int] | None = None  # the metrics last sent, as sent


# -- one app ------------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class NameModes:
    """The modes of one name a connection attached a channel by: each is a channel of its own to the client (an SDK
    keeps one channel object per name), with the modes its own ATTACH was granted."""

    modes: int
    requested: int  # the modes the ATTACH asked for: a new token's capability may grant more of them, or fewer


@dataclass(slots=True)
class Attachment:
    entered: set[str] = field(default_factory=set)  # client ids this connection entered with
    # For a resume (DeliveryLog.since): the app's serial when it was made (nothing before is replayed to it), and
    # the channelSerials it was sent that are no delivery of the log (its ATTACHEDs', its rewind's last), each with
    # the serial it stands for.
    made_at: int = 0
    points: dict[str, int] = field(default_factory=dict)
    # The names the client attached the channel with, which its frames carry (an SDK routes by them), each with its
    # own modes: orders, and [?modes=publish]orders too when a page has both channel objects.
    names: dict[str, NameModes] = field(default_factory=dict)
    # The one of them whose ATTACH asked for occupancy events ([?occupancy=metrics]orders), which they are sent under
    # and which stops them when it goes (a DETACH, or an ATTACH again without the param)
    occupancy_name: str | None = None

    @property
    def modes(self) -> int:
        """The modes of any of its names: what the connection counts for in the channel's occupancy."""
        modes = 0
        for name in self.names.values():
            modes |= name.modes
        return modes


# -- what Ably attachments were sent, for resumes ------------------------------------------------------------------

DELIVERY_LOG_MS = 120_000  # a held connection's two minutes (connectionStateTtl)
DELIVERY_LOG_BYTES = 16 * 1024 * 1024  # per app, as counted by DeliveryLog.record
DELIVERY_OVERHEAD = 800  # beyond the frame: the ProtocolMessage's dict and strings, the entry (as history's)


@dataclass(slots=True, frozen=True)
class Delivered:
    position: int  # the app's serial when it was sent: later than the ATTACHED serials given before
    outbound: Outbound
    at_ms: int
    size: int

    @property
    def channel_serial(self) -> str | None:
        serial = self.outbound.fields.get("channelSerial")
        return serial if isinstance(serial, str) else None


class DeliveryLog:
    """What an app's Ably attachments were sent on each channel (messages of both protocols, presence changes) in the
    last two minutes, once per delivery whatever the number of recipients: a resumed connection's re-ATTACH names the
    last channelSerial it received, and gets what came after it from here (docs/ably.md#connection-resume). One
    deque per channel and one for the app in the order things were sent, as :class:`MessageHistory` keeps them, and
    each channel's deliveries by channelSerial (unique: each node counts its serials from a random start)."""

    def __init__(self, retention_ms: int = DELIVERY_LOG_MS, max_bytes: int = DELIVERY_LOG_BYTES) -> None:
        self.retention_ms = retention_ms
        self.max_bytes = max_bytes
        self._channels: dict[str, deque[Delivered]] = {}
        self._by_serial: dict[str, dict[str, Delivered]] = {}
        self._order: deque[tuple[str, Delivered]] = deque()
        self._bytes = 0
        self._dropped_through = 0  # the newest position dropped: what came after an older one may be gone

    def record(self, channel: str, outbound: Outbound, frame_size: int, position: int, now_ms: int) -> None:
        entry = Delivered(position, outbound, now_ms, DELIVERY_OVERHEAD + 2 * frame_size)
        self._channels.setdefault(channel, deque()).append(entry)
        serial = entry.channel_serial
        if serial is not None:
            self._by_serial.setdefault(channel, {})[serial] = entry
        self._order.append((channel, entry))
        self._bytes += entry.size
        order, oldest, step = self._order, now_ms - self.retention_ms, EXPIRY_STEP
        # As history's expiry: a delivery after a quiet spell does not pay for every entry that aged meanwhile.
        while order and ((step > 0 and order[0][1].at_ms < oldest) or self._bytes > self.max_bytes):
            step -= 1
            dropped_channel, dropped = order.popleft()
            self._bytes -= dropped.size
            self._dropped_through = dropped.position
            kept = self._channels[dropped_channel]
            kept.popleft()
            by_serial = self._by_serial.get(dropped_channel, {})
            if by_serial.get(dropped.channel_serial or "") is dropped:
                del by_serial[dropped.channel_serial or ""]
            if not kept:
                del self._channels[dropped_channel]
                self._by_serial.pop(dropped_channel, None)

    def last_serial(self, channel: str) -> str | None:
        """The channelSerial of the last delivery on ``channel`` that had one."""
        for entry in reversed(self._channels.get(channel, ())):
            if entry.channel_serial is not None:
                return entry.channel_serial
        return None

    def since(self, channel: str, channel_serial: object, attachment: Attachment) -> list[Delivered] | None:
        """What ``attachment`` was sent on ``channel`` after the delivery whose channelSerial is ``channel_serial``
        (or after the point of its own that serial names: an ATTACHED, a rewind), oldest first; None when the log no
        longer reaches back that far, or the serial is none this node sent it."""
        if not isinstance(channel_serial, str):
            return None
        found = self._by_serial.get(channel, {}).get(channel_serial)
        if found is not None:
            start = found.position
        elif channel_serial in attachment.points and self._dropped_through <= attachment.points[channel_serial]:
            start = attachment.points[channel_serial]
        else:
            return None
        start = max(start, attachment.made_at)  # a rewound message logged before the attachment: not sent to it
        missed: list[Delivered] = []
        for entry in reversed(self._channels.get(channel, ())):
            if entry.position <= start:
                break
            missed.append(entry)
        missed.reverse()
        return missed


class AblyApp:
    """An app's Ably-only state next to its hub ``AppState``: presence members of Ably connections (this node's, and
    a replica of the other nodes' in a cluster), attachments' modes (for occupancy), recently published idempotency
    keys, serials, and the messages published through Ably's protocol (history)."""

    def __init__(
        self, state: AppState, key: AblyKey, wall_ms: Callable[[], int], serials: Iterator[int], node_tag: str
    ) -> None:
        self.state = state
        self.key = key
        self.wall_ms = wall_ms
        self._serials = serials
        # In the ids of ProtocolMessages that no connection sent (REST publishes, translated Pusher events, occupancy
        # events): each node counts its own serials, and history and webhooks list every node's REST publishes, so
        # their ids must differ between nodes.
        self._rest_id = f"rest-{node_tag}"
        self._pusher_id = f"pusher-{node_tag}"
        self._meta_id = f"meta-{node_tag}"
        self.presence: dict[str, dict[tuple[str, str], PresenceRecord]] = {}
        # Other nodes' members: channel → (connection id, client id) → (node, record).
        self.remote_members: dict[str, dict[tuple[str, str], tuple[int, PresenceRecord]]] = {}
        self.attachments: dict[str, dict[str, Attachment]] = {}
        # This node's Ably connections by connection key, the ones held for a resume included (docs/ably.md), and
        # what their channels were sent lately, for the resumes.
        self.connections: dict[str, AblySession] = {}
        self.deliveries = DeliveryLog()
        self._published: dict[tuple[str, tuple[str, ...]], tuple[int, str, list[str]]] = {}
        # The keys of _published as they were remembered, with their expiry: the expired ones are dropped from the
        # front as publishes come (rebuilding the dict past a size walked every idempotent publish of the window,
        # 5 ms a publish at 15,000 of them, the SDKs' and the library's REST publishes all being idempotent).
        self._published_order: deque[tuple[int, tuple[str, tuple[str, ...]]]] = deque()
        self._remembered_ids = 0  # the message ids of _published, which MAX_REMEMBERED_IDS bounds
        self.last_serial = 0  # the newest serial this app took (ATTACHED's channelSerial: where an attach happened)
        self._first_serial: int | None = None
        self.history = MessageHistory(
            round(state.app.ably_history_seconds * 1000), persist_last=state.app.ably_persist_last_message
        )
        self.presence_history = MessageHistory(
            round(state.app.ably_history_seconds * 1000), PRESENCE_HISTORY_BYTES, presence=True
        )
        # Attachments that asked for occupancy events (the occupancy channel param): channel → socket id → watch.
        self.occupancy_watches: dict[str, dict[str, OccupancyWatch]] = {}
        self._occupancy_sweep: asyncio.TimerHandle | None = None
        self._first_occupancy: dict[str, list[OccupancyWatch]] = {}  # new watches, sent their first together
        # Each presence join of a Pusher connection has a number of its own, the msgSerial of its members' ids: a
        # socket that leaves and joins again is a newer member, not the same one (ids are compared, RTP2b2).
        # (channel, socket id) → its join's number, and when it joined (its member's timestamp, ms)
        self._pusher_joins: dict[tuple[str, str], tuple[int, int]] = {}
        self._join_numbers = itertools.count(1)
        state.foreign_presence = self
        state.webhooks.lifecycle_status = self.lifecycle_status
        state.webhooks.lifecycle_listener = self

    def connection_key(self, connection_id: str) -> str:
        """A connection's key (``connection.key`` in ably-js): its id and a MAC of it with the app's key secret, so
        that every node of a cluster can tell it from a made-up one, a publish "as" that connection reaching a node
        that does not hold it."""
        mac = hmac.new(self.key.secret.encode(), connection_id.encode(), hashlib.sha256).hexdigest()[:16]
        return f"{connection_id}!{mac}"

    def next_serial(self) -> int:
        self.last_serial = serial = next(self._serials)
        if self._first_serial is None:
            self._first_serial = serial
        return serial

    def gave_serial(self, serial: int) -> bool:
        """Whether ``serial`` is one this node's app gave (an ATTACHED's channelSerial: 0 before any), not another
        node's or an earlier run's: each node counts from a random start, so another's cuts nothing here."""
        first = self._first_serial
        return serial == 0 or (first is not None and first <= serial <= self.last_serial)

    # -- publishing -------------------------------------------------------------------------------------------

    def publish(
        self,
        channel: str,
        messages: list[Message],
        *,
        connection_id: str | None,
        exclude: str | None,
        realtime: bool = False,
    ) -> tuple[str, list[str]]:
        """Publish to both protocols' subscribers; returns (messageId, serials). A repeat of an idempotent publish
        (same ids on the same channel within 2 minutes) is answered as before and delivered to nobody. ``realtime``:
        sent over the realtime connection ``connection_id``, not in a REST request (even one "as" that connection)."""
        now = self.wall_ms()
        ids = tuple(message.id for message in messages if message.id is not None)
        if ids:
            seen = self._published.get((channel, ids))
            if seen is not None and seen[0] > now:
                return seen[1], seen[2]
        serial = self.next_serial()
        protocol_id = f"{connection_id or self._rest_id}:{serial}"
        serial_text = channel_serial(serial)
        serials = numbered(serial_text, len(messages))
        message_id = publish_id(ids) if ids else protocol_id
        if ids:
            self._remember(channel, ids, now, message_id, serials)
            if self.state.cluster is not None:  # for the nodes that will not hear of it on the bus
                self.state.cluster.ably_published(self.state.app.app_id, channel, ids, message_id, serials)
        items = [message.item() for message in messages]
        for item, message_serial in zip(items, serials, strict=True):  # what the publisher's ACK said (serials)
            item["action"] = MESSAGE_CREATE
            item["serial"] = message_serial
        fields: dict[str, Any] = {
            "action": MESSAGE,
            "channel": channel,
            "id": protocol_id,
            "timestamp": now,
            "channelSerial": serial_text,
            "messages": items,
        }
        if connection_id is not None:
            fields["connectionId"] = connection_id
        self._deliver_to_hub(channel, messages, Outbound(fields), exclude, http=not realtime)
        self.history.keep(channel, fields, serial, now)
        if self.state.webhooks.wants("message"):  # Ably-format webhooks' channel.message: Pusher's have no such event
            kept = _webhook_messages(fields)
            if kept:
                self.state.ably_item_webhook({"name": "message", "channel": channel, "messages": kept})
        return message_id, serials

    def published_elsewhere(self, channel: str, fields: dict[str, Any]) -> None:
        """Another node's Ably publish arrived: kept in history as this node's are, its position (where untilAttach
        cuts) a serial of this node's; its message ids are remembered as this node's, so a retry sent here (a load
        balancer's choice) is answered as the first was, not delivered again."""
        now = self.wall_ms()
        self.history.keep(channel, fields, self.next_serial(), now)
        items = fields["messages"]
        ids = tuple(item["id"] for item in items if item.get("id") is not None)
        if ids:
            serials = numbered(fields["channelSerial"], len(items))
            self._remember(channel, ids, now, publish_id(ids), serials)

    def published_elsewhere_before(
        self, channel: str, ids: tuple[str, ...], message_id: str, serials: list[str], ms_left: int
    ) -> None:
        """Another node's idempotent publish that this node did not hear of (it started since, or its bus
        subscription dropped), read from Redis with the time its window has left: its retries here are answered as
        it was."""
        key, now = (channel, ids), self.wall_ms()
        known = self._published.get(key)
        if known is None or known[0] <= now:  # one expired and not yet swept is not known
            expiry = now + ms_left
            # Among those remembered since this one was published: the order is by expiry, which the sweep relies on
            bisect.insort(self._published_order, (expiry, key))
            self._keep(key, (expiry, message_id, serials))

    def _remember(self, channel: str, ids: tuple[str, ...], now: int, message_id: str, serials: list[str]) -> None:
        """An idempotent publish's answer, for its repeats within Ably's 2 minutes."""
        self._forget_expired(now)
        expiry, key = now + IDEMPOTENCY_WINDOW_MS, (channel, ids)
        self._published_order.append((expiry, key))
        self._keep(key, (expiry, message_id, serials))

    def _keep(self, key: tuple[str, tuple[str, ...]], answer: tuple[int, str, list[str]]) -> None:
        """``answer`` remembered for ``key``, its entry in the order made; the oldest go past MAX_REMEMBERED_IDS."""
        if key not in self._published:
            self._remembered_ids += len(key[1])
        self._published[key] = answer
        while self._remembered_ids > MAX_REMEMBERED_IDS:
            self._forget_first()

    def _forget_expired(self, now: int) -> None:
        order = self._published_order
        while order and order[0][0] <= now:
            self._forget_first()

    def _forget_first(self) -> None:
        """The publish remembered that expires first (its entry in the order may be stale: remembered again since)."""
        expiry, key = self._published_order.popleft()
        remembered = self._published.get(key)
        if remembered is not None and remembered[0] == expiry:  # not remembered again since
            del self._published[key]
            self._remembered_ids -= len(key[1])

    def _deliver_to_hub(
        self, name: str, messages: list[Message], outbound: Outbound, exclude: str | None, *, http: bool
    ) -> None:
        """What ``AppState.publish`` does for a Pusher publish, with one Pusher event per Ably message; ``http``: the
        messages came in an HTTP request, as the usage meter counts them."""
        state = self.state
        texts = [frames.channel_event(m.pusher_event(), name, m.pusher_data(), m.client_id) for m in messages]
        if is_cache_channel(name):  # for later subscribers: not an ephemeral message, the current subscribers' only
            lasting = [message for message in messages if not is_ephemeral(message.extras)]
            if lasting:
                state.cache_published(name, lasting[-1].pusher_event(), lasting[-1].pusher_data())
        counted, echoes = state.publisher_reach(name, outbound.fields.get("connectionId"), exclude)
        reached = local_reach(state, name, exclude) - counted
        meter = state.meter
        units = [
            meter.published(name, m.pusher_event(), m.pusher_data(), reached, m.size(), echoes, http=http)
            for m in messages
        ]
        channel = state.channels.get(name)
        if channel is not None:
            # One Pusher event per message; Ably peers get the whole ProtocolMessage with the first one.
            for index, text in enumerate(texts):
                state.deliver(channel, encode_text(text), exclude, outbound if index == 0 else DELIVERED)
        if state.cluster is not None:  # the other nodes' Ably peers get the same ProtocolMessage (ids, extras)
            state.cluster.published_ably(state.app.app_id, name, texts, exclude, outbound.fields, units)

    def from_pusher(self, channel: str, frame: bytes, exclude: str | None) -> Outbound | None:
        """An Ably MESSAGE for a Pusher channel event delivered without one (``None`` for Pusher's own protocol
        events): a Pusher publish a node of an earlier release made, translated by each node as it receives it and not
        kept in history. This node's Pusher publishes have theirs from :meth:`pusher_published`."""
        try:
            event = json.loads(frame[payload_offset(frame) :])
        except ValueError:
            return None
        name = event.get("event") if isinstance(event, dict) else None
        if not isinstance(name, str) or name.startswith(RESERVED_NAME_PREFIXES):
            return None
        data, user_id = event.get("data"), event.get("user_id")
        return self._pusher_message(
            channel,
            name,
            data if isinstance(data, str) else None,
            user_id if isinstance(user_id, str) else None,
            exclude,
            self.next_serial(),
            self.wall_ms(),
        )

    def pusher_published(
        self, channel: str, event: str, data: str, user_id: str | None, exclude: str | None
    ) -> Outbound:
        """A Pusher publish or client event as Ably has it, built once when it is made, as an Ably publish's is: the
        MESSAGE every Ably subscriber gets (the ``origin`` to deliver with; in a cluster, every node's), kept in
        history."""
        serial, now = self.next_serial(), self.wall_ms()
        outbound = self._pusher_message(channel, event, data, user_id, exclude, serial, now)
        self.history.keep(channel, outbound.fields, serial, now)
        return outbound

    def webhook_messages(self, origin: object) -> list[dict[str, Any]]:
        """The messages of :meth:`pusher_published`'s MESSAGE for Ably-format webhooks: the ids its subscribers get."""
        assert isinstance(origin, Outbound)
        return _webhook_messages(origin.fields)

    def _pusher_message(
        self,
        channel: str,
        name: str,
        data: str | None,
        user_id: str | None,
        exclude: str | None,
        serial: int,
        now: int,
    ) -> Outbound:
        """A Pusher event as an Ably MESSAGE with what an Ably publish's carries: its serial (``serial``, from the
        app's sequence that Ably publishes take theirs from), its action, a ProtocolMessage id and timestamp."""
        serial_text = channel_serial(serial)
        item: dict[str, Any] = {"name": name, "action": MESSAGE_CREATE, "serial": f"{serial_text}:0"}
        if data is not None:
            item["data"] = data
            if frames.looks_like_json(data):
                item["encoding"] = "json"
        if user_id is not None:
            item["clientId"] = user_id
        fields: dict[str, Any] = {
            "action": MESSAGE,
            "channel": channel,
            "id": f"{exclude or self._pusher_id}:{serial}",
            "timestamp": now,
            "channelSerial": serial_text,
            "messages": [item],
        }
        if exclude is not None:
            fields["connectionId"] = exclude  # a client event's sender, or the socket an HTTP publish acted for
        return Outbound(fields)

    # -- presence ---------------------------------------------------------------------------------------------

    def members(self, name: str) -> list[dict[str, Any]]:
        """The presence set as PRESENT messages: this node's Ably connections' members, the other nodes' members
        (Ably and Pusher connections'), then this node's Pusher connections' members."""
        items = [record.item(PRESENT) for record in self.presence.get(name, {}).values()]
        items.extend(record.item(PRESENT) for _, record in self.remote_members.get(name, {}).values())
        channel = self.state.channels.get(name)
        if channel is not None:
            items.extend(self._pusher_members(channel))
        return items

    def _pusher_members(self, channel: Channel) -> Iterator[dict[str, Any]]:
        """This node's Pusher connections in ``channel``'s presence, a member each (none outside presence channels)."""
        if channel.kind is not ChannelKind.PRESENCE:
            return
        now = self.wall_ms()
        for socket_id, peer in channel.subscribers.items():
            user_id = peer.subscriptions.get(channel.name) if isinstance(peer, Session) else None
            entry = channel.members.get(user_id) if user_id is not None else None
            if user_id is not None and entry is not None:
                join, joined_at = self._pusher_joins.get((channel.name, socket_id), (0, now))
                yield pusher_member(socket_id, user_id, entry.user_info_json, PRESENT, joined_at, join)

    def pusher_member(self, channel: Channel, socket_id: str, user_id: str, user_info_json: str, entered: bool) -> None:
        """A Pusher connection entered or left a presence channel: to Ably, a member with the socket id as its
        connectionId, on every node (in a cluster the other nodes keep it in their replica, as an Ably member)."""
        key, now = (channel.name, socket_id), self.wall_ms()
        if entered:
            join = next(self._join_numbers)
            self._pusher_joins[key] = (join, now)
        else:
            join = self._pusher_joins.pop(key, (0, now))[0]
        if self.state.cluster is None and not channel.foreign and not self.state.webhooks.wants("presence"):
            return  # no Ably connection anywhere nor an Ably-format webhook can hear of it
        item = pusher_member(socket_id, user_id, user_info_json, ENTER if entered else LEAVE, now, join)
        self.broadcast_presence(channel.name, socket_id, [item])

    def check_presence(
        self, name: str, socket_id: str, changes: Sequence[tuple[int, str, str | bytes | None, str | None]]
    ) -> None:
        """Refuse a PRESENCE message's changes (``(action, clientId, data, encoding)`` in order) before any is
        applied, so a message is applied whole or not at all: the member limit (91003), and on a ``presence-``
        channel what Pusher's presence cannot hold: a clientId over ``max_user_id_length`` characters (40012) or
        ``user_info`` over ``max_user_info_bytes`` (40009)."""
        channel = self.state.channels.get(name)
        pusher = channel is not None and channel.kind is ChannelKind.PRESENCE
        members = self.presence.get(name, {})
        entered = {client_id for connection_id, client_id in members if connection_id == socket_id}
        limits = self.state.app.limits
        # A presence- channel counts users (Pusher's members: a user's connections of either protocol, on any node),
        # other channels count Ably members (connection, clientId) on every node.
        connections: dict[str, int] = {}  # this node's users → their connections in the channel's presence
        elsewhere: set[str] = set()  # users other nodes' connections hold
        count = len(members) + len(self.remote_members.get(name, {}))
        if pusher:
            assert channel is not None
            limit = limits.max_presence_members
            connections = {user_id: entry.connections for user_id, entry in channel.members.items()}
            remote = self.state.remote.members.get(name, {})
            elsewhere = {user_id for user_id, nodes in remote.items() if nodes}
        else:
            limit = MAX_PRESENCE_MEMBERS
        for action, client_id, data, encoding in changes:
            if action == LEAVE:
                if client_id in entered:
                    entered.discard(client_id)
                    if not pusher:
                        count -= 1
                    elif connections.get(client_id, 0) > 1:
                        connections[client_id] -= 1
                    else:
                        connections.pop(client_id, None)
                continue
            if pusher:
                check_pusher_member(client_id, data, encoding, limits)
            if client_id in entered:
                continue  # an update of this connection's member
            if pusher:
                known = client_id in connections or client_id in elsewhere
                over = not known and len(elsewhere.union(connections)) >= limit
                connections[client_id] = connections.get(client_id, 0) + 1
            else:
                over = count >= limit
                count += 1
            if over:
                raise AblyError(91003, f"Unable to enter presence: the channel has the maximum of {limit} members")
            entered.add(client_id)

    def enter(
        self,
        name: str,
        socket_id: str,
        client_id: str,
        data: str | bytes | None,
        encoding: str | None,
        message_id: str,
    ) -> tuple[PresenceRecord, int]:
        """Record an ENTER or UPDATE (an UPDATE of an absent member enters it, an ENTER of a present one updates
        it) that :meth:`check_presence` passed; returns the record and the action to broadcast. On a ``presence-``
        channel the member also joins the Pusher presence (``member_added`` on the user's first connection)."""
        members = self.presence.setdefault(name, {})
        key = (socket_id, client_id)
        known = key in members
        record = members[key] = PresenceRecord(client_id, socket_id, data, encoding, message_id, self.wall_ms())
        channel = self.state.channels.get(name)
        if channel is not None and channel.kind is ChannelKind.PRESENCE and not known:
            self.state.join_member(channel, socket_id, Member(client_id, record.user_info_json()))
        elif not known:  # an Ably channel's members are its connections' client ids (a presence- one's, its users)
            self.state.meter.presence_held(len(members) + len(self.remote_members.get(name, {})))
        return record, (UPDATE if known else ENTER)

    def leave(self, name: str, socket_id: str, client_id: str, message_id: str | None = None) -> PresenceRecord | None:
        members = self.presence.get(name, {})
        record = members.pop((socket_id, client_id), None)
        if not members:
            self.presence.pop(name, None)
        if record is None:
            return None
        channel = self.state.channels.get(name)
        if channel is not None and channel.kind is ChannelKind.PRESENCE and client_id in channel.members:
            self.state.leave_member(channel, client_id)
        record.timestamp = self.wall_ms()
        if message_id is not None:
            record.id = message_id
        return record

    def broadcast_presence(self, name: str, connection_id: str, items: list[dict[str, Any]]) -> None:
        """Send a PRESENCE message to the Ably connections attached to ``name`` on every node (presence needs no
        Pusher frame: Pusher peers hear of members through ``member_added``/``member_removed``)."""
        if not items:
            return
        now, serial = self.wall_ms(), self.next_serial()
        # A channelSerial, as Ably's PRESENCE messages carry: presence history's order within a millisecond.
        fields = {
            "action": PRESENCE,
            "channel": name,
            "connectionId": connection_id,
            "timestamp": now,
            "channelSerial": channel_serial(serial),
            "presence": items,
        }
        if self.state.cluster is not None:  # even with no local subscriber left: the others still hold the member
            self.state.cluster.ably_presence(self.state.app.app_id, name, fields)
        self._deliver_presence(name, Outbound(fields, presence=True))
        self.presence_history.keep(name, fields, serial, now)
        counted = self._metered_changes(name, items)
        if counted:
            self.state.meter.presence_changed(counted, self._presence_subscribers(name))
        if self.state.webhooks.wants("presence"):  # Ably-format webhooks' channel.presence, per connection as Ably's
            self.state.ably_item_webhook({"name": "presence", "channel": name, "presence": jsonable(items)})

    @staticmethod
    def _metered_changes(name: str, items: list[dict[str, Any]]) -> int:
        """How many of a PRESENCE message's changes the usage meter counts here: all of them, but on a ``presence-``
        channel only the updates (its enters and leaves are Pusher members' joins and leaves, which
        ``AppState.join_member`` and ``leave_member`` count)."""
        if classify(name) is not ChannelKind.PRESENCE:
            return len(items)
        return sum(1 for item in items if item.get("action") == UPDATE)

    def _presence_subscribers(self, name: str) -> int:
        """This node's attachments to ``name`` that are sent its presence (those with the PRESENCE_SUBSCRIBE mode)."""
        return sum(
            1 for attachment in self.attachments.get(name, {}).values() if attachment.modes & MODE_PRESENCE_SUBSCRIBE
        )

    def _deliver_presence(self, name: str, outbound: Outbound) -> None:
        channel = self.state.channels.get(name)
        if channel is None:
            return
        cache: dict[object, object] = {}
        for peer in channel.peers():
            if isinstance(peer, ForeignPeer):
                peer.deliver_foreign(name, b"", outbound, None, cache)
        ForeignTally.meter(cache, self.state.meter)

    # -- other nodes' members (ForeignPresence) ---------------------------------------------------------------

    def held(self) -> Iterator[tuple[str, dict[str, Any]]]:
        for name, members in self.presence.items():
            for record in members.values():
                yield name, record.item(PRESENT)
        for name, channel in self.state.channels.items():
            for item in self._pusher_members(channel):
                yield name, item

    def remote_presence(self, node: int, channel: str, fields: dict[str, Any]) -> None:
        """Apply a node's PRESENCE message to the replica and send on what changed it: the same change can arrive
        twice (the bus message after a snapshot already showed it, or after the node said goodbye)."""
        members = self.remote_members.setdefault(channel, {})
        changed = []
        for item in fields["presence"]:
            key = (item["connectionId"], item["clientId"])
            known = members.get(key)
            if item["action"] == LEAVE:
                if known is None:
                    continue
                del members[key]
            elif known is not None and known[1].id == item["id"]:
                continue
            else:
                members[key] = (node, PresenceRecord.of(item))
            changed.append(item)
        if not members:
            del self.remote_members[channel]
        if changed:
            message = fields if len(changed) == len(fields["presence"]) else {**fields, "presence": changed}
            self._deliver_presence(channel, Outbound(message, presence=True))
            self.presence_history.keep(channel, message, self.next_serial(), self.wall_ms())
            counted = self._metered_changes(channel, changed)
            if counted:  # deliveries of another node's presence events, which that node counted as events
                self.state.meter.presence_relayed(counted * self._presence_subscribers(channel))

    def remote_snapshot(self, node: int, held: dict[tuple[str, str, str], dict[str, Any]]) -> None:
        changes: dict[str, list[dict[str, Any]]] = {}
        for name, members in self.remote_members.items():
            for (connection_id, client_id), (owner, record) in members.items():
                if owner == node and (name, connection_id, client_id) not in held:
                    changes.setdefault(name, []).append(self._left(record))
        for (name, connection_id, client_id), item in held.items():
            known = self.remote_members.get(name, {}).get((connection_id, client_id))
            if known is None or known[1].id != item["id"]:
                changes.setdefault(name, []).append({**item, "action": ENTER if known is None else UPDATE})
        for name, items in changes.items():
            self._remote_change(node, name, items)

    def forget_node(self, node: int) -> None:
        for name, members in list(self.remote_members.items()):
            left = [self._left(record) for owner, record in members.values() if owner == node]
            if left:
                self._remote_change(node, name, left)

    def _left(self, record: PresenceRecord) -> dict[str, Any]:
        """A LEAVE the server makes for a member whose node is gone or no longer holds it.

        Its id does not begin with the member's connectionId, so SDKs judge it newer than the member's last message by
        timestamp (RTP2b1); with the member's own id they would find it no newer (RTP2b2) and keep the member."""
        item = record.item(LEAVE)
        item["id"] = f"leave-{self.next_serial()}:0:0"
        item["timestamp"] = self.wall_ms()
        return item

    def _remote_change(self, node: int, name: str, items: list[dict[str, Any]]) -> None:
        serial = channel_serial(self.next_serial())
        fields = {
            "action": PRESENCE,
            "channel": name,
            "timestamp": self.wall_ms(),
            "channelSerial": serial,
            "presence": items,
        }
        self.remote_presence(node, name, fields)

    # -- occupancy --------------------------------------------------------------------------------------------

    def watch_occupancy(self, name: str, watcher: OccupancyWatcher, categories: tuple[str, ...]) -> None:
        """Send ``watcher`` the occupancy of ``name`` within FIRST_OCCUPANCY_DELAY (with the other watches new by then:
        one count of the channel for them all), and again whenever the ``categories`` change."""
        watch = OccupancyWatch(watcher, categories)
        self.occupancy_watches.setdefault(name, {})[watcher.socket_id] = watch
        loop = asyncio.get_running_loop()
        if not self._first_occupancy:
            loop.call_later(FIRST_OCCUPANCY_DELAY, self._send_first_occupancy)
        self._first_occupancy.setdefault(name, []).append(watch)
        if self._occupancy_sweep is None:
            self._occupancy_sweep = loop.call_later(OCCUPANCY_INTERVAL, self._sweep_occupancy)

    def unwatch_occupancy(self, name: str, socket_id: str) -> None:
        watches = self.occupancy_watches.get(name)
        if watches is not None and watches.pop(socket_id, None) is not None and not watches:
            del self.occupancy_watches[name]
            if not self.occupancy_watches and self._occupancy_sweep is not None:
                self._occupancy_sweep.cancel()
                self._occupancy_sweep = None

    def _send_first_occupancy(self) -> None:
        first, self._first_occupancy = self._first_occupancy, {}
        for name, watches in first.items():
            current = self.occupancy_watches.get(name, {})
            self._send_occupancy_safely(name, [w for w in watches if current.get(w.watcher.socket_id) is w])

    def _sweep_occupancy(self) -> None:
        """Each watched channel's occupancy counted once, sent to the watches whose categories changed."""
        try:
            for name, watches in list(self.occupancy_watches.items()):  # copies: the loop must not see them change
                self._send_occupancy_safely(name, list(watches.values()))
        finally:
            self._occupancy_sweep = None
            if self.occupancy_watches:
                loop = asyncio.get_running_loop()
                self._occupancy_sweep = loop.call_later(OCCUPANCY_INTERVAL, self._sweep_occupancy)

    def _send_occupancy_safely(self, name: str, watches: list[OccupancyWatch]) -> None:
        """A bug must cost this channel's message only, not the app's occupancy events from then on."""
        try:
            self._send_occupancy(name, watches)
        except Exception:
            log.exception("occupancy event failed", extra={"channel": name[:200]})

    def _send_occupancy(self, name: str, watches: list[OccupancyWatch]) -> None:
        """``name``'s occupancy to each of ``watches`` whose categories changed since it was last sent them: one
        message per set of categories, encoded once per wire format."""
        if not watches:
            return
        metrics = self.channel_details(name)["status"]["occupancy"]["metrics"]
        messages: dict[tuple[str, ...], Outbound] = {}
        for watch in watches:
            view = {category: metrics[category] for category in watch.categories}
            if view == watch.sent:
                continue
            watch.sent = view
            outbound = messages.get(watch.categories)
            if outbound is None:
                outbound = messages[watch.categories] = Outbound(self._occupancy_message(name, view))
            watch.watcher.send_meta(name, outbound)

    def _occupancy_message(self, name: str, view: dict[str, int]) -> dict[str, Any]:
        now, protocol_id = self.wall_ms(), f"{self._meta_id}:{self.next_serial()}"
        event = {
            "id": f"{protocol_id}:0",
            "name": OCCUPANCY_EVENT,
            "timestamp": now,
            "encoding": "json",
            "data": json.dumps({"metrics": view}, separators=(",", ":")),
        }
        message = {"action": MESSAGE, "channel": name, "id": protocol_id, "timestamp": now, "messages": [event]}
        # The channel's position, unmoved: ably-python takes a MESSAGE's channelSerial, present or not, for the one a
        # resume names (ably-js skips a missing one).
        serial = self.deliveries.last_serial(name)
        if serial is not None:
            message["channelSerial"] = serial
        return message

    def channel_details(self, name: str) -> dict[str, Any]:
        """ChannelDetails (A.7) counted across both protocols."""
        state = self.state
        channel: Channel | None = state.channels.get(name)
        attachments = list(self.attachments.get(name, {}).values())
        connections = state.subscription_count(name)
        pusher = connections - len(attachments)
        kind = classify(name)
        pusher_publishers = pusher if state.app.client_events and kind.allows_client_events else 0
        pusher_presence = pusher if kind is ChannelKind.PRESENCE else 0
        members = len(self.presence.get(name, {})) + len(self.remote_members.get(name, {}))
        if channel is not None and kind is ChannelKind.PRESENCE:
            members += sum(1 for peer in channel.subscribers.values() if isinstance(peer, Session))
        metrics = {
            "connections": connections,
            "presenceConnections": pusher_presence + sum(1 for a in attachments if a.modes & MODE_PRESENCE),
            "presenceMembers": members,
            "presenceSubscribers": pusher_presence + sum(1 for a in attachments if a.modes & MODE_PRESENCE_SUBSCRIBE),
            "publishers": pusher_publishers + sum(1 for a in attachments if a.modes & MODE_PUBLISH),
            "subscribers": pusher + sum(1 for a in attachments if a.modes & MODE_SUBSCRIBE),
            "objectPublishers": 0,
            "objectSubscribers": 0,
        }
        active = connections > 0 or members > 0
        return {"channelId": name, "name": name, "status": {"isActive": active, "occupancy": {"metrics": metrics}}}

    # -- [meta]channel.lifecycle ------------------------------------------------------------------------------

    def watching(self) -> bool:
        """Whether the lifecycle metachannel has a subscriber on any node (nothing is built for nobody)."""
        return self.state.subscription_count(CHANNEL_LIFECYCLE) > 0

    def channel_lifecycle(self, event: WebhookEvent) -> None:
        """A channel opened or closed (a channel_occupied or channel_vacated as the webhooks have it: sent by one node
        of a cluster, a closing after the app's webhook delay): reported on the lifecycle metachannel to its
        subscribers on every node. Built on the loop's next turn: an opening is heard of from inside the attach that
        opened it, which its occupancy then counts."""
        if self.watching():
            opened = event["name"] == "channel_occupied"
            asyncio.get_running_loop().call_soon(self._publish_lifecycle_safely, str(event["channel"]), opened)

    def _publish_lifecycle_safely(self, name: str, opened: bool) -> None:
        """A bug must cost this event only, not the channel's opening or the app's later events."""
        try:
            self._publish_lifecycle(name, opened)
        except Exception:
            log.exception("channel lifecycle event failed", extra={"channel": name[:200]})

    def _publish_lifecycle(self, name: str, opened: bool) -> None:
        """One MESSAGE on the metachannel: channel.region.active then channel.opened (channel.region.inactive then
        channel.closed), each one's data a ChannelDetails. The emulator is one region, the global master, whose
        occupancy is the channel's."""
        status = self.lifecycle_status(name, opened)
        regional = {"channelId": name, "name": name, "region": ABLY_SITE, "isGlobalMaster": True, "status": status}
        overall = {"channelId": name, "name": name, "status": status}
        names = LIFECYCLE_OPENED if opened else LIFECYCLE_CLOSED
        messages = [
            Message(event, json.dumps(details, separators=(",", ":")), "json")
            for event, details in zip(names, (regional, overall), strict=True)
        ]
        serial, now = self.next_serial(), self.wall_ms()
        fields: dict[str, Any] = {
            "action": MESSAGE,
            "channel": CHANNEL_LIFECYCLE,
            "id": f"{self._meta_id}:{serial}",
            "timestamp": now,
            "channelSerial": channel_serial(serial),
            "messages": [message.item() for message in messages],
        }
        self._deliver_to_hub(CHANNEL_LIFECYCLE, messages, Outbound(fields), None, http=False)  # Ably's own
        self.history.keep(CHANNEL_LIFECYCLE, fields, serial, now)

    def lifecycle_status(self, name: str, opened: bool) -> dict[str, object]:
        """The ChannelStatus of a channel.opened or channel.closed webhook item: the occupancy when it is sent, or, at
        the closing, nothing (the channel may be open again by the time the item is sent)."""
        metrics = self.channel_details(name)["status"]["occupancy"]["metrics"]
        return {"isActive": opened, "occupancy": {"metrics": metrics if opened else dict.fromkeys(metrics, 0)}}


def check_pusher_member(client_id: str, data: str | bytes | None, encoding: str | None, limits: Limits) -> None:
    """An Ably member of a ``presence-`` channel is a Pusher member too: its clientId is a Pusher ``user_id`` (1 to
    ``max_user_id_length`` characters, as a Pusher client's ``channel_data`` must give) and its data the ``user_info``
    (at most ``max_user_info_bytes``). Ably has no such limits, so what breaks them is refused as Ably refuses an
    invalid clientId (40012) and an over-size message (40009)."""
    if not client_id or len(client_id) > limits.max_user_id_length:
        raise AblyError(
            40012,
            f"Invalid clientId on a Pusher presence channel: {len(client_id)} characters; "
            f"Pusher user ids are 1 to {limits.max_user_id_length}",
        )
    if frames.utf8_length(user_info_json(data, encoding)) > limits.max_user_info_bytes:
        limit = limits.max_user_info_bytes
        raise AblyError(40009, f"Presence data on a Pusher presence channel is limited to {limit} bytes", 413)


def _webhook_messages(fields: dict[str, Any]) -> list[dict[str, Any]]:
    """A MESSAGE's messages as Ably-format webhooks carry them: each as its subscribers get it (ids, timestamp,
    connectionId), in Ably's JSON; none of its ephemeral ones (Ably sends those to no integration)."""
    items = fields["messages"]
    return [
        jsonable(delivered_message(fields, i)) for i, item in enumerate(items) if not is_ephemeral(item.get("extras"))
    ]


def pusher_member(
    socket_id: str, user_id: str, user_info_json: str, action: int, timestamp: int, join: int
) -> dict[str, Any]:
    """A Pusher connection's presence member as an Ably PresenceMessage (data: the user_info, JSON-encoded).

    Its id is fixed by the socket, the number of its presence join and the action (a member present or entering is
    ``socket:join:0``, its leave ``socket:join:1``), so every node and every snapshot of the member carry the same id,
    and by Ably's comparison of ids (RTP2b2) a leave is newer than its enter, and a later join newer than both."""
    return {
        "action": action,
        "clientId": user_id,
        "connectionId": socket_id,
        "id": f"{socket_id}:{join}:{1 if action == LEAVE else 0}",
        "timestamp": timestamp,
        "data": user_info_json,
        "encoding": "json",
    }
