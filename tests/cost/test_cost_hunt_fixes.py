"""Bugs a hunt found in `relay cost`, each pinned by a figure or message computed by hand from the reference pricing
(shared/reference/ably-and-pricing.md, relay/cost/pricing.toml) and the counting rules of docs/cost.md."""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import replace
from importlib import resources
from pathlib import Path

import pytest
from cost_helpers import cost_parser, provider, refused, run_cost, run_cost_json, usage_day

from relay.cli import main
from relay.cost import Prices, Workload, crossovers, estimate, geometric_scales, parse_usage, workload_from_usage
from relay.cost.render import range_sentence

BUNDLED = resources.files("relay.cost").joinpath("pricing.toml").read_text(encoding="utf-8")


def pricing_file(tmp_path: Path, section: str, old: str, new: str) -> Path:
    """The bundled pricing data with ``old`` replaced by ``new``, once, among the tables of provider ``section``."""
    headers = [m for m in re.finditer(r"^\[\[?providers\.([\w.-]+?)[\].]", BUNDLED, re.MULTILINE)]
    ours = [i for i, m in enumerate(headers) if m.group(1) == section]
    start = headers[ours[0]].start()
    end = headers[ours[-1] + 1].start() if ours[-1] + 1 < len(headers) else len(BUNDLED)
    chunk = BUNDLED[start:end]
    assert chunk.count(old) == 1, (section, old)
    path = tmp_path / f"{section}.toml"
    path.write_text(BUNDLED[:start] + chunk.replace(old, new) + BUNDLED[end:], encoding="utf-8")
    return path


def usage_file(tmp_path: Path, apps: dict[str, dict[str, int]]) -> Path:
    """A usage file with one day, 2026-11-29, per app."""
    document = {"version": 1, "apps": {app: {"days": {"2026-11-29": day}} for app, day in apps.items()}}
    path = tmp_path / "usage.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


# --- 1. self-hosted nodes: memory forces several, and each of several pays the forwarding ----------------------------


def test_a_memory_bound_node_count_also_pays_the_forwarding(prices: Prices) -> None:
    """300,000 connections, 3,000 publishes a second (to no one), on Fly.io's performance-1x 2 GB ($33.00):

    - connections per node: (2,048 MB × 70% − 60 MB) × 1,024 ÷ 10 KB = 140,656, so memory needs ceil(300,000 ÷
      140,656) = 3 nodes;
    - the work at the peak: 3,000 requests/s × 150 µs = 0.45 cores, within one node's 1 × 70% = 0.7, but with 2+ nodes
      every node also receives every publish: 3,000 × 100 µs = 0.3 cores (within half of the 0.7);
    - nodes = max(3, ceil(0.45 ÷ (0.7 − 0.3)) = 2) = 3, each at 0.45 ÷ 3 + 0.3 = 0.45 ≤ 0.7;
    - $/month = 3 × $33.00 + $2.19 for Redis (one more shared-1x-256mb) = $101.19.

    The shared-CPU machines plan for 1/16 or 1/8 of a core × 70%: the forwarding alone is more than half of it.
    """
    result = run_cost_json(["--connections", "300000", "--publishes-per-second", "3000", "--provider", "flyio"])
    flyio = provider(result, "flyio")
    assert (flyio["status"], flyio["plan"], flyio["nodes"], flyio["monthly_usd"]) == (
        "fits",
        "performance-1x-2gb",
        3,
        101.19,
    )
    assert flyio["cost_breakdown"] == [
        {"item": "3 × performance-1x 2 GB", "usd": 99.0},
        {"item": "Redis between nodes", "usd": 2.19},
    ]
    performance = next(p for p in flyio["plans"] if p["plan"] == "performance-1x-2gb")
    assert {"limit": "CPU cores per node at peak", "used": 0.45, "max": 0.7, "ok": True} in performance["checks"]
    assert {"limit": "connections per node", "used": 100_000.0, "max": 140_656.0, "ok": True} in performance["checks"]


