"""Behaviour of `relay cost` a mutation audit found no test pinning down: the test fails when its line is mutated."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from cost_helpers import provider, run_cost_json

BUNDLED = resources.files("relay.cost").joinpath("pricing.toml").read_text(encoding="utf-8")
STARTUP = '[[providers.pusher.plans]]\nid = "startup"\n'
MYSTERY = """[[providers.pusher.plans]]
id = "mystery"
name = "Mystery"
price_usd_month = "unknown"
connections = 1000
messages_per_day = 2000000
confidence = "low"
source = "test"

"""


def test_a_plan_of_unknown_price_makes_pusher_unknown_beside_plans_that_fit(tmp_path: Path) -> None:
    """docs/cost.md: a plan priced "unknown" that fits could be the cheapest, so Pusher's answer is unknown, not
    Startup's $49 (the cheapest plan known to fit 300 connections)."""
    assert BUNDLED.count(STARTUP) == 1
    path = tmp_path / "pricing.toml"
    path.write_text(BUNDLED.replace(STARTUP, MYSTERY + STARTUP), encoding="utf-8")
    argv = ["--connections", "300", "--publishes-per-day", "1000", "--provider", "pusher"]
    bundled = provider(run_cost_json(argv), "pusher")
    assert (bundled["status"], bundled["plan"], bundled["monthly_usd"]) == ("fits", "startup", 49.0)
    pusher = provider(run_cost_json([*argv, "--pricing", str(path)]), "pusher")
    assert (pusher["status"], pusher["plan"], pusher["monthly_usd"]) == ("unknown", None, None), pusher
    assert pusher["limit"].startswith("prices or limits unknown for Mystery (unknown in the pricing data: "), pusher
    assert pusher["limit"].endswith("; it could be cheaper than Startup ($49.00), the cheapest known to fit"), pusher
