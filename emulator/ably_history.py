"""Ably message history on one node: what was published through Ably's protocol (REST or realtime, on this node or,
in a cluster, on another) on each channel of an app, kept for the app's retention period within a memory budget. It
answers ``GET /channels/{ch}/messages`` (the SDKs' ``channel.history()``, ``untilAttach`` included) and the
``rewind`` channel param (docs/ably.md#history-and-rewind). An app keeps its members' presence changes the same way,
for ``GET /channels/{ch}/presence/history``.

One deque per channel and one for the app in the order messages were kept: the oldest message of the app is always
the first of its channel's deque, so expiry and the budget drop from the left of both, and a publish costs an append
to each.
"""

from __future__ import annotations

import json
import re
from collections import deque
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

from relay.protocol.ably import Rewind

MAX_BYTES = 64 * 1024 * 1024  # per app, as counted by kept_size: beyond it the oldest messages go first
# Per app for presence changes: a cluster keeps every Pusher presence join and leave too (each is an Ably member's).
PRESENCE_HISTORY_BYTES = 16 * 1024 * 1024
# What keeping costs beyond the payload, measured with tracemalloc (a message of a one-message publish: its Kept, its
# item and ProtocolMessage dicts, their strings; a channel: its deque and its entry).
MESSAGE_OVERHEAD = 800
CHANNEL_OVERHEAD = 800
# Per app for the last messages of channels under Ably's "persist last message" rule, kept past the retention period;
# past it the channels published to longest ago lose theirs first.
PERSISTED_LAST_BYTES = 16 * 1024 * 1024
# Messages that time-expiry drops per call at most: a publish after a long quiet spell does not pay for all of them
# at once (reads skip what is older than the retention anyway).
EXPIRY_STEP = 1_000


OrderKey = tuple[int, str, str, int]
NO_SERIAL = "0" * 16


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs three times as much, on every publish
class Kept:
    """One message of a ProtocolMessage, as history keeps it: the ProtocolMessage is shared by its messages and by
    every subscriber it was delivered to, never changed."""

    channel: str
    position: int  # this node's serial when the message was kept: untilAttach's cut
    index: int  # within the ProtocolMessage's messages
    fields: dict[str, Any]  # the MESSAGE ProtocolMessage it came in (PRESENCE for a member's change)
    size: int
    presence: bool = False  # a member's change (a PresenceMessage), not a message

    @property
    def timestamp(self) -> int:
        timestamp: int = self.fields["timestamp"]
        return timestamp

    @property
    def order(self) -> OrderKey:
        """Where the message is in history: by timestamp, then by its publishing node's serial (the order of that
        node's publishes within a millisecond), its ProtocolMessage's id (two nodes' serials may be equal), its
        place in the publish. Every node orders the same messages the same way, whatever order they reached it in,
        so a next page's cursor (:func:`cursor_text`) means the same on every node."""
        fields = self.fields
        if self.presence:  # a node may send on a part of a PRESENCE message: not its index there, the change's id
            serial = fields.get("channelSerial") or NO_SERIAL  # none from a node of an earlier version
            return fields["timestamp"], serial, fields["presence"][self.index]["id"], 0
        return fields["timestamp"], fields["channelSerial"], fields["id"], self.index

    def item(self) -> dict[str, Any]:
        if self.presence:  # complete as sent: action, clientId, connectionId, id, timestamp, data
            return dict(self.fields["presence"][self.index])
        return delivered_message(self.fields, self.index)


def delivered_message(fields: dict[str, Any], index: int) -> dict[str, Any]:
    """Message ``index`` of a MESSAGE ProtocolMessage with what the ProtocolMessage gives it on delivery (RTL15: id,
    timestamp, connectionId), as history and webhooks carry it."""
    item: dict[str, Any] = dict(fields["messages"][index])
    item["id"] = item.get("id") or f"{fields['id']}:{index}"
    item["timestamp"] = fields["timestamp"]
    if "connectionId" in fields:
        item.setdefault("connectionId", fields["connectionId"])
    return item


def is_ephemeral(extras: object) -> bool:
    """Whether a message with ``extras`` is ephemeral (``{"ephemeral": true}``: typing indicators, reactions): Ably
    delivers it to the channel's subscribers of the moment and leaves it out of history, rewind and integrations."""
    return isinstance(extras, dict) and extras.get("ephemeral") is True


def kept_size(item: dict[str, Any]) -> int:
    """What a kept message costs the budget: its payload in bytes (name, clientId, data, extras) and the overhead."""
    size = MESSAGE_OVERHEAD
    for name in ("name", "clientId", "data"):
        value = item.get(name)
        if isinstance(value, str):
            size += len(value) if value.isascii() else len(value.encode("utf-8", "surrogatepass"))
        elif isinstance(value, bytes):
            size += len(value)
    extras = item.get("extras")
    if extras:
        size += len(json.dumps(extras, default=str))
    return size


