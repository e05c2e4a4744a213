"""Fixes to what the gateway shows browsers, from a review:

1. Every answer of ``/v1/auth/channel`` and ``/v1/auth/user``, refusals included, is ``Cache-Control: no-store``:
   they carry signatures and tokens made for one visitor, which a shared cache must never keep.
2. ``GET /v1/auth/channel`` reads its fields from the query, as ably-js's ``authUrl`` asks by default (it was a 405).
3. A name in an Ably token request's ``channels`` over the provider's limit is refused naming its index and length.
4. ``RELAY_JWT_PUBLIC_KEY`` may be an X.509 certificate in PEM, as Auth0, Azure AD and Firebase publish their keys.
5. With ``RELAY_PUBLIC_URL``, ``/v1/client-config`` gives the auth endpoints as whole URLs: a page from another origin
   resolved the bare paths against its own.
"""

from __future__ import annotations

import datetime
import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID
from fastapi import FastAPI

from relay import AsyncRelay, Relay
from relay.emulator.config import App
from relay.errors import ConfigError, InvalidChannelName
from relay.gateway import GatewaySettings, create_app
from relay.models import User
from relay.protocol.ably import parse_capability
from relay.rules import ChannelRules
from relay.web import auth_router, channels_token_body
from tests.cli_support import assert_refused, run_relay
from tests.conftest import RunningEmulator, StartEmulator
from tests.gateway.conftest import (
    JWT_SECRET,
    ROOT,
    RunningGateway,
    StartGateway,
    emulator_url,
    gateway_with_key_file,
    hs_jwt,
    serve_asgi,
)
from tests.node_scenarios import app_env, run_scenario
from tests.node_scenarios import node_modules as installed_modules

ABLY_APP = App(app_id="1", key="app-key", secret="app-secret")
ABLY_SCRIPTS = ROOT / "tests" / "ably" / "node"


def ably_url(port: int) -> str:
    return f"ably://{ABLY_APP.ably_api_key}@127.0.0.1:{port}?tls=false"


# -- 1. Cache-Control: no-store on the auth answers ---------------------------------------------------------------


async def test_auth_answers_and_their_refusals_are_not_stored(gateway: RunningGateway) -> None:
    alice = {"Authorization": f"Bearer {hs_jwt('alice')}"}
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        signed = await http.post(
            "/v1/auth/channel", data={"socket_id": "123.456", "channel_name": "private-user-alice"}, headers=alice
        )
        refused = await http.post(
            "/v1/auth/channel", data={"socket_id": "123.456", "channel_name": "private-user-bob"}, headers=alice
        )
        signed_in = await http.post("/v1/auth/user", data={"socket_id": "123.456"}, headers=alice)
        anonymous = await http.post("/v1/auth/user", data={"socket_id": "123.456"})
        too_large = await http.post("/v1/auth/user", content=b"socket_id=" + b"1" * 20_000, headers=alice)
        wrong_method = await http.put("/v1/auth/channel")
        health = await http.get("/health")
    assert (signed.status_code, set(signed.json())) == (200, {"auth"})
    assert (refused.status_code, signed_in.status_code, anonymous.status_code) == (403, 200, 401)
    assert "denied by rule 'private-user-{sub}'" in refused.json()["error"]
    assert (too_large.status_code, too_large.json()) == (413, {"error": "the request body is over 16384 bytes"})
    assert wrong_method.status_code == 405
    for answer in (signed, refused, signed_in, anonymous, too_large, wrong_method):
        assert answer.headers["cache-control"] == "no-store", (answer.request.url, answer.status_code)
    assert "cache-control" not in health.headers  # only the auth answers: the gateway's others are as they were


