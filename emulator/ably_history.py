"""Ably message history on one node: what was published through Ably's protocol (REST or realtime, on this node or,
in a cluster, on another) on each channel of an app, kept for the app's retention period within a byte budget. It
answers ``GET /channels/{ch}/messages`` (the SDKs' ``channel.history()``, ``untilAttach`` included) and the
``rewind`` channel param (docs/ably.md#history).

One deque per channel and one for the app in the order messages were kept: the oldest message of the app is always
the first of its channel's deque, so expiry and the byte budget drop from the left of both, and a publish costs an
append to each.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from relay.protocol.ably import Rewind

DEFAULT_RETENTION_SECONDS = 120.0
MAX_BYTES = 64 * 1024 * 1024  # per app: beyond it the oldest messages go first


@dataclass(slots=True, frozen=True)
class Kept:
    """One message of a ProtocolMessage, as history keeps it: the ProtocolMessage is shared by its messages and by
    every subscriber it was delivered to, never changed."""

    channel: str
    position: int  # this node's serial when the message was kept: history's order and untilAttach's cut
    index: int  # within the ProtocolMessage's messages
    fields: dict[str, Any]  # the MESSAGE ProtocolMessage it came in
    size: int

    @property
    def timestamp(self) -> int:
        timestamp: int = self.fields["timestamp"]
        return timestamp

    def item(self) -> dict[str, Any]:
        """The message with what its ProtocolMessage gave it on delivery (RTL15: id, timestamp, connectionId)."""
        fields = self.fields
        item: dict[str, Any] = dict(fields["messages"][self.index])
        item.setdefault("id", f"{fields['id']}:{self.index}")
        item["timestamp"] = fields["timestamp"]
        if "connectionId" in fields:
            item.setdefault("connectionId", fields["connectionId"])
        return item


def message_size(item: dict[str, Any]) -> int:
    """What a kept message costs the byte budget: its name, clientId, data and extras (Ably's size, A.3), roughly."""
    data = item.get("data")
    size = len(item.get("name") or "") + len(item.get("clientId") or "") + 64
    if isinstance(data, str | bytes):
        size += len(data)
    extras = item.get("extras")
    if extras:
        size += len(json.dumps(extras))
    return size


class MessageHistory:
    """An app's kept messages on this node."""

    def __init__(self, retention_ms: int, max_bytes: int = MAX_BYTES) -> None:
        self.retention_ms = retention_ms
        self.max_bytes = max_bytes
        self._channels: dict[str, deque[Kept]] = {}
        self._order: deque[Kept] = deque()
        self._bytes = 0

    def keep(self, channel: str, fields: dict[str, Any], position: int, now_ms: int) -> None:
        """Keep the messages of a MESSAGE ProtocolMessage published on ``channel``."""
        if self.retention_ms <= 0:
            return
        kept = self._channels.get(channel)
        if kept is None:
            kept = self._channels[channel] = deque()
        for index, item in enumerate(fields["messages"]):
            message = Kept(channel, position, index, fields, message_size(item))
            kept.append(message)
            self._order.append(message)
            self._bytes += message.size
        self.expire(now_ms)

    def expire(self, now_ms: int) -> None:
        """Drop what is older than the retention period, then the oldest until the budget holds the rest."""
        order, oldest = self._order, now_ms - self.retention_ms
        while order and (order[0].timestamp < oldest or self._bytes > self.max_bytes):
            message = order.popleft()
            self._bytes -= message.size
            kept = self._channels[message.channel]
            kept.popleft()
            if not kept:
                del self._channels[message.channel]

    def messages(self, channel: str, now_ms: int) -> deque[Kept]:
        """``channel``'s kept messages, oldest first."""
        self.expire(now_ms)
        return self._channels.get(channel) or deque()

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
        after: tuple[int, int] | None = None,
    ) -> tuple[list[Kept], bool]:
        """Up to ``limit`` of ``channel``'s messages with ``start <= timestamp <= end``, kept at or before position
        ``until`` (untilAttach), in the direction asked, from after the message ``after`` (position, index: the last
        of the page before); and whether more follow."""
        kept = self.messages(channel, now_ms)
        ordered: Iterable[Kept] = reversed(kept) if backwards else kept
        found: list[Kept] = []
        for message in _after(ordered, after, backwards):
            if until is not None and message.position > until:
                continue
            if not start <= message.timestamp <= end:
                continue  # not a break: in a cluster, timestamps come from each publishing node's clock
            if len(found) == limit:
                return found, True
            found.append(message)
        return found, False

    def last(self, channel: str, now_ms: int, rewind: Rewind) -> list[Kept]:
        """What ``rewind`` sends an attachment to ``channel``: its last messages, oldest first."""
        kept = self.messages(channel, now_ms)
        since = None if rewind.window_ms is None else now_ms - rewind.window_ms
        chosen: list[Kept] = []
        for message in reversed(kept):
            if len(chosen) == rewind.messages or (since is not None and message.timestamp < since):
                break
            chosen.append(message)
        chosen.reverse()
        return chosen


def _after(ordered: Iterable[Kept], after: tuple[int, int] | None, backwards: bool) -> Iterator[Kept]:
    """The messages of ``ordered`` past the cursor ``after`` (in the iteration's direction)."""
    for message in ordered:
        if after is not None:
            key = (message.position, message.index)
            if (key >= after) if backwards else (key <= after):
                continue
        yield message
