"""The gateway's server API beyond publishing, for backends that cannot import the library (a Next.js route handler):
channel and presence queries, an event to one user and closing a user's connections, each behind the API token,
against a real emulator and its WebSocket clients."""

from __future__ import annotations

import base64
import json

import httpx
import pytest
import respx
from fastapi import FastAPI, Request

from relay import AsyncRelay
from relay.gateway import GatewaySettings, RequestGuard, create_app, gateway_router
from relay.protocol.signing import user_auth
from tests.conftest import RunningEmulator
from tests.gateway.conftest import TOKEN, RunningGateway, StartGateway, emulator_url
from tests.operations.support import Client, ws_client

AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def signed_in(emulator: RunningEmulator, user_id: str) -> Client:
    client = await ws_client(emulator.ws_url())
    user_data = json.dumps({"id": user_id})
    app = emulator.app
    auth = user_auth(app.key, app.secret, client.socket_id, user_data)
    await client.send("pusher:signin", {"user_data": user_data, "auth": auth})
    await client.expect("pusher:signin_success")
    return client


async def member(emulator: RunningEmulator, user_id: str) -> Client:
    client = await ws_client(emulator.ws_url())
    await client.subscribe("presence-room", emulator.app, user_id=user_id)
    return client


async def test_channel_and_presence_queries(gateway: RunningGateway, emulator: RunningEmulator) -> None:
    await member(emulator, "alice")
    await member(emulator, "bob")
    news = await ws_client(emulator.ws_url())
    await news.subscribe("news", emulator.app)
    async with httpx.AsyncClient(base_url=gateway.url, headers=AUTH) as http:
        users = await http.get("/v1/channels/presence-room/users")
        assert users.status_code == 200
        assert users.json() == {"users": [{"id": "alice", "info": None}, {"id": "bob", "info": None}]}

        room = await http.get("/v1/channels/presence-room")
        assert room.json() == {"name": "presence-room", "occupied": True, "subscription_count": None, "user_count": 2}
        empty = await http.get("/v1/channels/quiet")
        assert empty.json() == {"name": "quiet", "occupied": False, "subscription_count": None, "user_count": None}

        everything = await http.get("/v1/channels")
        assert [channel["name"] for channel in everything.json()["channels"]] == ["news", "presence-room"]
        presence = await http.get("/v1/channels", params={"prefix": "presence-"})
        assert presence.json() == {
            "channels": [{"name": "presence-room", "occupied": True, "subscription_count": None, "user_count": 2}]
        }


async def test_an_event_to_one_user_and_closing_their_connections(
    gateway: RunningGateway, emulator: RunningEmulator
) -> None:
    alice, other = await signed_in(emulator, "alice"), await signed_in(emulator, "bob")
    async with httpx.AsyncClient(base_url=gateway.url, headers=AUTH) as http:
        sent = await http.post("/v1/users/alice/events", json={"event": "notice", "data": {"hi": 1}})
        assert sent.status_code == 200 and sent.json() == {"user_id": "alice"}
        notice = await alice.expect("notice")
        assert (notice["channel"], notice["data"]) == ("#server-to-user-alice", '{"hi":1}')

        closed = await http.post("/v1/users/alice/terminate")
        assert closed.json() == {"user_id": "alice"}
        error = await alice.expect("pusher:error")
        assert error["data"]["code"] == 4009
    await other.send("pusher:ping", {})
    await other.expect("pusher:pong")  # bob was left alone


ROUTES = [
    ("GET", "/v1/channels", None),
    ("GET", "/v1/channels/news", None),
    ("GET", "/v1/channels/presence-room/users", None),
    ("POST", "/v1/users/alice/events", {"event": "notice", "data": 1}),
    ("POST", "/v1/users/alice/terminate", None),
]


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
async def test_every_server_route_needs_the_api_token(
    gateway: RunningGateway, method: str, path: str, body: object
) -> None:
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        for headers, problem in (
            ({}, "the request has no Authorization header"),
            ({"Authorization": "Bearer not-the-token"}, "the token is not the gateway's RELAY_API_TOKEN"),
        ):
            refused = await http.request(method, path, json=body, headers=headers)
            assert refused.status_code == 401
            assert refused.json() == {
                "error": f"missing or invalid API token (Authorization: Bearer RELAY_API_TOKEN): {problem}"
            }
        assert (await http.request(method, path, json=body, headers=AUTH)).status_code == 200


