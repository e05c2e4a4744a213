"""With --no-echo, the bytes a usage file measured written to its echo deliveries are no transfer: `bytes_out` is one
total, echoes included, so the echoes' part is taken out at the bytes written per delivery measured."""

from __future__ import annotations

from pathlib import Path

import pytest
from cost_helpers import provider, run_cost_json, usage_day
from test_cost_usage_audit_fixes import WHOLE_DAY, measured, usage_file

from relay.cost import Prices, estimate
from relay.cost.usage import load_usage, workload_from_usage

MIB = 2**20
# usage_day's 50 deliveries, 8 client event deliveries and 12 presence deliveries, and 10 echoes: 80 deliveries
# written a day in 80 MiB, so 1 MiB each, and the 10 echoes 10 MiB of them.
ECHOED_DAY = measured(usage_day(echo_deliveries=10, bytes_out=80 * MIB), WHOLE_DAY)


def transfer(path: Path, prices: Prices, *, echo: bool, scale: float = 1) -> tuple[float, float]:
    """Ably's bandwidth and Hetzner's egress, GiB a month."""
    workload = workload_from_usage(load_usage(path), echo=echo).scaled(scale)
    result = estimate(workload, prices, providers={"ably_rb", "hetzner"})
    ably, hetzner = result.provider("ably_rb"), result.provider("hetzner")
    return ably.unit("bandwidth_gib_per_month"), hetzner.unit("egress_gib_per_month")


def test_no_echo_leaves_the_echoes_bytes_out_of_ably_bandwidth_and_self_hosted_egress(
    tmp_path: Path, prices: Prices
) -> None:
    """30 days of 80 MiB is 2,400 MiB (2.34375 GiB) with echo; with --no-echo, 30 days of 70 MiB, 2,100 MiB (2.05078125
    GiB), on Ably and on a self-hosted node alike (the node does not echo either), and the assumptions say so."""
    path = usage_file(tmp_path, {"2026-11-29": ECHOED_DAY})
    assert transfer(path, prices, echo=True) == (2.34375, 2.34375)
    assert transfer(path, prices, echo=False) == (2.05078125, 2.05078125)

    rule = (
        "12.5% of the bytes_out measured, 0.29 GiB a month (each echo weighs the bytes written per delivery measured: "
        "bytes_out ÷ every delivery written, echoes included)"
    )
    quiet = run_cost_json(["--usage", str(path), "--provider", "ably_rb", "--provider", "hetzner", "--no-echo"])
    ably = provider(quiet, "ably_rb")["assumptions"]
    assert any(
        line.endswith(
            "; 10 realtime publishes a day measured echoed to their publisher: not billed (--no-echo), nor their "
            f"bytes, {rule}"
        )
        for line in ably
    ), ably
    assert (
        f"egress = the bytes_out measured, less the echoes (--no-echo): {rule}"
        in provider(quiet, "hetzner")["assumptions"]
    )
    echoing = run_cost_json(["--usage", str(path), "--provider", "hetzner"])
    assert not any("bytes_out measured" in line for line in provider(echoing, "hetzner")["assumptions"])


def test_an_older_file_without_echo_deliveries_keeps_its_bytes_whole_with_no_echo(
    tmp_path: Path, prices: Prices
) -> None:
    """An older emulator counted its echoes among the deliveries: nothing tells them apart, so nothing is taken out."""
    path = usage_file(tmp_path, {"2026-11-29": measured(usage_day(bytes_out=80 * MIB), WHOLE_DAY)})
    assert transfer(path, prices, echo=False) == (2.34375, 2.34375)


def test_the_echoes_bytes_scale_with_the_users(tmp_path: Path, prices: Prices) -> None:
    """Ten times the users write ten times the bytes, and their echoes ten times theirs: 21,000 MiB a month."""
    path = usage_file(tmp_path, {"2026-11-29": ECHOED_DAY})
    assert transfer(path, prices, echo=False, scale=10) == pytest.approx((21_000 / 1024, 21_000 / 1024))
