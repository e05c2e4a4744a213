"""Fixes from a second fresh-eyes audit of the gateway, each against a real emulator and a real gateway."""

from __future__ import annotations

import httpx
import pytest

from relay.gateway import GatewaySettings
from tests.conftest import RunningEmulator
from tests.gateway.conftest import JWT_SECRET, TOKEN, RunningGateway, StartGateway, hs_jwt

API = {"authorization": f"Bearer {TOKEN}"}


def ably_url(emulator: RunningEmulator) -> str:
    """The emulator's Ably side, for its default app (key ``{app_id}.{key}:{secret}``)."""
    app = emulator.app
    return f"ably://{app.app_id}.{app.key}:{app.secret}@{emulator.host}:{emulator.port}?tls=false"


async def publish(gateway: RunningGateway, path: str, body: object) -> httpx.Response:
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        return await http.post(path, json=body, headers=API)


LONG = "orders-" + "a" * 243  # 250 characters: an Ably channel name (up to 2,048), over a Pusher server's 200


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/publish", {"channel": LONG, "event": "e", "data": {"id": 1}}),
        ("/v1/publish", {"channels": [LONG], "event": "e", "data": {"id": 1}}),
        ("/v1/publish/batch", {"events": [{"channel": LONG, "event": "e", "data": {"id": 1}}]}),
    ],
)
async def test_a_channel_name_ably_takes_is_published_whichever_field_names_it(
    start_gateway: StartGateway, emulator: RunningEmulator, path: str, body: object
) -> None:
    """A publish's ``channel`` (and a batch event's) was refused by the schema past 200 characters (422), while the
    same name in ``channels`` was published: on Ably, whose names go up to 2,048 characters, one name was refused or
    published by which field held it."""
    gateway = await start_gateway(GatewaySettings(relay_url=ably_url(emulator), api_token=TOKEN, jwt_secret=JWT_SECRET))
    response = await publish(gateway, path, body)
    assert response.status_code == 200, response.text
    assert response.json()["channels"] == [LONG]
    [message_id] = response.json()["message_ids"]
    app = emulator.app
    async with httpx.AsyncClient() as http:
        history = await http.get(
            f"http://{emulator.host}:{emulator.port}/channels/{LONG}/messages",
            auth=(f"{app.app_id}.{app.key}", app.secret),
        )
    assert [(message["id"], message["name"], message["data"]) for message in history.json()] == [
        (message_id, "e", '{"id":1}')
    ]


@pytest.mark.parametrize(
    ("path", "body", "error"),
    [
        (
            "/v1/publish",
            {"channel": "a" * 201, "event": "e", "data": 1},
            "channel name is 201 characters long; the limit is 200",
        ),
        (
            "/v1/publish",
            {"channels": ["a" * 201], "event": "e", "data": 1},
            "channel name is 201 characters long; the limit is 200",
        ),
        (
            "/v1/publish/batch",
            {"events": [{"channel": "a" * 201, "event": "e", "data": 1}]},
            "events[0]: channel name is 201 characters long; the limit is 200",
        ),
    ],
)
async def test_a_channel_name_over_a_pusher_server_s_limit_is_the_same_400_in_every_field(
    gateway: RunningGateway, path: str, body: object, error: str
) -> None:
    """The same name over the emulator's 200 characters was a 422 of the schema in ``channel`` and the provider's 400
    in ``channels``: it is the provider's 400, naming its limit, wherever it is written."""
    response = await publish(gateway, path, body)
    assert (response.status_code, response.json()) == (400, {"error": error})


async def test_a_sign_in_whose_name_claim_is_over_pusher_s_1_kb_says_which_claim(gateway: RunningGateway) -> None:
    """A presence member's 413 names the claims that made its user_info; a sign-in's said only "user_info is 1111
    bytes; the limit is 1024", though the JWT's name claim is all its user_info holds."""
    token = hs_jwt("alice", name="x" * 1100)  # {"name": "x…"}: 1,111 bytes
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        response = await http.post(
            "/v1/auth/user", data={"socket_id": "123.456"}, headers={"authorization": f"Bearer {token}"}
        )
    assert response.status_code == 413
    assert response.json() == {
        "error": "user_info is 1111 bytes; the limit is 1024: a signed-in user's user_info is the JWT's name claim; "
        "send a shorter one"
    }
    assert response.headers["cache-control"] == "no-store"
