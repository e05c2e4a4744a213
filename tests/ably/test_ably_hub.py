"""One channel space, in process: Pusher sessions and Ably sessions on the hub's channels over recording links.

The all-Pusher fast path is unchanged (one frame, the same bytes for every subscriber, no per-peer test); a mixed
channel encodes each protocol's frame at most once per delivery (Ably JSON and msgpack once each); presence crosses
over per connection (Ably) and per user (Pusher). Also the app's Ably key and ``ably_client_settings``.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import msgpack  # type: ignore[import-untyped]
import pytest

from relay.emulator import ably_hub
from relay.emulator.ably import ably_client_settings
from relay.emulator.ably_auth import AblyAuth, AblyError, AblyKey
from relay.emulator.ably_hub import AblyApp, Message, check_channel_name
from relay.emulator.ably_realtime import AblySession
from relay.emulator.config import App, EmulatorConfig, load_config
from relay.emulator.hub import AppState, ClusterLink
from relay.emulator.session import Session
from relay.emulator.webhooks import WebhookDispatcher
from relay.errors import ConfigError
from relay.protocol.signing import channel_auth

APP = App(app_id="1", key="key", secret="secret")
PRESENCE, MESSAGE = 14, 15


@dataclass
class Link:
    frames: list[bytes] = field(default_factory=list)
    closed_with: tuple[int, str] | None = None

    def write(self, frame: bytes) -> None:
        self.frames.append(frame)

    def close(self, code: int, reason: str) -> None:
        self.closed_with = (code, reason)

    def abandon(self, reason: str) -> None:
        self.close(1000, reason)

    def decoded(self) -> list[Any]:
        out = []
        for frame in self.frames:
            if frame[0] & 0x08:  # a control frame (a ping)
                continue
            length = frame[1] & 0x7F
            payload = frame[2 + (2 if length == 126 else 8 if length == 127 else 0) :]
            out.append(msgpack.unpackb(payload) if frame[0] == 0x82 else json.loads(payload))
        return out

    def take(self) -> list[Any]:
        decoded, self.frames = self.decoded(), []
        return decoded


class Hub:
    """An app's hub state with its Ably side, and factories for sessions of both protocols."""

    def __init__(
        self,
        app: App = APP,
        *,
        node: int = 1,
        cluster: ClusterLink | None = None,
        wall_ms: Callable[[], int] = lambda: 1_800_000_000_000,
    ) -> None:
        self.node = node
        self.state = AppState(app, WebhookDispatcher(app, httpx.AsyncClient()), lambda: 1000.0, cluster)
        self.key = AblyKey.of(APP)
        self.auth = AblyAuth({self.key.key_name: self.key})
        self.ably = AblyApp(self.state, self.key, wall_ms, itertools.count(1), "test")
        self.ids = itertools.count(1)

    def pusher(self) -> tuple[Session, Link]:
        link = Link()
        session = Session(self.state, f"{self.node}.{next(self.ids)}", link, lambda: 1000.0)
        session.open()
        link.frames.clear()
        return session, link

    def ably_session(
        self, *, binary: bool = False, client_id: str | None = None, clock: Callable[[], float] = lambda: 1000.0
    ) -> tuple[AblySession, Link]:
        link = Link()
        credentials = self.auth.api_key(f"{self.key.key_name}:{self.key.secret}", client_id)
        session = AblySession(
            self.ably,
            self.auth,
            f"{self.node}.{next(self.ids)}",
            link,
            clock,
            credentials,
            binary=binary,
            echo=True,
            log_refusal=lambda code, reason, path: None,
        )
        session.open(resuming=False)
        link.frames.clear()
        return session, link


def send(session: AblySession, message: dict[str, Any]) -> None:
    session.receive(json.dumps(message).encode(), binary=False)


def pusher_send(session: Session, event: str, data: Any) -> None:
    session.receive(json.dumps({"event": event, "data": data}))


def test_all_pusher_channel_stays_on_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    hub = Hub()
    links = []
    for _ in range(3):
        session, link = hub.pusher()
        pusher_send(session, "pusher:subscribe", {"channel": "room"})
        links.append(link)
    for link in links:
        link.frames.clear()

    def mixed(*_: object) -> None:
        raise AssertionError("an all-Pusher channel took the mixed path")

    monkeypatch.setattr(AppState, "_deliver_mixed", mixed)
    assert hub.state.channels["room"].foreign == 0
    hub.state.publish("room", "ev", "data")
    [first], [second], [third] = (link.frames for link in links)
    assert first is second is third  # one frame object, written to every subscriber


