"""Counting rules and plan choice, as worked examples at the boundaries (issue 8's test list; ably-and-pricing §F)."""

from __future__ import annotations

import math
from dataclasses import replace
from importlib import resources
from pathlib import Path

import pytest

from relay.cost import PlanFit, Prices, Workload, crossovers, estimate
from relay.cost.pricing import load_prices
from relay.cost.rules import ably_messages_per_day, pusher_messages_per_day, supabase_messages_per_day
from relay.errors import ConfigError

# 20,000 publishes × (1 + 49) = 1,000,000 Pusher messages a day, the example.
STARTUP_EDGE = Workload(connections=500, publishes_per_day=20_000, subscribers_per_publish=49)


def fit(prices: Prices, workload: Workload, provider: str, plan: str) -> PlanFit:
    result = estimate(workload, prices).provider(provider)
    return next(p for p in result.plans if p.plan == plan)


# --- Pusher ---------------------------------------------------------------------------------------------------------


def test_exactly_500_connections_and_a_million_messages_fit_pusher_startup(prices: Prices) -> None:
    pusher = estimate(STARTUP_EDGE, prices).provider("pusher")
    assert pusher.status == "fits"
    assert (pusher.plan, pusher.monthly_usd) == ("startup", 49.0)
    assert pusher.unit("messages_busiest_day") == 1_000_000
    assert pusher.headroom == 0.0
    assert pusher.limit == "connections 500 ≤ 500"


def test_one_connection_more_does_not_fit_startup(prices: Prices) -> None:
    result = estimate(replace(STARTUP_EDGE, connections=501), prices).provider("pusher")
    startup = next(p for p in result.plans if p.plan == "startup")
    assert startup.status == "does_not_fit"
    assert [c.describe() for c in startup.breaks] == ["connections 501 > 500"]
    assert (result.plan, result.monthly_usd) == ("pro", 99.0)


def test_one_message_more_does_not_fit_startup(prices: Prices) -> None:
    result = estimate(replace(STARTUP_EDGE, api_requests_per_day=1), prices).provider("pusher")
    startup = next(p for p in result.plans if p.plan == "startup")
    assert [c.describe() for c in startup.breaks] == ["messages/day (busiest UTC day) 1,000,001 > 1,000,000"]
    assert result.plan == "pro"


def test_pusher_daily_cap_is_checked_on_the_busiest_day(prices: Prices) -> None:
    busier = replace(STARTUP_EDGE, publishes_per_day=10_000, peak_day_factor=2.0)
    pusher = estimate(busier, prices).provider("pusher")
    assert pusher.unit("messages_per_day") == 500_000
    assert pusher.unit("messages_busiest_day") == 1_000_000
    assert pusher.plan == "startup"
    assert estimate(replace(busier, peak_day_factor=2.01), prices).provider("pusher").plan == "pro"


def test_one_publish_to_50_subscribers_is_51_pusher_messages() -> None:
    assert pusher_messages_per_day(Workload(connections=51, publishes_per_day=1, subscribers_per_publish=50)) == 51


def test_pusher_counts_client_events_presence_webhooks_and_api_calls() -> None:
    workload = Workload(
        connections=10,
        client_events_per_day=1,
        client_event_recipients=9,
        presence_events_per_day=2,
        presence_subscribers=4,
        webhooks_per_day=3,
        api_requests_per_day=5,
    )
    # client event: 1 sent + 9 delivered; presence: 2 × 4 member_added/removed deliveries; 3 webhooks; 5 API calls
    assert pusher_messages_per_day(workload) == 10 + 8 + 3 + 5


def test_pusher_beyond_the_largest_plan_names_the_limit_and_enterprise(prices: Prices) -> None:
    pusher = estimate(replace(STARTUP_EDGE, connections=30_001), prices).provider("pusher")
    assert pusher.status == "does_not_fit"
    assert pusher.plan is None and pusher.monthly_usd is None
    assert "connections 30,001 > 30,000 on Growth Plus, the largest listed plan" in pusher.limit
    assert "Enterprise: custom price (contact sales)" in pusher.limit


def test_pusher_message_and_presence_size_limits(prices: Prices) -> None:
    big = estimate(Workload(connections=1, publishes_per_day=1, message_bytes=10_241), prices).provider("pusher")
    assert big.status == "does_not_fit"
    assert "message size (bytes) 10,241 > 10,240" in big.limit
    crowd = Workload(connections=200, presence_events_per_day=10, presence_subscribers=100)
    assert "presence members per channel 101 > 100" in estimate(crowd, prices).provider("pusher").limit


