"""docs/gateway.md's cookie recipe ("Signing in with a cookie"), compiled from the guide and run in headless Chromium
against a real gateway and emulator, the page on one origin and the gateway on another of the same site (two ports
of 127.0.0.1), the user's JWT in the gateway's RELAY_JWT_COOKIE cookie.

pusher-js's own auth requests leave ``withCredentials`` off, so the cookie never reaches the gateway: every private
channel was 403 ``needs an authenticated user``, and pusher-js reported only "received status: 403". The recipe's
``customHandler``s ask with ``fetch(…, {credentials: 'include'})``: the cookie's user subscribes and signs in, and a
refusal reaches ``pusher:subscription_error`` with the gateway's reason.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette

from relay.gateway import GatewaySettings
from tests.conftest import RunningEmulator
from tests.gateway.conftest import JWT_SECRET, StartGateway, emulator_url, hs_jwt, serve_asgi
from tests.gateway.test_gateway_browser import CHROMIUM
from tests.gateway.test_gateway_browser import browser as browser
from tests.gateway.test_gateway_browser_audit_fixes import module_site
from tests.gateway.test_gateway_nextjs_guide import GUIDE
from tests.node_scenarios import NODE, NODE_DIR

playwright_api = pytest.importorskip("playwright.async_api", reason="playwright is a test dependency")
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="Chromium is not installed at /usr/bin/chromium")

COOKIE = "session"
SECTION = "\n### Signing in with a cookie\n"
RECIPE = re.compile(r"^```ts\n(// recipe: (?P<path>\S+)\n.*?)^```$", re.MULTILINE | re.DOTALL)

# The compiled recipe, imported by a page as a bundle would import it; 'pusher-js' resolves (import map) to the
# browser build pusher-js ships, in case the recipe imports more than its types.
PAGE = """<!doctype html>
<meta charset="utf-8">
<script src="/pusher.min.js"></script>
<script type="importmap">{"imports": {"pusher-js": "/pusher-js.mjs"}}</script>
<script type="module">
  window.recipe = await import('/lib/gateway-auth.mjs');
</script>
"""

# A pusher-js client built from the gateway's client config, with `auth` (JavaScript: the guide's options for
# channelAuthorization and userAuthentication) in its options; each channel it subscribes and its sign-in are
# recorded in window.records, which the test reads.
CONNECT = """async ({ gatewayUrl, channels }) => {
  const { gatewayChannelAuthorization, gatewayUserAuthentication } = window.recipe;
  const config = await (await fetch(new URL('/v1/client-config', gatewayUrl))).json();
  const channelEndpoint = new URL(config.channelAuthEndpoint, gatewayUrl).href;
  const userEndpoint = new URL(config.userAuthEndpoint, gatewayUrl).href;
  const pusher = new Pusher(config.key, {
    cluster: config.cluster,
    forceTLS: config.forceTLS,
    wsHost: config.wsHost,
    wsPort: config.wsPort,
    enabledTransports: ['ws'],
    %s
  });
  window.clients.push(pusher);
  const records = { signin: null };
  for (const name of channels) {
    const record = (records[name] = { ready: false, errors: [] });
    const channel = pusher.subscribe(name);
    channel.bind('pusher:subscription_succeeded', () => { record.ready = true; });
    channel.bind('pusher:subscription_error', (error) => record.errors.push([error.status ?? null, error.error]));
  }
  pusher.user.bind('pusher:signin_error', (error) => { records.signin = ['error', error.error]; });
  pusher.signin();
  pusher.user.signinDonePromise.then(() => {
    if (pusher.user.user_data) records.signin = ['signed-in', pusher.user.user_data.id];
  });
  window.records = records;
}"""

SETTLED = """(channels) => window.records.signin !== null
  && channels.every((name) => window.records[name].ready || window.records[name].errors.length > 0)"""


def recipe_section() -> str:
    return GUIDE.read_text().split(SECTION, 1)[1].split("\n### ", 1)[0]


def usage_options() -> str:
    """The guide's ``channelAuthorization`` and ``userAuthentication`` lines for ``new Pusher``, as it shows them."""
    blocks = re.findall(r"^```ts\n(.*?)^```$", recipe_section(), re.MULTILINE | re.DOTALL)
    (usage,) = [body for body in blocks if not body.startswith("// recipe: ")]
    lines = [line.strip() for line in usage.splitlines() if line.strip() and not line.strip().startswith("//")]
    assert [line.split(":", 1)[0] for line in lines] == ["channelAuthorization", "userAuthentication"], usage
    return "\n    ".join(lines)


