"""The usage meter records, per UTC day, the seconds it measured (docs/emulator.md "Usage meter"), so that
`relay cost --usage` can tell a 5-second test run or half a day from a whole day. Runs serving at the same time
(workers, cluster nodes, a crashed run recovered from its checkpoint) measured the same seconds: the file counts them
once; runs in turn add theirs."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from relay.cost.usage import parse_usage
from relay.emulator.usage import AppMeter, add_peaks, check_usage_document, merge_documents, usage_document
from relay.emulator.usage_file import recover_usage, write_usage_file
from tests.conftest import StartEmulator
from tests.operations.support import APP, publish

MIDNIGHT = dt.datetime(2026, 11, 30, tzinfo=dt.UTC).timestamp()


def run(start: float, stop: float, publishes: int = 1) -> dict[str, Any]:
    """The usage document of a run of app 1 serving from ``start`` to ``stop``."""
    now = [start]
    meter = AppMeter("1", clock=lambda: now[0])
    now[0] = stop
    for _ in range(publishes):
        meter.published("news", "e", "x", 0, size=2)
    return usage_document([meter], "test")


def measured(document: dict[str, Any]) -> dict[str, list[list[int]]]:
    return {name: day.get("measured") for name, day in document["apps"]["1"]["days"].items()}


def test_the_meter_records_the_seconds_it_measured_split_at_utc_midnight() -> None:
    """A run from 30 s before midnight to 70.4 s after: the last 30 s of one day, the first 71 of the next (the
    second in progress counts: the meter was measuring in it)."""
    document = run(MIDNIGHT - 30.0, MIDNIGHT + 70.4)
    assert document["version"] == 2
    assert measured(document) == {"2026-11-29": [[86_370, 86_400]], "2026-11-30": [[0, 71]]}
    days = parse_usage(document).apps["1"].days
    assert (days["2026-11-29"].measured_seconds, days["2026-11-30"].measured_seconds) == (30, 71)


def test_a_quiet_day_the_run_spanned_is_a_day_measured_with_nothing_in_it() -> None:
    """A run from 23:00 one day to 01:00 two days later, publishing at its end only: the day between, with nothing
    in it, is in the file as a whole day measured (else `relay cost` would average over the busy hours alone)."""
    document = run(MIDNIGHT - 3600, MIDNIGHT + 86_400 + 3600)
    assert measured(document) == {
        "2026-11-29": [[82_800, 86_400]],
        "2026-11-30": [[0, 86_400]],
        "2026-12-01": [[0, 3601]],
    }
    assert document["apps"]["1"]["days"]["2026-11-30"]["publishes"] == 0


def test_a_clock_stepped_back_keeps_what_earlier_runs_measured() -> None:
    """A run whose wall clock was stepped back two hours before its usage was written measured nothing by the clock:
    added to the file, that day lost the 12 h an earlier run had measured (a span missing from either is unknown),
    and relay cost priced the day as measured in full. It keeps the second it started in."""
    earlier = run(MIDNIGHT, MIDNIGHT + 43_199.5)
    stepped_back = run(MIDNIGHT + 46_800, MIDNIGHT + 39_600)
    assert measured(stepped_back) == {"2026-11-30": [[46_800, 46_801]]}
    assert measured(merge_documents(earlier, stepped_back)) == {"2026-11-30": [[0, 43_200], [46_800, 46_801]]}


def test_runs_serving_together_measured_the_same_time_and_runs_in_turn_add_theirs() -> None:
    """Two workers from 10:00 to 10:10 (the second started a second later), then a restart from 11:00 to 11:10:
    20 minutes and a second measured, not 30 — the workers' counts add up, their time does not."""
    ten = MIDNIGHT + 10 * 3600
    first, second = run(ten, ten + 600), run(ten + 1, ten + 600)
    file = merge_documents(first, second, add_peaks({}, first))
    assert measured(file) == {"2026-11-30": [[36_000, 36_601]]}
    assert file["apps"]["1"]["days"]["2026-11-30"]["publishes"] == 2
    file = merge_documents(file, run(ten + 3600, ten + 4200))
    assert measured(file) == {"2026-11-30": [[36_000, 36_601], [39_600, 40_201]]}
    assert parse_usage(file).apps["1"].days["2026-11-30"].measured_seconds == 1202
    # The same runs merged in another order, or with no word of their overlap (a crashed worker's checkpoint), too.
    again = merge_documents(merge_documents(run(ten + 3600, ten + 4200), second), first)
    assert measured(again) == measured(file)


