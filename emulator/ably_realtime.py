"""One Ably realtime connection (ably-js 2.x, ably-python 3.x): the Ably protocol over the emulator's WebSocket.

Like the Pusher :class:`~relay.emulator.session.Session`, it is synchronous and transport-agnostic: the server feeds
it WebSocket messages (JSON text or msgpack binary) and the passage of time, and it writes frames to its ``Link``.
It is a ``ForeignPeer`` of the hub, so it sits in the same channels as Pusher sessions (docs/ably.md).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from itertools import groupby
from typing import Any, NamedTuple, NoReturn, Protocol

from relay.emulator.ably_auth import AblyAuth, AblyError, Credentials
from relay.emulator.ably_history import Kept
from relay.emulator.ably_hub import (
    AblyApp,
    Attachment,
    Delivered,
    NameModes,
    Outbound,
    check_messages,
    decode_body,
    decoded_data,
    message_too_large,
    parse_message,
    qualified_channel,
    replayed,
    ws_frame,
)
from relay.emulator.hub import ForeignPeer, ForeignTally
from relay.emulator.limits import TokenBucket
from relay.emulator.session import Link
from relay.emulator.wire import PING_FRAME
from relay.errors import ProtocolError
from relay.protocol.ably import (
    ACK,
    APPLIED_PARAMS,
    ATTACH,
    ATTACHED,
    AUTH,
    CHANNEL_LIFECYCLE,
    CLOSE,
    CLOSED,
    CONNECTED,
    CONNECTION_STATE_TTL_MS,
    DETACH,
    DETACHED,
    DISCONNECT,
    DISCONNECTED,
    ENTER,
    ERROR,
    HAS_BACKLOG,
    HAS_PRESENCE,
    HEARTBEAT,
    LEAVE,
    MAX_CHANNELS_PER_CONNECTION,
    MAX_INBOUND_RATE,
    MAX_MESSAGE_SIZE,
    MAX_REWIND_MESSAGES,
    MESSAGE,
    MODE_PRESENCE,
    MODE_PRESENCE_SUBSCRIBE,
    MODE_PUBLISH,
    MODE_SUBSCRIBE,
    NACK,
    PRESENCE,
    PRESENCE_HOLD_SECONDS,
    PRESENT,
    RESUMED,
    SYNC,
    UPDATE,
    Rewind,
    allowed_modes,
    allows,
    channel_params,
    channel_serial,
    check_message_count,
    is_metachannel,
    is_msg_serial,
    renewal_time,
    requested_modes,
    sent_to,
    sync_pages,
)
from relay.protocol.codes import Reconnect, reconnect_strategy

log = logging.getLogger("relay.emulator")
# Every ProtocolMessage a connection sends (ATTACH, DETACH, HEARTBEAT, AUTH as well as publishes), and every WebSocket
# ping or pong, counts against this rate; past it the connection is closed with 42924, as Ably does: a runaway client,
# not one an official SDK makes.
MAX_PROTOCOL_MESSAGE_RATE = 2000
MAX_HEARTBEAT_INTERVAL = 15.0
# How long a resumed connection's channels wait for the client's ATTACH (the SDKs send it at once; a page recovering
# a connection attaches as its code runs) before they are let go.
REATTACH_GRACE_SECONDS = 30.0
# The replies to a connection's last publishes, kept to answer a resumed client's resend of one whose ACK it lost.
KEPT_REPLIES = 64
# The channelSerials of an attachment's last ATTACHEDs and rewinds a resume may name (Attachment.points).
KEPT_POINTS = 16


def _granted_modes(credentials: Credentials, channel: str, name: NameModes) -> int:
    """The modes a name of an attachment has under new credentials (a reauth's, a resume's): those its ATTACH asked
    for that their capability allows."""
    return allowed_modes(credentials.capability, channel) & name.requested


class _AttachRequest(NamedTuple):
    """An ATTACH, checked: the name as the client attached by (``[?rewind=1]orders``), its channel (``orders``), its
    params, the modes granted (of those requested), and the rewind and occupancy categories it asks for."""

    shown: str
    name: str
    params: Mapping[str, Any]
    modes: int
    requested: int
    rewind: Rewind | None
    occupancy: tuple[str, ...] | None


class ResumableLink(Link, Protocol):
    """The WebSocket under an Ably session, which a resume may move to another socket."""

    def abandon(self, reason: str) -> None:
        """Close without the session, which has moved to another socket."""


class AblySession(ForeignPeer):
    __slots__ = (
        "_awaiting",
        "_clock",
        "_heartbeat",
        "_held_at",
        "_inbound",
        "_last_serial",
        "_link",
        "_log_refusal",
        "_max_frame_size",
        "_members_held",
        "_presence_hold",
        "_protocol_messages",
        "_released",
        "_renew_at_ms",
        "_replies",
        "_resumed_at",
        "_server_ids",
        "address_place",
        "app",
        "auth",
        "binary",
        "channels",
        "closed",
        "connection_key",
        "credentials",
        "echo",
        "last_activity",
        "last_sent",
        "opened_at",
        "ping_sent_at",
        "socket_id",
        "state",
        "user_id",
    )

    def __init__(
        self,
        app: AblyApp,
        auth: AblyAuth,
        socket_id: str,
        link: ResumableLink,
        clock: Callable[[], float],
        credentials: Credentials,
        *,
        binary: bool,
        echo: bool,
        max_frame_size: int = 524_288,
        presence_hold: float = PRESENCE_HOLD_SECONDS,
        log_refusal: Callable[[int, str, str], None],
    ) -> None:
        self.app = app
        self._log_refusal = log_refusal  # the node's: at most a line a second, whoever sends what
        self._max_frame_size = max_frame_size  # what the server's WebSocket accepts, advertised in CONNECTED
        self.state = app.state
        self.auth = auth
        self.socket_id = socket_id
        self.user_id: str | None = None  # Pusher's signed-in user: never set on an Ably connection
        self.connection_key = app.connection_key(socket_id)
        self._link = link
        self._clock = clock
        self.credentials = credentials
        self._renew_at_ms = renewal_time(credentials.expires_ms, app.wall_ms())
        self.binary = binary
        self.echo = echo
        self._heartbeat = min(MAX_HEARTBEAT_INTERVAL, float(app.state.app.activity_timeout))
        self.channels: dict[str, Attachment] = {}
        self.closed = False
        self._released = False
        self.opened_at = self.last_activity = self.last_sent = clock()
        self.ping_sent_at: float | None = None
        self._last_serial = -1  # the client's last msgSerial
        self._replies: dict[int, dict[str, Any]] = {}  # msgSerial → its ACK or NACK, the last KEPT_REPLIES
        self._server_ids = itertools.count()  # for the ids of presence messages the server makes for the connection
        self._inbound = TokenBucket(MAX_INBOUND_RATE, self.last_activity)
        self._protocol_messages = TokenBucket(MAX_PROTOCOL_MESSAGE_RATE, self.last_activity)
        # A connection whose socket dropped without the client closing it is held for a resume
        # (docs/ably.md#connection-resume): since when (None while it has a socket), and whether its members are
        # still present. After a resume, its channels wait for the client's ATTACH, which names the last message it
        # received: what came after is sent from the app's DeliveryLog, not from a backlog of the connection's.
        self._held_at: float | None = None
        self._members_held = False
        self._presence_hold = presence_hold  # seconds: 15, or the client's remainPresentFor
        self._awaiting: set[str] = set()
        self._resumed_at: float | None = None
        # While held: what frees the place its dropped socket had under max_connections_per_address (the server's)
        self.address_place: Callable[[], None] | None = None

    @property
    def held(self) -> bool:
        """Whether the socket dropped and the connection waits to be resumed."""
        return self._held_at is not None

    @property
    def max_frame_size(self) -> int:
        """The largest WebSocket message the connection's socket takes (CONNECTED's ``maxFrameSize``)."""
        return self._max_frame_size

    @property
    def max_message_size(self) -> int:
        """CONNECTED's ``maxMessageSize``, the limit a publish or presence message is NACKed over (40009): Ably's
        64 KiB, or less when an app's ``max_message_bytes`` makes the socket's limit smaller (a message can never be
        larger than the frame carrying it)."""
        return min(MAX_MESSAGE_SIZE, self._max_frame_size)

    # -- lifecycle --------------------------------------------------------------------------------------------

    def open(self, resuming: bool) -> None:
        self.state.connect(self)
        self.app.connections[self.connection_key] = self
        connected = self._connected()
        if resuming:  # not one this node holds: a new connection, and the client re-attaches its channels (RTN15c7)
            connected["error"] = AblyError(80008, "Unable to recover connection: connection expired").body()
        self._send(connected)

    def resumable_by(self, credentials: Credentials, binary: bool) -> bool:
        """Whether a connection request with ``credentials`` may resume this connection: held, or open (the client
        gave up on its socket first), not closed or failed, with the same client id and wire format."""
        return (
            (self._held_at is not None or not self.closed)
            and credentials.client_id == self.credentials.client_id
            and binary == self.binary
        )

    def resume(
        self, link: ResumableLink, credentials: Credentials, *, echo: bool, presence_hold: float = PRESENCE_HOLD_SECONDS
    ) -> None:
        """Carry on over ``link`` (RTN15c6): the same connection id; each channel's re-attach then gets what it
        missed. A socket the connection still had (the client gave up on it first) is closed. ``presence_hold``: the
        new socket's remainPresentFor (the SDKs send their transport params on every connect), for its next drop."""
        if self._held_at is None:
            self._link.abandon("the connection was resumed on another socket")
        self._free_address_place()  # the socket it resumes on has its own
        now = self._clock()
        self._link, self.credentials, self.echo, self._presence_hold = link, credentials, echo, presence_hold
        self._renew_at_ms = renewal_time(credentials.expires_ms, self.app.wall_ms())
        self._held_at, self.closed, self.ping_sent_at = None, False, None
        self.last_activity = self.last_sent = self._resumed_at = now
        self._awaiting = {name for attachment in self.channels.values() for name in attachment.names}
        for name, attachment in self.channels.items():  # the new token's capability, before any re-attach (RTC8a1)
            for name_modes in attachment.names.values():
                name_modes.modes = _granted_modes(credentials, name, name_modes)
        self._send(self._connected())

    def connection_lost(self, link: ResumableLink | None = None) -> None:
        """The socket closed. A connection neither side closed (no CLOSE from the client, no ERROR or DISCONNECTED
        that ends it from the server) is held for a resume; any other is released (its members leave). ``link``: the
        socket that closed, ignored when the session has moved off it."""
        if self._released or self._held_at is not None or (link is not None and link is not self._link):
            return
        if self.closed:
            self.release()
        else:
            self._hold()

    def _hold(self) -> None:
        self._held_at, self.closed, self._members_held = self._clock(), True, True

    def release(self) -> None:
        """Let the connection go: its channels detach and its members leave."""
        if self._released:
            return
        self._released = self.closed = True
        self._held_at = None
        self._free_address_place()
        self.app.connections.pop(self.connection_key, None)
        for name in list(self.channels):
            self._release_channel(name)
        self.state.disconnect(self)

    def _free_address_place(self) -> None:
        place, self.address_place = self.address_place, None
        if place is not None:
            place()

    def _connected(self) -> dict[str, Any]:
        details: dict[str, Any] = {
            "connectionKey": self.connection_key,
            "maxMessageSize": self.max_message_size,
            "maxInboundRate": MAX_INBOUND_RATE,
            "maxOutboundRate": 50,
            "maxFrameSize": self._max_frame_size,
            "connectionStateTtl": CONNECTION_STATE_TTL_MS,
            "maxIdleInterval": int(self._heartbeat * 1000),
            "serverId": "relay-emulator",
            "siteCode": "local",
        }
        if self.credentials.client_id is not None:
            details["clientId"] = self.credentials.client_id
        return {
            "action": CONNECTED,
            "connectionId": self.socket_id,
            "connectionKey": self.connection_key,
            "connectionDetails": details,
        }

    def _release_channel(self, name: str) -> None:
        attachment = self.channels.pop(name)
        self.app.unwatch_occupancy(name, self.socket_id)
        self._awaiting.difference_update(attachment.names)
        self._leave(name, attachment)
        attachments = self.app.attachments.get(name, {})
        attachments.pop(self.socket_id, None)
        if not attachments:
            self.app.attachments.pop(name, None)
        self.state.unsubscribe(self, name, None)

    def _leave(self, name: str, attachment: Attachment) -> None:
        """The members the connection entered on ``name`` leave."""
        left = []
        for client_id in sorted(attachment.entered):
            record = self.app.leave(name, self.socket_id, client_id, self._next_id())
            if record is not None:
                left.append(record.item(LEAVE))
        attachment.entered.clear()
        self.app.broadcast_presence(name, self.socket_id, left)

    def _next_id(self) -> str:
        """An id for a presence message the server makes for this connection: newer than the client's messages so far
        and older than its next (RTP2b2 compares msgSerial, then index), whose serials it must not take."""
        return f"{self.socket_id}:{max(self._last_serial, 0)}:{1_000_000 + next(self._server_ids)}"

    def terminate(self, code: int, message: str) -> None:
        """The hub's or the server's close, with a Pusher close code: DISCONNECTED (the Ably client reconnects) for a
        code a Pusher client reconnects after (41xx, 42xx), else ERROR; a held connection is released."""
        if self._held_at is not None:
            self.release()
            return
        if self.closed:
            return
        if reconnect_strategy(code) in (Reconnect.BACKOFF, Reconnect.IMMEDIATELY):
            self._end(DISCONNECTED, AblyError(80003, message))
        else:
            self._end(ERROR, AblyError(80000, message))

    def frame_too_big(self, message: str | None = None) -> None:
        """The socket refused a WebSocket message over ``maxFrameSize`` (the server closes it with 1009), or in too
        many frames (``message`` says so): the connection fails with 40009 first. The frame was never read, so no NACK
        can name its msgSerial; and failing rather than DISCONNECTED keeps the SDK from reconnecting to send the same
        frame again (RTN19a)."""
        limit = self._max_frame_size
        message = message or f"Maximum message length exceeded: a WebSocket message over {limit} bytes"
        self._fail_unread(AblyError(40009, message, 413))

    def text_not_utf8(self) -> None:
        """A text message that is not UTF-8: the server closes the socket with 1007 (RFC 6455 §8.1) after this ERROR,
        as for a Pusher connection."""
        self._fail_unread(AblyError(80013, "Protocol error: a WebSocket text message that is not UTF-8"))

    def _fail_unread(self, error: AblyError) -> None:
        """ERROR for a message the server refused before reading it; the server closes the socket."""
        if self.closed:
            return
        self._send({"action": ERROR, "error": error.body()})
        self.closed = True

    def _end(self, action: int, error: AblyError) -> None:
        """DISCONNECTED (the client reconnects) or ERROR (the connection fails), then close the socket."""
        if self.closed:
            return
        self._send({"action": action, "error": error.body()})
        self.closed = True
        self._link.close(1000, error.message)

    def _drop_socket(self, error: AblyError | None) -> None:
        """DISCONNECTED (with ``error``, the server's reason; None when the client asked) and close the socket, the
        connection held for the client's resume from then on."""
        self._send({"action": DISCONNECTED} if error is None else {"action": DISCONNECTED, "error": error.body()})
        self._link.close(1000, "disconnected by the client" if error is None else error.message)
        self._hold()

    def check_liveness(self, now: float) -> None:
        """Heartbeats while quiet, a WebSocket ping after silence (closing when unanswered), and token expiry; for a
        held connection, its members' and its own time limits; for a resumed one, its channels' re-attach."""
        if self._held_at is not None:
            held_for = now - self._held_at
            if held_for * 1000 >= CONNECTION_STATE_TTL_MS:
                self.release()
            elif held_for >= self._presence_hold and self._members_held:
                self._members_held = False
                for name, attachment in self.channels.items():
                    self._leave(name, attachment)
            return
        if self.closed:
            return
        if self._awaiting and self._resumed_at is not None and now - self._resumed_at >= REATTACH_GRACE_SECONDS:
            for name in sorted(self._awaiting):  # the client did not want them back
                self._forget_name(name)
        expires = self.credentials.expires_ms
        if expires is not None:
            wall_ms = self.app.wall_ms()
            if wall_ms >= expires:  # the SDK fetches a token and resumes with it (RTN15h2)
                self._drop_socket(AblyError(40142, "Token expired"))
                return
            if self._renew_at_ms is not None and wall_ms >= self._renew_at_ms:
                self._renew_at_ms = None  # asked once per token: the client's AUTH brings the next one
                self._send({"action": AUTH})
        if self.ping_sent_at is not None and now - self.ping_sent_at > self.state.app.pong_timeout:
            # Gone without a word (its network, most likely): the socket closes and the connection is held for a
            # resume, not closed.
            self._drop_socket(AblyError(80003, "Disconnected: the client stopped answering pings"))
            return
        if now - self.last_sent >= self._heartbeat:
            self._send({"action": HEARTBEAT})
        if self.ping_sent_at is None and now - self.last_activity >= self._heartbeat:
            self.ping_sent_at = now
            self._link.write(PING_FRAME)

    def pong_received(self) -> None:
        """A WebSocket ping or pong: from the protocol messages' budget too, as websockets answers each ping (the SDKs
        send none; a flood of them kept a core busy answering)."""
        self.last_activity = now = self._clock()
        self.ping_sent_at = None
        self._within_rate(now, "WebSocket ping")

    def _within_rate(self, now: float, kind: str) -> bool:
        """Whether the connection is within MAX_PROTOCOL_MESSAGE_RATE; past it, closed with 42924."""
        if self._protocol_messages.take_if_available(now):
            return True
        if self.closed:
            return False
        rate = MAX_PROTOCOL_MESSAGE_RATE
        reason = f"Connection terminated for abuse (inbound {kind} rate exceeded {rate}/s)"
        self._end(ERROR, AblyError(42924, reason, 429))
        summary = f"over {rate} {kind}s a second: app {self.state.app.app_id}, connection {self.socket_id}"
        self._log_refusal(42924, summary, "/")
        return False

    # -- output -----------------------------------------------------------------------------------------------

    def send_frame(self, frame: bytes) -> None:
        """Write ``frame`` and meter it as written (compressed when the connection negotiated permessage-deflate):
        every frame of the session but a delivery's, which its ForeignTally counts (_send_as)."""
        if self._write(frame):
            state = self.state
            state.meter.fanout(len(frame), 1, state.deflate_saved(frame, (self.socket_id,)))

    def _write(self, frame: bytes) -> bool:
        """Write ``frame`` unless the connection is closed; whether it was written."""
        if self.closed:
            return False
        self.last_sent = self._clock()
        self._link.write(frame)
        return True

    def send_meta(self, channel: str, outbound: Outbound) -> None:
        """An occupancy event for an attachment that asked for them, under the name that asked (not kept for a resume:
        the next change sends the counts again)."""
        attachment = self.channels.get(channel)
        if attachment is None or (shown := attachment.occupancy_name) is None:
            return
        if "channelSerial" not in outbound.fields and attachment.points:  # a channel nothing was sent on yet
            outbound = Outbound({**outbound.fields, "channelSerial": next(reversed(attachment.points))})
        if self._held_at is None and shown not in self._awaiting:  # under the name that asked, not the others
            self.send_frame(outbound.frame_as(shown, self.binary))

    def _send_as(self, attachment: Attachment, outbound: Outbound, wanted: int, cache: dict[object, object]) -> None:
        """``outbound`` under each name the client attached its channel with whose modes include ``wanted``, unless
        the connection is held or that name waits for its re-attach: the re-attach gets what it missed from the app's
        DeliveryLog. The frames are counted in the delivery's ForeignTally (``cache``'s), for the hub to meter once."""
        if self._held_at is not None:
            return
        for name, name_modes in attachment.names.items():
            if name_modes.modes & wanted and name not in self._awaiting:
                frame = outbound.frame_as(name, self.binary)
                if self._write(frame):
                    ForeignTally.of(cache, self.state.compressing).wrote(frame, self.socket_id)

    def send_text(self, text: str) -> None:
        """Pusher protocol text is never sent to an Ably connection (the hub only sends it to signed-in users)."""

    def _send(self, message: Mapping[str, Any]) -> None:
        self.send_frame(ws_frame(message, self.binary))

    def _error_for(self, channel: str, error: AblyError) -> None:
        """A channel ERROR: that channel fails, the connection stays."""
        self._send({"action": ERROR, "channel": channel, "error": error.body()})

    # -- what the hub delivers --------------------------------------------------------------------------------

    def deliver_foreign(
        self, channel: str, frame: bytes, origin: object, exclude: str | None, cache: dict[object, object]
    ) -> None:
        attachment = self.channels.get(channel)
        if attachment is None:
            return
        if isinstance(origin, Outbound):
            outbound: Outbound | None = origin
        elif origin is None:  # Pusher's own protocol events, or a Pusher publish from a node of an earlier release
            if "ably" not in cache:
                cache["ably"] = self.app.from_pusher(channel, frame, exclude)
            outbound = cache["ably"]  # type: ignore[assignment]
        else:
            return
        if outbound is None:
            return
        if "logged" not in cache:  # once per delivery, whoever receives it
            cache["logged"] = True
            size = len(outbound.frame(self.binary))
            self.app.deliveries.record(channel, outbound, size, self.app.next_serial(), self.app.wall_ms())
        # sent_to, inline (per subscriber; the modes are each name's, in _send_as): echo=false by the message's
        # connectionId too, since a publish "as" this connection sent to another node (REST with its connectionKey)
        # cannot name it as the one to leave out
        if self.echo or outbound.presence or outbound.fields.get("connectionId") != self.socket_id:
            wanted = MODE_PRESENCE_SUBSCRIBE if outbound.presence else MODE_SUBSCRIBE
            self._send_as(attachment, outbound, wanted, cache)

    # -- input ------------------------------------------------------------------------------------------------

    def receive(self, payload: bytes, *, binary: bool) -> None:
        self.last_activity = now = self._clock()
        self.ping_sent_at = None
        if not self._within_rate(now, "protocol message"):  # before the frame is decoded: a flood costs little
            return
        try:
            message = decode_body(payload, binary, "the protocol message")
        except AblyError as exc:
            self._end(ERROR, AblyError(80013, f"Protocol error: {exc.message}"))
            return
        action = message.get("action") if isinstance(message, dict) else None
        if isinstance(action, bool) or not isinstance(action, int):
            self._end(ERROR, AblyError(80013, "Protocol error: a ProtocolMessage is an object with a numeric action"))
            return
        try:
            self._dispatch(action, message)
        except AblyError as exc:
            self._end(ERROR, exc)
        except Exception:  # a bug must cost this connection only
            log.exception("Ably protocol message failed", extra={"action": action})
            self._end(ERROR, AblyError(50000, "Internal error"))

    def _dispatch(self, action: int, message: dict[str, Any]) -> None:
        if action == HEARTBEAT:
            reply: dict[str, Any] = {"action": HEARTBEAT}
            if isinstance(message.get("id"), str):
                reply["id"] = message["id"]
            self._send(reply)
        elif action == ATTACH:
            self._attach(message)
        elif action == DETACH:
            self._detach(message)
        elif action in (MESSAGE, PRESENCE):
            self._acknowledged(action, message)
        elif action == CLOSE:
            self._send({"action": CLOSED})
            self.closed = True
            self._link.close(1000, "closed by the client")
        elif action == DISCONNECT:  # the client gives up on this socket, not on the connection (ably-js's idle timer)
            self._drop_socket(None)
        elif action == AUTH:
            self._reauthorize(message)
        elif is_msg_serial(message.get("msgSerial")):  # OBJECT, ANNOTATION, …: refused, the connection stays
            error = AblyError(40000, f"Action {action} is not supported by the emulator")
            self._send({"action": NACK, "msgSerial": message["msgSerial"], "count": 1, "error": error.body()})

    def _attach(self, message: Mapping[str, Any]) -> None:
        raw = message.get("channel")
        try:
            request = self._attach_request(raw, message)
        except AblyError as exc:
            if not isinstance(raw, str):  # no channel to fail: the ERROR fails the connection (§D.4), so it ends
                raise
            self._forget_name(raw)  # that channel fails: nothing more is delivered to it
            self._error_for(raw, exc)
            return
        shown, name, modes = request.shown, request.name, request.modes
        attachment = self._attachment_of(name)
        rewound, truncated, missed = self._take_name(attachment, request, message.get("channelSerial"))
        members = self.app.members(name) if modes & MODE_PRESENCE_SUBSCRIBE else []
        flags = modes | (RESUMED if missed is not None else 0) | (HAS_PRESENCE if members else 0)
        replay = [
            outbound
            for delivered in missed or ()
            if self._was_sent(delivered.outbound, modes) and (outbound := replayed(delivered.outbound)) is not None
        ]
        attached = self._attached(shown, flags | (HAS_BACKLOG if rewound else 0), attachment, keep_serial=bool(replay))
        if replay:  # the client's serial stays its last message's until the missed ones move it on
            attached["channelSerial"] = message["channelSerial"]
        params = request.params
        if request.rewind is not None or request.occupancy is not None or "modes" in params:  # shown: channel.params
            attached["params"] = {key: params[key] for key in APPLIED_PARAMS if key in params}
        if truncated:  # the attach succeeds; the cut is a non-fatal error, the state change's reason in ably-js
            most = MAX_REWIND_MESSAGES
            cut = f"Unable to recover channel (message limit exceeded): rewind sends the last {most} messages at most"
            attached["error"] = AblyError(90004, cut, 404).body()
        self._send(attached)
        self._send_backlog(shown, replay, members, rewound)
        if rewound:  # the client's serial is then the last rewound message's: it stands for the attach
            self._point(attachment, rewound[-1].fields["channelSerial"], attachment.made_at)
        self._follow_occupancy(request, attachment)

    def _attach_request(self, raw: object, message: Mapping[str, Any]) -> _AttachRequest:
        """What an ATTACH asks for, checked against the capability and the connection's limits (AblyError if not)."""
        name, params = self._channel_of(raw, message.get("params"))
        assert isinstance(raw, str)  # a name: _channel_of refused anything else
        modes = allowed_modes(self.credentials.capability, name)
        if not modes:
            raise AblyError(40160, f"Channel denied access based on given capability: {name[:100]!r}")
        try:
            requested = requested_modes(params, message.get("flags"))
        except ProtocolError as exc:
            raise AblyError.of(exc) from None
        attachment = self.channels.get(name)
        # Each name is a channel to the client (``room`` and ``[?rewind=1]room``), and is kept: all count
        if (attachment is None or raw not in attachment.names) and self._names() >= MAX_CHANNELS_PER_CONNECTION:
            limit = MAX_CHANNELS_PER_CONNECTION
            raise AblyError(90010, f"Maximum number of channels per connection ({limit}) exceeded")
        try:
            rewind, occupancy = channel_params(params)
        except ProtocolError as exc:
            raise AblyError.of(exc) from None
        if occupancy is not None and not allows(self.credentials.capability, name, "channel-metadata"):
            raise AblyError(40160, f"Occupancy events need the 'channel-metadata' capability on channel {name[:100]!r}")
        return _AttachRequest(raw, name, params, modes & requested, requested, rewind, occupancy)

    def _attachment_of(self, name: str) -> Attachment:
        """The connection's attachment to ``name``, made (and the connection subscribed to the channel) if new."""
        attachment = self.channels.get(name)
        if attachment is None:
            attachment = self.channels[name] = Attachment(made_at=self.app.last_serial)
            self.app.attachments.setdefault(name, {})[self.socket_id] = attachment
            channel = self.state.subscribe(self, name, None)
            self.state.subscription_count_changed(channel)  # Pusher's pusher:subscription_count, when enabled
        return attachment

    def _take_name(
        self, attachment: Attachment, request: _AttachRequest, channel_serial: object
    ) -> tuple[list[Kept], bool, list[Delivered] | None]:
        """The ATTACH's name with its modes in ``attachment``, and what it is sent besides ATTACHED: a new name's
        rewind (the messages, whether the limit cut it), or a resumed one's deliveries since ``channel_serial``."""
        shown, modes = request.shown, request.modes
        name_modes = attachment.names.get(shown)
        if name_modes is not None:  # a second ATTACH changes the name's modes
            name_modes.modes, name_modes.requested = modes, request.requested
            if shown not in self._awaiting:
                return [], False, None
            self._awaiting.discard(shown)  # a resumed connection's: what it missed since the serial it names
            return [], False, self.app.deliveries.since(request.name, channel_serial, attachment)
        attachment.names[shown] = NameModes(modes, request.requested)
        # Ably rewinds a first attachment only: an ATTACH with a channelSerial resumes (a reconnected ably-js sends
        # one), and a second ATTACH changes modes.
        if request.rewind is None or not modes & MODE_SUBSCRIBE or channel_serial:
            return [], False, None
        rewound, truncated = self.app.history.last(request.name, self.app.wall_ms(), request.rewind)
        self.state.meter.history_read(len(rewound))
        return rewound, truncated, None

    def _send_backlog(
        self, shown: str, replay: list[Outbound], members: list[dict[str, Any]], rewound: list[Kept]
    ) -> None:
        """What follows an ATTACHED: a resume's missed deliveries, then the presence set they led to (SYNC pages),
        then a rewind's messages."""
        for outbound in replay:
            self.send_frame(outbound.frame_as(shown, self.binary))
        if members:
            sync_id = f"{self.app.next_serial():x}"
            pages = sync_pages(members)
            for number, page in enumerate(pages, 1):
                cursor = "" if number == len(pages) else str(number)  # an empty cursor ends the sync (RTP18)
                sync = {"action": SYNC, "channel": shown, "channelSerial": f"{sync_id}:{cursor}", "presence": page}
                self._send(sync)
        for _, messages in groupby(rewound, lambda kept: id(kept.fields)):  # the messages of a publish go together
            group = list(messages)
            self._send({**group[0].fields, "channel": shown, "messages": [kept.item() for kept in group]})

    def _follow_occupancy(self, request: _AttachRequest, attachment: Attachment) -> None:
        """Occupancy events for the name whose ATTACH asks for them; an ATTACH of that name again without the
        param stops them."""
        if request.occupancy is not None and request.modes & MODE_SUBSCRIBE:  # the events are MESSAGEs: a subscriber's
            attachment.occupancy_name = request.shown
            self.app.watch_occupancy(request.name, self, request.occupancy)
        elif request.shown == attachment.occupancy_name:
            self._stop_occupancy(request.name, attachment)

    def _names(self) -> int:
        """The channel names the connection is attached by."""
        return sum(len(attachment.names) for attachment in self.channels.values())

    def _was_sent(self, outbound: Outbound, modes: int) -> bool:
        """Whether a name attached with ``modes`` was sent ``outbound`` (:func:`sent_to`), for a resume's replay."""
        own = outbound.fields.get("connectionId") == self.socket_id
        return sent_to(modes, presence=outbound.presence, own=own, echo=self.echo)

    def sends_own_messages(self, channel: str) -> bool:
        """Whether a message this connection publishes on ``channel`` is sent back to it (:func:`sent_to`), under
        one name or more: for the usage meter, which counts the echo once per publish, as a delivery to a
        connection (however many of its names it goes under) is counted once."""
        attachment = self.channels.get(channel)
        return attachment is not None and any(
            sent_to(name.modes, presence=False, own=True, echo=self.echo) for name in attachment.names.values()
        )

    def _attached(self, shown: str, flags: int, attachment: Attachment, *, keep_serial: bool = False) -> dict[str, Any]:
        # A channelSerial, as Ably sends, in the form messages carry (the app's newest serial: later messages have
        # greater ones): the SDKs keep it as the attachSerial, and ably-js's history({untilAttach: true}) sends it
        # back as from_serial, where history stops. A resuming client that received nothing since sends it back.
        serial = self.app.last_serial
        if not keep_serial:
            self._point(attachment, channel_serial(serial), serial)
        return {"action": ATTACHED, "channel": shown, "channelSerial": channel_serial(serial), "flags": flags}

    @staticmethod
    def _point(attachment: Attachment, channel_serial: str, position: int) -> None:
        points = attachment.points
        points.pop(channel_serial, None)
        points[channel_serial] = position
        if len(points) > KEPT_POINTS:
            del points[next(iter(points))]

    def _channel_of(self, raw: object, params: object = None) -> tuple[str, Mapping[str, Any]]:
        """The channel a ProtocolMessage names, and its ATTACH's params: a name qualified with params
        (``[?rewind=1]orders``) is that channel with those params (the ATTACH's own win); 40010 for a bad name (any
        metachannel but the lifecycle one, the only one emulated)."""
        if params is not None and not isinstance(params, dict):
            raise AblyError(40003, "ATTACH params must be an object of channel params")
        if raw == CHANNEL_LIFECYCLE:
            return CHANNEL_LIFECYCLE, params or {}
        name, qualifier_params = qualified_channel(raw)
        return name, {**qualifier_params, **(params or {})}

    def _forget_name(self, shown: str) -> None:
        """The client's channel named ``shown`` is no longer attached; the channel goes with its last name."""
        try:
            name, _ = self._channel_of(shown)
        except AblyError:
            return
        attachment = self.channels.get(name)
        if attachment is None or shown not in attachment.names:
            return
        del attachment.names[shown]
        self._awaiting.discard(shown)
        if shown == attachment.occupancy_name:
            self._stop_occupancy(name, attachment)
        if not attachment.names:
            self._release_channel(name)
        else:
            self._leave_unless_present(name, attachment)

    def _leave_unless_present(self, name: str, attachment: Attachment) -> None:
        """The members the connection entered on ``name`` leave once none of its names has PRESENCE left (a DETACH or
        a reauth took it): a PRESENCE to make them leave would be refused, and they would stay until the channel's
        last name went."""
        if attachment.entered and not attachment.modes & MODE_PRESENCE:
            self._leave(name, attachment)

    def _stop_occupancy(self, name: str, attachment: Attachment) -> None:
        attachment.occupancy_name = None
        self.app.unwatch_occupancy(name, self.socket_id)

    def _detach(self, message: Mapping[str, Any]) -> None:
        name = message.get("channel")
        if not isinstance(name, str):  # an ERROR without a channel fails the connection (§D.4): the socket closes
            raise AblyError(40010, "DETACH needs a channel name")
        self._forget_name(name)
        self._send({"action": DETACHED, "channel": name})

    def _acknowledged(self, action: int, message: Mapping[str, Any]) -> None:
        """MESSAGE or PRESENCE: answered with ACK, or NACK and the error (the connection stays)."""
        serial = message.get("msgSerial")
        if not is_msg_serial(serial):
            raise AblyError(80013, "Protocol error: MESSAGE and PRESENCE need a msgSerial from 0 to 2**63 - 1")
        replied = self._replies.get(serial) if self._resumed_at is not None and serial <= self._last_serial else None
        if replied is not None:  # a resumed client's resend of one whose ACK it lost (RTN19a2): not published twice
            self._send(replied)
            return
        self._last_serial = max(self._last_serial, serial)
        items = message.get("messages" if action == MESSAGE else "presence")
        count = len(items) if isinstance(items, list) and items else 1
        now = self._clock()
        try:
            try:
                check_message_count(count, "messages" if action == MESSAGE else "presence")
            except ProtocolError as exc:
                raise AblyError.of(exc) from None
            if self._inbound.retry_after(now, count) is not None:  # before anything else is read
                raise AblyError(
                    42911, "max per-connection publish rate limit exceeded (nonfatal): unable to publish message", 429
                )
            shown = message.get("channel")
            name, _ = self._channel_of(shown)
            assert isinstance(shown, str)  # a name: _channel_of refused anything else
            if is_metachannel(name):
                refused = "publish to" if action == MESSAGE else "use presence on"
                raise AblyError(40160, f"Unable to {refused} {name!r}: no capability permits that on a metachannel")
            if action == MESSAGE:
                serials = self._publish(name, shown, items)
                ack: dict[str, Any] = {"action": ACK, "msgSerial": serial, "count": 1, "res": [{"serials": serials}]}
            else:
                self._presence(name, shown, serial, items)
                ack = {"action": ACK, "msgSerial": serial, "count": 1}
        except AblyError as exc:
            self._reply(serial, {"action": NACK, "msgSerial": serial, "count": 1, "error": exc.body()})
            return
        # Only what was delivered counts, as for Pusher client events: a refused message reached no one.
        self._inbound.take(now, count)
        self._reply(serial, ack)

    def _reply(self, serial: int, reply: dict[str, Any]) -> None:
        replies = self._replies
        replies[serial] = reply
        if len(replies) > KEPT_REPLIES:
            del replies[next(iter(replies))]
        self._send(reply)

    def _name_modes(self, name: str, shown: str) -> NameModes | None:
        """The modes of the connection's channel ``shown`` (``name`` qualified as the client attached it), if
        attached."""
        attachment = self.channels.get(name)
        return None if attachment is None else attachment.names.get(shown)

    def _publish(self, name: str, shown: str, raw: object) -> list[str]:
        """A publish under ``shown``: its modes allow it if that name is attached (another name of the channel has
        modes of its own), else the capability (the SDKs publish on a channel they have not attached)."""
        attached = self._name_modes(name, shown)
        modes = attached.modes if attached is not None else allowed_modes(self.credentials.capability, name)
        if not modes & MODE_PUBLISH:
            self._refuse_mode(name, MODE_PUBLISH, f"Unable to publish to {name[:100]!r}")
        if not isinstance(raw, list) or not raw:
            raise AblyError(40000, "MESSAGE needs a non-empty messages array")
        messages = [parse_message(item, f"messages[{index}]") for index, item in enumerate(raw)]
        check_messages(messages, self.credentials, "messages", self.max_message_size)
        exclude = None if self.echo else self.socket_id
        _, serials = self.app.publish(name, messages, connection_id=self.socket_id, exclude=exclude, realtime=True)
        return serials

    def _presence(self, name: str, shown: str, serial: int, raw: object) -> None:
        attached = self._name_modes(name, shown)  # presence is the channel's, entered by one of its names
        if attached is None:
            raise AblyError(91001, f"Unable to enter presence: channel {shown[:100]!r} is not attached")
        if not attached.modes & MODE_PRESENCE:
            self._refuse_mode(name, MODE_PRESENCE, f"Unable to use presence on {name[:100]!r}")
        if not isinstance(raw, list) or not raw:
            raise AblyError(40000, "PRESENCE needs a non-empty presence array")
        checked = [self._presence_item(item, index) for index, item in enumerate(raw)]
        total = sum(len(client_id.encode()) + _data_size(data) for _, client_id, data, _ in checked)
        limit = self.max_message_size
        if total > limit:  # presence messages are messages: the same limit
            raise message_too_large("presence", total, limit)
        self.app.check_presence(name, self.socket_id, checked)  # all or nothing: nothing is applied when it raises
        attachment = self.channels[name]
        items = []
        for index, (action, client_id, data, encoding) in enumerate(checked):
            message_id = f"{self.socket_id}:{serial}:{index}"
            if action == LEAVE:
                record = self.app.leave(name, self.socket_id, client_id, message_id)
                attachment.entered.discard(client_id)
                if record is not None:
                    if data is not None:
                        record.data, record.encoding = data, encoding
                    items.append(record.item(LEAVE))
            else:
                record, broadcast = self.app.enter(name, self.socket_id, client_id, data, encoding, message_id)
                attachment.entered.add(client_id)
                items.append(record.item(broadcast))
        self.app.broadcast_presence(name, self.socket_id, items)

    def _refuse_mode(self, name: str, mode: int, refused: str) -> NoReturn:
        """An operation the channel's modes leave out: 40160 when the capability does not allow it, 40165 when it
        does but the client's ATTACH did not request the mode (Ably's "Channel mode not requested when attaching":
        attaching again with the mode fixes it, a wider capability would not)."""
        what = "PUBLISH" if mode == MODE_PUBLISH else "PRESENCE"
        if allowed_modes(self.credentials.capability, name) & mode:
            raise AblyError(40165, f"{refused}: the client did not request the {what} mode when attaching", 401)
        operation = "publish" if mode == MODE_PUBLISH else "presence"
        raise AblyError(40160, f"{refused}: not permitted by the capability (it needs {operation!r} on the channel)")

    def _presence_item(self, raw: object, index: int) -> tuple[int, str, str | bytes | None, str | None]:
        where = f"presence[{index}]"
        if not isinstance(raw, dict):
            raise AblyError(40000, f"{where}: a presence message is an object")
        action = raw.get("action")
        if type(action) is not int or action not in (ENTER, LEAVE, UPDATE, PRESENT):  # True == 1 == PRESENT
            raise AblyError(40000, f"{where}: action must be enter (2), leave (3) or update (4)")
        client_id = raw.get("clientId")
        if client_id is None:
            client_id = self.credentials.identified()
            if client_id is None:
                raise AblyError(91000, "Unable to enter presence channel (no clientId)")
        elif client_id == "":  # a client id is any non-empty string: "" entered as a member
            raise AblyError(40012, f"{where}: clientId can't be an empty string; omit it")
        elif not isinstance(client_id, str) or client_id == "*" or not self.credentials.may_use_client_id(client_id):
            raise AblyError(40012, f"{where}: clientId {client_id!r} is incompatible with the connection's client id")
        encoding = raw.get("encoding")
        if encoding is not None and not isinstance(encoding, str):
            raise AblyError(40013, f"{where}: encoding must be a string")
        data, encoding = decoded_data(raw.get("data"), encoding or None, where)
        return (ENTER if action == PRESENT else action), client_id, data, encoding

    def _reauthorize(self, message: Mapping[str, Any]) -> None:
        auth = message.get("auth")
        token = auth.get("accessToken") if isinstance(auth, dict) else None
        if not isinstance(token, str):
            raise AblyError(40101, "AUTH needs auth.accessToken")
        credentials = self.auth.token(token, now_ms=self.app.wall_ms())
        if credentials.key.key_name != self.credentials.key.key_name:
            # As Ably: a connection re-authenticates with its own key's tokens (another key, even of the same app,
            # means connecting again).
            raise AblyError(
                40102, "Incompatible credentials: the new token is signed with another key than the connection's"
            )
        if self.credentials.client_id is None and credentials.identified() is not None:
            # RSA15c: a reauth's credentials keep the connection's client id, none included (as resumable_by has it:
            # an anonymous connection that took one mid-connection would publish under it).
            raise AblyError(
                40102,
                f"Incompatible credentials: clientId {credentials.client_id!r} does not match the connection's (none)",
            )
        credentials = _with_client_id(credentials, self.credentials.client_id)
        self.credentials = credentials
        self._renew_at_ms = renewal_time(credentials.expires_ms, self.app.wall_ms())
        self._send(self._connected())
        # A new capability may widen each name's modes, or end them: the names whose modes changed are told so,
        # after the CONNECTED, and those it no longer allows fail (RTC8a1), the connection staying.
        changed, denied = self._regrant(credentials)
        for name, shown in changed:
            # RESUMED: the SDK takes the new modes (ably-js's channel.modes) and keeps its presence set and attach
            # serial, as the channel's continuity was never broken (RTL12).
            attachment = self.channels[name]
            modes = attachment.names[shown].modes
            present = modes & MODE_PRESENCE_SUBSCRIBE and self.app.members(name)
            if shown not in self._awaiting:  # its re-ATTACH is answered with the new modes, and what it missed
                self._send(self._attached(shown, modes | RESUMED | (HAS_PRESENCE if present else 0), attachment))
            self._leave_unless_present(name, attachment)
        for name, shown in denied:
            self._forget_name(shown)
            self._error_for(shown, AblyError(40160, f"Channel denied access based on given capability: {name[:100]!r}"))

    def _regrant(self, credentials: Credentials) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        """Each attached name's modes under a reauth's ``credentials``: the (channel, name) pairs whose modes changed,
        and those the capability no longer allows, nor their occupancy events (which need what their attach did)."""
        changed, denied = [], []
        for name, attachment in self.channels.items():
            for shown, name_modes in attachment.names.items():
                modes = _granted_modes(credentials, name, name_modes)
                watching = shown == attachment.occupancy_name
                if not modes or (watching and not allows(credentials.capability, name, "channel-metadata")):
                    denied.append((name, shown))
                elif modes != name_modes.modes:
                    changed.append((name, shown))
                    if watching and not modes & MODE_SUBSCRIBE:
                        self._stop_occupancy(name, attachment)
                name_modes.modes = modes
        return changed, denied


