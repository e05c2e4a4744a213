"""A token refused by relay's token endpoints reaches ably-js as Ably's own refusals do: ``{"error": {"message",
"code", "statusCode"}}``. With ``{"error": "<reason>"}`` ably-js lost the 403 (it reads the status from the body's
error object), reported ``80019/401`` and asked for the token again every few seconds, for ever, with the reason
nowhere (RSA4d: a 403 from the auth URL fails the connection)."""

from __future__ import annotations

import httpx
from ablysupport import APP, KEY_NAME, KEY_SECRET, run_node
from fastapi import FastAPI

from relay import AsyncRelay
from relay.gateway import GatewaySettings
from relay.models import User
from relay.rules import ChannelRules
from relay.web import auth_router
from tests.conftest import StartEmulator
from tests.gateway.conftest import JWT_SECRET, StartGateway, hs_jwt
from tests.gateway.conftest import start_gateway as start_gateway


def ably_url(port: int) -> str:
    return f"ably://{KEY_NAME}:{KEY_SECRET}@127.0.0.1:{port}?tls=false"


async def test_ably_js_fails_for_good_on_a_token_the_gateway_refuses_and_shows_why(
    start_emulator: StartEmulator, start_gateway: StartGateway
) -> None:
    emulator = await start_emulator(app=APP)
    gateway = await start_gateway(GatewaySettings(relay_url=ably_url(emulator.port), jwt_secret=JWT_SECRET))
    run = await run_node(
        "gateway_token_refusal.mjs",
        emulator,
        env={"RELAY_GATEWAY_URL": gateway.url, "RELAY_JWT_ALICE": hs_jwt("alice")},
    )
    assert run.summary["checks"] == ["refused-fails-for-good", "malformed-fails-for-good", "allowed-receives"]
    assert run.summary["refusal"]["statusCode"] == 403


async def test_the_token_routes_refuse_in_ably_s_shape_and_the_pusher_routes_as_before(
    start_emulator: StartEmulator,
) -> None:
    """relay.web's /ably/token (an app's own endpoint) answers as the gateway's does; a Pusher provider's
    channel auth keeps the plain ``{"error": "…"}`` that the rest of the API gives."""
    emulator = await start_emulator(app=APP)
    rules = ChannelRules()
    rules.add("private-user-{user_id}", lambda user, user_id: user is not None and user.id == user_id)
    app = FastAPI()
    app.include_router(auth_router(AsyncRelay(ably_url(emulator.port)), rules, lambda request: User("alice")))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app") as client:
        refused = await client.post("/ably/token", data={"channel": "private-user-bob"})
        missing = await client.post("/ably/token", data={})
    assert refused.status_code == 403
    assert refused.json() == {
        "error": {"message": refused.json()["error"]["message"], "code": 40300, "statusCode": 403}
    }
    assert "private-user-bob" in refused.json()["error"]["message"]
    # A request repeated as it was is refused again: a 403, so that ably-js fails the connection, not a 400 it would
    # ask again for ever
    assert (missing.status_code, missing.json()["error"]["code"]) == (403, 40300)
    assert missing.json()["error"]["message"] == "channel_name is required (channel is read too)"
    pusher_app = FastAPI()
    pusher_url = f"emulator://{APP.key}:{APP.secret}@127.0.0.1:{emulator.port}/apps/{APP.app_id}"
    pusher_app.include_router(auth_router(AsyncRelay(pusher_url), rules, lambda request: User("alice")))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=pusher_app), base_url="http://app") as client:
        pusher_refused = await client.post("/pusher/auth", data={"socket_id": "1.2", "channel_name": "private-user-b"})
    assert pusher_refused.status_code == 403
    assert isinstance(pusher_refused.json()["error"], str)
