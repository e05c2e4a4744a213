"""Fixes from a new user's review of ``relay serve``:

1. A batch event named with ``name`` (Pusher's and the library's spelling) is a 422 saying the name goes in ``event``,
   in ``{"error": "…"}`` as the gateway's other refusals, FastAPI's ``detail`` beside it.
2. The start-up log names RELAY_CORS_ORIGINS (or that none is allowed), RELAY_JWT_COOKIE and the rules file.
3. A CORS preflight refused is JSON naming the origin (or header) and the setting, not Starlette's plain text; the
   log warns once per refused origin, naming the allowed ones, for a bounded number of origins.
4. A JWT whose signature fails names the setting that verified it; an ``exp`` in milliseconds says so.
5. relay.web's ``/ably/token`` asked for a token on a Pusher-protocol provider is a 501 saying the route is Ably's.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import FastAPI

from relay import AsyncRelay
from relay.gateway import GatewaySettings
from relay.gateway.guards import MAX_WARNED_CORS_ORIGINS
from relay.models import User
from relay.rules import ChannelRules
from relay.web import auth_router
from tests.conftest import RunningEmulator
from tests.gateway.conftest import (
    JWT_SECRET,
    TOKEN,
    RunningGateway,
    StartGateway,
    emulator_url,
    hs_jwt,
    serve_asgi,
)
from tests.gateway.test_gateway_browser_facing_fixes import channel_auth

BEARER = {"authorization": f"Bearer {TOKEN}"}
SITE = "http://localhost:3000"


# -- 1. "name" for "event" ----------------------------------------------------------------------------------------


async def test_a_batch_event_named_with_name_is_told_where_the_name_goes(gateway: RunningGateway) -> None:
    """FastAPI's 422 said "missing body.events.1.event" and "extra_forbidden name", in ``detail`` alone."""
    events = [{"channel": "orders", "event": "e", "data": 1}, {"channel": "orders", "name": "e", "data": 1}]
    async with httpx.AsyncClient(base_url=gateway.url, headers=BEARER) as http:
        batch = await http.post("/v1/publish/batch", json={"events": events})
        single = await http.post("/v1/publish", json={"channel": "orders", "name": "e", "data": 1})
        served = await http.post("/v1/publish/batch", json={"events": [events[0]]})
    assert batch.status_code == 422, batch.text
    assert batch.json()["error"] == "events[1]: unknown key 'name': the event's name goes in 'event'"
    assert {tuple(problem["loc"]) for problem in batch.json()["detail"]} == {
        ("body", "events", 1, "event"),
        ("body", "events", 1, "name"),
    }
    assert (single.status_code, single.json()["error"]) == (
        422,
        "the body: unknown key 'name': the event's name goes in 'event'",
    )
    assert served.status_code == 200, served.text


async def test_every_schema_422_says_its_problems_in_error(gateway: RunningGateway) -> None:
    """Not only the misnamed event: each 422 of the schema has the gateway's ``error``, without the input it got."""
    secretish = "k" * 40
    async with httpx.AsyncClient(base_url=gateway.url, headers=BEARER) as http:
        extra = await http.post("/v1/publish", json={"channel": "orders", "event": "e", "data": 1, secretish: 1})
        both = await http.post("/v1/publish", json={"channel": "a", "channels": ["b"], "event": "e", "data": 1})
        many = await http.post("/v1/publish/batch", json={"events": [{"channel": "a", "data": 1}] * 8})
        named = await http.post(
            "/v1/publish/batch", json={"events": [{"channel": "a", "event": "e", "data": 1}], "name": "x"}
        )
    assert extra.json()["error"] == "the body: unknown key 'kkkkkk…' (40 characters)"
    assert both.json()["error"] == "the body: give exactly one of channel or channels"
    assert many.json()["error"] == "; ".join(f"events[{i}]: 'event' is required" for i in range(5)) + "; and 3 more"
    assert named.json()["error"] == "the body: unknown key 'name'"  # a batch's, not an event's: no hint
    assert [response.status_code for response in (extra, both, many, named)] == [422] * 4


# -- 2. the start-up log --------------------------------------------------------------------------------------------


