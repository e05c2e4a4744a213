"""Fixes from a browser audit of the gateway (pusher-js 8.6 in headless Chromium), each held end to end.

1. The Next.js guide's realtime module (docs/gateway.md, examples/nextjs/lib/realtime.ts byte for byte) sends the JWT
   through pusher-js's ``headersProvider``: after the JWT it started with expired, a reconnect re-authorizes with the
   app's current one (it was a fixed header: 401, the channel lost while the page said "Live").
2. What the guide says of refusals holds: pusher-js passes a status and its own generic message, never the gateway's
   reason; an unreachable gateway is status 0, and pusher-js does not ask again until the channel is subscribed anew.
3. An ``Authorization`` header that is not ``Bearer <JWT>`` is a 401 (it was an anonymous request: 403 "needs an
   authenticated user"); the browser's own schemes (Basic, …) still leave the request to RELAY_JWT_COOKIE.
4. ``relay serve`` logs every refused request with its reason, never the credential.
5. The guide's ``socketIdHeader()`` sends no X-Socket-ID before the connection has one (it sent "undefined": 400).
6. A presence member's user_info over 1 KB names the JWT claims and the rule they come from.
7. Clearer refusals: a token that is not a JWT, a rule's denial (the pattern and the claim), sign-in without a
   socket_id (as channel auth says it).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from relay.gateway import GatewaySettings, create_app
from relay.gateway.rules_file import load_rules
from tests.conftest import RunningEmulator, free_port
from tests.gateway.conftest import JWT_SECRET, TOKEN, RunningGateway, StartGateway, emulator_url, hs_jwt, serve_asgi
from tests.gateway.test_gateway_browser import CHROMIUM, PUSHER_JS
from tests.gateway.test_gateway_browser import browser as browser
from tests.gateway.test_gateway_identity import join, open_socket
from tests.gateway.test_gateway_nextjs_guide import GUIDE, build_guide

playwright_api = pytest.importorskip("playwright.async_api", reason="playwright is a test dependency")
needs_chromium = pytest.mark.skipif(not CHROMIUM.exists(), reason="Chromium is not installed at /usr/bin/chromium")

# The guide's compiled module, imported by a page as the Next.js bundle imports it: 'pusher-js' resolves (import map)
# to the browser build pusher-js ships, which has no ES module of its own.
GUIDE_PAGE = """<!doctype html>
<meta charset="utf-8">
<script src="/pusher.min.js"></script>
<script type="importmap">{"imports": {"pusher-js": "/pusher-js.mjs"}}</script>
<script type="module">
  window.realtime = await import('/lib/realtime.mjs');
