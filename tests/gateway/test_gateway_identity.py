"""The gateway's identity and rules configuration, end to end: a real gateway (uvicorn, configured through
``GatewaySettings.from_env`` like ``relay serve``) signs auth that a real emulator then accepts on a WebSocket.

Covers RS256 with a public key file, RS256/ES256 with a JWKS file, audience and issuer, the JWT from a cookie,
a TOML rules file binding placeholders to claims, refused JWTs over real HTTP, and ``relay serve`` as a subprocess.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import re
import shutil
import signal
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from websockets.asyncio.client import ClientConnection, connect

from tests.conftest import RunningEmulator
from tests.gateway.conftest import (
    JWT_SECRET,
    TOKEN,
    RunningGateway,
    StartGateway,
    emulator_url,
    gateway_with_jwks_file,
    gateway_with_key_file,
    hs_jwt,
)

ISSUER = "https://id.example.test"
AUDIENCE = "relay-gateway"


def sign(key: Any, algorithm: str, sub: str = "alice", *, kid: str | None = None, ttl: int = 60, **claims: Any) -> str:
    payload = {"sub": sub, "name": sub.title(), "exp": int(time.time()) + ttl, **claims}
    return jwt.encode(payload, key, algorithm=algorithm, headers={"kid": kid} if kid else None)


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def hs256_by_hand(secret: bytes, claims: dict[str, Any]) -> str:
    """HS256 over ``claims`` with ``secret``, built by hand: PyJWT refuses PEM keys as HMAC secrets."""

    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = b64(json.dumps({**claims, "exp": int(time.time()) + 60}).encode())
    signature = hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{b64(signature)}"


def public_pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


async def open_socket(emulator: RunningEmulator) -> tuple[ClientConnection, str]:
    ws = await connect(emulator.ws_url())
    established = json.loads(await ws.recv())
    return ws, json.loads(established["data"])["socket_id"]


async def join(
    emulator: RunningEmulator,
    gateway: RunningGateway,
    channel: str,
    *,
    headers: Mapping[str, str] | None = None,
    cookies: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Authorize ``channel`` at the gateway for a fresh emulator socket and subscribe with that auth: returns the
    emulator's subscription_succeeded data (presence: the member hash), or raises if the gateway refused."""
    ws, socket_id = await open_socket(emulator)
    try:
        async with httpx.AsyncClient(base_url=gateway.url, cookies=dict(cookies or {})) as http:
            response = await http.post(
                "/v1/auth/channel", data={"socket_id": socket_id, "channel_name": channel}, headers=headers
            )
        response.raise_for_status()
        await ws.send(json.dumps({"event": "pusher:subscribe", "data": {"channel": channel, **response.json()}}))
        frame = json.loads(await asyncio.wait_for(ws.recv(), 2))
        assert frame["event"] == "pusher_internal:subscription_succeeded", frame
        return dict(json.loads(frame["data"]))
    finally:
        await ws.close()


async def auth_status(
    gateway: RunningGateway, channel: str, token: str | None = None, cookies: Mapping[str, str] | None = None
) -> tuple[int, str]:
    headers = {"authorization": f"Bearer {token}"} if token is not None else {}
    async with httpx.AsyncClient(base_url=gateway.url, cookies=dict(cookies or {})) as http:
        response = await http.post(
            "/v1/auth/channel", data={"socket_id": "1.1", "channel_name": channel}, headers=headers
        )
    return response.status_code, response.json().get("error", "")


