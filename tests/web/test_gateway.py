"""The gateway in process (ASGI) in front of a real emulator: publishing, JWT identity, auth, webhooks."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator

import httpx
import jwt
import pytest
from websockets.asyncio.client import connect

from relay.errors import ConfigError
from relay.gateway import GatewaySettings, create_app
from relay.models import WebhookEvent
from relay.protocol.signing import channel_auth, webhook_signature
from tests.conftest import RunningEmulator, StartEmulator

TOKEN = "backend-token"
JWT_SECRET = "jwt-secret-for-tests-0123456789abcdef"


def user_jwt(sub: str = "alice", **claims: object) -> str:
    payload = {"sub": sub, "name": sub.title(), "exp": int(time.time()) + 60, **claims}
    return jwt.encode(payload, JWT_SECRET, algorithm="HS256")


@pytest.fixture
async def gateway(emulator: RunningEmulator) -> AsyncIterator[httpx.AsyncClient]:
    settings = GatewaySettings(
        relay_url=f"emulator://app-key:app-secret@127.0.0.1:{emulator.port}/apps/1",
        api_token=TOKEN,
        jwt_secret=JWT_SECRET,
        jwt_audience=None,
    )
    transport = httpx.ASGITransport(app=create_app(settings))
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        yield client


async def subscribe(emulator: RunningEmulator, channel: str) -> tuple[object, str]:
    ws = await connect(emulator.ws_url())
    socket_id = json.loads(json.loads(await ws.recv())["data"])["socket_id"]
    await ws.send(json.dumps({"event": "pusher:subscribe", "data": {"channel": channel}}))
    assert json.loads(await ws.recv())["event"] == "pusher_internal:subscription_succeeded"
    return ws, socket_id


async def test_publish_needs_the_token_and_reaches_subscribers(
    gateway: httpx.AsyncClient, emulator: RunningEmulator
) -> None:
    ws, _ = await subscribe(emulator, "orders")
    body = {"channel": "orders", "event": "order-ready", "data": {"id": 42}}
    refused = await gateway.post("/v1/publish", json=body)
    assert refused.status_code == 401
    assert "API token" in refused.json()["error"]
    wrong = await gateway.post("/v1/publish", json=body, headers={"authorization": "Bearer nope"})
    assert wrong.status_code == 401
    ok = await gateway.post("/v1/publish", json=body, headers={"authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 200
    assert ok.json() == {"channels": ["orders"], "message_ids": []}
    frame = json.loads(await asyncio.wait_for(ws.recv(), 2))  # type: ignore[attr-defined]
    assert frame == {"event": "order-ready", "channel": "orders", "data": '{"id":42}'}
    await ws.close()  # type: ignore[attr-defined]


async def test_batch_and_validation_errors_name_the_field(gateway: httpx.AsyncClient) -> None:
    auth = {"authorization": f"Bearer {TOKEN}"}
    batch = {"events": [{"channel": "a", "event": "x", "data": 1}, {"channel": "b", "event": "y", "data": "s"}]}
    response = await gateway.post("/v1/publish/batch", json=batch, headers=auth)
    assert response.json()["channels"] == ["a", "b"]
    missing = await gateway.post("/v1/publish", json={"channel": "a", "data": 1}, headers=auth)
    assert missing.status_code == 422
    assert missing.json()["detail"][0]["loc"] == ["body", "event"]
    both = await gateway.post(
        "/v1/publish", json={"channel": "a", "channels": ["b"], "event": "e", "data": 1}, headers=auth
    )
    assert both.status_code == 422
    assert "exactly one of channel or channels" in json.dumps(both.json())
    too_big = await gateway.post("/v1/publish", json={"channel": "a", "event": "e", "data": "x" * 20_000}, headers=auth)
    assert too_big.status_code == 413
    assert "10240" in too_big.json()["error"]
    bad_name = await gateway.post("/v1/publish", json={"channel": "a b", "event": "e", "data": 1}, headers=auth)
    assert bad_name.status_code == 400


async def test_channel_auth_follows_the_default_rules(gateway: httpx.AsyncClient) -> None:
    alice = {"authorization": f"Bearer {user_jwt('alice')}"}
    own = await gateway.post(
        "/v1/auth/channel", data={"socket_id": "1.1", "channel_name": "private-user-alice"}, headers=alice
    )
    assert own.json() == {"auth": channel_auth("app-key", "app-secret", "1.1", "private-user-alice")}
    other = await gateway.post(
        "/v1/auth/channel", data={"socket_id": "1.1", "channel_name": "private-user-bob"}, headers=alice
    )
    assert other.status_code == 403
    presence = await gateway.post(
        "/v1/auth/channel", data={"socket_id": "1.1", "channel_name": "presence-room"}, headers=alice
    )
    assert json.loads(presence.json()["channel_data"]) == {"user_id": "alice", "user_info": {"name": "Alice"}}
    anonymous = await gateway.post("/v1/auth/channel", data={"socket_id": "1.1", "channel_name": "presence-room"})
    assert anonymous.status_code == 403
    elsewhere = await gateway.post(
        "/v1/auth/channel", data={"socket_id": "1.1", "channel_name": "private-admin"}, headers=alice
    )
    assert elsewhere.status_code == 403


@pytest.mark.parametrize(
    ("token", "message"),
    [
        (
            jwt.encode({"sub": "alice", "exp": int(time.time()) + 60}, "forged-secret-0123456789abcdef0123", "HS256"),
            "Signature verification failed",
        ),
        (jwt.encode({"sub": "alice", "exp": int(time.time()) - 10}, JWT_SECRET, "HS256"), "the JWT has expired"),
        (
            jwt.encode({"sub": "alice", "exp": int(time.time()) + 60}, None, "none"),
            "invalid JWT: its alg is 'none', and RELAY_JWT_SECRET verifies HS256 only",
        ),
        ("not-a-jwt", "invalid JWT"),
    ],
    ids=["forged", "expired", "alg-none", "not-a-jwt"],  # the same names in every process of a parallel run
)
async def test_bad_jwts_are_refused(gateway: httpx.AsyncClient, token: str, message: str) -> None:
    response = await gateway.post(
        "/v1/auth/channel",
        data={"socket_id": "1.1", "channel_name": "private-user-alice"},
        headers={"authorization": f"Bearer {token}"},
    )
    assert response.status_code == 401
    assert message in response.json()["error"]


async def test_wrong_audience_is_refused(emulator: RunningEmulator) -> None:
    settings = GatewaySettings(relay_url="memory://aud", jwt_secret=JWT_SECRET, jwt_audience="shop")
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(settings)), base_url="http://g"
    ) as client:
        form = {"socket_id": "1.1", "channel_name": "private-user-alice"}
        wrong = await client.post(
            "/v1/auth/channel", data=form, headers={"authorization": f"Bearer {user_jwt(aud='blog')}"}
        )
        assert (wrong.status_code, wrong.json()["error"]) == (401, "the JWT's audience is not accepted")
        right = await client.post(
            "/v1/auth/channel", data=form, headers={"authorization": f"Bearer {user_jwt(aud='shop')}"}
        )
        assert right.status_code == 200


async def test_client_config_and_health(gateway: httpx.AsyncClient, emulator: RunningEmulator) -> None:
    config = (await gateway.get("/v1/client-config")).json()
    assert config == {
        "provider": "emulator",
        "key": "app-key",
        "cluster": "mt1",
        "forceTLS": False,
        "channelAuthEndpoint": "/v1/auth/channel",
        "userAuthEndpoint": "/v1/auth/user",
        "wsHost": "127.0.0.1",
        "wsPort": emulator.port,
        "wssPort": emulator.port,
        "enabledTransports": ["ws"],  # a plain emulator: no TLS attempt on its port (as its banner says)
    }
    assert (await gateway.get("/health")).json() == {"status": "ok"}
    assert "/v1/publish" in (await gateway.get("/openapi.json")).json()["paths"]


@pytest.mark.parametrize(
    ("relay_url", "client_options"),
    [
        ("ably://app.key:secret@rest.ably.io", None),
        ("ably://app.key:secret@main.realtime.ably.net", None),
        (
            "ably://1.app-key:app-secret@127.0.0.1:6001?tls=false",
            {"endpoint": "127.0.0.1", "port": 6001, "tls": False, "fallbackHosts": []},
        ),
        (
            "ably://1.app-key:app-secret@ably.example.com",
            {"endpoint": "ably.example.com", "tlsPort": 443, "tls": True, "fallbackHosts": []},
        ),
    ],
)
async def test_ably_client_config_names_a_self_hosted_endpoint_only(
    relay_url: str, client_options: dict[str, object] | None
) -> None:
    """Ably's cloud needs only the token URL; the emulator (or another self-hosted endpoint) also needs the ably-js
    options that point there, or ably-js would connect to Ably's cloud."""
    settings = GatewaySettings(relay_url=relay_url)
    transport = httpx.ASGITransport(app=create_app(settings))
    async with httpx.AsyncClient(transport=transport, base_url="http://g") as client:
        config = (await client.get("/v1/client-config")).json()
    assert {name: config.pop(name) for name in ("provider", "authUrl", "authMethod")} == {
        "provider": "ably",
        "authUrl": "/v1/auth/channel",
        "authMethod": "POST",
    }
    assert config == ({} if client_options is None else {"clientOptions": client_options})


