"""The connection state machine, in process: a Session over a recording link, no sockets."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace

import httpx
import pytest

from relay.emulator.config import App
from relay.emulator.hub import CACHE_MISS_INTERVAL, AppState
from relay.emulator.session import Session
from relay.emulator.webhooks import WebhookDispatcher
from relay.emulator.wire import PING_FRAME
from relay.protocol.channels import Limits
from relay.protocol.signing import channel_auth, user_auth

APP = App(app_id="1", key="key", secret="secret", activity_timeout=10, pong_timeout=5)


@dataclass
class RecordingLink:
    frames: list[dict[str, object]] = field(default_factory=list)
    closed_with: tuple[int, str] | None = None
    pings: int = 0  # WebSocket ping frames written

    def write(self, frame: bytes) -> None:
        if frame == PING_FRAME:
            self.pings += 1
            return
        header = 2 if frame[1] < 126 else 4
        self.frames.append(json.loads(frame[header:]))

    def close(self, code: int, reason: str) -> None:
        self.closed_with = (code, reason)

    def events(self) -> list[object]:
        return [frame["event"] for frame in self.frames]

    def take(self) -> list[dict[str, object]]:
        taken, self.frames = self.frames, []
        return taken


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make_state(clock: Clock, app: App = APP) -> AppState:
    return AppState(app, WebhookDispatcher(app, httpx.AsyncClient()), clock)


def connect(state: AppState, clock: Clock, n: int = 1) -> tuple[Session, RecordingLink]:
    link = RecordingLink()
    session = Session(state, f"1.{n}", link, clock)
    session.open()
    return session, link


def send(session: Session, event: str, data: object, channel: str | None = None) -> None:
    frame: dict[str, object] = {"event": event, "data": data}
    if channel is not None:
        frame["channel"] = channel
    session.receive(json.dumps(frame))


def test_open_sends_connection_established_with_string_data(clock: Clock) -> None:
    _, link = connect(make_state(clock), clock)
    (frame,) = link.take()
    assert frame["event"] == "pusher:connection_established"
    assert isinstance(frame["data"], str)
    assert json.loads(frame["data"]) == {"socket_id": "1.1", "activity_timeout": 10}


def test_private_subscription_needs_a_valid_signature(clock: Clock) -> None:
    session, link = connect(make_state(clock), clock)
    link.take()
    send(session, "pusher:subscribe", {"channel": "private-a", "auth": "key:bad"})
    (error,) = link.take()
    assert error["event"] == "pusher:subscription_error"
    assert error["data"] == {
        "type": "AuthError",
        "error": "subscription to 'private-a': invalid signature: the string to sign is '1.1:private-a' (HMAC-SHA256 "
        "in hex, with the secret of key 'key')",
        "status": 401,
    }
    send(
        session, "pusher:subscribe", {"channel": "private-a", "auth": channel_auth("key", "secret", "1.1", "private-a")}
    )
    assert link.events() == ["pusher_internal:subscription_succeeded"]
    assert link.closed_with is None


def test_presence_counts_users_not_connections(clock: Clock) -> None:
    state = make_state(clock)
    sessions = [connect(state, clock, n) for n in (1, 2, 3)]
    members = ['{"user_id":"alice","user_info":{}}', '{"user_id":"alice","user_info":{}}', '{"user_id":"bob"}']
    for (session, _), channel_data in zip(sessions, members, strict=True):
        auth = channel_auth("key", "secret", session.socket_id, "presence-room", channel_data)
        send(session, "pusher:subscribe", {"channel": "presence-room", "auth": auth, "channel_data": channel_data})
    first, second, third = (link for _, link in sessions)
    assert [f["event"] for f in first.frames][1:] == [
        "pusher_internal:subscription_succeeded",
        "pusher_internal:member_added",
    ]
    joined = json.loads(str(third.frames[-1]["data"]))
    assert joined["presence"]["count"] == 2
    assert sorted(joined["presence"]["ids"]) == ["alice", "bob"]
    for link in (first, second, third):
        link.take()
    sessions[0][0].connection_lost()
    assert third.frames == []
    sessions[1][0].connection_lost()
    assert third.events() == ["pusher_internal:member_removed"]
    assert json.loads(str(third.frames[0]["data"])) == {"user_id": "alice"}


def chat(state: AppState, clock: Clock) -> tuple[Session, RecordingLink, RecordingLink]:
    """A sender and a receiver on private-chat, their links emptied: the sender, its link, the receiver's link."""
    (sender, sender_link), (receiver, receiver_link) = connect(state, clock, 1), connect(state, clock, 2)
    for session in (sender, receiver):
        auth = channel_auth("key", "secret", session.socket_id, "private-chat")
        send(session, "pusher:subscribe", {"channel": "private-chat", "auth": auth})
    sender_link.take(), receiver_link.take()
    return sender, sender_link, receiver_link


