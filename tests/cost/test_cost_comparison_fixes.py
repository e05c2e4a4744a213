"""Problems a third audit of `relay cost` found in how it compares providers (MAU from a few minutes of usage,
self-hosting without failover against HA services, Ably packages missing limits or closed to new accounts, Pusher's
Enterprise ruled out by the listed plans' limits, impossible workloads, clusters that are mostly forwarding, missing
DigitalOcean sizes, float noise), each pinned by a figure worked out by hand from docs/cost.md and
/work/shared/reference/ably-and-pricing.md."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from cost_helpers import provider, refused, run_cost, run_cost_json, usage_day

from relay.cost import LimitCheck, Prices, Workload, crossovers, estimate, load_prices
from relay.cost.render import money, number
from relay.errors import ConfigError

BUNDLED = Path(__file__).resolve().parents[2] / "relay" / "cost" / "pricing.toml"
DOC = (Path(__file__).resolve().parents[2] / "docs" / "cost.md").read_text(encoding="utf-8")


def usage_file(tmp_path: Path, days: dict[str, dict[str, Any]], unique_users: int) -> Path:
    path = tmp_path / "usage.json"
    document = {"version": 2, "apps": {"chat": {"unique_users": unique_users, "days": days}}}
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


def whole_days(count: int) -> dict[str, dict[str, Any]]:
    """``count`` days from 2026-11-01, each measured in full: 6 peak connections (`usage_day`)."""
    return {f"2026-11-{day:02d}": {**usage_day(), "measured": [[0, 86_400]]} for day in range(1, count + 1)}


def flat(text: str) -> str:
    """The table's text with its wrapping undone."""
    return " ".join(text.split())


# --- A1. MAU from a usage file of less than a month is a lower bound, and always said ---------------------------------

# The audit's emulator run: 3 min 39 s (74,074 s to 74,293 s after midnight), 10 peak connections, 11 users signed in
# or in presence.
SHORT_RUN = {
    "2026-11-30": {
        "peak_connections": 10,
        "peak_channels": 3,
        "connection_minutes": 14,
        "channel_minutes": 8,
        "publishes": 155,
        "deliveries": 404,
        "client_events": 0,
        "client_event_deliveries": 0,
        "presence_events": 24,
        "presence_deliveries": 90,
        "webhooks": 0,
        "api_requests": 1,
        "payload_bytes": 23_107,
        "bytes_out": 166_564,
        "peak_publishes_per_second": 108,
        "units_5kib": 156,
        "units_2kib": 159,
        "delivered_units_5kib": 404,
        "measured": [[74_074, 74_293]],
    }
}


def test_users_seen_in_minutes_are_a_lower_bound_of_the_mau(tmp_path: Path) -> None:
    """11 users in 3 min 39 s are not a month's: the MAU is the larger of them and the default, 10 × 10 peak
    connections = 100 (the bug priced 11 MAU), and the assumptions say where it came from."""
    result = run_cost_json(["--usage", str(usage_file(tmp_path, SHORT_RUN, 11)), "--provider", "pubnub_mau"])
    pubnub = provider(result, "pubnub_mau")
    assert pubnub["units"]["mau"] == 100
    assert result["workload"]["mau"] is None
    assert (result["workload"]["users_seen"], result["workload"]["users_seen_seconds"]) == (11, 219)
    assert (
        "MAU 100: the larger of 10 × peak connections = 100 and the 11 users seen, a lower bound (the usage file "
        "measured 3 min 39 s, less than a month, and the meter sees only users who sign in or join presence); pass "
        "--mau"
    ) in pubnub["assumptions"]


def test_more_users_seen_than_the_default_are_the_mau_lower_bound(tmp_path: Path) -> None:
    """10 whole days, 6 peak connections, 500 users: the default (60) is below what was seen, so 500 (PubNub's
    Starter, 1,000 MAU, $98); with 20 users seen, the default 60 (PubNub's Free, 200 MAU)."""
    many = provider(run_cost_json(["--usage", str(usage_file(tmp_path, whole_days(10), 500))]), "pubnub_mau")
    assert (many["units"]["mau"], many["plan"], many["monthly_usd"]) == (500, "starter", 98.0)
    assert any(
        line.startswith(
            "MAU 500: the larger of 10 × peak connections = 60 and the 500 users seen, a lower "
            "bound (the usage file measured 10 days,"
        )
        for line in many["assumptions"]
    )
    few = provider(run_cost_json(["--usage", str(usage_file(tmp_path, whole_days(10), 20))]), "pubnub_mau")
    assert (few["units"]["mau"], few["plan"]) == (60, "free")


