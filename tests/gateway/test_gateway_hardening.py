"""The gateway's authorization edges, each held end to end on a real gateway (uvicorn) in front of a real emulator:
channel names that would be Ably capability wildcards, private keys given as verification keys, CORS origins in
capitals, the Authorization header's forms, the rules file's ``users``, the audience hint, the gateway mounted under a
prefix, and 422 answers echoing lone UTF-16 surrogates. Every refusal is followed by a request that succeeds."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi import FastAPI
from jwt.algorithms import RSAAlgorithm

from relay.adapters.ably import AblyAdapter
from relay.config import parse_url
from relay.errors import ConfigError, InvalidChannelName
from relay.gateway import GatewaySettings, create_app
from relay.gateway.guards import MAX_BODY_BYTES, MAX_CHANNEL_AUTH_BODY_BYTES
from relay.models import WebhookEvent
from relay.protocol.signing import webhook_signature
from relay.web import route_path
from tests.cli_support import assert_refused, run_relay, write
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
from tests.gateway.test_gateway_identity import public_pem
from tests.gateway.test_gateway_identity_edges import post_chunked_without_end

PUBLISH = {"channel": "orders", "event": "created", "data": {"id": 1}}


def ably_url(emulator: RunningEmulator) -> str:
    """The emulator's Ably side: its key is ``{app_id}.{key}:{secret}`` (docs/ably.md)."""
    app = emulator.app
    return f"ably://{app.app_id}.{app.key}:{app.secret}@127.0.0.1:{emulator.port}?tls=false"


def pusher_name_error(name: str) -> str:
    return (
        f"channel name {name!r} has characters outside A-Z a-z 0-9 _ - = @ , . ; "
        "('#' is reserved for #server-to-user-{id})"
    )


async def exchange(emulator: RunningEmulator, token_request: dict[str, Any]) -> dict[str, Any]:
    """What ably-js does with a TokenRequest: trade it for a token at the emulator's Ably side."""
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{emulator.port}") as http:
        response = await http.post(f"/keys/{token_request['keyName']}/requestToken", json=token_request)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def auth(url: str, channel: str, headers: dict[str, str] | None = None) -> httpx.Response:
    async with httpx.AsyncClient(base_url=url) as http:
        form = {"socket_id": "1.1", "channel_name": channel}  # Ably takes any connection key as socket_id
        return await http.post("/v1/auth/channel", data=form, headers=headers or {})


async def publish_ok(url: str, prefix: str = "") -> None:
    async with httpx.AsyncClient(base_url=url) as http:
        response = await http.post(f"{prefix}/v1/publish", json=PUBLISH, headers={"authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200, response.text


# -- 1. channel names that Ably would read as wildcards -----------------------------------------------------------


@pytest.mark.parametrize("name", ["*", "foo:*", "[x]foo", "[*]*", "news feed"])
async def test_an_ably_token_is_never_issued_for_a_name_outside_pusher_s_characters(
    emulator: RunningEmulator, start_gateway: StartGateway, name: str
) -> None:
    """As a capability key, ``*`` is every channel and ``foo:*`` every channel of a namespace: anyone, without a
    JWT, got a token to read them all. Such a name is refused (403, which ably-js does not ask again) before any rule
    or capability is built, signed in or not; a public channel still gets a token the emulator exchanges for that
    channel only."""
    gateway = await start_gateway(GatewaySettings(relay_url=ably_url(emulator), api_token=TOKEN, jwt_secret=JWT_SECRET))
    for headers in ({}, {"authorization": f"Bearer {hs_jwt()}"}):
        refused = await auth(gateway.url, name, headers)
        ably_refusal = {"message": pusher_name_error(name), "code": 40300, "statusCode": 403}
        assert (refused.status_code, refused.json()) == (403, {"error": ably_refusal}), headers
    allowed = await auth(gateway.url, "news")
    assert allowed.status_code == 200, allowed.text
    assert (await exchange(emulator, allowed.json()))["capability"] == '{"news":["subscribe"]}'


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("*", "'*' cannot be authorized on Ably: in a token's capability '*' is a wildcard"),
        ("foo:*", "'foo:*' cannot be authorized on Ably: in a token's capability '*' is a wildcard"),
        ("chat*", "'chat*' cannot be authorized on Ably: in a token's capability '*' is a wildcard"),
        ("[x]foo", "invalid Ably channel name '[x]foo'"),
    ],
)
async def test_the_ably_adapter_refuses_a_wildcard_name_whoever_calls_it(
    emulator: RunningEmulator, name: str, message: str
) -> None:
    """Apps calling ``relay.authorize_channel`` from their own views reach the adapter without ChannelRules: it
    refuses a name that, as the capability's key, would grant other channels. Ably's namespaced names stay allowed
    (docs/ably.md), and the token for one is limited to it."""
    adapter = AblyAdapter(parse_url(ably_url(emulator)))
    with pytest.raises(InvalidChannelName) as caught:
        adapter.authorize_channel("1.1", name, None)
    assert caught.value.message.startswith(message), caught.value.message
    assert caught.value.http_status == 400
    token = await exchange(emulator, adapter.authorize_channel("1.1", "chat:room", None))
    assert token["capability"] == '{"chat:room":["subscribe"]}'