</script>
"""

# The page's record of one subscription through the guide's subscribe(), read back by the test.
SUBSCRIBE = """(name) => {
  const record = { ready: 0, errors: [], events: [] };
  window.records[name] = record;
  window.unsubscribe[name] = window.rt.subscribe(name, {
    onEvent: (event, data) => record.events.push([event, data]),
    onReady: () => record.ready++,
    onError: (status, message) => record.errors.push([status, message]),
  });
}"""


def guide_site(compiled: Path) -> Starlette:
    return module_site(GUIDE_PAGE, "/lib/realtime.mjs", (compiled / "lib" / "realtime.mjs").read_bytes())


def module_site(html: str, module_path: str, module: bytes) -> Starlette:
    """A page (``html``) with pusher-js, as a script and as the module the guide's code imports, and a compiled
    module of the guide at ``module_path``."""
    script = PUSHER_JS.read_bytes()

    async def page(request: Request) -> Response:
        return Response(html, media_type="text/html")

    async def pusher(request: Request) -> Response:
        return Response(script, media_type="application/javascript")

    async def pusher_module(request: Request) -> Response:
        return Response("export default window.Pusher;\n", media_type="application/javascript")

    async def compiled(request: Request) -> Response:
        return Response(module, media_type="application/javascript")

    return Starlette(
        routes=[
            Route("/", page),
            Route("/pusher.min.js", pusher),
            Route("/pusher-js.mjs", pusher_module),
            Route(module_path, compiled),
        ]
    )


@pytest.fixture
async def guide_page(
    node_modules: Path, tmp_path: Path, browser: object, emulator: RunningEmulator, start_gateway: StartGateway
) -> AsyncIterator[tuple[Any, RunningGateway]]:
    """A Chromium page that has imported the guide's realtime module (as ``window.realtime``), served from its own
    origin, and a gateway that allows that origin."""
    compiled = await build_guide(tmp_path)
    async with serve_asgi(guide_site(compiled)) as site:
        gateway = await start_gateway(
            GatewaySettings(
                relay_url=emulator_url(emulator), api_token=TOKEN, jwt_secret=JWT_SECRET, cors_origins=(site,)
            )
        )
        page = await browser.new_page()  # type: ignore[attr-defined]
        problems: list[str] = []
        page.on("pageerror", lambda error: problems.append(str(error)))
        await page.goto(site)
        await page.wait_for_function("() => window.realtime !== undefined")
        await page.evaluate("() => { window.records = {}; window.unsubscribe = {}; }")
        yield page, gateway
        await page.close()
        assert problems == []


async def create_realtime(page: Any, gateway: RunningGateway, jwt: str) -> dict[str, str]:
    """``createRealtime`` as the guide's component calls it, with ``getJwt`` reading ``window.jwt``; returns its
    ``socketIdHeader()`` at once, before the WebSocket can have connected."""
    header: dict[str, str] = await page.evaluate(
        """async ({ gatewayUrl, jwt }) => {
          window.jwt = jwt;
          const getJwt = () => window.jwt;
          window.rt = await window.realtime.createRealtime({ gatewayUrl, getJwt, onStatus: () => {} });
          return window.rt.socketIdHeader();
        }""",
        {"gatewayUrl": gateway.url, "jwt": jwt},
    )
    return header


async def record(page: Any, channel: str) -> dict[str, Any]:
    result: dict[str, Any] = await page.evaluate("(name) => window.records[name]", channel)
    return result


async def settled(page: Any, channel: str, *, ready: int = 0, errors: int = 0) -> dict[str, Any]:
    """The channel's record once it has at least ``ready`` subscriptions and ``errors`` refusals."""
    expression = "([name, ready, errors]) => window.records[name].ready >= ready && "
    expression += "window.records[name].errors.length >= errors"
    try:
        await page.wait_for_function(expression, arg=[channel, ready, errors], timeout=15_000)
    except playwright_api.TimeoutError:
        raise AssertionError(f"{channel} did not settle: {await record(page, channel)}") from None
    return await record(page, channel)


async def publish(gateway: RunningGateway, channel: str, data: object) -> None:
    async with httpx.AsyncClient(base_url=gateway.url, headers={"authorization": f"Bearer {TOKEN}"}) as api:
        response = await api.post("/v1/publish", json={"channel": channel, "event": "order-ready", "data": data})
    assert response.status_code == 200, response.text


# -- 1 and 5. the guide's realtime module in Chromium ---------------------------------------------------------------


@needs_chromium
async def test_the_guide_reauthorizes_with_the_current_jwt_after_a_reconnect(
    guide_page: tuple[Any, RunningGateway], emulator: RunningEmulator
) -> None:
    """A JWT valid for a few seconds subscribes alice's channel; once it has expired, the app holds a fresh one and the
    emulator drops the connection: pusher-js reconnects and re-authorizes with the fresh JWT (onReady again, no
    onError), and a publish reaches the page. Before the connection has a socket id, socketIdHeader() is {}."""
    page, gateway = guide_page
    expires = int(time.time()) + 4
    assert await create_realtime(page, gateway, hs_jwt("alice", exp=expires)) == {}  # no socket id yet
    await page.evaluate(SUBSCRIBE, "private-user-alice")
    assert (await settled(page, "private-user-alice", ready=1))["errors"] == []
    socket_id = await page.evaluate("() => window.rt.pusher.connection.socket_id")
    assert await page.evaluate("() => window.rt.socketIdHeader()") == {"X-Socket-ID": socket_id}

    await asyncio.sleep(max(0.0, expires - time.time()) + 0.1)  # the JWT the client was created with has expired
    await page.evaluate("(jwt) => { window.jwt = jwt; }", hs_jwt("alice"))
    for connection in list(emulator.node.connections):
        connection.shutdown()
    resubscribed = await settled(page, "private-user-alice", ready=2)
    assert resubscribed["errors"] == []
    assert await page.evaluate("() => window.rt.pusher.connection.socket_id") != socket_id

    await publish(gateway, "private-user-alice", {"orderId": "after-reconnect"})
    await page.wait_for_function("() => window.records['private-user-alice'].events.length === 1")
    assert (await record(page, "private-user-alice"))["events"] == [["order-ready", {"orderId": "after-reconnect"}]]