async def test_rs256_with_a_public_key_file(
    tmp_path: Path,
    emulator: RunningEmulator,
    start_gateway: StartGateway,
    rsa_key: rsa.RSAPrivateKey,
    ec_key: ec.EllipticCurvePrivateKey,
) -> None:
    """RELAY_JWT_PUBLIC_KEY as a PEM file path, with RELAY_JWT_AUDIENCE and RELAY_JWT_ISSUER: a correctly signed
    RS256 JWT authorizes the user's channel on the emulator; another key, HS256 signed with the public key (algorithm
    confusion), a wrong issuer or audience, and an expired token are 401 with the reason."""
    gateway = await gateway_with_key_file(
        start_gateway,
        emulator,
        tmp_path / "jwt.pem",
        public_pem(rsa_key),
        RELAY_JWT_AUDIENCE=AUDIENCE,
        RELAY_JWT_ISSUER=ISSUER,
    )
    good = sign(rsa_key, "RS256", aud=AUDIENCE, iss=ISSUER)
    data = await join(emulator, gateway, "presence-room", headers={"authorization": f"Bearer {good}"})
    assert data["presence"]["hash"] == {"alice": {"name": "Alice"}}

    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    confusion = hs256_by_hand(public_pem(rsa_key).encode(), {"sub": "alice", "aud": AUDIENCE, "iss": ISSUER})
    cases = {
        "another key": (sign(other_key, "RS256", aud=AUDIENCE, iss=ISSUER), "Signature verification failed"),
        "HS256 with the public key": (
            confusion,
            "invalid JWT: its alg is 'HS256', and RELAY_JWT_PUBLIC_KEY verifies RS256 only (set "
            "RELAY_JWT_SECRET instead, for HS256 tokens)",
        ),
        "ES256 for an RSA key": (
            sign(ec_key, "ES256", aud=AUDIENCE, iss=ISSUER),
            "invalid JWT: its alg is 'ES256', and RELAY_JWT_PUBLIC_KEY verifies RS256 only",
        ),
        "wrong issuer": (sign(rsa_key, "RS256", aud=AUDIENCE, iss="https://evil.test"), "issuer is not accepted"),
        "wrong audience": (sign(rsa_key, "RS256", aud="other", iss=ISSUER), "audience is not accepted"),
        "expired": (sign(rsa_key, "RS256", aud=AUDIENCE, iss=ISSUER, ttl=-30), "expired"),
    }
    for label, (token, message) in cases.items():
        status, error = await auth_status(gateway, "private-user-alice", token)
        assert (status, message in error) == (401, True), f"{label}: {status} {error}"
    assert (await auth_status(gateway, "private-user-alice", good))[0] == 200


async def test_an_ec_public_key_file_verifies_es256_and_names_it_alone(
    tmp_path: Path,
    emulator: RunningEmulator,
    start_gateway: StartGateway,
    rsa_key: rsa.RSAPrivateKey,
    ec_key: ec.EllipticCurvePrivateKey,
) -> None:
    """A public key verifies its own algorithm: an EC key ES256 tokens, and a refusal names ES256 alone (it said
    "verifies ES256 and RS256 only" of either kind of key)."""
    gateway = await gateway_with_key_file(start_gateway, emulator, tmp_path / "jwt.pem", public_pem(ec_key))
    assert (await auth_status(gateway, "private-user-alice", sign(ec_key, "ES256")))[0] == 200
    refused = await auth_status(gateway, "private-user-alice", sign(rsa_key, "RS256"))
    assert refused == (401, "invalid JWT: its alg is 'RS256', and RELAY_JWT_PUBLIC_KEY verifies ES256 only")
    assert (await auth_status(gateway, "private-user-alice", sign(ec_key, "ES256")))[0] == 200


async def test_rs256_and_es256_from_a_jwks_file(
    tmp_path: Path,
    emulator: RunningEmulator,
    start_gateway: StartGateway,
    rsa_key: rsa.RSAPrivateKey,
    ec_key: ec.EllipticCurvePrivateKey,
) -> None:
    """RELAY_JWKS_FILE with an RSA and an EC P-256 key: each JWT is checked with the key its ``kid`` names; an
    unknown kid, an ES256 token claiming the RSA key's kid, or no kid (which key?), is 401."""
    rsa_jwk = {**RSAAlgorithm.to_jwk(rsa_key.public_key(), as_dict=True), "kid": "rsa-1", "alg": "RS256", "use": "sig"}
    ec_jwk = {**ECAlgorithm.to_jwk(ec_key.public_key(), as_dict=True), "kid": "ec-1", "alg": "ES256", "use": "sig"}
    gateway = await gateway_with_jwks_file(start_gateway, emulator, tmp_path / "jwks.json", rsa_jwk, ec_jwk)

    rs = sign(rsa_key, "RS256", "alice", kid="rsa-1")
    es = sign(ec_key, "ES256", "bob", kid="ec-1")
    assert await join(emulator, gateway, "private-user-alice", headers={"authorization": f"Bearer {rs}"}) == {}
    assert await join(emulator, gateway, "private-user-bob", headers={"authorization": f"Bearer {es}"}) == {}

    assert await auth_status(gateway, "private-user-alice", sign(rsa_key, "RS256", kid="rsa-9")) == (
        401,
        "the JWT's kid is not in the JWKS",
    )
    mismatched = sign(ec_key, "ES256", kid="rsa-1")  # was a 500: PyJWT's TypeError for the wrong key object
    assert await auth_status(gateway, "private-user-alice", mismatched) == (
        401,
        "invalid JWT: its alg is 'ES256', and the key of RELAY_JWKS_FILE with the JWT's kid verifies RS256 only",
    )
    assert (await auth_status(gateway, "private-user-bob", es))[0] == 200
    for key, algorithm in ((rsa_key, "RS256"), (ec_key, "ES256")):  # was checked with the first key: ES256 "forged"
        assert await auth_status(gateway, "private-user-alice", sign(key, algorithm)) == (
            401,
            "the JWT has no kid header, and the JWKS holds 2 keys: the kid says which one signed it",
        )


