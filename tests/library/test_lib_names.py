"""Channel names and socket ids are checked by the rules of every configured provider."""

from __future__ import annotations

import pytest

from relay import Relay
from relay.errors import InvalidChannelName, InvalidSocketId

ABLY = "ably://app.key:secret@rest.ably.io"
PUSHER = "pusher://key:secret@eu/apps/1"


def test_ably_namespaced_channels_are_allowed_on_ably_only() -> None:
    body = Relay.from_url(ABLY).authorize_channel("any-connection", "chat:room", "alice")
    assert body["capability"] == '{"chat:room":["subscribe"]}'
    with pytest.raises(InvalidChannelName, match="characters outside"):
        Relay.from_url(PUSHER).authorize_channel("1.2", "chat:room")
    with pytest.raises(InvalidChannelName, match="characters outside"):
        Relay.from_url(f"mirror:{ABLY}|{PUSHER}").publish("chat:room", "e", {})
    with pytest.raises(InvalidChannelName, match="must not start with '\\['") as caught:
        Relay.from_url(ABLY).publish("[meta]channel.lifecycle", "e", {})
    assert caught.value.code == 40010


def test_socket_ids_follow_the_provider() -> None:
    with pytest.raises(InvalidSocketId):
        Relay.from_url(PUSHER).authorize_channel("not-a-socket", "private-a")
    with pytest.raises(InvalidSocketId):
        Relay.from_url(ABLY).authorize_channel("", "private-a")
