"""docs/ably.md's client options, used as shown against the emulator the README starts (on a free port instead of
6001): its keys are that emulator's."""

from __future__ import annotations

import re
from pathlib import Path

from ably import AblyRest

from tests.emulator_process import EmulatorProcess

ROOT = Path(__file__).parents[2]
DOC = (ROOT / "docs" / "ably.md").read_text()
README_EMULATOR = re.search(r"\.venv/bin/relay emulator (.*)\n", (ROOT / "README.md").read_text())


def test_every_key_in_the_page_is_the_readme_emulator_s() -> None:
    keys = set(re.findall(r"key[=:] ?[\"']([^\"']+)[\"']", DOC)) | set(re.findall(r"ably://([^@\s`]+)@127", DOC))
    assert keys == {"1.app-key:app-secret"}


async def test_the_ably_python_rest_options_publish_to_the_readme_emulator() -> None:
    assert README_EMULATOR is not None
    (options,) = re.findall(r"^rest = AblyRest\((.*)\)$", DOC, re.MULTILINE)
    emulator = await EmulatorProcess.start(*README_EMULATOR.group(1).split())
    try:
        rest: AblyRest = eval(f"AblyRest({options.replace('port=6001', f'port={emulator.port}')})")
        try:
            await rest.channels.get("orders").publish("placed", {"id": 1})
            history = await rest.channels.get("orders").history()
            assert [(message.name, message.data) for message in history.items] == [("placed", {"id": 1})]
        finally:
            await rest.close()
    finally:
        await emulator.stop()