def test_a_client_event_without_a_channel_or_off_one_s_channels_is_refused_by_name(clock: Clock) -> None:
    """Without a channel the refusal said "not subscribed to None"."""
    sender, sender_link, receiver_link = chat(make_state(clock, replace(APP, client_events=True)), clock)
    send(sender, "client-typing", {"who": "me"})
    send(sender, "client-typing", {"who": "me"}, channel="private-elsewhere")
    send(sender, "client-typing", {"who": "me"}, channel="private-chat")
    assert sender_link.take() == [
        {
            "event": "pusher:error",
            "data": {
                "code": None,
                "message": "Client event rejected: it names no channel (send it on a channel this connection is on)",
            },
        },
        {
            "event": "pusher:error",
            "data": {"code": None, "message": "Client event rejected: not subscribed to 'private-elsewhere'"},
        },
    ]
    assert receiver_link.events() == ["client-typing"]


def test_client_events_reach_others_only_and_are_rate_limited(clock: Clock) -> None:
    app = replace(APP, limits=Limits(client_events_per_second=2))
    sender, sender_link, receiver_link = chat(make_state(clock, app), clock)
    for _ in range(3):
        send(sender, "client-typing", {"who": "me"}, channel="private-chat")
    assert receiver_link.events() == ["client-typing", "client-typing"]
    assert receiver_link.frames[0]["data"] == '{"who":"me"}'
    assert sender_link.take() == [
        {"event": "pusher:error", "data": {"code": 4301, "message": "Client event rejected due to rate limit (2/s)"}}
    ]
    receiver_link.take()
    clock.now += 1.0
    send(sender, "client-typing", "again", channel="private-chat")
    assert receiver_link.take() == [{"event": "client-typing", "channel": "private-chat", "data": "again"}]
    assert sender_link.take() == []
    assert sender_link.closed_with is None


def test_the_client_event_limit_holds_in_any_one_second_span(clock: Clock) -> None:
    """Ten a second means ten in the second before each event, not ten in fixed windows from the first: an event at
    0 s and nine at 0.75 s leave room for one more at 1 s (the first has just left the last second), not ten, and
    nine more at 1.75 s. Refused events use none of the budget. (Times in sixteenths of a second: exact floats.)"""
    sender, sender_link, receiver_link = chat(make_state(clock), clock)
    start = clock.now

    def ticks_at(offset: float, numbers: range) -> None:
        clock.now = start + offset
        for n in numbers:
            send(sender, "client-tick", {"n": n}, channel="private-chat")

    ticks_at(0, range(1))
    ticks_at(0.75, range(1, 10))
    ticks_at(0.9375, range(10, 11))  # the first is still within the last second
    ticks_at(1.0, range(11, 13))  # it has just left: room for one
    ticks_at(1.6875, range(13, 14))  # the nine from 0.75 s are still within it
    ticks_at(1.75, range(14, 24))  # they have just left: room for nine
    relayed = [json.loads(str(frame["data"]))["n"] for frame in receiver_link.take()]
    assert relayed == [*range(10), 11, *range(14, 23)]
    refusal = {
        "event": "pusher:error",
        "data": {"code": 4301, "message": "Client event rejected due to rate limit (10/s)"},
    }
    assert sender_link.take() == [refusal] * 4  # 10, 12, 13 and 23
    assert sender_link.closed_with is None