def test_mixed_channel_encodes_once_per_format(monkeypatch: pytest.MonkeyPatch) -> None:
    hub = Hub()
    translations = []
    original = AblyApp._pusher_message

    def counting(self: AblyApp, channel: str, *args: Any) -> Any:
        translations.append(channel)
        return original(self, channel, *args)

    monkeypatch.setattr(AblyApp, "_pusher_message", counting)
    pusher_links: list[Link] = []
    json_links: list[Link] = []
    msgpack_links: list[Link] = []
    for _ in range(2):
        session, link = hub.pusher()
        pusher_send(session, "pusher:subscribe", {"channel": "room"})
        pusher_links.append(link)
        for binary, links in ((False, json_links), (True, msgpack_links)):
            ably, ably_link = hub.ably_session(binary=binary)
            attach = {"action": 10, "channel": "room"}
            ably.receive(msgpack.packb(attach) if binary else json.dumps(attach).encode(), binary=binary)
            links.append(ably_link)
    assert hub.state.channels["room"].foreign == 4
    for link in pusher_links + json_links + msgpack_links:
        link.frames.clear()

    hub.state.publish("room", "ev", '{"a":1}')
    assert translations == ["room"]
    for links in (pusher_links, json_links, msgpack_links):
        assert links[0].frames[0] is links[1].frames[0]
    assert pusher_links[0].decoded()[0] == {"event": "ev", "channel": "room", "data": '{"a":1}'}
    for link in (json_links[0], msgpack_links[0]):
        [message] = link.decoded()
        assert message["action"] == MESSAGE and message["channel"] == "room"
        serial = f"{message['channelSerial']}:0"
        assert message["messages"] == [
            {"name": "ev", "action": 0, "serial": serial, "data": '{"a":1}', "encoding": "json"}
        ]

    hub.state.publish("room", "plain", "not json {")
    message = json_links[0].decoded()[-1]
    serial = f"{message['channelSerial']}:0"
    assert message["messages"] == [{"name": "plain", "action": 0, "serial": serial, "data": "not json {"}]


def test_foreign_count_follows_attach_detach_and_close() -> None:
    hub = Hub()
    ably, _ = hub.ably_session()
    other, _ = hub.ably_session()
    send(ably, {"action": 10, "channel": "room"})
    send(ably, {"action": 10, "channel": "room"})  # attaching twice is one subscription
    send(other, {"action": 10, "channel": "room"})
    assert hub.state.channels["room"].foreign == 2 and len(hub.state.channels["room"].subscribers) == 2
    send(ably, {"action": 12, "channel": "room"})
    assert hub.state.channels["room"].foreign == 1
    send(other, {"action": 7})  # CLOSE
    other.connection_lost()
    assert "room" not in hub.state.channels and not hub.ably.attachments


def test_ably_attachments_count_for_pusher_subscription_count() -> None:
    """With ``subscription_count`` on, Pusher subscribers hear of Ably attachments and detachments too."""
    hub = Hub(replace(APP, subscription_count=True))
    session, link = hub.pusher()
    pusher_send(session, "pusher:subscribe", {"channel": "room"})
    ably, _ = hub.ably_session()
    link.frames.clear()
    send(ably, {"action": 10, "channel": "room"})
    send(ably, {"action": 12, "channel": "room"})
    counts = [json.loads(frame["data"])["subscription_count"] for frame in link.take()]
    assert counts == [2, 1]


