"""Bugs a cost hunt found in `relay cost`, each pinned by a figure computed by hand from the reference pricing
(shared/reference/ably-and-pricing.md, relay/cost/pricing.toml) and the counting rules of docs/cost.md."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cost_helpers import provider, refused, run_cost, run_cost_json, usage_day


def _whole_day(publishes: int, deliveries: int) -> dict[str, object]:
    """A day measured in full: ``publishes`` to 500 connections, ``deliveries`` in all, nothing else Pusher counts."""
    day: dict[str, object] = usage_day(
        peak_connections=500,
        connection_minutes=500 * 1440,
        publishes=publishes,
        deliveries=deliveries,
        client_events=0,
        client_event_deliveries=0,
        presence_events=0,
        presence_deliveries=0,
        webhooks=0,
        api_requests=0,
        payload_bytes=publishes * 100,
        bytes_out=deliveries * 250,
    )
    day["measured"] = [[0, 86_400]]
    return day


@pytest.mark.parametrize(
    "days",
    [
        # One whole day: 1,091 publishes + 998,909 deliveries = 1,000,000 Pusher messages, Startup's daily cap. Its
        # fan-out, 998,909 ÷ 1,091, times the 1,091 publishes came back as 1,000,000.0000000001.
        {"2026-11-01": (1_091, 998_909)},
        # Two whole days: 20,000 + 980,000 = 1,000,000 on the busiest, 4,000 + 196,004 = 200,004 on the other. The
        # average day is 600,002 and the busiest day factor 1,000,000 ÷ 600,002, whose product came back above it.
        {"2026-11-01": (20_000, 980_000), "2026-11-02": (4_000, 196_004)},
    ],
)
def test_a_day_measured_exactly_at_pushers_cap_fits_that_plan(tmp_path: Path, days: dict[str, tuple[int, int]]) -> None:
    """Pusher Startup allows 500 connections and 1,000,000 messages a UTC day (ably-and-pricing F.1): a busiest day
    measured at exactly 1,000,000 fits it, with 0% headroom, at $49 (it was priced on Pro, $99, 'does not fit' Startup
    by a float's last digit)."""
    document = {
        "version": 2,
        "apps": {"chat": {"days": {day: _whole_day(*counts) for day, counts in days.items()}}},
    }
    path = tmp_path / "usage.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    pusher = provider(run_cost_json(["--usage", str(path), "--provider", "pusher"]), "pusher")
    assert (pusher["plan"], pusher["monthly_usd"]) == ("startup", 49.0)
    assert pusher["limit"] == "messages/day (busiest UTC day) 1,000,000 ≤ 1,000,000"
    assert pusher["headroom"] == 0.0
    assert "(0% headroom)" in run_cost(["--usage", str(path), "--provider", "pusher"])


@pytest.mark.parametrize(
    ("flag", "why"),
    [
        ("--client-events-per-day", "a client event is sent by a connection"),
        ("--presence-events-per-day", "a presence join or leave is a connection's"),
    ],
)
def test_client_and_presence_events_without_connections_are_refused(
    flag: str, why: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """500 client events a day with --connections 0 were priced: on Ably (resource-based) 1,000 messages a day, each
    client event's echo billed to a sender that is no connection. Server publishes need no connection."""
    assert refused(["cost", "--connections", "0", flag, "500"], capsys) == f"{flag} 500 with --connections 0: {why}"
    pusher = provider(run_cost_json(["--connections", "0", "--publishes-per-day", "500"]), "pusher")
    assert pusher["units"]["messages_per_day"] == 500