def test_the_start_up_summary_names_cors_the_jwt_cookie_and_the_rules_file(tmp_path: Path) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text('[[channels]]\npattern = "private-user-{sub}"\n')
    bare = GatewaySettings.from_env({"RELAY_URL": "memory://x", "RELAY_JWT_COOKIE": "session"}).summary()
    configured = GatewaySettings.from_env(
        {
            "RELAY_URL": "memory://x",
            "RELAY_JWT_SECRET": JWT_SECRET,
            "RELAY_JWT_COOKIE": "session",
            "RELAY_RULES_FILE": str(rules),
            "RELAY_CORS_ORIGINS": "http://LocalHost:3000",
        }
    ).summary()
    assert bare[3:] == [
        "JWTs read from: nowhere: RELAY_JWT_COOKIE names 'session', but no key verifies JWTs",
        "channel rules: 3, the defaults (no RELAY_RULES_FILE): private-user-{sub}, private-user.{sub}, presence-*",
        "CORS: no origin allowed (no RELAY_CORS_ORIGINS): browsers refuse a page on another origin than the "
        "gateway's; only same-origin pages (behind a proxy) can call it",
    ]
    assert configured[3:] == [
        "JWTs read from: Authorization: Bearer, or the 'session' cookie (RELAY_JWT_COOKIE)",
        f"channel rules: 1, from {rules} (RELAY_RULES_FILE)",
        "CORS: pages of http://localhost:3000 may call the gateway (RELAY_CORS_ORIGINS)",
    ]
    assert JWT_SECRET not in "\n".join(configured)


# -- 3. CORS refusals --------------------------------------------------------------------------------------------


async def preflight(http: httpx.AsyncClient, origin: str, headers: str = "content-type") -> httpx.Response:
    return await http.options(
        "/v1/auth/channel",
        headers={
            "origin": origin,
            "access-control-request-method": "POST",
            "access-control-request-headers": headers,
        },
    )


async def test_a_refused_preflight_is_json_naming_the_origin_and_the_log_names_the_allowed_ones(
    emulator: RunningEmulator, start_gateway: StartGateway, caplog: pytest.LogCaptureFixture
) -> None:
    gateway = await start_gateway(
        GatewaySettings(relay_url=emulator_url(emulator), jwt_secret=JWT_SECRET, cors_origins=(SITE,))
    )
    caplog.set_level(logging.INFO, logger="relay.gateway")
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        refused = await preflight(http, "https://elsewhere.example")
        again = await preflight(http, "https://elsewhere.example")
        header = await preflight(http, SITE, "content-type, x-tenant")
        allowed = await preflight(http, SITE, "authorization, content-type")
    assert (refused.status_code, refused.headers["content-type"]) == (400, "application/json")
    assert refused.json() == {
        "error": "CORS preflight refused: the origin 'https://elsewhere.example' is not allowed to call this gateway "
        "(to allow its pages, the gateway's operator adds it to RELAY_CORS_ORIGINS)"
    }
    assert SITE not in refused.text  # any site may ask: the allowed origins are the operator's to read
    assert again.json() == refused.json()
    assert header.status_code == 400
    assert header.json()["error"].startswith(
        "CORS preflight refused: the request header 'x-tenant' is not one the gateway allows (Authorization, "
    )
    assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == SITE
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert warnings == [
        "CORS: refused a preflight from 'https://elsewhere.example', which is not in RELAY_CORS_ORIGINS "
        f"({SITE}); add it there if its pages should call the gateway (warned once per origin)"
    ]
    refusals = [record.getMessage() for record in caplog.records if "answered 400" in record.getMessage()]
    assert refusals[0] == (
        f"OPTIONS /v1/auth/channel answered 400 (Origin: https://elsewhere.example): {refused.json()['error']}"
    )


