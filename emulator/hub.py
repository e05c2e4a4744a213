"""Per-app state of one emulator node: channels and their local subscribers, presence, cache, signed-in users.

The hub owns fan-out: a publish is encoded into one WebSocket frame and the same bytes are written to every
subscriber. Occupancy and membership transitions drive webhooks and presence events.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from relay.emulator.config import App
from relay.emulator.webhooks import WebhookDispatcher
from relay.emulator.wire import encode_text

from relay.protocol import frames
from relay.protocol.channels import SERVER_TO_USER_PREFIX, ChannelKind, classify, is_cache_channel
from relay.protocol.members import Member

SUBSCRIPTION_COUNT_BURST = 100
SUBSCRIPTION_COUNT_INTERVAL = 5.0


class Peer(Protocol):
    """A connected client as the hub sees it."""

    socket_id: str
    user_id: str | None

    def send_frame(self, frame: bytes) -> None: ...

    def send_text(self, text: str) -> None: ...

    def terminate(self, code: int, message: str) -> None: ...


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


class AppState:
    def __init__(self, app: App, webhooks: WebhookDispatcher, clock: Callable[[], float]) -> None:
        self.app = app
        self.webhooks = webhooks
        self.clock = clock
        self.peers: dict[str, Peer] = {}
        self.channels: dict[str, Channel] = {}
        self.users: dict[str, dict[str, Peer]] = {}
        self.watchers: dict[str, set[Peer]] = {}
        self.cache: dict[str, tuple[str, str, float]] = {}

    # -- connections ------------------------------------------------------------------------------------------

    def connect(self, peer: Peer) -> None:
        self.peers[peer.socket_id] = peer

    def disconnect(self, peer: Peer) -> None:
        self.peers.pop(peer.socket_id, None)

    # -- subscriptions ----------------------------------------------------------------------------------------

    def subscribe(self, peer: Peer, name: str, member: Member | None) -> Channel:
        channel = self.channels.get(name)
        if channel is None:
            channel = self.channels[name] = Channel(name, classify(name))
        if not channel.subscribers and not self.webhooks.cancel_delayed(("vacated", name)):
            self.webhooks.emit({"name": "channel_occupied", "channel": name})
        channel.subscribers[peer.socket_id] = peer
        if member is not None:
            entry = channel.members.get(member.user_id)
            if entry is None:
                channel.members[member.user_id] = PresenceEntry(member.user_info_json, 1)
                self.deliver(
                    channel,
                    encode_text(frames.member_added(name, member.user_id, member.user_info_json)),
                    exclude=peer.socket_id,
                )
                if not self.webhooks.cancel_delayed(("member_removed", name, member.user_id)):
                    self.webhooks.emit({"name": "member_added", "channel": name, "user_id": member.user_id})
            else:
                entry.connections += 1
        return channel

    def unsubscribe(self, peer: Peer, name: str, member_id: str | None) -> None:
        channel = self.channels.get(name)
        if channel is None or channel.subscribers.pop(peer.socket_id, None) is None:
            return
        if member_id is not None:
            entry = channel.members[member_id]
            entry.connections -= 1
            if entry.connections == 0:
                del channel.members[member_id]
                self.deliver(channel, encode_text(frames.member_removed(name, member_id)))
                event = {"name": "member_removed", "channel": name, "user_id": member_id}
                self.webhooks.emit_delayed(("member_removed", name, member_id), event)
        if channel.subscribers:
            self.subscription_count_changed(channel)
        else:
            del self.channels[name]
            self.webhooks.emit_delayed(("vacated", name), {"name": "channel_vacated", "channel": name})

    def would_exceed_members(self, name: str, user_id: str) -> bool:
        channel = self.channels.get(name)
        if channel is None or user_id in channel.members:
            return False
        return len(channel.members) >= self.app.limits.max_presence_members

    def presence_hash(self, name: str) -> dict[str, str]:
        channel = self.channels.get(name)
        return {} if channel is None else {uid: entry.user_info_json for uid, entry in channel.members.items()}

    def subscription_count_changed(self, channel: Channel) -> None:
        """Tell a channel's subscribers their number (after a new subscriber has its subscription_succeeded)."""
        if not self.app.subscription_count or channel.kind is ChannelKind.PRESENCE or channel.count_pending:
            return
        wait = channel.count_sent_at + SUBSCRIPTION_COUNT_INTERVAL - self.clock()
        if len(channel.subscribers) <= SUBSCRIPTION_COUNT_BURST or wait <= 0:
            self._send_subscription_count(channel)
        else:
            channel.count_pending = True
            asyncio.get_running_loop().call_later(wait, self._send_subscription_count, channel)

    def _send_subscription_count(self, channel: Channel) -> None:
        channel.count_pending = False
        if self.channels.get(channel.name) is not channel:
            return
        channel.count_sent_at = self.clock()
        count = len(channel.subscribers)
        self.deliver(channel, encode_text(frames.subscription_count(channel.name, count)))
        self.webhooks.emit({"name": "subscription_count", "channel": channel.name, "subscription_count": count})

    # -- publishing -------------------------------------------------------------------------------------------

    def publish(self, name: str, event: str, data: str, exclude: str | None = None) -> None:
        """An HTTP API publish: cached on cache channels, then fanned out as one shared frame."""
        if is_cache_channel(name):
            self.cache[name] = (event, data, self.clock() + self.app.cache_ttl)
        frame = encode_text(frames.channel_event(event, name, data))
        if name.startswith(SERVER_TO_USER_PREFIX):
            for socket_id, peer in list(self.users.get(name[len(SERVER_TO_USER_PREFIX) :], {}).items()):
                if socket_id != exclude:
                    peer.send_frame(frame)
            return
        channel = self.channels.get(name)
        if channel is not None:
            self.deliver(channel, frame, exclude)

    def deliver(self, channel: Channel, frame: bytes, exclude: str | None = None) -> None:
        for socket_id, peer in list(channel.subscribers.items()):
            if socket_id != exclude:
                peer.send_frame(frame)

    def cached(self, name: str) -> tuple[str, str] | None:
        entry = self.cache.get(name)
        if entry is None:
            return None
        event, data, expires_at = entry
        if expires_at < self.clock():
            del self.cache[name]
            return None
        return event, data

    # -- users ------------------------------------------------------------------------------------------------

    def sign_in(self, peer: Peer, user_id: str, watchlist: tuple[str, ...]) -> None:
        connections = self.users.setdefault(user_id, {})
        first = not connections
        connections[peer.socket_id] = peer
        if watchlist:
            online = [uid for uid in watchlist if uid in self.users]
            offline = [uid for uid in watchlist if uid not in self.users]
            peer.send_text(frames.watchlist_events(online=online, offline=offline))
        for watched in watchlist:
            self.watchers.setdefault(watched, set()).add(peer)
        if first:
            self._notify_watchers(user_id, online=True)

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
            self._notify_watchers(user_id, online=False)

    def _notify_watchers(self, user_id: str, *, online: bool) -> None:
        watchers = self.watchers.get(user_id)
        if not watchers:
            return
        frame = encode_text(
            frames.watchlist_events(online=[user_id] if online else [], offline=[] if online else [user_id])
        )
        for peer in list(watchers):
            peer.send_frame(frame)

    def terminate_user(self, user_id: str) -> int:
        connections = list(self.users.get(user_id, {}).values())
        for peer in connections:
            peer.terminate(4009, "Connection terminated by the server")
        return len(connections)