def test_pusher_presence_reaches_ably_per_connection() -> None:
    """Each Pusher connection of a member is an Ably member (connectionId = socket id); Pusher peers still see the
    user once."""
    hub = Hub()
    ably, ably_link = hub.ably_session()
    send(ably, {"action": 10, "channel": "presence-room"})
    channel_data = '{"user_id":"pat","user_info":{"name":"Pat"}}'
    sessions = []
    for _ in range(2):
        session, _link = hub.pusher()
        auth = channel_auth("key", "secret", session.socket_id, "presence-room", channel_data)
        pusher_send(
            session, "pusher:subscribe", {"channel": "presence-room", "auth": auth, "channel_data": channel_data}
        )
        sessions.append(session)
    attached, *entered = ably_link.take()
    assert attached["action"] == 11
    assert [(m["presence"][0]["action"], m["presence"][0]["connectionId"]) for m in entered] == [
        (2, sessions[0].socket_id),
        (2, sessions[1].socket_id),
    ]
    assert entered[0]["presence"][0]["data"] == '{"name":"Pat"}' and entered[0]["presence"][0]["encoding"] == "json"
    assert len(hub.ably.members("presence-room")) == 2 and hub.state.presence_hash("presence-room") == {
        "pat": '{"name":"Pat"}'
    }
    # The same member carries the same id live, in the presence set and in what a cluster snapshot stores.
    first = sessions[0].socket_id
    assert entered[0]["presence"][0]["id"] == f"{first}:1:0"  # socket:join:0, joins counted from 1 by the app
    assert {m["connectionId"]: m["id"] for m in hub.ably.members("presence-room")}[first] == f"{first}:1:0"
    assert {item["connectionId"]: (name, item["id"]) for name, item in hub.ably.held()}[first] == (
        "presence-room",
        f"{first}:1:0",
    )
    pusher_send(sessions[0], "pusher:unsubscribe", {"channel": "presence-room"})
    [left] = ably_link.take()
    assert (left["presence"][0]["action"], left["presence"][0]["clientId"]) == (3, "pat")
    assert left["presence"][0]["id"] == f"{first}:1:1"  # newer than the enter by Ably's comparison of ids
    assert ("presence-room", first) not in hub.ably._pusher_joins  # its join's number goes with it
    assert [item["connectionId"] for _, item in hub.ably.held()] == [sessions[1].socket_id]


def test_ably_members_are_pusher_members_per_user() -> None:
    """Ably members of a ``presence-`` channel join Pusher's presence: ``member_added`` on the user's first
    connection, ``member_removed`` on the last; presence on other channels stays on the Ably side."""
    hub = Hub()
    watcher, watcher_link = hub.pusher()
    auth = channel_auth("key", "secret", watcher.socket_id, "presence-room", '{"user_id":"w"}')
    pusher_send(
        watcher, "pusher:subscribe", {"channel": "presence-room", "auth": auth, "channel_data": '{"user_id":"w"}'}
    )
    watcher_link.frames.clear()
    connections = [hub.ably_session(client_id="ann")[0] for _ in range(2)]
    for index, connection in enumerate(connections):
        send(connection, {"action": 10, "channel": "presence-room"})
        send(
            connection,
            {
                "action": 14,
                "channel": "presence-room",
                "msgSerial": 0,
                "presence": [{"action": 2, "data": {"name": "Ann", "n": index}}],
            },
        )
    added = watcher_link.take()
    assert [f["event"] for f in added] == ["pusher_internal:member_added"]
    assert json.loads(added[0]["data"]) == {"user_id": "ann", "user_info": {"name": "Ann", "n": 0}}
    send(connections[0], {"action": 7})  # CLOSE
    connections[0].connection_lost()
    assert not watcher_link.frames
    send(connections[1], {"action": 14, "channel": "presence-room", "msgSerial": 1, "presence": [{"action": 3}]})
    [removed] = watcher_link.take()
    assert removed["event"] == "pusher_internal:member_removed"

    send(connections[1], {"action": 10, "channel": "lobby"})
    send(connections[1], {"action": 14, "channel": "lobby", "msgSerial": 2, "presence": [{"action": 2}]})
    assert [m["clientId"] for m in hub.ably.members("lobby")] == ["ann"]
    assert hub.state.presence_hash("lobby") == {}


def test_app_ably_key_default_explicit_and_checked(tmp_path: Path) -> None:
    assert App(app_id="app-id", key="app-key", secret="app-secret").ably_api_key == "app-id.app-key:app-secret"
    assert replace(APP, ably_key="a.b:c").ably_api_key == "a.b:c"
    config = tmp_path / "relay.toml"
    config.write_text('[[apps]]\napp_id = "1"\nkey = "k"\nsecret = "s"\nably_key = "myapp.main:sekret"\n')
    [app] = load_config(config, defaults=EmulatorConfig(apps=(APP,))).apps
    assert app.ably_api_key == "myapp.main:sekret"
    config.write_text('[[apps]]\napp_id = "1"\nkey = "k"\nsecret = "s"\nably_key = "no-colon"\n')
    with pytest.raises(ConfigError, match="ably_key"):
        load_config(config, defaults=EmulatorConfig(apps=(APP,)))


