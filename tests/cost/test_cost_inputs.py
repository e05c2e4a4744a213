"""`relay cost` inputs that contradict each other or the reference (shared/reference/ably-and-pricing.md): refused
with the flag named, or read as the reference reads them."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from cost_helpers import cost_parser, run_cost, usage_day

from relay.cost import Workload, parse_usage, workload_from_usage
from relay.cost.cli import workload_from_args
from relay.cost.rules import ably_messages_per_day
from relay.emulator.usage import AppMeter, usage_document
from relay.errors import ConfigError


def _workload(argv: Sequence[str]) -> Workload:
    return workload_from_args(cost_parser().parse_args(["cost", *argv]))


# --- the peak-rate flags ---------------------------------------------------------------------------------------------


def test_publishes_per_second_alone_stays_the_peak_second_with_a_peak_day_factor() -> None:
    """``--publishes-per-second N`` is "publishes per second at the peak" (its --help), and per-second limits are
    checked at "the busiest day's average rate × --peak-factor" (docs/cost.md, Peaks): with ``--peak-day-factor 2``
    the average day is half the peak day, so the per-second checks are made at N, not 2N."""
    workload = _workload(["--connections", "10", "--publishes-per-second", "100", "--peak-day-factor", "2"])
    assert workload.per_second_at_peak(workload.publishes_per_day) == pytest.approx(100)


def test_publishes_per_second_is_not_silently_dropped_when_publishes_per_day_is_zero() -> None:
    """``--publishes-per-day 0 --publishes-per-second 100`` contradict each other (a peak of 100 publishes a second in a
    day without publishes): a ConfigError, like every other contradictory combination of these flags."""
    with pytest.raises(ConfigError):
        _workload(["--connections", "10", "--publishes-per-day", "0", "--publishes-per-second", "100"])


def test_average_connections_above_the_peak_is_rejected() -> None:
    """``--average-connections`` is "connections open on average over the day" and ``--connections`` the peak: an
    average above the peak would bill Ably's connection-minutes for more connections than every limit is checked
    against."""
    with pytest.raises(ConfigError):
        _workload(["--connections", "10", "--average-connections", "1000"])


def test_an_infinite_plot_range_is_rejected_naming_plot_range(capsys: pytest.CaptureFixture[str]) -> None:
    """``--plot-range 1:inf`` is refused by the flag's own argparse check (exit 2, a usage error naming
    --plot-range and saying both ends must be finite), not later with an error naming --scale."""
    with pytest.raises(SystemExit) as raised:
        run_cost(["--connections", "500", "--provider", "pusher", "--provider", "flyio", "--plot-range", "1:inf"])
    assert raised.value.code == 2
    stderr = capsys.readouterr().err
    assert "argument --plot-range: need 0 < LOW < HIGH, both finite, got '1:inf'" in stderr, stderr
    assert "--scale" not in stderr.splitlines()[-1], stderr


# --- the usage file --------------------------------------------------------------------------------------------------


def test_a_usage_day_must_be_written_yyyy_mm_dd() -> None:
    """The usage file's days are UTC dates YYYY-MM-DD (docs/cost.md): an ISO week date such as "2026-W48-1", which
    ``date.fromisoformat`` also takes, is refused, or one day could appear twice under two names."""
    document = {"version": 1, "apps": {"a": {"days": {"2026-W48-1": usage_day()}}}}
    with pytest.raises(ConfigError, match="YYYY-MM-DD"):
        parse_usage(document)


def test_a_measured_workload_with_connections_has_monthly_active_users() -> None:
    """Reference §F.2: a user "becomes active when it connects", so 60 concurrent connections mean at least one MAU.
    The meter learns user ids from sign-ins and presence only; none seen while clients connected is unknown (the
    documented fallback, 10 × peak connections, applies), not 0 MAU."""
    clock = [1_795_000_000.0]
    meter = AppMeter("app", clock=lambda: clock[0])
    for index in range(60):
        meter.connected(f"socket-{index}")
    meter.published("room", "update", "x" * 100, 60, size=106)
    clock[0] += 60
    workload = workload_from_usage(parse_usage(usage_document([meter], "audit")))
    assert workload.connections == 60
    assert workload.mau is None  # unknown: the estimate assumes 10 × peak connections, as documented


def test_measured_ably_messages_follow_the_5kib_rule_per_delivery() -> None:
    """Reference §F.2: each publish is 1 inbound and each delivery 1 outbound message, each billed in 5 KiB chunks. A
    50 KiB message (name and data) to 100 subscribers is 10 × 101 messages and a 105-byte one to nobody 1: 1,011, as
    the meter counts. The usage file carries the chunks per delivery, weighted by recipients, so `relay cost --usage`
    gets the same (averages alone would give 5.5 × 102 = 561)."""
    midnight = 20_776 * 86_400.0
    clock = [midnight]
    meter = AppMeter("app", clock=lambda: clock[0])
    meter.published("room", "big", "x" * (51_200 - 3), 100, size=51_200)
    clock[0] += 1
    meter.published("solo", "small", "y" * 100, 0, size=105)
    clock[0] = midnight + 86_399.5  # a whole day measured: what it counted is the day's
    (measured,) = meter.days().values()
    assert measured.ably_messages == 10 * 101 + 1
    document = usage_document([meter], "test")
    (day,) = document["apps"]["app"]["days"].values()
    assert day["delivered_units_5kib"] == 10 * 100
    workload = workload_from_usage(parse_usage(document), echo=False)
    assert ably_messages_per_day(workload) == pytest.approx(1011)
