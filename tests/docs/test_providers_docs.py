"""docs/providers.md's capability table says what the adapters declare."""

from __future__ import annotations

import re
from pathlib import Path

from relay.adapters.base import Capability
from relay.client import make_adapter
from relay.config import parse_url

DOC = Path(__file__).parents[2] / "docs" / "providers.md"
URLS = {
    "Pusher": "pusher://k:s@eu/apps/1",
    "emulator": "emulator://k:s@127.0.0.1:6001/apps/1",
    "Ably": "ably://app.key:secret@rest.ably.io",
    "memory": "memory://docs",
}


def test_the_capability_table_matches_the_adapters() -> None:
    text = DOC.read_text()
    table = text[text.index("| operation |") : text.index('A "no" raises')]
    rows = [line.strip("|").split("|") for line in table.strip().splitlines()]
    providers = [cell.strip() for cell in rows[0][1:]]
    documented = {
        row[0].strip(): dict(zip(providers, (cell.strip() == "yes" for cell in row[1:]), strict=True))
        for row in rows[2:]
    }
    assert set(documented) == {capability.value for capability in Capability}
    for provider, url in URLS.items():
        adapter = make_adapter(parse_url(url))
        declared = {capability.value for capability in adapter.capabilities}
        for operation, support in documented.items():
            assert support[provider] == (operation in declared), f"{provider} {operation}"
    assert re.search(r"\| memory, for tests \| `memory://NAME`", text)
