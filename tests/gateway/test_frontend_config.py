"""``relay.gateway.frontend_config``: a page's connection settings from either client, with the auth endpoints of
the app that serves them (the gateway's by default, as tests/web/test_gateway.py's client-config test shows;
``relay.web.auth_router``'s when given)."""

from __future__ import annotations

from relay import Relay
from relay.gateway import frontend_config

EMULATOR_URL = "emulator://app-key:app-secret@127.0.0.1:6001/apps/app-id"
ABLY_URL = "ably://app-id.key:secret@127.0.0.1:6001?tls=false"


def test_a_sync_client_and_the_auth_router_endpoints() -> None:
    with Relay.from_url(EMULATOR_URL) as client:
        settings = frontend_config(client, channel_auth="/pusher/auth", user_auth="/pusher/user-auth")
    assert (settings["channelAuthEndpoint"], settings["userAuthEndpoint"]) == ("/pusher/auth", "/pusher/user-auth")


def test_ably_auth_url_is_the_channel_route_unless_given() -> None:
    client = Relay.from_url(ABLY_URL)
    assert frontend_config(client)["authUrl"] == "/v1/auth/channel"
    assert frontend_config(client, channel_auth="/pusher/auth", ably_auth="/ably/token")["authUrl"] == "/ably/token"
    assert frontend_config(client)["clientOptions"]["port"] == 6001
