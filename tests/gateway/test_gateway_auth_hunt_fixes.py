"""What a gateway hunt found in ``relay serve``'s user authentication, each checked against a real ``relay serve``
process over HTTP:

1. An RSA key under 2048 bits verified users' JWTs (RELAY_JWT_PUBLIC_KEY, a certificate's key, a JWKS key), with only
   PyJWT's warning on stderr at the first JWT: whoever factors such a key signs a JWT for any user, as with the short
   HS256 secret the gateway already refuses. It stops the gateway at start, and a JWKS key is skipped with the reason.
2. A wrong method at /v1/auth/channel, which is a route for GET (ably-js's authUrl) and one for POST (pusher-js), was
   a 405 with ``Allow: GET``: Starlette names the first route's methods alone, and POST was left out.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from jwt.algorithms import RSAAlgorithm

from tests.cli_support import assert_refused, run_relay, write
from tests.gateway.conftest import relay_serve
from tests.gateway.test_gateway_browser_facing_fixes import self_signed

SHORT_KEY = (
    "it is a 1024-bit RSA key, and the gateway verifies with RSA keys of 2048 bits or more (NIST SP 800-131A): a "
    "shorter one can be factored, and whoever factors it signs a JWT for any user"
)


async def test_an_rsa_key_under_2048_bits_stops_the_gateway_at_start(tmp_path: Path) -> None:
    short = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    pem = short.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()
    for name, text in (("key.pem", pem), ("cert.pem", self_signed(short))):
        env = {"RELAY_URL": "memory://short", "RELAY_JWT_PUBLIC_KEY": str(write(tmp_path, text, name))}
        assert_refused(
            await run_relay("serve", "--port", "0", env=env),
            f"RELAY_JWT_PUBLIC_KEY is no key to verify with: {SHORT_KEY}",
        )
    only_short = {**RSAAlgorithm.to_jwk(short.public_key(), as_dict=True), "kid": "old"}
    jwks = write(tmp_path, json.dumps({"keys": [only_short]}), "jwks.json")
    outcome = await run_relay("serve", "--port", "0", env={"RELAY_URL": "memory://short", "RELAY_JWKS_FILE": str(jwks)})
    assert_refused(outcome, f"it has 1 key(s); key 'old' verifies no JWT here: {SHORT_KEY}")


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")  # the test signs with the short key
def test_a_jwks_key_under_2048_bits_is_skipped_and_its_jwts_refused_saying_why(tmp_path: Path) -> None:
    short = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    current = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    keys = [
        {**RSAAlgorithm.to_jwk(short.public_key(), as_dict=True), "kid": "old"},
        {**RSAAlgorithm.to_jwk(current.public_key(), as_dict=True), "kid": "current"},
    ]
    jwks = write(tmp_path, json.dumps({"keys": keys}), "jwks.json")
    form = {"socket_id": "1.1", "channel_name": "private-user-alice"}
    claims = {"sub": "alice", "exp": int(time.time()) + 60}
    with relay_serve(RELAY_URL="memory://short", RELAY_JWKS_FILE=str(jwks)) as served:
        answers = []
        for key, kid in ((short, "old"), (current, "current")):
            token = jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid})
            response = httpx.post(
                f"http://127.0.0.1:{served.port}/v1/auth/channel",
                data=form,
                headers={"Authorization": f"Bearer {token}"},
            )
            answers.append((response.status_code, response.json().get("error")))
        log = served.log().decode()
    assert answers == [
        (401, f"the JWT's kid 'old' names a key of RELAY_JWKS_FILE that verifies no JWT here: {SHORT_KEY}"),
        (200, None),
    ]
    assert f"RELAY_JWKS_FILE: key 'old' verifies no JWT here: {SHORT_KEY}" in log
    assert "InsecureKeyLengthWarning" not in log


def test_a_wrong_method_s_405_allows_every_method_of_the_path() -> None:
    with relay_serve() as served:
        base = f"http://127.0.0.1:{served.port}"
        allowed = {
            (method, path): (response.status_code, response.headers.get("allow"))
            for method, path in (("PUT", "/v1/auth/channel"), ("HEAD", "/v1/auth/channel"), ("PUT", "/v1/publish"))
            for response in [httpx.request(method, base + path)]
        }
    assert allowed == {
        ("PUT", "/v1/auth/channel"): (405, "GET, POST"),
        ("HEAD", "/v1/auth/channel"): (405, "GET, POST"),
        ("PUT", "/v1/publish"): (405, "POST"),
    }
