"""Per-app state of one emulator node: channels and their local subscribers, presence, cache, signed-in users.

The hub owns fan-out: a publish is encoded into one WebSocket frame and the same bytes are written to every local
subscriber. With several nodes (``relay.emulator.cluster``) each node also holds a replica of what the other nodes
hold (:class:`RemoteState`): presence, subscription counts and signed-in users are answered cluster-wide from it, and
each node tells its own subscribers about cluster-wide transitions (a user's first connection anywhere, their last).
Occupancy and membership transitions drive webhooks; with a cluster, the cluster decides which node sends them.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from relay.emulator.config import App
from relay.emulator.idempotency import PublishedKeys
from relay.emulator.usage import AppMeter, local_reach, message_size, recipients
from relay.emulator.webhooks import WebhookDispatcher
from relay.emulator.wire import deflated, encode_text
from relay.protocol import frames
from relay.protocol.ably import is_metachannel
from relay.protocol.channels import SERVER_TO_USER_PREFIX, ChannelKind, classify, is_cache_channel
from relay.protocol.codes import ErrorCode
from relay.protocol.members import Member

if TYPE_CHECKING:
    from relay.emulator.http_api import Response

SUBSCRIPTION_COUNT_BURST = 100
SUBSCRIPTION_COUNT_INTERVAL = 5.0
# A crowd subscribing to an empty cache channel (a page going live) brings one cache_miss webhook, not one each, as
# hosted Pusher dedupes it; a publish that fills the cache re-arms it at once.
CACHE_MISS_INTERVAL = 10.0
# Expired cache channels a publish to a cache channel drops at most: more than it adds, and no pause for a backlog
CACHE_EXPIRY_STEP = 64
# A cache channel's event's version, (milliseconds, node id): of two nodes' events for one channel the greater is kept,
# on every node and in Redis, whatever order their writes arrive in (the node id breaks a tie).
CacheVersion = tuple[int, int]


class Peer(Protocol):
    """A connected client as the hub sees it."""

    socket_id: str
    user_id: str | None

    def send_frame(self, frame: bytes) -> None: ...

    def send_text(self, text: str) -> None: ...

    def terminate(self, code: int, message: str) -> None: ...


class ForeignTally:
    """What the ForeignPeers of one delivery wrote: frames, and their bytes as written (compressed where the
    connection negotiated permessage-deflate), metered once the delivery is done, not once per recipient."""

    __slots__ = ("compressing", "frames", "written")

    def __init__(self, compressing: dict[str, int]) -> None:
        self.compressing = compressing
        self.frames = 0
        self.written = 0

    @staticmethod
    def of(cache: dict[object, object], compressing: dict[str, int]) -> ForeignTally:
        """The tally of the delivery ``cache`` belongs to (made by its first recipient that writes)."""
        tally = cache.get(ForeignTally)
        if not isinstance(tally, ForeignTally):
            tally = cache[ForeignTally] = ForeignTally(compressing)
        return tally

    @staticmethod
    def meter(cache: dict[object, object], meter: AppMeter) -> None:
        """Meters what the delivery ``cache`` belongs to wrote to ForeignPeers, if anything."""
        tally = cache.get(ForeignTally)
        if isinstance(tally, ForeignTally):
            meter.written(tally.frames, tally.written)

    def wrote(self, frame: bytes, socket_id: str) -> None:
        self.frames += 1
        window = self.compressing.get(socket_id) if self.compressing else None
        self.written += len(frame) if window is None else len(deflated(frame, window))


class ForeignPeer:
    """Base of peers speaking another protocol (Ably, ``relay.emulator.ably_realtime``) on the same channels.

    The hub hands such a peer what it delivers instead of writing Pusher frame bytes to it: the Pusher frame and the
    ``origin`` the publisher passed (``None`` for a Pusher publish). ``cache`` is shared by the recipients of one
    delivery, so each encoding is built once. The peer counts the frames it writes in the delivery's
    :class:`ForeignTally` (they differ from the Pusher frame, and it may write none), which the hub meters once the
    delivery is done, so the hub's fan-out counts and deflate windows leave it out.
    """

    __slots__ = ()

    def deliver_foreign(
        self, channel: str, frame: bytes, origin: object, exclude: str | None, cache: dict[object, object]
    ) -> None:
        raise NotImplementedError

    def sends_own_messages(self, channel: str) -> bool:
        """Whether this connection is sent back what it publishes on ``channel`` (Ably's echo)."""
        raise NotImplementedError


class ClusterLink(Protocol):
    """What a node tells the others about one app; ``None`` on a single node."""

    def published(
        self,
        app_id: str,
        channel: str,
        frame_text: str,
        exclude: str | None,
        units: int,
        *,
        client_event: bool = False,
        origin: object = None,
    ) -> None:
        """A publish (or client event) whose data is ``units`` 5 KiB units, for the other nodes' subscribers; its
        ``origin`` (:meth:`ForeignPresence.pusher_published`) goes with it, for their other protocol's peers."""

    def published_ably(
        self,
        app_id: str,
        channel: str,
        frame_texts: list[str],
        exclude: str | None,
        ably_fields: dict[str, Any],
        units: list[int],
        *,
        client_event: bool = False,
    ) -> None:
        """An Ably publish: one Pusher event per message (``units``: the 5 KiB units of each one's data) and the
        ProtocolMessage the other nodes' Ably peers get (``client_event``: a Pusher client event's)."""

    def channel_occupied(self, app_id: str, channel: str) -> None: ...

    def channel_vacated(self, app_id: str, channel: str) -> None: ...

    def subscription_count(self, app_id: str, channel: str, local_count: int) -> None: ...

    def connection_count(self, app_id: str, local_count: int) -> None:
        """This node's connections to an app with a connection quota, which the quota counts on every node."""

    def member_joined(self, app_id: str, channel: str, user_id: str, user_info_json: str) -> None:
        """A user's first connection on this node joined ``channel``'s presence: announced to the other nodes, and
        counted in Redis (again if its admission, :meth:`admit_member`, counted it: that changes nothing)."""

    def admit_member(
        self, app_id: str, channel: str, user_id: str, user_info_json: str, admission: MemberAdmission
    ) -> bool:
        """Ask the cluster to admit a user who is not a member of ``channel`` on this node, within the app's member
        limit across every node (one atomic check in Redis, which counts the user if admitted); the answer goes to
        ``admission``. False: the cluster cannot ask now (Redis is away), and the node decides alone."""

    def member_left(self, app_id: str, channel: str, user_id: str) -> None: ...

    def user_online(self, app_id: str, user_id: str, online: bool) -> None: ...

    def terminate_user(self, app_id: str, user_id: str) -> bool:
        """Tell the other nodes to close ``user_id``'s connections; False if they cannot be told (Redis is away)."""

    def cache_set(
        self, app_id: str, channel: str, event: str, data: str, ttl: float, version: CacheVersion
    ) -> None: ...

    def cache_missed(self, app_id: str, channel: str) -> None: ...

    def after_channel_counted(
        self, app_id: str, event: dict[str, object], member: str | None = None, *, held: bool = True
    ) -> None:
        """Send ``event``, of a channel this node holds, once the cluster has counted this node's hold of it (and
        ``member``'s presence in it); of one it does not hold (``held`` false), behind what waits for it."""

    def ably_presence(self, app_id: str, channel: str, fields: dict[str, Any]) -> None: ...

    def ably_published(
        self, app_id: str, channel: str, ids: tuple[str, ...], message_id: str, serials: list[str]
    ) -> None: ...

    def publish_remembered(self, app_id: str, identity: bytes, digest: bytes, answer: bytes) -> None:
        """A publish under an idempotency key (``identity``, its body's ``digest``, its answer's body), for the
        other nodes to answer its resends."""


class MemberAdmission(Protocol):
    """A presence join waiting for the cluster's answer (:meth:`ClusterLink.admit_member`): nothing of it is visible
    until then, to the joining connection or anyone else."""

    def waiting(self) -> bool:
        """Whether the connection still waits for the answer (it has not closed nor unsubscribed meanwhile)."""

    def decide(self, admitted: bool | None) -> bool:
        """The answer: admitted (and counted), refused (nothing counted), or None when the cluster could not answer
        (Redis went away, or lost its data: the node decides alone, as during an outage). Returns whether the user is
        a member on this node afterwards (when not, an admission that counted the user is undone)."""

    def held(self) -> bool:
        """Whether the user is a member on this node now, through any connection (for an answer that came after the
        admission's deadline, when the node had decided alone)."""


class ForeignPresence(Protocol):
    """Presence members another protocol keeps for an app (Ably's, ``relay.emulator.ably_hub``), which the cluster
    replicates like Pusher members: a node's members go with its snapshot and leave when the node is gone."""

    def held(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """This node's members, Pusher connections' on presence channels included: (channel, wire item)."""

    def remote_presence(self, node: int, channel: str, fields: dict[str, Any]) -> None:
        """A node's presence message: its members' changes, sent on to this node's subscribers."""

    def remote_snapshot(self, node: int, held: dict[tuple[str, str, str], dict[str, Any]]) -> None:
        """Everything ``node`` holds, by (channel, connection id, client id); differences are sent on."""

    def forget_node(self, node: int) -> None: ...

    def pusher_member(self, channel: Channel, socket_id: str, user_id: str, user_info_json: str, entered: bool) -> None:
        """A Pusher connection joined or left ``channel``'s presence (to the other protocol, a member of its own)."""

    def published_elsewhere(self, channel: str, fields: dict[str, Any]) -> None:
        """Another node's publish through the other protocol (its ProtocolMessage), for that protocol's history."""

    def published_elsewhere_before(
        self, channel: str, ids: tuple[str, ...], message_id: str, serials: list[str], ms_left: int
    ) -> None:
        """Another node's idempotent publish this node did not hear of, read from Redis (``ms_left`` of its window
        to run), for its retries here."""

    def pusher_published(self, channel: str, event: str, data: str, user_id: str | None, exclude: str | None) -> object:
        """A Pusher publish or client event in the other protocol, built once (and kept in its history): the
        ``origin`` to :meth:`AppState.deliver` it with, here and (:meth:`ClusterLink.published`) on other nodes."""

    def webhook_messages(self, origin: object) -> list[dict[str, Any]]:
        """The messages of a :meth:`pusher_published` origin for that protocol's webhooks (the ids its subscribers
        get)."""


@dataclass(slots=True)
class PresenceEntry:
    user_info_json: str
    connections: int


@dataclass(slots=True)
class Channel:
    name: str
    kind: ChannelKind
    subscribers: dict[str, Peer] = field(default_factory=dict)
    members: dict[str, PresenceEntry] = field(default_factory=dict)
    count_sent_at: float = float("-inf")
    count_pending: bool = False
    foreign: int = 0  # subscribers that are ForeignPeers: while 0, delivery is the all-Pusher fast path
    # Subscribers the hub writes its frames to (not ForeignPeers) whose connections compress (permessage-deflate),
    # counted by deflate window: a fan-out meters the bytes it wrote with one look at the compressed frame per window,
    # not one per subscriber.
    deflate_windows: dict[int, int] = field(default_factory=dict)
    _peers: tuple[Peer, ...] | None = field(default=None, init=False, repr=False)

    def add(self, peer: Peer) -> None:
        self.subscribers[peer.socket_id] = peer
        self._peers = None

    def remove(self, socket_id: str) -> Peer | None:
        self._peers = None
        return self.subscribers.pop(socket_id, None)

    def peers(self) -> tuple[Peer, ...]:
        """The subscribers, copied once per change of membership rather than once per delivery (a delivery may
        unsubscribe a slow consumer, so it cannot iterate the dict itself)."""
        peers = self._peers
        if peers is None:
            peers = self._peers = tuple(self.subscribers.values())
        return peers


@dataclass(slots=True)
class RemoteState:
    """What the other nodes hold, as they announced it."""

    subscriptions: dict[str, dict[int, int]] = field(default_factory=dict)
    members: dict[str, dict[str, dict[int, str]]] = field(default_factory=dict)
    users: dict[str, set[int]] = field(default_factory=dict)
    connections: dict[int, int] = field(default_factory=dict)  # node → its connections (apps with a quota)

    def subscription_count(self, channel: str) -> int:
        return sum(self.subscriptions.get(channel, {}).values())

    def member_info(self, channel: str, user_id: str) -> str | None:
        nodes = self.members.get(channel, {}).get(user_id)
        return next(iter(nodes.values())) if nodes else None

    def nodes(self) -> set[int]:
        found = {node for counts in self.subscriptions.values() for node in counts}
        found.update(node for users in self.members.values() for nodes in users.values() for node in nodes)
        found.update(node for nodes in self.users.values() for node in nodes)
        found.update(self.connections)
        return found


@dataclass(slots=True)
class AppHolding:
    """What one node holds of one app, as its snapshot (``nodestate`` in Redis) tells the others."""

    subscriptions: dict[str, int] = field(default_factory=dict)  # channel → the node's subscribers
    members: dict[tuple[str, str], str] = field(default_factory=dict)  # (channel, user id) → user_info JSON
    users: set[str] = field(default_factory=set)  # signed-in user ids
    connections: int = 0  # announced only for an app with a connection quota
    # Ably members: (channel, connection id, client id) → their PRESENT item.
    ably_members: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)


class AppState:
    def __init__(
        self,
        app: App,
        webhooks: WebhookDispatcher,
        clock: Callable[[], float],
        cluster: ClusterLink | None = None,
        *,
        node_id: int = 0,
        wall_clock: Callable[[], float] | None = None,
        meter: AppMeter | None = None,
    ) -> None:
        self.app = app
        self.webhooks = webhooks
        self.clock = clock
        self.cluster = cluster
        self.node_id = node_id
        # What cache versions are stamped with: the nodes of a cluster compare each other's, so it is the wall clock
        # there; a single node compares only its own, and its clock does.
        self.wall_clock = clock if wall_clock is None else wall_clock
        self.remote = RemoteState()
        self.foreign_presence: ForeignPresence | None = None
        self.peers: dict[str, Peer] = {}
        # socket id → deflate window of each connection that negotiated permessage-deflate (set by the server before
        # the session opens): its frames go out compressed, and the meter counts what is written.
        self.compressing: dict[str, int] = {}
        self.channels: dict[str, Channel] = {}
        self.users: dict[str, dict[str, Peer]] = {}
        self.watchers: dict[str, set[Peer]] = {}
        # Each cache channel's last event (event, data, expiry, version), in the order they expire (an app has one
        # TTL): kept past its TTL only until the next publish drops it, so channels published once do not stay for the
        # life of the process
        self.cache: OrderedDict[str, tuple[str, str, float, CacheVersion]] = OrderedDict()
        self.cache_missed_at: dict[str, float] = {}
        self.cache_missed_prune_at = 1024
        # Usage and metrics: the node's sees the webhooks too (their dispatcher, made first, reports to it)
        self.meter = AppMeter(app.app_id) if meter is None else meter
        # The answers to the HTTP API's publishes with an idempotency_key, replayed to their resends: this node's, and
        # in a cluster the other nodes'
        self.published_keys: PublishedKeys[Response] = PublishedKeys(
            clock, share=None if cluster is None else self._share_published
        )
        self.client_frame_limit = frames.client_frame_limit(app.limits)
        # In a cluster: this node's subscribers of each channel as its last announcement of them came back over the
        # bus, and when each channel's subscription_count webhook was last sent and which wait to be (see
        # subscription_count_echoed)
        self._echoed_counts: dict[str, int] = {}
        self._count_webhook_sent_at: dict[str, float] = {}
        self._count_webhooks_pending: set[str] = set()

    def _share_published(self, identity: bytes, digest: bytes, answer: Response) -> None:
        assert self.cluster is not None  # shared only by the state of a cluster's node
        self.cluster.publish_remembered(self.app.app_id, identity, digest, answer.body)

    # -- connections ------------------------------------------------------------------------------------------

    def connect(self, peer: Peer) -> None:
        self.peers[peer.socket_id] = peer
        self.meter.connected(peer.socket_id)
        self._connections_changed()

    def disconnect(self, peer: Peer) -> None:
        if self.peers.pop(peer.socket_id, None) is not None:
            self._connections_changed()
        self.compressing.pop(peer.socket_id, None)
        self.meter.disconnected(peer.socket_id)

    def _connections_changed(self) -> None:
        """The other nodes count this node's connections against a quota (only an app with one announces them)."""
        if self.cluster is not None and self.app.max_connections is not None:
            self.cluster.connection_count(self.app.app_id, len(self.peers))

    def over_connection_quota(self) -> bool:
        """Whether the app's connections on every node (as the others last announced theirs) reach its quota."""
        limit = self.app.max_connections
        return limit is not None and len(self.peers) + sum(self.remote.connections.values()) >= limit

    def remote_connection_count(self, node: int, count: int) -> None:
        if count > 0:
            self.remote.connections[node] = count
        else:
            self.remote.connections.pop(node, None)

    # -- cluster-wide views -----------------------------------------------------------------------------------

    def channel_names(self) -> Iterator[str]:
        """Occupied channels on any node."""
        yield from self.channels
        yield from (name for name in self.remote.subscriptions if name not in self.channels)

    def subscription_count(self, name: str) -> int:
        channel = self.channels.get(name)
        return (0 if channel is None else len(channel.subscribers)) + self.remote.subscription_count(name)

    def subscription_counts(self, names: Iterable[str]) -> list[int]:
        """:meth:`subscription_count` of each of ``names``, without a call per name (a listing asks for 100,000)."""
        local, remote = self.channels, self.remote.subscriptions
        return [
            (0 if (channel := local.get(name)) is None else len(channel.subscribers))
            + (sum(nodes.values()) if (nodes := remote.get(name)) else 0)
            for name in names
        ]

    def presence_members(self, name: str) -> Iterator[tuple[str, str]]:
        """(user id, encoded user_info) of every member on any node, once each: this node's first, with their info
        here; a member only on other nodes with the info of one of them."""
        channel = self.channels.get(name)
        local = {} if channel is None else channel.members
        for user_id, entry in local.items():
            yield user_id, entry.user_info_json
        for user_id, nodes in self.remote.members.get(name, {}).items():
            if nodes and user_id not in local:
                yield user_id, next(iter(nodes.values()))

    def presence_hash(self, name: str) -> dict[str, str]:
        """user id → encoded user_info of every member on any node."""
        return dict(self.presence_members(name))

    def _is_member(self, name: str, user_id: str) -> bool:
        channel = self.channels.get(name)
        return (channel is not None and user_id in channel.members) or bool(
            self.remote.members.get(name, {}).get(user_id)
        )

    def is_local_member(self, name: str, user_id: str) -> bool:
        """Whether ``user_id`` is a member of ``name``'s presence through a connection to this node."""
        channel = self.channels.get(name)
        return channel is not None and user_id in channel.members

    def admit_member(self, name: str, member: Member, admission: MemberAdmission) -> bool:
        """In a cluster, ask Redis to admit ``member`` to ``name``'s presence within the member limit of every node
        (see :meth:`ClusterLink.admit_member`); False when there is nothing to ask (a single node, Redis away)."""
        if self.cluster is None:
            return False
        app_id = self.app.app_id
        return bool(self.cluster.admit_member(app_id, name, member.user_id, member.user_info_json, admission))

    def would_exceed_members(self, name: str, user_id: str) -> bool:
        if self._is_member(name, user_id):
            return False
        return len(self.presence_hash(name)) >= self.app.limits.max_presence_members

    def is_online(self, user_id: str) -> bool:
        return user_id in self.users or bool(self.remote.users.get(user_id))

    # -- subscriptions ----------------------------------------------------------------------------------------

    def subscribe(self, peer: Peer, name: str, member: Member | None) -> Channel:
        channel = self.channels.get(name)
        if channel is None:
            channel = self.channels[name] = Channel(name, classify(name))
            if not is_metachannel(name):  # a metachannel is Ably's, not one of the app's: it opens unannounced
                self._announce_opened(name)
        channel.add(peer)
        self.meter.subscribed(name, peer.socket_id, len(channel.subscribers), member.user_id if member else None)
        if isinstance(peer, ForeignPeer):
            channel.foreign += 1
            return channel
        window = self.compressing.get(peer.socket_id)
        if window is not None:
            channel.deflate_windows[window] = channel.deflate_windows.get(window, 0) + 1
        if member is not None:
            if self.foreign_presence is not None:
                info = self.member_info(channel, member)
                self.foreign_presence.pusher_member(channel, peer.socket_id, member.user_id, info, entered=True)
            self.join_member(channel, peer.socket_id, member)
        return channel

    def _announce_opened(self, name: str) -> None:
        """The channel_occupied webhook of a channel getting its first subscriber here (in a cluster, once Redis has
        counted it, by the node whose count opens it; on one node, none when its held channel_vacated is cancelled)."""
        if self.cluster is not None:
            self.cluster.channel_occupied(self.app.app_id, name)
        elif not self.webhooks.cancel_delayed(("vacated", name)):
            self.webhooks.emit({"name": "channel_occupied", "channel": name})

    def member_info(self, channel: Channel, member: Member) -> str:
        """The info ``member`` has in ``channel``: a user's is its first connection's, as in Pusher (this node's, else
        another node's), its own only when it is the first."""
        entry = channel.members.get(member.user_id)
        if entry is not None:
            return entry.user_info_json
        elsewhere = self.remote.member_info(channel.name, member.user_id)
        return member.user_info_json if elsewhere is None else elsewhere

    def join_member(self, channel: Channel, socket_id: str, member: Member) -> None:
        """A subscribed connection joins the channel's presence: ``member_added`` on the user's first connection."""
        name = channel.name
        entry = channel.members.get(member.user_id)
        if entry is not None:
            entry.connections += 1
            return
        elsewhere = self.remote.member_info(name, member.user_id)  # the user's first connection is another node's
        user_info_json = member.user_info_json if elsewhere is None else elsewhere
        channel.members[member.user_id] = PresenceEntry(user_info_json, 1)
        if elsewhere is None:
            added = encode_text(frames.member_added(name, member.user_id, user_info_json))
            self.deliver(channel, added, exclude=socket_id)
            self.meter.member_event(name, member.user_id, added=True, reached=len(channel.subscribers) - 1)
            remote = self.remote.members.get(name, {})
            held = sum(1 for user_id, nodes in remote.items() if nodes and user_id not in channel.members)
            self.meter.presence_held(len(channel.members) + held)
        if self.cluster is not None:
            self.cluster.member_joined(self.app.app_id, name, member.user_id, user_info_json)
        elif not self.webhooks.cancel_delayed(("member_removed", name, member.user_id)):
            self.webhooks.emit({"name": "member_added", "channel": name, "user_id": member.user_id})

    def unsubscribe(self, peer: Peer, name: str, member_id: str | None) -> None:
        channel = self.channels.get(name)
        if channel is None or channel.remove(peer.socket_id) is None:
            return
        self.meter.unsubscribed(name, peer.socket_id, len(channel.subscribers))
        if isinstance(peer, ForeignPeer):
            channel.foreign -= 1
        else:
            window = self.compressing.get(peer.socket_id)
            if window is not None:
                left = channel.deflate_windows.pop(window) - 1
                if left:
                    channel.deflate_windows[window] = left
            if member_id is not None:
                if self.foreign_presence is not None:
                    info = channel.members[member_id].user_info_json
                    self.foreign_presence.pusher_member(channel, peer.socket_id, member_id, info, entered=False)
                self.leave_member(channel, member_id)
        if channel.subscribers:
            self.subscription_count_changed(channel)
            return
        del self.channels[name]
        if is_metachannel(name):  # closes unannounced, as it opened; the other nodes still learn it has nobody here
            if self.cluster is not None:
                self.cluster.subscription_count(self.app.app_id, name, 0)
            return
        if self.cluster is not None:
            self.cluster.channel_vacated(self.app.app_id, name)
        else:
            self.webhooks.emit_delayed(("vacated", name), {"name": "channel_vacated", "channel": name})

    def leave_member(self, channel: Channel, user_id: str) -> None:
        """A connection leaves the channel's presence: ``member_removed`` when it was the user's last."""
        name = channel.name
        entry = channel.members[user_id]
        entry.connections -= 1
        if entry.connections:
            return
        del channel.members[user_id]
        if self.remote.member_info(name, user_id) is None:
            self.deliver(channel, encode_text(frames.member_removed(name, user_id)))
            self.meter.member_event(name, user_id, added=False, reached=len(channel.subscribers))
        if self.cluster is not None:
            self.cluster.member_left(self.app.app_id, name, user_id)
        else:
            event = {"name": "member_removed", "channel": name, "user_id": user_id}
            self.webhooks.emit_delayed(("member_removed", name, user_id), event)

    def client_event_webhook(self, event: dict[str, object], user_id: str | None) -> None:
        """A client event's webhook (``user_id``: its sender's, on a presence channel), after its channel's
        channel_occupied and its sender's member_added, which a cluster node sends once Redis has counted them."""
        if self.cluster is None or not self.webhooks.enabled:
            self.webhooks.emit(event)
        else:
            self.cluster.after_channel_counted(self.app.app_id, event, user_id)

    def ably_item_webhook(self, event: dict[str, object]) -> None:
        """An Ably-format webhook's presence or message item, after its channel's channel.opened, which a cluster node
        sends once Redis has counted the channel, and which a publish or presence enter sent with its ATTACH, or a
        Pusher member's join, would otherwise pass."""
        if self.cluster is None:
            self.webhooks.emit(event)
        else:
            # A channel this node does not hold (a REST publish), or a metachannel, which is never counted, has no
            # count coming to wait for
            name = str(event["channel"])
            held = name in self.channels and not is_metachannel(name)
            self.cluster.after_channel_counted(self.app.app_id, event, held=held)

    def subscription_count_changed(self, channel: Channel) -> None:
        """Tell a channel's subscribers their number (after a new subscriber has its subscription_succeeded)."""
        if self.cluster is not None:
            self.cluster.subscription_count(self.app.app_id, channel.name, len(channel.subscribers))
        if self._counts_subscriptions(channel.name):
            self._throttle_subscription_count(channel)

    def _counts_subscriptions(self, name: str) -> bool:
        """Whether the channel's subscribers are told their number, and the subscription_count webhook sent: on an
        app counting them, for a channel that is not a presence one (Pusher's rule) nor Ably's metachannel, which is
        no channel of the app's."""
        return self.app.subscription_count and classify(name) is not ChannelKind.PRESENCE and not is_metachannel(name)

    def _throttle_subscription_count(self, channel: Channel) -> None:
        """Send the channel's count now, or, past SUBSCRIPTION_COUNT_BURST subscribers, at most once per
        SUBSCRIPTION_COUNT_INTERVAL: a crowd joining a big channel brings one count per interval, not one each."""
        if channel.count_pending:
            return
        wait = self._count_wait(channel.count_sent_at, self.subscription_count(channel.name))
        if wait <= 0:
            self._send_subscription_count(channel)
        else:
            channel.count_pending = True
            asyncio.get_running_loop().call_later(wait, self._send_subscription_count, channel)

    def _send_subscription_count(self, channel: Channel) -> None:
        channel.count_pending = False
        if self.channels.get(channel.name) is not channel:
            return
        channel.count_sent_at = self.clock()
        count = self.subscription_count(channel.name)
        self.deliver(channel, encode_text(frames.subscription_count(channel.name, count)))
        if self.cluster is None:  # a cluster node sends the webhook when its change comes back over the bus
            self.webhooks.emit({"name": "subscription_count", "channel": channel.name, "subscription_count": count})

    def subscription_count_echoed(self, name: str, count: int) -> None:
        """This node's announcement that it holds ``count`` of ``name``'s subscribers came back over Redis's bus.
        Every announcement Redis took before it, from any node, has come too, so its count and the others' make the
        cluster's total at that change's place in Redis's order: the change's subscription_count webhook carries
        that, and the last one sent has the final total however the changes of several nodes crossed. (Counted
        when the change was made, a node that had not yet heard of another's change sent a total without it.)"""
        echoed = self._echoed_counts
        if echoed.get(name, 0) == count:
            return  # announced again (after a failed round trip), not changed
        if count:
            echoed[name] = count
        else:
            del echoed[name]
        if self._counts_subscriptions(name):
            self._throttle_count_webhook(name)

    def unechoed_subscription_counts(self) -> dict[str, int]:
        """This node's subscribers of each channel whose count the bus has not echoed back as it is now (its
        announcements lost with the node's bus subscription)."""
        echoed = self._echoed_counts
        counts = {name: len(channel.subscribers) for name, channel in self.channels.items()}
        counts.update({name: 0 for name in echoed if name not in counts})
        return {name: count for name, count in counts.items() if echoed.get(name, 0) != count}

    def _throttle_count_webhook(self, name: str) -> None:
        """As :meth:`_throttle_subscription_count`, for a cluster node's webhook."""
        if name in self._count_webhooks_pending:
            return
        wait = self._count_wait(self._count_webhook_sent_at.get(name, float("-inf")), self._echoed_total(name))
        if wait <= 0:
            self._send_count_webhook(name)
        else:
            self._count_webhooks_pending.add(name)
            asyncio.get_running_loop().call_later(wait, self._send_count_webhook, name)

    def _count_wait(self, sent_at: float, count: int) -> float:
        """Seconds before a count (the subscribers' frame, or a cluster node's webhook) may be sent: none up to
        SUBSCRIPTION_COUNT_BURST subscribers, else SUBSCRIPTION_COUNT_INTERVAL after the last one sent."""
        if count <= SUBSCRIPTION_COUNT_BURST:
            return 0.0
        return sent_at + SUBSCRIPTION_COUNT_INTERVAL - self.clock()

    def _echoed_total(self, name: str) -> int:
        return self._echoed_counts.get(name, 0) + self.remote.subscription_count(name)

    def _send_count_webhook(self, name: str) -> None:
        self._count_webhooks_pending.discard(name)
        count = self._echoed_total(name)
        if name in self._echoed_counts:
            self._count_webhook_sent_at[name] = self.clock()
        else:  # this node holds none of its subscribers, and may never hear of the channel again: kept, it would leak
            self._count_webhook_sent_at.pop(name, None)
        if count <= 0:  # vacated on every node: channel_vacated says so
            return
        event: dict[str, object] = {"name": "subscription_count", "channel": name, "subscription_count": count}
        if self.cluster is not None and name in self.channels:
            # The echo can come before Redis's answer to the count that opens the channel, and its channel_occupied
            self.cluster.after_channel_counted(self.app.app_id, event)
        else:
            self.webhooks.emit(event)

    def _send_count_left_elsewhere(self, name: str) -> None:
        """A dead node's subscribers of a channel, counted out here: the channel is vacated only when no node has
        one left, so the count the others keep is this change's webhook. Their nodes send their subscribers that
        count, but not the webhook: the change was not theirs."""
        count = self.subscription_count(name)
        if count > 0 and self._counts_subscriptions(name):
            self.webhooks.emit({"name": "subscription_count", "channel": name, "subscription_count": count})

    # -- publishing -------------------------------------------------------------------------------------------

    def publish(self, name: str, event: str, data: str, exclude: str | None = None) -> None:
        """A server publish (the HTTP API's, or the console's): cached on cache channels, fanned out here as one
        shared frame, and to other nodes."""
        if is_cache_channel(name):
            self.cache_published(name, event, data)
        text = frames.channel_event(event, name, data)
        origin = None
        if self.foreign_presence is not None and not name.startswith(SERVER_TO_USER_PREFIX):  # no Ably channel
            origin = self.foreign_presence.pusher_published(name, event, data, None, exclude)
        reached = self.deliver_local(name, encode_text(text), exclude, origin)
        # Counted after the writes, which nothing here changes the reach of: the first subscriber hears sooner.
        size = message_size(event, frames.utf8_length(data))
        units = self.meter.published(name, event, data, reached, size)
        if self.cluster is not None:
            self.cluster.published(self.app.app_id, name, text, exclude, units, origin=origin)

    def relay_client_event(self, channel: Channel, text: str, sender: str, units: int, origin: object = None) -> None:
        """A client event's frame ``text``, whose data is ``units`` 5 KiB units, to everyone else in ``channel``
        (``origin``: as :meth:`deliver`'s)."""
        self.deliver(channel, encode_text(text), sender, origin)
        if self.cluster is not None:
            self.cluster.published(self.app.app_id, channel.name, text, sender, units, client_event=True, origin=origin)

    def deliver_remote(
        self,
        name: str,
        frame: bytes,
        exclude: str | None,
        units: int,
        *,
        client_event: bool,
        origin: object = None,
        publisher: str | None = None,
    ) -> None:
        """Another node's publish (or client event), for this node's subscribers: they are this node's deliveries
        to meter (the publish itself is metered on the node it was made on). ``publisher``: the connection id an Ably
        publish carries, whose echo is metered apart (:meth:`publisher_reach`)."""
        self.deliver_local(name, frame, exclude, origin)
        counted, echoes = self.publisher_reach(name, publisher, exclude)
        reached = local_reach(self, name, exclude) - counted
        self.meter.relayed(units, reached, client_event=client_event, echoes=echoes, metachannel=is_metachannel(name))

    def publisher_reach(self, name: str, publisher: str | None, exclude: str | None) -> tuple[int, int]:
        """For a publish by the Ably connection ``publisher`` (None: by no connection), once per publish: whether
        :func:`local_reach` counted that connection, one of this node's subscribers of ``name`` not excluded (1 or
        0), and whether it is sent the message back (1 or 0): Ably's echo, which Ably bills as a delivery of its own,
        and no other provider does. Not with echo=false, nor to an attachment that does not subscribe: counted, such
        a connection is sent nothing."""
        if publisher is None or publisher == exclude:
            return 0, 0
        channel = self.channels.get(name)
        peer = None if channel is None else channel.subscribers.get(publisher)
        if not isinstance(peer, ForeignPeer):  # not here, or a Pusher socket (sent it as any subscriber)
            return 0, 0
        return 1, int(peer.sends_own_messages(name))

    def deliver_local(self, name: str, frame: bytes, exclude: str | None, origin: object = None) -> int:
        """Write ``frame`` to this node's connections on ``name`` and meter it; returns :func:`local_reach`'s answer
        after the writes."""
        if name.startswith(SERVER_TO_USER_PREFIX):
            connections = list(self.users.get(name[len(SERVER_TO_USER_PREFIX) :], {}).items())
            for socket_id, peer in connections:
                if socket_id != exclude:
                    peer.send_frame(frame)
            saved = self.deflate_saved(frame, (socket_id for socket_id, _ in connections if socket_id != exclude))
            reached = local_reach(self, name, exclude)
            self.meter.fanout(len(frame), reached, saved)
            return reached
        channel = self.channels.get(name)
        if channel is None:
            return 0
        return self.deliver(channel, frame, exclude, origin)

    def deliver(self, channel: Channel, frame: bytes, exclude: str | None = None, origin: object = None) -> int:
        """Write ``frame`` to every subscriber but ``exclude`` and meter it; ForeignPeers get ``origin`` to encode
        (and meter) their own. Returns the subscribers but ``exclude`` after the writes, ForeignPeers included (what
        :func:`local_reach` counts)."""
        skip = channel.subscribers.get(exclude) if exclude is not None else None
        if channel.foreign:
            self._deliver_mixed(channel, frame, skip, exclude, origin)
            if isinstance(skip, ForeignPeer):
                skip = None  # not one the hub writes to: the counts below leave it out already
            reached = len(channel.subscribers) - channel.foreign - (skip is not None)
            local = recipients(channel.subscribers, exclude)
        else:
            for peer in channel.peers():
                if peer is not skip:
                    peer.send_frame(frame)
            reached = local = recipients(channel.subscribers, exclude)
        saved = 0
        if channel.deflate_windows:  # after the writes, which compressed the frame (once per window): looked up here
            excluded = self.compressing.get(skip.socket_id) if skip is not None else None
            size = len(frame)
            for window, count in channel.deflate_windows.items():
                if window == excluded:
                    count -= 1
                if count:
                    saved += (size - len(deflated(frame, window))) * count
        self.meter.fanout(len(frame), reached, saved)
        return local

    def deflate_saved(self, frame: bytes, socket_ids: Iterable[str]) -> int:
        """The bytes permessage-deflate took off ``frame`` written to each of ``socket_ids``: a look per connection,
        for the small audiences (a connection's own replies, a user's connections, a user's watchers), only while some
        connection compresses. A channel's fan-out counts by window instead (``Channel.deflate_windows``)."""
        compressing = self.compressing
        if not compressing:
            return 0
        size = len(frame)
        windows = (compressing.get(socket_id) for socket_id in socket_ids)
        return sum(size - len(deflated(frame, window)) for window in windows if window is not None)

    def _deliver_mixed(
        self, channel: Channel, frame: bytes, skip: Peer | None, exclude: str | None, origin: object
    ) -> None:
        cache: dict[object, object] = {}
        for peer in channel.peers():
            if peer is skip:
                continue
            if isinstance(peer, ForeignPeer):
                peer.deliver_foreign(channel.name, frame, origin, exclude, cache)
            else:
                peer.send_frame(frame)
        ForeignTally.meter(cache, self.meter)

    def cached(self, name: str) -> tuple[str, str] | None:
        entry = self.cache.get(name)
        if entry is None:
            return None
        event, data, expires_at, _ = entry
        if expires_at < self.clock():
            del self.cache[name]
            return None
        return event, data

    def cache_missed(self, name: str) -> None:
        """Tell the app's server that ``name`` has nothing cached: at most once per CACHE_MISS_INTERVAL per channel
        (in a cluster, per channel cluster-wide)."""
        now = self.clock()
        missed_at = self.cache_missed_at.get(name)
        if missed_at is not None and now - missed_at < CACHE_MISS_INTERVAL:
            return
        if len(self.cache_missed_at) >= self.cache_missed_prune_at:  # forget channels nobody subscribed to lately
            self.cache_missed_at = {k: t for k, t in self.cache_missed_at.items() if now - t < CACHE_MISS_INTERVAL}
            self.cache_missed_prune_at = max(1024, 2 * len(self.cache_missed_at))
        self.cache_missed_at[name] = now
        if self.cluster is not None:  # the other nodes' subscribers count too: the cluster sends one for all
            self.cluster.cache_missed(self.app.app_id, name)
        else:
            self.webhooks.emit({"name": "cache_miss", "channel": name})

    def cache_ttl(self, name: str) -> int:
        entry = self.cache.get(name)
        return 0 if entry is None else max(int(entry[2] - self.clock()), 0)

    # -- users ------------------------------------------------------------------------------------------------

    def sign_in(self, peer: Peer, user_id: str, watchlist: tuple[str, ...]) -> None:
        connections = self.users.setdefault(user_id, {})
        first = not connections
        connections[peer.socket_id] = peer
        self.meter.user_seen(user_id)
        if watchlist:
            online = [uid for uid in watchlist if self.is_online(uid)]
            offline = [uid for uid in watchlist if not self.is_online(uid)]
            peer.send_text(frames.watchlist_events(online=online, offline=offline))
        if first:
            if not self.remote.users.get(user_id):
                self._notify_watchers(user_id, online=True)
            if self.cluster is not None:
                self.cluster.user_online(self.app.app_id, user_id, True)
        # Only now a watcher: a user watching their own id was told once, in the list above, that they are online
        for watched in watchlist:
            self.watchers.setdefault(watched, set()).add(peer)

    def sign_out(self, peer: Peer, user_id: str, watchlist: tuple[str, ...]) -> None:
        for watched in watchlist:
            watchers = self.watchers.get(watched)
            if watchers is not None:
                watchers.discard(peer)
                if not watchers:
                    del self.watchers[watched]
        connections = self.users.get(user_id, {})
        connections.pop(peer.socket_id, None)
        if not connections:
            self.users.pop(user_id, None)
            if not self.remote.users.get(user_id):
                self._notify_watchers(user_id, online=False)
            if self.cluster is not None:
                self.cluster.user_online(self.app.app_id, user_id, False)

    def _notify_watchers(self, user_id: str, *, online: bool) -> None:
        watchers = self.watchers.get(user_id)
        if not watchers:
            return
        frame = encode_text(
            frames.watchlist_events(online=[user_id] if online else [], offline=[] if online else [user_id])
        )
        peers = list(watchers)
        for peer in peers:
            peer.send_frame(frame)
        self.meter.fanout(len(frame), len(peers), self.deflate_saved(frame, (peer.socket_id for peer in peers)))

    def terminate_user(self, user_id: str) -> bool:
        """Close every connection signed in as ``user_id`` (on every node); False if only this node's were closed,
        the other nodes being out of reach (a Redis outage)."""
        reached = self.cluster is None or self.cluster.terminate_user(self.app.app_id, user_id)
        self.terminate_local_user(user_id)
        return reached

    def terminate_local_user(self, user_id: str) -> None:
        for peer in list(self.users.get(user_id, {}).values()):
            peer.terminate(ErrorCode.UNAUTHORIZED, "Connection terminated by the server")

    # -- what other nodes announce ----------------------------------------------------------------------------

    def remote_subscriptions(self, node: int, name: str, count: int) -> None:
        if self.remote.subscriptions.get(name, {}).get(node, 0) == max(count, 0):
            return  # a snapshot's or a re-announcement's unchanged count: no news
        counts = self.remote.subscriptions.setdefault(name, {})
        if count > 0:
            counts[node] = count
        else:
            counts.pop(node, None)
            if not counts:
                del self.remote.subscriptions[name]
        channel = self.channels.get(name)
        if channel is not None:
            self.subscription_count_changed_remotely(channel)

    def subscription_count_changed_remotely(self, channel: Channel) -> None:
        if self._counts_subscriptions(channel.name):
            self._throttle_subscription_count(channel)

    def remote_member_joined(self, node: int, name: str, user_id: str, user_info_json: str) -> None:
        known = self._is_member(name, user_id)
        self.remote.members.setdefault(name, {}).setdefault(user_id, {})[node] = user_info_json
        channel = self.channels.get(name)
        if not known and channel is not None:
            self.deliver(channel, encode_text(frames.member_added(name, user_id, user_info_json)))
            self.meter.presence_relayed(len(channel.subscribers))

    def remote_member_left(self, node: int, name: str, user_id: str) -> None:
        users = self.remote.members.get(name, {})
        nodes = users.get(user_id)
        if nodes is None or nodes.pop(node, None) is None:
            return
        if not nodes:
            del users[user_id]
            if not users:
                del self.remote.members[name]
        channel = self.channels.get(name)
        if channel is not None and not self._is_member(name, user_id):
            self.deliver(channel, encode_text(frames.member_removed(name, user_id)))
            self.meter.presence_relayed(len(channel.subscribers))

    def remote_user(self, node: int, user_id: str, online: bool) -> None:
        was_online = self.is_online(user_id)
        nodes = self.remote.users.setdefault(user_id, set())
        if online:
            nodes.add(node)
        else:
            nodes.discard(node)
        if not nodes:
            del self.remote.users[user_id]
        if was_online != self.is_online(user_id):
            self._notify_watchers(user_id, online=online)

    def forget_node(self, node: int, *, settled_here: bool = False) -> None:
        """A node is gone: what it held disappears, with the presence events that follows from it. The node that
        ``settled_here`` its webhook counters (one, for a node that stopped sending heartbeats) sends the webhooks."""
        for name in [name for name, counts in self.remote.subscriptions.items() if node in counts]:
            self.remote_subscriptions(node, name, 0)
            if settled_here:
                self._send_count_left_elsewhere(name)
        for name, users in list(self.remote.members.items()):
            for user_id in [uid for uid, nodes in users.items() if node in nodes]:
                self.remote_member_left(node, name, user_id)
        for user_id in [uid for uid, nodes in self.remote.users.items() if node in nodes]:
            self.remote_user(node, user_id, False)
        self.remote.connections.pop(node, None)
        if self.foreign_presence is not None:
            self.foreign_presence.forget_node(node)

    def apply_snapshot(self, node: int, held: AppHolding) -> None:
        """Replace what this node believes ``node`` holds with ``held`` (a node that joined, or came back after an
        outage): only the differences bring events, as if ``node`` had announced them one by one."""
        remote = self.remote
        for name, counts in list(remote.subscriptions.items()):
            if node in counts and name not in held.subscriptions:
                self.remote_subscriptions(node, name, 0)
        for name, users in list(remote.members.items()):
            for user_id in [uid for uid, nodes in users.items() if node in nodes]:
                if (name, user_id) not in held.members:
                    self.remote_member_left(node, name, user_id)
        for user_id in [uid for uid, nodes in remote.users.items() if node in nodes]:
            if user_id not in held.users:
                self.remote_user(node, user_id, False)
        for name, count in held.subscriptions.items():
            self.remote_subscriptions(node, name, count)
        for (name, user_id), info in held.members.items():
            if node not in remote.members.get(name, {}).get(user_id, {}):
                self.remote_member_joined(node, name, user_id, info)
        for user_id in held.users:
            if node not in remote.users.get(user_id, set()):
                self.remote_user(node, user_id, True)
        self.remote_connection_count(node, held.connections)
        if self.foreign_presence is not None:
            self.foreign_presence.remote_snapshot(node, held.ably_members)

    def cache_published(self, name: str, event: str, data: str) -> None:
        """A publish to cache channel ``name`` (either protocol's): kept for later subscribers, on every node."""
        ttl = self.app.cache_ttl
        version = self._next_cache_version(name)
        self.cache_store(name, event, data, ttl, version)
        if self.cluster is not None:
            self.cluster.cache_set(self.app.app_id, name, event, data, ttl, version)

    def _next_cache_version(self, name: str) -> CacheVersion:
        """Past the version of the event kept now, even one from a node whose clock is ahead of this one's: a publish
        made after this node got another node's event supersedes it everywhere."""
        milliseconds = int(self.wall_clock() * 1000)
        entry = self.cache.get(name)
        if entry is not None:
            milliseconds = max(milliseconds, entry[3][0] + 1)
        return milliseconds, self.node_id

    def cache_store(self, name: str, event: str, data: str, ttl: float, version: CacheVersion) -> None:
        """Keep ``name``'s last event (this node's publish, or another node's) unless the one kept is newer (a later
        version, still live): its next miss is news again."""
        now = self.clock()
        cache = self.cache
        kept = cache.get(name)
        if kept is not None and kept[3] >= version and kept[2] >= now:
            return
        cache[name] = (event, data, now + ttl, version)
        cache.move_to_end(name)
        self.cache_missed_at.pop(name, None)
        for _ in range(CACHE_EXPIRY_STEP):
            oldest, (_, _, expires_at, _) = next(iter(cache.items()))
            if expires_at >= now:
                break
            del cache[oldest]
