"""The gateway's answers whatever the provider: a missing encryption key or an operation the provider lacks is a
JSON error, not a crash; an Ably connection key is a socket_id; a channel placeholder never matches a missing claim.
Respx stands in only for Ably's cloud."""

from __future__ import annotations

import base64
import json
import re
import time

import httpx
import jwt
import respx

from relay.gateway import GatewaySettings, create_app
from relay.gateway.rules_file import RuleSpec
from tests.conftest import RunningEmulator

ABLY_KEY = "appid.keyid:ably-Secret-5a4b3c"  # key name:secret, sent as Basic auth
ABLY_URL = f"ably://{ABLY_KEY}"
ABLY_BASE = "https://rest.ably.io"
TOKEN = "backend-token"
JWT_SECRET = "jwt-secret-for-tests-0123456789abcdef"


def user_jwt(sub: str = "alice", **claims: object) -> str:
    payload = {"sub": sub, "name": sub.title(), "exp": int(time.time()) + 60, **claims}
    return jwt.encode(payload, JWT_SECRET, algorithm="HS256")


async def gateway_for(settings: GatewaySettings) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=create_app(settings), raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://gateway")


async def test_gateway_encrypted_channel_auth_without_a_master_key_names_the_setting(emulator: RunningEmulator) -> None:
    """The gateway's own misconfiguration is a 500 whose JSON names the missing setting, not a bare 'Internal Server
    Error'."""
    settings = GatewaySettings(
        relay_url=f"emulator://app-key:app-secret@127.0.0.1:{emulator.port}/apps/1",
        api_token=TOKEN,
        jwt_secret=JWT_SECRET,
        rules=(RuleSpec("private-encrypted-*"),),
    )
    async with await gateway_for(settings) as gateway:
        response = await gateway.post(
            "/v1/auth/channel",
            data={"socket_id": "1.1", "channel_name": "private-encrypted-orders"},
            headers={"authorization": f"Bearer {user_jwt()}"},
        )
    assert response.status_code == 500
    assert response.headers["content-type"].startswith("application/json"), response.text
    assert "encryption_master_key" in response.json()["error"]


async def test_gateway_publish_accepts_an_ably_connection_key_as_socket_id(respx_mock: respx.MockRouter) -> None:
    """On Ably the socket_id is the connection key (docs/providers.md), so an Ably frontend can exclude itself; the
    provider's adapter checks its form, not the gateway's schema."""
    route = respx_mock.post(f"{ABLY_BASE}/channels/orders/messages").respond(
        201, json={"channel": "orders", "messageId": "m:0"}
    )
    settings = GatewaySettings(relay_url=ABLY_URL, api_token=TOKEN, jwt_secret=JWT_SECRET)
    async with await gateway_for(settings) as gateway:
        response = await gateway.post(
            "/v1/publish",
            json={"channel": "orders", "event": "e", "data": {"id": 1}, "socket_id": "hjk3XS!CJ3xW5E3-mv9Sq"},
            headers={"authorization": f"Bearer {TOKEN}"},
        )
    assert response.status_code == 200, response.text
    [call] = route.calls
    assert call.request.headers["authorization"] == "Basic " + base64.b64encode(ABLY_KEY.encode()).decode()
    [message] = json.loads(call.request.content)
    assert message == {
        "name": "e",
        "data": '{"id":1}',
        "encoding": "json",
        "id": message["id"],
        "connectionKey": "hjk3XS!CJ3xW5E3-mv9Sq",
    }
    assert re.fullmatch(r"[A-Za-z0-9_-]{12,}:0", message["id"]), "an idempotent Ably message id"


async def test_gateway_user_auth_on_ably_is_a_client_error_not_a_500() -> None:
    """An operation the provider lacks (docs/providers.md) is 501 Not Implemented, not a crash."""
    settings = GatewaySettings(relay_url=ABLY_URL, api_token=TOKEN, jwt_secret=JWT_SECRET)
    async with await gateway_for(settings) as gateway:
        response = await gateway.post(
            "/v1/auth/user", data={"socket_id": "1.1"}, headers={"authorization": f"Bearer {user_jwt()}"}
        )
    assert response.status_code == 501, response.text
    assert "authenticate_user" in response.json()["error"]


# -- gateway channel rules -----------------------------------------------------------------------------------------


async def test_a_placeholder_never_matches_a_missing_claim(emulator: RunningEmulator) -> None:
    """A {placeholder} must equal the JWT claim of the same name (docs/gateway.md): a user without a team claim is
    not allowed on private-team-None.{sub}."""
    settings = GatewaySettings(
        relay_url=f"emulator://app-key:app-secret@127.0.0.1:{emulator.port}/apps/1",
        api_token=TOKEN,
        jwt_secret=JWT_SECRET,
        rules=(RuleSpec("private-team-{team}.{sub}"),),
    )
    async with await gateway_for(settings) as gateway:
        response = await gateway.post(
            "/v1/auth/channel",
            data={"socket_id": "1.1", "channel_name": "private-team-None.alice"},
            headers={"authorization": f"Bearer {user_jwt('alice')}"},  # no "team" claim at all
        )
    assert response.status_code == 403, response.text
