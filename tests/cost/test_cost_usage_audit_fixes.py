"""Problems an audit of `relay cost --usage` and of the usage file found (partial days priced as whole days,
impossible counts accepted, a summary or a BOM met with Python's words, Ably webhooks counted in chunks, no figure
for a managed provider that does not fit), each pinned by a figure worked out by hand from docs/cost.md."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest
from cost_helpers import provider, refused, run_cost, run_cost_json, usage_day

from relay.cli import main
from relay.cost import load_usage, parse_usage, workload_from_usage
from relay.errors import ConfigError

WHOLE_DAY = [[0, 86_400]]
AFTERNOON = [[43_200, 86_400]]  # 12:00 to midnight UTC
MORNING = [[0, 43_200]]  # midnight to 12:00 UTC


def usage_file(tmp_path: Path, days: dict[str, dict[str, Any]], *, version: int = 2, app: str = "chat") -> Path:
    path = tmp_path / "usage.json"
    path.write_text(json.dumps({"version": version, "apps": {app: {"days": days}}}))
    return path


def measured(day: dict[str, int], seconds: list[list[int]]) -> dict[str, Any]:
    return {**day, "measured": seconds}


# --- 1. partly measured days are extrapolated to whole days -----------------------------------------------------------

# The audit's steady deployment (/tmp/auditE/partial_day.py): 24 h from 12:00 UTC to 12:00 UTC the next day, 100,000
# publishes to 10 subscribers each, 400 connections. The meter splits it into two half days.
HALF_DAY = usage_day(
    peak_connections=400,
    peak_channels=40,
    connection_minutes=400 * 720,
    channel_minutes=40 * 720,
    publishes=50_000,
    deliveries=500_000,
    client_events=0,
    client_event_deliveries=0,
    presence_events=0,
    presence_deliveries=0,
    webhooks=0,
    api_requests=0,
    payload_bytes=50_000 * 500,
    bytes_out=500_000 * 700,
    peak_publishes_per_second=3,
)


def test_a_day_measured_from_noon_to_noon_is_priced_as_the_day_it_was(tmp_path: Path) -> None:
    """1,100,000 Pusher messages in the 24 h measured: over Startup's 1,000,000 a day, so Pro ($99), not Startup
    ($49) as two half days taken for whole ones made it."""
    path = usage_file(
        tmp_path, {"2026-11-29": measured(HALF_DAY, AFTERNOON), "2026-11-30": measured(HALF_DAY, MORNING)}
    )
    pusher = provider(run_cost_json(["--usage", str(path), "--provider", "pusher"]), "pusher")
    assert pusher["units"]["messages_per_day"] == 1_100_000
    assert (pusher["plan"], pusher["monthly_usd"]) == ("pro", 99.0)
    workload = workload_from_usage(load_usage(path))
    assert workload.connection_minutes_per_day == 400 * 1440  # 400 connections all day, as measured
    assert workload.peak_day_factor == 1  # no whole day measured: nothing says one day is busier than another
    assert "; 24 h measured, " in workload.origin
    assert "2 of the 2 days in part" in workload.origin
    assert "extrapolated to whole days" in workload.origin


def test_a_file_without_the_time_measured_is_read_as_whole_days_and_says_so(tmp_path: Path) -> None:
    """A version 1 file (written before the meter recorded the time it measured) still loads: its days are taken
    as measured in full, and the workload says so."""
    path = usage_file(tmp_path, {"2026-11-29": HALF_DAY, "2026-11-30": HALF_DAY}, version=1)
    pusher = provider(run_cost_json(["--usage", str(path), "--provider", "pusher"]), "pusher")
    assert (pusher["units"]["messages_per_day"], pusher["plan"]) == (550_000, "startup")
    origin = workload_from_usage(load_usage(path)).origin
    assert "the time measured is not recorded" in origin and "taken as measured in full" in origin


def test_a_five_second_run_is_extrapolated_and_warned_about(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """5 s measured: 10 publishes are 10 × 86,400 ÷ 5 = 172,800 a day, and the busiest second (5 messages) against
    that day's 12 × 17,280 messages a peak factor of 2.08, not 36,000. Connection-minutes (6 connections rounded up
    to a minute each) would extrapolate to 12 times what 6 connections held all day make: at most 6 × 1,440."""
    day = usage_day(connection_minutes=6, channel_minutes=2, peak_publishes_per_second=5)
    path = usage_file(tmp_path, {"2026-11-30": measured(day, [[43_200, 43_205]])})
    workload = workload_from_usage(load_usage(path))
    assert workload.publishes_per_day == 10 * 17_280
    assert workload.peak_factor == pytest.approx(5 * 86_400 / (12 * 17_280))
    assert workload.connection_minutes_per_day == 6 * 1440
    assert workload.channel_minutes_per_day == 2 * 1440
    assert "5 s measured" in workload.origin
    assert "at most the peak held all day" in workload.origin
    assert "less than an hour measured" in workload.origin
    assert main(["cost", "--usage", str(path), "--provider", "pusher"]) == 0
    captured = capsys.readouterr()
    assert captured.err.startswith(f"relay cost: warning: {path}: less than an hour measured (5 s)")
    assert "5 s measured" in captured.out  # among the assumptions printed under the table


def test_the_average_day_weighs_the_time_measured_and_the_busiest_day_is_a_whole_one(tmp_path: Path) -> None:
    """A whole busy day (206 Pusher messages) and the morning of the next (86 in 12 h): 292 messages in 1.5 days
    measured, 194.7 a day; the busiest day is the whole one, 206, not the half day's 172 extrapolated."""
    busy = usage_day(publishes=30, deliveries=150, payload_bytes=32 * 100)
    path = usage_file(tmp_path, {"2026-11-29": measured(busy, WHOLE_DAY), "2026-11-30": measured(usage_day(), MORNING)})
    workload = workload_from_usage(load_usage(path))
    assert workload.publishes_per_day == pytest.approx(40 / 1.5)
    assert workload.subscribers_per_publish == 5
    assert workload.peak_day_factor == pytest.approx(206 / (292 / 1.5))
    assert "36 h measured" in workload.origin
    assert "1 of the 2 days in part (2026-11-30: 12 h)" in workload.origin