async def test_relay_web_s_auth_endpoints_are_not_stored_either(start_emulator: StartEmulator) -> None:
    """An app's own endpoints (relay.web.auth_router) answer as the gateway's: ably-js's GET included."""
    emulator = await start_emulator(app=ABLY_APP)
    rules = ChannelRules()
    rules.add("private-user-{user_id}", lambda user, user_id: user is not None and user.id == user_id)
    app = FastAPI()
    app.include_router(auth_router(AsyncRelay(ably_url(emulator.port)), rules, lambda request: User("alice")))
    async with serve_asgi(app) as url, httpx.AsyncClient(base_url=url) as http:
        token = await http.get("/ably/token", params={"channel": "private-user-alice"})
        refused = await http.get("/ably/token", params={"channel": "private-user-bob"})
    assert (token.status_code, refused.status_code) == (200, 403)
    assert set(parse_capability(token.json()["capability"])) == {"private-user-alice"}
    assert token.headers["cache-control"] == refused.headers["cache-control"] == "no-store"


# -- 2. GET /v1/auth/channel, as ably-js's authUrl asks by default ----------------------------------------------


async def test_channel_auth_reads_a_get_s_query(gateway: RunningGateway) -> None:
    """Any provider: the fields in the query, as a POST's form would have them; a GET's body is not read."""
    alice = {"Authorization": f"Bearer {hs_jwt('alice')}"}
    query = {"socket_id": "123.456", "channel_name": "private-user-alice"}
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        by_get = await http.get("/v1/auth/channel", params=query, headers=alice)
        by_post = await http.post("/v1/auth/channel", data=query, headers=alice)
        body_ignored = await http.request(
            "GET", "/v1/auth/channel", content=json.dumps(query), headers={**alice, "Content-Type": "application/json"}
        )
        refused = await http.get(
            "/v1/auth/channel", params={**query, "channel_name": "private-user-bob"}, headers=alice
        )
    assert by_get.status_code == 200 and by_get.json() == by_post.json()
    assert by_get.headers["cache-control"] == "no-store"
    assert (body_ignored.status_code, body_ignored.json()) == (
        400,
        {"error": "channel_name is required (channel is read too)"},
    )
    assert refused.status_code == 403 and "denied by rule 'private-user-{sub}'" in refused.json()["error"]
    assert refused.headers["cache-control"] == "no-store"


async def test_an_ably_token_request_by_get_and_the_post_as_before(
    start_emulator: StartEmulator, start_gateway: StartGateway
) -> None:
    emulator = await start_emulator(app=ABLY_APP)
    gateway = await start_gateway(GatewaySettings(relay_url=ably_url(emulator.port), jwt_secret=JWT_SECRET))
    alice = {"Authorization": f"Bearer {hs_jwt('alice')}"}
    channels = json.dumps(["private-user-alice", "presence-lobby"])
    async with httpx.AsyncClient(base_url=gateway.url, headers=alice) as http:
        one = await http.get("/v1/auth/channel", params={"channel": "private-user-alice"})
        several = await http.get("/v1/auth/channel", params={"channels": channels})
        posted = await http.post("/v1/auth/channel", data={"channels": channels})
        refused = await http.get("/v1/auth/channel", params={"channel": "private-user-bob"})
        missing = await http.get("/v1/auth/channel")
        user_by_get = await http.get("/v1/auth/user", params={"socket_id": "123.456"})
    assert one.status_code == 200 and set(parse_capability(one.json()["capability"])) == {"private-user-alice"}
    assert set(parse_capability(several.json()["capability"])) == {"private-user-alice", "presence-lobby"}
    assert several.json()["clientId"] == "alice" == posted.json()["clientId"]
    assert parse_capability(posted.json()["capability"]) == parse_capability(several.json()["capability"])
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == 40300 and refused.json()["error"]["statusCode"] == 403
    assert (missing.status_code, missing.json()["error"]["message"]) == (
        403,  # asked again, it is refused again: ably-js fails its connection on a 403 only (RSA4d)
        "channel_name is required (channel is read too)",
    )
    assert user_by_get.status_code == 405  # sign-in is pusher-js's, which posts
    assert user_by_get.headers["cache-control"] == "no-store"


