"""The gateway's identity and token handling at its edges: sign-in limits, JWKS key use, publishes refused before
their bodies are read, and bodies over a route's limit refused while they stream. In process (ASGI) or served by
uvicorn, against a real emulator where a provider's answer matters."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from websockets.asyncio.client import connect

from relay.gateway import GatewaySettings, create_app
from relay.gateway.guards import MAX_AUTH_BODY_BYTES, MAX_BODY_BYTES, MAX_CHANNEL_AUTH_BODY_BYTES
from tests.conftest import RunningEmulator
from tests.gateway.conftest import JWT_SECRET, TOKEN, RunningGateway, emulator_url, hs_jwt


def in_process(settings: GatewaySettings) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=create_app(settings), raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://gateway")


@pytest.mark.parametrize(
    ("claims", "limit"),
    [({"sub": "u" * 129}, "128"), ({"sub": "alice", "name": "n" * 2_000}, "1024")],
    ids=["sub over 128 characters", "name claim over 1 KB"],
)
async def test_user_auth_refuses_a_sub_or_name_the_provider_refuses_as_presence_auth_does(
    emulator: RunningEmulator, claims: dict[str, Any], limit: str
) -> None:
    """/v1/auth/channel refuses a presence member over Pusher's limits (128-character id, 1 KB info: 400/413, "refused
    here, not later"), and /v1/auth/user refuses the same identity too: signed, the emulator (as Pusher) would fail
    the sign-in and close the whole connection with 4009, and pusher-js would lose every subscription."""
    settings = GatewaySettings(relay_url=emulator_url(emulator), api_token=TOKEN, jwt_secret=JWT_SECRET)
    token = jwt.encode({"exp": int(time.time()) + 60, **claims}, JWT_SECRET, algorithm="HS256")
    bearer = {"authorization": f"Bearer {token}"}
    async with in_process(settings) as gateway, connect(emulator.ws_url()) as ws:
        socket_id = json.loads(json.loads(await ws.recv())["data"])["socket_id"]
        presence = await gateway.post(
            "/v1/auth/channel", data={"socket_id": socket_id, "channel_name": "presence-room"}, headers=bearer
        )
        assert presence.status_code in (400, 413) and limit in presence.json()["error"], presence.text
        signin = await gateway.post("/v1/auth/user", data={"socket_id": socket_id}, headers=bearer)
        emulator_answer: str | bytes = ""
        if signin.status_code == 200:
            await ws.send(json.dumps({"event": "pusher:signin", "data": signin.json()}))
            emulator_answer = await asyncio.wait_for(ws.recv(), 2)
    assert signin.status_code in (400, 413), (
        f"the gateway signed a sign-in ({signin.status_code}) that the emulator refuses: {emulator_answer!r}"
    )
    assert limit in signin.json()["error"]


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


async def test_a_jwks_key_for_encryption_does_not_verify_signatures(
    emulator: RunningEmulator, rsa_key: rsa.RSAPrivateKey
) -> None:
    """RFC 7517 §4.2: a JWK with ``"use": "enc"`` is for encryption, not for checking signatures (PyJWKClient
    itself keeps only ``use: sig`` keys): a token whose kid names the IdP's encryption key is refused."""
    ec_key = ec.generate_private_key(ec.SECP256R1())
    enc_jwk = {**RSAAlgorithm.to_jwk(rsa_key.public_key(), as_dict=True), "kid": "enc-1", "use": "enc"}
    sig_jwk = {**ECAlgorithm.to_jwk(ec_key.public_key(), as_dict=True), "kid": "sig-1", "alg": "ES256", "use": "sig"}
    settings = GatewaySettings(relay_url=emulator_url(emulator), jwks={"keys": [enc_jwk, sig_jwk]})
    payload = {"sub": "alice", "exp": int(time.time()) + 60}
    form = {"socket_id": "1.1", "channel_name": "private-user-alice"}
    async with in_process(settings) as gateway:
        good = jwt.encode(payload, ec_key, algorithm="ES256", headers={"kid": "sig-1"})
        assert (
            await gateway.post("/v1/auth/channel", data=form, headers={"authorization": f"Bearer {good}"})
        ).is_success
        with_enc_key = jwt.encode(payload, rsa_key, algorithm="RS256", headers={"kid": "enc-1"})
        response = await gateway.post(
            "/v1/auth/channel", data=form, headers={"authorization": f"Bearer {with_enc_key}"}
        )
    assert response.status_code == 401, f"a token checked with a use=enc key was accepted: {response.text[:120]}"