# -- 2. what a page learns of a refusal ------------------------------------------------------------------------------


@needs_chromium
@pytest.mark.long
async def test_a_refusal_reaches_the_page_as_a_status_without_the_gateways_reason(
    guide_page: tuple[Any, RunningGateway],
) -> None:
    """As the guide's onError documents: a 403 arrives as status 403 and pusher-js's generic message (the gateway's
    reason is only in the response body); a gateway that cannot be reached is status 0, and pusher-js does not ask
    again; unsubscribing and subscribing anew does."""
    page, gateway = guide_page
    await create_realtime(page, gateway, hs_jwt("alice"))
    await page.evaluate(SUBSCRIBE, "private-user-bob")
    ((status, message),) = (await settled(page, "private-user-bob", errors=1))["errors"]
    assert status == 403
    assert "received status: 403" in message and "denied" not in message

    auth_url = f"{gateway.url}/v1/auth/channel"
    await page.route(auth_url, lambda route: route.abort())  # as a gateway that is down answers: not at all
    await page.evaluate(SUBSCRIBE, "presence-lobby")
    assert [status for status, _ in (await settled(page, "presence-lobby", errors=1))["errors"]] == [0]
    await page.unroute(auth_url)
    await asyncio.sleep(1)
    lobby = await record(page, "presence-lobby")
    assert (lobby["ready"], len(lobby["errors"])) == (0, 1)
    assert await page.evaluate("() => window.rt.pusher.channel('presence-lobby').subscribed") is False

    await page.evaluate("() => window.unsubscribe['presence-lobby']()")
    await page.evaluate(SUBSCRIBE, "presence-lobby")
    assert (await settled(page, "presence-lobby", ready=1))["errors"] == []


@needs_chromium
@pytest.mark.long
async def test_the_guide_keeps_the_path_prefix_of_the_gateway_s_url(
    node_modules: Path, tmp_path: Path, browser: object, emulator: RunningEmulator
) -> None:
    """A gateway mounted under /relay (``NEXT_PUBLIC_RELAY_GATEWAY_URL=https://example.com/relay/``): the guide
    fetched /v1/client-config from the origin's root (``client-config: HTTP 404``); it keeps the prefix, and the
    mount's auth endpoints authorize the page's channel."""
    compiled = await build_guide(tmp_path)
    async with serve_asgi(guide_site(compiled)) as site:
        settings = GatewaySettings(
            relay_url=emulator_url(emulator), api_token=TOKEN, jwt_secret=JWT_SECRET, cors_origins=(site,)
        )
        parent = FastAPI()
        parent.mount("/relay", create_app(settings))
        async with serve_asgi(parent) as url:
            page = await browser.new_page()  # type: ignore[attr-defined]
            try:
                await page.goto(site)
                await page.wait_for_function("() => window.realtime !== undefined")
                await page.evaluate("() => { window.records = {}; window.unsubscribe = {}; }")
                await create_realtime(page, RunningGateway(f"{url}/relay/", settings), hs_jwt("alice"))
                await page.evaluate(SUBSCRIBE, "private-user-alice")
                assert (await settled(page, "private-user-alice", ready=1))["errors"] == []
                await publish(RunningGateway(f"{url}/relay", settings), "private-user-alice", {"orderId": "7"})
                await page.wait_for_function("() => window.records['private-user-alice'].events.length === 1")
            finally:
                await page.close()


