"""What docs/gateway.md promises about the gateway's error answers, held to it: each docstring names the line."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import httpx
import jwt
import pytest

from relay.gateway import GatewaySettings, create_app

JWT_SECRET = "walkthrough-jwt-secret-of-32-bytes!"
API_TOKEN = "walkthrough-api-token"


def hs256_token(**claims: object) -> str:
    return jwt.encode({"sub": "alice", "exp": int(time.time()) + 60, **claims}, JWT_SECRET, algorithm="HS256")


@pytest.fixture
async def memory_gateway() -> AsyncIterator[httpx.AsyncClient]:
    """The gateway in process over memory://, with an API token and HS256 JWTs, default rules."""
    settings = GatewaySettings(relay_url="memory://walkthrough", api_token=API_TOKEN, jwt_secret=JWT_SECRET)
    transport = httpx.ASGITransport(app=create_app(settings), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        yield client


async def test_gateway_errors_are_json_error_bodies_outside_422(memory_gateway: httpx.AsyncClient) -> None:
    """docs/gateway.md:88-89: "Errors are JSON: {"error": "…"}, or FastAPI's {"detail": [...]} for a 422". An unknown
    route answers 404 {"error": "Not Found"} and a wrong method 405 {"error": "Method Not Allowed"}, not FastAPI's
    {"detail": ...}."""
    not_found = await memory_gateway.get("/v1/publsh")
    wrong_method = await memory_gateway.get("/v1/publish")
    assert (not_found.status_code, wrong_method.status_code) == (404, 405)
    assert not_found.json() == {"error": "Not Found"}, not_found.text
    assert wrong_method.json() == {"error": "Method Not Allowed"}, wrong_method.text


async def test_a_publish_body_that_is_not_json_is_a_400_like_the_auth_routes(memory_gateway: httpx.AsyncClient) -> None:
    """docs/gateway.md:104: 400 is "a malformed body or name". /v1/publish answers a body that is not JSON as
    /v1/auth/channel does: 400 {"error": "the JSON body is malformed"}, not FastAPI's 422 "JSON decode error"."""
    headers = {"authorization": f"Bearer {API_TOKEN}", "content-type": "application/json"}
    publish = await memory_gateway.post("/v1/publish", content=b"not json", headers=headers)
    auth = await memory_gateway.post(
        "/v1/auth/channel",
        content=b"not json",
        headers={"authorization": f"Bearer {hs256_token()}", "content-type": "application/json"},
    )
    assert auth.status_code == 400
    assert auth.json() == {"error": "the JSON body is malformed"}, auth.text
    assert publish.status_code == 400, publish.text
    assert publish.json() == {"error": "the JSON body is malformed"}, publish.text


async def test_a_private_channel_refused_for_want_of_a_jwt_says_so(memory_gateway: httpx.AsyncClient) -> None:
    """docs/gateway.md:106: 403 when "the rules deny the channel to the user, or there is no JWT". With the default
    rules and no JWT, the 403's message says a signed-in user is missing (e.g. "'private-user-alice' needs an
    authenticated user"), so a browser whose JWT never reached the gateway (a missing header or cookie) does not
    read as a rules problem."""
    answer = await memory_gateway.post(
        "/v1/auth/channel", data={"socket_id": "123.456", "channel_name": "private-user-alice"}
    )
    assert answer.status_code == 403
    message = answer.json()["error"].lower()
    assert any(word in message for word in ("jwt", "authenticated", "sign in")), message
