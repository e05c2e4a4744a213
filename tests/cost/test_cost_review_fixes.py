"""What a review of `relay cost` found: a usage file's Ably echo deliveries, billed on Ably only (a self-hosted
node writes them too); peak factors refused before anything is derived from them; a tiny --scale that left no
connection; the plot's footer, past the figure's edge. (The emulator's side of the echo is
tests/ably/test_ably_echo_usage.py.)"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from cost_helpers import provider, refused, run_cost_json, usage_day
from test_cost_usage_audit_fixes import WHOLE_DAY, measured, usage_file

from relay.cost import Prices, Workload, estimate
from relay.cost.plot import plot_costs
from relay.cost.usage import load_usage, workload_from_usage

# --- 1. echo deliveries ----------------------------------------------------------------------------------------------

# Not echoed elsewhere: Pusher, Supabase and PubNub never send a publisher its own message.
OTHERS = ("pusher", "supabase", "pubnub", "pubnub_mau")


def test_measured_echo_deliveries_are_billed_on_ably_and_nowhere_else(tmp_path: Path) -> None:
    """usage_day's 10 publishes, 10 of them echoed: 10 Ably messages more a day (1 unit of 5 KiB each), none with
    --no-echo, none for the others, and the assumption says how many were billed; ×10 users, 100 more."""
    (tmp_path / "plain").mkdir()
    plain = usage_file(tmp_path / "plain", {"2026-11-29": usage_day()})
    echoed = usage_file(tmp_path, {"2026-11-29": usage_day(echo_deliveries=10)})
    assert workload_from_usage(load_usage(echoed)).echo_deliveries_per_day == 10
    assert workload_from_usage(load_usage(plain)).echo_deliveries_per_day is None  # an older file: among deliveries

    for extra, added in (([], 10), (["--no-echo"], 0), (["--scale", "10"], 100)):
        without, withit = (run_cost_json(["--usage", str(path), *extra]) for path in (plain, echoed))
        for name in ("ably_rb", "ably_mau_2025"):
            ably, before = provider(withit, name)["units"], provider(without, name)["units"]
            assert ably["messages_per_day"] - before["messages_per_day"] == pytest.approx(added), (extra, name)
        for name in OTHERS:
            assert provider(withit, name)["units"] == provider(without, name)["units"], (extra, name)
    said = [line for line in provider(run_cost_json(["--usage", str(echoed)]), "ably_rb")["assumptions"]]
    assert any(line.endswith("; 10 realtime publishes a day measured echoed to their publisher: billed as deliveries")
               for line in said)  # fmt: skip
    quiet = provider(run_cost_json(["--usage", str(echoed), "--no-echo"]), "ably_rb")["assumptions"]
    # usage_day's 12 messages of 100 bytes, 10 of them echoed: 10 × (100 + 150) of its 17,500 bytes written, 14.3%
    # (test_cost_echo_bytes.py)
    said_off = "echoed to their publisher: not billed (--no-echo), nor their bytes, 2,500 bytes a day, 14.3% of the"
    assert any(said_off in line for line in quiet)


def test_echo_deliveries_of_a_day_measured_in_part_are_extrapolated_with_the_rest(tmp_path: Path) -> None:
    """A day measured in part is extrapolated to a whole one; a day without the field, an older emulator's, counted
    its echoes among its deliveries, so it adds none apart, while the days that have the field keep theirs (one day
    without it dropped every echo of the file, and the Ably bill with them)."""
    half = usage_file(tmp_path, {"2026-11-29": measured(usage_day(echo_deliveries=4), [[0, 43_200]])})
    assert workload_from_usage(load_usage(half)).echo_deliveries_per_day == 8
    (tmp_path / "mixed").mkdir()
    mixed = usage_file(
        tmp_path / "mixed",
        {
            "2026-11-29": measured(usage_day(echo_deliveries=4), WHOLE_DAY),
            "2026-11-30": measured(usage_day(), WHOLE_DAY),
        },
    )
    # A day without the field (an older emulator's) holds its echoes among its deliveries: nothing is added apart for
    # it, but the 4 echoes of the day that has it are not among any delivery. They were dropped with the older day's.
    workload = workload_from_usage(load_usage(mixed))
    assert workload.echo_deliveries_per_day == 2  # 4 over the 2 days measured
    assert (
        "echo_deliveries recorded on 1 of the 2 app-days (older emulators count the echoes among the deliveries): the "
        "others add none apart"
    ) in workload.origin
    (tmp_path / "older").mkdir()
    older = usage_file(
        tmp_path / "older",
        {"2026-11-29": measured(usage_day(), WHOLE_DAY), "2026-11-30": measured(usage_day(), WHOLE_DAY)},
    )
    without, withit = (run_cost_json(["--usage", str(path)]) for path in (older, mixed))
    for name in ("ably_rb", "ably_mau_2025"):
        ably, before = provider(withit, name)["units"], provider(without, name)["units"]
        assert ably["messages_per_day"] - before["messages_per_day"] == pytest.approx(2), name


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"echo_deliveries": -1},
            "apps.chat.days.2026-11-29: field 'echo_deliveries' must be a whole number ≥ 0, got -1",
        ),
        (
            {"echo_deliveries": 2.5},
            "apps.chat.days.2026-11-29: field 'echo_deliveries' must be a whole number ≥ 0, got 2.5",
        ),
        (
            {"publishes": 0, "deliveries": 0, "echo_deliveries": 3},
            "apps.chat.days.2026-11-29: field 'echo_deliveries' is 3 but 'publishes' is 0",
        ),
    ],
)
def test_a_malformed_echo_count_names_the_file_the_app_the_day_and_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], overrides: dict[str, float], message: str
) -> None:
    path = usage_file(tmp_path, {"2026-11-29": usage_day(**overrides)})  # type: ignore[arg-type]
    assert refused(["cost", "--usage", str(path)], capsys) == f"usage file {path}: {message}"


def test_measured_echo_deliveries_load_a_self_hosted_node_as_deliveries(prices: Prices) -> None:
    """The emulator echoes an Ably client's publish as Ably does: 1,000 echoes a second at the peak are 1,000
    deliveries a second more for the nodes (6 ms of CPU), and none with --no-echo."""
    busy = Workload(connections=2_000, publishes_per_day=86_400, subscribers_per_publish=1_000)
    echoing = replace(busy, echo_deliveries_per_day=1_000 * 86_400)
    peak = busy.per_second_at_peak(1_000 * 86_400)
    for name in ("hetzner", "digitalocean"):
        plain, echoed, off = (estimate(w, prices).provider(name) for w in (busy, echoing, replace(echoing, echo=False)))
        added = echoed.unit("peak_deliveries_per_second") - plain.unit("peak_deliveries_per_second")
        assert added == pytest.approx(peak), name
        cores = echoed.unit("cpu_cores_at_peak") - plain.unit("cpu_cores_at_peak")
        assert cores == pytest.approx(peak * prices.capacity.cpu_us_per_delivery / 1e6), name
        assert off.units == plain.units, name


# --- 2. peak factors and --scale -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        # With --publishes-per-second alone the publishes a day are derived from the peak factors: they were used
        # first, and the error named --publishes-per-day (never given) or a day of 8.64e+305 publishes.
        (["--peak-day-factor", "-1"], "peak_day_factor (--peak-day-factor) must be ≥ 1 (a peak is at least the "
                                      "average), got -1"),
        (["--peak-day-factor", "nan"], "peak_day_factor (--peak-day-factor) must be a finite number ≥ 1, got nan"),
        (["--peak-day-factor", "1e-300"], "peak_day_factor (--peak-day-factor) must be ≥ 1 (a peak is at least the "
                                          "average), got 1e-300"),
        (["--peak-factor", "nan"], "peak_factor (--peak-factor) must be a finite number ≥ 1, got nan"),
        (["--peak-factor", "0.5"], "peak_factor (--peak-factor) must be ≥ 1 (a peak is at least the average), got "
                                   "0.5"),
        # With --publishes-per-day too, the peak factor follows from the busiest day: a negative or infinite
        # --peak-day-factor read as "more than the busiest day holds, … = -2e+06 publishes" or "inf/s".
        (["--publishes-per-day", "1000000", "--peak-day-factor", "-2"],
         "peak_day_factor (--peak-day-factor) must be ≥ 1 (a peak is at least the average), got -2"),
        (["--publishes-per-day", "1000000", "--peak-day-factor", "inf"],
         "peak_day_factor (--peak-day-factor) must be a finite number ≥ 1, got inf"),
    ],
)  # fmt: skip
def test_a_peak_factor_is_refused_before_publishes_are_derived_from_it(
    capsys: pytest.CaptureFixture[str], flags: list[str], message: str
) -> None:
    argv = ["cost", "--connections", "5", "--publishes-per-second", "10", *flags]
    assert refused(argv, capsys) == f"workload field {message}"


@pytest.mark.parametrize("flag", ["--peak-day-factor", "--peak-factor"])
@pytest.mark.parametrize("value", ["0.5", "inf", "-3"])
def test_a_peak_factor_alone_is_refused_naming_its_flag(
    capsys: pytest.CaptureFixture[str], flag: str, value: str
) -> None:
    error = refused(["cost", "--connections", "5", flag, value], capsys)
    assert error.startswith(f"workload field {flag[2:].replace('-', '_')} ({flag}) must be")


def test_a_tiny_scale_leaves_one_connection_not_none() -> None:
    """500 connections × 1e-12 was 0 connections (the rounding that drops a float's noise dropped it), so no
    crossover was searched and the plot was refused; any share of a user is one connection, as ×0.001 always was."""
    workload = Workload(connections=500, publishes_per_day=20_000, subscribers_per_publish=49, channels=40, mau=5000)
    tiny = workload.scaled(1e-12)
    assert (tiny.connections, tiny.channels, tiny.mau, tiny.subscribers_per_publish) == (1, 1, 1, 1)
    assert tiny.origin.endswith("scaled ×1e-12 (fan-out capped at the 1 connections)")
    assert workload.scaled(0.2).connections == 100  # 100.00000000000001 is still 100
    assert workload.scaled(5e-324).connections == 1  # the least float above 0
    assert Workload(connections=0).scaled(1e-12).connections == 0  # none stays none

    answer = run_cost_json(["--connections", "500", "--publishes-per-day", "20000", "--scale", "1e-12"])
    assert answer["workload"]["connections"] == 1
    assert provider(answer, "pusher")["status"] == "fits"


@pytest.mark.parametrize(("value", "shown"), [("0", "0.0"), ("-1", "-1.0"), ("nan", "nan"), ("inf", "inf")])
def test_a_scale_that_is_no_positive_number_is_refused(
    capsys: pytest.CaptureFixture[str], value: str, shown: str
) -> None:
    assert refused(["cost", "--connections", "5", "--scale", value], capsys) == (
        f"scale (--scale) must be a number > 0, got {shown}"
    )


# --- 3. a free plan against an unknown price -------------------------------------------------------------------------


def test_a_free_plan_and_an_unknown_price_read_differently() -> None:
    answer = run_cost_json(["--connections", "50", "--provider", "pusher", "--provider", "ably_mau_2026"])
    free, unknown = provider(answer, "pusher"), provider(answer, "ably_mau_2026")
    assert (free["status"], free["plan"], free["monthly_usd"]) == ("fits", "sandbox", 0.0)
    assert (unknown["status"], unknown["plan"], unknown["monthly_usd"]) == ("unknown", None, None)
    assert "unknown in the pricing data: mau, price_usd_month" in unknown["limit"]


# --- 5. the plot's footer --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [None, "acme-internal-" + "negotiated" * 30])
def test_the_plot_footer_wraps_inside_the_figure(tmp_path: Path, prices: Prices, version: str | None) -> None:
    """The footer (pricing version and dates, nodes, days) was one line of 7-point text, longer than the 12-inch
    figure: it ran off the right edge, and a pricing file's long version ran further. It is wrapped in lines the
    figure holds, and the layout makes room for them under the axes."""
    from matplotlib.image import imread

    chosen = prices if version is None else replace(prices, version=version)
    path = tmp_path / "cost.png"
    plot_costs(Workload(connections=500, publishes_per_day=20_000, subscribers_per_publish=49), chosen, path, points=9)
    pixels = imread(path)[..., :3]
    height, width = pixels.shape[:2]
    footer = pixels[int(height * 0.9) :]  # under the axis label: the footer's lines
    ink = footer.min(axis=2) < 0.5
    assert ink[:, : width // 2].any()  # the footer is drawn
    assert not ink[:, -4:].any()  # and stops short of the right edge
    assert not ink[-2:].any()  # and of the bottom
