"""RELAY_JWT_USER_CLAIM: the claim that is the user's id, for an identity provider whose subjects no channel name can
hold. Auth0's ``auth0|42`` signed in, but ``POST /v1/users/auth0%7C42/events`` was a 400 (the id goes in the channel
``#server-to-user-{id}``), so such a user could never be sent an event. Through a real gateway and emulator, with real
HS256 JWTs and a raw WebSocket signed in with the gateway's answer."""

from __future__ import annotations

import json
import time

import httpx
import jwt
import pytest

from relay.errors import ConfigError
from relay.gateway import GatewaySettings
from tests.conftest import RunningEmulator
from tests.gateway.conftest import JWT_SECRET, TOKEN, RunningGateway, StartGateway, emulator_url, hs_jwt
from tests.gateway.test_gateway_identity import auth_status, join
from tests.gateway.test_gateway_rule_claims import next_frame, sign_in


@pytest.fixture
async def by_uid(start_gateway: StartGateway, emulator: RunningEmulator) -> RunningGateway:
    return await start_gateway(
        GatewaySettings.from_env(
            {
                "RELAY_URL": emulator_url(emulator),
                "RELAY_API_TOKEN": TOKEN,
                "RELAY_JWT_SECRET": JWT_SECRET,
                "RELAY_JWT_USER_CLAIM": "uid",
            }
        )
    )


async def test_an_auth0_user_signed_in_by_a_custom_claim_is_sent_its_event(
    by_uid: RunningGateway, emulator: RunningEmulator
) -> None:
    """Signed in as its ``uid`` claim, the user gets what ``POST /v1/users/auth0-42/events`` sends; the member id of a
    presence channel is that claim too. With the default (``sub``) the same user's id cannot be sent to: the 400."""
    ws, body = await sign_in(by_uid, emulator, hs_jwt("auth0|42", uid="auth0-42"))
    try:
        assert json.loads(body["user_data"])["id"] == "auth0-42"
        assert (await next_frame(ws))["event"] == "pusher:signin_success"
        async with httpx.AsyncClient(base_url=by_uid.url, headers={"authorization": f"Bearer {TOKEN}"}) as http:
            sent = await http.post("/v1/users/auth0-42/events", json={"event": "notice", "data": {"n": 1}})
            assert (sent.status_code, sent.json()) == (200, {"user_id": "auth0-42"})
            frame = await next_frame(ws)
            while frame["event"] != "notice":  # the user channel's subscription_succeeded comes first
                frame = await next_frame(ws)
            assert frame == {"event": "notice", "channel": "#server-to-user-auth0-42", "data": '{"n":1}'}
            refused = await http.post("/v1/users/auth0%7C42/events", json={"event": "notice", "data": {}})
            assert refused.status_code == 400
            assert refused.json()["error"].startswith("user id 'auth0|42' cannot be used: it goes in the channel")
    finally:
        await ws.close()
    member = await join(
        emulator, by_uid, "presence-room", headers={"authorization": f"Bearer {hs_jwt('auth0|42', uid='auth0-42')}"}
    )
    assert member["presence"]["ids"] == ["auth0-42"]


async def test_a_jwt_without_a_usable_user_claim_is_a_401_naming_it(by_uid: RunningGateway) -> None:
    """No such claim, or one that is no id (an object, a boolean, an empty string): 401 with the claim's name; an
    integer is its decimal, as a placeholder reads it. The gateway keeps serving the next user."""
    refusals = {
        "missing": (
            hs_jwt("auth0|42"),
            "the JWT has no 'uid' claim, which RELAY_JWT_USER_CLAIM names as the user's id",
        ),
        "an object": (
            hs_jwt("auth0|42", uid={"id": 1}),
            "the JWT's uid claim is an object: the user's id (RELAY_JWT_USER_CLAIM) is a string or an integer",
        ),
        "a boolean": (
            hs_jwt("auth0|42", uid=True),
            "the JWT's uid claim is a boolean: the user's id (RELAY_JWT_USER_CLAIM) is a string or an integer",
        ),
        "empty": (hs_jwt("auth0|42", uid=""), "the JWT's uid claim is empty: the gateway identifies the user by it"),
    }
    for case, (token, message) in refusals.items():
        assert await auth_status(by_uid, "presence-room", token) == (401, message), case
    assert await auth_status(by_uid, "presence-room", hs_jwt("auth0|7", uid=7)) == (200, "")


async def test_a_jwt_naming_its_user_by_the_custom_claim_needs_no_subject(
    by_uid: RunningGateway, emulator: RunningEmulator
) -> None:
    """With RELAY_JWT_USER_CLAIM=uid, a JWT of ``uid`` and ``exp`` alone (an application's own tokens) was the 401
    ``Token is missing the "sub" claim``, though the subject names no one there. A subject present is still checked
    (a string); ``exp`` is still required."""
    expires = int(time.time()) + 60
    without_subject = jwt.encode({"uid": "u-7", "exp": expires}, JWT_SECRET, algorithm="HS256")
    assert await auth_status(by_uid, "presence-room", without_subject) == (200, "")
    member = await join(emulator, by_uid, "presence-room", headers={"authorization": f"Bearer {without_subject}"})
    assert member["presence"]["ids"] == ["u-7"]
    numeric_subject = jwt.encode({"uid": "u-7", "sub": 7, "exp": expires}, JWT_SECRET, algorithm="HS256")
    assert await auth_status(by_uid, "presence-room", numeric_subject) == (
        401,
        "invalid JWT: its sub claim must be a string (RFC 7519 §4.1.2); put a numeric id in quotes",
    )
    no_expiry = jwt.encode({"uid": "u-7"}, JWT_SECRET, algorithm="HS256")
    assert await auth_status(by_uid, "presence-room", no_expiry) == (
        401,
        'invalid JWT: Token is missing the "exp" claim',
    )


def test_the_setting_is_checked_and_said_at_start() -> None:
    """RELAY_JWT_USER_CLAIM set but empty is the default, sub, as every other setting left empty; an empty claim name
    given in code is a ConfigError; a claim other than sub is in the start-up summary."""
    environment = {"RELAY_URL": "emulator://app-key:app-secret@127.0.0.1:1/apps/1", "RELAY_JWT_SECRET": JWT_SECRET}
    assert GatewaySettings.from_env({**environment, "RELAY_JWT_USER_CLAIM": " "}).jwt_user_claim == "sub"
    with pytest.raises(ConfigError) as empty:
        GatewaySettings(relay_url=environment["RELAY_URL"], jwt_secret=JWT_SECRET, jwt_user_claim="")
    assert str(empty.value) == "RELAY_JWT_USER_CLAIM is empty: name the JWT claim that is the user's id (default sub)"
    summary = GatewaySettings.from_env({**environment, "RELAY_JWT_USER_CLAIM": "uid"}).summary()
    assert (
        "users: JWTs verified with RELAY_JWT_SECRET (HS256), the user's id from the 'uid' claim (RELAY_JWT_USER_CLAIM)"
        in summary
    )
    assert "users: JWTs verified with RELAY_JWT_SECRET (HS256)" in GatewaySettings.from_env(environment).summary()