def test_users_seen_over_a_month_are_the_mau(tmp_path: Path) -> None:
    """30 whole days (the default --days-per-month) measured: the 500 users seen are the MAU, as measured."""
    result = run_cost_json(["--usage", str(usage_file(tmp_path, whole_days(30), 500)), "--provider", "pubnub_mau"])
    assert result["workload"]["mau"] == 500
    pubnub = provider(result, "pubnub_mau")
    assert pubnub["units"]["mau"] == 500
    assert (
        "MAU 500: the users seen over the 30 days the usage file measured (the meter sees only users who sign in or "
        "join presence); pass --mau if others connect"
    ) in pubnub["assumptions"]


def test_users_seen_over_more_than_a_month_are_said_to_be_an_upper_bound(tmp_path: Path) -> None:
    """45 whole days measured: the 800 users seen include some of only the first or the last weeks, more than one
    month has."""
    start = dt.date(2026, 10, 1)
    days = {
        (start + dt.timedelta(days=offset)).isoformat(): {**usage_day(), "measured": [[0, 86_400]]}
        for offset in range(45)
    }
    result = run_cost_json(["--usage", str(usage_file(tmp_path, days, 800)), "--provider", "pubnub_mau"])
    assert (
        "MAU 800: the users seen over the 45 days the usage file measured, more than a month: an upper bound of a "
        "month's users (the meter sees only users who sign in or join presence); pass --mau if others connect"
    ) in provider(result, "pubnub_mau")["assumptions"]


def test_a_given_mau_is_said_too() -> None:
    """Every MAU-priced provider says where its MAU came from, --mau included (nothing was said before)."""
    result = run_cost_json(["--connections", "50", "--mau", "700"])
    for provider_id in ("ably_mau_2025", "ably_mau_2026", "pubnub_mau"):
        assert "MAU 700 from --mau" in provider(result, provider_id)["assumptions"], provider_id


# --- A2. self-hosting: one node has no failover, and no figure includes the staff -------------------------------------

EDGE = ["--connections", "500", "--publishes-per-day", "20000", "--subscribers-per-publish", "49"]


def test_min_nodes_prices_a_standby_and_redis(prices: Prices) -> None:
    """Two Hetzner CX23 ($4.77 each) and one more for Redis: $14.31, where one node costs $4.77."""
    workload = Workload(connections=500, publishes_per_day=20_000, subscribers_per_publish=49, min_nodes=2)
    hetzner = estimate(workload, prices, providers={"hetzner"}).provider("hetzner")
    assert (hetzner.plan, hetzner.nodes, hetzner.monthly_usd) == ("cx23", 2, 14.31)
    assert hetzner.cost_lines == (("2 × CX23 2 vCPU / 4 GB", 9.54), ("Redis between nodes", 4.77))
    result = run_cost_json([*EDGE, "--min-nodes", "2", "--provider", "hetzner"])
    assert (provider(result, "hetzner")["nodes"], provider(result, "hetzner")["monthly_usd"]) == (2, 14.31)
    assert (
        "self-hosted figures are machines only, at least 2 nodes (--min-nodes), behind one Redis, itself not "
        "redundant; the time to run, patch and watch them (on call) is not priced, while a managed price includes it"
    ) in result["assumptions"]


