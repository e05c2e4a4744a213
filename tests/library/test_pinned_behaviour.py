"""Behaviour a mutation audit found no test pinning down: each test fails when its line is mutated."""

from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import threading
import time
from collections.abc import Iterator
from typing import ClassVar

import pytest
import respx

from relay import Event, PresenceMember, Relay, User
from relay.errors import PermissionDenied, ProviderError, StaleTimestamp
from relay.protocol.signing import authorize_channel
from relay.rules import ChannelRules, Decision, pattern_admits
from relay.senders import RetryPolicy

KEY, SECRET = "app-key", "app-secret"


def test_encrypted_channel_auth_refuses_a_33_byte_master_key() -> None:
    """S1: a master key of 33 bytes is as wrong as one of 31."""
    with pytest.raises(ValueError, match=r"^the encryption master key must be 32 bytes, got 33$"):
        authorize_channel(KEY, SECRET, "123.456", "private-encrypted-x", encryption_master_key=b"k" * 33)


def test_a_pattern_without_placeholders_does_not_admit_a_longer_name() -> None:
    """S2: ``pattern_admits("private-admin", …)`` admits that channel only, never ``private-admins``, also when the
    values passed are the user's, shared with patterns that have placeholders (the whole-name rule of
    relay/rules.py's docstring)."""
    rules = ChannelRules()

    @rules.channel("private-*", whole_name=True)
    def staff(user: User | None, channel: str) -> bool:
        values = {"sub": user.id} if user is not None else {}
        return any(pattern_admits(pattern, channel, values) for pattern in ("private-admin", "private-user-{sub}"))

    alice = User("alice")
    assert rules.authorize(alice, "private-admin") == Decision("private-admin", alice, "private-*")
    assert rules.authorize(alice, "private-user-alice") == Decision("private-user-alice", alice, "private-*")
    with pytest.raises(PermissionDenied) as raised:
        rules.authorize(alice, "private-admins")
    assert str(raised.value) == "access to 'private-admins' denied"


def test_a_webhook_from_an_hour_in_the_future_is_refused_as_stale() -> None:
    """S3: the replay window applies both ways: ``time_ms`` an hour ahead is refused, as one an hour behind."""
    client = Relay.from_url(f"pusher://{KEY}:{SECRET}@api-eu.pusher.com/apps/1")
    future = int((time.time() + 3600) * 1000)
    body = json.dumps({"time_ms": future, "events": [{"name": "channel_occupied", "channel": "orders"}]}).encode()
    signature = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    headers = {"Content-Type": "application/json", "X-Pusher-Key": KEY, "X-Pusher-Signature": signature}
    with pytest.raises(StaleTimestamp) as raised:
        client.verify_webhook(headers, body)
    message = str(raised.value)
    assert message.startswith("webhook time_ms is 3") and message.endswith(
        " s from now; over 300 s is a replay (or a clock to fix)"
    ), message


class _Failing(http.server.BaseHTTPRequestHandler):
    posts: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        type(self).posts.append(self.path.partition("?")[0])
        body = b"internal error"
        self.send_response(500)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def failing_server() -> Iterator[tuple[int, list[str]]]:
    posts: list[str] = []  # the path of each POST the server answered 500
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), type("Handler", (_Failing,), {"posts": posts}))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1], posts
    finally:
        server.shutdown()
        server.server_close()


def test_a_failed_batch_publish_is_sent_once_not_retried(failing_server: tuple[int, list[str]]) -> None:
    """S4: a batch is not idempotent (a retry may publish its events twice): a 500 is raised after one POST."""
    port, posts = failing_server
    retry = RetryPolicy(attempts=3, backoff=0.001, max_delay=1.0, timeout=5.0)
    client = Relay(f"pusher://{KEY}:{SECRET}@127.0.0.1:{port}/apps/1?tls=false", retry=retry)
    with pytest.raises(ProviderError) as raised:
        client.publish_batch([Event("orders", "created", {"id": 1}), Event("orders", "paid", {"id": 1})])
    assert str(raised.value) == f"the Pusher-protocol server at 127.0.0.1:{port} answered 500: internal error"
    assert posts == ["/apps/1/batch_events"], posts


def test_ably_presence_keeps_each_users_first_connection(respx_mock: respx.MockRouter) -> None:
    """S8: Ably lists a member per connection; the library, as Pusher, lists alice once, with the data of her first
    connection in Ably's answer (the laptop)."""
    route = respx_mock.get("https://rest.ably.io/channels/presence-room/presence").respond(
        200,
        json=[
            {"clientId": "alice", "connectionId": "laptop", "action": 1, "data": {"device": "laptop"}},
            {"clientId": "bob", "connectionId": "bob-1", "action": 1, "data": {"device": "desktop"}},
            {"clientId": "alice", "connectionId": "phone", "action": 1, "data": {"device": "phone"}},
        ],
    )
    client = Relay.from_url("ably://appid.keyid:ably-Secret-5a4b3c")
    members = client.presence_members("presence-room")
    assert route.call_count == 1
    assert route.calls.last.request.url.path == "/channels/presence-room/presence"
    assert members == [
        PresenceMember("alice", {"device": "laptop"}),
        PresenceMember("bob", {"device": "desktop"}),
    ], members
