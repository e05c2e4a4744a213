"""One client connection speaking Pusher protocol 7: the rules of ``relay.protocol`` applied to a live socket.

A session is synchronous and transport-agnostic: the server feeds it text frames and the passage of time, and it
writes frames to its :class:`Link`. That keeps it testable in process and cheap per message.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from relay.emulator.hub import AppState
from relay.emulator.usage import message_size, units_5kib
from relay.emulator.wire import PING_FRAME, encode_text
from relay.errors import LimitExceeded, PayloadTooLarge, ProtocolError, RelayError
from relay.protocol import frames
from relay.protocol.channels import (
    SERVER_TO_USER_PREFIX,
    ChannelKind,
    classify,
    is_cache_channel,
    is_client_event,
    validate_channel_name,
    validate_event_name,
)
from relay.protocol.codes import ErrorCode
from relay.protocol.members import Member, SignedInUser, parse_channel_data, parse_user_data
from relay.protocol.signing import token_key, verify_channel_auth, verify_user_auth

OVER_CAPACITY = "Over capacity: the client is not reading its messages"
# A frame takes one inbound token per this many characters begun: every frame a page sends in practice (subscribes,
# client events of a few KiB) takes one, while a 10 KiB client event takes three, well within the rate.
FRAME_TOKEN_BYTES = 4096


class Link(Protocol):
    """The WebSocket under a session."""

    def write(self, frame: bytes) -> None: ...

    def close(self, code: int, reason: str) -> None: ...


class _Admission:
    """A presence join of a user not yet a member on this node, waiting for the cluster to admit it within the
    channel's member limit (:meth:`relay.emulator.hub.ClusterLink.admit_member`): until the answer, nothing of it is
    sent, to the connection or anyone else, and the connection is not subscribed (publishes do not reach it)."""

    __slots__ = ("member", "name", "session")

    def __init__(self, session: Session, name: str, member: Member) -> None:
        self.session = session
        self.name = name
        self.member = member

    def waiting(self) -> bool:
        return not self.session.closed and self.session._admitting.get(self.name) is self

    def decide(self, admitted: bool | None) -> bool:
        return self.session._admission_decided(self, admitted)

    def held(self) -> bool:
        return self.session.state.is_local_member(self.name, self.member.user_id)


class Session:
    __slots__ = (
        "_admitting",
        "_authorized",
        "_clock",
        "_flood_reported_at",
        "_frame_tokens",
        "_link",
        "_oldest_recent",
        "_recent_client_events",
        "_released",
        "_tokens_at",
        "closed",
        "last_activity",
        "opened_at",
        "ping_sent_at",
        "socket_id",
        "state",
        "subscriptions",
        "user",
        "user_id",
    )

    def __init__(self, state: AppState, socket_id: str, link: Link, clock: Callable[[], float]) -> None:
        self.state = state
        self.socket_id = socket_id
        self._link = link
        self._clock = clock
        self.user: SignedInUser | None = None
        self.user_id: str | None = None
        self.subscriptions: dict[str, str | None] = {}
        self._admitting: dict[str, _Admission] = {}  # presence joins waiting for the cluster's answer, by channel
        self.closed = False
        self._released = False
        self.opened_at = self.last_activity = clock()
        self.ping_sent_at: float | None = None
        # Signed in or subscribed to a private or presence channel once: hosted Pusher's "authorized connection",
        # which stays authorized when it leaves the channel (user_authentication_timeout no longer applies).
        self._authorized = False
        # When the last client_events_per_second client events were relayed (a ring, oldest at _oldest_recent),
        # made on the first client event.
        self._recent_client_events: list[float] | None = None
        self._oldest_recent = 0
        self._frame_tokens = float(state.app.limits.inbound_frame_burst)
        self._tokens_at = self.opened_at
        self._flood_reported_at = float("-inf")

    # -- lifecycle --------------------------------------------------------------------------------------------

    def open(self) -> None:
        self.state.connect(self)
        self.send_text(frames.connection_established(self.socket_id, self.state.app.activity_timeout))

    def connection_lost(self) -> None:
        """Release everything the connection held, whoever closed it."""
        if self._released:
            return
        self._released = self.closed = True
        for name, member_id in list(self.subscriptions.items()):
            self.state.unsubscribe(self, name, member_id)
        self.subscriptions.clear()
        self._admitting.clear()  # an admission answered later is undone (see RedisCluster.admit_member)
        if self.user is not None:
            self.state.sign_out(self, self.user.user_id, self.user.watchlist)
        self.state.disconnect(self)

    def terminate(self, code: int, message: str) -> None:
        """Send a fatal ``pusher:error``, close with the same code and release what the connection held: it is
        over, whether or not the client ever reads the close frame (one that stopped reading, cut off with 4100, or
        terminated with 4009, would otherwise stay a presence member, subscribed and online for CLOSE_TIMEOUT)."""
        if self.closed:
            return
        self.send_text(frames.error(code, message))  # metered, as every frame written is
        self.closed = True
        self._link.close(code, message)
        self.state.meter.refused("error", self.socket_id, None, code, message)
        self.connection_lost()

    def check_liveness(self, now: float) -> None:
        """Ping after ``activity_timeout`` of silence; close 4201 when the ping goes unanswered."""
        app = self.state.app
        if self.ping_sent_at is not None:
            if now - self.ping_sent_at > app.pong_timeout:
                self.terminate(ErrorCode.PONG_NOT_RECEIVED, "Pong reply not received")
        elif now - self.last_activity > app.activity_timeout:
            self.ping_sent_at = now
            # Both pings, either answer will do. The WebSocket ping is hosted Pusher's for RFC 6455 clients: a browser
            # answers it itself, so a tab whose script is busy or paused (a long task, alert(), a breakpoint) stays
            # connected, and some SDKs answer only it (a Flutter one: reverb#224). pusher:ping is the protocol's own.
            self._link.write(PING_FRAME)
            self.send_text(frames.ping())
        if (
            app.user_authentication_timeout is not None
            and now - self.opened_at > app.user_authentication_timeout
            and not self._authorized
            and not self._admitting  # a join whose auth passed, waiting for the cluster: decided when it answers
        ):
            self.terminate(ErrorCode.UNAUTHORIZED, "Connection is unauthorized: sign in or subscribe in time")

    # -- output -----------------------------------------------------------------------------------------------

    def send_frame(self, frame: bytes) -> None:
        # A client that stops reading is cut off by its connection (HttpConnection.pause_writing), not checked here:
        # this runs once per subscriber per publish.
        if not self.closed:
            self._link.write(frame)

    def send_text(self, text: str) -> None:
        frame = encode_text(text)
        self.send_frame(frame)
        self.state.meter.fanout(len(frame), 1, self.state.deflate_saved(frame, (self.socket_id,)))  # as written

    def _error(self, message: str, code: int | None = None, channel: str | None = None) -> None:
        self.send_text(frames.error(code, message))
        self.state.meter.refused("error", self.socket_id, channel, code, message)

    def _refuse_over_member_limit(self, channel: str) -> None:
        limit = self.state.app.limits.max_presence_members
        self._refuse_subscription(channel, "LimitReached", f"presence limit of {limit} reached", 4100)

    def _refuse_subscription(self, channel: str, kind: str, message: str, status: int) -> None:
        self.send_text(frames.subscription_error(channel, kind, message, status))
        self.state.meter.refused("subscription_error", self.socket_id, channel, status, message)

    # -- input ------------------------------------------------------------------------------------------------

    def heard(self) -> float:
        """Any frame from the client is activity and answers a pending ping (protocol §1.5); returns the time."""
        now = self.last_activity = self._clock()
        self.ping_sent_at = None
        return now

    def receive(self, text: str | bytes) -> None:
        now = self.heard()
        if not self._take_frame_token(now, len(text)):
            return
        try:
            frame = frames.decode_client_frame(text, self.state.client_frame_limit)
            event = frame.event
            if event == frames.PING:
                self.send_text(frames.pong())
            elif event == frames.PONG:
                pass
            elif event == frames.SUBSCRIBE:
                self._subscribe(frames.data_object(frame))
            elif event == frames.UNSUBSCRIBE:
                self._unsubscribe(frames.data_object(frame))
            elif event == frames.SIGNIN:
                self._signin(frames.data_object(frame))
            elif is_client_event(event):
                self._client_event(frame, now)
            else:
                self._error(f"Unsupported event {event[:64]!r}")
        except RelayError as exc:
            self._error(exc.message)

    def receive_binary(self) -> None:
        """A binary message: refused, as the protocol is JSON text, but from the same frame budget as text (a flood of
        them is dropped like one of text frames, not answered one by one)."""
        if self._take_frame_token(self.heard(), 0):
            self._error("Binary frames are not supported: send JSON in text frames")

    def _take_frame_token(self, now: float, size: int) -> bool:
        """A token bucket on inbound frames: bursts (a page subscribing to many channels) pass, floods are dropped.
        A frame takes a token per FRAME_TOKEN_BYTES begun: the parse limit admits frames of hundreds of KiB (a full
        sign-in escaped), whose parsing costs in proportion, so a flood of large frames costs what one of small ones
        does."""
        limits = self.state.app.limits
        tokens = self._frame_tokens + (now - self._tokens_at) * limits.inbound_frames_per_second
        self._tokens_at = now
        cost = (
            1.0 if size <= FRAME_TOKEN_BYTES else min(float(size // FRAME_TOKEN_BYTES + 1), limits.inbound_frame_burst)
        )
        if tokens >= cost:
            self._frame_tokens = min(tokens, limits.inbound_frame_burst) - cost
            return True
        self._frame_tokens = tokens
        if now - self._flood_reported_at >= 1.0:
            self._flood_reported_at = now
            rate = limits.inbound_frames_per_second
            self._error(f"Too many messages: frames beyond {rate}/s are dropped", ErrorCode.CLIENT_EVENT_REJECTED)
        return False

    def flood_wait(self) -> float:
        """How long to stop reading this connection: none while its frame budget lasts; once spent (a flood), until a
        tenth of a second's frames are back, so that a flooding client is read ten times a second at most (a piece of
        READ_TURN_BYTES each time: a few milliseconds of parsing) and what it sends meanwhile waits in the kernel,
        slowing its sends, instead of being parsed only to be dropped."""
        if self._frame_tokens >= 1.0:
            return 0.0
        rate = self.state.app.limits.inbound_frames_per_second
        return (rate / 10 - self._frame_tokens) / rate

    def pong_received(self) -> None:
        """A WebSocket ping or pong from the client: from the frame budget too, as websockets answers each ping."""
        self._take_frame_token(self.heard(), 0)

    def _subscribe(self, data: dict[str, object]) -> None:
        name = self._channel_named(frames.SUBSCRIBE, data)
        if name is None:
            return
        app = self.state.app
        try:
            validate_channel_name(name, app.limits)
        except ProtocolError as exc:
            # Echoed verbatim (the frame size limit bounds it) so the client can route the error.
            self._refuse_subscription(name, "InvalidChannel", exc.message, 400)
            return
        if name in self.subscriptions or name in self._admitting:
            # Hosted Pusher's answer (pusher-js#45): the subscription stays as it is and the duplicate's auth grants
            # nothing (a cache channel's replay or a presence member list is not sent again either).
            self._error(f"Existing subscription to channel {name}")
            return
        if len(self.subscriptions) + len(self._admitting) >= app.limits.max_subscriptions_per_connection:
            limit = app.limits.max_subscriptions_per_connection
            message = f"this connection already has {limit} subscriptions, the limit"
            self._refuse_subscription(name, "LimitReached", message, 4100)
            return
        kind = classify(name)
        member: Member | None = None
        try:
            if kind is ChannelKind.SERVER_TO_USER:
                if self.user_id is None or name != SERVER_TO_USER_PREFIX + self.user_id:
                    self._refuse_subscription(name, "AuthError", "only the signed-in user may subscribe", 403)
                    return
            elif kind is ChannelKind.PRESENCE:
                member = self._presence_member(name, data)
            elif kind.needs_auth:
                auth = data.get("auth")
                # The server libraries sign channel_data into a private channel's auth when the app passes user data
                # (pusher-http-node's authorizeChannel, pusher-http-python's authenticate), and pusher-js then sends it.
                channel_data = data.get("channel_data")
                signed_data = channel_data if isinstance(channel_data, str) else None
                verify_channel_auth(*app.key_pair(token_key(auth)), self.socket_id, name, auth, signed_data)
        except (LimitExceeded, PayloadTooLarge) as exc:
            self._refuse_subscription(name, "LimitReached", exc.message, 4100)
            return
        except RelayError as exc:
            status = exc.http_status or 401
            self._refuse_subscription(name, "AuthError", exc.message, status)
            return
        if member is not None:
            if self.state.would_exceed_members(name, member.user_id):
                self._refuse_over_member_limit(name)
                return
            if not self.state.is_local_member(name, member.user_id):
                # In a cluster, users joining at once on other nodes may fill the limit: Redis admits the user
                # first (one round trip), and the subscription goes on, or is refused, when it answers.
                admission = _Admission(self, name, member)
                if self.state.admit_member(name, member, admission):
                    self._admitting[name] = admission
                    return
        self._join(name, kind, member)

    def _admission_decided(self, admission: _Admission, admitted: bool | None) -> bool:
        """The cluster's answer to a presence join (see :class:`_Admission`): the subscription goes on as on a single
        node, or is refused with a single node's refusal; None: the cluster could not answer, and this node's own
        check decides. Returns whether the user is a member here afterwards."""
        name, member = admission.name, admission.member
        if not admission.waiting():  # closed or unsubscribed meanwhile
            return admission.held()
        del self._admitting[name]
        if self.state.is_local_member(name, member.user_id):  # another connection of the user joined meanwhile
            admitted = True
        elif admitted is None:
            admitted = not self.state.would_exceed_members(name, member.user_id)
        if not admitted:
            self._refuse_over_member_limit(name)
            return False
        self._join(name, ChannelKind.PRESENCE, member)
        return True

    def _join(self, name: str, kind: ChannelKind, member: Member | None) -> None:
        """Subscribe, once every check passed."""
        self.subscriptions[name] = None if member is None else member.user_id
        if kind.needs_auth:
            self._authorized = True
        if kind is ChannelKind.SERVER_TO_USER:
            self._subscription_succeeded(name)
            return
        channel = self.state.subscribe(self, name, member)
        self._subscription_succeeded(name)
        if is_cache_channel(name):
            cached = self.state.cached(name)
            if cached is None:
                self.send_text(frames.cache_miss(name))
                self.state.cache_missed(name)
            else:
                self.send_text(frames.channel_event(cached[0], name, cached[1]))
        self.state.subscription_count_changed(channel)

    def _presence_member(self, name: str, data: dict[str, object]) -> Member:
        app = self.state.app
        channel_data, auth = data.get("channel_data"), data.get("auth")
        signer = app.key_pair(token_key(auth))
        if channel_data is None and self.user is not None:
            verify_channel_auth(*signer, self.socket_id, name, auth)
            return Member(self.user.user_id, self.user.user_info_json)
        if not isinstance(channel_data, str):
            raise ProtocolError("presence subscriptions need channel_data (a JSON string)", http_status=401)
        verify_channel_auth(*signer, self.socket_id, name, auth, channel_data)
        return parse_channel_data(channel_data, app.limits)

    def _subscription_succeeded(self, name: str) -> None:
        if classify(name) is ChannelKind.PRESENCE:
            self.send_text(frames.subscription_succeeded(name, frames.presence_data(self.state.presence_hash(name))))
        else:
            self.send_text(frames.subscription_succeeded(name))

    def _unsubscribe(self, data: dict[str, object]) -> None:
        name = self._channel_named(frames.UNSUBSCRIBE, data)
        if name is None:
            return
        if name in self.subscriptions:
            member_id = self.subscriptions.pop(name)
            self.state.unsubscribe(self, name, member_id)
        else:  # a channel not subscribed is ignored (protocol §36); one not joined yet has its admission undone
            self._admitting.pop(name, None)

    def _channel_named(self, event: str, data: dict[str, object]) -> str | None:
        """The frame's channel, or None after a code-null pusher:error saying what is wrong with it: no channel a
        subscription_error could name (pusher-js would file it under "None" or "123"), and an unsubscribe that names
        none is a client bug worth seeing rather than a silent no-op."""
        name = data.get("channel")
        if isinstance(name, str):
            return name
        problem = "has no channel" if name is None else "has a channel that is not a string"
        self._error(f"{event} {problem}")
        return None

    def _signin(self, data: dict[str, object]) -> None:
        app = self.state.app
        user_data = data.get("user_data")
        try:
            if not isinstance(user_data, str):
                raise ProtocolError("signin needs user_data (a JSON string)")
            auth = data.get("auth")
            verify_user_auth(*app.key_pair(token_key(auth)), self.socket_id, user_data, auth)
            user, truncated = parse_user_data(user_data, app.limits)
        except RelayError as exc:
            self.terminate(ErrorCode.UNAUTHORIZED, f"Signin failed: {exc.message.removeprefix('signin: ')}")
            return
        if self.user is not None:
            if self.user.user_id != user.user_id:
                self.terminate(ErrorCode.UNAUTHORIZED, "Signin failed: already signed in as another user")
            else:  # answered, so a client awaiting the answer goes on; it stays signed in as it was (same watchlist)
                self.send_text(frames.signin_success(user_data))
            return
        self.user, self.user_id = user, user.user_id
        self._authorized = True
        self.send_text(frames.signin_success(user_data))
        if truncated:
            self._error(
                f"Watchlist limit exceeded: only the first {app.limits.max_watchlist} ids are watched",
                ErrorCode.WATCHLIST_LIMIT,
            )
        self.state.sign_in(self, user.user_id, user.watchlist)

    def _client_event(self, frame: frames.ClientFrame, now: float) -> None:
        """A client event: relayed to the channel's other subscribers, or refused with a pusher:error (a frame over the
        size limit ends the connection, as the protocol's other frames do)."""
        name = frame.channel
        refusal = self._client_event_refusal(name, now)
        if refusal is not None:
            message, code = refusal
            self._error(message, code, name)
            return
        assert name is not None  # refused above otherwise
        limits = self.state.app.limits
        validate_event_name(frame.event, limits)
        data = frames.client_event_data(frame.data)
        size = frames.utf8_length(data)
        if size > limits.max_event_bytes:
            raise PayloadTooLarge(f"client event data is over {limits.max_event_bytes} bytes")
        self._count_client_event(now)
        self._relay_client_event(name, frame.event, data, size)

    def _client_event_refusal(self, name: str | None, now: float) -> tuple[str, int | None] | None:
        """Why a client event on ``name`` is refused, and the error code, before its content is read; None when the
        app, the channel and the rate limit allow it."""
        app = self.state.app
        if not app.client_events:
            return "Client events are not enabled for this app", ErrorCode.CLIENT_EVENT_REJECTED
        if name is None:
            return "Client event rejected: it names no channel (send it on a channel this connection is on)", None
        if name not in self.subscriptions:
            return f"Client event rejected: not subscribed to {name!r}", None
        if not classify(name).allows_client_events:
            return "Client events are only allowed on private and presence channels", None
        # No one-second span relays more than the limit: the limit-th latest relayed event must be a second old.
        # Only relayed events count: a refused one reaches no one (and the frame budget bounds what refusals cost).
        limit = app.limits.client_events_per_second
        recent = self._recent_client_events
        if recent is not None and now - recent[self._oldest_recent] < 1.0:
            return f"Client event rejected due to rate limit ({limit}/s)", ErrorCode.CLIENT_EVENT_REJECTED
        return None

    def _count_client_event(self, now: float) -> None:
        """A client event is relayed at ``now``: it takes the oldest place of the rate limit's ring."""
        recent = self._recent_client_events
        if recent is None:
            recent = self._recent_client_events = [float("-inf")] * self.state.app.limits.client_events_per_second
        recent[self._oldest_recent] = now
        self._oldest_recent = (self._oldest_recent + 1) % len(recent)

    def _relay_client_event(self, name: str, event: str, data: str, size: int) -> None:
        """To the channel's other subscribers on every node, metered, and to the app's client_event webhook."""
        user_id = self.subscriptions[name]
        channel = self.state.channels[name]
        text = frames.channel_event(event, name, data, user_id)
        ably_size = message_size(event, size, user_id)
        # Ably's message for it (its serial, kept in history) is built once, for its Ably subscribers on every node
        # and an Ably-format webhook's item alike (its id, its encoding).
        ably, origin, ably_messages = self.state.foreign_presence, None, None
        if ably is not None:
            origin = ably.pusher_published(name, event, data, user_id, self.socket_id)
            if self.state.webhooks.wants("client_event", ably=True):
                ably_messages = ably.webhook_messages(origin)
        self.state.relay_client_event(channel, text, self.socket_id, units_5kib(ably_size), origin)
        others = len(channel.subscribers) - 1
        self.state.meter.client_event(name, event, data, self.socket_id, user_id, others, ably_size)
        webhook: dict[str, object] = {
            "name": "client_event",
            "channel": name,
            "event": event,
            "data": data,
            "socket_id": self.socket_id,
        }
        if user_id is not None:
            webhook["user_id"] = user_id
        if ably_messages is not None:
            webhook["messages"] = ably_messages
        self.state.client_event_webhook(webhook, user_id)