def test_two_apps_sharing_a_key_name_are_refused() -> None:
    apps = (replace(APP, ably_key="x.y:1"), replace(APP, app_id="2", key="k2", ably_key="x.y:2"))
    with pytest.raises(
        ConfigError,
        match=r"two apps share the Ably key name 'x\.y' \(app_id '1' and app_id '2': give one an ably_key\)",
    ):
        EmulatorConfig(apps=apps)


def test_ably_client_settings() -> None:
    config = EmulatorConfig(apps=(App(app_id="app-id", key="app-key", secret="app-secret"),))
    text = ably_client_settings(config, "127.0.0.1", 6001)
    assert 'new Ably.Realtime({ key: "app-id.app-key:app-secret", endpoint: "127.0.0.1", port: 6001, tls: false' in text
    assert 'AblyRealtime(key="app-id.app-key:app-secret", endpoint="127.0.0.1:6001", tls=False)' in text
    assert "use_token_auth=True" in text
    assert "ably://app-id.app-key:app-secret@127.0.0.1:6001?tls=false" in text
    tls = ably_client_settings(replace(config, tls_cert="c.pem", tls_key="k.pem"), "localhost", 443)
    assert "tlsPort: 443, tls: true" in tls and "use_token_auth" not in tls


def test_another_nodes_presence_reaches_subscribers_once_per_change() -> None:
    """The cluster can deliver a change twice (a snapshot showed it before the bus did, or a node's goodbye overtook
    its last message): the replica sends on only what changed it."""
    hub = Hub()
    subscriber, link = hub.ably_session()
    send(subscriber, {"action": 10, "channel": "room"})
    link.frames.clear()
    member = {"id": "9.5:0:0", "clientId": "ann", "connectionId": "9.5", "timestamp": 1, "data": "hi"}

    def message(*items: dict[str, Any]) -> dict[str, Any]:
        return {"action": 14, "channel": "room", "timestamp": 2, "presence": list(items)}

    hub.ably.remote_presence(9, "room", message({**member, "action": 2}))
    hub.ably.remote_presence(9, "room", message({**member, "action": 2}))  # the same ENTER again
    leave = {**member, "id": "9.5:1:0", "action": 3}
    hub.ably.remote_presence(9, "room", message(leave, {**leave, "clientId": "nobody"}))  # one of two is news
    hub.ably.remote_presence(9, "room", message(leave))  # the same LEAVE again
    presence = [m for m in link.take() if m["action"] == 14]
    assert [[(item["clientId"], item["action"]) for item in m["presence"]] for m in presence] == [
        [("ann", 2)],
        [("ann", 3)],
    ]
    assert hub.ably.remote_members == {}


def test_ably_channel_names_are_refused_with_control_characters_only() -> None:
    """A control character in a channel name is refused (40010): it would also break the cluster bus's framing.
    Other characters Ably allows stay allowed, spaces, emoji sequences and all."""
    for name in ("news\x1fx", "tab\there", "del\x7f"):
        with pytest.raises(AblyError) as refused:
            check_channel_name(name)
        assert refused.value.code == 40010 and "control characters are not allowed" in refused.value.message
    for name in ("rooms: café\u00a0bar", "family-\U0001f468\u200d\U0001f469", "a" * 250):
        assert check_channel_name(name) == name


def test_idempotent_publishes_are_remembered_for_the_window_then_forgotten_in_order() -> None:
    """A repeat within Ably's 2 minutes is answered as the first and delivered to nobody; past them it is a new
    publish, and the app no longer holds the first (what it holds is bounded by the window, not by a size past which
    every publish walked all of it: 5 ms a publish at 15,000 held). A publish remembered again after its expiry is
    not forgotten at its first expiry."""
    clock = [1_800_000_000_000]
    hub = Hub(wall_ms=lambda: clock[0])
    subscriber, link = hub.pusher()
    pusher_send(subscriber, "pusher:subscribe", {"channel": "room"})
    link.frames.clear()

    def publish(message_id: str) -> tuple[str, list[str]]:
        return hub.ably.publish("room", [Message("n", "x", id=f"{message_id}:0")], connection_id=None, exclude=None)

    first = {message_id: publish(message_id) for message_id in ("a", "b", "c")}
    assert len(link.take()) == 3
    clock[0] += 60_000
    assert publish("a") == first["a"]
    assert link.take() == []
    clock[0] += 60_000  # a, b and c are now 2 minutes old
    again = publish("a")
    assert again != first["a"]
    assert [frame["event"] for frame in link.take()] == ["n"]
    assert hub.ably._published.keys() == {("room", ("a:0",))}
    clock[0] += 60_000
    assert publish("a") == again, "remembered again at its second publish: still within the window"
    assert link.take() == []


