"""docs/library.md's examples, run in order in one namespace, as a reader would paste them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import relay

DOC = Path(__file__).parents[2] / "docs" / "library.md"


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), re.DOTALL)


def test_the_library_guide_runs(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("RELAY_URL", "memory://docs")
    relay.reset_default_client()
    blocks = python_blocks(DOC)
    assert len(blocks) >= 8
    namespace: dict[str, object] = {"__name__": "docs"}
    try:
        for block in blocks:
            exec(compile(block, str(DOC), "exec"), namespace)
    finally:
        relay.reset_default_client()
    assert "Relay('memory://docs')" in capsys.readouterr().out