async def test_an_unauthenticated_publish_is_refused_before_its_body_is_read() -> None:
    """A publish without the API token is answered 401 before any of its body is read (FastAPI reads and parses a
    body before the handler runs, so the check is a middleware): nobody without the token can make the gateway
    buffer a body. The body is valid JSON well under the 1 MiB limit and streamed chunked, with no Content-Length,
    so the size guard has nothing to refuse up front: only the token check can answer before the body is read."""
    pieces = [b'{"channel": "a", "event": "e", "data": "', *(b"x" * 4_096 for _ in range(16)), b'"}']
    assert sum(len(piece) for piece in pieces) < MAX_BODY_BYTES
    pulled = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal pulled
        for piece in pieces:
            pulled += 1
            yield piece

    settings = GatewaySettings(relay_url="memory://audit", api_token=TOKEN, jwt_secret=JWT_SECRET)
    async with in_process(settings) as gateway:
        response = await gateway.post("/v1/publish", content=body(), headers={"content-type": "application/json"})
    assert "content-length" not in response.request.headers
    assert response.request.headers["transfer-encoding"] == "chunked"
    assert response.status_code == 401, response.text[:200]
    assert response.json() == {
        "error": "missing or invalid API token (Authorization: Bearer RELAY_API_TOKEN): the request has no "
        "Authorization header"
    }
    assert pulled == 0, f"the gateway read {pulled} of {len(pieces)} chunks of a publish without the API token"


async def post_chunked_without_end(url: str, path: str, headers: dict[str, str], body: bytes) -> bytes:
    """POST ``body`` with chunked transfer encoding but never the last chunk, and read what the server answers: a
    server that waits for the whole body before deciding never answers."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    writer.write(f"POST {path} HTTP/1.1\r\nhost: {host}\r\ntransfer-encoding: chunked\r\n{head}\r\n".encode())
    for start in range(0, len(body), 16_384):
        chunk = body[start : start + 16_384]
        writer.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(4096), 5)
    finally:
        writer.close()


@pytest.mark.parametrize(
    ("path", "content_type", "limit"),
    [
        ("/v1/publish", "application/json", MAX_BODY_BYTES),
        ("/v1/webhooks", "application/json", MAX_BODY_BYTES),
        ("/v1/auth/channel", "application/x-www-form-urlencoded", MAX_CHANNEL_AUTH_BODY_BYTES),
        ("/v1/auth/user", "application/json", MAX_AUTH_BODY_BYTES),
    ],
)
async def test_a_body_over_its_route_s_limit_is_refused_while_it_streams(
    gateway: RunningGateway, path: str, content_type: str, limit: int
) -> None:
    """A chunked body (no Content-Length to refuse up front) is read only up to its route's limit, then answered
    413 before the rest arrives: nobody can make the gateway buffer a body of any size. It goes on serving."""
    bearer = TOKEN if path.startswith("/v1/publish") else hs_jwt()
    headers = {"authorization": f"Bearer {bearer}", "content-type": content_type}
    answer = await post_chunked_without_end(gateway.url, path, headers, b"x" * (limit + 16_384))
    status, _, rest = answer.partition(b"\r\n")
    assert status == b"HTTP/1.1 413 Request Entity Too Large", answer[:200]
    assert rest.endswith(f'{{"error":"the request body is over {limit} bytes"}}'.encode()), answer[:300]
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        publish = await http.post(
            "/v1/publish",
            json={"channel": "a", "event": "e", "data": "1"},
            headers={"authorization": f"Bearer {TOKEN}"},
        )
    assert publish.status_code == 200, publish.text


@pytest.mark.parametrize(
    ("path", "limit"), [("/v1/auth/channel", MAX_CHANNEL_AUTH_BODY_BYTES), ("/v1/webhooks", MAX_BODY_BYTES)]
)
async def test_a_declared_body_over_the_limit_is_refused_before_it_is_sent(
    gateway: RunningGateway, path: str, limit: int
) -> None:
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        response = await http.post(path, content=b"x" * (limit + 1), headers={"content-type": "text/plain"})
    assert response.status_code == 413
    assert response.json() == {"error": f"the request body is over {limit} bytes"}


async def test_a_body_at_the_auth_limit_is_read_whole(gateway: RunningGateway) -> None:
    form = b"socket_id=1.1&channel_name=private-user-alice&pad="
    body = form + b"x" * (MAX_CHANNEL_AUTH_BODY_BYTES - len(form))
    headers = {"authorization": f"Bearer {hs_jwt()}", "content-type": "application/x-www-form-urlencoded"}
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        response = await http.post("/v1/auth/channel", content=body, headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["auth"].startswith("app-key:")


async def test_a_browser_can_read_the_refusal_of_an_oversized_auth_body(emulator: RunningEmulator) -> None:
    """The size guard sits inside CORS: a page on an allowed origin sees the 413 and its reason, not a CORS error."""
    origin = "https://shop.example"
    settings = GatewaySettings(relay_url=emulator_url(emulator), jwt_secret=JWT_SECRET, cors_origins=(origin,))
    async with in_process(settings) as gateway:
        response = await gateway.post(
            "/v1/auth/channel", content=b"x" * (MAX_CHANNEL_AUTH_BODY_BYTES + 1), headers={"origin": origin}
        )
    assert response.status_code == 413
    assert response.headers["access-control-allow-origin"] == origin


async def test_a_forged_token_is_told_its_signature_failed_whichever_key_of_its_kid_comes_last(
    emulator: RunningEmulator, rsa_key: rsa.RSAPrivateKey
) -> None:
    """An RSA key, then an EC key, under one kid: an altered RS256 token was told "its alg is 'RS256', and the key
    … verifies ES256 and RS256 only" (the EC key's refusal, the last tried), which contradicts itself. The key of the
    token's algorithm is tried last, so the refusal is the failed signature, in either order of the keys."""
    ec_key = ec.generate_private_key(ec.SECP256R1())
    rsa_jwk = {**RSAAlgorithm.to_jwk(rsa_key.public_key(), as_dict=True), "kid": "k1", "alg": "RS256"}
    ec_jwk = {**ECAlgorithm.to_jwk(ec_key.public_key(), as_dict=True), "kid": "k1", "alg": "ES256"}
    token = jwt.encode(
        {"sub": "alice", "exp": int(time.time()) + 60}, rsa_key, algorithm="RS256", headers={"kid": "k1"}
    )
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = jwt.encode(jwt.decode(token, options={"verify_signature": False}), stranger, "RS256", {"kid": "k1"})
    form = {"socket_id": "1.1", "channel_name": "private-user-alice"}
    for keys in ([rsa_jwk, ec_jwk], [ec_jwk, rsa_jwk]):
        settings = GatewaySettings(relay_url=emulator_url(emulator), jwks={"keys": keys})
        async with in_process(settings) as gateway:
            good = await gateway.post("/v1/auth/channel", data=form, headers={"authorization": f"Bearer {token}"})
            assert good.status_code == 200, good.text
            refused = await gateway.post("/v1/auth/channel", data=form, headers={"authorization": f"Bearer {forged}"})
        assert (refused.status_code, refused.json()["error"]) == (
            401,
            "invalid JWT: Signature verification failed with the key of RELAY_JWKS_FILE with the JWT's kid: the token "
            "was signed with another key, or altered",
        )