async def test_the_refused_origins_warned_of_are_bounded(
    emulator: RunningEmulator, start_gateway: StartGateway, caplog: pytest.LogCaptureFixture
) -> None:
    """Anyone can send preflights from as many origins as they like: one warning each for the first ones, then one
    saying the rest are not warned of."""
    gateway = await start_gateway(GatewaySettings(relay_url=emulator_url(emulator), cors_origins=(SITE,)))
    caplog.set_level(logging.WARNING, logger="relay.gateway")
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        for number in range(MAX_WARNED_CORS_ORIGINS + 20):
            assert (await preflight(http, f"https://site{number}.example")).status_code == 400
        assert (await preflight(http, SITE)).status_code == 200  # still serving
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == MAX_WARNED_CORS_ORIGINS + 1
    assert warnings[-1].startswith(f"CORS: over {MAX_WARNED_CORS_ORIGINS} origins refused; the others are not")


# -- 4. JWT errors --------------------------------------------------------------------------------------------------


async def test_a_jwt_whose_signature_fails_names_the_setting_that_verified_it(
    gateway: RunningGateway, emulator: RunningEmulator, start_gateway: StartGateway
) -> None:
    other_secret = "another-secret-of-another-service-0123456789"
    forged = await channel_auth(gateway, hs_jwt(secret=other_secret))
    assert (forged.status_code, forged.json()) == (
        401,
        {
            "error": "invalid JWT: Signature verification failed with RELAY_JWT_SECRET (HS256): the token was signed "
            "with another secret, or altered (the gateway's RELAY_JWT_SECRET must be the secret your auth provider "
            "signs with)"
        },
    )
    assert JWT_SECRET not in forged.text and other_secret not in forged.text
    key, stranger = (rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(2))
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    by_key = await start_gateway(GatewaySettings(relay_url=emulator_url(emulator), jwt_public_key=public.decode()))
    signed = jwt.encode({"sub": "alice", "exp": int(time.time()) + 60}, stranger, algorithm="RS256")
    refused = await channel_auth(by_key, signed)
    assert (refused.status_code, refused.json()["error"]) == (
        401,
        "invalid JWT: Signature verification failed with RELAY_JWT_PUBLIC_KEY: the token was signed with another "
        "key, or altered",
    )
    assert (await channel_auth(gateway, hs_jwt())).status_code == 200


async def test_an_exp_in_milliseconds_says_so(gateway: RunningGateway) -> None:
    response = await channel_auth(gateway, hs_jwt(exp=1_790_000_000_000))
    assert (response.status_code, response.json()["error"]) == (
        401,
        "invalid JWT: the exp claim must be a number of seconds up to 253402300799 (the end of the year 9999), got "
        "1.79e+12, which looks like milliseconds: a NumericDate is seconds (Math.floor(Date.now() / 1000))",
    )
    beyond = await channel_auth(gateway, hs_jwt(exp=10**16))  # no date in milliseconds either: no guess
    assert beyond.json()["error"].endswith("got 1e+16")


# -- 5. /ably/token on a Pusher-protocol provider ------------------------------------------------------------------


async def test_the_ably_token_route_on_a_pusher_provider_says_it_is_ably_s(emulator: RunningEmulator) -> None:
    """It answered "socket_id is required", a field ably-js never sends. A 501, as the gateway answers an operation
    the provider does not have; with a socket id the route answers as /pusher/auth does, as before."""
    rules = ChannelRules()
    rules.add("private-user-{user_id}", lambda user, user_id: user is not None and user.id == user_id)
    app = FastAPI()
    app.include_router(auth_router(AsyncRelay(emulator_url(emulator)), rules, lambda request: User("alice")))
    async with serve_asgi(app) as url, httpx.AsyncClient(base_url=url) as http:
        asked = await http.get("/ably/token", params={"channel": "private-user-alice"})
        posted = await http.post("/ably/token", data={})
        pusher_fields = await http.post("/ably/token", data={"socket_id": "1.2", "channel_name": "private-user-alice"})
    assert (asked.status_code, asked.json()) == (
        501,
        {
            "error": "the Relay emulator does not support Ably tokens: /ably/token is the token route for Ably "
            "providers (ably-js's authUrl), and this router's provider is the Relay emulator: pusher-js authorizes "
            "channels at /pusher/auth"
        },
    )
    assert asked.headers["cache-control"] == "no-store"
    assert (posted.status_code, posted.json()) == (501, asked.json())
    assert pusher_fields.status_code == 200 and "auth" in pusher_fields.json()