# -- 2. private keys where a public key belongs -------------------------------------------------------------------


def private_pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


PRIVATE_KEY_MESSAGE = "is a private key: the gateway only verifies JWTs"


@pytest.mark.parametrize("kind", ["RSA", "EC"])
def test_a_private_pem_as_the_public_key_is_refused_at_start(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey, kind: str
) -> None:
    """Accepted, it made every valid JWT a 500 ('RSA' object has no attribute 'verify')."""
    key = rsa_key if kind == "RSA" else ec.generate_private_key(ec.SECP256R1())
    pem = private_pem(key)
    for value in (pem, str(write(tmp_path, pem, "key.pem"))):
        with pytest.raises(ConfigError) as caught:
            create_app(GatewaySettings.from_env({"RELAY_URL": "memory://keys", "RELAY_JWT_PUBLIC_KEY": value}))
        assert caught.value.message.startswith(f"RELAY_JWT_PUBLIC_KEY {PRIVATE_KEY_MESSAGE}"), caught.value.message
    create_app(GatewaySettings.from_env({"RELAY_URL": "memory://keys", "RELAY_JWT_PUBLIC_KEY": public_pem(key)}))


def test_a_private_jwk_is_refused_at_start(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    private = {**json.loads(RSAAlgorithm.to_jwk(rsa_key)), "kid": "k1", "alg": "RS256"}
    public = {**json.loads(RSAAlgorithm.to_jwk(rsa_key.public_key())), "kid": "k1", "alg": "RS256"}
    jwks = write(tmp_path, json.dumps({"keys": [private]}), "jwks.json")
    with pytest.raises(ConfigError) as caught:
        create_app(GatewaySettings.from_env({"RELAY_URL": "memory://keys", "RELAY_JWKS_FILE": str(jwks)}))
    assert caught.value.message.startswith(f"RELAY_JWKS_FILE: key 'k1' {PRIVATE_KEY_MESSAGE}"), caught.value.message
    write(tmp_path, json.dumps({"keys": [public]}), "jwks.json")
    create_app(GatewaySettings.from_env({"RELAY_URL": "memory://keys", "RELAY_JWKS_FILE": str(jwks)}))


async def test_relay_serve_exits_2_on_a_private_key(rsa_key: rsa.RSAPrivateKey) -> None:
    env = {"RELAY_URL": "memory://keys", "RELAY_JWT_PUBLIC_KEY": private_pem(rsa_key)}
    assert_refused(await run_relay("serve", "--port", "0", env=env), PRIVATE_KEY_MESSAGE)


async def test_the_public_half_of_the_key_verifies_its_jwts(
    emulator: RunningEmulator, start_gateway: StartGateway, rsa_key: rsa.RSAPrivateKey
) -> None:
    """The control for the refusals above: the same pair, given the right way round, serves."""
    gateway = await start_gateway(
        env={"RELAY_URL": emulator_url(emulator), "RELAY_JWT_PUBLIC_KEY": public_pem(rsa_key)}
    )
    token = jwt.encode({"sub": "alice", "exp": 4_000_000_000}, rsa_key, algorithm="RS256")
    response = await auth(gateway.url, "private-user-alice", {"authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text


# -- 3. CORS origins written with capitals --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "origin"),
    [
        ("http://LocalHost:3000", "http://localhost:3000"),
        ("HTTPS://App.Example.COM", "https://app.example.com"),
        ("https://app.example.com:443", "https://app.example.com"),
        ("http://[::1]:8080", "http://[::1]:8080"),
    ],
)
def test_cors_origins_are_kept_as_browsers_send_them(written: str, origin: str) -> None:
    """Browsers send the scheme and host in lowercase and leave out a default port (RFC 6454 §6.1): kept as
    written, the origin was accepted and never matched."""
    settings = GatewaySettings.from_env({"RELAY_URL": "memory://cors", "RELAY_CORS_ORIGINS": written})
    assert settings.cors_origins == (origin,)


@pytest.mark.parametrize(
    ("written", "meant"),
    [
        ("http://localhost:3000/", "; without the path: http://localhost:3000: "),
        ("https://app.example.com/orders", "; without the path: https://app.example.com: "),
        ("localhost:3000", "; with its scheme: https://localhost:3000 (or http://localhost:3000): "),
        ("*", ": "),
        ("http://me:pw@app.test", ": "),
    ],
)
def test_a_cors_origin_refused_names_the_origin_meant(written: str, meant: str) -> None:
    """Copied from the address bar (a final '/', a page's path) or written as a host, an origin was refused with
    "not an origin such as https://app.example.com" alone, leaving the user to find what differed."""
    with pytest.raises(ConfigError) as caught:
        GatewaySettings.from_env({"RELAY_URL": "memory://cors", "RELAY_CORS_ORIGINS": written})
    assert caught.value.message == (
        f"RELAY_CORS_ORIGINS: {written!r} is not an origin such as https://app.example.com (scheme and host, no path, "
        f"no wildcard){meant}list the sites whose pages call the gateway"
    )
    assert "pw" not in caught.value.message.replace(written, "")


@pytest.mark.parametrize(
    "name", ["RELAY_API_TOKEN", "RELAY_JWT_SECRET", "RELAY_JWT_AUDIENCE", "RELAY_CORS_ORIGINS", "RELAY_PUBLIC_URL"]
)
def test_a_gateway_variable_in_quotes_is_refused_naming_it(name: str) -> None:
    """docker's --env-file keeps a .env file's quotes: RELAY_API_TOKEN="…" made the quotes part of the token, and
    every backend's publish was a 401 with the right token."""
    with pytest.raises(ConfigError) as caught:
        GatewaySettings.from_env({"RELAY_URL": "memory://quotes", name: '"s3cret-value-of-32-bytes-at-least-000"'})
    assert caught.value.message == (
        f'{name} is written in quotes ("…"), which are part of the value here (docker\'s --env-file and some .env '
        "readers keep them): remove them"
    )


def test_a_cors_origin_with_user_info_is_refused() -> None:
    """A browser's Origin never carries user:password@, so such an origin could never match."""
    with pytest.raises(ConfigError, match=r"RELAY_CORS_ORIGINS: 'http://me@app\.test' is not an origin"):
        GatewaySettings.from_env({"RELAY_URL": "memory://cors", "RELAY_CORS_ORIGINS": "http://me@app.test"})


async def test_a_capitalised_cors_origin_matches_the_browser_s(
    emulator: RunningEmulator, start_gateway: StartGateway
) -> None:
    gateway = await start_gateway(
        env={"RELAY_URL": emulator_url(emulator), "RELAY_CORS_ORIGINS": "http://LocalHost:3000"}
    )
    preflight = {"access-control-request-method": "POST", "access-control-request-headers": "authorization"}
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        other = await http.options("/v1/auth/channel", headers={"origin": "http://evil.test", **preflight})
        allowed = await http.options("/v1/auth/channel", headers={"origin": "http://localhost:3000", **preflight})
    assert other.status_code == 400
    assert other.json()["error"].startswith("CORS preflight refused: the origin 'http://evil.test' is not allowed")
    assert allowed.status_code == 200, allowed.text
    assert allowed.headers["access-control-allow-origin"] == "http://localhost:3000"


async def test_a_stock_laravel_page_s_headers_pass_the_preflight(
    emulator: RunningEmulator, start_gateway: StartGateway
) -> None:
    """Laravel's stock bootstrap.js adds ``X-Requested-With: XMLHttpRequest`` to every axios request and axios sends
    ``X-XSRF-TOKEN`` from Laravel's cookie: an Echo authorizer using axios was refused at the preflight (400
    "Disallowed CORS headers"), a network error to the page. A header outside the list is still refused."""
    gateway = await start_gateway(
        env={"RELAY_URL": emulator_url(emulator), "RELAY_CORS_ORIGINS": "http://localhost:3000"}
    )
    asked = "authorization, content-type, x-requested-with, x-xsrf-token, x-socket-id, x-csrf-token"
    preflight = {"origin": "http://localhost:3000", "access-control-request-method": "POST"}
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        laravel = await http.options("/v1/auth/channel", headers={**preflight, "access-control-request-headers": asked})
        other = await http.options(
            "/v1/auth/channel", headers={**preflight, "access-control-request-headers": "x-other"}
        )
    assert laravel.status_code == 200, laravel.text
    allowed = {header.strip().lower() for header in laravel.headers["access-control-allow-headers"].split(",")}
    assert {"x-requested-with", "x-xsrf-token"} <= allowed
    assert other.status_code == 400
    assert other.json()["error"].startswith("CORS preflight refused: the request header 'x-other' is not one")


async def test_an_unhandled_error_is_a_logged_json_500_a_browser_can_read(
    emulator: RunningEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    """Starlette answers what no handler caught outside CORS, as plain text: the page saw only a network error."""
    calls: list[int] = []

    async def failing_hook(events: list[WebhookEvent]) -> None:
        calls.append(len(events))
        if len(calls) == 1:
            raise RuntimeError("the application's hook failed")

    settings = GatewaySettings(relay_url=emulator_url(emulator), cors_origins=("http://localhost:3000",))
    body = json.dumps({"time_ms": int(time.time() * 1000), "events": [{"name": "channel_vacated", "channel": "c"}]})
    signed = {
        "origin": "http://localhost:3000",
        "x-pusher-key": emulator.app.key,
        "x-pusher-signature": webhook_signature(emulator.app.secret, body.encode()),
    }
    async with serve_asgi(create_app(settings, webhook_hook=failing_hook)) as url, httpx.AsyncClient() as http:
        failed = await http.post(f"{url}/v1/webhooks", content=body, headers=signed)
        retried = await http.post(f"{url}/v1/webhooks", content=body, headers=signed)
    assert failed.status_code == 500
    assert failed.json() == {"error": "internal error: the gateway's log has the details"}
    assert failed.headers["access-control-allow-origin"] == "http://localhost:3000"
    [record] = [r for r in caplog.records if r.name == "relay.gateway"]
    assert record.getMessage() == "unhandled error answering POST /v1/webhooks"
    assert record.exc_info is not None and str(record.exc_info[1]) == "the application's hook failed"
    assert (retried.status_code, retried.json(), calls) == (200, {"events": 1}, [1, 1])


# -- 4. the Authorization header ------------------------------------------------------------------------------------


async def raw_post(url: str, path: str, head: str, body: bytes) -> bytes:
    """A POST written byte for byte: httpx refuses to send a header value that ends in a space, as curl does."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(f"POST {path} HTTP/1.1\r\nhost: {host}\r\ncontent-length: {len(body)}\r\n{head}\r\n".encode() + body)
    try:
        return await asyncio.wait_for(reader.read(4096), 5)
    finally:
        writer.close()


@pytest.mark.parametrize("header", ["Bearer", "bearer", "BEARER"])
async def test_a_bearer_header_without_a_token_is_401_not_anonymous(gateway: RunningGateway, header: str) -> None:
    """A malformed credential is not the absence of one: it was a 403 "needs an authenticated user"."""
    no_token = "the Authorization header is not 'Bearer <JWT>': it has no token after Bearer"
    refused = await auth(gateway.url, "private-user-alice", {"authorization": header})
    assert (refused.status_code, refused.json()) == (401, {"error": no_token})
    form = b"socket_id=1.1&channel_name=private-user-alice"
    head = "content-type: application/x-www-form-urlencoded\r\nauthorization: Bearer \r\n"
    answer = await raw_post(gateway.url, "/v1/auth/channel", head, form)  # as curl -H 'Authorization: Bearer '
    assert answer.startswith(b"HTTP/1.1 401 "), answer[:200]
    assert answer.endswith(f'{{"error":"{no_token}"}}'.encode()), answer[-200:]
    signed_in = await auth(gateway.url, "private-user-alice", {"authorization": f"BEARER {hs_jwt()}"})
    assert signed_in.status_code == 200, signed_in.text


@pytest.mark.parametrize("scheme", ["bearer", "BEARER", "BeArEr"])
async def test_publish_reads_the_bearer_scheme_in_any_case(gateway: RunningGateway, scheme: str) -> None:
    """RFC 9110 §11.1: the scheme is case-insensitive, as the JWT routes already read it."""
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        accepted = await http.post("/v1/publish", json=PUBLISH, headers={"authorization": f"{scheme} {TOKEN}"})
        assert accepted.status_code == 200, accepted.text
        not_bearer = "it does not start with 'Bearer ': send 'Authorization: Bearer TOKEN'"
        for wrong, problem in (
            (f"{scheme} {TOKEN}x", "the token is not the gateway's RELAY_API_TOKEN"),
            (scheme, "it has no token after Bearer (is RELAY_API_TOKEN set where the request is made?)"),
            (f"Basic {TOKEN}", not_bearer),
            (TOKEN, not_bearer),
            (f"{scheme}{TOKEN}", not_bearer),
        ):
            refused = await http.post("/v1/publish", json=PUBLISH, headers={"authorization": wrong})
            assert refused.status_code == 401, wrong
            assert refused.json() == {
                "error": f"missing or invalid API token (Authorization: Bearer RELAY_API_TOKEN): {problem}"
            }, wrong
            assert TOKEN not in refused.text
    await publish_ok(gateway.url)


async def test_an_empty_api_token_never_matches_an_empty_bearer(start_gateway: StartGateway) -> None:
    """Set in code to "" (the environment's empty value means unset), the token would equal a bare "Bearer"'s."""
    gateway = await start_gateway(GatewaySettings(relay_url="memory://empty-token", api_token=""))
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        response = await http.post("/v1/publish", json=PUBLISH, headers={"authorization": "Bearer"})
    assert (response.status_code, response.json()) == (
        401,
        {
            "error": "missing or invalid API token (Authorization: Bearer RELAY_API_TOKEN): it has no token after "
            "Bearer (is RELAY_API_TOKEN set where the request is made?)"
        },
    )


# -- 5. users = "anyone" in the rules file ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        ("private-orders", "private and presence channels always need a valid JWT"),
        ("presence-*", "private and presence channels always need a valid JWT"),
        ("private-encrypted-{sub}", "private and presence channels always need a valid JWT"),
        ("news-{team}", "a {placeholder} compares a JWT claim, which a visitor without a JWT does not have"),
    ],
)
def test_users_anyone_where_it_cannot_admit_anyone_is_refused(tmp_path: Path, pattern: str, reason: str) -> None:
    """Accepted, ``users = "anyone"`` on these patterns changed nothing: refused, with why and what it is for."""
    rules = write(tmp_path, f"[[channels]]\npattern = '{pattern}'\nusers = 'anyone'\n", "rules.toml")
    with pytest.raises(ConfigError) as caught:
        GatewaySettings.from_env({"RELAY_URL": "memory://rules", "RELAY_RULES_FILE": str(rules)})
    message = caught.value.message
    assert f"channels[0]: users = 'anyone' cannot apply to {pattern!r}: {reason}" in message, message
    assert "'anyone' only lets visitors without a JWT get Ably tokens for public channels" in message, message


async def test_relay_serve_exits_2_on_users_anyone_for_private_channels(tmp_path: Path) -> None:
    rules = write(tmp_path, "[[channels]]\npattern = 'private-orders'\nusers = 'anyone'\n", "rules.toml")
    env = {"RELAY_URL": "memory://rules", "RELAY_RULES_FILE": str(rules)}
    assert_refused(await run_relay("serve", "--port", "0", env=env), "users = 'anyone' cannot apply")


async def test_users_decides_who_gets_an_ably_token_for_a_public_channel(
    tmp_path: Path, emulator: RunningEmulator, start_gateway: StartGateway
) -> None:
    """On Ably every subscription needs a token, public channels' too: ``users`` is who may get one."""
    rules = write(
        tmp_path,
        "[[channels]]\npattern = 'news-*'\nusers = 'anyone'\n\n[[channels]]\npattern = 'members-*'\n",
        "rules.toml",
    )
    gateway = await start_gateway(
        env={"RELAY_URL": ably_url(emulator), "RELAY_JWT_SECRET": JWT_SECRET, "RELAY_RULES_FILE": str(rules)}
    )
    visitor = await auth(gateway.url, "news-today")
    assert visitor.status_code == 200, visitor.text
    assert (await exchange(emulator, visitor.json()))["capability"] == '{"news-today":["subscribe"]}'
    refused = await auth(gateway.url, "members-today")
    assert (refused.status_code, refused.json()) == (
        403,
        {
            "error": {
                "message": "access to 'members-today' denied by rule 'members-*': it admits users with a JWT only "
                "(users = 'authenticated'), and this request has none",
                "code": 40300,
                "statusCode": 403,
            }
        },
    )
    member = await auth(gateway.url, "members-today", {"authorization": f"Bearer {hs_jwt()}"})
    assert member.status_code == 200, member.text
    assert (await exchange(emulator, member.json()))["capability"] == '{"members-today":["subscribe"]}'


# -- 6. the audience hint -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("audience", ["shop", [], "", None])
async def test_a_jwt_with_an_audience_names_the_setting_that_accepts_it(
    gateway: RunningGateway, audience: object
) -> None:
    """An empty aud ([], "", null) is an aud claim too, as docs/gateway.md says: PyJWT passed it as no audience."""
    token = hs_jwt(aud=audience)
    refused = await auth(gateway.url, "private-user-alice", {"authorization": f"Bearer {token}"})
    assert (refused.status_code, refused.json()) == (
        401,
        {
            "error": "the JWT has an audience (aud) but RELAY_JWT_AUDIENCE is not set: "
            "set RELAY_JWT_AUDIENCE to accept tokens with an audience"
        },
    )
    served = await auth(gateway.url, "private-user-alice", {"authorization": f"Bearer {hs_jwt()}"})
    assert served.status_code == 200, served.text


# -- 7. mounted under a prefix ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scope", "path"),
    [
        (
            {"path": "/relay/v1/publish", "root_path": "/relay"},
            "/v1/publish",
        ),  # the installed Starlette keeps the prefix
        ({"path": "/v1/publish", "root_path": "/relay"}, "/v1/publish"),  # older Starlette removed it
        ({"path": "/v1/publish"}, "/v1/publish"),
        ({"path": "/relayed/v1/publish", "root_path": "/relay"}, "/relayed/v1/publish"),
        ({"path": "/relay", "root_path": "/relay"}, "/"),
    ],
)
def test_route_path_is_relative_to_the_mount(scope: dict[str, str], path: str) -> None:
    assert route_path(scope) == path


async def test_the_guard_holds_when_the_gateway_is_mounted_under_a_prefix(gateway: RunningGateway) -> None:
    """Mounted, the guard matched no route: a 2 MB publish with the token was read whole and answered 200, and a
    publish without it was read before its refusal."""
    parent = FastAPI()
    parent.mount("/relay", create_app(gateway.settings))
    async with serve_asgi(parent) as url:
        async with httpx.AsyncClient(base_url=url) as http:
            big = {**PUBLISH, "data": "x" * 2_000_000}
            oversized = await http.post("/relay/v1/publish", json=big, headers={"authorization": f"Bearer {TOKEN}"})
            assert (oversized.status_code, oversized.json()) == (
                413,
                {"error": f"the request body is over {MAX_BODY_BYTES} bytes"},
            )
            form = {"socket_id": "1.1", "channel_name": "private-user-alice", "pad": "x" * MAX_CHANNEL_AUTH_BODY_BYTES}
            auth_body = await http.post(
                "/relay/v1/auth/channel", data=form, headers={"authorization": f"Bearer {hs_jwt()}"}
            )
            assert (auth_body.status_code, auth_body.json()) == (
                413,
                {"error": f"the request body is over {MAX_CHANNEL_AUTH_BODY_BYTES} bytes"},
            )
            # The auth endpoints a frontend is told are the mounted ones
            config = (await http.get("/relay/v1/client-config")).json()
            assert (config["channelAuthEndpoint"], config["userAuthEndpoint"]) == (
                "/relay/v1/auth/channel",
                "/relay/v1/auth/user",
            )
            form = {"socket_id": "1.1", "channel_name": "private-user-alice"}
            authorized = await http.post(
                config["channelAuthEndpoint"], data=form, headers={"authorization": f"Bearer {hs_jwt()}"}
            )
            assert authorized.status_code == 200, authorized.text
        answer = await post_chunked_without_end(
            url, "/relay/v1/publish", {"content-type": "application/json"}, b'{"channel": "a", "data": "' + b"x" * 9
        )
        assert answer.startswith(b"HTTP/1.1 401 "), answer[:200]
        await publish_ok(url, "/relay")


# -- 8. lone surrogates in a 422's echoed input ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "loc"),
    [
        ("/v1/publish", r'{"channel": "orders", "event": "\ud800", "data": "y"}', ["body", "event"]),
        ("/v1/publish", r'{"channel": "\udcff", "event": "e", "data": "y"}', ["body", "channel"]),
        # A key pydantic cannot read as a string is an error of the object that holds it.
        ("/v1/publish", r'{"channel": "orders", "event": "e", "data": "y", "\udcff": 1}', ["body"]),
        (
            "/v1/publish/batch",
            r'{"events": [{"channel": "o", "event": "\ud800", "data": "y"}]}',
            ["body", "events", 0, "event"],
        ),
        (
            "/v1/publish/batch",
            r'{"events": [{"channel": "o", "event": "e", "data": "y", "\udcff": 1}]}',
            ["body", "events", 0],
        ),
    ],
    ids=["event", "channel", "extra key", "batch event", "batch extra key"],
)
async def test_a_lone_surrogate_in_the_body_is_a_422_naming_the_field(
    gateway: RunningGateway, path: str, body: str, loc: list[object]
) -> None:
    """The 422 echoes the input; UTF-8 cannot encode a lone surrogate, so rendering it was a 500."""
    headers = {"authorization": f"Bearer {TOKEN}", "content-type": "application/json"}
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        response = await http.post(path, content=body.encode(), headers=headers)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/json"
    (error,) = response.json()["detail"]
    assert (error["type"], error["loc"]) == ("string_unicode", loc), error
    assert "\\ud" in response.text, response.text  # the input echoed escaped, as it was sent
    await publish_ok(gateway.url)