@pytest.mark.timeout(60)
async def test_ably_js_with_its_default_auth_method_gets_its_tokens_from_the_gateway(
    start_emulator: StartEmulator, start_gateway: StartGateway
) -> None:
    installed_modules("ably")
    emulator = await start_emulator(app=ABLY_APP)
    gateway = await start_gateway(GatewaySettings(relay_url=ably_url(emulator.port), jwt_secret=JWT_SECRET))
    env = {
        **app_env("127.0.0.1", emulator.port, ABLY_APP),
        "ABLY_KEY": ABLY_APP.ably_api_key,
        "RELAY_GATEWAY_URL": gateway.url,
        "RELAY_JWT_ALICE": hs_jwt("alice"),
    }
    run = await run_scenario(ABLY_SCRIPTS / "gateway_auth_get.mjs", env)
    assert run.summary["checks"] == ["get-token-receives", "get-channels-token", "get-refusal-fails-for-good"]
    assert run.summary["refusal"]["statusCode"] == 403


# -- 3. a name in channels over the provider's limit ------------------------------------------------------------


async def test_a_token_request_naming_a_channel_over_the_limit_says_which_and_how_long(
    start_emulator: StartEmulator, start_gateway: StartGateway
) -> None:
    emulator = await start_emulator(app=ABLY_APP)
    gateway = await start_gateway(GatewaySettings(relay_url=ably_url(emulator.port), jwt_secret=JWT_SECRET))
    at_limit = "presence-" + "a" * 191  # 200 characters, the limit
    names = ["private-user-alice", at_limit, "presence-lobby", "presence-" + "b" * 192, "presence-" + "c" * 300]
    async with httpx.AsyncClient(base_url=gateway.url, headers={"Authorization": f"Bearer {hs_jwt('alice')}"}) as http:
        too_long = await http.post("/v1/auth/channel", data={"channels": json.dumps(names)})
        by_get = await http.get("/v1/auth/channel", params={"channels": json.dumps(["orders", "x" * 250])})
        bad_character = await http.post("/v1/auth/channel", data={"channels": json.dumps(["orders", "chat:*"])})
        served = await http.post("/v1/auth/channel", data={"channels": json.dumps(names[:3])})
    assert too_long.status_code == 403
    assert too_long.json() == {
        "error": {
            "message": "channels[3]: channel name is 201 characters long; the limit is 200",
            "code": 40300,
            "statusCode": 403,
        }
    }
    assert too_long.headers["cache-control"] == "no-store"
    assert by_get.json()["error"]["message"] == "channels[1]: channel name is 250 characters long; the limit is 200"
    assert bad_character.json()["error"]["message"].startswith("channels[1]: channel name 'chat:*' has characters")
    assert served.status_code == 200  # the gateway kept serving; 200 characters are within the limit
    assert set(parse_capability(served.json()["capability"])) == set(names[:3])


def test_the_library_names_the_channel_of_the_list_as_given() -> None:
    """The index is the name's in the list as sent, duplicates counted: relay.web's synchronous endpoint helper for
    a name the rules refuse, and the client for one Ably refuses."""
    client = Relay(ably_url(9))  # signing only: nothing is sent
    with pytest.raises(InvalidChannelName) as too_long:
        channels_token_body(client, ChannelRules(), User("alice"), ["orders", "orders", "x" * 201])
    assert too_long.value.message == "channels[2]: channel name is 201 characters long; the limit is 200"
    with pytest.raises(InvalidChannelName) as not_ably:
        client.authorize_channels(["orders", "orders", ":orders"])
    assert not_ably.value.message == "channels[2]: invalid Ably channel name ':orders': must not start with ':'"
    assert (str(not_ably.value), not_ably.value.code) == (not_ably.value.message, 40010)


# -- 4. RELAY_JWT_PUBLIC_KEY as a certificate --------------------------------------------------------------------

SigningKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


