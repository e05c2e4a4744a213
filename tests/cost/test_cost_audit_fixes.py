"""Problems an audit of `relay cost` found, each pinned by a figure or message worked out by hand from the counting
rules and capacity figures of docs/cost.md (relay/cost/pricing.toml, [capacity])."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from cost_helpers import provider, refused, run_cost, run_cost_json

from relay.cli import main
from relay.cost import Prices, Workload, estimate
from relay.cost.models import MAX_PEAK_FACTOR
from relay.errors import ConfigError

DOC = (Path(__file__).resolve().parents[2] / "docs" / "cost.md").read_text(encoding="utf-8")


def strict_json(text: str) -> Any:
    """JSON as the standard defines it: Infinity and NaN are refused."""

    def constant(name: str) -> None:
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=constant)


# --- 1. no plot asked: the plot range is not checked, and the whole documented range of numbers works -----------------

# docs/cost.md: "Every number of a workload, scaled or not, is at most 10¹⁸ (far beyond any real one)".
BOUND = 10**18
HUGE = "20000000000000000"  # 2 × 10**16: ×100, the default --plot-range's HIGH, would be 2 × 10**18


def test_no_plot_and_no_plot_range_means_no_plot_range_error(capsys: pytest.CaptureFixture[str]) -> None:
    """The audit's command: 2 × 10**16 connections on Pusher, no --plot, no --plot-range. It was refused with
    "--plot-range 0.01:100: at ×100 … lower HIGH", naming a flag never passed. Pusher's largest listed plan holds
    30,000 connections, so the answer is "does not fit"."""
    assert main(["cost", "--connections", HUGE, "--provider", "pusher", "--format", "csv"]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    rows = captured.out.splitlines()
    assert rows[1].startswith("pusher,Pusher Channels,managed,does_not_fit,"), rows


def test_the_default_crossover_sweep_stops_at_the_bound_and_says_so() -> None:
    """Without --plot-range the crossovers are searched from 0.01× up to the largest scale the model takes: 10**18 ÷
    (2 × 10**16) = 50×, not 100×, and the output says so. Pusher fits nowhere (2 × 10**14 connections at 0.01× is
    beyond Growth Plus's 30,000) while Hetzner's CX33 holds 581,058 connections a node, so self-hosting is the
    cheapest throughout."""
    argv = ["--connections", HUGE, "--provider", "pusher", "--provider", "hetzner"]
    note = (
        "crossovers searched from 0.01× to 50× (not the default 100×): beyond ×50 the workload's counts would pass "
        "1e+18, the largest number the cost model takes"
    )
    result = run_cost_json(argv)
    assert note in result["assumptions"]
    assert result["crossovers"] == []
    assert provider(result, "hetzner")["plan"] == "cx33"
    out = " ".join(run_cost(argv).split())
    assert "No crossover from 0.01× to 50× this workload: self-hosting is the cheapest throughout" in out
    assert note in out


def test_a_plot_beyond_the_bound_is_refused_naming_the_flags_given(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A plot is drawn over the range: with --plot and no --plot-range the range is the default, and the error says
    so (and what HIGH would do: 50); with --plot-range given, the error names it and says how low HIGH must go."""
    plot = tmp_path / "cost.svg"
    base = ["cost", "--connections", HUGE, "--provider", "pusher", "--provider", "hetzner"]
    assert refused([*base, "--plot", str(plot)], capsys) == (
        f"--plot {plot} draws the default --plot-range 0.01:100: at ×100 the workload's counts pass 1e+18, the "
        "largest number the cost model takes; pass --plot-range with HIGH at most 50"
    )
    assert refused([*base, "--plot-range", "0.01:100"], capsys) == (
        "--plot-range 0.01:100: at ×100 the workload's counts pass 1e+18, the largest number the cost model takes; "
        "lower HIGH to at most 50"
    )
    assert main([*base, "--plot-range", "0.01:50", "--format", "csv"]) == 0
    assert not plot.exists()


@pytest.mark.parametrize(
    "workload",
    [
        Workload(connections=2 * 10**16),
        Workload(connections=3, publishes_per_day=7e17, bytes_out_per_day=9e17, mau=10**17),
        Workload(connections=BOUND),
        Workload(connections=1, channel_minutes_per_day=1e18 / 3),
    ],
    ids=["connections", "bytes_out", "at_bound", "channel_minutes"],
)
def test_the_largest_scale_is_exactly_where_scaling_stops(workload: Workload) -> None:
    largest = workload.largest_scale()
    assert workload.scaled(largest)  # accepted
    with pytest.raises(ConfigError, match="the largest number the cost model takes"):
        workload.scaled(math.nextafter(largest, math.inf))


AT_BOUND = str(BOUND)
EVERY_FLAG = [
    "--connections",
    AT_BOUND,
    "--publishes-per-day",
    AT_BOUND,
    "--subscribers-per-publish",
    AT_BOUND,
    "--client-events-per-day",
    AT_BOUND,
    "--client-event-recipients",
    AT_BOUND,
    "--presence-events-per-day",
    AT_BOUND,
    "--presence-subscribers",
    AT_BOUND,
    "--webhooks-per-day",
    AT_BOUND,
    "--api-requests-per-day",
    AT_BOUND,
    "--message-size",
    AT_BOUND,
    "--peak-factor",
    str(MAX_PEAK_FACTOR),  # its own bound: the busiest second holds at most the whole busiest day
    "--peak-day-factor",
    "30",  # its own bound: the busiest day holds at most the whole month (of 30 days)
    "--channels",
    AT_BOUND,
    "--average-connections",
    AT_BOUND,
    "--average-channels",
    AT_BOUND,
    "--mau",
    AT_BOUND,
]


@pytest.mark.parametrize("argv", [["--connections", AT_BOUND], EVERY_FLAG], ids=["connections", "every_number"])
def test_every_provider_answers_at_the_documented_bound(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """Every number at 10**18, every provider of the bundled data, every output format: an answer (exit 0, strict
    JSON, one CSV row per provider), crossovers searched up to ×1, the most such a workload can be scaled."""
    assert "Every number of a workload, scaled or not, is at most 10¹⁸" in " ".join(DOC.split())
    with pytest.raises(ConfigError, match="must be at most 1e"):
        Workload(connections=BOUND + 1)
    result = strict_json(run_cost([*argv, "--format", "json"]))
    ids = [p["provider"] for p in result["providers"]]
    assert len(ids) >= 12 and {"pusher", "ably_rb", "supabase", "pubnub", "hetzner", "railway"} <= set(ids)
    assert result["workload"]["connections"] == BOUND
    assert any("crossovers searched from 0.01× to 1× (not the default 100×)" in a for a in result["assumptions"])
    # Hetzner's CX33 (8 GB): (8,192 × 70% − 60) × 1,024 ÷ 10 = 581,058 connections a node.
    hetzner = provider(result, "hetzner")
    assert hetzner["units"]["nodes"] == math.ceil(BOUND / 581_058) or hetzner["status"] == "does_not_fit"
    csv_rows = run_cost([*argv, "--format", "csv"]).splitlines()
    assert [row.split(",", 1)[0] for row in csv_rows[1:]] == ids
    table = " ".join(run_cost(argv).split())
    assert "Monthly cost of:" in table and "configuration error" not in capsys.readouterr().err


# --- 2. self-hosting that fits at no node count names the forwarding -------------------------------------------------

DOC_EXAMPLE = [
    "--connections",
    "20000",
    "--publishes-per-second",
    "4000",
    "--peak-factor",
    "4",
    "--subscribers-per-publish",
    "100",
    "--message-size",
    "300",
    "--provider",
    "hetzner",
]


def test_forwarding_that_exceeds_a_node_is_named_as_why_no_node_count_fits(prices: Prices) -> None:
    """The docs' example on Hetzner: 4,000 publishes a second at the peak to 100 subscribers each.

    - one node: 4,000 requests/s × 150 µs + 400,000 deliveries/s × 6 µs = 0.6 + 2.4 = 3 cores, above the 0.5 × 70%
      = 0.35 a half-core Hetzner machine plans for (every listed Hetzner plan counts half a core);
    - two or more nodes: every node receives every publish through Redis, 4,000 × 100 µs = 0.4 cores, above half of
      the 0.35 (0.175), the most forwarding may take of a node, so no node count fits.

    The bug named only "CPU cores per node at peak 3 > 0.35", which reads as "add nodes"."""
    cap = prices.capacity
    assert (cap.cpu_us_per_request, cap.cpu_us_per_delivery, cap.cpu_us_per_forwarded_publish) == (150, 6, 100)
    assert {plan.cpu_cores for plan in prices.provider("hetzner").plans} == {0.5}
    assert cap.cpu_usable == 0.7
    hetzner = provider(run_cost_json(DOC_EXAMPLE), "hetzner")
    reason = (
        "CPU cores at peak on one node 3 > 0.35; CPU cores per node at peak for forwarded publishes (with 2+ nodes; at "
        "most 50% of a node's usable CPU) 0.4 > 0.175 on CX33 4 vCPU / 8 GB, the largest listed plan"
    )
    assert (hetzner["status"], hetzner["limit"]) == ("does_not_fit", reason)
    for plan in hetzner["plans"]:
        assert {
            "limit": (
                "CPU cores per node at peak for forwarded publishes (with 2+ nodes; at most 50% of a node's usable CPU)"
            ),
            "used": 0.4,
            "max": 0.175,
            "ok": False,
        } in plan["checks"]
        assert {"limit": "CPU cores at peak on one node", "used": 3.0, "max": 0.35, "ok": False} in plan["checks"]
    # docs/cost.md quotes this answer
    assert reason in " ".join(DOC.split())


def test_memory_and_forwarding_both_named_when_no_node_count_fits(prices: Prices) -> None:
    """600,000 connections and 4,000 publishes a second (to no one) on Hetzner's CX33 (8 GB, half a core): one node
    holds (8,192 × 70% − 60) × 1,024 ÷ 10 = 581,058 connections, so memory needs 2 nodes; two or more nodes each
    spend 4,000 × 100 µs = 0.4 cores on forwarded publishes, above half the 0.35 planned. One node's CPU (4,000 × 150 µs
    = 0.6 cores) is beyond it as well. The bug said "CPU cores per node at peak 0.7 > 0.35" (0.6 ÷ 2 + 0.4), as if
    more nodes would do."""
    busy = Workload(connections=600_000, publishes_per_day=4_000 * 86_400)
    hetzner = estimate(busy, prices, providers={"hetzner"}).provider("hetzner")
    assert hetzner.status == "does_not_fit"
    assert hetzner.limit == (
        "connections on one node 600,000 > 581,058; CPU cores at peak on one node 0.6 > 0.35; CPU cores per node at "
        "peak for forwarded publishes (with 2+ nodes; at most 50% of a node's usable CPU) 0.4 > 0.175 on CX33 4 vCPU / "
        "8 GB, the largest listed plan"
    )
    assert hetzner.nodes == 2  # the count memory alone needs
