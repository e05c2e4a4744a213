"""What a new user's walkthrough of the examples and the quickstart ran into, in headless Chromium where it is the
pages' behaviour:

- restarting ``python -m examples.order_tracking`` (the emulator is in its process) left the pages saying "Live"
  while every resubscription was refused with 403 (new session secret, orders gone): the refusal is on the page;
- on Ably, the customer's page said "Connecting…" forever before an order (ably-js connects per channel);
- pusher-js (or ably-js) that does not load (CDN unreachable, no local copy) left "Connecting…" and
  "Pusher is not defined" in the console only: the page says so and names PUSHER_JS_PATH / ABLY_JS_PATH;
- the Next.js example's ``OrderUpdates`` keyed its list by order id: the same order ready twice was a duplicate
  React key (React's development build reports it);
- the quickstart's ``python3 -m http.server`` took port 8000, which its next steps need.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from examples.order_tracking import app as order_tracking_app
from examples.order_tracking import create_app
from examples.order_tracking.app import PUSHER_JS_CDN, find_browser_library
from tests.conftest import StartEmulator, free_port
from tests.emulator_process import EmulatorProcess
from tests.examples.conftest import needs_chromium, new_page, place_order, screenshot, staff_page, start_shift
from tests.examples.test_order_tracking_backend import without_provider
from tests.gateway.conftest import ROOT, serve_asgi
from tests.node_scenarios import NODE

playwright_api = pytest.importorskip("playwright.async_api", reason="playwright is a test dependency")
expect = playwright_api.expect
SLOW = 15_000  # ms: a page's first connection (ably-js fetches a token first) on a busy machine
RECONNECT = 40_000  # ms: pusher-js retries an unreachable server every ~10 s after its first attempts
NEXTJS = ROOT / "examples" / "nextjs"
QUICKSTART = ROOT / "docs" / "quickstart.md"
EXAMPLES_README = ROOT / "examples" / "README.md"
needs_ably_js = pytest.mark.skipif(
    find_browser_library("ably", os.environ.get("ABLY_JS_PATH")) is None,
    reason="ably-js is not installed (npm ci --prefix tests/node)",
)


class OneCommand:
    """``python -m examples.order_tracking`` on fixed ports (so it can be restarted on them), its banner read."""

    def __init__(self, port: int, emulator_port: int) -> None:
        self.args = ("--port", str(port), "--emulator-port", str(emulator_port))
        self.site = f"http://127.0.0.1:{port}"
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        env = without_provider()
        env.pop("ORDER_TRACKING_SECRET", None)  # the default: a new secret at each start
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "examples.order_tracking", *self.args, cwd=ROOT, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        assert self.process.stdout is not None
        banner = ""
        while "realtime:" not in banner:
            line = await asyncio.wait_for(self.process.stdout.readline(), 20)
            assert line, f"it exited ({await self.process.wait()}) before serving: {banner}"
            banner += line.decode()
        assert f"Order tracking on {self.site}" in banner

    async def stop(self) -> int:
        assert self.process is not None
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(self.process.wait(), 10)
        except TimeoutError:
            self.process.kill()
            return await self.process.wait()


@pytest.fixture
async def one_command() -> AsyncIterator[OneCommand]:
    command = OneCommand(free_port(), free_port())
    yield command
    if command.process is not None:
        await command.stop()


@needs_chromium()
@pytest.mark.long
async def test_restarting_the_one_command_shows_the_refused_subscriptions_instead_of_live(
    browser: object, one_command: OneCommand
) -> None:
    """The walkthrough's restart: the one command (emulator in its process) is stopped and run again on the same
    ports. pusher-js reconnects and resubscribes, and the new process refuses every old cookie (a new session secret;
    the order itself is gone from memory): the customer's and the kitchen's pages said "Live" while receiving nothing,
    the 403 only in the console. They now say "Not live", and why, on the page."""
    await one_command.start()
    problems: list[str] = []
    kitchen = await staff_page(browser, "/kitchen", "Asha", one_command.site, problems)
    # The kitchen lists orders once its channel is subscribed, so the order is placed after that.
    await expect(kitchen.locator("#connection")).to_have_text("Live", timeout=SLOW)  # type: ignore[attr-defined]
    customer = await new_page(browser, "/", one_command.site, problems)
    pages = {"customer": customer, "kitchen": kitchen}
    await place_order(customer, "Meera", "Palada payasam")
    await expect(customer.locator("#order-status")).to_have_text("Order placed")  # type: ignore[attr-defined]
    await expect(kitchen.locator('[data-order-id="1"] h3')).to_have_text("#1 · Meera")  # type: ignore[attr-defined]
    for page in pages.values():
        await expect(page.locator("#connection")).to_have_text("Live", timeout=SLOW)  # type: ignore[attr-defined]
        await expect(page.locator("#realtime-problems")).to_have_count(0)  # type: ignore[attr-defined]

    assert await one_command.stop() == 0
    for page in pages.values():
        await expect(page.locator("#connection")).to_have_text("Reconnecting…", timeout=SLOW)  # type: ignore[attr-defined]
    await one_command.start()

    for name, page in pages.items():
        problem = page.locator("#realtime-problems")  # type: ignore[attr-defined]
        # A slow restart first shows pusher-js's "unavailable" (the server cannot be reached), also "Not live": the
        # refusal comes at its next attempt, and replaces it.
        await expect(problem).to_contain_text("HTTP 403", timeout=RECONNECT)
        await expect(problem).not_to_contain_text("cannot be reached")
        badge = page.locator("#connection")  # type: ignore[attr-defined]
        await expect(badge).to_have_attribute("data-status", "error")
        await expect(badge).to_have_text("Not live")
        await expect(problem).to_contain_text("reload the page")
        channel = re.compile(r"private-order-[0-9a-f]{8}-1") if name == "customer" else "private-kitchen"
        await expect(problem).to_contain_text(channel)
    await screenshot(customer, "walkthrough_customer_refused_after_restart")
    assert problems == []


@needs_chromium()
@needs_ably_js
async def test_ably_customer_page_before_an_order_is_idle_not_connecting(
    browser: object, emulator_process: EmulatorProcess
) -> None:
    """On Ably the customer's page opens no connection before there is an order to follow (ably-js connects per
    channel, with a token for that channel): it said "Connecting…" for ever. It says "Idle" until the order, then
    "Live" as the Pusher variant does."""
    app = create_app(f"ably://1.app-key:app-secret@127.0.0.1:{emulator_process.port}?tls=false", session_secret=b"t")
    problems: list[str] = []
    async with serve_asgi(app) as site:
        customer = await new_page(browser, "/", site, problems)
        badge = customer.locator("#connection")  # type: ignore[attr-defined]
        await expect(badge).to_have_attribute("data-status", "idle", timeout=SLOW)
        await expect(badge).to_have_text("Idle")
        await expect(customer.get_by_role("button", name="Place order")).to_be_enabled()  # type: ignore[attr-defined]
        await place_order(customer, "Meera", "Fish moilee with rice")
        await expect(customer.locator("#order-status")).to_have_text("Order placed", timeout=SLOW)  # type: ignore[attr-defined]
        await expect(badge).to_have_text("Live", timeout=SLOW)
    assert problems == []


@needs_chromium()
@needs_ably_js
async def test_ably_refused_token_is_shown_on_the_page(browser: object, emulator_process: EmulatorProcess) -> None:
    """relay's /ably/token answering 403 (as after an app restart: the old cookie is refused) fails the channel's
    ably-js connection: the page said "Offline" with no reason. It says "Not live" and names the channel and the
    refusal."""
    app = create_app(f"ably://1.app-key:app-secret@127.0.0.1:{emulator_process.port}?tls=false", session_secret=b"t")
    problems: list[str] = []
    async with serve_asgi(app) as site:
        kitchen = await new_page(browser, "/kitchen", site, problems)

        async def refuse(route: object) -> None:
            await route.fulfill(status=403, json={"error": "refused"})  # type: ignore[attr-defined]

        await kitchen.route("**/ably/token*", refuse)  # type: ignore[attr-defined]
        await start_shift(kitchen, "Asha")
        badge = kitchen.locator("#connection")  # type: ignore[attr-defined]
        await expect(badge).to_have_attribute("data-status", "error", timeout=SLOW)
        await expect(badge).to_have_text("Not live")
        problem = kitchen.locator("#realtime-problems")  # type: ignore[attr-defined]
        await expect(problem).to_contain_text("private-kitchen")
        await expect(problem).to_contain_text("403")
        await expect(problem).to_contain_text("reload the page")
    assert problems == []


@needs_chromium()
@pytest.mark.parametrize(("provider", "setting"), [("emulator", "PUSHER_JS_PATH"), ("ably", "ABLY_JS_PATH")])
async def test_a_realtime_library_that_does_not_load_is_shown_on_the_page(
    browser: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, provider: str, setting: str
) -> None:
    """No local build and the CDN unreachable (aborted here): the page stayed "Connecting…" with "Pusher is not
    defined" in the console only. It says "Not live", names the CDN and the setting that gives the app a local copy,
    and still works without live updates (the customer can order and sees the order)."""
    monkeypatch.setattr(order_tracking_app, "ROOT", tmp_path)  # no npm installs there
    monkeypatch.delenv(setting, raising=False)
    relay_url = (
        "emulator://app-key:app-secret@127.0.0.1:9/apps/1"
        if provider == "emulator"
        else "ably://1.app-key:app-secret@127.0.0.1:9?tls=false"
    )
    cdn = PUSHER_JS_CDN if provider == "emulator" else order_tracking_app.ABLY_JS_CDN
    app = create_app(relay_url, session_secret=b"t")
    problems: list[str] = []
    async with serve_asgi(app) as site:
        context = await browser.new_context(viewport={"width": 720, "height": 720})  # type: ignore[attr-defined]
        await context.route(re.compile(r".*\.min(-2)?\.js$"), lambda route: route.abort())
        customer = await context.new_page()
        customer.on("pageerror", lambda error: problems.append(str(error)))
        await customer.goto(site)
        badge = customer.locator("#connection")
        await expect(badge).to_have_attribute("data-status", "error", timeout=SLOW)
        await expect(badge).to_have_text("Not live")
        problem = customer.locator("#realtime-problems")
        await expect(problem).to_contain_text("did not load")
        await expect(problem).to_contain_text(cdn)
        await expect(problem).to_contain_text(setting)
        await expect(problem).to_contain_text("npm ci --prefix")
        await place_order(customer, "Meera", "Palada payasam")
        await expect(customer.locator("#order-status")).to_have_text("Order placed")
        await screenshot(customer, f"walkthrough_library_missing_{provider}")
        await context.close()
    assert problems == []


# The Next.js component in React's development build (which reports duplicate keys), without Next: the component is
# compiled by the example's TypeScript, React's CommonJS builds are loaded by a small require() in the page, and
# '@/lib/realtime' is a stand-in whose subscription the test drives.
HARNESS = """<!doctype html>
<html><head><meta charset="utf-8"></head><body><main id="root"></main><script>
window.process = { env: { NODE_ENV: 'development', NEXT_PUBLIC_RELAY_GATEWAY_URL: 'http://gateway.invalid' } };
window.errors = [];
const logError = console.error.bind(console);
console.error = (...args) => { window.errors.push(args.map(String).join(' ')); logError(...args); };
const modules = {
  '@/lib/realtime': {
    createRealtime: async ({ onStatus }) => {
      onStatus('connected');
      return {
        subscribe: (channel, handlers) => { window.deliver = handlers.onEvent; return () => {}; },
        close: () => {},
      };
    },
  },
};
function load(url) {
  if (url in modules) return modules[url];
  const request = new XMLHttpRequest();
  request.open('GET', url, false);
  request.send();
  if (request.status !== 200) throw new Error(`${url}: ${request.status}`);
  const module = { exports: {} };
  modules[url] = module.exports;
  const base = url.slice(0, url.lastIndexOf('/') + 1);
  const require = (name) => {
    if (name in modules) return modules[name];
    if (name.startsWith('.')) return load(new URL(name, location.origin + base).pathname);
    return load(`/node_modules/${name}${name.includes('/') ? '.js' : '/index.js'}`);
  };
  const run = new Function('module', 'exports', 'require', 'process', request.responseText);
  run(module, module.exports, require, window.process);
  modules[url] = module.exports;
  return module.exports;
}
const React = load('/node_modules/react/index.js');
const { createRoot } = load('/node_modules/react-dom/client.js');
const { OrderUpdates } = load('/component.js');
createRoot(document.getElementById('root')).render(React.createElement(OrderUpdates, { userId: 'alice', jwt: 'jwt' }));
</script></body></html>
"""

COMPILE = """
const ts = require(process.argv[1]);
const source = require('fs').readFileSync(process.argv[2], 'utf8');
const options = { jsx: ts.JsxEmit.ReactJSXDev, module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2022 };
process.stdout.write(ts.transpileModule(source, { compilerOptions: options }).outputText);
"""


@needs_chromium()
@pytest.mark.skipif(NODE is None, reason="node is not on PATH")
async def test_nextjs_order_updates_lists_the_same_order_twice_with_unique_keys(browser: object) -> None:
    """examples/nextjs/components/OrderUpdates.tsx (the guide's block, byte for byte) rendered by React's development
    build: the same order ready twice, then another, gives three items and no React error. With ``key={orderId}``
    React reported "Encountered two children with the same key" (in `next dev`, Next's error overlay)."""
    typescript = NEXTJS / "node_modules" / "typescript"
    if not (NEXTJS / "node_modules" / "react-dom" / "client.js").is_file() or not typescript.is_dir():
        pytest.fail("examples/nextjs/node_modules is missing: run `npm ci --prefix examples/nextjs` first")
    assert NODE is not None
    process = await asyncio.create_subprocess_exec(
        NODE, "-e", COMPILE, str(typescript), str(NEXTJS / "components" / "OrderUpdates.tsx"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, stderr.decode()
    compiled = stdout.decode()

    async def index(request: Request) -> Response:
        return Response(HARNESS, media_type="text/html")

    async def component(request: Request) -> Response:
        return Response(compiled, media_type="application/javascript")

    async def node_module(request: Request) -> Response:
        path = (NEXTJS / "node_modules" / request.path_params["path"]).resolve()
        assert path.is_relative_to(NEXTJS / "node_modules") and path.is_file(), path
        return FileResponse(path, media_type="application/javascript")

    site = Starlette(
        routes=[
            Route("/", index),
            Route("/component.js", component),
            Route("/node_modules/{path:path}", node_module),
        ]
    )
    async with serve_asgi(site) as url:
        page = await browser.new_page()  # type: ignore[attr-defined]
        problems: list[str] = []
        page.on("pageerror", lambda error: problems.append(str(error)))
        await page.goto(url)
        await expect(page.locator("[role=status]")).to_have_text("Live", timeout=10_000)
        await page.wait_for_function("typeof window.deliver === 'function'")
        for order_id in ("42", "42", "9"):
            await page.evaluate("(id) => window.deliver('order-ready', { orderId: id })", order_id)
        await expect(page.locator("li")).to_have_text(["Order 42 is ready", "Order 42 is ready", "Order 9 is ready"])
        assert problems == []
        assert await page.evaluate("window.errors") == []
        await page.close()


def test_the_quickstart_page_is_served_on_a_port_its_next_steps_leave_free() -> None:
    """`python3 -m http.server` listens on 8000 by default, the port of the order-tracking example (and of the Next.js
    example's `relay serve`), the quickstart's next step: its server runs on another port, opened at that port."""
    text = QUICKSTART.read_text()
    (command,) = re.findall(r"`(python3 -m http\.server[^`]*)`", text)
    given = re.search(r"http\.server (\d+)", command)  # its port is the first argument: --bind may follow
    assert given, f"{command!r} takes http.server's default port, 8000"
    port = given.group(1)
    assert port not in {"8000", "6001", "3000"}
    assert re.findall(r"http://127\.0\.0\.1:(\d+)", text) == [port]
    defaults = (ROOT / "examples" / "order_tracking" / "__main__.py").read_text()
    assert f"default={port}" not in defaults


def test_the_quickstart_names_a_local_pusher_js_for_offline_use() -> None:
    """The quickstart's page loads pusher-js from the CDN: offline it says `Pusher is not defined` in the console
    only. The page says what to do then, naming a local build that exists after the npm install it names."""
    text = QUICKSTART.read_text()
    assert "Pusher is not defined" in text
    (local,) = set(re.findall(r"`(tests/node/node_modules/\S+/pusher\.min\.js)`", text))
    assert "npm ci --prefix tests/node" in text
    assert (ROOT / local).is_file(), f"{local} is missing: run `npm ci --prefix tests/node`"


def test_the_examples_readme_restarts_a_separate_emulator_not_the_one_command() -> None:
    """Restarting the one command restarts its in-process emulator *and* the app (orders and sign-ins gone): the
    README's restart demo is the separate emulator's, with its RELAY_URL command, and how long reconnecting takes:
    within about 15 s of the emulator's return (it said so, untrue after a long outage, when pusher-js alone waits
    up to a minute; test_order_tracking_fixes measures it), and "Not live" after 10 s (it said 15)."""
    text = EXAMPLES_README.read_text()
    (paragraph,) = [block for block in text.split("\n\n") if "start it again" in block]
    assert "RELAY_URL=emulator://app-key:app-secret@127.0.0.1:6001/apps/1" in paragraph
    assert "relay emulator --app-id 1" in paragraph
    assert "within about 15 s after it is back, however long it was down" in " ".join(paragraph.split())
    assert "pusher-js's first 15 s" not in text
    assert "ORDER_TRACKING_SECRET" in paragraph


@needs_chromium()
async def test_a_refused_kitchen_action_is_said_on_the_page(browser: object, emulator_process: EmulatorProcess) -> None:
    """Two staff pages in one browser share its sign-in (a cookie): the delivery page's sign-in took the kitchen
    page's role, and "Start preparing" then failed with 403 as an unhandled rejection: the button stayed disabled and
    nothing was said. The refusal is shown above the board and the button can be pressed again."""
    app = create_app(f"emulator://app-key:app-secret@127.0.0.1:{emulator_process.port}/apps/1", session_secret=b"t")
    problems: list[str] = []
    async with serve_asgi(app) as site:
        kitchen = await staff_page(browser, "/kitchen", "Ravi", site, problems)
        await expect(kitchen.locator("#connection")).to_have_text("Live", timeout=SLOW)  # type: ignore[attr-defined]
        delivery = await kitchen.context.new_page()  # type: ignore[attr-defined]
        await delivery.goto(f"{site}/delivery")
        await start_shift(delivery, "Joe")  # the same browser: the kitchen page is Joe of delivery now
        customer = await new_page(browser, "/", site, problems)
        await place_order(customer, "Meera", "Palada payasam")
        start = kitchen.locator('[data-order-id="1"]').get_by_role("button", name="Start preparing")  # type: ignore[attr-defined]
        await start.click()
        problem = kitchen.locator("#action-problem")  # type: ignore[attr-defined]
        await expect(problem).to_have_text("That did not go through: only kitchen staff may do this")
        await expect(start).to_be_enabled()
        await expect(customer.locator("#order-status")).to_have_text("Order placed")  # type: ignore[attr-defined]
    assert problems == []


@needs_chromium()
async def test_an_unreachable_realtime_server_is_said_on_the_page(browser: object) -> None:
    """RELAY_URL naming a server that is not running (the quickstart's, stopped): the pages said "Connecting…" for
    ever. Once pusher-js gives up its first attempts ("unavailable") the page says the server cannot be reached."""
    app = create_app(f"emulator://app-key:app-secret@127.0.0.1:{free_port()}/apps/1", session_secret=b"t")
    problems: list[str] = []
    async with serve_asgi(app) as site:
        kitchen = await staff_page(browser, "/kitchen", "Asha", site, problems)
        badge = kitchen.locator("#connection")  # type: ignore[attr-defined]
        await expect(badge).to_have_text("Not live", timeout=RECONNECT)
        problem = kitchen.locator("#realtime-problems")  # type: ignore[attr-defined]
        await expect(problem).to_contain_text("The realtime server cannot be reached")
        await expect(problem).to_contain_text("RELAY_URL")
    assert problems == []


@needs_chromium()
@needs_ably_js
async def test_on_ably_a_cook_with_two_tabs_is_listed_once(browser: object, emulator_process: EmulatorProcess) -> None:
    """Ably has a presence member per connection: "On shift" listed a cook with two kitchen tabs twice ("Meena, Ravi,
    Ravi"), where the same page on Pusher lists each user once."""
    app = create_app(f"ably://1.app-key:app-secret@127.0.0.1:{emulator_process.port}?tls=false", session_secret=b"t")
    problems: list[str] = []
    async with serve_asgi(app) as site:
        ravi = await staff_page(browser, "/kitchen", "Ravi", site, problems)
        second_tab = await ravi.context.new_page()  # type: ignore[attr-defined]
        await second_tab.goto(f"{site}/kitchen")  # signed in already: the same cookie
        meena = await staff_page(browser, "/kitchen", "Meena", site, problems)
        for page in (ravi, second_tab, meena):
            await expect(page.locator("#staff")).to_have_text("Meena, Ravi", timeout=SLOW)
    assert problems == []


@needs_chromium()
async def test_the_pages_reach_an_emulator_behind_a_path_prefix(browser: object, start_emulator: StartEmulator) -> None:
    """docs/emulator.md: with RELAY_URL=emulator://…/pusher/apps/ID the config the pages get has wsPath, but the
    pages left it out of pusher-js's options: pusher-js connected to /app/{key}, was refused (4005, "Path not found:
    connect to /pusher/app/{key}") and the pages said "Not live" for good."""
    running = await start_emulator(path_prefix="/pusher")
    url = f"emulator://{running.app.key}:{running.app.secret}@127.0.0.1:{running.port}/pusher/apps/{running.app.app_id}"
    problems: list[str] = []
    async with serve_asgi(create_app(url, session_secret=b"t")) as site:
        kitchen = await staff_page(browser, "/kitchen", "Asha", site, problems)
        await expect(kitchen.locator("#connection")).to_have_text("Live", timeout=SLOW)  # type: ignore[attr-defined]
        await expect(kitchen.locator("#staff")).to_have_text("Asha", timeout=SLOW)  # type: ignore[attr-defined]
    assert problems == []


@needs_chromium()
async def test_refused_forms_say_why_and_the_pages_log_no_errors(
    browser: object, emulator_process: EmulatorProcess
) -> None:
    """An order without a dish showed "[object Object]" (FastAPI's 422 detail is a list); a staff name of spaces was an
    unhandled rejection, the form left as it was with nothing said; and every page's first load logged a 404 (the
    browser's /favicon.ico). Each refused field is named with its reason, the sign-in can be tried again, and the
    pages log no error of their own."""
    app = create_app(f"emulator://app-key:app-secret@127.0.0.1:{emulator_process.port}/apps/1", session_secret=b"t")
    problems: list[str] = []
    async with serve_asgi(app) as site:
        logged: list[str] = []
        customer, kitchen = [await (await browser.new_context()).new_page() for _ in range(2)]  # type: ignore[attr-defined]
        for page, path in ((customer, "/"), (kitchen, "/kitchen")):
            page.on("console", lambda message: logged.append(message.text) if message.type == "error" else None)
            page.on("pageerror", lambda error: problems.append(str(error)))
            await page.goto(f"{site}{path}")
        await expect(customer.locator("#connection")).to_have_text("Live", timeout=SLOW)  # type: ignore[attr-defined]
        await expect(kitchen.locator("#signin")).to_be_visible()  # type: ignore[attr-defined]
        assert logged == []

        await customer.locator("input[name=name]").fill("Meera")  # type: ignore[attr-defined]
        await customer.get_by_role("button", name="Place order").click()  # type: ignore[attr-defined]
        await expect(customer.locator("#order-error")).to_have_text(  # type: ignore[attr-defined]
            "items: List should have at least 1 item after validation, not 0"
        )

        await start_shift(kitchen, "   ")
        problem = kitchen.locator("#action-problem")  # type: ignore[attr-defined]
        await expect(problem).to_have_text("That did not go through: name: String should have at least 1 character")
        await start_shift(kitchen, "Asha")
        await expect(kitchen.locator("#staff")).to_have_text("Asha", timeout=SLOW)  # type: ignore[attr-defined]
        await expect(problem).to_have_count(0)
    assert problems == []