async def build_recipe(tmp_path: Path) -> Path:
    """The recipe's block, type-checked (strict, real pusher-js typings) and compiled as the guide's snippets are."""
    ((block, relative),) = [(match.group(1), match.group("path")) for match in RECIPE.finditer(recipe_section())]
    assert relative == "lib/gateway-auth.ts"
    source, out = tmp_path / "src", tmp_path / "out"
    (source / "lib").mkdir(parents=True)
    (source / relative).write_text(block)
    out.mkdir()
    for directory in (source, out):
        (directory / "node_modules").symlink_to(NODE_DIR / "node_modules", target_is_directory=True)
    assert NODE is not None
    build = await asyncio.create_subprocess_exec(
        NODE, str(NODE_DIR / "gateway_build_guide.mjs"), str(source), str(out), stdout=asyncio.subprocess.PIPE
    )
    built, _ = await asyncio.wait_for(build.communicate(), 60)
    result = json.loads(built.decode().strip().splitlines()[-1])
    assert result["ok"] and result["diagnostics"] == [], result
    return out / "lib" / "gateway-auth.mjs"


def recipe_site(module: bytes) -> Starlette:
    return module_site(PAGE, "/lib/gateway-auth.mjs", module)


@pytest.fixture
async def cookie_page(
    node_modules: Path, tmp_path: Path, browser: object, emulator: RunningEmulator, start_gateway: StartGateway
) -> AsyncIterator[tuple[Any, str]]:
    """A Chromium page that has imported the compiled recipe (``window.recipe``), with alice's JWT in a ``session``
    cookie for 127.0.0.1 (SameSite=Lax: the gateway's port is the same site), and the URL of a gateway on another
    port that reads that cookie and allows the page's origin."""
    module = (await build_recipe(tmp_path)).read_bytes()
    async with serve_asgi(recipe_site(module)) as site:
        gateway = await start_gateway(
            GatewaySettings(
                relay_url=emulator_url(emulator), jwt_secret=JWT_SECRET, jwt_cookie=COOKIE, cors_origins=(site,)
            )
        )
        context = await browser.new_context()  # type: ignore[attr-defined]
        cookie = {"name": COOKIE, "value": hs_jwt("alice"), "domain": "127.0.0.1", "path": "/", "sameSite": "Lax"}
        await context.add_cookies([cookie])
        page = await context.new_page()
        problems: list[str] = []
        page.on("pageerror", lambda error: problems.append(str(error)))
        await page.goto(site)
        await page.wait_for_function("() => window.recipe !== undefined")
        await page.evaluate("() => { window.clients = []; }")
        yield page, gateway.url
        await page.evaluate("() => window.clients.forEach((client) => client.disconnect())")
        await context.close()
        assert problems == []


async def connect(page: Any, gateway_url: str, auth: str, channels: list[str]) -> dict[str, Any]:
    """A client with ``auth`` as its options' auth lines, once each channel and the sign-in has settled."""
    await page.evaluate(CONNECT % auth, {"gatewayUrl": gateway_url, "channels": channels})
    try:
        await page.wait_for_function(SETTLED, arg=channels, timeout=15_000)
    except playwright_api.TimeoutError:
        raise AssertionError(f"did not settle: {await page.evaluate('() => window.records')}") from None
    records: dict[str, Any] = await page.evaluate("() => window.records")
    return records