# -- 3. an Authorization header that is not Bearer <JWT> ------------------------------------------------------------

NOT_BEARER = "the Authorization header is not 'Bearer <JWT>': "


@pytest.mark.parametrize(
    ("header", "problem"),
    [
        ("{jwt}", "it has no scheme: send 'Bearer ' before the JWT"),
        ("JWT {jwt}", "its scheme is 'JWT': send 'Bearer ' before the JWT"),
        ("Token {jwt}", "its scheme is 'Token': send 'Bearer ' before the JWT"),
        ("Bearer: {jwt}", "its scheme is 'Bearer:': send 'Bearer ' before the JWT"),
        ("Bearer", "it has no token after Bearer"),
    ],
)
async def test_an_authorization_header_that_is_not_bearer_is_401(
    gateway: RunningGateway, header: str, problem: str
) -> None:
    """Channel auth and sign-in refuse it with 401 naming the form (they were 403 "needs an authenticated user" and
    401 "sign in first"); the message never repeats the JWT."""
    user_jwt = hs_jwt("alice")
    headers = {"authorization": header.format(jwt=user_jwt)}
    async with httpx.AsyncClient(base_url=gateway.url, headers=headers) as http:
        channel = await http.post("/v1/auth/channel", data={"socket_id": "1.1", "channel_name": "private-user-alice"})
        signin = await http.post("/v1/auth/user", data={"socket_id": "1.1"})
    for answer in (channel, signin):
        assert (answer.status_code, answer.json()) == (401, {"error": NOT_BEARER + problem})
        assert user_jwt not in answer.text


async def test_the_browsers_own_schemes_leave_the_jwt_to_the_cookie(
    emulator: RunningEmulator, start_gateway: StartGateway
) -> None:
    """A page behind a proxy's Basic auth sends ``Authorization: Basic …`` on every request, the gateway's too:
    with RELAY_JWT_COOKIE the cookie's JWT still decides, and without a cookie the request is anonymous. The API-token
    routes read only ``Bearer``, as before."""
    gateway = await start_gateway(
        GatewaySettings(relay_url=emulator_url(emulator), api_token=TOKEN, jwt_secret=JWT_SECRET, jwt_cookie="session")
    )
    basic = {"authorization": "Basic c3RhZ2luZzpwYXNzd29yZA=="}
    assert await join(emulator, gateway, "private-user-alice", headers=basic, cookies={"session": hs_jwt()}) == {}
    async with httpx.AsyncClient(base_url=gateway.url, headers=basic) as http:
        anonymous = await http.post("/v1/auth/channel", data={"socket_id": "1.1", "channel_name": "private-user-alice"})
        assert (anonymous.status_code, anonymous.json()["error"]) == (
            403,
            "'private-user-alice' needs an authenticated user: the request had no Authorization: Bearer header and no "
            "'session' cookie (a browser sends the cookie to another origin only with credentials, which pusher-js's "
            "own requests never ask for)",
        )
        body = {"channel": "orders", "event": "created", "data": {}}
        refused = await http.post("/v1/publish", json=body)
        assert refused.status_code == 401
        for scheme in ("Bearer", "bearer"):
            published = await http.post("/v1/publish", json=body, headers={"authorization": f"{scheme} {TOKEN}"})
            assert published.status_code == 200, published.text


# -- 4. refusals in the gateway's log --------------------------------------------------------------------------------


RUNNING_ON = re.compile(r"Uvicorn running on (http://\S+)")