async def test_a_user_route_refuses_a_body_over_its_limit_before_reading_it(gateway: RunningGateway) -> None:
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        oversized = b'{"event": "notice", "data": "' + b"x" * (1024 * 1024) + b'"}'
        refused = await http.post("/v1/users/alice/events", content=oversized, headers=AUTH)
        assert refused.status_code == 413
        assert refused.json() == {"error": "the request body is over 1048576 bytes"}
        unauthenticated = await http.post("/v1/users/alice/events", content=oversized)
        assert unauthenticated.status_code == 401  # the token is checked before the body is read


async def test_bad_input_gets_the_library_s_errors(gateway: RunningGateway, emulator: RunningEmulator) -> None:
    async with httpx.AsyncClient(base_url=gateway.url, headers=AUTH) as http:
        bad_name = await http.get("/v1/channels/chat:*")
        assert bad_name.status_code == 400
        assert "chat:*" in bad_name.json()["error"]
        not_presence = await http.get("/v1/channels/news/users")
        assert not_presence.status_code == 400
        assert "presence" in not_presence.json()["error"]
        no_event = await http.post("/v1/users/alice/events", json={"data": 1})
        assert no_event.status_code == 422
        assert no_event.json()["detail"][0]["loc"] == ["body", "event"]
        reserved = await http.post("/v1/users/alice/events", json={"event": "pusher:x", "data": 1})
        assert reserved.status_code == 400
        assert "reserved" in reserved.json()["error"]
        still = await http.get("/v1/channels/news")
        assert still.status_code == 200


async def test_an_operation_the_provider_lacks_is_a_501() -> None:
    settings = GatewaySettings(relay_url="ably://appid.keyid:secret", api_token=TOKEN)
    transport = httpx.ASGITransport(app=create_app(settings))
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway", headers=AUTH) as http:
        for path in ("/v1/users/alice/events", "/v1/users/alice/terminate"):
            answer = await http.post(path, json={"event": "notice", "data": 1} if path.endswith("events") else None)
            assert answer.status_code == 501
            assert "Ably" in answer.json()["error"]


async def test_ably_presence_members_come_with_their_data(respx_mock: respx.MockRouter) -> None:
    """Ably's REST presence (its cloud stands in through respx): members' data is their info."""
    key = "appid.keyid:ably-Secret-5a4b3c"
    route = respx_mock.get("https://rest.ably.io/channels/presence-room/presence").respond(
        200,
        json=[
            {"clientId": "alice", "data": '{"name":"Alice"}', "encoding": "json", "action": 1},
            {"clientId": "bob", "action": 1},
        ],
    )
    settings = GatewaySettings(relay_url=f"ably://{key}", api_token=TOKEN)
    transport = httpx.ASGITransport(app=create_app(settings))
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway", headers=AUTH) as http:
        users = await http.get("/v1/channels/presence-room/users")
    assert users.json() == {"users": [{"id": "alice", "info": {"name": "Alice"}}, {"id": "bob", "info": None}]}
    [call] = route.calls
    assert call.request.url.params["limit"] == "1000"
    assert call.request.headers["authorization"] == "Basic " + base64.b64encode(key.encode()).decode()


async def test_an_embedding_app_s_own_user_routes_are_left_to_it(emulator: RunningEmulator) -> None:
    """RequestGuard wraps the whole app (docs/gateway.md): only the gateway's two user routes need the API token."""
    settings = GatewaySettings(relay_url=emulator_url(emulator), api_token=TOKEN)
    app = FastAPI()
    app.add_middleware(RequestGuard, settings=settings)
    app.include_router(gateway_router(settings, AsyncRelay(settings.relay_url)))

    @app.post("/v1/users/{user_id}/avatar")
    async def avatar(user_id: str, request: Request) -> dict[str, int]:
        return {"bytes": len(await request.body())}

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as http:
        upload = await http.post("/v1/users/alice/avatar", content=b"x" * (2 * 1024 * 1024))
        assert (upload.status_code, upload.json()) == (200, {"bytes": 2 * 1024 * 1024})
        refused = await http.post("/v1/users/alice/terminate")
        assert refused.status_code == 401


