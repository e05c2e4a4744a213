"""The pricing data: the bundled file is complete and dated; invalid files fail naming the entry and the field."""

from __future__ import annotations

import json
import math
import re
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from bench import report
from relay.cost import Prices, default_prices, load_prices, parse_prices
from relay.errors import ConfigError

BUNDLED = resources.files("relay.cost").joinpath("pricing.toml")
REPO = Path(__file__).resolve().parents[2]


def bundled() -> dict[str, Any]:
    return tomllib.loads(BUNDLED.read_text(encoding="utf-8"))


def test_bundled_pricing_has_every_provider_the_issue_names(prices: Prices) -> None:
    ids = {p.id for p in prices.providers}
    assert {"pusher", "ably_rb", "ably_mau_2026", "supabase", "pubnub"} <= ids
    assert {"digitalocean", "hetzner", "render", "railway", "flyio"} <= ids
    assert [p.id for p in prices.provider("pusher").plans][:3] == ["sandbox", "startup", "pro"]
    assert prices.version and prices.as_of == "2026-11-28"
    assert prices.origin == "built-in pricing.toml"


def test_every_plan_is_dated_sourced_and_rated(prices: Prices) -> None:
    for provider in prices.providers:
        assert provider.source and provider.as_of and provider.confidence, provider.id
        for plan in provider.plans:
            assert plan.as_of and plan.source, f"{provider.id}.{plan.id}"
            assert plan.confidence in ("high", "medium", "low", "unknown"), f"{provider.id}.{plan.id}"


def test_pusher_startup_matches_the_reference_table(prices: Prices) -> None:
    startup = next(p for p in prices.provider("pusher").plans if p.id == "startup")
    assert (startup.price_usd_month, startup.connections, startup.messages_per_day) == (49, 500, 1_000_000)
    assert startup.max_message_bytes == 10_240


def test_ably_mau_2026_prices_are_marked_unknown(prices: Prices) -> None:
    plans = prices.provider("ably_mau_2026").plans
    assert [(p.id, p.price_status) for p in plans] == [
        ("free", "unknown"),
        ("pro", "unknown"),
        ("business", "unknown"),
        ("enterprise", "custom"),
    ]
    assert all(p.price_usd_month is None and "mau" in p.unknown for p in plans)
    assert prices.provider("ably_mau_2026").confidence == "unknown"


# What the emulator's own benchmark measured, and the capacity figure each measurement bounds from below:
# (scenario, field of the run's JSON lines, unit, factor from the field's unit, capacity field).
BENCH_FIGURES = (
    ("idle10k", "server_rss_per_conn_kb", "KB", 1, "kb_per_connection"),
    ("idle10k", "server_rss_before_kb", "MB", 1 / 1024, "base_rss_mb"),
    ("fanout1000", "server_cpu_us_per_delivery", "µs", 1, "cpu_us_per_delivery"),
    ("fanout5000", "server_cpu_us_per_delivery", "µs", 1, "cpu_us_per_delivery"),
    ("channels", "server_cpu_us_per_publish", "µs", 1, "cpu_us_per_request"),
)


def test_selfhosted_capacity_comes_from_relays_own_benchmark_with_medium_confidence(prices: Prices) -> None:
    capacity = prices.capacity
    assert (capacity.confidence, capacity.as_of) == ("medium", "2026-11-29")
    assert "docs/performance.md" in capacity.source and "`python bench/run.py --runs 3`" in capacity.source
    assert "2-vCPU" in capacity.hardware and "pinned to one core" in capacity.hardware
    # each run named in the source is quoted in the text between its name and the next run's
    named = list(re.finditer(r"bench/results/\S+?\.jsonl", capacity.source))
    assert named, "the source names the benchmark runs' raw data"
    assert len({m.group() for m in named}) == len(named), "each run is named once"
    ends = [m.start() for m in named[1:]] + [len(capacity.source)]
    for run_file, end in zip(named, ends, strict=True):
        quoted = capacity.source[run_file.end() : end]
        rows = [json.loads(line) for line in (REPO / run_file.group()).read_text().splitlines() if line]
        run = report.Results(rows)
        for scenario, field, unit, factor, planned in BENCH_FIGURES:
            where = (run_file.group(), scenario, field)
            median = run.median("relay", scenario, field)
            assert median is not None, where
            median *= factor
            slowest = max(report.get(row, field) for row in run.cell("relay", scenario)) * factor
            # the source quotes the median and the slowest run; the planning figure is at least the slowest run
            assert f"{report.num(median)} {unit}" in quoted, where
            assert f"({report.num(slowest)})" in quoted, where
            assert getattr(capacity, planned) >= slowest, (*where, planned, slowest)


def test_unlimited_limits_are_infinite(prices: Prices) -> None:
    enterprise = next(p for p in prices.provider("ably_rb").plans if p.id == "enterprise")
    assert enterprise.connections == math.inf
    assert enterprise.price_status == "custom"


def test_a_users_file_loads_from_a_path(tmp_path: Path, prices: Prices) -> None:
    path = tmp_path / "mine.toml"
    path.write_text(BUNDLED.read_text(encoding="utf-8").replace(f'version = "{prices.version}"', 'version = "mine-1"'))
    prices = load_prices(path)
    assert prices.version == "mine-1"
    assert prices.origin == str(path)