def _data_size(data: str | bytes | None) -> int:
    return len(data.encode() if isinstance(data, str) else data or b"")


def _with_client_id(credentials: Credentials, requested: str | None) -> Credentials:
    """The connection's client id: the token's, or the one requested with a key or a wildcard token (40102 when
    they conflict)."""
    if requested is None or requested == credentials.client_id:
        return credentials
    if credentials.basic or credentials.client_id == "*":
        if requested == "*":
            raise AblyError(40012, "Invalid clientId: '*' is not a client id")
        return replace(credentials, client_id=requested)
    raise AblyError(40102, f"Incompatible credentials: clientId {requested!r} does not match the token's client id")


def authenticate(auth: AblyAuth, query: Mapping[str, str], now_ms: int) -> Credentials:
    """The credentials of a realtime connection: ``key``, or ``access_token`` (ably-js) / ``accessToken``
    (ably-python), and an optional ``clientId``."""
    token = query.get("access_token") or query.get("accessToken")
    if query.get("key"):
        credentials = auth.api_key(query["key"])
    elif token:
        credentials = auth.token(token, now_ms=now_ms)
    else:
        raise AblyError(40101, "No key or token: connect with key=, access_token= or accessToken=")
    return _with_client_id(credentials, query.get("clientId") or None)


def connection_refusal(
    app: AblyApp, headers: Sequence[tuple[str, str]], *, draining: bool, counted: bool = False
) -> tuple[int, AblyError] | None:
    """Why a realtime connection that authenticated is still refused (the action to send and the error).
    ``counted``: it resumes a connection the quota counts already."""
    settings = app.state.app
    if not settings.enabled:
        return ERROR, AblyError(40120, "Application disabled")
    refused = settings.origin_refusal(headers)
    if refused is not None:
        return ERROR, AblyError(40300, refused)
    if draining:
        return DISCONNECTED, AblyError(80003, "Server is shutting down; reconnect")
    if not counted and app.state.over_connection_quota():
        return ERROR, AblyError(40111, f"Connection limit of {settings.max_connections} exceeded")
    return None
