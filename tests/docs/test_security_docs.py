"""Every test docs/security.md cites exists, so the threat model cannot point at nothing."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parents[2]


def test_every_cited_test_exists() -> None:
    text = (ROOT / "docs" / "security.md").read_text()
    citations = re.findall(r"`([a-z_]+/[a-z_0-9]+\.py)(?:::([a-z_0-9]+))?`", text)
    assert len(citations) > 20
    for path, test in citations:
        if path.startswith("bench/"):
            continue
        source = ROOT / "tests" / path
        assert source.exists(), path
        if test:
            assert f"def {test}(" in source.read_text(), f"{path}::{test}"
    assert (ROOT / "bench" / "soak.py").exists()
