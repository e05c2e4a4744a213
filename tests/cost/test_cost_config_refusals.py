"""Malformed ``relay cost`` inputs are refused with a clear error, never an escaped exception or a dropped day."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from relay.cli import main
from relay.cost.pricing import load_prices
from relay.cost.usage import load_usage
from relay.errors import ConfigError, DuplicateKey, unique_keys
from tests.cli_support import NOT_UTF8, write

# -- relay cost ------------------------------------------------------------------------------------------------------


USAGE_DAY = {
    "peak_connections": 6,
    "peak_channels": 2,
    "connection_minutes": 8640,
    "channel_minutes": 2880,
    "publishes": 10,
    "deliveries": 50,
    "client_events": 0,
    "client_event_deliveries": 0,
    "presence_events": 0,
    "presence_deliveries": 0,
    "webhooks": 0,
    "api_requests": 0,
    "payload_bytes": 1000,
    "bytes_out": 5000,
}


def usage_file(tmp_path: Path, days_json: str) -> Path:
    return write(tmp_path, '{"version": 1, "apps": {"a": {"days": {' + days_json + "}}}}", "usage.json")


def test_cost_files_that_are_not_utf8_are_config_errors(tmp_path: Path) -> None:
    """UnicodeDecodeError is not an OSError: it escaped both loaders."""
    path = write(tmp_path, NOT_UTF8, "data")
    with pytest.raises(ConfigError, match="usage file"):
        load_usage(path)
    with pytest.raises(ConfigError, match="pricing file"):
        load_prices(path)


def test_a_usage_day_given_twice_is_refused_not_half_dropped(tmp_path: Path) -> None:
    """JSON keeps the last of duplicate keys: the first 2026-11-28 (and its 6 connections) silently vanished."""
    day = json.dumps(USAGE_DAY)
    busier = json.dumps({**USAGE_DAY, "peak_connections": 60, "connection_minutes": 86400})
    path = usage_file(tmp_path, f'"2026-11-28": {day}, "2026-11-28": {busier}')
    with pytest.raises(ConfigError) as raised:
        load_usage(path)
    assert raised.value.message == (
        f"usage file {path}: '2026-11-28' is given twice in one object; JSON would silently keep only the last one, "
        "so merge them"
    )


def test_a_long_key_given_twice_is_shown_cut_and_marked_so() -> None:
    """A key of 5,000 characters is named by its first 100 and an ellipsis, not as if those were all of it."""
    key = "k" * 5000
    with pytest.raises(DuplicateKey) as raised:
        json.loads(json.dumps({key: 1})[:-1] + f', "{key}": 2}}', object_pairs_hook=unique_keys)
    assert str(raised.value) == f"'{'k' * 100}…' is given twice in one object"
    assert raised.value.key == key
    assert json.loads('{"a": {"a": 1}, "b": [{"a": 2}]}', object_pairs_hook=unique_keys) == {
        "a": {"a": 1},
        "b": [{"a": 2}],
    }


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--connections", "5", "--scale", "1e308"], "--scale"),  # OverflowError: float infinity to integer
        (["--usage", "{huge}"], "publishes"),  # OverflowError: integer division result too large for a float
    ],
    ids=["scale to infinity", "count beyond a float"],
)
def test_cost_inputs_that_overflow_are_config_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], fragment: str
) -> None:
    huge = {**USAGE_DAY, "publishes": 10**400, "deliveries": 10**400}
    path = usage_file(tmp_path, f'"2026-11-28": {json.dumps(huge)}')
    argv = [str(path) if arg == "{huge}" else arg for arg in argv]
    assert main(["cost", *argv, "--format", "csv"]) == 2
    assert fragment in capsys.readouterr().err


@pytest.mark.parametrize(
    ("figures", "argv", "expected"),
    [
        # (4,096 MB × 70% − 60 MB) ÷ 1e-300 KB is beyond a float: a node holds any workload's connections
        (
            {"kb_per_connection = 10": "kb_per_connection = 1e-300", "memory_mb = 4096\n": "memory_mb = 1e18\n"},
            ["--connections", "10"],
            "fits",
        ),
        # 1e18 API calls a day, all of the month's on its busiest day, on a machine of 1e-300 cores: no node count
        # carries it
        (
            {"cpu_cores = 0.5\n\n[[providers.hetzner": "cpu_cores = 1e-300\n\n[[providers.hetzner"},
            ["--connections", "10", "--api-requests-per-day", "1e18", "--peak-day-factor", "30"],
            "does_not_fit",
        ),
    ],
    ids=["memory per connection", "cpu per node"],
)
def test_extreme_capacity_figures_give_an_answer_not_an_overflow(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], figures: dict[str, str], argv: list[str], expected: str
) -> None:
    """A pricing file's figures within their bounds, but whose quotient is beyond a float (OverflowError: cannot
    convert float infinity to integer, from the node count)."""
    text = (Path(__file__).resolve().parents[2] / "relay" / "cost" / "pricing.toml").read_text(encoding="utf-8")
    for old, new in figures.items():
        assert old in text
        text = text.replace(old, new)
    pricing = write(tmp_path, text, "pricing.toml")
    assert main(["cost", *argv, "--pricing", str(pricing), "--provider", "hetzner", "--format", "json"]) == 0
    (hetzner,) = json.loads(capsys.readouterr().out)["providers"]
    assert hetzner["status"] == expected
