"""pusher-js in headless Chromium through a real gateway and emulator (issue 7).

A tiny static server (uvicorn) serves ``browser_page.html`` and pusher-js's browser build; the page fetches
/v1/client-config across origins, authorizes with the user's JWT at /v1/auth/channel and /v1/auth/user, and writes
what happens into the DOM, which the test reads. The gateway allows only the page's origin (CORS).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from relay.gateway import GatewaySettings
from tests.conftest import RunningEmulator
from tests.gateway.conftest import JWT_SECRET, ROOT, TOKEN, StartGateway, emulator_url, hs_jwt, serve_asgi
from tests.node_scenarios import NODE_DIR

playwright_api = pytest.importorskip("playwright.async_api", reason="playwright is a test dependency")

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PAGE = Path(__file__).with_name("browser_page.html")
PUSHER_JS = NODE_DIR / "node_modules" / "pusher-js" / "dist" / "web" / "pusher.min.js"
ARTIFACTS = ROOT / "tests" / "artifacts"

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="Chromium is not installed at /usr/bin/chromium")


def static_site() -> Starlette:
    page, script = PAGE.read_bytes(), PUSHER_JS.read_bytes()

    async def index(request: Request) -> Response:
        return Response(page, media_type="text/html")

    async def pusher(request: Request) -> Response:
        return Response(script, media_type="application/javascript")

    return Starlette(routes=[Route("/", index), Route("/pusher.min.js", pusher)])


@pytest.fixture
async def site() -> AsyncIterator[str]:
    if not PUSHER_JS.is_file():
        pytest.fail(f"{PUSHER_JS} is missing: run `npm ci --prefix tests/node` first")
    async with serve_asgi(static_site()) as url:
        yield url


@pytest.fixture
async def browser() -> AsyncIterator[object]:
    async with playwright_api.async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        await browser.close()


async def test_pusher_js_in_chromium(
    site: str, browser: object, emulator: RunningEmulator, start_gateway: StartGateway
) -> None:
    """§8 item 89 in a browser: client-config over CORS, connected status, the user's private channel and presence
    (me = the JWT's sub and name) subscribed, another user's channel refused with 403 (subscription_error), signin,
    and an event published with the API token shown in the DOM; a screenshot goes to tests/artifacts/."""
    gateway = await start_gateway(
        GatewaySettings(relay_url=emulator_url(emulator), api_token=TOKEN, jwt_secret=JWT_SECRET, cors_origins=(site,))
    )
    page = await browser.new_page(viewport={"width": 760, "height": 640})  # type: ignore[attr-defined]
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(str(error)))
    jwt = hs_jwt("alice", name="Alice Liddell")
    await page.goto(f"{site}/#{urlencode({'gateway': gateway.url, 'jwt': jwt})}")

    expect = playwright_api.expect
    await expect(page.locator("#status")).to_have_text("connected", timeout=15_000)
    await expect(page.locator("#subscribed li")).to_have_count(2, timeout=15_000)  # in the order auth answers
    assert sorted(await page.locator("#subscribed li").all_text_contents()) == ["presence-lobby", "private-user-alice"]
    await expect(page.locator("#errors li")).to_have_text(["private-user-bob: 403 AuthError"])
    await expect(page.locator("#me")).to_have_text("alice (Alice Liddell)")
    await expect(page.locator("#user")).to_have_text("alice (Alice Liddell)")

    async with httpx.AsyncClient(base_url=gateway.url) as http:
        body = {"channels": ["private-user-alice", "private-user-bob"], "event": "order-ready", "data": {"id": 42}}
        refused = await http.post("/v1/publish", json=body)
        assert refused.status_code == 401
        published = await http.post("/v1/publish", json=body, headers={"authorization": f"Bearer {TOKEN}"})
        assert published.status_code == 200
    await expect(page.locator("#events li")).to_have_text(['private-user-alice order-ready {"id":42}'])
    assert await page.evaluate("window.pusher.allChannels().map((c) => c.name).sort()") == [
        "presence-lobby",
        "private-user-alice",
        "private-user-bob",
    ]
    assert problems == []
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "gateway_browser.png"), full_page=True)


async def test_cors_allows_only_the_configured_origin(
    site: str, browser: object, emulator: RunningEmulator, start_gateway: StartGateway
) -> None:
    """RELAY_CORS_ORIGINS: a preflight from the page's origin is allowed (Authorization header included), one from
    another origin is refused (400, no Access-Control-Allow-Origin), and the same page served from another origin
    (localhost instead of 127.0.0.1) cannot read /v1/client-config in Chromium."""
    gateway = await start_gateway(
        GatewaySettings(relay_url=emulator_url(emulator), jwt_secret=JWT_SECRET, cors_origins=(site,))
    )
    preflight = {"access-control-request-method": "POST", "access-control-request-headers": "authorization"}
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        allowed = await http.options("/v1/auth/channel", headers={"origin": site, **preflight})
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == site
        assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
        refused = await http.options("/v1/auth/channel", headers={"origin": "http://evil.example.test", **preflight})
        assert refused.status_code == 400
        assert "access-control-allow-origin" not in refused.headers
        assert refused.json()["error"].startswith("CORS preflight refused: the origin 'http://evil.example.test'")
        simple = await http.get("/v1/client-config", headers={"origin": "http://evil.example.test"})
        assert "access-control-allow-origin" not in simple.headers

    other_origin = site.replace("127.0.0.1", "localhost")
    page = await browser.new_page()  # type: ignore[attr-defined]
    await page.goto(f"{other_origin}/#{urlencode({'gateway': gateway.url, 'jwt': hs_jwt()})}")
    await playwright_api.expect(page.locator("#errors li")).to_have_text(
        ["client-config: TypeError: Failed to fetch"], timeout=5000
    )
    assert await page.locator("#status").text_content() == "initialized"
