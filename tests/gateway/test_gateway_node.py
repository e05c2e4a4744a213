"""pusher-js 8 in Node through a real ``relay serve`` gateway (uvicorn) in front of a real emulator (issue 7)."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import RunningEmulator
from tests.gateway.conftest import TOKEN, RunningGateway, hs_jwt, run_node


async def test_pusher_js_through_the_gateway(
    node_modules: Path, emulator: RunningEmulator, gateway: RunningGateway
) -> None:
    """§8 item 89 via the gateway: client-config → connect; private-user-{sub} allowed, another user's channel and
    an unruled private channel refused with 403 as ``pusher:subscription_error``; presence member info from the
    JWT's ``name``; signin at /v1/auth/user (then sendToUser arrives); no JWT → 403 on presence, a forged JWT → 401;
    Node fetch publishes (single, several channels, socket_id exclusion, batch) with the API token, and gets 401
    without it, with a wrong one or with a user JWT, while nothing leaks to subscribers."""
    env = {
        "RELAY_GATEWAY_URL": gateway.url,
        "RELAY_API_TOKEN": TOKEN,
        "RELAY_JWT_ALICE": hs_jwt("alice", name="Alice Liddell"),
        "RELAY_JWT_BOB": hs_jwt("bob"),
        "RELAY_JWT_FORGED": hs_jwt("alice", secret="not-the-gateway-secret-0123456789abcdef"),
    }
    run = await run_node("gateway_pusher_js.mjs", emulator, env)
    assert run.summary["checks"] == [
        "client-config",
        "private-allowed",
        "private-forbidden-403",
        "presence-name-from-jwt",
        "signin",
        "anonymous-and-forged-refused",
        "publish",
        "publish-socket-id",
        "publish-batch",
        "publish-401",
        "still-serving",
    ]