def test_a_publish_read_from_redis_is_kept_for_the_time_it_had_left_among_later_ones() -> None:
    """A node whose bus subscription dropped reads the idempotent publishes it missed from Redis: each is answered
    as the first until its own window ends, though publishes remembered since end after it."""
    clock = [1_800_000_000_000]
    hub = Hub(wall_ms=lambda: clock[0])

    def publish(message_id: str) -> tuple[str, list[str]]:
        return hub.ably.publish("room", [Message("n", "x", id=f"{message_id}:0")], connection_id=None, exclude=None)

    later = publish("later")  # its window ends at 120 s
    hub.ably.published_elsewhere_before("room", ("missed:0",), "missed", ["0000000000000009:0"], 10_000)
    hub.ably.published_elsewhere_before("room", ("later:0",), "elsewhere", ["elsewhere"], 5_000)  # known: kept as is
    assert publish("missed") == ("missed", ["0000000000000009:0"])
    assert publish("later") == later
    clock[0] += 10_000  # the missed one's window is over, the later one's is not
    assert publish("later") == later
    # The same ids published again elsewhere: read from Redis, over the expired entry not yet swept
    hub.ably.published_elsewhere_before("room", ("missed:0",), "missed", ["000000000000000a:0"], 5_000)
    assert publish("missed") == ("missed", ["000000000000000a:0"])
    clock[0] += 5_000
    assert publish("missed") not in (("missed", ["0000000000000009:0"]), ("missed", ["000000000000000a:0"]))
    assert [key for _, key in hub.ably._published_order] == [("room", ("later:0",)), ("room", ("missed:0",))]


def test_a_pusher_member_already_present_on_another_node_enters_ably_presence_with_its_first_info() -> None:
    """Pusher clients saw alice's first connection's info (on another node), Ably clients her own here: ENTER with
    "second", LEAVE with "first". One info, the first connection's, on both protocols as on one node."""
    hub = Hub()
    hub.state.remote_member_joined(2, "presence-room", "alice", '{"name":"first"}')
    ably, ably_link = hub.ably_session()
    send(ably, {"action": 10, "channel": "presence-room"})
    ably_link.take()
    session, _ = hub.pusher()
    channel_data = '{"user_id":"alice","user_info":{"name":"second"}}'
    auth = channel_auth("key", "secret", session.socket_id, "presence-room", channel_data)
    pusher_send(session, "pusher:subscribe", {"channel": "presence-room", "auth": auth, "channel_data": channel_data})
    pusher_send(session, "pusher:unsubscribe", {"channel": "presence-room"})
    presence = [message["presence"][0] for message in ably_link.take() if message["action"] == 14]
    assert [(item["action"], item["connectionId"], item["data"]) for item in presence] == [
        (2, session.socket_id, '{"name":"first"}'),
        (3, session.socket_id, '{"name":"first"}'),
    ]
    assert hub.state.presence_hash("presence-room") == {"alice": '{"name":"first"}'}


def test_an_app_remembers_at_most_so_many_idempotent_publishes(monkeypatch: pytest.MonkeyPatch) -> None:
    """The SDKs give every REST publish ids: bounded by the window alone, what an app held followed the publish rate.
    Past the bound (message ids, as a publish of many messages weighs as many) the oldest go first, and a retry of
    one is published again."""
    monkeypatch.setattr(ably_hub, "MAX_REMEMBERED_IDS", 3)
    hub = Hub()

    def publish(*ids: str) -> tuple[str, list[str]]:
        messages = [Message("n", "x", id=message_id) for message_id in ids]
        return hub.ably.publish("room", messages, connection_id=None, exclude=None)

    first = {ids: publish(*ids) for ids in (("a:0",), ("b:0",), ("c:0",))}
    assert publish("c:0") == first[("c:0",)] and publish("a:0") == first[("a:0",)]
    two = publish("d:0", "d:1")  # 5 ids: a and b go
    assert hub.ably._published.keys() == {("room", ("c:0",)), ("room", ("d:0", "d:1"))}
    assert publish("d:0", "d:1") == two
    assert publish("a:0") != first[("a:0",)]  # forgotten: published again, and c goes
    assert hub.ably._published.keys() == {("room", ("d:0", "d:1")), ("room", ("a:0",))}
    assert hub.ably._remembered_ids == 3
