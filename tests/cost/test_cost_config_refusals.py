"""Malformed ``relay cost`` inputs are refused with a clear error, never an escaped exception or a dropped day."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from relay.cli import main
from relay.cost.pricing import load_prices
from relay.cost.usage import load_usage
from relay.errors import ConfigError
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
    with pytest.raises(ConfigError, match="2026-11-28"):
        load_usage(path)


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