# --- Ably -----------------------------------------------------------------------------------------------------------


def test_ably_counts_1_plus_10_plus_1_with_echo_on() -> None:
    client_event = Workload(connections=11, client_events_per_day=1, client_event_recipients=10)
    assert ably_messages_per_day(client_event) == 1 + 10 + 1
    assert ably_messages_per_day(replace(client_event, echo=False)) == 1 + 10


def test_ably_server_publishes_are_not_echoed() -> None:
    assert ably_messages_per_day(Workload(connections=11, publishes_per_day=1, subscribers_per_publish=10)) == 11


@pytest.mark.parametrize(
    ("size", "messages"),
    [(0, 1), (5 * 1024, 1), (5 * 1024 + 1, 2), (16 * 1024, 4), (50 * 1024, 10)],
)
def test_ably_bills_messages_in_5_kib_chunks(size: int, messages: int) -> None:
    """§F.2: ≤5 KiB = 1 message, 16 KiB = 4, 50 KiB = 10."""
    assert ably_messages_per_day(Workload(connections=1, publishes_per_day=1, message_bytes=size)) == messages


def test_ably_presence_is_one_inbound_plus_one_per_presence_subscriber() -> None:
    assert ably_messages_per_day(Workload(connections=5, presence_events_per_day=1, presence_subscribers=4)) == 5


def test_ably_free_tier_boundary_is_six_million_messages_a_month(prices: Prices) -> None:
    # 200,000 publishes a day with no subscribers = 6,000,000 messages in 30 days
    edge = Workload(connections=10, channels=10, publishes_per_day=200_000)
    assert estimate(edge, prices).provider("ably_rb").plan == "free"
    over = estimate(replace(edge, publishes_per_day=200_001), prices).provider("ably_rb")
    assert over.plan == "standard"
    free = next(p for p in over.plans if p.plan == "free")
    assert [c.name for c in free.breaks] == ["messages/month"]


def test_ably_standard_cost_is_base_plus_messages_and_minutes(prices: Prices) -> None:
    workload = Workload(
        connections=1_000,
        channels=100,
        publishes_per_day=100_000,
        subscribers_per_publish=9,
        connection_minutes_per_day=500 * 1440,
        channel_minutes_per_day=50 * 1440,
    )
    ably = estimate(workload, prices).provider("ably_rb")
    # 30 M messages × $2.50/M + 21.6 M connection-minutes × $1/M + 2.16 M channel-minutes × $1/M + $29
    assert ably.plan == "standard"
    assert ably.monthly_usd == pytest.approx(29 + 75 + 21.6 + 2.16)
    assert dict(ably.cost_lines)["messages"] == 75.0


def test_ably_mau_2026_is_unknown_not_guessed(prices: Prices) -> None:
    ably = estimate(STARTUP_EDGE, prices).provider("ably_mau_2026")
    assert ably.status == "unknown"
    assert ably.monthly_usd is None and ably.plan is None
    assert "prices or limits unknown for Free, Pro, Business" in ably.limit
    assert any("MAU not given" in line for line in ably.assumptions)


def test_ably_mau_2025_bills_mau_and_minutes_beyond_fair_use(prices: Prices) -> None:
    workload = replace(STARTUP_EDGE, mau=1_000)
    ably = estimate(workload, prices).provider("ably_mau_2025")
    # 21.6 M connection-minutes − 2,000 × 1,000 fair use = 19.6 M × $1/M; 30 M messages − 20 M fair use = 10 M × $2.5/M
    assert ably.monthly_usd == pytest.approx(29 + 50 + 19.6 + 25)


# --- Supabase and PubNub --------------------------------------------------------------------------------------------


def test_supabase_broadcast_to_4_listeners_is_1_plus_4() -> None:
    assert supabase_messages_per_day(Workload(connections=5, publishes_per_day=1, subscribers_per_publish=4)) == 5


@pytest.mark.parametrize(("connections", "packages"), [(500, 0), (501, 1), (1_500, 1), (1_501, 2)])
def test_supabase_pro_bills_peak_connections_in_packages_of_1000(
    prices: Prices, connections: int, packages: int
) -> None:
    supabase = estimate(Workload(connections=connections), prices).provider("supabase")
    assert supabase.plan == "pro"
    assert supabase.monthly_usd == 25 + 10 * packages


