"""`relay cost` inputs that contradict each other or the reference (shared/reference/ably-and-pricing.md): refused
with the flag named, or read as the reference reads them."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from cost_helpers import cost_parser, refused, run_cost, run_cost_json, usage_day

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


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        # 1,000 in one second of a day of 5: a peak factor of 17,280,000 was priced
        (
            ["--publishes-per-day", "5", "--publishes-per-second", "1000"],
            "--publishes-per-second 1000 is more than the busiest day holds, --publishes-per-day 5 = 5 publishes: its "
            "busiest second has at most all of them",
        ),
        (
            ["--publishes-per-day", "5", "--peak-day-factor", "2", "--publishes-per-second", "11"],
            "--publishes-per-second 11 is more than the busiest day holds, --publishes-per-day 5 × --peak-day-factor "
            "2 = 10 publishes: its busiest second has at most all of them",
        ),
        (
            ["--peak-factor", "86401"],
            "workload field peak_factor (--peak-factor) must be at most 86,400 (the busiest second holds at most the "
            "whole busiest day: 86,400 times that day's average second), got 86401",
        ),
        (
            ["--peak-factor", "nan"],
            "workload field peak_factor (--peak-factor) must be a finite number ≥ 1, got nan",
        ),
        # --publishes-per-day was named, a flag not given
        (
            ["--publishes-per-second", "2e13"],
            "--publishes-per-second 2e+13 makes 1.73e+18 publishes a day (× 86,400 ÷ the peak factors), more than "
            "1e+18, the largest number the cost model takes",
        ),
        (["--publishes-per-second", "nan"], "--publishes-per-second must be a finite number, got nan"),
        (["--publishes-per-second", "inf"], "--publishes-per-second must be a finite number, got inf"),
    ],
    ids=["beyond the day", "beyond the busiest day", "peak factor", "peak factor nan", "2e13", "nan", "inf"],
)
def test_a_peak_beyond_the_busiest_day_is_refused_naming_the_flags_given(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A second holds at most its day: the peak second runs at the busiest day's average rate × the peak factor, so
    the factor is at most 86,400 (the usage loader refuses a busiest second with more messages than its day too)."""
    assert refused(["cost", "--connections", "10", "--subscribers-per-publish", "10", *argv], capsys) == message


def test_a_peak_of_the_whole_busiest_day_in_one_second_is_taken() -> None:
    workload = _workload(["--connections", "10", "--publishes-per-day", "5", "--publishes-per-second", "5"])
    assert workload.peak_factor == 86_400
    assert _workload(["--connections", "10", "--peak-factor", "86400"]).peak_factor == 86_400


def test_publishes_without_connections_make_a_channel_active(capsys: pytest.CaptureFixture[str]) -> None:
    """``--channels 0`` with publishes is refused (a publish makes its channel active), so the default, one channel per
    connection, is at least one with publishes too: with ``--connections 0`` it was 0."""
    workload = _workload(["--connections", "0", "--publishes-per-day", "5"])
    assert workload.peak_channels == 1
    assert workload.channel_minutes == 1_440
    assert _workload(["--connections", "0"]).peak_channels == 0
    assert _workload(["--connections", "0", "--publishes-per-day", "5", "--average-channels", "1"]).channel_minutes == (
        1_440
    )
    assert refused(["cost", "--connections", "0", "--publishes-per-day", "5", "--average-channels", "2"], capsys) == (
        "--average-channels 2 is above 1 (the peak channel count without --channels: --connections 0, but "
        "--publishes-per-day 5 makes a channel active), the peak: an average is at most the peak"
    )
    result = run_cost_json(["--connections", "0", "--publishes-per-day", "5", "--provider", "ably_rb"])
    assert any(
        "active channels at peak = 1: no connections, but what is published is on a channel" in line
        for line in result["assumptions"]
    )


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
