"""Fixes from a second fresh-eyes audit of the gateway, each against a real emulator and a real gateway."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from relay.gateway import GatewaySettings
from tests.cli_support import assert_refused, run_relay, write
from tests.conftest import RunningEmulator
from tests.gateway.conftest import JWT_SECRET, TOKEN, RunningGateway, StartGateway, hs_jwt, relay_serve

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


P384_AS_ES256 = (
    "its alg is ES256, but it is an EC key on the curve secp384r1, and ES256 is signed with P-256 (secp256r1) keys only"
)


def es_jwk(curve: ec.EllipticCurve, kid: str) -> tuple[ec.EllipticCurvePrivateKey, dict[str, object]]:
    """A private key on ``curve`` and its public JWK labelled ES256, as a JWKS that mislabels a P-384 key has it."""
    key = ec.generate_private_key(curve)
    return key, {**ECAlgorithm.to_jwk(key.public_key(), as_dict=True), "kid": kid, "alg": "ES256", "use": "sig"}


async def test_a_jwks_whose_only_es256_key_is_no_p256_key_stops_the_gateway_at_start(tmp_path: Path) -> None:
    """PyJWK takes a key's alg as written: a P-384 key labelled ES256 counted as a usable key, so the gateway started
    and refused every JWT, an ES384 one as 'its alg is ES384, and the key … verifies ES256 only'."""
    _, mislabelled = es_jwk(ec.SECP384R1(), "p384")
    jwks = write(tmp_path, json.dumps({"keys": [mislabelled]}), "jwks.json")
    outcome = await run_relay("serve", "--port", "0", env={"RELAY_URL": "memory://es", "RELAY_JWKS_FILE": str(jwks)})
    assert_refused(outcome, f"it has 1 key(s); key 'p384' verifies no JWT here: {P384_AS_ES256}")


def test_a_jwks_key_labelled_es256_off_p256_is_skipped_and_its_jwts_refused_saying_why(tmp_path: Path) -> None:
    p384, mislabelled = es_jwk(ec.SECP384R1(), "p384")
    p256, current = es_jwk(ec.SECP256R1(), "current")
    jwks = write(tmp_path, json.dumps({"keys": [mislabelled, current]}), "jwks.json")
    claims = {"sub": "alice", "exp": int(time.time()) + 60}
    with relay_serve(RELAY_URL="memory://es", RELAY_JWKS_FILE=str(jwks)) as served:
        answers = []
        for key, algorithm, kid in ((p384, "ES384", "p384"), (p256, "ES256", "current")):
            token = jwt.encode(claims, key, algorithm=algorithm, headers={"kid": kid})
            response = httpx.post(
                f"http://127.0.0.1:{served.port}/v1/auth/channel",
                data={"socket_id": "1.1", "channel_name": "private-user-alice"},
                headers={"Authorization": f"Bearer {token}"},
            )
            answers.append((response.status_code, response.json().get("error")))
        log = served.log().decode()
    assert answers == [
        (401, f"the JWT's kid 'p384' names a key of RELAY_JWKS_FILE that verifies no JWT here: {P384_AS_ES256}"),
        (200, None),
    ]
    assert f"RELAY_JWKS_FILE: key 'p384' verifies no JWT here: {P384_AS_ES256}" in log