async def test_webhooks_from_the_emulator_are_verified_and_handed_on(start_emulator: StartEmulator) -> None:
    received: list[list[WebhookEvent]] = []
    done = asyncio.Event()

    async def hook(events: list[WebhookEvent]) -> None:
        received.append(events)
        done.set()

    settings = GatewaySettings(relay_url="emulator://app-key:app-secret@127.0.0.1:1/apps/1")
    transport = httpx.ASGITransport(app=create_app(settings, webhook_hook=hook))
    async with httpx.AsyncClient(transport=transport, base_url="http://g") as client:
        now_ms = int(time.time() * 1000)

        def webhook(time_ms: int) -> bytes:
            return json.dumps({"time_ms": time_ms, "events": [{"name": "channel_occupied", "channel": "c"}]}).encode()

        body = webhook(now_ms)
        forged = await client.post(
            "/v1/webhooks", content=body, headers={"x-pusher-key": "app-key", "x-pusher-signature": "0"}
        )
        assert forged.status_code == 401
        good = await client.post(
            "/v1/webhooks",
            content=body,
            headers={"x-pusher-key": "app-key", "x-pusher-signature": webhook_signature("app-secret", body)},
        )
        assert good.json() == {"events": 1}
        replayed = webhook(now_ms - 301_000)  # signed correctly, but captured more than 300 s ago
        stale = await client.post(
            "/v1/webhooks",
            content=replayed,
            headers={"x-pusher-key": "app-key", "x-pusher-signature": webhook_signature("app-secret", replayed)},
        )
        assert stale.status_code == 401
        assert re.fullmatch(
            r"webhook time_ms is 301\.\d+ s from now; over 300 s is a replay \(or a clock to fix\)",
            stale.json()["error"],
        )
    assert received == [[WebhookEvent("channel_occupied", "c", now_ms)]]