async def test_a_token_of_a_skipped_key_is_told_why_the_key_verifies_nothing(
    emulator: RunningEmulator, rsa_key: rsa.RSAPrivateKey, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    """An identity provider's ES384 key and RSA-OAEP encryption key beside its ES256 one: the gateway skips them, but a
    token of their kid was told "the JWT's kid is not in the JWKS", though the kid is there, and nothing said at start
    that they were skipped. Both now name the key and the reason (the encryption key's as such, not PyJWT's words with
    the whole key in them), each warned of once although the first JWT reads the file again; an unknown kid is
    refused as before."""
    es256, es384 = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP384R1())
    keys = [
        {**ECAlgorithm.to_jwk(es256.public_key(), as_dict=True), "kid": "current"},
        {**ECAlgorithm.to_jwk(es384.public_key(), as_dict=True), "kid": "p384"},
        {**RSAAlgorithm.to_jwk(rsa_key.public_key(), as_dict=True), "kid": "enc-1", "use": "enc", "alg": "RSA-OAEP"},
    ]
    jwks_file = tmp_path / "jwks.json"
    jwks_file.write_text(json.dumps({"keys": keys}))
    settings = GatewaySettings(relay_url=emulator_url(emulator), jwks={"keys": keys}, jwks_file=jwks_file)
    payload = {"sub": "alice", "exp": int(time.time()) + 60}
    form = {"socket_id": "1.1", "channel_name": "private-user-alice"}
    cases = ((es384, "ES384", "p384"), (rsa_key, "RS256", "enc-1"), (es256, "ES256", "gone"))
    with caplog.at_level("WARNING", logger="relay.gateway"):
        async with in_process(settings) as gateway:
            answers = []
            for key, algorithm, kid in cases:
                token = jwt.encode(payload, key, algorithm=algorithm, headers={"kid": kid})
                response = await gateway.post(
                    "/v1/auth/channel", data=form, headers={"authorization": f"Bearer {token}"}
                )
                answers.append((response.status_code, response.json()["error"]))
    named = "names a key of RELAY_JWKS_FILE that verifies no JWT here"
    es384_reason = "its algorithm is ES384; the gateway verifies RS256 and ES256 only"
    assert answers == [
        (401, f"the JWT's kid 'p384' {named}: {es384_reason}"),
        (401, f"the JWT's kid 'enc-1' {named}: it is an encryption key (use: enc)"),
        (401, "the JWT's kid is not in the JWKS"),
    ]
    warnings = [record.getMessage() for record in caplog.records if record.name == "relay.gateway"]
    assert warnings == [
        f"RELAY_JWKS_FILE: key 'p384' verifies no JWT here: {es384_reason}",
        "RELAY_JWKS_FILE: key 'enc-1' verifies no JWT here: it is an encryption key (use: enc)",
    ]