async def test_a_jwt_without_a_kid_is_checked_with_the_only_key_of_a_jwks(
    tmp_path: Path, emulator: RunningEmulator, start_gateway: StartGateway, rsa_key: rsa.RSAPrivateKey
) -> None:
    rsa_jwk = {**RSAAlgorithm.to_jwk(rsa_key.public_key(), as_dict=True), "kid": "rsa-1", "alg": "RS256"}
    gateway = await gateway_with_jwks_file(start_gateway, emulator, tmp_path / "jwks.json", rsa_jwk)
    assert (
        await join(
            emulator, gateway, "private-user-alice", headers={"authorization": f"Bearer {sign(rsa_key, 'RS256')}"}
        )
        == {}
    )
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert await auth_status(gateway, "private-user-alice", sign(other, "RS256")) == (
        401,
        "invalid JWT: Signature verification failed with the key of RELAY_JWKS_FILE with the JWT's kid: the token was "
        "signed with another key, or altered",
    )


async def test_jwt_from_a_cookie(emulator: RunningEmulator, start_gateway: StartGateway) -> None:
    """RELAY_JWT_COOKIE: the JWT comes from that cookie when there is no bearer header; a forged cookie is 401 and
    a bearer header wins over the cookie."""
    gateway = await start_gateway(
        env={"RELAY_URL": emulator_url(emulator), "RELAY_JWT_SECRET": JWT_SECRET, "RELAY_JWT_COOKIE": "session"}
    )
    data = await join(emulator, gateway, "presence-cookie", cookies={"session": hs_jwt("carol", name="Carol C")})
    assert data["presence"]["hash"] == {"carol": {"name": "Carol C"}}
    forged = hs_jwt("carol", secret="forged-secret-0123456789abcdef0123456789")
    assert (await auth_status(gateway, "private-user-carol", cookies={"session": forged}))[0] == 401
    assert (await auth_status(gateway, "private-user-carol", cookies={"other": hs_jwt("carol")}))[0] == 403
    status, _ = await auth_status(gateway, "private-user-carol", hs_jwt("dave"), cookies={"session": hs_jwt("carol")})
    assert status == 403  # the header's dave may not have carol's channel


async def test_a_public_key_on_one_line_with_its_line_breaks_written_as_backslash_n(
    emulator: RunningEmulator, start_gateway: StartGateway, rsa_key: rsa.RSAPrivateKey
) -> None:
    """RELAY_JWT_PUBLIC_KEY as a .env file or a host's settings page holds a PEM key, on one line with ``\\n`` for its
    line breaks, was refused at start as no RS256 or ES256 key; it is read as the key it is."""
    one_line = public_pem(rsa_key).strip().replace("\n", "\\n")
    assert "\n" not in one_line
    gateway = await start_gateway(env={"RELAY_URL": emulator_url(emulator), "RELAY_JWT_PUBLIC_KEY": one_line})
    assert await auth_status(gateway, "private-user-alice", sign(rsa_key, "RS256")) == (200, "")
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    status, error = await auth_status(gateway, "private-user-alice", sign(other_key, "RS256"))
    assert (status, error.startswith("invalid JWT: Signature verification failed")) == (401, True)