def test_a_day_measured_from_the_start_of_an_earlier_file_is_capped_at_the_whole_day() -> None:
    whole = merge_documents(run(MIDNIGHT, MIDNIGHT + 86_399.5), run(MIDNIGHT + 3600, MIDNIGHT + 7200))
    assert measured(whole) == {"2026-11-30": [[0, 86_400]]}


def test_a_version_1_file_is_added_to_and_its_days_stay_unmeasured() -> None:
    """A file written before the meter recorded its time: its days keep no record (how much of them its runs
    measured is not known; `relay cost` takes them as whole days and says so); the new run's other days have one."""
    old = run(MIDNIGHT - 3600, MIDNIGHT - 1800)
    old["version"] = 1
    for day in old["apps"]["1"]["days"].values():
        del day["measured"]
    merged = merge_documents(old, run(MIDNIGHT - 60, MIDNIGHT + 60))
    assert merged["version"] == 2
    assert measured(merged) == {"2026-11-29": None, "2026-11-30": [[0, 61]]}
    parse_usage(merged)
    # And the other way round: a dead run's checkpoint without a record (an older emulator's) leaves its day without
    # one, for the counts it adds were measured over a time nobody knows.
    older = run(MIDNIGHT + 60, MIDNIGHT + 120)
    older["version"] = 1
    del older["apps"]["1"]["days"]["2026-11-30"]["measured"]
    assert measured(merge_documents(run(MIDNIGHT + 200, MIDNIGHT + 300), older)) == {"2026-11-30": None}


@pytest.mark.parametrize(
    "seconds", ["all day", [], [[0, 86_401]], [[5, 5]], [[0, True]], [[0, 10, 20]], [[0, 100], [50, 200]]]
)
def test_a_file_whose_measured_field_is_not_one_is_not_a_usage_file(seconds: object) -> None:
    """Left alone by the writer (docs/emulator.md: the usage goes to usage.json.new), as any other foreign file."""
    document = run(MIDNIGHT, MIDNIGHT + 10)
    document["apps"]["1"]["days"]["2026-11-30"]["measured"] = seconds
    with pytest.raises(ValueError, match=r"2026-11-30\.measured"):
        check_usage_document(document)
    document["version"] = 3
    with pytest.raises(ValueError, match="not a version 1 or 2 usage file"):
        check_usage_document(document)


def test_a_crashed_runs_checkpoint_recovered_beside_a_run_that_served_with_it_is_measured_once(tmp_path: Path) -> None:
    """A worker's file and its crashed sibling's checkpoint (whose lock nobody holds) cover the same ten minutes."""
    usage = tmp_path / "usage.json"
    usage.write_text(json.dumps(run(MIDNIGHT + 600, MIDNIGHT + 1200)))
    dead = tmp_path / "usage.json.run.4242-0123abcd"
    dead.write_text(json.dumps(run(MIDNIGHT + 601, MIDNIGHT + 1100)))
    recover_usage(usage)
    assert not dead.exists()
    document = json.loads(usage.read_text())
    assert measured(document) == {"2026-11-30": [[600, 1201]]}
    assert document["apps"]["1"]["days"]["2026-11-30"]["publishes"] == 2


async def test_the_usage_file_records_the_time_the_run_measured(start_emulator: StartEmulator, tmp_path: Path) -> None:
    emulator = await start_emulator(app=APP)
    await publish(emulator.http_url, APP, "news", "e", "1")
    target = tmp_path / "usage.json"
    write_usage_file(emulator.node, target)
    started = emulator.node.states[APP.app_id].meter.started_at
    usage = parse_usage(json.loads(target.read_text()))
    seconds = sum(day.measured_seconds for day in usage.apps[APP.app_id].days.values())
    assert 1 <= seconds <= dt.datetime.now(dt.UTC).timestamp() - started + 2


@pytest.mark.parametrize("version", [True, 1.0, 2.0])
def test_a_version_that_is_not_a_whole_number_is_not_a_usage_file(version: object) -> None:
    """True == 1 and 2.0 == 2 in Python: the writer took such a file as its own, which relay cost refuses."""
    document = run(MIDNIGHT, MIDNIGHT + 10)
    document["version"] = version
    with pytest.raises(ValueError, match="not a version 1 or 2 usage file"):
        check_usage_document(document)