def test_forwarding_over_half_a_node_rules_the_cluster_out(prices: Prices) -> None:
    """200,000 connections and 4,500 publishes a second on the same machine: memory needs 2 nodes, and each would
    receive 4,500 × 100 µs = 0.45 cores of forwarded publishes, more than half of its 0.7: the node count would hinge
    on the forwarding estimate, so Relay plans no such cluster (it once priced 3 nodes, each 64% forwarding)."""
    result = run_cost_json(["--connections", "200000", "--publishes-per-second", "4500", "--provider", "flyio"])
    flyio = provider(result, "flyio")
    assert (flyio["status"], flyio["plan"], flyio["monthly_usd"]) == ("does_not_fit", None, None)
    assert flyio["limit"] == (
        "connections on one node 200,000 > 140,656; CPU cores per node at peak for forwarded publishes (with 2+ "
        "nodes; at most 50% of a node's usable CPU) 0.45 > 0.35 on performance-1x 2 GB, the largest listed plan"
    )


def test_the_node_count_is_the_least_that_fits_so_no_crossover_flip_flops() -> None:
    """The same workload against Pusher, which fits nowhere (200,000 connections > Growth Plus's 30,000): with the
    node count fixed, Fly.io fits from 0.01× up to where one node holds the connections (140,656, at 0.70×) and, with
    several, up to where forwarding passes half of a node's CPU (3,500 publishes a second, at 0.78×), and nothing
    fits beyond. The bug reported self-hosting as "no longer cheaper"
    above 177,778 connections, "cheaper" again above 207,408 and "no longer cheaper" above 311,112, where in truth
    self-hosting never stops being the only option that fits until nothing does: no crossover at all."""
    argv = ["--connections", "200000", "--publishes-per-second", "4500", "--provider", "flyio", "--provider", "pusher"]
    result = run_cost_json(argv)
    assert result["crossovers"] == []
    out = run_cost(argv)
    assert "Crossover:" not in out


# --- 2. "no crossover": judged over the range, not at ×1 --------------------------------------------------------------

SMALL = ["--connections", "50", "--publishes-per-day", "1000", "--subscribers-per-publish", "10"]


def test_no_crossover_says_which_side_is_cheapest_across_the_range_not_at_x1() -> None:
    """50 connections, 1,000 publishes a day to 10 subscribers. At ×1 a managed option and self-hosting both cost $0
    (Pusher Sandbox, Railway Free), but from 10× on, 500 connections or more, every managed free tier is outgrown
    (Pusher Sandbox 100 connections, Ably Free and Supabase Free 200, PubNub Free 1 M transactions against
    11,000 × 10 × 30 = 3.3 M, PubNub MAU Free 200 MAU) and the cheapest paid one, Supabase Pro, costs at least $25,
    while one Hetzner CX23 ($4.77) holds up to 287,457 connections, with egress (at 100×: 1 M deliveries × 1,174
    bytes × 30 = 32.8 GiB) far inside its 18,626 GiB. So over 10×–100× self-hosting is the cheapest throughout; the
    bug said "a managed option", from the tie at ×1."""
    out = run_cost([*SMALL, "--plot-range", "10:100"])
    assert "No crossover from 10× to 100× this workload: self-hosting is the cheapest throughout" in out


def test_no_crossover_says_so_honestly_when_both_sides_cost_the_same() -> None:
    """The same workload from 0.01× to 1×: both sides' cheapest options are free at every scale (Pusher Sandbox up to
    100 connections and 200,000 messages a day; Railway Free within its $1 credit), so neither is cheaper."""
    out = run_cost([*SMALL, "--plot-range", "0.01:1"])
    assert (
        "No crossover from 0.01× to 1× this workload: self-hosting and the cheapest managed option cost the same "
        "throughout"
    ) in out


def test_the_no_crossover_sentence_names_each_stretch_of_the_range() -> None:
    """When the sides change without a crossover (a tie, or nothing fitting), each stretch is named with its scales."""
    sentence = range_sentence((1.0, 4.0), [(1.0, "managed"), (2.0, "same"), (4.0, "same")])
    assert sentence == (
        "No crossover from 1× to 4× this workload: a managed option is the cheapest at 1×; self-hosting and the "
        "cheapest managed option cost the same from 2× to 4× (scale the workload with --scale, or widen --plot-range)"
    )
    assert "no listed plan fits, managed or self-hosted throughout" in range_sentence((1.0, 2.0), [(1.0, "none")])