def test_supabase_free_breaks_on_connections_then_pro_caps_at_10000(prices: Prices) -> None:
    assert estimate(Workload(connections=200), prices).provider("supabase").plan == "free"
    assert estimate(Workload(connections=201), prices).provider("supabase").plan == "pro"
    over = estimate(Workload(connections=10_001), prices).provider("supabase")
    assert over.status == "does_not_fit"
    assert "connections 10,001 > 10,000" in over.limit


def test_pubnub_one_publish_to_100_subscribers_is_101_transactions(prices: Prices) -> None:
    pubnub = estimate(Workload(connections=101, publishes_per_day=1, subscribers_per_publish=100), prices)
    result = pubnub.provider("pubnub")
    assert result.unit("transactions_per_month") == 101 * 30
    assert result.plan == "free"


def test_pubnub_payg_has_a_monthly_minimum(prices: Prices) -> None:
    # 30,000 replicated ($3.69) + 1,200,000 edge transactions ($39.60): over Free's 1 M, under the $49 minimum
    workload = Workload(connections=41, publishes_per_day=1_000, subscribers_per_publish=40)
    pubnub = estimate(workload, prices).provider("pubnub")
    assert pubnub.plan == "payg"
    assert pubnub.monthly_usd == 49.0
    assert "monthly minimum top-up" in dict(pubnub.cost_lines)


# --- self-hosting ---------------------------------------------------------------------------------------------------


def test_selfhosted_nodes_grow_with_connections_and_add_redis(prices: Prices) -> None:
    small = prices.capacity
    per_node = int((512 * small.memory_usable - small.base_rss_mb) * 1024 / small.kb_per_connection)
    one = fit(prices, Workload(connections=per_node), "digitalocean", "basic-512mb-1vcpu")
    two = fit(prices, Workload(connections=per_node + 1), "digitalocean", "basic-512mb-1vcpu")
    assert (one.nodes, one.monthly_usd) == (1, 4.0)
    assert (two.nodes, two.monthly_usd) == (2, 2 * 4.0 + 6.0)
    assert dict(two.cost_lines)["Redis between nodes"] == 6.0
    # the provider's answer is its cheapest plan: one 1 GB droplet beats two 512 MB ones and Redis
    assert estimate(Workload(connections=per_node + 1), prices).provider("digitalocean").plan == "basic-1gb-1vcpu"


def test_selfhosted_cpu_bound_workload_needs_more_nodes(prices: Prices) -> None:
    # 1,000 publishes/s to 1,000 subscribers: 1,000 requests/s × 150 µs + 1,000,000 deliveries/s × 6 µs = 6.15 cores
    # at the peak; a CX23 plans for 0.5 × 70% = 0.35 cores, of which every publish forwarded through Redis takes
    # 1,000 × 100 µs = 0.1: 25 nodes, where memory alone would need one.
    busy = Workload(connections=2_000, publishes_per_day=1_000 * 86_400, subscribers_per_publish=1_000)
    cap, cx23 = prices.capacity, next(p for p in prices.provider("hetzner").plans if p.id == "cx23")
    cores = (1_000 * cap.cpu_us_per_request + 1_000_000 * cap.cpu_us_per_delivery) / 1e6
    usable = (cx23.cpu_cores or 0.0) * cap.cpu_usable - 1_000 * cap.cpu_us_per_forwarded_publish / 1e6
    hetzner = estimate(busy, prices).provider("hetzner")
    assert hetzner.plan == "cx23"
    assert hetzner.unit("peak_deliveries_per_second") == pytest.approx(1_000_000)
    assert hetzner.unit("cpu_cores_at_peak") == pytest.approx(cores)
    assert hetzner.unit("connections_per_node_capacity") >= busy.connections  # memory alone needs one node
    # Priced with more, for their transfer allowance (test_cost_egress_nodes.py), but the load needs 25
    assert math.ceil(cores / usable) == 25
    assert any(f"{hetzner.nodes} nodes where 25 carry the load" in line for line in hetzner.assumptions)
    assert hetzner.headroom is not None and hetzner.headroom >= 0