def test_liveness_pings_then_closes_4201(clock: Clock) -> None:
    session, link = connect(make_state(clock), clock)
    link.take()
    clock.now += 9
    session.check_liveness(clock.now)
    assert link.frames == []
    clock.now += 2
    session.check_liveness(clock.now)
    assert link.take() == [{"event": "pusher:ping", "data": {}}]
    assert link.pings == 1  # a WebSocket ping too: either answer will do
    clock.now += 6
    session.check_liveness(clock.now)
    assert link.events() == ["pusher:error"]
    assert link.frames[0]["data"] == {"code": 4201, "message": "Pong reply not received"}
    assert link.closed_with == (4201, "Pong reply not received")


def test_any_frame_counts_as_activity(clock: Clock) -> None:
    session, link = connect(make_state(clock), clock)
    clock.now += 11
    session.check_liveness(clock.now)
    link.take()
    clock.now += 4
    send(session, "pusher:pong", {})
    clock.now += 4
    session.check_liveness(clock.now)
    assert link.frames == []
    assert link.closed_with is None


def test_bad_signin_closes_4009_and_good_signin_succeeds(clock: Clock) -> None:
    state = make_state(clock)
    good, good_link = connect(state, clock, 1)
    user_data = '{"id":"42"}'
    send(good, "pusher:signin", {"user_data": user_data, "auth": user_auth("key", "secret", "1.1", user_data)})
    assert good_link.frames[-1] == {"event": "pusher:signin_success", "data": {"user_data": user_data}}
    assert state.users["42"] == {"1.1": good}
    bad, bad_link = connect(state, clock, 2)
    send(bad, "pusher:signin", {"user_data": user_data, "auth": "key:0000"})
    assert bad_link.frames[-1]["data"] == {
        "code": 4009,
        "message": 'Signin failed: invalid signature: the string to sign is \'1.2::user::{"id":"42"}\' (HMAC-SHA256 '
        "in hex, with the secret of key 'key')",
    }
    assert bad_link.closed_with is not None and bad_link.closed_with[0] == 4009
    assert state.users == {"42": {"1.1": good}}
    assert good_link.closed_with is None
    good_link.take(), bad_link.take()
    state.publish("#server-to-user-42", "notice", '{"hi":1}')  # the HTTP API's send-to-user
    assert good_link.take() == [{"event": "notice", "channel": "#server-to-user-42", "data": '{"hi":1}'}]
    assert bad_link.frames == []


def test_malformed_frames_get_non_fatal_errors(clock: Clock) -> None:
    session, link = connect(make_state(clock), clock)
    link.take()
    for text in (
        "not json",
        "[]",
        '{"event": 5}',
        '{"event":"pusher:subscribe","data":[1]}',
        '{"event":"pusher:nope"}',
    ):
        session.receive(text)
    messages = [frame["data"]["message"] for frame in link.take()]  # type: ignore[index]
    assert messages == [
        "frame is not valid JSON",
        "frame must be a JSON object",
        "frame must have a string 'event'",
        "pusher:subscribe data must be a JSON object",
        "Unsupported event 'pusher:nope'",
    ]
    assert link.closed_with is None


def test_a_cache_miss_webhook_per_channel_at_most_every_interval(clock: Clock) -> None:
    state = make_state(clock)
    posted: list[dict[str, object]] = []
    state.webhooks.emit = posted.append  # type: ignore[method-assign]

    def misses() -> list[object]:
        return [event["channel"] for event in posted if event["name"] == "cache_miss"]

    for n in range(3):
        session, link = connect(state, clock, n)
        send(session, "pusher:subscribe", {"channel": "cache-a"})
        assert link.events()[-1] == "pusher:cache_miss"
    send(session, "pusher:subscribe", {"channel": "cache-b"})
    assert misses() == ["cache-a", "cache-b"]
    clock.now += CACHE_MISS_INTERVAL
    send(session, "pusher:unsubscribe", {"channel": "cache-a"})
    send(session, "pusher:subscribe", {"channel": "cache-a"})
    assert misses() == ["cache-a", "cache-b", "cache-a"]
