"""Self-hosting: the node count priced is the cheapest, machines and egress beyond the allowance together, from the
count the load needs up to the count whose allowances cover the egress: where each node brings a transfer
allowance worth more than its price, more nodes are the cheaper way to pay for heavy egress."""

from __future__ import annotations

from dataclasses import replace

import pytest

from relay.cost import Prices, Workload, estimate

GIB = 2**30

# The docs' egress example: 400 publishes a second at a peak 4× the average, to 100 subscribers, 300-byte messages
# (450 bytes a delivery with the framing): 8.64 M publishes a day, 10,862.9 GiB a month.
EGRESS = Workload(
    connections=20_000, publishes_per_day=8_640_000, subscribers_per_publish=100, message_bytes=300, peak_factor=4
)
EGRESS_GIB = 8_640_000 * 100 * 450 * 30 / GIB

# 1,638,400 publishes a day to 1,024 subscribers, 874-byte messages: 1 KiB a delivery, 48,000 GiB a month; 0.12
# cores at the peak, which one Hetzner node carries.
HEAVIER = Workload(connections=2_000, publishes_per_day=1_638_400, subscribers_per_publish=1_024, message_bytes=874)
TWO = round(2 * 4.77 + 4.77 + (48_000 - 2 * 18_626) * 0.00125, 2)  # two CX23 and Redis


def test_ten_one_gb_droplets_pay_for_the_egress_of_one_that_carries_the_load(prices: Prices) -> None:
    """One droplet carries the load; each more 1 GB droplet ($6) brings 1,000 GiB ($10 of egress): ten and the Redis
    droplet allow 11,000 GiB, the whole 10,862.9, for $60 + $6. One 1 GB droplet would cost $6 + 9,862.9 GiB × $0.01
    = $104.63, the 4 GB one (the cheapest single droplet) $24 + 6,862.9 × $0.01 = $92.63. The report says why."""
    assert round(EGRESS_GIB, 1) == 10_862.9
    digitalocean = estimate(EGRESS, prices, providers={"digitalocean"}).provider("digitalocean")
    assert (digitalocean.plan, digitalocean.nodes, digitalocean.monthly_usd) == ("basic-1gb-1vcpu", 10, 66.0)
    assert dict(digitalocean.cost_lines) == {"10 × Basic 1 GB / 1 vCPU": 60.0, "Redis between nodes": 6.0}
    single = next(fit for fit in digitalocean.plans if fit.plan == "basic-1gb-1vcpu")
    assert single.nodes == 10
    assert round(6 + (EGRESS_GIB - 1_000) * 0.01, 2) == 104.63
    assert digitalocean.assumptions[-1] == (
        "Basic 1 GB / 1 vCPU: 10 nodes where 1 carries the load: each more node brings 1,000 GiB of included egress, "
        "worth $10.00 of egress beyond the allowance, for its $6.00: 10 nodes cost $66.00 a month, 1 node $104.63"
    )


def test_the_last_node_is_left_out_when_the_egress_it_would_cover_costs_less(prices: Prices) -> None:
    """25,145.7 GiB: 24 one-GB droplets and Redis leave 145.7 GiB, $1.46 of egress, less than a 25th droplet's $6:
    $144 + $6 + $1.46 = $151.46."""
    workload = Workload(connections=1_000, publishes_per_day=2e7, subscribers_per_publish=100, message_bytes=300)
    egress = 2e7 * 100 * 450 * 30 / GIB
    assert round(egress, 1) == 25_145.7
    digitalocean = estimate(workload, prices, providers={"digitalocean"}).provider("digitalocean")
    assert (digitalocean.plan, digitalocean.nodes, digitalocean.monthly_usd) == ("basic-1gb-1vcpu", 24, 151.46)


def test_hetzner_adds_servers_for_their_traffic_allowance(prices: Prices) -> None:
    """A CX23 ($4.77) brings 18,626 GiB of traffic, $23.28 at $0.00125 a GiB. 48,000 GiB: one server costs $4.77 +
    29,374 × $0.00125 = $41.49; two and Redis $14.31 + 10,748 × $0.00125 = $27.745 (TWO, to the cent
    as the float rounds it); three and Redis, 55,878 GiB allowed, $14.31 + $4.77 = $19.08."""
    hetzner = estimate(HEAVIER, prices, providers={"hetzner"}).provider("hetzner")
    assert hetzner.unit("egress_gib_per_month") == 48_000
    assert (hetzner.plan, hetzner.nodes, hetzner.monthly_usd) == ("cx23", 3, 19.08)
    assert hetzner.assumptions[-1] == (
        "CX23 2 vCPU / 4 GB: 3 nodes where 1 carries the load: each more node brings 18,626 GiB of included egress, "
        "worth $23.28 of egress beyond the allowance, for its $4.77: 3 nodes cost $19.08 a month, 1 node $41.49"
    )


def test_min_nodes_is_still_the_least_priced(prices: Prices) -> None:
    """--min-nodes 5 asks for more than the cheapest 3: five and Redis, $28.62, and nothing to explain; --min-nodes 2
    is fewer than the cheapest, which is still found from there: 3 nodes, $19.08, said against the 2 asked for
    ($27.745)."""
    five = estimate(replace(HEAVIER, min_nodes=5), prices, providers={"hetzner"}).provider("hetzner")
    assert (five.nodes, five.monthly_usd) == (5, 28.62)
    assert not any("carries the load" in line or "carry the load" in line for line in five.assumptions)
    two = estimate(replace(HEAVIER, min_nodes=2), prices, providers={"hetzner"}).provider("hetzner")
    assert (two.nodes, two.monthly_usd) == (3, 19.08)
    assert two.assumptions[-1].endswith("3 nodes where 2 carry the load: each more node brings 18,626 GiB of included "
                                        "egress, worth $23.28 of egress beyond the allowance, for its $4.77: 3 nodes "
                                        f"cost $19.08 a month, 2 nodes ${TWO:.2f}")  # fmt: skip


@pytest.mark.parametrize("name", ["render", "flyio"])
def test_no_more_nodes_where_they_bring_no_allowance(prices: Prices, name: str) -> None:
    """Render's allowance is the workspace's, Fly.io has none: another node only adds its price."""
    result = estimate(EGRESS, prices, providers={name}).provider(name)
    assert result.nodes == 1
    assert not any("carries the load" in line for line in result.assumptions)
