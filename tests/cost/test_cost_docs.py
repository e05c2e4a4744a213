"""docs/cost.md stays true: every `relay cost` command in it runs, and every figure in the table after it matches.

A worked example is a ```console block with ``$ relay cost ...`` lines, optionally followed by a markdown table
``| provider | plan | $/month | billed units |`` whose rows give a provider id, its plan id (or "unknown" / "does not
fit"), its monthly cost and ``unit=value`` pairs separated by "; ". The usage file the examples read is the doc's
```json block, written to a temporary directory the commands run in.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest
from cost_helpers import provider, run_cost, run_cost_json

DOC = Path(__file__).resolve().parents[2] / "docs" / "cost.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```\n", re.MULTILINE | re.DOTALL)


@dataclass(frozen=True)
class Row:
    provider: str
    plan: str
    monthly: str
    units: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Example:
    command: str
    rows: tuple[Row, ...]


def examples(text: str) -> list[Example]:
    found: list[Example] = []
    blocks = list(FENCE.finditer(text))
    for index, block in enumerate(blocks):
        if block.group(1) != "console":
            continue
        commands = [line[2:] for line in block.group(2).splitlines() if line.startswith("$ relay cost")]
        following = text[block.end() : blocks[index + 1].start() if index + 1 < len(blocks) else len(text)]
        rows = table_rows(following) if len(commands) == 1 else ()
        found += [Example(command, rows) for command in commands]
    return found


def table_rows(text: str) -> tuple[Row, ...]:
    lines = [line for line in text.splitlines() if line.startswith("|")]
    if not lines or "provider" not in lines[0]:
        return ()
    rows = []
    for line in lines[2:]:
        cells = [cell.strip().strip("`") for cell in line.strip("|").split("|")]
        units = tuple(tuple(pair.split("=", 1)) for pair in cells[3].split("; ") if pair)
        rows.append(Row(cells[0], cells[1], cells[2], units))  # type: ignore[arg-type]
    return tuple(rows)


def shown(value: float, text: str) -> str:
    """``value`` formatted like ``text`` in the doc: same decimals, thousands separated."""
    decimals = len(text.split(".")[1]) if "." in text else 0
    return f"{value:,.{decimals}f}"


TEXT = DOC.read_text(encoding="utf-8")
EXAMPLES = examples(TEXT)


def test_the_doc_has_checked_examples() -> None:
    assert len(EXAMPLES) >= 12
    checked = [e for e in EXAMPLES if e.rows]
    assert len(checked) >= 10
    assert sum(len(e.rows) for e in checked) >= 25


@pytest.fixture
def in_doc_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory holding the doc's usage.json, as the current directory."""
    usage = next(m.group(2) for m in FENCE.finditer(TEXT) if m.group(1) == "json")
    (tmp_path / "usage.json").write_text(usage, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.command[len("relay cost ") :][:80] for e in EXAMPLES])
def test_doc_example(example: Example, in_doc_dir: Path) -> None:
    argv = shlex.split(example.command)[2:]
    if not example.rows:
        assert run_cost(argv)  # it runs and prints something (plots land in the temporary directory)
        for name in re.findall(r"--plot (\S+)", example.command):
            assert (in_doc_dir / name).stat().st_size > 0
        return
    result = run_cost_json(argv)
    assert [p["provider"] for p in result["providers"]] == [row.provider for row in example.rows], (
        "the table must list exactly the providers the command prints, in order"
    )
    for row in example.rows:
        got = provider(result, row.provider)
        where = f"{example.command}: {row.provider}"
        expected_plan = got["plan"] or got["status"].replace("_", " ")
        assert row.plan == expected_plan, f"{where}: plan is {expected_plan!r}, the doc says {row.plan!r}"
        money = "—" if got["monthly_usd"] is None else f"{got['monthly_usd']:,.2f}"
        assert row.monthly == money, f"{where}: $/month is {money}, the doc says {row.monthly}"
        for name, text in row.units:
            value = got["units"][name]
            assert shown(value, text) == text, f"{where}: {name} is {value}, the doc says {text}"