async def test_client_config_names_the_auth_routes_where_an_app_serves_them(emulator: RunningEmulator) -> None:
    """Included under a router prefix, the auth routes are there: client-config told /v1/auth/channel, a 404."""
    settings = GatewaySettings(relay_url=emulator_url(emulator), api_token=TOKEN)
    app = FastAPI()
    app.include_router(gateway_router(settings, AsyncRelay(settings.relay_url)), prefix="/rt")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app") as http:
        config = (await http.get("/rt/v1/client-config")).json()
        assert (config["channelAuthEndpoint"], config["userAuthEndpoint"]) == (
            "/rt/v1/auth/channel",
            "/rt/v1/auth/user",
        )
        public = await http.post(config["channelAuthEndpoint"], data={"socket_id": "1.1", "channel_name": "orders"})
        assert (public.status_code, public.json()) == (
            400,
            {"error": "'orders' is a public channel; only private and presence need auth"},
        )


async def test_during_a_migration_user_routes_go_to_the_provider_that_has_them(
    start_gateway: StartGateway, emulator: RunningEmulator
) -> None:
    """Ably has no send_to_user: failover: moves on to the emulator; mirror: delivers there and answers 502 naming
    what Ably could not do (the event is not to be sent again)."""
    ably = "ably://appid.keyid:ably-Secret-5a4b3c"
    alice = await signed_in(emulator, "alice")
    failover = await start_gateway(
        GatewaySettings(relay_url=f"failover:{ably}|{emulator_url(emulator)}", api_token=TOKEN)
    )
    mirror = await start_gateway(GatewaySettings(relay_url=f"mirror:{emulator_url(emulator)}|{ably}", api_token=TOKEN))
    async with httpx.AsyncClient(headers=AUTH) as http:
        moved_on = await http.post(f"{failover.url}/v1/users/alice/events", json={"event": "notice", "data": "one"})
        assert (moved_on.status_code, moved_on.json()) == (200, {"user_id": "alice"})
        assert (await alice.expect("notice"))["data"] == "one"

        mirrored = await http.post(f"{mirror.url}/v1/users/alice/events", json={"event": "notice", "data": "two"})
        assert mirrored.status_code == 502
        assert mirrored.json()["error"].startswith(
            "mirror: 1 of 2 providers failed (ably://appid.keyid:***@rest.ably.io: "
        )
        assert "Ably does not support send_to_user" in mirrored.json()["error"]
        assert (await alice.expect("notice"))["data"] == "two"


@pytest.mark.parametrize("user_id", ["a|b", "é", "u" * 185])
async def test_a_user_id_no_channel_can_carry_is_refused_in_its_own_terms(
    gateway: RunningGateway, user_id: str
) -> None:
    """An event to the user needs its #server-to-user- channel; closing its connections needs none, so an id a user
    can sign in with (up to 128 characters, 'a|b' as Auth0's 'auth0|123') is closed, and a longer one is refused."""
    async with httpx.AsyncClient(base_url=gateway.url, headers=AUTH) as http:
        refused = await http.post(f"/v1/users/{user_id}/events", json={"event": "notice", "data": 1})
        assert refused.status_code == 400
        assert refused.json()["error"] == (
            f"user id {user_id[:50]!r} cannot be used: it goes in the channel #server-to-user-{{id}}, so it is 1 "
            "to 184 of A-Z a-z 0-9 _ - = @ , . ;"
        )
        terminated = await http.post(f"/v1/users/{user_id}/terminate")
        if len(user_id) <= 128:
            assert (terminated.status_code, terminated.json()) == (200, {"user_id": user_id})
        else:
            assert (terminated.status_code, terminated.json()["error"]) == (
                400,
                f"user id {user_id[:50]!r} cannot be used: a user signs in with 1 to 128 characters, and one with '/' "
                "cannot go in the terminate_connections path",
            )
        assert (await http.post("/v1/users/a@b=c/terminate")).status_code == 200  # ids Pusher allows


async def test_without_an_api_token_configured_the_server_api_says_what_is_off() -> None:
    transport = httpx.ASGITransport(app=create_app(GatewaySettings(relay_url="memory://off")))
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway", headers=AUTH) as http:
        for method, path in (("GET", "/v1/channels"), ("POST", "/v1/users/alice/terminate"), ("POST", "/v1/publish")):
            refused = await http.request(method, path)
            assert refused.status_code == 401
            assert refused.json() == {
                "error": "the server API (/v1/publish…, /v1/channels…, /v1/users/…) is disabled: set RELAY_API_TOKEN "
                "on the gateway"
            }
