"""What an Ably SDK's presence set makes of the PRESENCE messages a node sends for another node's members (Ably
members, and Pusher connections in a ``presence-`` channel), including the LEAVEs a node makes itself.

Two nodes in process, without Redis: node 1 and node 2 each have an ``AppState`` with a recording ``ClusterLink``;
what node 1 announces with ``ably_presence`` is handed to node 2's ``remote_presence`` as the bus would. Node 2's
Ably subscriber's PRESENCE messages are fed to ably-python's ``PresenceMap`` (the SDK's RTP2 implementation, the same
comparison as ably-js's ``newerThan``).
"""

from __future__ import annotations

import itertools
import json
from typing import Any

from ably.realtime.presencemap import PresenceMap  # type: ignore[import-untyped]
from ably.types.presence import PresenceAction, PresenceMessage  # type: ignore[import-untyped]

from relay.emulator.ably_realtime import AblySession
from relay.emulator.session import Session
from relay.protocol.signing import channel_auth
from tests.ably.test_ably_hub import Hub, Link, pusher_send, send

PRESENCE, SYNC = 14, 16
ENTER, LEAVE = 2, 3


class RecordingLink:
    """A ClusterLink that keeps the Ably presence messages and ignores the rest."""

    def __init__(self) -> None:
        self.ably: list[tuple[str, dict[str, Any]]] = []

    def ably_presence(self, app_id: str, channel: str, fields: dict[str, Any]) -> None:
        self.ably.append((channel, fields))

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


class Node(Hub):
    """One node of the pair: its Ably presence messages are recorded for :meth:`relay_to`, its clock ticks."""

    def __init__(self, number: int) -> None:
        self.link = RecordingLink()
        clock = itertools.count(1_800_000_000_000, 1000)
        super().__init__(node=number, cluster=self.link, wall_ms=lambda: next(clock))  # type: ignore[arg-type]

    def pusher_member(self, user_id: str, info: object = None) -> Session:
        session, _ = self.pusher()
        user_info = {"name": user_id} if info is None else info
        channel_data = json.dumps({"user_id": user_id, "user_info": user_info})
        auth = channel_auth("key", "secret", session.socket_id, "presence-room", channel_data)
        pusher_send(
            session, "pusher:subscribe", {"channel": "presence-room", "auth": auth, "channel_data": channel_data}
        )
        return session

    def ably_watcher(self) -> tuple[AblySession, Link]:
        session, link = self.ably_session()
        send(session, {"action": 10, "channel": "presence-room"})
        return session, link

    def relay_to(self, other: Node) -> None:
        """The bus: this node's Ably presence messages, in order, to ``other``."""
        for channel, fields in self.link.ably:
            other.ably.remote_presence(self.node, channel, json.loads(json.dumps(fields)))
        self.link.ably.clear()


def sdk_view(link: Link) -> set[str]:
    """The clientIds an Ably SDK's presence set holds after every SYNC and PRESENCE message on ``link`` so far."""
    members = PresenceMap(member_key_fn=lambda item: f"{item.connection_id}:{item.client_id}")
    for message in link.decoded():
        if message["action"] not in (PRESENCE, SYNC):
            continue
        for raw in message["presence"]:
            item = PresenceMessage.from_encoded(raw)
            if item.action == PresenceAction.LEAVE:
                members.remove(item)
            else:
                members.put(item)
    return {item.client_id for item in members.values()}


def client_ids(node: Node) -> list[str]:
    return [member["clientId"] for member in node.ably.members("presence-room")]