def self_signed(key: SigningKey) -> str:
    """A self-signed certificate for ``key`` in PEM, as an identity provider publishes its signing key's."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "id.example.test")])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=365))
    )
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(key, algorithm).public_bytes(serialization.Encoding.PEM).decode()


def signed_jwt(key: SigningKey, algorithm: str, sub: str = "alice") -> str:
    return jwt.encode({"sub": sub, "exp": int(time.time()) + 60}, key, algorithm=algorithm)


async def channel_auth(gateway: RunningGateway, token: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        return await http.post(
            "/v1/auth/channel",
            data={"socket_id": "123.456", "channel_name": "private-user-alice"},
            headers={"Authorization": f"Bearer {token}"},
        )


async def test_a_certificate_s_key_verifies_the_jwts_its_private_key_signed(
    tmp_path: Path, emulator: RunningEmulator, start_gateway: StartGateway
) -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    by_file = await gateway_with_key_file(start_gateway, emulator, tmp_path / "auth0.pem", self_signed(rsa_key))
    by_value = await start_gateway(
        env={"RELAY_URL": emulator_url(emulator), "RELAY_JWT_PUBLIC_KEY": self_signed(ec_key)}
    )
    assert (await channel_auth(by_file, signed_jwt(rsa_key, "RS256"))).status_code == 200
    assert (await channel_auth(by_value, signed_jwt(ec_key, "ES256"))).status_code == 200
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = await channel_auth(by_file, signed_jwt(other_key, "RS256"))
    assert (forged.status_code, forged.json()) == (
        401,
        {
            "error": "invalid JWT: Signature verification failed with RELAY_JWT_PUBLIC_KEY: the token was signed "
            "with another key, or altered"
        },
    )
    assert (await channel_auth(by_file, signed_jwt(rsa_key, "RS256"))).status_code == 200  # still serving


def test_a_certificate_that_cannot_serve_is_refused_at_start() -> None:
    unreadable = "-----BEGIN CERTIFICATE-----\nMIIBnotacertificate\n-----END CERTIFICATE-----\n"
    chain = self_signed(ec.generate_private_key(ec.SECP256R1())) * 2
    ed25519_certificate = self_signed(ed25519.Ed25519PrivateKey.generate())
    for pem, message in (
        (
            unreadable,
            "RELAY_JWT_PUBLIC_KEY holds a certificate (-----BEGIN CERTIFICATE-----) that cannot be read, cut short or "
            "altered: copy it whole as your identity provider publishes it, from -----BEGIN to -----END",
        ),
        (
            chain,
            "RELAY_JWT_PUBLIC_KEY holds 2 certificates: give the one whose key signs your users' JWTs (or all of the "
            "identity provider's keys, as a JWKS, in RELAY_JWKS_FILE)",
        ),
        (
            ed25519_certificate,
            "RELAY_JWT_PUBLIC_KEY holds a certificate whose key is Ed25519: the gateway verifies RS256 (an RSA key) "
            "and ES256 (an EC P-256 key) JWTs",
        ),
    ):
        with pytest.raises(ConfigError) as refused:
            GatewaySettings.from_env({"RELAY_URL": "memory://keys", "RELAY_JWT_PUBLIC_KEY": pem})
        assert refused.value.message == message


# -- 5. RELAY_PUBLIC_URL: whole auth URLs in /v1/client-config ----------------------------------------------------


async def client_config(url: str) -> dict[str, Any]:
    async with httpx.AsyncClient() as http:
        answer = await http.get(f"{url}/v1/client-config")
    assert answer.status_code == 200, answer.text
    config: dict[str, Any] = answer.json()
    return config


async def test_client_config_gives_whole_auth_urls_under_the_public_url(
    emulator: RunningEmulator, start_emulator: StartEmulator, start_gateway: StartGateway
) -> None:
    """A Next.js page on :3000 resolving the endpoints against its own origin reaches the gateway; the proxy's path
    prefix (https://example.com/relay, a final / or not) is kept, and so is a mount's."""
    base = {"RELAY_URL": emulator_url(emulator), "RELAY_JWT_SECRET": JWT_SECRET}
    behind_proxy = await start_gateway(env={**base, "RELAY_PUBLIC_URL": "https://example.com/relay/"})
    plain = await start_gateway(env=base)
    config = await client_config(behind_proxy.url)
    assert (config["channelAuthEndpoint"], config["userAuthEndpoint"]) == (
        "https://example.com/relay/v1/auth/channel",
        "https://example.com/relay/v1/auth/user",
    )
    page = "http://localhost:3000/orders/42"
    assert urljoin(page, config["channelAuthEndpoint"]) == "https://example.com/relay/v1/auth/channel"
    assert (await client_config(plain.url))["channelAuthEndpoint"] == "/v1/auth/channel"  # unset: paths, as before

    ably_emulator = await start_emulator(app=ABLY_APP)
    ably_gateway = await start_gateway(
        GatewaySettings(relay_url=ably_url(ably_emulator.port), public_url="http://127.0.0.1:8080")
    )
    ably = await client_config(ably_gateway.url)
    assert (ably["authUrl"], ably["authMethod"]) == ("http://127.0.0.1:8080/v1/auth/channel", "POST")

    parent = FastAPI()
    parent.mount("/rt", create_app(GatewaySettings(relay_url=emulator_url(emulator), public_url="https://app.test")))
    async with serve_asgi(parent) as mounted:
        config = await client_config(f"{mounted}/rt")
        assert config["channelAuthEndpoint"] == "https://app.test/rt/v1/auth/channel"
        # the path it names is the gateway's route: asked there, it answers
        async with httpx.AsyncClient() as http:
            asked = await http.post(
                mounted + urlsplit(config["channelAuthEndpoint"]).path,
                data={"socket_id": "123.456", "channel_name": "orders"},
            )
        assert (asked.status_code, asked.json()) == (
            400,
            {"error": "'orders' is a public channel; only private and presence need auth"},
        )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            "rt.example.com",
            "RELAY_PUBLIC_URL: 'rt.example.com' is not an http(s) URL with a host, such as https://rt.example.com or "
            "https://example.com/relay",
        ),
        (
            "wss://rt.example.com",
            "RELAY_PUBLIC_URL: 'wss://rt.example.com' is not an http(s) URL with a host, such as "
            "https://rt.example.com or https://example.com/relay",
        ),
        (
            "https://example.com/relay?v=1",
            "RELAY_PUBLIC_URL: 'https://example.com/relay?v=1' has a query or a fragment; give the base URL the "
            "routes' paths are appended to, such as https://rt.example.com or https://example.com/relay",
        ),
        (
            "https://example.com/#relay",
            "RELAY_PUBLIC_URL: 'https://example.com/#relay' has a query or a fragment; give the base URL the "
            "routes' paths are appended to, such as https://rt.example.com or https://example.com/relay",
        ),
        (
            "https://admin:hunter2@example.com:8443/relay",
            "RELAY_PUBLIC_URL: 'https://***@example.com:8443/relay' has credentials before its host: "
            "/v1/client-config gives this URL to every page, so leave them out",
        ),
    ],
    ids=["no-scheme", "websocket", "query", "fragment", "credentials"],
)
def test_a_public_url_that_is_no_base_url_is_refused_at_start(value: str, message: str) -> None:
    with pytest.raises(ConfigError) as refused:
        GatewaySettings.from_env({"RELAY_URL": "memory://public", "RELAY_PUBLIC_URL": value})
    assert refused.value.message == message


async def test_relay_serve_refuses_a_bad_public_url_in_one_line() -> None:
    env = {"RELAY_URL": "memory://public", "RELAY_PUBLIC_URL": "https://example.com/?x"}
    assert_refused(await run_relay("serve", "--port", "0", env=env), "RELAY_PUBLIC_URL: 'https://example.com/?x'")
