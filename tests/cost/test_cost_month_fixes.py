"""Fixes to `relay cost`'s month and its figures: Railway's usage follows --days-per-month (its rates are per 30 days,
ably-and-pricing F.4: "$20 per vCPU-month ($0.000463/vCPU-minute)", × 43,200 minutes); a usage file's count past
10**18 names the file's field, not a flag never given; a JSON breakdown adds up to its monthly_usd."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from cost_helpers import provider, refused, run_cost_json, usage_day
from test_cost_hunt_fixes import DESCRIBED, pricing_file

from relay.cost import PlanFit, Prices, Workload, estimate

# --- 1. Railway's usage over a 31-day month --------------------------------------------------------------------------

MILLION = ["--connections", "1000000", "--provider", "railway", "--provider", "flyio"]


def _lines(fit: PlanFit) -> dict[str, float]:
    return {label.split(" (")[0]: value for label, value in fit.cost_lines}


def test_railways_memory_and_cpu_cost_31_thirtieths_in_a_31_day_month_and_its_fee_and_credit_do_not() -> None:
    """1,000,000 idle connections on Railway Pro: $96.15 for 30 days (9.60 GB $95.95 + 0.010 vCPU $0.20, the $20
    fee less its $20 of usage). --days-per-month 31 left it at $96.15 while Fly.io's machines cost 31/30 more: the
    memory and CPU billed by the second for 31 days cost 31/30 as much, $99.36; the fee and the credit stay $20."""
    thirty = run_cost_json([*MILLION, "--days-per-month", "30"])
    long_month = run_cost_json([*MILLION, "--days-per-month", "31"])
    before, after = provider(thirty, "railway"), provider(long_month, "railway")
    assert (before["plan"], before["monthly_usd"]) == ("pro", 96.15)
    assert (after["plan"], after["monthly_usd"]) == ("pro", 99.36)
    assert after["units"]["usage_usd"] == pytest.approx(before["units"]["usage_usd"] * 31 / 30)
    lines = {item["item"].split(" (")[0]: item["usd"] for item in after["cost_breakdown"]}
    assert lines == {
        "base fee": 20.0,
        "usage: memory": 99.15,
        "usage: CPU": 0.21,
        "usage: egress": 0.0,
        "usage included in the plan": -20.0,
    }
    fly_before, fly_after = provider(thirty, "flyio")["monthly_usd"], provider(long_month, "flyio")["monthly_usd"]
    assert fly_after == pytest.approx(fly_before * 31 / 30, abs=0.01)


def test_railways_redis_and_free_credit_check_follow_the_month_too(prices: Prices) -> None:
    """Hobby needs 2 nodes for 1,000,000 connections: its Redis service, billed by usage like the rest ($3 a 30-day
    month), costs $3.10 in 31 days. Free's hard cap compares the month's usage, 31/30 of 30 days', with its $1."""
    workload = Workload(connections=1_000_000)
    thirty = estimate(workload, prices, providers={"railway"}).provider("railway")
    long_month = estimate(replace(workload, days_per_month=31), prices, providers={"railway"}).provider("railway")
    hobby = {fit.plan: fit for fit in long_month.plans}["hobby"]
    assert hobby.nodes == 2
    assert _lines(hobby)["usage: Redis between nodes"] == 3.10
    assert _lines(hobby)["base fee"] == 5.0 and _lines(hobby)["usage included in the plan"] == -5.0
    free_before = {fit.plan: fit for fit in thirty.plans}["free"].checks[-1]
    free_after = {fit.plan: fit for fit in long_month.plans}["free"].checks[-1]
    assert free_after.name == "usage $ within the plan's credit" and free_after.limit == 1.0
    assert free_after.used == pytest.approx(free_before.used * 31 / 30, abs=0.01)


@pytest.mark.parametrize("provider_id", ["digitalocean", "hetzner", "render"])
def test_a_provider_billing_a_calendar_month_costs_the_same_in_31_days(prices: Prices, provider_id: str) -> None:
    """DigitalOcean, Hetzner and Render list monthly prices for their machines and their Redis: 3 nodes and Redis
    cost the same in a month of 30 or 31 days (Fly.io and Railway, billed by the second, do not)."""
    workload = Workload(connections=100, min_nodes=3)
    thirty = estimate(workload, prices, providers={provider_id}).provider(provider_id)
    long_month = estimate(replace(workload, days_per_month=31), prices, providers={provider_id}).provider(provider_id)
    assert thirty.nodes == 3 and any(label == "Redis between nodes" for label, _ in thirty.cost_lines)
    assert long_month.cost_lines == thirty.cost_lines
    assert long_month.monthly_usd == thirty.monthly_usd


def test_a_usage_billed_plans_fee_is_a_lower_bound_that_does_not_scale_with_the_month(tmp_path: Path) -> None:
    """Railway's plan fee is monthly: DESCRIBED outgrows Free's $1 credit and fits Pro at its $20 fee; a Hobby at
    $19.50 whose credit is unknown could still be cheaper in a 31-day month (scaled like a machine's price, $20.15, it
    was ruled out)."""
    hobby = pricing_file(tmp_path, "railway", "price_usd_month = 5\nincluded_usage_usd = 5\n",
                         'price_usd_month = 19.5\nincluded_usage_usd = "unknown"\n')  # fmt: skip
    argv = [*DESCRIBED, "--days-per-month", "31", "--pricing", str(hobby), "--provider", "railway"]
    railway = provider(run_cost_json(argv), "railway")
    assert (railway["status"], railway["plan"]) == ("unknown", None)
    assert "it could be cheaper than Pro (one seat) ($20.00)" in railway["limit"]