# --- 3. contradictory usage-file counts -------------------------------------------------------------------------------

# usage_day(): 10 publishes reaching 50 connections, 2 client events reaching 8, 1,200 bytes in all: 12 messages, 58
# deliveries. The meter adds max(1, ceil(size ÷ 5,120)) × recipients per message (emulator/usage.py _count_publish).


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            # every delivery is at least one unit: at least 58
            {"delivered_units_5kib": 57},
            "field 'delivered_units_5kib' is 57, fewer than the 58 deliveries and client event deliveries (each "
            "delivery is at least one unit of 5 KiB)",
        ),
        (
            {"deliveries": 0, "client_event_deliveries": 0, "delivered_units_5kib": 1},
            "field 'delivered_units_5kib' is 1 but there are no deliveries ('deliveries' and 'client_event_deliveries' "
            "are 0)",
        ),
        (
            # one second holds at most the day's 12 publishes and client events
            {"peak_publishes_per_second": 13},
            "field 'peak_publishes_per_second' is 13, more than the day's 12 publishes and client events",
        ),
        (
            {"peak_publishes_per_second": 0},
            "field 'peak_publishes_per_second' is 0, but the day has 12 publishes and client events: its busiest "
            "second has at least 1",
        ),
    ],
)
def test_contradictory_usage_counts_are_refused_naming_file_app_day_and_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], overrides: dict[str, int], message: str
) -> None:
    path = usage_file(tmp_path, {"chat": usage_day(**overrides)})
    assert refused(["cost", "--usage", str(path)], capsys) == f"usage file {path}: apps.chat.days.2026-11-29: {message}"


def test_usage_counts_at_their_bounds_are_accepted(tmp_path: Path) -> None:
    """The bounds themselves are possible: 58 deliveries of one-unit messages (58 units); a busiest second with 1 or
    all 12 of the day's messages. And a busiest second of 1 on a day of 86,399 + 2 = 86,401 messages: two worker
    processes sharing the file, each at most 1 a second, keep the larger of their busiest seconds
    (emulator/usage.py merge_documents), not their sum. More delivered units than the day's 1,200 bytes make (59, or
    10 units for each of the 58 deliveries) are possible in a cluster's file: a node killed between checkpoints loses
    the bytes of the large messages it received, not the other nodes' deliveries of them."""
    for day in (
        usage_day(delivered_units_5kib=58, peak_publishes_per_second=1),
        usage_day(delivered_units_5kib=59, peak_publishes_per_second=12),
        usage_day(units_5kib=12, delivered_units_5kib=580),
        usage_day(publishes=86_399, peak_publishes_per_second=1),
    ):
        assert run_cost_json(["--usage", str(usage_file(tmp_path, {"chat": day})), "--provider", "pusher"])


# --- 4. "unknown" in a pricing file ---------------------------------------------------------------------------------

# 1,000 connections, 20,000 publishes a day to 10 subscribers each.
DESCRIBED = ["--connections", "1000", "--publishes-per-day", "20000", "--subscribers-per-publish", "10"]