def test_selfhosted_publish_rate_beyond_what_a_node_can_forward_does_not_fit(prices: Prices) -> None:
    # every node receives every publish from Redis: 20,000 publishes/s × 100 µs = 2 cores, more than the 0.35 cores
    # any Hetzner plan plans for
    cap = prices.capacity
    largest = max(plan.cpu_cores or 0.0 for plan in prices.provider("hetzner").plans)
    assert 20_000 * cap.cpu_us_per_forwarded_publish / 1e6 > largest * cap.cpu_usable
    flood = Workload(connections=100, publishes_per_day=20_000 * 86_400, subscribers_per_publish=1)
    hetzner = estimate(flood, prices).provider("hetzner")
    assert hetzner.status == "does_not_fit"
    assert "CPU cores per node at peak" in hetzner.limit


def test_render_free_sleeps_and_is_never_chosen(prices: Prices) -> None:
    render = estimate(Workload(connections=1), prices).provider("render")
    assert render.plan == "starter"
    free = next(p for p in render.plans if p.plan == "free")
    assert free.status == "unsuitable"
    assert "spins down" in free.reason


def test_railway_bills_usage_beyond_the_plan_credit(prices: Prices) -> None:
    idle = estimate(Workload(connections=10), prices).provider("railway")
    assert idle.plan == "free"  # a tiny idle process stays inside Free's $1 credit
    assert idle.monthly_usd == 0.0
    bigger = estimate(Workload(connections=20_000), prices).provider("railway")
    free = next(p for p in bigger.plans if p.plan == "free")
    assert free.status == "does_not_fit"
    assert [c.name for c in free.breaks][-1] == "usage $ within the plan's credit"
    assert bigger.plan == "hobby"
    assert bigger.monthly_usd is not None and bigger.monthly_usd >= 5.0


def test_selfhosted_egress_beyond_the_allowance_is_billed(prices: Prices) -> None:
    # 1 GiB/s out for a month is far beyond one droplet's 500 GiB
    heavy = Workload(connections=1_000, bytes_out_per_day=2**30 * 86_400 / 1000)
    lines = dict(estimate(heavy, prices).provider("flyio").cost_lines)
    assert any(label.startswith("egress beyond the allowance") for label in lines)


# 150,000 publishes a day to 1,000 subscribers, 300 bytes: 1.5e8 deliveries × 450 bytes × 30 days = 1,885.9 GiB a month.
EGRESS_HEAVY = Workload(connections=1_000, publishes_per_day=150_000, subscribers_per_publish=1_000, message_bytes=300)


def test_an_account_allowance_is_counted_once_however_many_nodes(prices: Prices) -> None:
    """Render's 100 GB (93.1 GiB) is the workspace's monthly allowance: three instances have it once, so they cost two
    instances and Redis more than one, never less (it was counted per instance, and three came out cheaper)."""
    one = fit(prices, EGRESS_HEAVY, "render", "starter")
    three = fit(prices, replace(EGRESS_HEAVY, min_nodes=3), "render", "starter")
    egress = 150_000 * 1_000 * 450 * 30 / 2**30
    assert dict(one.cost_lines)["egress beyond the allowance (1,793 GiB)"] == round((egress - 93.1) * 0.161, 2)
    assert dict(three.cost_lines)["egress beyond the allowance (1,793 GiB)"] == round((egress - 93.1) * 0.161, 2)
    assert three.monthly_usd == pytest.approx((one.monthly_usd or 0.0) + 2 * 7 + 10)


def test_a_node_allowance_is_each_nodes(prices: Prices) -> None:
    """DigitalOcean pools its droplets' allowances, each adding its own, the Redis droplet's (1,000 GiB) too: five
    512 MB droplets (each $4 for $5 of egress, so the cheapest count: test_cost_egress_nodes.py) and Redis leave
    3,771.7 − 5 × 500 − 1,000 GiB to pay for."""
    heavier = replace(EGRESS_HEAVY, min_nodes=2, publishes_per_day=300_000)
    five = fit(prices, heavier, "digitalocean", "basic-512mb-1vcpu")
    assert five.nodes == 5
    assert dict(five.cost_lines)["egress beyond the allowance (272 GiB)"] == round(
        (300_000 * 1_000 * 450 * 30 / 2**30 - 3_500) * 0.01, 2
    )


# --- purity, scale, crossovers --------------------------------------------------------------------------------------