class MessageHistory:
    """An app's kept messages on this node, or (``presence``) its members' presence changes."""

    def __init__(
        self,
        retention_ms: int,
        max_bytes: int = MAX_BYTES,
        *,
        presence: bool = False,
        persist_last: tuple[str, ...] = (),
    ) -> None:
        self.retention_ms = retention_ms
        self.max_bytes = max_bytes
        self.presence = presence
        self._channels: dict[str, deque[Kept]] = {}
        self._order: deque[Kept] = deque()
        self._bytes = 0
        # Ably's "persist last message" rule: channel names and namespaces whose channels keep their last message
        # for rewind past the retention period; the last messages, the channel published to longest ago first.
        self._persist_last = frozenset(persist_last)
        self._last: dict[str, Kept] = {}
        self._last_bytes = 0

    @property
    def size(self) -> int:
        """What is kept, in the budget's bytes."""
        return self._bytes

    def keep(self, channel: str, fields: dict[str, Any], position: int, now_ms: int) -> None:
        """Keep the messages of a MESSAGE ProtocolMessage published on ``channel`` (the changes of a PRESENCE one),
        but for ephemeral ones, which Ably delivers and forgets."""
        items = fields["presence" if self.presence else "messages"]
        indexes = (
            range(len(items))
            if self.presence
            else [i for i, item in enumerate(items) if not is_ephemeral(item.get("extras"))]
        )
        if not indexes:
            return
        if self._persist_last and not self.presence and persisted_by(self._persist_last, channel):
            # Its last message alone, complete (its id, timestamp and connectionId), not the publish it came in.
            last = delivered_message(fields, indexes[-1])
            self._persist(Kept(channel, position, 0, {**fields, "messages": [last]}, kept_size(last)))
        if self.retention_ms <= 0:
            return
        kept = self._channels.get(channel)
        if kept is None:
            kept = self._channels[channel] = deque()
            self._bytes += CHANNEL_OVERHEAD
        for index in indexes:  # a message keeps its place in the publish: its id and its order are the delivered ones
            message = Kept(channel, position, index, fields, kept_size(items[index]), self.presence)
            kept.append(message)
            self._order.append(message)
            self._bytes += message.size
        self._expire(now_ms)

    def _persist(self, message: Kept) -> None:
        replaced = self._last.pop(message.channel, None)
        if replaced is not None:
            self._last_bytes -= replaced.size
        self._last[message.channel] = message
        self._last_bytes += message.size
        while self._last_bytes > PERSISTED_LAST_BYTES:
            oldest = next(iter(self._last))
            self._last_bytes -= self._last.pop(oldest).size

    def _expire(self, now_ms: int) -> None:
        """Drop up to EXPIRY_STEP messages older than the retention period, then the oldest until the budget holds
        the rest (as many as it takes: no more than what was just kept would need)."""
        order, oldest, step = self._order, now_ms - self.retention_ms, EXPIRY_STEP
        while order and ((step > 0 and order[0].timestamp < oldest) or self._bytes > self.max_bytes):
            step -= 1
            message = order.popleft()
            self._bytes -= message.size
            kept = self._channels[message.channel]
            kept.popleft()
            if not kept:
                del self._channels[message.channel]
                self._bytes -= CHANNEL_OVERHEAD

    def _current(self, channel: str, now_ms: int) -> list[Kept]:
        """``channel``'s messages within the retention period, oldest first."""
        oldest = now_ms - self.retention_ms
        return [message for message in self._channels.get(channel, ()) if message.timestamp >= oldest]

    def page(
        self,
        channel: str,
        now_ms: int,
        *,
        start: int,
        end: int,
        backwards: bool,
        limit: int,
        until: int | None = None,
        after: OrderKey | None = None,
    ) -> tuple[list[Kept], bool]:
        """Up to ``limit`` of ``channel``'s messages with ``start <= timestamp <= end``, kept at or before position
        ``until`` (untilAttach), in history's order (:attr:`Kept.order`) or its reverse, past the message whose order
        is ``after`` (the last of the page before); and whether more follow."""
        kept = sorted(self._current(channel, now_ms), key=_ORDER, reverse=backwards)  # nearly sorted already: cheap
        found: list[Kept] = []
        for message in kept:
            if after is not None and ((message.order >= after) if backwards else (message.order <= after)):
                continue
            if (until is not None and message.position > until) or not start <= message.timestamp <= end:
                continue
            if len(found) == limit:
                return found, True
            found.append(message)
        return found, False

    def last(self, channel: str, now_ms: int, rewind: Rewind) -> tuple[list[Kept], bool]:
        """What ``rewind`` sends an attachment to ``channel``: its last messages, oldest first, and whether the cap of
        a ``capped`` rewind left out older ones it asked for (which Ably reports)."""
        since = now_ms - self.retention_ms
        if rewind.window_ms is not None:
            since = max(since, now_ms - rewind.window_ms)
        looked_at = rewind.messages + rewind.capped  # one more tells a truncated backlog from one that fits
        chosen: list[Kept] = []
        for message in reversed(self._channels.get(channel, ())):  # newest first: at most 101 are looked at
            if len(chosen) == looked_at or message.timestamp < since:
                break
            chosen.append(message)
        truncated = len(chosen) > rewind.messages
        if truncated:
            chosen.pop()
        chosen.reverse()
        if not chosen and rewind.messages and rewind.window_ms is None and channel in self._last:
            return [self._last[channel]], False  # past the retention period: the persisted last message, Ably's rule
        return chosen, truncated


_ORDER = attrgetter("order")


def persisted_by(rules: frozenset[str], channel: str) -> bool:
    """Whether a "persist last message" rule covers ``channel``: one naming it, or its namespace (what comes before
    its first ``:``), as Ably's channel rules match."""
    namespace, colon, _ = channel.partition(":")
    return channel in rules or (bool(colon) and namespace in rules)


def cursor_text(message: Kept) -> str:
    """The cursor of a next link: ``message``'s order, as text."""
    timestamp, serial, protocol_id, index = message.order
    return f"{timestamp}:{index}:{serial}:{protocol_id}"


_CURSOR = re.compile(r"([0-9]{1,16}):([0-9]{1,6}):([0-9a-f]{16}):(.+)", re.DOTALL)


def parse_cursor(text: str) -> OrderKey:
    """The order a cursor names; ValueError for one :func:`cursor_text` did not make."""
    match = _CURSOR.fullmatch(text)
    if match is None:
        raise ValueError(text)
    return int(match[1]), match[3], match[4], int(match[2])