@pytest.mark.parametrize(
    ("section", "old", "new", "provider_id", "fields", "known"),
    [
        # egress 200,000 deliveries × (1,024 + 150) bytes × 30 ÷ 2**30 = 6.56 GiB: the allowance decides the bill
        (
            "hetzner",
            "included_egress_gib = 18626",
            'included_egress_gib = "unknown"',
            "hetzner",
            "included_egress_gib",
            ("cx23", 4.77),
        ),
        # the CPU a node plans for is cpu_cores × 70%: without it no node count can be planned
        ("hetzner", "cpu_cores = 0.5", 'cpu_cores = "unknown"', "hetzner", "cpu_cores", ("cx23", 4.77)),
        # 10 × 1,000 = 10,000 MAU: 20,000 × 11 × 30 = 6.6 M messages against 20,000 × 10,000 fair use; at 0, $16.50
        # would be billed
        (
            "ably_mau_2025",
            "fair_use_messages_per_mau = 20000\nfair_use_connection_minutes_per_mau = 2000",
            'fair_use_messages_per_mau = "unknown"\nfair_use_connection_minutes_per_mau = "unknown"',
            "ably_mau_2025",
            "fair_use_connection_minutes_per_mau, fair_use_messages_per_mau",
            ("standard", 552.2),
        ),
        # Pro: $25 + ceil((1,000 − 500) ÷ 1,000) × $10 + (6.6 M − 5 M) × $2.50/M = $39; Free's 200 connections break
        (
            "supabase",
            "included_connections = 500\nusd_per_1000_connections = 10\nincluded_messages_per_month = 5000000",
            'included_connections = "unknown"\nusd_per_1000_connections = 10\nincluded_messages_per_month = "unknown"',
            "supabase",
            "included_connections, included_messages_per_month",
            ("pro", 39.0),
        ),
    ],
    ids=["hetzner egress", "hetzner cpu", "ably fair use", "supabase included"],
)
def test_an_unknown_input_the_cost_needs_makes_the_provider_unknown(
    tmp_path: Path, section: str, old: str, new: str, provider_id: str, fields: str, known: tuple[str, float]
) -> None:
    """docs/cost.md: "When a plan's price or a limit is unknown, the provider is unknown rather than guessed". An
    allowance or capacity marked "unknown" was read as 0 and priced; with the bundled figures the answer is
    ``known``."""
    bundled = provider(run_cost_json([*DESCRIBED, "--provider", provider_id]), provider_id)
    assert (bundled["plan"], bundled["monthly_usd"]) == known
    path = pricing_file(tmp_path, section, old, new)
    result = provider(run_cost_json([*DESCRIBED, "--pricing", str(path), "--provider", provider_id]), provider_id)
    assert (result["status"], result["plan"], result["monthly_usd"]) == ("unknown", None, None)
    assert f"(unknown in the pricing data: {fields})" in result["limit"], result["limit"]


def test_an_unknown_plan_that_could_be_cheaper_makes_the_provider_unknown(tmp_path: Path) -> None:
    """Railway's Hobby ($5 + usage beyond its credit) with its credit unknown: Pro fits at $20 (its $20 credit covers
    the usage), but Hobby, never less than its $5 fee, could be cheaper, so the cheapest plan that fits is unknown."""
    path = pricing_file(tmp_path, "railway", "included_usage_usd = 5\n", 'included_usage_usd = "unknown"\n')
    railway = provider(run_cost_json([*DESCRIBED, "--pricing", str(path), "--provider", "railway"]), "railway")
    assert (railway["status"], railway["plan"], railway["monthly_usd"]) == ("unknown", None, None)
    assert railway["limit"] == (
        "prices or limits unknown for Hobby (unknown in the pricing data: included_usage_usd); it could be cheaper "
        "than Pro (one seat) ($20.00), the cheapest known to fit"
    )
    hobby = next(p for p in railway["plans"] if p["plan"] == "hobby")
    assert hobby["reason"] == "unknown in the pricing data: included_usage_usd"


def test_an_unknown_input_the_cost_does_not_need_changes_nothing(tmp_path: Path) -> None:
    """10 idle connections send nothing: no egress, so Hetzner's unknown allowance is not needed (CX23, $4.77); and
    100 connections fit Supabase Free ($0), below Pro's $25 fee whatever Pro includes."""
    egress = pricing_file(tmp_path, "hetzner", "included_egress_gib = 18626", 'included_egress_gib = "unknown"')
    hetzner = provider(run_cost_json(["--connections", "10", "--pricing", str(egress)]), "hetzner")
    assert (hetzner["status"], hetzner["plan"], hetzner["monthly_usd"]) == ("fits", "cx23", 4.77)
    included = pricing_file(tmp_path, "supabase", "included_connections = 500", 'included_connections = "unknown"')
    supabase = provider(run_cost_json(["--connections", "100", "--pricing", str(included)]), "supabase")
    assert (supabase["status"], supabase["plan"], supabase["monthly_usd"]) == ("fits", "free", 0.0)


# --- 5. crossovers only between options that fit ---------------------------------------------------------------------