async def test_webhooks_with_nowhere_to_go_are_refused_so_the_provider_retries() -> None:
    """Without RELAY_WEBHOOK_FORWARD_URL (or a hook), a verified webhook gets 503 rather than a 200 that drops it:
    Pusher retries non-2xx answers, so the events arrive once the URL is set. A forged one is still 401."""
    settings = GatewaySettings(relay_url="emulator://app-key:app-secret@127.0.0.1:1/apps/1")
    body = json.dumps({"time_ms": int(time.time() * 1000), "events": [{"name": "channel_vacated", "channel": "c"}]})
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(settings)), base_url="http://g") as g:
        forged = await g.post(
            "/v1/webhooks", content=body, headers={"x-pusher-key": "app-key", "x-pusher-signature": "0"}
        )
        signed = {"x-pusher-key": "app-key", "x-pusher-signature": webhook_signature("app-secret", body.encode())}
        nowhere = await g.post("/v1/webhooks", content=body, headers=signed)
    assert forged.status_code == 401
    assert (nowhere.status_code, nowhere.json()) == (
        503,
        {"error": "no RELAY_WEBHOOK_FORWARD_URL is set: the verified events have nowhere to go"},
    )


async def test_a_missing_socket_id_is_400_and_an_unreachable_provider_502() -> None:
    settings = GatewaySettings(
        relay_url="emulator://app-key:app-secret@127.0.0.1:9/apps/1", api_token=TOKEN, jwt_secret=JWT_SECRET
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(settings)), base_url="http://g"
    ) as client:
        alice = {"authorization": f"Bearer {user_jwt('alice')}"}
        missing = await client.post("/v1/auth/channel", data={"channel_name": "private-user-alice"}, headers=alice)
        assert (missing.status_code, missing.json()) == (400, {"error": "socket_id is required"})
        body = {"channel": "orders", "event": "e", "data": 1}
        down = await client.post("/v1/publish", json=body, headers={"authorization": f"Bearer {TOKEN}"})
        assert down.status_code == 502
        assert "could not reach 127.0.0.1" in down.json()["error"]


@pytest.mark.parametrize("origin", ["*", "https://app.example.com/", "app.example.com", "https://*.example.com"])
def test_cors_origins_must_be_origins(origin: str) -> None:
    """Credentials are allowed cross-origin, so a wildcard (which Starlette would answer by echoing any origin) or
    something that is not an origin is refused when the gateway is configured."""
    with pytest.raises(ConfigError, match=f"RELAY_CORS_ORIGINS: '{re.escape(origin)}' is not an origin"):
        GatewaySettings.from_env({"RELAY_URL": "memory://cors", "RELAY_CORS_ORIGINS": f"http://ok.test,{origin}"})
    assert GatewaySettings.from_env(
        {"RELAY_URL": "memory://cors", "RELAY_CORS_ORIGINS": "http://localhost:3000, https://app.example.com"}
    ).cors_origins == ("http://localhost:3000", "https://app.example.com")