def invalid(data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as error:
        parse_prices(data, origin="mine.toml")
    return error.value.message


def test_a_bad_limit_names_the_plan_and_field() -> None:
    data = bundled()
    data["providers"]["pusher"]["plans"][1]["connections"] = -5
    message = invalid(data)
    assert message.startswith("pricing file mine.toml is invalid:")
    assert (
        "providers.pusher.plans[1] (startup): field 'connections' must be a number ≥ 0, "
        '"unlimited" or "unknown", got -5'
    ) in message


def test_every_problem_is_reported_at_once() -> None:
    data = bundled()
    data["providers"]["pusher"]["plans"][0]["price_usd_month"] = True
    data["providers"]["ably_rb"]["unit_rules"] = "A_COUNTS"
    data["providers"]["supabase"]["plans"][1]["prise"] = 25
    data["providers"]["hetzner"]["confidence"] = "sure"
    del data["providers"]["pubnub_mau"]["plans"][0]["mau"]
    message = invalid(data)
    assert "providers.pusher.plans[0] (sandbox): field 'price_usd_month' must be a number ≥ 0" in message
    assert "providers.ably_rb: field 'unit_rules' must be one of P_COUNT, A_USAGE" in message
    assert "got 'A_COUNTS'" in message
    assert "providers.supabase.plans[1] (pro): unknown field 'prise' (did you mean 'price_usd_month'?)" in message
    assert "providers.hetzner: field 'confidence' must be one of high, medium, low, unknown, got 'sure'" in message
    assert "providers.pubnub_mau.plans[0] (free): missing required field 'mau' (needed by unit_rules N_MAU)" in message


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda d: d.pop("schema"), "field 'schema' must be 1, got None"),
        (lambda d: d["capacity"].pop("kb_per_connection"), "capacity: missing required field 'kb_per_connection'"),
        (lambda d: d["capacity"].update(cpu_usable=1.5), "capacity: field 'cpu_usable' must be a fraction in (0, 1]"),
        (lambda d: d["model"].update(extra=1), "model: unknown field 'extra'"),
        (lambda d: d["providers"]["render"].update(kind="cloud"), "providers.render: field 'kind' must be one of"),
        (
            lambda d: d["providers"]["render"].update(unit_rules="P_COUNT"),
            "providers.render: unit_rules 'P_COUNT' is for managed providers, but kind is 'selfhosted'",
        ),
        (
            lambda d: d["providers"]["pusher"]["plans"][2].update(id="startup"),
            "providers.pusher.plans[2] (startup): duplicate plan id 'startup'",
        ),
        (
            lambda d: d["providers"]["flyio"]["plans"][0].update(price_usd_month="custom"),
            "providers.flyio.plans[0] (shared-1x-256mb): a self-hosted plan needs a listed price_usd_month",
        ),
        (
            lambda d: d["providers"]["render"]["plans"][0].pop("unsuitable_reason"),
            "providers.render.plans[0] (free): a plan with suitable = false needs an 'unsuitable_reason'",
        ),
        (
            lambda d: d["providers"]["ably_rb"]["plans"][1].update(as_of="last week"),
            "providers.ably_rb.plans[1] (standard): field 'as_of' must be a date YYYY-MM-DD",
        ),
        (
            lambda d: d["providers"]["supabase"]["plans"][1].pop("usd_per_million_messages"),
            "providers.supabase.plans[1] (pro): needs one of the fields 'messages_per_month', "
            "'usd_per_million_messages'",
        ),
        (
            lambda d: d["providers"]["digitalocean"]["plans"][0].update(memory_mb="unlimited"),
            "providers.digitalocean.plans[0] (basic-512mb-1vcpu): field 'memory_mb' must be a number ≥ 0, "
            "got 'unlimited'",
        ),
        (
            lambda d: d["providers"]["render"]["plan_defaults"].pop("included_egress_per"),
            "providers.render.plans[1] (starter): field 'included_egress_gib' needs 'included_egress_per': 'node' "
            "(each machine has the allowance) or 'account' (one allowance for the account or workspace, however many "
            "machines)",
        ),
        (
            lambda d: d["providers"]["hetzner"]["plans"][0].update(included_egress_per="server"),
            "providers.hetzner.plans[0] (cx23): field 'included_egress_per' must be one of node, account, got 'server'",
        ),
        (lambda d: d["providers"]["pusher"].update(plans=[]), "providers.pusher: field 'plans' must be a non-empty"),
        (lambda d: d.update(providers={}), "providers: no providers defined"),
    ],
)
def test_invalid_pricing_entries(change: Any, expected: str) -> None:
    data = bundled()
    change(data)
    assert expected in invalid(data)


def test_each_allowance_says_whose_it_is(prices: Prices) -> None:
    """ably-and-pricing F.4 and the providers' notes: Hetzner's traffic is each server's, DigitalOcean pools each
    droplet's, Render's bandwidth is the workspace's; Fly.io includes none."""
    scopes = {
        p.id: {(plan.included_egress_gib, plan.included_egress_per) for plan in p.plans}
        for p in prices.providers
        if p.unit_rules == "H_VM"
    }
    assert scopes["hetzner"] == {(18_626, "node")}
    assert {scope for _, scope in scopes["digitalocean"]} == {"node"}
    assert scopes["render"] == {(93.1, "account")}
    assert {allowance for allowance, _ in scopes["flyio"]} == {0}


def test_invalid_toml_and_missing_files_are_config_errors(tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("[providers.pusher\nname = 1\n")
    with pytest.raises(ConfigError, match=r"pricing file .*broken.toml is not valid TOML: .*line 1"):
        load_prices(broken)
    with pytest.raises(ConfigError, match=r"pricing file .*absent.toml does not exist"):
        load_prices(tmp_path / "absent.toml")


def test_default_prices_reads_the_packaged_file() -> None:
    assert default_prices() == parse_prices(bundled(), origin="built-in pricing.toml")
