"""docs/gateway.md's "Laravel Echo" section, run as written in headless Chromium against a real gateway and emulator.

The section's rules file (its heredoc) is the gateway's ``RELAY_RULES_FILE``; its ``resources/js/echo.js`` is served
to a page the way Vite builds it, ``import.meta.env`` replaced by the section's ``.env`` (the emulator's port and the
gateway's URL put in), ``laravel-echo`` and ``pusher-js`` resolved by an import map; its ``app.js`` snippets run in
that page as the app's code; its JWT claims are the users'. The audit this answers: Laravel's notification channel
was refused by the default rules (403), presence callbacks got ``user.id`` undefined, and Echo's ``bearerToken`` lost
every channel at the first reconnect after the JWT expired.
"""

from __future__ import annotations

import asyncio
import html
import json
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from relay.gateway import GatewaySettings
from relay.gateway.rules_file import RuleSpec, load_rules
from tests.conftest import RunningEmulator
from tests.gateway.conftest import JWT_SECRET, TOKEN, StartGateway, emulator_url, hs_jwt, serve_asgi
from tests.gateway.test_gateway_browser import CHROMIUM, PUSHER_JS
from tests.gateway.test_gateway_browser import browser as browser
from tests.gateway.test_gateway_nextjs_guide import GUIDE
from tests.node_scenarios import NODE_DIR

playwright_api = pytest.importorskip("playwright.async_api", reason="playwright is a test dependency")
FIRST_CONNECTION = 15_000  # ms: a page's first connection and authorizations, on a busy CI machine
needs_chromium = pytest.mark.skipif(not CHROMIUM.exists(), reason="Chromium is not installed at /usr/bin/chromium")

LARAVEL_ECHO = NODE_DIR / "node_modules" / "laravel-echo" / "dist" / "echo.js"  # the ES module build, no imports
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
NOTIFICATIONS_OF_1 = "App.Models.User.1"  # Echo's name for it; the provider's is private-App.Models.User.1

# A Laravel page: the csrf-token meta tag Laravel's layouts have (Echo reads it), the section's relay-jwt meta tag,
# pusher-js's browser build, and the section's echo.js as a module.
PAGE = """<!doctype html>
<meta charset="utf-8">
<meta name="csrf-token" content="csrf-token-of-the-laravel-session">
<meta name="relay-jwt" content="%s">
<script src="/pusher.min.js"></script>
<script type="importmap">{"imports": {"laravel-echo": "/laravel-echo.js", "pusher-js": "/pusher-js.mjs"}}</script>
<script type="module">
  import Echo from 'laravel-echo';
  import '/resources/js/echo.js';
  window.LaravelEcho = Echo;
  window.records = { notifications: [], online: [], errors: [], messages: [] };
</script>
"""

# The section's app.js snippet, with the page's values and the app's functions recording what they are given.
SUBSCRIBE = """([source, userId, roomId]) => {
  const records = window.records;
  new Function('userId', 'roomId', 'showNotification', 'render', 'showError', source)(
    userId,
    roomId,
    (notification) => records.notifications.push(notification),
    (online) => records.online.push([...online]),
    (message) => records.errors.push(message),
  );
}"""

SEND = """async ([source, roomId]) => {
  const AsyncFunction = Object.getPrototypeOf(async () => {}).constructor;
  await new AsyncFunction('roomId', source)(roomId);
}"""


def section() -> str:
    return GUIDE.read_text().split("\n## Laravel Echo\n", 1)[1].split("\n## ", 1)[0]


def block(language: str, first_line: str = "") -> str:
    """The section's one ``language`` block whose first line starts with ``first_line``."""
    (body,) = [body for lang, body in BLOCK.findall(section()) if lang == language and body.startswith(first_line)]
    return str(body)


def rules_file() -> str:
    """The rules the section writes with its heredoc."""
    match = re.search(r"<<'EOF'\n(.*?)^EOF$", block("bash", "cat > rules.toml"), re.MULTILINE | re.DOTALL)
    assert match is not None
    return match.group(1)


def dotenv(overrides: dict[str, str]) -> dict[str, str]:
    """The section's ``.env``, read as Laravel and Vite read it (quotes off, ``${NAME}`` expanded), with
    ``overrides`` in place of the values it gives those names."""
    values: dict[str, str] = {}
    for line in block("bash", "# .env\n").splitlines():
        if not line or line.startswith("#"):
            continue
        name, value = line.split("=", 1)
        value = overrides.get(name, value.strip('"'))
        values[name] = re.sub(r"\$\{(\w+)\}", lambda reference: values[reference.group(1)], value)
    return values