async def test_the_jwt_cookie_is_read_from_every_cookie_header(
    emulator: RunningEmulator, start_gateway: StartGateway
) -> None:
    """An HTTP/2 request's cookies, forwarded by a proxy as several Cookie headers: only the first was read, so the
    JWT in a second was missing (403 "its 'session' cookie was empty", which it was not), and of two sessions in two
    headers the first won silently instead of the 401 for two tokens."""
    gateway = await start_gateway(
        env={"RELAY_URL": emulator_url(emulator), "RELAY_JWT_SECRET": JWT_SECRET, "RELAY_JWT_COOKIE": "session"}
    )

    async def status(*cookies: str) -> tuple[int, str]:
        async with httpx.AsyncClient(base_url=gateway.url) as http:
            response = await http.post(
                "/v1/auth/channel",
                data={"socket_id": "1.1", "channel_name": "private-user-carol"},
                headers=[("cookie", cookie) for cookie in cookies],
            )
        return response.status_code, response.json().get("error", "")

    assert await status("theme=dark", f"session={hs_jwt('carol')}") == (200, "")
    two = await status(f"session={hs_jwt('bob')}", f"session={hs_jwt('carol')}")
    assert two[0] == 401 and two[1].startswith("the request has 2 'session' cookies with different tokens")
    assert await status("theme=dark", "session=") == (
        403,
        "'private-user-carol' needs an authenticated user: the request had no Authorization: Bearer header, and its "
        "'session' cookie was empty (signed out)",
    )


RULES_TOML = """
# Teams: the {team} placeholder must equal the JWT's team claim, {sub} its subject.
[[channels]]
pattern = "private-team-{team}.{sub}"

[[channels]]
pattern = "presence-team-{team}"
user_info_claims = ["name", "role"]

[[channels]]
pattern = "private-broadcast-*"
"""


async def test_toml_rules_file_binds_placeholders_to_claims(
    tmp_path: Path, emulator: RunningEmulator, start_gateway: StartGateway
) -> None:
    """RELAY_RULES_FILE replaces the default rules: ``{team}``/``{sub}`` must equal those claims, presence
    user_info takes the configured claims, ``*`` matches any rest; the default private-user-{sub} rule is gone."""
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES_TOML)
    gateway = await start_gateway(
        env={"RELAY_URL": emulator_url(emulator), "RELAY_JWT_SECRET": JWT_SECRET, "RELAY_RULES_FILE": str(rules)}
    )
    alice = hs_jwt("alice", team="red", role="chef", email="a@example.test")
    bearer = {"authorization": f"Bearer {alice}"}
    assert await join(emulator, gateway, "private-team-red.alice", headers=bearer) == {}
    data = await join(emulator, gateway, "presence-team-red", headers=bearer)
    assert data["presence"]["hash"] == {"alice": {"name": "Alice", "role": "chef"}}
    assert await join(emulator, gateway, "private-broadcast-red.all", headers=bearer) == {}
    for channel in ("private-team-blue.alice", "private-team-red.bob", "presence-team-blue", "private-user-alice"):
        assert (await auth_status(gateway, channel, alice))[0] == 403, channel
    assert (await auth_status(gateway, "presence-team-red", hs_jwt("bob")))[0] == 403  # no team claim
    assert (await auth_status(gateway, "private-broadcast-x"))[0] == 403  # authenticated users only


async def test_refused_jwts_over_real_http(
    gateway: RunningGateway, emulator: RunningEmulator, rsa_key: rsa.RSAPrivateKey
) -> None:
    """The in-process refusals hold on the real server too (401 with the reason, for channel auth and signin), and
    the gateway keeps serving a good JWT afterwards."""
    now = int(time.time())
    cases = {
        "forged": (hs_jwt(secret="forged-secret-0123456789abcdef0123456789"), "Signature verification failed"),
        "expired": (hs_jwt(ttl=-30), "the JWT has expired"),
        "alg none": (
            jwt.encode({"sub": "alice", "exp": now + 60}, "", algorithm="none"),
            "invalid JWT: its alg is 'none', and RELAY_JWT_SECRET verifies HS256 only",
        ),
        "RS256 for the secret": (
            sign(rsa_key, "RS256"),
            "invalid JWT: its alg is 'RS256', and RELAY_JWT_SECRET verifies HS256 only (set RELAY_JWT_PUBLIC_KEY or "
            "RELAY_JWKS_FILE instead, for RS256 and ES256 tokens)",
        ),
        "no exp": (jwt.encode({"sub": "alice"}, JWT_SECRET, algorithm="HS256"), '"exp"'),
        "no sub": (jwt.encode({"exp": now + 60}, JWT_SECRET, algorithm="HS256"), '"sub"'),
        "garbage": ("a.b.c", "invalid JWT"),
    }
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        for label, (token, message) in cases.items():
            for path in ("/v1/auth/channel", "/v1/auth/user"):
                response = await http.post(
                    path,
                    data={"socket_id": "1.1", "channel_name": "private-user-alice"},
                    headers={"authorization": f"Bearer {token}"},
                )
                assert response.status_code == 401, (label, path, response.text)
                assert message in response.json()["error"], (label, path, response.text)
        unsigned = await http.post("/v1/auth/user", data={"socket_id": "1.1"})
        assert unsigned.status_code == 401
    assert await join(emulator, gateway, "private-user-alice", headers={"authorization": f"Bearer {hs_jwt()}"}) == {}


