"""A private channel refused for want of a user says why the request had none (the gateway's log says it too).

With RELAY_JWT_COOKIE, pusher-js on another origin sends no cookie (its XHR leaves ``withCredentials`` off): the
refusal was a bare 403 "'private-user-alice' needs an authenticated user", which sent whoever read it to look for a
JWT that was sitting in the browser. It now names the missing header and cookie, and why a browser keeps the cookie.
"""

from __future__ import annotations

from typing import Any

import pytest

from relay.gateway import GatewaySettings
from tests.conftest import RunningEmulator
from tests.gateway.conftest import JWT_SECRET, StartGateway, emulator_url
from tests.gateway.test_gateway_cookie_recipe import browser as browser
from tests.gateway.test_gateway_cookie_recipe import connect
from tests.gateway.test_gateway_cookie_recipe import cookie_page as cookie_page
from tests.gateway.test_gateway_identity import auth_status

NEEDS_A_USER = "'private-user-alice' needs an authenticated user: "
NO_HEADER = "the request had no Authorization: Bearer header"
NO_COOKIE = (
    f"{NO_HEADER} and no 'session' cookie (a browser sends the cookie to another origin only with credentials, "
    "which pusher-js's own requests never ask for)"
)


@pytest.mark.parametrize(
    ("settings", "cookies", "reason"),
    [
        ({"jwt_secret": JWT_SECRET, "jwt_cookie": "session"}, {}, NO_COOKIE),
        (
            {"jwt_secret": JWT_SECRET, "jwt_cookie": "session"},
            {"session": ""},
            f"{NO_HEADER}, and its 'session' cookie was empty (signed out)",
        ),
        ({"jwt_secret": JWT_SECRET}, {}, NO_HEADER),
        ({}, {}, "this gateway verifies no JWTs (no RELAY_JWT_SECRET, RELAY_JWT_PUBLIC_KEY or RELAY_JWKS_FILE)"),
    ],
    ids=["no-cookie", "empty-cookie", "no-cookie-setting", "no-jwt-setting"],
)
async def test_the_refusal_says_why_the_request_has_no_user(
    emulator: RunningEmulator,
    start_gateway: StartGateway,
    settings: dict[str, Any],
    cookies: dict[str, str],
    reason: str,
) -> None:
    gateway = await start_gateway(GatewaySettings(relay_url=emulator_url(emulator), **settings))
    assert await auth_status(gateway, "private-user-alice", cookies=cookies) == (403, NEEDS_A_USER + reason)


async def test_pusher_js_on_another_origin_is_told_the_cookie_did_not_arrive(cookie_page: tuple[Any, str]) -> None:
    """In Chromium, pusher-js's own request from the page's origin, the cookie set for the gateway's host: the
    gateway's answer names the cookie that did not come (pusher-js itself reports only the status)."""
    page, gateway_url = cookie_page
    own = """channelAuthorization: { endpoint: channelEndpoint, transport: 'ajax' },
    userAuthentication: { endpoint: userEndpoint, transport: 'ajax' },"""
    async with page.expect_response(f"{gateway_url}/v1/auth/channel") as answered:
        records = await connect(page, gateway_url, own, ["private-user-alice"])
    response = await answered.value
    assert (response.status, await response.json()) == (403, {"error": NEEDS_A_USER + NO_COOKIE})
    assert [status for status, _ in records["private-user-alice"]["errors"]] == [403]