def test_estimate_is_pure(prices: Prices) -> None:
    first = estimate(STARTUP_EDGE, prices)
    second = estimate(STARTUP_EDGE, prices)
    assert first == second
    unchanged = Workload(connections=500, publishes_per_day=20_000, subscribers_per_publish=49)
    assert unchanged == STARTUP_EDGE


def test_scale_multiplies_users_and_keeps_fan_out() -> None:
    scaled = STARTUP_EDGE.scaled(10)
    assert (scaled.connections, scaled.publishes_per_day, scaled.subscribers_per_publish) == (5_000, 200_000, 49)
    assert STARTUP_EDGE.scaled(0.1).connections == 50
    assert STARTUP_EDGE.scaled(1) == STARTUP_EDGE
    with pytest.raises(ConfigError, match=r"scale \(--scale\) must be a number > 0"):
        STARTUP_EDGE.scaled(0)


def test_self_hosting_is_cheaper_than_pusher_above_100_connections(prices: Prices) -> None:
    found = {c.managed: c for c in crossovers(STARTUP_EDGE, prices)}
    pusher = found["pusher"]
    assert pusher.direction == "above"
    assert pusher.connections == 100  # the Sandbox's last connection; Startup costs $49 from 101
    assert pusher.managed_usd == 49.0
    assert pusher.selfhosted_usd is not None and pusher.selfhosted_usd < 49.0
    assert (
        found["*"].describe().endswith("cost less than every managed option open to new accounts above 100 connections")
    )


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("connections", -1, r"workload field connections \(--connections\) must be a finite number ≥ 0, got -1"),
        ("connections", 1.5, r"connections \(--connections\) must be a whole number, got 1.5"),
        ("publishes_per_day", float("nan"), r"publishes_per_day \(--publishes-per-day\) must be a finite number"),
        ("subscribers_per_publish", "many", r"subscribers_per_publish .* must be a number, got 'many'"),
        ("days_per_month", 40, r"days_per_month \(--days-per-month\) must be 1–31, got 40"),
        ("peak_factor", 0.5, r"peak_factor \(--peak-factor\) must be ≥ 1"),
        ("size_units_5kib", 0.5, r"size_units_5kib must be ≥ 1"),
        ("echo", True, None),
    ],
)
def test_invalid_workloads_name_the_field_and_flag(field: str, value: object, message: str | None) -> None:
    if message is None:
        Workload(connections=1, **{field: value})  # type: ignore[arg-type]
        return
    arguments = {"connections": 1, field: value}
    with pytest.raises(ConfigError, match=message):
        Workload(**arguments)  # type: ignore[arg-type]


def test_ablys_http_api_requests_per_hour_are_checked_at_the_busiest_hour(prices: Prices) -> None:
    """ably-and-pricing §A.13: Free takes 25,000 HTTP API requests an hour, Standard 521,000. 150,000 publishes a day
    with a peak factor of 10 are 62,500 REST requests in the busiest hour (each server publish is one): Free fitted on
    its monthly messages (4.5 M ≤ 6 M) although Ably would refuse most of that hour's publishes."""
    workload = Workload(connections=10, publishes_per_day=150_000, peak_factor=10)
    ably = estimate(workload, prices, providers={"ably_rb", "ably_mau_2025"})
    for provider_id in ("ably_rb", "ably_mau_2025"):
        result = ably.provider(provider_id)
        assert result.plan == "standard", (provider_id, result.limit)
        assert result.limit.startswith("HTTP API requests/hour at peak 62,500 ≤ 521,000"), result.limit
    quiet = estimate(replace(workload, peak_factor=1), prices, providers={"ably_rb"}).provider("ably_rb")
    assert quiet.plan == "free"  # 6,250 an hour


