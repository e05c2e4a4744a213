"""The self-hosted caveat follows the node counts priced: "no failover" only where exactly one node is priced.

It said "with no failover" whenever --min-nodes was 1, even where the pricing chose several nodes (more nodes priced
for their transfer allowances), in the assumptions and in the plot's footer alike.
"""

from __future__ import annotations

from relay.cost import Prices, Workload, estimate
from relay.cost.engine import nodes_caveat
from relay.cost.plot import footer

# 48,000 GiB of egress a month: one Hetzner CX23 carries the load, three are priced for their traffic allowances
# (tests/cost/test_cost_egress_nodes.py).
HEAVIER = Workload(connections=2_000, publishes_per_day=1_638_400, subscribers_per_publish=1_024, message_bytes=874)
LIGHT = Workload(connections=500, publishes_per_day=20_000, subscribers_per_publish=49)


def caveat(workload: Workload, prices: Prices, providers: set[str]) -> str:
    assumptions = estimate(workload, prices, providers=providers).assumptions
    return next(line for line in assumptions if line.startswith("self-hosted figures are machines only"))


def test_several_nodes_priced_have_no_single_node_caveat(prices: Prices) -> None:
    assert estimate(HEAVIER, prices, providers={"hetzner"}).provider("hetzner").nodes == 3
    assert caveat(HEAVIER, prices, {"hetzner"}) == (
        "self-hosted figures are machines only, 3 nodes where the load or their transfer allowances take more, "
        "behind one Redis, itself not redundant; the time to run, patch and watch them (on call) is not priced, "
        "while a managed price includes it"
    )


def test_one_node_priced_has_no_failover(prices: Prices) -> None:
    assert caveat(LIGHT, prices, {"hetzner"}).startswith(
        "self-hosted figures are machines only, one node, with no failover: pass --min-nodes 2 for a standby; "
    )


def test_one_node_on_one_provider_and_several_on_another_are_both_said(prices: Prices) -> None:
    """Render's allowance is the workspace's: one node there, three Hetzner ones for their allowances."""
    assert estimate(HEAVIER, prices, providers={"render"}).provider("render").nodes == 1
    assert caveat(HEAVIER, prices, {"hetzner", "render"}).startswith(
        "self-hosted figures are machines only, one node where one is priced, with no failover (pass --min-nodes 2 "
        "for a standby); 3 nodes where the load or their transfer allowances take more, behind one Redis"
    )


def test_nodes_caveat() -> None:
    assert nodes_caveat(1, []) == "one node, with no failover: pass --min-nodes 2 for a standby"
    assert nodes_caveat(1, [1, 1]) == "one node, with no failover: pass --min-nodes 2 for a standby"
    assert nodes_caveat(1, [2, 10, 3]) == (
        "2 to 10 nodes where the load or their transfer allowances take more, behind one Redis, itself not redundant"
    )
    assert nodes_caveat(2, [2, 3]) == "at least 2 nodes (--min-nodes), behind one Redis, itself not redundant"


def test_the_plot_footer_says_no_failover_only_where_one_node_is_priced(prices: Prices) -> None:
    several = estimate(HEAVIER, prices, providers={"hetzner"})
    assert "no failover" not in footer(HEAVIER, prices, [several])
    assert "3 nodes where the load or their transfer allowances take more" in footer(HEAVIER, prices, [several])
    single = estimate(LIGHT, prices, providers={"hetzner"})
    assert "one node, with no failover" in footer(LIGHT, prices, [single])
