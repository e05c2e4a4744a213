"""ably-js 2.28 (Node) against the emulator: realtime and REST in msgpack (ably-js's Node default) and JSON, and the
cross-protocol scenario with pusher-js and pusher-http-node on the same channels. Each test runs one ES-module
scenario from ``tests/ably/node/`` (clients from ``tests/node/node_modules``) and checks its summary."""

from __future__ import annotations

from pathlib import Path

import pytest
from ablysupport import jwt_token, run_node

from tests.conftest import RunningEmulator

FORMATS = pytest.mark.parametrize("ably_format", ["msgpack", "json"])


@FORMATS
async def test_ably_js_realtime(node_modules: Path, ably_emulator: RunningEmulator, ably_format: str) -> None:
    """Realtime: connect with a key, with an authCallback TokenRequest (exchanged at requestToken, then
    ``access_token``) and with a JWT; attach, subscribe, publish (ACK serials, binary data), ``connection.ping``,
    presence enter/update/get (SYNC)/leave, detach; 40160 on a channel outside the token, 40101 for a bad key."""
    env = {"ABLY_FORMAT": ably_format, "ABLY_JWT": jwt_token(client_id="jwt-user")}
    run = await run_node("ably_js_realtime.mjs", ably_emulator, env=env)
    assert run.summary["checks"] == [
        "connect-key",
        "publish-subscribe",
        "ping",
        "presence",
        "detach",
        "token-request",
        "jwt",
        "bad-key",
    ]


@FORMATS
async def test_ably_js_rest(node_modules: Path, ably_emulator: RunningEmulator, ably_format: str) -> None:
    """REST: time, publish (object, array), idempotent ids delivered once, ``batchPublish`` (and the 100-channel limit
    of it and of ``batchPresence``, 90010), ``status()``, ``presence.get()``, ``GET /channels``, ``requestToken`` and
    errors with Ably's codes (40160, 40101)."""
    run = await run_node("ably_js_rest.mjs", ably_emulator, env={"ABLY_FORMAT": ably_format})
    assert run.summary["checks"] == [
        "time",
        "publish",
        "idempotent",
        "batch",
        "batch-limits",
        "status-presence",
        "channels",
        "errors",
    ]


@pytest.mark.long
async def test_ably_js_renews_short_lived_tokens_on_the_same_connection(
    node_modules: Path, ably_emulator: RunningEmulator
) -> None:
    """Tokens of 35 s from an authCallback, over 14 s: the server asks for each next token 30 s before the last
    expires (AUTH), so the connection keeps its id, its presence member never leaves, and no message published
    meanwhile is lost (each expiry used to disconnect with 40142: a new connection, missed messages, a leave and an
    enter). A token of 5 s is not asked for, as on Ably (ably-js's sandbox tests): DISCONNECTED 40142, then ably-js
    resumes the connection with a new token from its authCallback."""
    run = await run_node("ably_js_token_renewal.mjs", ably_emulator, limit_s=40)
    assert run.summary["checks"] == [
        "renewed-in-place",
        "no-message-lost",
        "presence-kept",
        "short-token-expires-and-resumes",
    ]


async def test_cross_protocol(node_modules: Path, ably_emulator: RunningEmulator) -> None:
    """One channel space: Ably REST → pusher-js, Pusher HTTP API (pusher-http-node) → ably-js, ably-js → pusher-js,
    pusher-js client events → ably-js, and presence seen from both sides (members, users API, leaves)."""
    run = await run_node("cross_protocol.mjs", ably_emulator)
    assert run.summary["checks"] == [
        "ably-rest-to-pusher-js",
        "pusher-http-to-ably-js",
        "ably-js-to-pusher-js",
        "pusher-client-event-to-ably-js",
        "presence-ably-then-pusher",
        "presence-leaves",
        "presence-pusher-sees-ably-enter",
    ]
