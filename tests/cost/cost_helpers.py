"""Helpers for the `relay cost` tests: run the subcommand as `relay` will run it, and build usage-file days."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
from collections.abc import Sequence
from typing import Any

import pytest

from relay.cli import main
from relay.cost.cli import add_cost_command


def cost_parser() -> argparse.ArgumentParser:
    """A ``relay``-like parser with only the ``cost`` subcommand, registered the way relay/cli.py will."""
    parser = argparse.ArgumentParser(prog="relay")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    add_cost_command(subparsers)
    return parser


def run_cost(argv: Sequence[str]) -> str:
    """Run ``relay cost ARGV`` in process; return what it printed. `ConfigError` propagates (relay exits 2)."""
    args = cost_parser().parse_args(["cost", *argv])
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = args.run(args)
    assert code == 0
    return out.getvalue()


def run_cost_json(argv: Sequence[str]) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(run_cost([*argv, "--format", "json"]))
    return result


def provider(result: dict[str, Any], provider_id: str) -> dict[str, Any]:
    found: dict[str, Any] = next(p for p in result["providers"] if p["provider"] == provider_id)
    return found


def usage_day(**overrides: int) -> dict[str, int]:
    """One valid day of a usage file: 10 publishes to 5 subscribers each on 2 channels, 6 connections."""
    day = {
        "peak_connections": 6,
        "peak_channels": 2,
        "connection_minutes": 6 * 1440,
        "channel_minutes": 2 * 1440,
        "publishes": 10,
        "deliveries": 50,
        "client_events": 2,
        "client_event_deliveries": 8,
        "presence_events": 4,
        "presence_deliveries": 12,
        "webhooks": 3,
        "api_requests": 1,
        "payload_bytes": 12 * 100,
        "bytes_out": 70 * 250,
    }
    day.update(overrides)
    return day


def refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run ``relay ARGV`` as the command line does: it must exit 2, print nothing, and say why on stderr."""
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    line: str = captured.err.strip()
    assert line.startswith("relay: configuration error: "), line
    return line.removeprefix("relay: configuration error: ")