def test_one_node_and_the_staff_left_out_are_said_in_assumptions_and_crossovers() -> None:
    result = run_cost_json([*EDGE, "--provider", "pusher", "--provider", "hetzner"])
    assert (
        "self-hosted figures are machines only, one node, with no failover: pass --min-nodes 2 for a standby; the "
        "time to run, patch and watch them (on call) is not priced, while a managed price includes it"
    ) in result["assumptions"]
    texts = [crossing["text"] for crossing in result["crossovers"]]
    assert (
        "self-hosting's machines (hetzner cx23, 1 node: no failover) cost less than Pusher Channels above 100 "
        "connections"
    ) in texts
    assert all(crossing["selfhosted_nodes"] == 1 for crossing in result["crossovers"])


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0", "workload field min_nodes (--min-nodes) must be at least 1, got 0"),
        ("1.5", "workload field min_nodes (--min-nodes) must be a whole number, got 1.5"),
    ],
)
def test_min_nodes_is_a_whole_number_from_1(value: str, message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert refused(["cost", *EDGE, "--min-nodes", value], capsys) == message


# --- A3. Ably's 2025 MAU model: the same packages as resource-based, Free and Enterprise included ---------------------


def test_ably_mau_2025_has_the_shared_packages_with_their_limits(prices: Prices) -> None:
    """Reference F.2: both 2025 models share the packages Free, Standard, Pro and Enterprise; A.13 gives their limits
    (messages per hour: 250,000, 5,208,000, 20,833,000; Enterprise unlimited)."""
    mau = {plan.id: plan for plan in prices.provider("ably_mau_2025").plans}
    legacy = {plan.id: plan for plan in prices.provider("ably_rb").plans}
    assert list(mau) == list(legacy) == ["free", "standard", "pro", "enterprise"]
    limits = ("connections", "channels", "messages_per_hour", "messages_per_second", "max_message_bytes")
    for plan_id, plan in mau.items():
        assert [getattr(plan, name) for name in limits] == [getattr(legacy[plan_id], name) for name in limits]
        assert plan.price_usd_month == legacy[plan_id].price_usd_month
    assert [mau[p].messages_per_hour for p in ("free", "standard", "pro")] == [250_000, 5_208_000, 20_833_000]
    assert mau["free"].messages_per_month == 6_000_000
    assert mau["enterprise"].price_status == "custom"


def test_a_workload_over_pros_messages_per_hour_fits_neither_ably_model() -> None:
    """5,184,000 publishes a day to 99 subscribers: 5,184,000 × 100 = 518.4 M messages a day, 6,000 a second (within
    Pro's 10,000) and 21.6 M an hour (over Pro's 20,833,000). The bug fitted it on Pro + MAU."""
    result = run_cost_json(
        ["--connections", "1000", "--publishes-per-day", "5184000", "--subscribers-per-publish", "99"]
    )
    assert provider(result, "ably_rb")["limit"] == (
        "messages/hour at peak 21,600,000 > 20,833,000 on Pro, the largest listed plan; Enterprise: custom price "
        "(contact sales)"
    )
    ably_mau = provider(result, "ably_mau_2025")
    assert (ably_mau["status"], ably_mau["limit"]) == (
        "does_not_fit",
        "messages/hour at peak 21,600,000 > 20,833,000 on Pro + MAU, the largest listed plan; Enterprise + MAU: "
        "custom price (contact sales)",
    )


def test_ably_mau_2025_free_fits_a_small_workload() -> None:
    """20 connections, 500 publishes a day to 3: 200 MAU (10 per connection) × $0.05 = $10, plus connection-minutes
    beyond fair use: 20 × 1,440 × 30 = 864,000 − 2,000 × 200 = 464,000 at $1/M = $0.46; Standard would add $29."""
    ably_mau = provider(
        run_cost_json(["--connections", "20", "--publishes-per-day", "500", "--subscribers-per-publish", "3"]),
        "ably_mau_2025",
    )
    assert (ably_mau["plan"], ably_mau["monthly_usd"]) == ("free", 10.46)
    assert ably_mau["confidence"] == "low"
    assert any(note.startswith("limits unverified") for note in ably_mau["assumptions"])


# --- A4. pricing models new customers cannot buy ----------------------------------------------------------------------

# 3,000 peak connections, 300 on average, 5,000 publishes a day to 10 subscribers on 10 channels:
# - Ably (resource-based) Standard: $29 + 1.65 M messages × $2.50/M ($4.125) + 12.96 M connection-minutes ($12.96)
#   + 432,000 channel-minutes ($0.432) = $46.52;
# - Supabase Pro: $25 + 3 packages of 1,000 connections beyond 500 ($30) = $55 (1.65 M messages within 5 M);
# - Pusher Business $299; PubNub pay as you go $67.95; the MAU models are dearer (30,000 MAU).
CLOSED_CHEAPER = [
    "--connections",
    "3000",
    "--average-connections",
    "300",
    "--publishes-per-day",
    "5000",
    "--subscribers-per-publish",
    "10",
    "--channels",
    "10",
]


def test_only_ably_s_older_models_are_closed_to_new_accounts(prices: Prices) -> None:
    assert {p.id for p in prices.providers if not p.new_accounts} == {"ably_rb", "ably_mau_2025"}


def test_the_cheapest_managed_option_is_one_a_new_customer_can_buy() -> None:
    out = flat(run_cost(CLOSED_CHEAPER))
    assert "Cheapest managed: Supabase Realtime Pro (spend cap off), $55.00/month" in out
    assert "Cheaper, but closed to new accounts: Ably (resource-based) Standard, $46.52/month" in out
    result = run_cost_json(CLOSED_CHEAPER)
    assert (provider(result, "ably_rb")["monthly_usd"], provider(result, "ably_rb")["new_accounts"]) == (46.52, False)
    assert provider(result, "supabase")["new_accounts"] is True
    assert (
        "closed to new accounts: Ably (resource-based), Ably (MAU, 2025 docs); the cheapest managed option and the "
        "crossovers against every managed option leave them out"
    ) in result["assumptions"]


def test_crossovers_against_every_managed_option_leave_closed_ones_out(prices: Prices) -> None:
    chosen = replace(prices, providers=tuple(p for p in prices.providers if p.id in ("ably_rb", "supabase", "hetzner")))
    found = crossovers(Workload(connections=3_000, publishes_per_day=5_000, subscribers_per_publish=10), chosen)
    names = {crossing.managed: crossing.managed_name for crossing in found}
    assert names["ably_rb"] == "Ably (resource-based) (existing accounts only)"
    assert names["*"] == "every managed option open to new accounts"
    every = next(crossing for crossing in found if crossing.managed == "*")
    supabase = next(crossing for crossing in found if crossing.managed == "supabase")
    assert (every.connections, every.direction) == (supabase.connections, supabase.direction)


def test_new_accounts_must_be_true_or_false(tmp_path: Path) -> None:
    path = tmp_path / "mine.toml"
    text = BUNDLED.read_text(encoding="utf-8")
    path.write_text(
        text.replace('unit_rules = "A_USAGE"\nnew_accounts = false', 'unit_rules = "A_USAGE"\nnew_accounts = "no"')
    )
    with pytest.raises(ConfigError, match=r"providers\.ably_rb: field 'new_accounts' must be true or false, got 'no'"):
        load_prices(path)


# --- A5. Pusher's Enterprise is custom, not ruled out by the listed plans' technical limits ---------------------------


@pytest.mark.parametrize(
    ("argv", "broken"),
    [
        (
            [
                "--connections",
                "50",
                "--publishes-per-day",
                "1000",
                "--subscribers-per-publish",
                "5",
                "--message-size",
                "12KB",
            ],
            "message size (bytes) 12,000 > 10,240",
        ),
        (
            ["--connections", "200", "--presence-events-per-day", "100", "--presence-subscribers", "150"],
            "presence members per channel 151 > 100",
        ),
    ],
    ids=["12 KB messages", "150 presence members"],
)
def test_pusher_enterprise_is_a_custom_price_beyond_the_listed_plans(argv: list[str], broken: str) -> None:
    pusher = provider(run_cost_json([*argv, "--provider", "pusher"]), "pusher")
    assert (pusher["status"], pusher["limit"]) == (
        "does_not_fit",
        f"{broken} on Growth Plus, the largest listed plan; Enterprise: custom price (contact sales)",
    )


# --- A6. impossible workloads are refused; scaling down caps the fan-out at the connections ---------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--connections", "10", "--publishes-per-day", "5", "--subscribers-per-publish", "5000"],
            "--subscribers-per-publish 5000 is more than the 10 that --connections 10 allows: a publish reaches at "
            "most every connection",
        ),
        (
            ["--connections", "10", "--presence-events-per-day", "5", "--presence-subscribers", "150"],
            "--presence-subscribers 150 is more than the 9 that --connections 10 allows: a join or leave is told at "
            "most to every connection but the member's",
        ),
        (
            ["--connections", "10", "--client-events-per-day", "5", "--client-event-recipients", "10"],
            "--client-event-recipients 10 is more than the 9 that --connections 10 allows: a client event reaches at "
            "most every connection but the sender's",
        ),
        (
            ["--connections", "10", "--channels", "0", "--publishes-per-day", "5"],
            "--channels 0 with --publishes-per-day 5: every publish, client event and presence change is on a "
            "channel, so at least one is active at the peak",
        ),
    ],
    ids=["subscribers", "presence subscribers", "client event recipients", "no channel"],
)
def test_an_impossible_described_workload_is_refused(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert refused(["cost", *argv], capsys) == message


def test_scaling_down_caps_the_fan_out_at_the_connections(prices: Prices) -> None:
    """0.01 × 500 connections is 5: a publish reaches at most those 5, not 49, so Pusher counts 200 × (1 + 5) =
    1,200 messages a day, and the workload says it was capped."""
    small = Workload(connections=500, publishes_per_day=20_000, subscribers_per_publish=49).scaled(0.01)
    assert (small.connections, small.subscribers_per_publish) == (5, 5.0)
    assert small.origin == "described, scaled ×0.01 (fan-out capped at the 5 connections)"
    assert estimate(small, prices, providers={"pusher"}).provider("pusher").unit("messages_per_day") == 1_200
    out = flat(run_cost([*EDGE, "--scale", "0.01", "--provider", "pusher"]))
    assert "workload: described by flags, scaled ×0.01 (fan-out capped at the 5 connections)" in out


def test_default_recipients_leave_out_the_sender() -> None:
    """A client event or a presence change reaches the others: with every one of 10 connections subscribed, 9."""
    workload = Workload(connections=10, subscribers_per_publish=10, client_events_per_day=1, presence_events_per_day=1)
    assert (workload.ce_recipients, workload.presence_audience) == (9, 9)


# --- A7. a cluster that would be mostly forwarding does not fit -------------------------------------------------------

MEDIUM_CHAT = [
    "--connections",
    "1500",
    "--publishes-per-day",
    "200000",
    "--subscribers-per-publish",
    "9",
    "--client-events-per-day",
    "50000",
    "--presence-events-per-day",
    "20000",
    "--webhooks-per-day",
    "5000",
    "--api-requests-per-day",
    "1000",
    "--message-size",
    "800",
    "--peak-factor",
    "5",
    "--peak-day-factor",
    "1.5",
    "--channels",
    "300",
]


def test_no_cluster_is_priced_that_mostly_forwards() -> None:
    """The audit's medium chat at ×298: (200,000 + 50,000 + 20,000) × 298 publishes, client events and presence
    changes a day, × 1.5 × 5 at the peak ÷ 86,400 = 6,984 a second, which every node of several receives (100 µs
    each): 0.698 cores, more than half of what any listed machine plans for (at most 1 core × 70%). One node would
    need 7,140 requests/s × 150 µs + 62,859 deliveries/s × 6 µs = 1.45 cores. The bug priced 927 Fly.io nodes, each
    all but full of forwarding."""
    result = run_cost_json([*MEDIUM_CHAT, "--scale", "298"])
    for entry in result["providers"]:
        if entry["kind"] == "selfhosted":
            assert entry["status"] == "does_not_fit", entry["provider"]
            assert "CPU cores at peak on one node 1.45 > " in entry["limit"]
            assert (
                "for forwarded publishes (with 2+ nodes; at most 50% of a node's usable CPU) 0.698 > " in entry["limit"]
            )


# --- A8. DigitalOcean's 4 GB and 8 GB droplets ------------------------------------------------------------------------


def test_digitalocean_lists_the_4gb_and_8gb_droplets(prices: Prices) -> None:
    plans = {plan.id: plan for plan in prices.provider("digitalocean").plans}
    assert (plans["basic-4gb-2vcpu"].price_usd_month, plans["basic-4gb-2vcpu"].memory_mb) == (24, 4096)
    assert (plans["basic-8gb-4vcpu"].price_usd_month, plans["basic-8gb-4vcpu"].memory_mb) == (48, 8192)


# --- A9. huge numbers without float noise -----------------------------------------------------------------------------


def test_huge_numbers_print_with_three_significant_digits() -> None:
    assert LimitCheck("messages/day", 1e36, 90_000_000).describe() == "messages/day 1.00e+36 > 90,000,000"
    assert LimitCheck("messages/day", 999_999_999_999_999, 1e15).describe() == (
        "messages/day 999,999,999,999,999 ≤ 1.00e+15"
    )
    assert (number(1e36), number(999_999_999_999_999), money(1e30), money(1234.5)) == (
        "1.00e+36",
        "999,999,999,999,999",
        "$1.00e+30",
        "$1,234.50",
    )
    huge = "1000000000000000000"
    pusher = provider(
        run_cost_json(
            [
                "--connections",
                huge,
                "--publishes-per-day",
                huge,
                "--subscribers-per-publish",
                huge,
                "--provider",
                "pusher",
            ]
        ),
        "pusher",
    )
    assert pusher["limit"] == (
        "connections 1.00e+18 > 30,000; messages/day (busiest UTC day) 1.00e+36 > 90,000,000 on Growth Plus, the "
        "largest listed plan; Enterprise: custom price (contact sales)"
    )