def vite_build(source: str, env: dict[str, str]) -> str:
    """What Vite does to ``import.meta.env`` in a module: the ``VITE_`` variables of the environment, inlined."""
    exposed = {name: value for name, value in env.items() if name.startswith("VITE_")}
    return re.sub(r"\bimport\.meta\.env\b", f"({json.dumps(exposed)})", source)


def notification_publish() -> dict[str, Any]:
    """The body the section's curl sends to /v1/publish."""
    match = re.search(r" -d '(.*?)'", block("bash", "curl "), re.DOTALL)
    assert match is not None
    body: dict[str, Any] = json.loads(match.group(1))
    return body


def user_jwt(**claims: object) -> str:
    """A JWT with the section's claims of user 1, valid for a minute unless ``claims`` say otherwise."""
    shown: dict[str, Any] = json.loads(block("json"))
    return hs_jwt(**{**shown, "exp": int(time.time()) + 60, **claims})


@dataclass
class LaravelSite:
    """The page's origin: the page, the scripts, and a backend route that publishes through the gateway with the
    sender's X-Socket-Id (set once the gateway is up, as it needs the site's origin for CORS)."""

    url: str = ""
    gateway_url: str = ""
    echo_module: str = ""
    socket_ids: list[str | None] = field(default_factory=list)


def laravel_site(site: LaravelSite) -> Starlette:
    async def page(request: Request) -> Response:
        return Response(PAGE % html.escape(request.query_params["jwt"]), media_type="text/html")

    async def pusher(request: Request) -> Response:
        return Response(PUSHER_JS.read_bytes(), media_type="application/javascript")

    async def pusher_module(request: Request) -> Response:
        return Response("export default window.Pusher;\n", media_type="application/javascript")

    async def laravel_echo(request: Request) -> Response:
        return Response(LARAVEL_ECHO.read_bytes(), media_type="application/javascript")

    async def echo_module(request: Request) -> Response:
        return Response(site.echo_module, media_type="application/javascript")

    async def send_message(request: Request) -> Response:
        """``broadcast(new MessageSent($message))->toOthers()``, from a backend that publishes through the gateway."""
        socket_id = request.headers.get("x-socket-id")
        site.socket_ids.append(socket_id)
        body = {
            "channel": f"presence-chat.{request.path_params['room']}",
            "event": "App\\Events\\MessageSent",
            "data": await request.json(),
            "socket_id": socket_id,
        }
        async with httpx.AsyncClient(base_url=site.gateway_url) as http:
            published = await http.post("/v1/publish", json=body, headers={"authorization": f"Bearer {TOKEN}"})
        return JSONResponse(published.json(), status_code=published.status_code)

    return Starlette(
        routes=[
            Route("/", page),
            Route("/pusher.min.js", pusher),
            Route("/pusher-js.mjs", pusher_module),
            Route("/laravel-echo.js", laravel_echo),
            Route("/resources/js/echo.js", echo_module),
            Route("/api/chat/{room}/messages", send_message, methods=["POST"]),
        ]
    )


@pytest.fixture
async def laravel(tmp_path: Path, emulator: RunningEmulator, start_gateway: StartGateway) -> AsyncIterator[LaravelSite]:
    """The site, and a gateway started the section's way: its rules file, the site's origin in CORS."""
    rules = tmp_path / "rules.toml"
    rules.write_text(rules_file())
    site = LaravelSite()
    async with serve_asgi(laravel_site(site)) as url:
        gateway = await start_gateway(
            env={
                "RELAY_URL": emulator_url(emulator),
                "RELAY_API_TOKEN": TOKEN,
                "RELAY_JWT_SECRET": JWT_SECRET,
                "RELAY_RULES_FILE": str(rules),
                "RELAY_CORS_ORIGINS": url,
            }
        )
        overrides = {"PUSHER_APP_KEY": emulator.app.key, "PUSHER_PORT": str(emulator.port)}
        env = dotenv({**overrides, "VITE_RELAY_GATEWAY_URL": gateway.url})
        site.url, site.gateway_url = url, gateway.url
        site.echo_module = vite_build(block("js", "// resources/js/echo.js\n"), env)
        yield site