def test_ablys_http_api_requests_per_second_are_checked_at_the_peak_second(prices: Prices) -> None:
    """ably-and-pricing §A.13: the HTTP API takes 50 requests a second on Free, 362 on Standard, 1,447 on Pro (the
    rate beside each hourly figure). 4,320 publishes and 4,320 other API calls a day with a peak factor of 600 are 60
    requests in the peak second but only 8,640 in the busiest hour (within Free's 25,000): Free fitted although Ably
    would refuse a sixth of that second's requests (429). At a peak factor of 500, 50 a second, Free still fits."""
    for provider_id in ("ably_rb", "ably_mau_2025"):
        plans = {plan.id: plan for plan in prices.provider(provider_id).plans}
        assert [plans[p].api_requests_per_second for p in ("free", "standard", "pro", "enterprise")] == [
            50,
            362,
            1_447,
            None,  # custom: a contract's
        ]
    workload = Workload(connections=10, publishes_per_day=4_320, api_requests_per_day=4_320, peak_factor=600)
    ably = estimate(workload, prices, providers={"ably_rb", "ably_mau_2025"})
    for provider_id in ("ably_rb", "ably_mau_2025"):
        result = ably.provider(provider_id)
        free = next(fit for fit in result.plans if fit.plan == "free")
        assert free.status == "does_not_fit", provider_id
        assert [check.describe() for check in free.breaks] == ["HTTP API requests/s at peak 60 > 50"]
        assert result.plan == "standard", (provider_id, result.limit)
    at_the_limit = estimate(replace(workload, peak_factor=500), prices, providers={"ably_rb"}).provider("ably_rb")
    assert at_the_limit.plan == "free"
    assert at_the_limit.limit.startswith("HTTP API requests/s at peak 50 ≤ 50"), at_the_limit.limit


def test_digitaloceans_pool_takes_the_redis_droplets_transfer_allowance_too(prices: Prices) -> None:
    """The pricing notes: "transfer allowances are pooled across a team's droplets". The Redis droplet of a
    two-node setup (a basic-1gb, 1,000 GiB) is one of them, but added nothing: every multi-node answer with egress past
    the allowance was $10 a month too high. One node has no Redis droplet, so nothing more."""
    workload = Workload(
        connections=1000, publishes_per_day=2e7, subscribers_per_publish=100, message_bytes=300, min_nodes=2
    )
    result = estimate(workload, prices, providers={"digitalocean"}).provider("digitalocean")
    provider = prices.provider("digitalocean")
    plan = {plan.id: plan for plan in provider.plans}[result.plan]
    egress = dict(result.units)["egress_gib_per_month"]
    allowance = (plan.included_egress_gib or 0.0) * result.nodes + provider.redis_included_egress_gib
    # 25,145.5 GiB: 24 one-GB droplets ($6 for 1,000 GiB each) and Redis leave 145.5 GiB: $144 + $6 + $1.46
    assert (result.plan, result.nodes, provider.redis_included_egress_gib) == ("basic-1gb-1vcpu", 24, 1000)
    expected = (plan.price_usd_month or 0.0) * 24 + provider.redis_usd_month + (egress - allowance) * 0.01
    assert result.monthly_usd == pytest.approx(expected, abs=0.005)
    assert result.monthly_usd == pytest.approx(151.46, abs=0.005)


def test_flyios_prices_are_for_30_days_so_a_31_day_month_costs_31_thirtieths(prices: Prices, tmp_path: Path) -> None:
    """Fly.io bills by the second and lists its prices per 30 days (ably-and-pricing F.4): --days-per-month 31 left
    the machine at $2.19, 3 % low. Providers billing a calendar month (Hetzner) cost the same either way. A pricing
    file's price_days outside 1–31 is refused naming the field."""
    workload = Workload(connections=100, min_nodes=2)
    thirty = estimate(workload, prices, providers={"flyio", "hetzner"})
    long_month = estimate(replace(workload, days_per_month=31), prices, providers={"flyio", "hetzner"})
    fly = long_month.provider("flyio")
    assert dict(fly.cost_lines) == {
        "2 × shared-cpu-1x 256 MB": round(2 * 2.19 * 31 / 30, 2),
        "Redis between nodes": round(2.19 * 31 / 30, 2),
    }
    assert thirty.provider("flyio").monthly_usd == pytest.approx(3 * 2.19)
    assert long_month.provider("hetzner").monthly_usd == thirty.provider("hetzner").monthly_usd
    bundled = resources.files("relay.cost").joinpath("pricing.toml").read_text(encoding="utf-8")
    assert bundled.count("price_days = 30\n") == 2  # Fly.io's machines and Railway's usage rates
    path = tmp_path / "pricing.toml"
    path.write_text(bundled.replace("price_days = 30\n", "price_days = 365\n"))
    with pytest.raises(ConfigError, match=r"providers\.flyio: field 'price_days' must be the days a listed price"):
        load_prices(path)
    path.write_text(bundled.replace("[providers.pusher]\n", "[providers.pusher]\nprice_days = 30\n", 1))
    with pytest.raises(ConfigError, match=r"providers\.pusher: field 'price_days' is for providers priced by machine"):
        load_prices(path)