def test_each_app_is_averaged_over_its_own_time(tmp_path: Path) -> None:
    """App b, added to the config for the last 12 h of the file's two days, published 5 in those 12 h: 10 a day,
    added to app a's 10 a day (not 25 publishes over 2 days)."""
    path = usage_file(
        tmp_path, {"2026-11-29": measured(usage_day(), WHOLE_DAY), "2026-11-30": measured(usage_day(), WHOLE_DAY)}
    )
    data = json.loads(path.read_text())
    data["apps"]["b"] = {"days": {"2026-11-30": measured(usage_day(publishes=5, deliveries=25), AFTERNOON)}}
    path.write_text(json.dumps(data))
    workload = workload_from_usage(load_usage(path))
    assert workload.publishes_per_day == 10 + 10
    assert workload.connections == 12  # the peaks as measured: 6 + 6 on the day both apps served


@pytest.mark.parametrize(
    ("seconds", "message"),
    [
        ("all day", "field 'measured' must be a list of [from, to] pairs of seconds after 00:00 UTC, got 'all day'"),
        ([], "field 'measured' must be a list of [from, to] pairs of seconds after 00:00 UTC, got []"),
        ([[0, 86_401]], "field 'measured' has [0, 86401]: from and to must be 0 ≤ from < to ≤ 86400"),
        ([[10, 10]], "field 'measured' has [10, 10]: from and to must be 0 ≤ from < to ≤ 86400"),
        ([[0, 1.5]], "field 'measured' has [0, 1.5]: from and to must be 0 ≤ from < to ≤ 86400"),
        ([[0, 100], [50, 200]], "field 'measured' has [50, 200] after [0, 100]: the spans must be in order, apart"),
    ],
)
def test_a_bad_measured_field_is_refused_naming_the_day(tmp_path: Path, seconds: Any, message: str) -> None:
    path = usage_file(tmp_path, {"2026-11-29": measured(usage_day(), seconds)})
    with pytest.raises(ConfigError) as error:
        load_usage(path)
    assert error.value.message == f"usage file {path}: apps.chat.days.2026-11-29: {message}"


def test_the_version_says_which_fields_a_file_may_have(tmp_path: Path) -> None:
    path = usage_file(tmp_path, {"2026-11-29": measured(usage_day(), WHOLE_DAY)}, version=1)
    with pytest.raises(ConfigError, match="field 'measured' is new in version 2, but the file says version 1"):
        load_usage(path)
    path = usage_file(tmp_path, {"2026-11-29": usage_day()}, version=3)
    with pytest.raises(ConfigError, match="field 'version' must be 1 or 2, got 3"):
        load_usage(path)
    document = json.loads(usage_file(tmp_path, {"2026-11-29": measured(usage_day(), MORNING)}).read_text())
    assert parse_usage(document).to_dict() == document  # written back as read