@asynccontextmanager
async def relay_serve(env: dict[str, str], *args: str) -> AsyncIterator[tuple[str, list[str]]]:
    """``relay serve --port 0 ARGS`` as a process; yields its URL and its output lines (stderr included), read as
    they come; stopped with SIGTERM at the end."""
    clean = {name: value for name, value in os.environ.items() if not name.startswith(("RELAY_", "PUSHER_", "ABLY_"))}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "relay.cli", "serve", "--port", "0", *args,
        env={**clean, **env}, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    assert process.stdout is not None
    stdout = process.stdout
    lines: list[str] = []

    async def read() -> None:
        while line := await stdout.readline():
            lines.append(line.decode(errors="replace").rstrip())

    reader = asyncio.create_task(read())
    try:
        async with asyncio.timeout(15):
            while not (serving := [match[1] for line in lines if (match := RUNNING_ON.search(line))]):
                assert process.returncode is None, "\n".join(lines)
                await asyncio.sleep(0.05)
        yield serving[0], lines
    finally:
        if process.returncode is None:
            process.terminate()
            await asyncio.wait_for(process.wait(), 10)
        await reader


async def test_relay_serve_logs_each_refusal_with_its_reason_and_never_the_credential(
    emulator: RunningEmulator,
) -> None:
    """At the default --log-level (info), each refused request is one ``INFO: relay.gateway:`` line with the method,
    path, status and the answer's reason (the origin too, when a page sent it, for CORS refusals); the JWT and the
    API token sent never appear. Nothing was logged (uvicorn's access log is off)."""
    user_jwt = hs_jwt("alice")
    wrong_token = "not-the-api-token-0123456789abcdef"
    site = "http://shop.example.test"
    env = {
        "RELAY_URL": emulator_url(emulator),
        "RELAY_API_TOKEN": TOKEN,
        "RELAY_JWT_SECRET": JWT_SECRET,
        "RELAY_CORS_ORIGINS": site,
    }
    async with relay_serve(env) as (url, lines):
        async with httpx.AsyncClient(base_url=url) as http:
            form = {"socket_id": "1.1", "channel_name": "private-user-bob"}
            denied = await http.post("/v1/auth/channel", data=form, headers={"authorization": f"Bearer {user_jwt}"})
            assert denied.status_code == 403
            no_scheme = await http.post("/v1/auth/channel", data=form, headers={"authorization": user_jwt})
            assert no_scheme.status_code == 401
            body = {"channel": "orders", "event": "created", "data": {}}
            publish = await http.post("/v1/publish", json=body, headers={"authorization": f"Bearer {wrong_token}"})
            assert publish.status_code == 401
            preflight = {"origin": "http://elsewhere.test", "access-control-request-method": "POST"}
            assert (await http.options("/v1/auth/channel", headers=preflight)).status_code == 400
            assert (await http.get("/health")).status_code == 200
        await asyncio.sleep(0.3)  # the log lines cross a pipe
    expected = [
        "POST /v1/auth/channel answered 403: access to 'private-user-bob' denied by rule 'private-user-{sub}': the "
        "name's {sub} is not the JWT's sub claim",
        "POST /v1/auth/channel answered 401: the Authorization header is not 'Bearer <JWT>': it has no scheme: send "
        "'Bearer ' before the JWT",
        "POST /v1/publish answered 401: missing or invalid API token (Authorization: Bearer RELAY_API_TOKEN): the "
        "token is not the gateway's RELAY_API_TOKEN",
        "OPTIONS /v1/auth/channel answered 400 (Origin: http://elsewhere.test): CORS preflight refused: the origin "
        "'http://elsewhere.test' is not allowed to call this gateway (to allow its pages, the gateway's operator adds "
        "it to RELAY_CORS_ORIGINS)",
    ]
    refusals = [line for line in lines if "relay.gateway: " in line and " answered " in line]  # not the start's
    logged = [line.split("relay.gateway: ", 1)[1] for line in refusals]
    assert logged == expected, "\n".join(lines)
    assert all(line.startswith("INFO:") for line in refusals)
    # but for the one warning of a refused origin, which names the allowed ones (the answer does not)
    assert [line for line in lines if "relay.gateway: " in line and not line.startswith("INFO:")] == [
        "WARNING:  relay.gateway: CORS: refused a preflight from 'http://elsewhere.test', which is not in "
        f"RELAY_CORS_ORIGINS ({site}); add it there if its pages should call the gateway (warned once per origin)"
    ]
    output = "\n".join(lines)
    assert user_jwt not in output and user_jwt.split(".")[2] not in output
    assert wrong_token not in output and TOKEN not in output


