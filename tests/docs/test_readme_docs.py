"""README.md followed in order: its "Two commands" are two, the emulator the first one starts is the one the
Quickstart's samples talk to (pusher-http-python wants a numeric app id: with the default app's `app-id` its publish
was `404 unknown app id '1'`), and the RELAY_URL it gives the order-tracking example is that emulator's; the pages a
new user follows run Python from the venv they install into."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.emulator_process import EmulatorProcess
from tests.operations.support import ws_client

ROOT = Path(__file__).parents[2]
README = ROOT / "README.md"
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def section(heading: str) -> str:
    text = README.read_text()
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else len(text)]


def test_two_commands_are_two() -> None:
    assert [lang for lang, _ in BLOCK.findall(section("Two commands"))] == ["bash", "bash"]


def emulator_args() -> list[str]:
    """The flags of the emulator the first command starts."""
    (_, first), _ = BLOCK.findall(section("Two commands"))
    command: list[str] = first.strip().rsplit(" && ", 1)[-1].split()
    assert command[:2] == [".venv/bin/relay", "emulator"], command
    return command[2:]


async def test_the_quickstart_samples_talk_to_the_first_commands_emulator() -> None:
    """The Python sample publishes (a real process, pusher-http-python) to the emulator started as the first command
    starts it, and a client subscribed with the pusher-js sample's key receives the event."""
    quickstart = section("Quickstart")
    (python,) = [body for lang, body in BLOCK.findall(quickstart) if lang == "python"]
    (javascript,) = [body for lang, body in BLOCK.findall(quickstart) if lang == "js"]
    (key,) = re.findall(r'new Pusher\("([^"]+)"', javascript)
    emulator = await EmulatorProcess.start(*emulator_args())
    try:
        assert "port=6001" in python and "wsPort: 6001" in javascript
        listener = await ws_client(f"ws://127.0.0.1:{emulator.port}/app/{key}?protocol=7")
        await listener.send("pusher:subscribe", {"channel": "orders"})
        await listener.expect("pusher_internal:subscription_succeeded")
        publisher = python.replace("port=6001", f"port={emulator.port}")
        result = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-c", publisher], capture_output=True, text=True, timeout=30
        )
        assert result.returncode == 0, result.stderr[-1500:]
        assert (await listener.expect("order-ready"))["data"] == '{"id": 42}'
        await listener.ws.close()
    finally:
        await emulator.stop()


async def test_the_relay_url_given_to_the_example_is_the_emulators() -> None:
    """With the emulator of the first command on 6001, the example cannot start its own there: the README hands it
    the running one's RELAY_URL, which must be the one that emulator prints."""
    (url,) = set(re.findall(r"RELAY_URL=(\S+) \.venv/bin/python -m examples\.order_tracking", README.read_text()))
    emulator = await EmulatorProcess.start(*emulator_args())
    try:
        assert f"RELAY_URL:   {url.replace(':6001/', f':{emulator.port}/')}" in emulator.banner
    finally:
        await emulator.stop()


@pytest.mark.parametrize(
    "page", ["README.md", "docs/quickstart.md", "examples/README.md", "docs/ably.md"], ids=lambda page: page
)
def test_every_python_command_runs_in_the_venv(page: str) -> None:
    """The pages install into .venv: a bare `python -m examples.order_tracking` there failed with
    ModuleNotFoundError: fastapi (only creating the venv and `python3 -m http.server` need no venv)."""
    text = (ROOT / page).read_text()
    assert not re.findall(r"(?<![/\w])python3? -m (?!venv |http\.server)\S+", text), "commands that run outside .venv"