def relay_command() -> list[str]:
    script = shutil.which("relay")
    return [script] if script else [sys.executable, "-m", "relay.cli"]


async def test_relay_serve_subprocess(tmp_path: Path, emulator: RunningEmulator) -> None:
    """``relay serve --port 0`` configured only by environment variables: it logs the address it listens on,
    answers /health and /v1/client-config, publishes to the emulator with the token, authorizes with the JWT, sends
    CORS headers for RELAY_CORS_ORIGINS and shuts down gracefully on SIGTERM; a broken rules file is a configuration
    error (exit 2) naming the file."""
    env = {
        "PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin",
        "RELAY_URL": emulator_url(emulator),
        "RELAY_API_TOKEN": TOKEN,
        "RELAY_JWT_SECRET": JWT_SECRET,
        "RELAY_CORS_ORIGINS": "http://app.example.test",
    }
    process = await asyncio.create_subprocess_exec(
        *relay_command(),
        "serve",
        "--port",
        "0",
        "--log-level",
        "info",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert process.stdout is not None
    output: list[str] = []
    try:
        async with asyncio.timeout(10):
            while True:
                line = (await process.stdout.readline()).decode()
                assert line, f"relay serve exited early: {''.join(output)}"
                output.append(line)
                match = re.search(r"Uvicorn running on (http://127\.0\.0\.1:\d+)", line)
                if match:
                    base = match.group(1)
                    break
        ws, _ = await open_socket(emulator)
        await ws.send(json.dumps({"event": "pusher:subscribe", "data": {"channel": "kitchen"}}))
        assert json.loads(await ws.recv())["event"] == "pusher_internal:subscription_succeeded"
        async with httpx.AsyncClient(base_url=base) as http:
            assert (await http.get("/health")).json() == {"status": "ok"}
            head = await http.head("/health")
            assert (head.status_code, head.content, head.headers["content-type"]) == (200, b"", "application/json")
            assert (await http.get("/v1/client-config")).json()["wsPort"] == emulator.port
            body = {"channel": "kitchen", "event": "order", "data": {"n": 1}}
            assert (await http.post("/v1/publish", json=body)).status_code == 401
            published = await http.post("/v1/publish", json=body, headers={"authorization": f"Bearer {TOKEN}"})
            assert published.json() == {"channels": ["kitchen"], "message_ids": []}
            frame = json.loads(await asyncio.wait_for(ws.recv(), 2))
            assert (frame["event"], json.loads(frame["data"])) == ("order", {"n": 1})
            auth = await http.post(
                "/v1/auth/channel",
                data={"socket_id": "1.1", "channel_name": "private-user-alice"},
                headers={"authorization": f"Bearer {hs_jwt()}", "origin": "http://app.example.test"},
            )
            assert auth.status_code == 200
            assert auth.headers["access-control-allow-origin"] == "http://app.example.test"
        await ws.close()
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            log = "".join(output) + (await process.stdout.read()).decode()
            # uvicorn shuts down gracefully, then re-raises the captured SIGTERM (exit status -15).
            assert await process.wait() in (0, -signal.SIGTERM), log
            assert "Application shutdown complete" in log

    broken = tmp_path / "rules.toml"
    broken.write_text("[[channels]]\npattern = 'private-{sub}'\nusers = 'everyone'\n")
    failed = await asyncio.create_subprocess_exec(
        *relay_command(),
        "serve",
        "--port",
        "0",
        env={**env, "RELAY_RULES_FILE": str(broken)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(10):
        _, stderr = await failed.communicate()
    assert failed.returncode == 2
    assert stderr.decode().startswith(f"relay: configuration error: {broken} channels[0]: users must be")
