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


def test_a_tls_server_on_its_own_port_is_told_as_wss_port_too() -> None:
    """pusher-js dials wsHost:wssPort when forceTLS is on, wssPort 443 unless given: a self-hosted server behind TLS
    on 6001 was dialled on 443 by a page passing the config on."""
    tls = frontend_config(Relay.from_url("pusher://k:s@soketi.example.com:6001/apps/1"))
    assert (tls["forceTLS"], tls["wsHost"], tls["wsPort"], tls["wssPort"]) == (True, "soketi.example.com", 6001, 6001)
    plain = frontend_config(Relay.from_url("pusher://k:s@soketi.example.com/apps/1?tls=false"))
    assert (plain["forceTLS"], plain["wsPort"], plain["wssPort"]) == (False, 80, 80)
    hosted = frontend_config(Relay.from_url("pusher://k:s@eu/apps/1"))
    assert "wssPort" not in hosted and hosted["cluster"] == "eu"


def test_hosted_pusher_s_cluster_however_its_host_is_written() -> None:
    """A host written in capitals or with a trailing dot is hosted Pusher's: its cluster too, not mt1's."""
    for url in ("pusher://k:s@API-EU.PUSHER.COM/apps/1", "pusher://k:s@api-eu.pusher.com./apps/1"):
        settings = frontend_config(Relay.from_url(url))
        assert (settings["cluster"], "wsHost" in settings) == ("eu", False)
    assert frontend_config(Relay.from_url("pusher://k:s@api.pusherapp.com/apps/1"))["cluster"] == "mt1"