async def open_page(browser: Any, site: LaravelSite, jwt: str) -> Any:
    """A page of the site for the user of ``jwt``, once its Echo is connected."""
    page = await browser.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(str(error)))
    await page.goto(f"{site.url}/?{urlencode({'jwt': jwt})}")
    try:
        await page.wait_for_function(
            "() => window.records && window.Echo.connectionStatus() === 'connected'", timeout=FIRST_CONNECTION
        )
    except playwright_api.TimeoutError:
        raise AssertionError(f"Echo did not connect: {problems}") from None
    return page


async def records(page: Any, kind: str, count: int) -> list[Any]:
    """The page's records of ``kind``, once there are ``count``."""
    try:
        await page.wait_for_function(f"(n) => window.records.{kind}.length >= n", arg=count, timeout=FIRST_CONNECTION)
    except playwright_api.TimeoutError:
        raise AssertionError(f"{kind}: {await page.evaluate('() => window.records')}") from None
    found: list[Any] = await page.evaluate(f"() => window.records.{kind}")
    return found


async def publish(gateway_url: str, body: dict[str, Any]) -> None:
    async with httpx.AsyncClient(base_url=gateway_url) as http:
        response = await http.post("/v1/publish", json=body, headers={"authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200, response.text


def test_the_section_s_rules_env_and_claims_fit_together(tmp_path: Path) -> None:
    """The heredoc is a rules file the gateway loads; every ``import.meta.env`` name echo.js reads is in the .env;
    the JWT shown has a string ``sub`` and the ``id`` claim the presence rule names; the guide links the section."""
    path = tmp_path / "rules.toml"
    path.write_text(rules_file())
    assert load_rules(path) == (
        RuleSpec("private-App.Models.User.{sub}"),
        RuleSpec("presence-chat.*", user_info_claims=("id", "name")),
    )
    read = set(re.findall(r"import\.meta\.env\.(\w+)", block("js", "// resources/js/echo.js\n")))
    assert read and read <= set(dotenv({}))
    claims = json.loads(block("json"))
    assert isinstance(claims["sub"], str) and isinstance(claims["id"], int)
    assert "- [Laravel Echo](#laravel-echo)\n" in GUIDE.read_text()


async def test_the_default_rules_refuse_laravel_s_notification_channel(
    emulator: RunningEmulator, start_gateway: StartGateway
) -> None:
    """What the section says happens without its rules file: 403 ``no rule allows 'private-App.Models.User.1'``."""
    gateway = await start_gateway(GatewaySettings(relay_url=emulator_url(emulator), jwt_secret=JWT_SECRET))
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        refused = await http.post(
            "/v1/auth/channel",
            data={"socket_id": "123.456", "channel_name": f"private-{NOTIFICATIONS_OF_1}"},
            headers={"authorization": f"Bearer {user_jwt()}"},
        )
    assert refused.status_code == 403
    assert refused.json() == {"error": f"no rule allows 'private-{NOTIFICATIONS_OF_1}'"}


@needs_chromium
async def test_laravel_echo_configured_as_the_section_says(browser: Any, laravel: LaravelSite) -> None:
    """The section's echo.js and app.js with two users: alice's notification reaches ``.notification()`` (bob is
    refused her channel, 403); ``here``/``joining``/``leaving`` get members with their ``id``; a message sent with the
    section's fetch carries alice's socket id, and the backend's publish skips her tab; sign-in goes through the
    gateway with Echo's X-CSRF-TOKEN; and without ``headers: {}`` in userAuthentication, ``new Echo`` throws."""
    subscribe = block("js", "// resources/js/app.js, in part\n")
    alice = await open_page(browser, laravel, user_jwt())
    await alice.evaluate(SUBSCRIBE, [subscribe, 1, 7])
    assert await records(alice, "online", 1) == [[[1, "Alice"]]]

    bob = await open_page(browser, laravel, user_jwt(sub="2", id=2, name="Bob"))
    await bob.evaluate(SUBSCRIBE, [subscribe, 2, 7])
    (bob_sees,) = await records(bob, "online", 1)
    assert sorted(bob_sees) == [[1, "Alice"], [2, "Bob"]]
    assert (await records(alice, "online", 2))[1] == [[1, "Alice"], [2, "Bob"]]

    notification = notification_publish()
    assert notification["channel"] == f"private-{NOTIFICATIONS_OF_1}"
    await publish(laravel.gateway_url, notification)
    assert await records(alice, "notifications", 1) == [notification["data"]]
    await bob.evaluate(
        "(name) => window.Echo.private(name).error((error) => window.records.errors.push(error.status))",
        NOTIFICATIONS_OF_1,
    )
    assert await records(bob, "errors", 1) == [403]
    assert await bob.evaluate("() => window.records.notifications") == []

    for page in (alice, bob):
        await page.evaluate(
            "() => window.Echo.join('chat.7').listen('MessageSent', (event) => window.records.messages.push(event))"
        )
    await alice.evaluate(SEND, [block("js", "// resources/js/app.js, sending a message\n"), 7])
    assert await records(bob, "messages", 1) == [{"body": "Hello"}]
    assert laravel.socket_ids == [await alice.evaluate("() => window.Echo.socketId()")]
    # Events on a channel arrive in order: once this one has reached alice, the first one never will.
    await publish(
        laravel.gateway_url, {"channel": "presence-chat.7", "event": "App\\Events\\MessageSent", "data": {"body": "2"}}
    )
    assert await records(alice, "messages", 1) == [{"body": "2"}]

    await alice.evaluate("() => window.Echo.connector.signin()")
    await alice.wait_for_function("() => window.Echo.connector.pusher.user.user_data", timeout=5000)
    assert await alice.evaluate("() => window.Echo.connector.pusher.user.user_data.id") == "1"
    thrown = await alice.evaluate(
        """() => {
          try {
            new window.LaravelEcho({ broadcaster: 'pusher', key: 'k', cluster: 'mt1', wsHost: '127.0.0.1',
                                     enabledTransports: ['ws'], userAuthentication: { endpoint: '/x' } });
          } catch (error) {
            return String(error);
          }
          return null;
        }"""
    )
    assert thrown is not None and thrown.startswith("TypeError")

    await bob.close()
    assert (await records(alice, "online", 3))[2] == [[1, "Alice"]]
    assert await alice.evaluate("() => window.records.errors") == []


@needs_chromium
async def test_headers_provider_recovers_where_bearer_token_loses_the_channel(
    browser: Any, laravel: LaravelSite, emulator: RunningEmulator
) -> None:
    """A JWT valid for a few seconds subscribes the notifications channel twice: through the section's Echo
    (headersProvider) and through an Echo with ``bearerToken``. Once it has expired, the page holds a fresh one in its
    meta tag and the emulator drops the connections: the section's Echo re-authorizes with the fresh JWT and gets the
    next notification; the bearerToken Echo is refused, 401."""
    page = await open_page(browser, laravel, user_jwt())
    # The short JWT is made once the page is open, so its seconds cover the two authorizations alone.
    expires = int(time.time()) + 4
    short_jwt = user_jwt(exp=expires)
    await page.evaluate("(jwt) => { document.querySelector('meta[name=\"relay-jwt\"]').content = jwt; }", short_jwt)
    await page.evaluate(
        """(jwt) => {
          const options = window.Echo.options;
          window.fixedEcho = new window.LaravelEcho({
            broadcaster: 'pusher', key: options.key, cluster: options.cluster, wsHost: options.wsHost,
            wsPort: options.wsPort, forceTLS: options.forceTLS, enabledTransports: options.enabledTransports,
            authEndpoint: options.channelAuthorization.endpoint, auth: { headers: {} }, bearerToken: jwt,
          });
          window.records.subscribed = [];
          window.records.fixedSubscribed = [];
          window.records.fixedErrors = [];
          window.Echo.private('App.Models.User.1')
            .subscribed(() => window.records.subscribed.push(Date.now()))
            .error((error) => window.records.errors.push(error.status))
            .notification((notification) => window.records.notifications.push(notification));
          window.fixedEcho.private('App.Models.User.1')
            .subscribed(() => window.records.fixedSubscribed.push(Date.now()))
            .error((error) => window.records.fixedErrors.push(error.status));
        }""",
        short_jwt,
    )
    await records(page, "subscribed", 1)
    await records(page, "fixedSubscribed", 1)

    await asyncio.sleep(max(0.0, expires - time.time()) + 0.1)  # the JWT of both has expired
    await page.evaluate("(jwt) => { document.querySelector('meta[name=\"relay-jwt\"]').content = jwt; }", user_jwt())
    for connection in list(emulator.node.connections):
        connection.shutdown()
    await records(page, "subscribed", 2)
    assert await records(page, "fixedErrors", 1) == [401]

    notification = notification_publish()
    await publish(laravel.gateway_url, notification)
    assert await records(page, "notifications", 1) == [notification["data"]]
    assert await page.evaluate("() => [window.records.errors, window.records.fixedSubscribed.length]") == [[], 1]
    await page.evaluate("() => { window.Echo.disconnect(); window.fixedEcho.disconnect(); }")