async def test_a_refusal_s_path_cannot_write_lines_or_escapes_into_the_log(emulator: RunningEmulator) -> None:
    """The path is logged percent-decoded: a %0a in it wrote a line of the sender's choosing (a forged WARNING), and a
    %1b a terminal escape, with no credential at all. Control characters are logged escaped, on the one line."""
    env = {"RELAY_URL": emulator_url(emulator), "RELAY_API_TOKEN": TOKEN}
    forged = "/v1/channels/x%0aWARNING:%20%20relay.gateway:%20token%20rotated%0d%1b[31m%00%E2%80%A8%5Cn"
    async with relay_serve(env) as (url, lines):
        async with httpx.AsyncClient(base_url=url) as http:
            assert (await http.get(forged)).status_code == 400  # HeadGuard: no route has a control character
            assert (await http.get("/v1/channels", headers={"authorization": f"Bearer {TOKEN}"})).status_code == 200
        await asyncio.sleep(0.3)  # the log lines cross a pipe
    gateway_lines = [line for line in lines if "relay.gateway: " in line and " answered " in line]
    assert gateway_lines == [
        "INFO:     relay.gateway: GET /v1/channels/x\\nWARNING:  relay.gateway: token rotated\\r\\x1b[31m\\x00\\u2028"
        "\\\\n "  # a backslash sent as such (%5C) is escaped too, so it cannot pass for an escape
        "answered 400: the request's path has a control character (such as %0A): no route of the gateway has one"
    ], "\n".join(lines)
    assert not any(line.startswith("WARNING:  relay.gateway: token") for line in lines)


async def test_a_provider_failure_is_logged_as_a_warning(
    start_gateway: StartGateway, caplog: pytest.LogCaptureFixture
) -> None:
    """5xx answers other than 500 (which is logged where it happens, at ERROR) were logged nowhere: a provider that
    cannot be reached (502) is a WARNING with the reason."""
    gateway = await start_gateway(
        GatewaySettings(relay_url=f"emulator://key:secret@127.0.0.1:{free_port()}/apps/1", api_token=TOKEN)
    )
    with caplog.at_level(logging.INFO, logger="relay.gateway"):
        async with httpx.AsyncClient(base_url=gateway.url, headers={"authorization": f"Bearer {TOKEN}"}) as api:
            answer = await api.post("/v1/publish", json={"channel": "orders", "event": "created", "data": {}})
    assert answer.status_code == 502
    (logged,) = [r for r in caplog.records if r.name == "relay.gateway"]
    assert logged.levelno == logging.WARNING
    assert logged.getMessage() == f"POST /v1/publish answered 502: {answer.json()['error']}"


# -- 6. presence member info from JWT claims -------------------------------------------------------------------------


async def docs_rules_gateway(tmp_path: Path, emulator: RunningEmulator, start_gateway: StartGateway) -> RunningGateway:
    """A gateway with the rules file docs/gateway.md shows."""
    (rules_text,) = re.findall(r"^```toml\n(.*?)^```$", GUIDE.read_text(), flags=re.MULTILINE | re.DOTALL)
    rules = tmp_path / "rules.toml"
    rules.write_text(rules_text)
    return await start_gateway(
        GatewaySettings(relay_url=emulator_url(emulator), jwt_secret=JWT_SECRET, rules=load_rules(rules))
    )


