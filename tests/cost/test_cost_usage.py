"""The usage file (the emulator meter's output, issue 4): strict loading, and how it becomes a workload.

The meter does not exist yet, so these tests write the files themselves, in the documented format.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cost_helpers import usage_day

from relay.cost import Prices, Usage, UsageDay, estimate, load_usage, parse_usage, workload_from_usage
from relay.errors import ConfigError


def document(*days: dict[str, int], app: str = "1", unique_users: int | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"days": {f"2026-11-{29 + i}": day for i, day in enumerate(days)}}
    if unique_users is not None:
        entry["unique_users"] = unique_users
    return {"version": 1, "generated_by": "test", "apps": {app: entry}}


def write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "usage.json"
    path.write_text(json.dumps(data))
    return path


def test_a_usage_file_round_trips(tmp_path: Path) -> None:
    data = document(usage_day(), usage_day(publishes=20, deliveries=100), unique_users=7)
    usage = load_usage(write(tmp_path, data))
    assert usage.origin == str(tmp_path / "usage.json")
    assert usage.apps["1"].unique_users == 7
    day = usage.apps["1"].days["2026-11-29"]
    assert isinstance(day, UsageDay)
    assert day.pusher_messages == 10 + 50 + 2 + 8 + 12 + 3 + 1
    assert usage.to_dict() == data


def test_the_users_sketch_the_emulator_writes_is_carried_back(tmp_path: Path) -> None:
    data = document(usage_day(), unique_users=7)
    data["apps"]["1"]["users_sketch"] = "eNrtwTEBAAAAwqD1T20MH6AAAAAAAAAAAAAAAAAAAACAtwFAAAAB"
    usage = load_usage(write(tmp_path, data))
    assert usage.apps["1"].unique_users == 7
    assert usage.to_dict() == data


def test_the_average_day_becomes_the_workload(tmp_path: Path) -> None:
    quiet = usage_day()
    busy = usage_day(publishes=30, deliveries=150, payload_bytes=32 * 100, peak_connections=9, bytes_out=40_000)
    workload = workload_from_usage(load_usage(write(tmp_path, document(quiet, busy, unique_users=11))))
    assert workload.connections == 9  # the highest day's peak
    assert workload.channels == 2
    assert workload.publishes_per_day == 20  # (10 + 30) / 2 days
    assert workload.subscribers_per_publish == 5  # 200 deliveries / 40 publishes
    assert workload.client_events_per_day == 2 and workload.client_event_recipients == 4
    assert workload.presence_events_per_day == 4 and workload.presence_subscribers == 3
    assert workload.webhooks_per_day == 3 and workload.api_requests_per_day == 1
    assert workload.message_bytes == 100  # 4,400 bytes / 44 messages
    assert workload.connection_minutes_per_day == 6 * 1440
    assert workload.bytes_out_per_day == (70 * 250 + 40_000) / 2
    # 11 users seen in 2 days: a lower bound of the MAU (a month has more), not the MAU
    assert (workload.mau, workload.users_seen, workload.users_seen_seconds) == (None, 11, 2 * 86_400)
    # Pusher's count on the busy day (206) against the average day (146) is the peak-day factor
    assert workload.peak_day_factor == pytest.approx(206 / 146)
    assert workload.origin.startswith(f"measured: {tmp_path / 'usage.json'}, app 1, 2 days (2026-11-29 to 2026-11-30)")


def test_a_measured_day_is_counted_by_each_providers_rules(tmp_path: Path, prices: Prices) -> None:
    workload = workload_from_usage(load_usage(write(tmp_path, document(usage_day()))))
    result = estimate(workload, prices)
    assert result.provider("pusher").unit("messages_per_day") == 86  # the meter's own Pusher count
    # Ably: 10 × (1 + 5) + 2 × (1 + 4 + 1 echo) + 3 webhooks + 4 × (1 + 3) presence
    assert result.provider("ably_rb").unit("messages_per_day") == 60 + 12 + 3 + 16
    # Supabase: 10 × 6 + 2 × 5 + 4 × 4
    assert result.provider("supabase").unit("messages_per_day") == 86
    assert result.provider("hetzner").unit("egress_gib_per_month") == pytest.approx(70 * 250 * 30 / 2**30)


def test_peak_second_and_chunks_come_from_the_optional_fields(tmp_path: Path) -> None:
    day = usage_day(peak_publishes_per_second=3, units_5kib=14, units_2kib=20, payload_bytes=30_000)
    workload = workload_from_usage(load_usage(write(tmp_path, document(day))))
    assert workload.size_units_5kib == pytest.approx(14 / 12)
    assert workload.size_units_2kib == pytest.approx(20 / 12)
    # 3 messages in the busiest second against 12 a day on average
    assert workload.peak_factor == pytest.approx(3 * 86_400 / 12)
    assert workload.per_second_at_peak(workload.messages_sent) == pytest.approx(3)


def test_apps_are_summed_unless_one_is_chosen(tmp_path: Path) -> None:
    data = document(usage_day(), app="a")
    b_day = usage_day(peak_connections=4, publishes=30, deliveries=30, client_event_deliveries=6)  # 3 others each
    data["apps"]["b"] = {"days": {"2026-11-29": b_day}}
    usage = load_usage(write(tmp_path, data))
    both = workload_from_usage(usage)
    assert (both.connections, both.publishes_per_day, both.subscribers_per_publish) == (10, 40, 2)
    assert both.mau is None and both.users_seen is None  # app b has no unique_users
    only_b = workload_from_usage(usage, app="b")
    assert (only_b.connections, only_b.publishes_per_day) == (4, 30)
    with pytest.raises(ConfigError, match=r"no app 'c' \(--app\); it has: a, b"):
        workload_from_usage(usage, app="c")


def test_an_empty_day_is_a_valid_workload(tmp_path: Path, prices: Prices) -> None:
    zero = dict.fromkeys(usage_day(), 0)
    workload = workload_from_usage(load_usage(write(tmp_path, document(zero))))
    assert workload.connections == 0 and workload.message_bytes == 0
    assert estimate(workload, prices).provider("pusher").plan == "sandbox"


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: d.update(version=3), "usage file U: field 'version' must be 1 or 2, got 3"),
        (lambda d: d.update(version=True), "usage file U: field 'version' must be 1 or 2, got True"),  # was read as 1
        (lambda d: d.update(version=2.0), "usage file U: field 'version' must be 1 or 2, got 2.0"),
        (lambda d: d.update(apps={}), "usage file U: field 'apps' must be an object with at least one app"),
        (lambda d: d.update(meter="x"), "usage file U: unknown field 'meter'"),
        (
            lambda d: d["apps"].update({" ": d["apps"]["1"]}),
            "usage file U: apps: an app's id must not be blank, got ' '",
        ),
        (lambda d: d["apps"]["1"].update(unique_users=-1), "apps.1: field 'unique_users' must be a whole number ≥ 0"),
        (
            lambda d: d["apps"]["1"].update(unique_users=3, users_sketch=["ann"]),
            "apps.1: field 'users_sketch' must be a string, beside unique_users, as the emulator writes it",
        ),
        (
            lambda d: d["apps"]["1"].update(users_sketch="eNrtwTEB"),
            "apps.1: field 'users_sketch' must be a string, beside unique_users, as the emulator writes it",
        ),
        (lambda d: d["apps"]["1"].update(days={}), "apps.1: field 'days' must be an object with at least one UTC date"),
        (
            lambda d: d["apps"]["1"]["days"].update({"29/11/2026": usage_day()}),
            "apps.1.days.29/11/2026: a day is a UTC date YYYY-MM-DD",
        ),
        (
            lambda d: d["apps"]["1"]["days"]["2026-11-29"].pop("bytes_out"),
            "apps.1.days.2026-11-29: missing required field 'bytes_out'",
        ),
        (
            lambda d: d["apps"]["1"]["days"]["2026-11-29"].update(publishes=1.5),
            "apps.1.days.2026-11-29: field 'publishes' must be a whole number ≥ 0, got 1.5",
        ),
        (
            lambda d: d["apps"]["1"]["days"]["2026-11-29"].update(webhooks=True),
            "apps.1.days.2026-11-29: field 'webhooks' must be a whole number ≥ 0, got True",
        ),
        (
            lambda d: d["apps"]["1"]["days"]["2026-11-29"].update(deliverys=3),
            "apps.1.days.2026-11-29: unknown field 'deliverys'",
        ),
        (
            lambda d: d["apps"]["1"]["days"]["2026-11-29"].update(publishes=0),
            "apps.1.days.2026-11-29: field 'deliveries' is 50 but 'publishes' is 0",
        ),
        (
            lambda d: d["apps"]["1"]["days"]["2026-11-29"].update(units_5kib=3),
            "field 'units_5kib' is 3, but 12 messages of 1200 bytes in all make between 12 and 12 units of 5 KiB",
        ),
    ],
)
def test_invalid_usage_files_name_the_field(mutate: Any, expected: str) -> None:
    data = document(usage_day())
    mutate(data)
    with pytest.raises(ConfigError) as error:
        parse_usage(data, origin="U")
    assert expected in error.value.message


def test_a_day_may_hold_deliveries_of_publishes_another_day_or_a_lost_node_counted() -> None:
    """A cluster counts a publish where it was received and its deliveries where they were written: a node killed
    between checkpoints leaves, on a quiet day, deliveries without their publishes (and client events, and presence
    changes). The file is read, and each ratio is taken over the days summed: (50 + 7) deliveries ÷ 10 publishes."""
    quiet = usage_day(
        publishes=0, client_events=0, presence_events=0, payload_bytes=0, units_5kib=0, units_2kib=0,
        peak_publishes_per_second=0, deliveries=7, client_event_deliveries=3, presence_deliveries=2,
        delivered_units_5kib=30,
    )  # fmt: skip
    workload = workload_from_usage(parse_usage(document(usage_day(), quiet)))
    assert workload.subscribers_per_publish == pytest.approx(57 / 10)
    assert workload.client_event_recipients == pytest.approx(11 / 2)
    assert workload.presence_subscribers == pytest.approx(14 / 4)


@pytest.mark.parametrize(
    ("field", "sent", "count"),
    [("deliveries", "publishes", 50), ("client_event_deliveries", "client_events", 8),
     ("presence_deliveries", "presence_events", 12)],
)  # fmt: skip
def test_deliveries_without_anything_delivered_on_any_day_are_refused_naming_the_days_summed(
    field: str, sent: str, count: int
) -> None:
    """Over the days summed, deliveries need something delivered: with none on any of the app's days the counts
    contradict each other however the nodes were stopped."""
    no_messages = {
        "publishes": 0, "client_events": 0, "payload_bytes": 0, "units_5kib": 0, "units_2kib": 0,
        "peak_publishes_per_second": 0, "deliveries": 0, "client_event_deliveries": 0,
    }  # fmt: skip
    if sent == "presence_events":
        nothing_sent = {sent: 0}
    else:
        nothing_sent = {**no_messages, field: count, "delivered_units_5kib": count}
    days = [usage_day(**nothing_sent), usage_day(**nothing_sent)]
    with pytest.raises(ConfigError) as error:
        parse_usage(document(*days), origin="U")
    assert (
        error.value.message
        == f"usage file U: apps.1, its 2 days summed: field {field!r} is {2 * count} but {sent!r} is 0"
    )


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"usage file .*missing.json does not exist"):
        load_usage(tmp_path / "missing.json")
    path = tmp_path / "usage.json"
    path.write_text('{"version": 1,')
    with pytest.raises(ConfigError, match=r"is not valid JSON: .* at line 1 column 15"):
        load_usage(path)
    path.write_text("[]")
    with pytest.raises(ConfigError, match="must be a JSON object, got list"):
        load_usage(path)


def test_usage_can_be_built_in_code_for_the_meter() -> None:
    usage = Usage(apps={"1": parse_usage(document(usage_day())).apps["1"]}, generated_by="meter")
    assert parse_usage(usage.to_dict()).apps == usage.apps