def test_no_crossover_where_neither_side_fits(prices: Prices) -> None:
    """1,000 connections, 40 publishes a second all day to 1 subscriber, Ably (resource-based) against Hetzner.

    - Ably Free holds 6 M messages a month: 40k × 86,400 × 2 × 30 = 207.36 M × k, so up to k = 0.0289, 28.9
      connections: above 29 connections Ably costs Standard's $29 at least and one CX23 ($4.77) is cheaper.
    - Ably's largest listed plan, Pro, holds 50,000 connections (50×); Enterprise is custom.
    - One Hetzner node does 40k × (150 + 6) µs = 0.00624k cores of its 0.5 × 70% = 0.35, up to k = 56.1; with
      several, every node receives every publish from Redis, 40k × 100 µs = 0.004k cores, at most half of the 0.35
      up to k = 43.75: from 56,100 connections nothing fits.

    So the one crossover is "cheaper above 29 connections"; the bug also reported self-hosting "(hetzner )" as no
    longer cheaper where nothing fits, with both costs null. Ably (resource-based) is closed to new accounts, but it is
    the only managed option here, so it is also "every managed option".
    """
    chosen = replace(prices, providers=tuple(p for p in prices.providers if p.id in ("ably_rb", "hetzner")))
    workload = Workload(connections=1_000, publishes_per_day=40 * 86_400, subscribers_per_publish=1)
    found = crossovers(workload, chosen)
    assert [c.describe() for c in found] == [
        "self-hosting's machines (hetzner cx23, 1 node: no failover) cost less than Ably (resource-based) (existing "
        "accounts only) above 29 connections",
        "self-hosting's machines (hetzner cx23, 1 node: no failover) cost less than every managed option above 29 "
        "connections",
    ]
    assert all(c.selfhosted_plan and c.selfhosted_usd == 4.77 for c in found)
    # the change the bug reported: past 87.5×, neither fits
    beyond = estimate(workload.scaled(88), chosen)
    assert [beyond.provider(p).status for p in ("ably_rb", "hetzner")] == ["does_not_fit", "does_not_fit"]


# --- lower severity -------------------------------------------------------------------------------------------------


def test_a_peak_below_the_busiest_days_average_names_the_real_bound(capsys: pytest.CaptureFixture[str]) -> None:
    """86,400 publishes on the average day and a busiest day twice that: the busiest day averages 86,400 × 2 ÷
    86,400 = 2 a second, so a peak of 1.5 is below it (though above the average day's 1 a second, which the message
    used to quote)."""
    argv = ["--connections", "10", "--publishes-per-second", "1.5", "--publishes-per-day", "86400"]
    assert refused(["cost", *argv, "--peak-day-factor", "2"], capsys) == (
        "--publishes-per-second 1.5 is below the busiest day's average rate, --publishes-per-day 86400 × "
        "--peak-day-factor 2 ÷ 86,400 = 2/s: a peak is at least the average"
    )