async def test_user_info_over_the_limit_names_the_jwt_claims_and_the_rule(
    tmp_path: Path, emulator: RunningEmulator, start_gateway: StartGateway
) -> None:
    """docs/gateway.md's rules give presence-team-{team} members the name and role claims: a name of 1100 characters
    makes the member info too big for Pusher (1 KB), and the 413 says where it comes from."""
    gateway = await docs_rules_gateway(tmp_path, emulator, start_gateway)
    _, socket_id = await open_socket(emulator)
    headers = {"authorization": f"Bearer {hs_jwt('alice', name='A' * 1100, team='red', role='cook')}"}
    async with httpx.AsyncClient(base_url=gateway.url, headers=headers) as http:
        answer = await http.post("/v1/auth/channel", data={"socket_id": socket_id, "channel_name": "presence-team-red"})
    assert (answer.status_code, answer.json()["error"]) == (
        413,
        "user_info is 1125 bytes; the limit is 1024: a presence member's user_info is the JWT claims that rule "
        "'presence-team-{team}' names in user_info_claims (name, role); send shorter claims, or name fewer in the "
        "rules file",
    )


# -- 7. clearer refusals --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("token", "shown"),
    [
        ("undefined", "'undefined'"),
        ("null", "'null'"),
        ("[object Object]", "'[object Object]'"),
        ("opaque-access-token-0123456789abcdefghij", "'opaque…' (40 characters)"),
        ("a.b.c.d.e", "a token of 9 characters"),
        ("abcdefgh12345678", "a token of 16 characters"),  # a short opaque token: never repeated
    ],
)
async def test_a_token_that_is_not_a_jwt_says_so(gateway: RunningGateway, token: str, shown: str) -> None:
    """PyJWT's "Not enough segments" named no cause; a long value is cut, never repeated whole."""
    async with httpx.AsyncClient(base_url=gateway.url, headers={"authorization": f"Bearer {token}"}) as http:
        answer = await http.post("/v1/auth/channel", data={"socket_id": "1.1", "channel_name": "private-user-alice"})
    assert (answer.status_code, answer.json()["error"]) == (
        401,
        f"invalid JWT: the token is not a JWT, three parts separated by dots (got {shown})",
    )


async def test_a_rule_denial_names_the_rule_and_the_claim(
    tmp_path: Path, emulator: RunningEmulator, start_gateway: StartGateway
) -> None:
    """``access to 'presence-team-blue' denied`` said neither which rule decided nor why: the pattern and the claim,
    missing, of the wrong kind or not the name's."""
    gateway = await docs_rules_gateway(tmp_path, emulator, start_gateway)

    async def refusal(channel: str, **claims: object) -> tuple[int, str]:
        headers = {"authorization": f"Bearer {hs_jwt('alice', **claims)}"}
        async with httpx.AsyncClient(base_url=gateway.url, headers=headers) as http:
            answer = await http.post("/v1/auth/channel", data={"socket_id": "1.1", "channel_name": channel})
        return answer.status_code, answer.json()["error"]

    team_rule = "access to 'presence-team-blue' denied by rule 'presence-team-{team}': "
    assert await refusal("presence-team-blue", team="red") == (
        403,
        team_rule + "the name's {team} is not the JWT's team claim",
    )
    assert await refusal("presence-team-blue") == (403, team_rule + "the JWT has no team claim")
    assert await refusal("presence-team-blue", team=["blue"]) == (
        403,
        team_rule + "the JWT's team claim is a list, not a string or an integer",
    )
    assert await refusal("private-team-red.bob", team="red") == (
        403,
        "access to 'private-team-red.bob' denied by rule 'private-team-{team}.{sub}': the name's {sub} is not the "
        "JWT's sub claim",
    )


async def test_signin_without_a_socket_id_says_it_is_required(gateway: RunningGateway) -> None:
    """Sign-in said ``invalid socket_id ''`` where channel auth says ``socket_id is required``: now both say the
    latter."""
    async with httpx.AsyncClient(base_url=gateway.url, headers={"authorization": f"Bearer {hs_jwt()}"}) as http:
        signin = await http.post("/v1/auth/user", data={})
        channel = await http.post("/v1/auth/channel", data={"channel_name": "private-user-alice"})
    assert (signin.status_code, signin.json()) == (400, {"error": "socket_id is required"})
    assert (channel.status_code, channel.json()) == (signin.status_code, signin.json())
