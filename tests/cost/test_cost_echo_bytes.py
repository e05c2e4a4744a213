"""With --no-echo, the bytes a usage file measured written to its echo deliveries are no transfer: `bytes_out` is one
total, echoes included, so the echoes' part is taken out, each echo the average message measured and its framing.

It was taken out at the bytes written per delivery measured, `bytes_out` ÷ every delivery written: the frames that
deliver nothing (pings, attach replies, connection frames) spread over the deliveries, so a few echoes on a day of
mostly idle connections were taken for most of the bytes written."""

from __future__ import annotations

from pathlib import Path

import pytest
from cost_helpers import provider, run_cost_json, usage_day
from test_cost_usage_audit_fixes import WHOLE_DAY, measured, usage_file

from relay.cost import Prices, estimate
from relay.cost.usage import load_usage, workload_from_usage

MIB = 2**20
# usage_day's 12 messages of 100 bytes (payload_bytes 1,200), echoed 10 times: 10 × (100 + 150 bytes of framing),
# 2,500 bytes a day of the 80 MiB written (80 deliveries a day: 1 MiB each at the average, mostly other frames).
ECHOED_DAY = measured(usage_day(echo_deliveries=10, bytes_out=80 * MIB), WHOLE_DAY)
ECHO_BYTES = 10 * (100 + 150)


def transfer(path: Path, prices: Prices, *, echo: bool, scale: float = 1) -> tuple[float, float]:
    """Ably's bandwidth and Hetzner's egress, GiB a month."""
    workload = workload_from_usage(load_usage(path), echo=echo).scaled(scale)
    result = estimate(workload, prices, providers={"ably_rb", "hetzner"})
    ably, hetzner = result.provider("ably_rb"), result.provider("hetzner")
    return ably.unit("bandwidth_gib_per_month"), hetzner.unit("egress_gib_per_month")


def test_no_echo_leaves_the_echoes_bytes_out_of_ably_bandwidth_and_self_hosted_egress(
    tmp_path: Path, prices: Prices
) -> None:
    """30 days of 80 MiB is 2,400 MiB (2.34375 GiB) with echo; with --no-echo, 30 days of 80 MiB less 2,500 bytes
    (not 70 MiB: the echoes are not 1 MiB each), on Ably and on a self-hosted node alike (the node does not echo
    either), and the assumptions say so."""
    path = usage_file(tmp_path, {"2026-11-29": ECHOED_DAY})
    assert transfer(path, prices, echo=True) == (2.34375, 2.34375)
    quiet_gib = (80 * MIB - ECHO_BYTES) * 30 / 2**30
    assert transfer(path, prices, echo=False) == pytest.approx((quiet_gib, quiet_gib))

    rule = (
        "2,500 bytes a day, 0.0% of the bytes_out measured (each echo weighs the average message measured, 100 bytes, "
        "and 150 bytes of framing)"
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
    """Ten times the users write ten times the bytes, and their echoes ten times theirs."""
    path = usage_file(tmp_path, {"2026-11-29": ECHOED_DAY})
    quiet_gib = (800 * MIB - 10 * ECHO_BYTES) * 30 / 2**30
    assert transfer(path, prices, echo=False, scale=10) == pytest.approx((quiet_gib, quiet_gib))


def test_echoes_never_take_out_more_than_was_written(tmp_path: Path, prices: Prices) -> None:
    """Echoes of large messages on a day that wrote little (a file cut short): at most the bytes_out measured."""
    day = measured(usage_day(echo_deliveries=10, payload_bytes=12 * 5000, bytes_out=1000), WHOLE_DAY)
    path = usage_file(tmp_path, {"2026-11-29": day})
    assert transfer(path, prices, echo=False) == (0.0, 0.0)