def test_publishes_per_day_from_the_peak_second_is_documented_with_both_factors(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """--publishes-per-second 2 --peak-factor 4 --peak-day-factor 3: 2 × 86,400 ÷ (4 × 3) = 14,400 a day, as the
    help and docs/cost.md now say (they omitted --peak-day-factor)."""
    workload = run_cost_json(
        ["--connections", "10", "--publishes-per-second", "2", "--peak-factor", "4", "--peak-day-factor", "3"]
    )["workload"]
    assert workload["publishes_per_day"] == 14_400
    formula = "N × 86,400 ÷ (--peak-factor × --peak-day-factor)"
    with pytest.raises(SystemExit):
        cost_parser().parse_args(["cost", "--help"])
    assert formula in " ".join(capsys.readouterr().out.split())
    doc = (Path(__file__).resolve().parents[2] / "docs" / "cost.md").read_text(encoding="utf-8")
    assert f"`{formula}`" in " ".join(doc.split())


def test_the_scale_grid_ends_exactly_at_the_range() -> None:
    """0.5 × (2 ** (1/60)) ** 60 is 1.0000000000000022, not 1; and 1 ÷ 1e-320 is beyond a float (so every step was
    infinite)."""
    assert geometric_scales(0.5, 1, 61)[-1] == 1
    assert geometric_scales(0.01, 100, 61)[::60] == (0.01, 100)
    tiny = geometric_scales(1e-320, 1, 61)
    assert (tiny[0], tiny[-1]) == (1e-320, 1) and all(0 < a < b for a, b in itertools.pairwise(tiny))


def test_a_workload_at_the_model_limit_sweeps_up_to_it(capsys: pytest.CaptureFixture[str]) -> None:
    """10**18 publishes a day is the most the model takes; --plot-range 0.5:1 ends at ×1, exactly that. The grid's
    overshoot made it 1.0000000000000022e18 and refused "more than 1e+18". A range down to 1e-320× no longer makes
    every step infinite ("scale must be a number > 0, got inf")."""
    argv = [
        "cost",
        "--connections",
        "1",
        "--publishes-per-day",
        "1e18",
        "--provider",
        "pusher",
        "--provider",
        "hetzner",
    ]
    assert main([*argv, "--plot-range", "0.5:1", "--format", "csv"]) == 0
    assert main(["cost", "--connections", "500", "--provider", "hetzner", "--plot-range", "1e-320:1"]) == 0
    assert "configuration error" not in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--connections", "10", "--channels", "3", "--average-channels", "4"],
            "--average-channels 4 is above --channels 3, the peak: an average is at most the peak",
        ),
        (
            ["--connections", "10", "--average-channels", "11"],
            "--average-channels 11 is above --connections 10 (the peak channel count without --channels), the peak: "
            "an average is at most the peak",
        ),
    ],
)
def test_average_channels_above_the_peak_is_refused(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    """Channel-minutes of more channels on average than at the peak (the peak is --channels, else --connections)."""
    assert refused(["cost", *argv], capsys) == message


def test_a_partly_measured_peak_second_is_used_and_the_assumption_said(tmp_path: Path) -> None:
    """Two apps on one day, 12 publishes and client events each; only app a measured its busiest second, 3. App b is
    assumed as bursty: 3 ÷ 12 = 0.25 of its 12 messages, 3, in its busiest second, so the day's busiest second is
    3 + 3 = 6 and the peak factor 6 × 86,400 ÷ 24 = 21,600 (the bug dropped the measured peak: factor 1)."""
    path = usage_file(tmp_path, {"a": usage_day(peak_publishes_per_second=3), "b": usage_day()})
    workload = workload_from_usage(parse_usage(json.loads(path.read_text()), origin="u.json"))
    assert workload.peak_factor == pytest.approx(21_600)
    assert workload.per_second_at_peak(workload.messages_sent) == pytest.approx(6)
    assert workload.origin.endswith(
        "; the busiest second is measured on 1 of the 2 app-days with publishes or client events: on the other 1, "
        "assumed to carry 0.25 of the day's messages, as the measured busiest seconds do in all"
    )


@pytest.mark.parametrize("as_of", ["2026-13-45", "2026-02-30", "2026-13"])
def test_a_pricing_date_that_is_no_date_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], as_of: str
) -> None:
    path = pricing_file(tmp_path, "hetzner", 'as_of = "2026-05-27"', f'as_of = "{as_of}"')
    assert refused(["cost", "--connections", "5", "--pricing", str(path)], capsys) == (
        f"pricing file {path} is invalid:\n  providers.hetzner: field 'as_of' must be a date YYYY-MM-DD (or YYYY-MM), "
        f"got '{as_of}'"
    )


def test_a_pricing_month_is_still_a_date(tmp_path: Path) -> None:
    path = pricing_file(tmp_path, "hetzner", 'as_of = "2026-05-27"', 'as_of = "2026-02"')
    assert provider(run_cost_json(["--connections", "5", "--pricing", str(path)]), "hetzner")["as_of"] == "2026-02"


def test_a_plot_into_a_missing_directory_is_refused_before_any_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "absent" / "p.png"
    assert refused(["cost", "--connections", "500", "--plot", str(missing)], capsys) == (
        f"--plot {missing}: cannot write it: {missing.parent} does not exist"
    )
    a_file = tmp_path / "notes.txt"
    a_file.write_text("x")
    assert refused(["cost", "--connections", "500", "--plot", str(a_file / "p.png")], capsys) == (
        f"--plot {a_file / 'p.png'}: cannot write it: {a_file} is a file, not a directory"
    )
    folder = tmp_path / "d.png"
    folder.mkdir()
    assert refused(["cost", "--connections", "500", "--plot", str(folder)], capsys) == (
        f"--plot {folder}: cannot write it: it is a directory"
    )