def test_price_days_on_a_usage_billed_provider_is_read(tmp_path: Path) -> None:
    """A pricing file may say the days its usage rates cover: Railway's at 31 days make a 31-day month cost the
    listed rates, $96.15 again."""
    path = pricing_file(tmp_path, "railway", "price_days = 30\n", "price_days = 31\n")
    railway = provider(run_cost_json([*MILLION, "--days-per-month", "31", "--pricing", str(path)]), "railway")
    assert railway["monthly_usd"] == 96.15


# --- 2. a usage file's count past 10**18 names the file's field -------------------------------------------------------

LARGEST = "more than 1e+18, the largest number the cost model takes"


def _usage(tmp_path: Path, apps: dict[str, dict[str, Any]]) -> str:
    path = tmp_path / "usage.json"
    path.write_text(json.dumps({"version": 2, "apps": apps}), encoding="utf-8")
    return str(path)


def test_a_count_extrapolated_past_the_bound_names_the_usage_files_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """2e13 webhooks measured over 1 s are 1.728e18 a day: the refusal named --webhooks-per-day, a flag never given
    (--usage cannot be combined with it); it names the file's field 'webhooks' and why it grew."""
    day = {**usage_day(webhooks=2 * 10**13), "measured": [[0, 1]]}
    path = _usage(tmp_path, {"chat": {"days": {"2026-11-29": day}}})
    said = refused(["cost", "--usage", path], capsys)
    assert said == (
        f"usage file {path}: field 'webhooks' comes to 1.73e+18 a day (extrapolated from the 1 s measured), {LARGEST}"
    )
    assert "--" not in said


def test_peaks_and_users_several_apps_sum_past_the_bound_name_the_files_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two apps' peak connections (6e17 each) sum to 1.2e18, which named --connections; their users, --mau. A --mau
    given is the flag's, and says so."""
    big = 6 * 10**17
    day = usage_day(peak_connections=big, connection_minutes=0)
    apps = {name: {"days": {"2026-11-29": day}} for name in ("a", "b")}
    path = _usage(tmp_path, apps)
    assert refused(["cost", "--usage", path], capsys) == (
        f"usage file {path}: field 'peak_connections' comes to 1.2e+18 (the apps' peaks summed on a day), {LARGEST}"
    )
    quiet = usage_day()
    users = {name: {"days": {"2026-11-29": quiet}, "unique_users": big} for name in ("a", "b")}
    path = _usage(tmp_path, users)
    assert refused(["cost", "--usage", path], capsys) == (
        f"usage file {path}: field 'unique_users' comes to 1.2e+18 (the apps' users summed), {LARGEST}"
    )
    assert refused(["cost", "--usage", path, "--mau", str(2 * 10**18)], capsys).startswith(
        "workload field mau (--mau) must be at most 1e+18"
    )


def test_a_fan_out_past_the_bound_names_both_fields(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Deliveries of a day without publishes count over the app's days: 2 × 1e18 deliveries of 1 publish is a fan-out
    of 2e18, which named --subscribers-per-publish."""
    most = 10**18
    days = {
        "2026-11-29": usage_day(publishes=0, deliveries=most),
        "2026-11-30": usage_day(publishes=1, deliveries=most),
    }
    path = _usage(tmp_path, {"chat": {"days": days}})
    assert refused(["cost", "--usage", path], capsys) == (
        f"usage file {path}: field 'deliveries' over 'publishes' comes to 2e+18, {LARGEST}"
    )


# --- 3. a breakdown adds up to its total ------------------------------------------------------------------------------

ODD_CENTS = ["--connections", "501", "--publishes-per-day", "1", "--subscribers-per-publish", "194"]


def test_the_json_breakdown_adds_up_to_monthly_usd() -> None:
    """Ably Standard: $29 + messages $0.014625 (5,850 at $2.50 a million) + connection- and channel-minutes $21.6432
    each (501 × 43,200 at $1 a million) is $72.301, $72.30; each rounded, the lines said $72.29, as rounding took
    0.46 + 0.32 + 0.32 of a cent off them. The missing cent goes to the line rounding took the most from (largest
    remainder: the messages)."""
    ably = provider(run_cost_json([*ODD_CENTS, "--provider", "ably_rb"]), "ably_rb")
    assert (ably["plan"], ably["monthly_usd"]) == ("standard", 72.30)
    assert ably["cost_breakdown"] == [
        {"item": "base fee", "usd": 29.0},
        {"item": "messages", "usd": 0.02},
        {"item": "connection-minutes", "usd": 21.64},
        {"item": "channel-minutes", "usd": 21.64},
    ]


def _cents(value: float) -> int:
    return round(value * 100)


@pytest.mark.parametrize("connections", [7, 501, 1_234, 20_003, 333_333])
def test_every_priced_plans_lines_add_up_to_its_cost(prices: Prices, connections: int) -> None:
    """Every provider's every priced plan (Railway's negative credit too), at odd amounts: the lines, in whole cents,
    add up to the plan's monthly_usd."""
    workload = Workload(
        connections=connections,
        publishes_per_day=connections * 37.3,
        subscribers_per_publish=min(connections, 19.7),
        message_bytes=777,
        presence_events_per_day=connections / 3,
        presence_subscribers=min(connections - 1, 5.5),
        webhooks_per_day=11,
    )
    for days in (30, 31):
        for estimate_ in estimate(replace(workload, days_per_month=days), prices).providers:
            for fit in estimate_.plans:
                if fit.monthly_usd is None:
                    continue
                assert all(_cents(value) == round(value * 100, 6) for _, value in fit.cost_lines), fit
                assert sum(_cents(value) for _, value in fit.cost_lines) == _cents(fit.monthly_usd), fit
