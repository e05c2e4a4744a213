"""The console's defence in depth, should markup ever reach its page although it sets what clients sent only as
text: a Content-Security-Policy that lets the page run its own inline script and stylesheet and nothing else, no
answer a browser may sniff as another type, and a publish form that reads only a body sent as JSON."""

from __future__ import annotations

import base64
import hashlib
import json
import re

import httpx
from playwright.async_api import Browser, ConsoleMessage, expect

from tests.conftest import StartEmulator
from tests.operations.support import APP, ws_client
from tests.operations.test_console import TOKEN
from tests.operations.test_console import browser as browser  # the headless Chromium fixture

# Every violation the page meets, whatever its cause, kept where the test reads it: added before the page's own script.
RECORD_VIOLATIONS = """
window.violations = [];
document.addEventListener('securitypolicyviolation', (violation) => {
  window.violations.push(`${violation.effectiveDirective} blocked ${violation.blockedURI || 'inline'}`);
});
"""
BODY = {"app_id": "1", "channel": "news", "event": "e", "data": "x"}


def source_hash(page: str, tag: str) -> str:
    (content,) = re.findall(rf"<{tag}>(.*?)</{tag}>", page, re.DOTALL)
    return "'sha256-" + base64.b64encode(hashlib.sha256(content.encode()).digest()).decode() + "'"


async def test_the_page_allows_its_own_script_and_stylesheet_alone_and_works_without_a_violation(
    start_emulator: StartEmulator, browser: Browser
) -> None:
    """The header names the hashes of the inline script and stylesheet the page is served with; in Chromium the page
    does everything (stream, app list, filter, form, pause, clear) without one violation (an inline ``style=`` is
    one), while markup added to it can neither load an image nor run a handler."""
    emulator = await start_emulator(app=APP, console_token=TOKEN)
    async with httpx.AsyncClient(base_url=emulator.http_url) as http:
        served = await http.get("/console", params={"token": TOKEN})
    directives = dict(d.strip().split(" ", 1) for d in served.headers["content-security-policy"].split(";"))
    assert directives == {
        "default-src": "'none'",
        "script-src": source_hash(served.text, "script"),
        "style-src": source_hash(served.text, "style"),
        "connect-src": "'self'",
        "base-uri": "'none'",
        "form-action": "'none'",
        "frame-ancestors": "'none'",
    }

    page = await browser.new_page(viewport={"width": 1400, "height": 1000})
    await page.add_init_script(RECORD_VIOLATIONS)
    reported: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text:
            reported.append(message.text)

    page.on("console", on_console)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    await page.goto(f"{emulator.http_url}/console?token={TOKEN}")
    await expect(page.locator("#status")).to_have_text("live")
    subscriber = await ws_client(emulator.ws_url())
    await subscriber.subscribe("news", APP)
    await expect(page.locator('#channels tr[data-channel="news"] .subscribers')).to_have_text("1")
    await page.fill("#pub-channel", "news")
    await page.click("#pub-send")
    await expect(page.locator("#pub-result")).to_have_text("published test-event on news to 1 subscriber(s)")
    await subscriber.expect("test-event")
    await page.fill("#pub-channel", "bad channel!")
    await page.click("#pub-send")
    await expect(page.locator("#pub-result")).to_contain_text("refused (HTTP 400)")
    await page.click("#log-pause")
    await page.click("#log-pause")
    await page.click("#log-clear")
    await page.fill("#filter", "nothing matches this")
    await expect(page.locator('#channels tr[data-channel="news"]')).to_have_count(0)
    await expect(page.locator("#status")).to_have_text("live")
    assert await page.evaluate("window.violations") == []
    assert (reported, errors) == ([], [])
    await expect(page.locator("header label").first).to_have_css("flex-direction", "row")  # its style applied

    # The listener does hear a violation: an image and a handler added as markup are blocked.
    await page.evaluate("""document.body.insertAdjacentHTML(
      'beforeend', '<img src="/elsewhere.png" onerror="window.ran = true">')""")
    await page.wait_for_function("window.violations.length >= 2")
    assert set(await page.evaluate("window.violations")) >= {
        f"img-src blocked {emulator.http_url}/elsewhere.png",
        "script-src-attr blocked inline",
    }
    assert await page.evaluate("window.ran === undefined")
    await subscriber.close()


async def test_no_console_metrics_or_usage_answer_may_be_sniffed(start_emulator: StartEmulator) -> None:
    """Each protected endpoint's answers, refusals and the event stream included, say ``nosniff``."""
    emulator = await start_emulator(app=APP, console_token=TOKEN)
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(base_url=emulator.http_url, timeout=5) as http:
        answers = [await http.get(path, headers=bearer) for path in ("/console", "/console/apps", "/usage", "/metrics")]
        answers += [
            await http.get("/usage"),  # 401
            await http.delete("/metrics", headers=bearer),  # 405
            await http.post("/console/publish", json=BODY, headers=bearer),
            await http.post("/console/publish", content=b"[", headers={**bearer, "Content-Type": "application/json"}),
        ]
        assert [answer.status_code for answer in answers] == [200, 200, 200, 200, 401, 405, 200, 400]
        for answer in answers:
            assert answer.headers["x-content-type-options"] == "nosniff", answer.request.url
        async with http.stream("GET", "/console/events", params={"app": "1"}, headers=bearer) as stream:
            assert stream.headers["x-content-type-options"] == "nosniff"


async def test_a_publish_body_not_sent_as_json_is_a_415_and_the_console_still_publishes(
    start_emulator: StartEmulator, browser: Browser
) -> None:
    """A text/plain POST, which a page of any site may send without a CORS preflight, was read as JSON and
    published: it is refused in the gateway's words, nothing is published, and the page's form still is."""
    emulator = await start_emulator(app=APP)
    page = await browser.new_page()
    await page.goto(f"{emulator.http_url}/console")
    await expect(page.locator("#status")).to_have_text("live")
    payload = json.dumps(BODY).encode()
    async with httpx.AsyncClient(base_url=emulator.http_url) as http:
        as_text = await http.post("/console/publish", content=payload, headers={"Content-Type": "text/plain"})
        untyped = await http.post("/console/publish", content=payload)
    assert (as_text.status_code, as_text.json()) == (
        415,
        {"error": "the body must be JSON: send Content-Type: application/json (this request's is 'text/plain')"},
    )
    assert (untyped.status_code, untyped.json()) == (
        415,
        {"error": "the body must be JSON: send Content-Type: application/json (this request has none)"},
    )
    await page.fill("#pub-channel", "news")
    await page.click("#pub-send")
    await expect(page.locator("#pub-result")).to_have_text("published test-event on news to 0 subscriber(s)")
    # The stream is in order: a refused body published ("e") would be logged before the form's publish.
    await expect(page.locator('#log tr[data-type="publish"] .what')).to_have_text(["test-event"])