def test_a_dead_node_s_pusher_member_leaves_an_ably_sdk_s_presence_set() -> None:
    """Node 1 dies holding Pusher member pat: node 2 sends its Ably subscribers pat's LEAVE with an id of its own, so
    the SDK compares it with the ENTER by timestamp (RTP2b1); with the ENTER's id (``1.1:1:0``) it would find it no
    newer (RTP2b2), ignore it, and keep pat for ever."""
    doomed, survivor = Node(1), Node(2)
    _, watched = survivor.ably_watcher()
    doomed.pusher_member("pat")
    doomed.relay_to(survivor)
    assert client_ids(survivor) == ["pat"]
    assert sdk_view(watched) == {"pat"}
    survivor.state.forget_node(1)  # the heartbeat expired (or "bye")

    presence = [m for m in watched.decoded() if m["action"] == PRESENCE]
    [(entered, enter_id), (left, leave_id)] = [(m["presence"][0]["action"], m["presence"][0]["id"]) for m in presence]
    assert (entered, enter_id) == (ENTER, "1.1:1:0")
    assert left == LEAVE and leave_id.startswith("leave-") and leave_id.endswith(":0:0")  # an id of the survivor's
    assert survivor.ably.members("presence-room") == []
    assert sdk_view(watched) == set()


def test_a_pusher_member_missing_from_a_node_s_snapshot_leaves_an_ably_sdk_s_presence_set() -> None:
    """The same through ``remote_snapshot`` (node 1 restarted within its TTL, or reconciled after a Redis outage,
    without pat)."""
    restarted, other = Node(1), Node(2)
    _, watched = other.ably_watcher()
    restarted.pusher_member("pat")
    restarted.relay_to(other)
    assert client_ids(other) == ["pat"]
    assert sdk_view(watched) == {"pat"}
    other.ably.remote_snapshot(1, {})

    assert other.ably.members("presence-room") == []
    assert sdk_view(watched) == set()


def test_a_dead_node_s_ably_member_leaves_an_ably_sdk_s_presence_set() -> None:
    """A dead node's Ably member leaves the survivor's subscribers' presence sets the same way."""
    doomed, survivor = Node(1), Node(2)
    _, watched = survivor.ably_watcher()
    ann, _ = doomed.ably_session(client_id="ann")
    send(ann, {"action": 10, "channel": "presence-room"})
    send(ann, {"action": 14, "channel": "presence-room", "msgSerial": 0, "presence": [{"action": 2}]})
    doomed.relay_to(survivor)
    assert client_ids(survivor) == ["ann"]
    assert sdk_view(watched) == {"ann"}
    survivor.state.forget_node(1)

    assert survivor.ably.members("presence-room") == []
    assert sdk_view(watched) == set()


def test_every_node_shows_the_same_data_for_a_pusher_member() -> None:
    """pat connects twice to node 1 with different user_info: both connections carry the user's info as Pusher has
    it (the first connection's) in the live ENTERs, the SYNC and the snapshot, so node 2 and a node that joins later
    (from the snapshot, which a resync compares by id only) show what node 1 shows."""
    here, there = Node(1), Node(2)
    for info in ({"n": 1}, {"n": 2}):
        here.pusher_member("pat", info)
    here.relay_to(there)

    def view(node: Node) -> list[tuple[str, str]]:
        return sorted((m["connectionId"], m["data"]) for m in node.ably.members("presence-room"))

    assert view(there) == view(here) == [("1.1", '{"n":1}'), ("1.2", '{"n":1}')]


def test_a_pusher_member_s_leave_and_re_enter_reach_an_ably_sdk_s_presence_set() -> None:
    """A Pusher member's own LEAVE (``socket:1:1``) and its re-enter (``socket:2:0``, newer) on another node."""
    here, there = Node(1), Node(2)
    _, watched = there.ably_watcher()
    session = here.pusher_member("pat")
    here.relay_to(there)
    pusher_send(session, "pusher:unsubscribe", {"channel": "presence-room"})
    here.relay_to(there)
    assert sdk_view(watched) == set()
    channel_data = json.dumps({"user_id": "pat", "user_info": {"name": "pat"}})
    auth = channel_auth("key", "secret", session.socket_id, "presence-room", channel_data)
    pusher_send(session, "pusher:subscribe", {"channel": "presence-room", "auth": auth, "channel_data": channel_data})
    here.relay_to(there)
    assert sdk_view(watched) == {"pat"}
