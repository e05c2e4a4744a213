"""docs/quickstart.md, followed literally: its emulator command runs (on a free port instead of 6001), its page is
served to headless Chromium (pusher-js from the local npm install instead of the CDN), its publisher runs through its
own shell lines, and the event appears on the page. A screenshot goes to tests/artifacts/quickstart.png."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.emulator_process import EmulatorProcess
from tests.examples.conftest import needs_chromium, screenshot
from tests.gateway.conftest import serve_asgi
from tests.gateway.test_gateway_browser import PUSHER_JS
from tests.gateway.test_gateway_browser import browser as browser

playwright_api = pytest.importorskip("playwright.async_api", reason="playwright is a test dependency")
DOC = Path(__file__).parents[2] / "docs" / "quickstart.md"
BLOCKS = re.findall(r"^```(\w+)\n(.*?)^```$", DOC.read_text(), re.MULTILINE | re.DOTALL)
CDN = "https://js.pusher.com/8.4.0/pusher.min.js"


def block(language: str, containing: str) -> str:
    (found,) = [body for lang, body in BLOCKS if lang == language and containing in body]
    return found


def test_every_block_is_used() -> None:
    """Install (not run: the suite runs in its own venv), emulator, page, publisher, shell lines: nothing else."""
    assert [lang for lang, _ in BLOCKS] == ["bash", "bash", "html", "python", "bash"]
    assert block("bash", "pip install") == "python3 -m venv .venv && .venv/bin/pip install -q -e .\n"


@needs_chromium()
async def test_the_quickstart_works(browser: object, tmp_path: Path) -> None:
    (command,) = block("bash", "relay emulator").splitlines()
    binary, subcommand, *args = command.split()
    assert (binary, subcommand) == (".venv/bin/relay", "emulator")
    emulator = await EmulatorProcess.start(*args)
    try:
        port = emulator.port
        assert "RELAY_URL:   emulator://app-key:app-secret@127.0.0.1:" in emulator.banner
        page_html = block("html", "new Pusher").replace("wsPort: 6001", f"wsPort: {port}")
        assert CDN in page_html
        page_html = page_html.replace(CDN, "/pusher.min.js")

        async def index(request: Request) -> Response:
            return Response(page_html, media_type="text/html")

        async def pusher_js(request: Request) -> Response:
            return Response(PUSHER_JS.read_bytes(), media_type="application/javascript")

        site = Starlette(routes=[Route("/", index), Route("/pusher.min.js", pusher_js)])
        async with serve_asgi(site) as url:
            page = await browser.new_page(viewport={"width": 560, "height": 320})  # type: ignore[attr-defined]
            problems: list[str] = []
            page.on("pageerror", lambda error: problems.append(str(error)))
            await page.goto(url)
            expect = playwright_api.expect
            await expect(page.locator("#status")).to_have_text("connected", timeout=10_000)

            (tmp_path / "publish.py").write_text(block("python", "relay.publish"))
            shell = (
                block("bash", "publish.py").replace(":6001/", f":{port}/").replace(".venv/bin/python", sys.executable)
            )
            env = {name: value for name, value in os.environ.items() if not name.startswith(("RELAY_", "PUSHER_"))}
            for _ in range(2):
                process = await asyncio.create_subprocess_exec(
                    "bash", "-euc", shell, cwd=tmp_path, env=env, stdout=asyncio.subprocess.PIPE
                )
                stdout, _ = await asyncio.wait_for(process.communicate(), 30)
                assert (process.returncode, stdout) == (0, b"published\n")
            await expect(page.locator("#events li")).to_have_text(["Order 42 is ready: Appam with stew"] * 2)
            assert problems == []
            await screenshot(page, "quickstart")
    finally:
        await emulator.stop()


# What an installed (not editable) relay leaves a script started in the checkout: its directory first on sys.path,
# and no import hook mapping relay.adapters and relay.emulator to the top-level folders.
WITHOUT_EDITABLE_HOOK = (
    "import sys; sys.meta_path[:] = [f for f in sys.meta_path if '__editable__' not in getattr(f, '__module__', '')]; "
)


def test_python_run_in_the_checkout_root_imports_relay_whole() -> None:
    """The quickstart's publish.py saved in the checkout, and ``python -m examples.order_tracking``, run with the
    checkout's root first on sys.path: relay.adapters and relay.emulator come from the top-level folders."""
    root = Path(__file__).parents[2]
    probe = WITHOUT_EDITABLE_HOOK + (
        "import relay, relay.adapters.pusher, relay.emulator.server; "
        "print(relay.adapters.pusher.__file__); print(relay.emulator.server.__file__)"
    )
    result = subprocess.run([sys.executable, "-c", probe], cwd=root, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(root / "adapters" / "pusher.py"), str(root / "emulator" / "server.py")]
    example = WITHOUT_EDITABLE_HOOK + "import runpy; runpy.run_module('examples.order_tracking', run_name='__main__')"
    result = subprocess.run(
        [sys.executable, "-c", example, "--help"], cwd=root, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: ")