async def test_pusher_js_s_own_requests_send_no_cookie_to_another_origin(cookie_page: tuple[Any, str]) -> None:
    """What the guide says of pusher-js without the recipe: the cookie's user is refused as anonymous (403), and
    the refusal carries pusher-js's sentence, not the gateway's."""
    page, gateway_url = cookie_page
    own = """channelAuthorization: { endpoint: channelEndpoint, transport: 'ajax' },
    userAuthentication: { endpoint: userEndpoint, transport: 'ajax' },"""
    records = await connect(page, gateway_url, own, ["private-user-alice"])
    ((status, message),) = records["private-user-alice"]["errors"]
    assert status == 403
    assert message.startswith(
        "Unable to retrieve auth string from channel-authorization endpoint - received status: 403"
    )
    assert records["signin"][0] == "error"


async def test_the_recipe_sends_the_cookie_and_passes_on_the_gateway_s_reasons(cookie_page: tuple[Any, str]) -> None:
    """The guide's lines for new Pusher, with the recipe's handlers: the cookie reaches the gateway on the other
    origin, so alice subscribes her channel and signs in as alice; bob's channel is refused with the gateway's
    reason in subscription_error's ``error`` (no ``status``: pusher-js sets it only for its own requests)."""
    page, gateway_url = cookie_page
    records = await connect(page, gateway_url, usage_options(), ["private-user-alice", "private-user-bob"])
    assert records["private-user-alice"] == {"ready": True, "errors": []}
    assert records["private-user-bob"] == {
        "ready": False,
        "errors": [
            [
                None,
                "the gateway answered 403: access to 'private-user-bob' denied by rule 'private-user-{sub}': the "
                "name's {sub} is not the JWT's sub claim",
            ]
        ],
    }
    assert records["signin"] == ["signed-in", "alice"]


async def test_the_recipe_with_get_jwt_sends_the_header_which_the_gateway_reads_first(
    cookie_page: tuple[Any, str],
) -> None:
    """With ``getJwt``, the recipe is the guide's header sign-in with the gateway's reasons: bob's JWT in the header
    decides over alice's cookie, and an expired JWT's 401 says so."""
    page, gateway_url = cookie_page
    await page.evaluate("(jwt) => { window.jwt = jwt; }", hs_jwt("bob"))
    with_jwt = """channelAuthorization: gatewayChannelAuthorization(channelEndpoint, () => window.jwt),
    userAuthentication: gatewayUserAuthentication(userEndpoint, () => window.jwt),"""
    records = await connect(page, gateway_url, with_jwt, ["private-user-bob"])
    assert records["private-user-bob"] == {"ready": True, "errors": []}
    assert records["signin"] == ["signed-in", "bob"]

    await page.evaluate("(jwt) => { window.jwt = jwt; }", hs_jwt("bob", ttl=-30))
    records = await connect(page, gateway_url, with_jwt, ["private-user-bob"])
    assert records["private-user-bob"]["errors"] == [[None, "the gateway answered 401: the JWT has expired"]]
    assert records["signin"] == ["error", "the gateway answered 401: the JWT has expired"]


@pytest.mark.long
async def test_a_gateway_that_cannot_be_reached_says_so(cookie_page: tuple[Any, str]) -> None:
    """No answer the page may read (a gateway down, or CORS): the recipe's error says the gateway could not be
    reached, where pusher-js's own said status 0."""
    page, gateway_url = cookie_page
    await page.route(f"{gateway_url}/v1/auth/**", lambda route: route.abort())
    records = await connect(page, gateway_url, usage_options(), ["private-user-alice"])
    ((status, message),) = records["private-user-alice"]["errors"]
    assert status is None
    assert message.startswith("the gateway could not be reached (or its CORS refused this origin): TypeError")
