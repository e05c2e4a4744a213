"""What a new user's audit ran into, run for real:

- the order-tracking example ignored a ``PUSHER_JS_PATH`` (or ``ABLY_JS_PATH``) that named no file, and its pages
  then told the user to set the variable they had set: start-up stops with exit status 2 and names it;
- with no local copy of pusher-js (or ably-js) the start-up banner said nothing about the pages loading it from its
  CDN: it says so, and how to give the app a copy;
- the README's Quickstart sample said "Browser or Node" but used the browser's global ``Pusher``: in Node it was
  ``ReferenceError: Pusher is not defined``; its comment now says what Node needs first, and that runs.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import signal
import sys
from pathlib import Path

import pusher
import pytest

from examples.order_tracking.app import ABLY_JS_CDN, PUSHER_JS_CDN
from tests.docs.test_readme_docs import BLOCK, emulator_args, section
from tests.emulator_process import EmulatorProcess
from tests.examples.test_order_tracking_backend import refused, without_provider
from tests.gateway.conftest import ROOT
from tests.node_scenarios import NODE, NODE_DIR, node_modules

ARGS = ("--port", "0", "--emulator-port", "0")


@pytest.mark.parametrize(
    ("setting", "where", "problem"),
    [
        ("PUSHER_JS_PATH", "missing", "does not exist"),
        ("PUSHER_JS_PATH", "directory", "is not a file"),
        ("ABLY_JS_PATH", "missing", "does not exist"),
    ],
)
async def test_a_browser_library_path_that_is_not_a_file_stops_start_up(
    tmp_path: Path, setting: str, where: str, problem: str
) -> None:
    """It was skipped: the pages loaded the library from its CDN and, when that failed, said "give the app a local
    copy (PUSHER_JS_PATH=…)", which the user had done. Now: exit 2, one line naming the variable and the path."""
    path = tmp_path / "pusher.min.js" if where == "missing" else tmp_path
    stderr = await refused(*ARGS, env=without_provider(**{setting: str(path)}))
    assert stderr.count("\n") == 1, stderr
    assert f"{setting}={path} {problem}" in stderr
    assert "or unset it" in stderr


async def banner(cwd: Path, **variables: str) -> str:
    """Everything ``python -m examples.order_tracking`` run from ``cwd`` prints until SIGTERM stops it (status 0)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "examples.order_tracking", *ARGS, cwd=cwd, env=without_provider(**variables),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None
    printed = ""
    try:
        while "realtime:" not in printed:
            line = await asyncio.wait_for(process.stdout.readline(), 30)
            assert line, f"it exited before serving: {printed}"
            printed += line.decode()
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        rest, stderr = await asyncio.wait_for(process.communicate(), 15)
    assert process.returncode == 0, stderr.decode()
    return printed + rest.decode()


@pytest.fixture
def checkout_without_npm(tmp_path: Path) -> Path:
    """The example in a checkout where neither examples/nextjs nor tests/node has been installed with npm."""
    (tmp_path / "examples").mkdir()
    shutil.copy(ROOT / "examples" / "__init__.py", tmp_path / "examples" / "__init__.py")
    shutil.copytree(
        ROOT / "examples" / "order_tracking",
        tmp_path / "examples" / "order_tracking",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    return tmp_path


@pytest.mark.parametrize(
    ("variables", "package", "cdn", "setting"),
    [
        ({}, "pusher-js", PUSHER_JS_CDN, "PUSHER_JS_PATH=/path/to/pusher.min.js"),
        (
            {"RELAY_URL": "ably://1.app-key:app-secret@127.0.0.1:9?tls=false"},
            "ably-js",
            ABLY_JS_CDN,
            "ABLY_JS_PATH=/path/to/ably.min.js",
        ),
    ],
    ids=["pusher-js", "ably-js"],
)
async def test_the_banner_says_the_pages_load_the_library_from_its_cdn(
    checkout_without_npm: Path, variables: dict[str, str], package: str, cdn: str, setting: str
) -> None:
    printed = await banner(checkout_without_npm, **variables)
    (line,) = [line for line in printed.splitlines() if line.startswith(f"  {package}:")]
    assert f"the pages load it from its CDN, {cdn}" in line
    assert setting in line and "npm ci --prefix" in line


async def test_the_banner_says_nothing_of_a_cdn_with_a_local_copy(tmp_path: Path) -> None:
    local = tmp_path / "pusher.min.js"
    local.write_text("window.Pusher = function () {};")
    printed = await banner(ROOT, PUSHER_JS_PATH=str(local))
    assert "realtime:" in printed and "CDN" not in printed


async def test_the_readme_quickstart_sample_runs_in_node_as_its_comment_says() -> None:
    """The sample, with the line its comment gives for Node first, subscribes in Node (pusher-js from tests/node)
    to the emulator the README's first command starts, and logs the event the Python sample publishes."""
    node_modules("pusher-js")
    assert NODE is not None
    (javascript,) = [body for lang, body in BLOCK.findall(section("Quickstart")) if lang == "js"]
    comment = javascript.splitlines()[0]
    found = re.search(r"in Node, first (const Pusher = require\(\"pusher-js\"\);)", comment)
    assert found, f"the sample's comment does not say how to get Pusher in Node: {comment}"
    emulator = await EmulatorProcess.start(*emulator_args())
    script = found.group(1) + "\n" + javascript.replace("wsPort: 6001", f"wsPort: {emulator.port}")
    process = await asyncio.create_subprocess_exec(
        NODE, "-e", script, cwd=NODE_DIR, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    sdk = pusher.Pusher(app_id="1", key="app-key", secret="app-secret", host="127.0.0.1", port=emulator.port, ssl=False)
    try:
        for _ in range(100):
            if (await asyncio.to_thread(sdk.channel_info, "orders"))["occupied"]:
                break
            assert process.returncode is None, (await process.communicate())[1].decode()
            await asyncio.sleep(0.1)
        else:
            pytest.fail("the Node sample never subscribed to orders")
        await asyncio.to_thread(sdk.trigger, "orders", "order-ready", {"id": 42})
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 10)
        assert line.decode().strip() == "{ id: 42 }"
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()
        await emulator.stop()