# --- 2. impossible counts ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("minutes", "peak"), [("connection_minutes", "peak_connections"), ("channel_minutes", "peak_channels")]
)
def test_minutes_without_a_peak_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], minutes: str, peak: str
) -> None:
    """The audit's conn0.json: 99,999 connection-minutes on a day whose peak is 0 connections."""
    path = usage_file(tmp_path, {"2026-11-29": usage_day(**{minutes: 99_999, peak: 0})}, version=1)
    assert refused(["cost", "--usage", str(path)], capsys) == (
        f"usage file {path}: apps.chat.days.2026-11-29: field {minutes!r} is 99999 but {peak!r} is 0: a minute counted "
        "is a minute something was open"
    )


# --- 3. a summary, and a byte order mark ------------------------------------------------------------------------------


def test_the_usage_summary_is_named_as_such(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """What GET /usage?summary=1 returns (the audit's summary.json) is not a usage file: say what it is."""
    path = tmp_path / "summary.json"
    day = {"pusher_messages": 90, "ably_messages": 101, "peak_connections": 5, "connection_minutes": 5}
    path.write_text(json.dumps({"42": {"2026-11-30": {**day, "bytes_out": 46685}}}))
    assert refused(["cost", "--usage", str(path)], capsys) == (
        f"usage file {path}: this is the summary GET /usage?summary=1 returns, not a usage file: use GET /usage "
        "(without summary=1) or the file relay emulator --usage-file writes"
    )


def test_a_usage_file_saved_with_a_byte_order_mark_is_read(tmp_path: Path) -> None:
    path = usage_file(tmp_path, {"2026-11-29": usage_day()}, version=1)
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert load_usage(path).apps["chat"].days["2026-11-29"].publishes == 10


# --- 4. Ably webhooks -------------------------------------------------------------------------------------------------


def test_an_ably_webhook_is_one_message_whatever_the_message_size() -> None:
    """Reference §F.2 ("Integration or webhook delivery = 1 per target"): 10 webhooks a day are 10 messages, not 10 ×
    ceil(16 KiB ÷ 5 KiB) = 40, however large the published messages are."""
    result = run_cost_json(
        ["--connections", "1", "--webhooks-per-day", "10", "--message-size", "16KiB", "--provider", "ably_rb"]
    )
    assert provider(result, "ably_rb")["units"]["messages_per_day"] == 10


# --- 5. a managed provider that does not fit still has a figure -------------------------------------------------------

TEN_TIMES = [
    "--connections", "10000", "--publishes-per-day", "100000", "--subscribers-per-publish", "500", "--channels", "50",
    "--peak-factor", "5", "--scale", "10", "--provider", "pusher", "--provider", "ably_rb",
]  # fmt: skip


def largest_listed(entry: dict[str, Any]) -> dict[str, Any]:
    listed: dict[str, Any] = [plan for plan in entry["plans"] if plan["status"] == "does_not_fit"][-1]
    return listed


def test_a_managed_provider_that_does_not_fit_shows_its_list_rate_floor_everywhere() -> None:
    """At 10× the audit's medium workload no listed plan of Pusher or Ably holds it. The largest listed plan at list
    rates (Pusher Growth Plus, $1,199; Ably Pro with its usage) is the floor of what the workload costs there."""
    result = run_cost_json(TEN_TIMES)
    floors = {}
    for provider_id, plan_id in (("pusher", "growth_plus"), ("ably_rb", "pro")):
        entry = provider(result, provider_id)
        assert (entry["status"], entry["monthly_usd"]) == ("does_not_fit", None)
        assert largest_listed(entry)["plan"] == plan_id
        floors[provider_id] = entry["list_rate_usd"]
        assert floors[provider_id] == largest_listed(entry)["monthly_usd"] > 0
    assert floors["pusher"] == 1199.0
    table = run_cost(TEN_TIMES)
    for floor in floors.values():
        assert f"≥ ${floor:,.2f}" in table
    assert table.count("at list rates") == 2
    rows = {row["provider"]: row for row in csv.DictReader(io.StringIO(run_cost([*TEN_TIMES, "--format", "csv"])))}
    assert {provider_id: float(rows[provider_id]["list_rate_usd"]) for provider_id in floors} == floors
    assert rows["pusher"]["monthly_usd"] == ""


def test_a_floor_comes_from_the_largest_priced_plan_when_the_largest_is_custom_priced() -> None:
    """300 KB messages break every plan of Ably and PubNub's MAU tiers, their custom-priced top plan included: the
    floor was left out. It is the largest plan with a list price, and the reason says the top one's price is custom."""
    result = run_cost_json(["--connections", "100", "--publishes-per-day", "1000", "--message-size", "300KB"])
    for provider_id, top in (("ably_rb", "Enterprise"), ("pubnub_mau", "Larger tiers")):
        entry = provider(result, provider_id)
        assert (entry["status"], entry["monthly_usd"]) == ("does_not_fit", None)
        pro = next(plan for plan in entry["plans"] if plan["plan"] == "pro")  # both name their largest priced plan so
        assert pro["status"] == "does_not_fit" and entry["list_rate_usd"] == pro["monthly_usd"] > 300
        assert entry["limit"].endswith(f"on {top}, the largest listed plan (custom price, contact sales)")


def test_a_provider_that_fits_has_no_list_rate_floor() -> None:
    result = run_cost_json(["--connections", "500", "--publishes-per-day", "20000", "--subscribers-per-publish", "49"])
    assert {entry["list_rate_usd"] for entry in result["providers"]} == {None}


def test_a_day_with_a_restart_in_it_is_still_a_busiest_day_and_its_minutes_are_not_said_capped(tmp_path: Path) -> None:
    """A 5-second restart at 01:00 every day left no day measured in full: --peak-day-factor fell to 1 and Pusher's
    daily cap was checked against the average day (Pro instead of Business). A day measured for 23 h or more stands
    for a whole one, extrapolated to 24 h; the few seconds do not make the minutes' cap worth saying."""
    restarted = [[0, 3_600], [3_605, 86_400]]
    days = {
        "2026-11-28": measured(usage_day(publishes=200, deliveries=200), restarted),
        "2026-11-29": measured(usage_day(publishes=2_500, deliveries=2_500), restarted),
        "2026-11-30": measured(usage_day(publishes=200, deliveries=200), restarted),
    }
    for day in days.values():
        day.update(peak_connections=10, connection_minutes=10 * 1_440)
    usage = load_usage(usage_file(tmp_path, days))
    workload = workload_from_usage(usage)
    pusher_messages = [day.pusher_messages for day in usage.apps["chat"].days.values()]
    assert max(pusher_messages) > 5_000  # every day measured the same 86,395 s: the ratio is the counts'
    assert workload.peak_day_factor == pytest.approx(max(pusher_messages) / (sum(pusher_messages) / 3))
    assert "no busiest day" not in workload.origin
    assert "minutes extrapolated" not in workload.origin


def test_a_burst_on_a_day_measured_in_part_makes_the_busiest_day_at_least_that_burst(tmp_path: Path) -> None:
    """A quiet whole day (1 publish) and an hour with 1,000 publishes in one second: the busiest whole day is the
    quiet one, against whose rate the burst is a peak factor of about 90,000, more than a day's 86,400 seconds hold
    (refused as --peak-factor). The day of the burst holds at least the burst: the busiest day is raised to it, and the
    peak second is still the 1,000 measured."""
    quiet = usage_day(publishes=1, deliveries=5, client_events=0, client_event_deliveries=0, presence_events=0)
    quiet.update(presence_deliveries=0, webhooks=0, api_requests=0, payload_bytes=100)
    burst = {**quiet, "publishes": 1_000, "deliveries": 5_000, "payload_bytes": 100_000}
    burst.update(peak_publishes_per_second=1_000, connection_minutes=6 * 60, channel_minutes=2 * 60)
    days = {"2026-11-28": measured(quiet, WHOLE_DAY), "2026-11-29": measured(burst, [[0, 3_600]])}
    workload = workload_from_usage(load_usage(usage_file(tmp_path, days)))
    assert workload.peak_factor == 86_400
    assert workload.per_second_at_peak(workload.publishes_per_day) == pytest.approx(1_000)
    assert workload.peak_day_factor * workload.publishes_per_day == pytest.approx(1_000)
