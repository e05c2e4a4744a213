"""Which publishes count against Ably's HTTP API request limits: the usage file's ``http_publishes``, those that came
in an HTTP request (the Pusher HTTP API's, the console's, Ably REST's), not the Ably realtime ones. Every publish was
taken for a request, so a measured workload whose clients publish over realtime connections was refused Ably Free for
requests it never made. A file without the field (an older emulator's) keeps that upper bound. (The emulator run is
in test_cost_from_emulator.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest
from cost_helpers import provider, refused, run_cost_json, usage_day
from test_cost_usage_audit_fixes import WHOLE_DAY, measured, usage_file

from relay.cost import Workload
from relay.cost.usage import load_usage, workload_from_usage
from relay.emulator.usage import check_usage_document, merge_documents
from relay.errors import ConfigError

# 30,000 publishes a day, 60 in the busiest second (a peak factor of about 173): 30,001 HTTP API requests in the
# busiest hour and 60 in the peak second, over Free's 25,000 and 50, if every publish is one; Free's messages
# (30,000 a day: 0.9 M a month, 60 a second) fit either way.
BUSY = usage_day(publishes=30_000, deliveries=0, peak_publishes_per_second=60)
REQUEST_LIMITS = ["HTTP API requests/hour at peak", "HTTP API requests/s at peak"]


def free_breaks(path: Path) -> list[str]:
    ably = provider(run_cost_json(["--usage", str(path), "--provider", "ably_rb"]), "ably_rb")
    free = next(plan for plan in ably["plans"] if plan["plan"] == "free")
    return sorted(check["limit"] for check in free["checks"] if not check["ok"])


@pytest.mark.parametrize("version", [1, 2])
def test_an_older_file_without_the_field_takes_every_publish_as_an_http_request(tmp_path: Path, version: int) -> None:
    """A version 1 file, and a version 2 file an older emulator wrote, load as before: every publish an HTTP API
    request (the upper bound), so Free breaks on its request limits alone. The same day with its publishes measured
    over realtime connections fits Free, with the same messages; measured over HTTP, it breaks as before."""
    day = BUSY if version == 1 else measured(BUSY, WHOLE_DAY)
    older = usage_file(tmp_path, {"2026-11-29": day}, version=version)
    workload = workload_from_usage(load_usage(older))
    assert workload.http_publishes_per_day == workload.publishes_per_day == 30_000
    assert free_breaks(older) == REQUEST_LIMITS

    for http, breaks in ((0, []), (30_000, REQUEST_LIMITS)):
        (tmp_path / str(http)).mkdir()
        newer = usage_file(tmp_path / str(http), {"2026-11-29": {**day, "http_publishes": http}}, version=version)
        assert free_breaks(newer) == breaks, http
        messages = [
            provider(run_cost_json(["--usage", str(path), "--provider", name]), name)["units"]["messages_per_day"]
            for path in (older, newer)
            for name in ("ably_rb", "pusher")
        ]
        assert messages[:2] == messages[2:], http  # messages count the same either way


def test_a_day_without_the_field_counts_its_publishes_whole_beside_one_with_it(tmp_path: Path) -> None:
    """A file an older and a newer emulator added to: the older's day takes all its publishes as HTTP requests, the
    newer's its own count, and the workload's origin says how many app-days recorded it; scaled, both grow alike."""
    mixed = usage_file(
        tmp_path,
        {
            "2026-11-29": measured({**BUSY, "http_publishes": 0}, WHOLE_DAY),
            "2026-11-30": measured(BUSY, WHOLE_DAY),
        },
    )
    workload = workload_from_usage(load_usage(mixed))
    assert (workload.publishes_per_day, workload.http_publishes_per_day) == (30_000, 15_000)
    assert (
        "http_publishes recorded on 1 of the 2 app-days (older emulators do not tell an Ably realtime publish from an "
        "HTTP one): the others' publishes are all taken as HTTP API requests, an upper bound"
    ) in workload.origin
    assert workload.scaled(10).http_publishes_per_day == 150_000
    said = provider(run_cost_json(["--usage", str(mixed), "--provider", "ably_rb"]), "ably_rb")["assumptions"]
    assert (
        "HTTP API requests: the 15,000 publishes a day measured in HTTP requests (REST) and the other API calls; the "
        "15,000 published over realtime connections are none"
    ) in said


def test_more_http_publishes_than_publishes_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """They are some of the day's publishes: more is no usage file the meter writes, refused naming the day; a
    Workload given more is refused too."""
    wrong = usage_file(tmp_path, {"2026-11-29": usage_day(http_publishes=11)})
    assert refused(["cost", "--usage", str(wrong)], capsys) == (
        f"usage file {wrong}: apps.chat.days.2026-11-29: field 'http_publishes' is 11, more than the day's 10 "
        "publishes (it counts those of them that came in an HTTP request)"
    )
    with pytest.raises(ConfigError, match=r"http_publishes_per_day must be at most publishes_per_day \(10\)"):
        Workload(connections=1, publishes_per_day=10, http_publishes_per_day=11)


def test_the_emulator_adds_a_run_to_an_older_file_without_the_field_as_an_upper_bound() -> None:
    """A run that recorded its HTTP publishes, added to a day an older emulator wrote without them: the day's sum
    cannot say which of the older publishes were realtime ones, so it is left without (every publish a request),
    and relay cost reads it so; a day both recorded adds up."""
    older = {"version": 2, "apps": {"1": {"days": {"2026-11-29": measured(usage_day(), WHOLE_DAY)}}}}
    run = {"version": 2, "apps": {"1": {"days": {"2026-11-29": measured(usage_day(http_publishes=4), WHOLE_DAY)}}}}
    merged = check_usage_document(merge_documents(older, run))
    assert "http_publishes" not in merged["apps"]["1"]["days"]["2026-11-29"]
    again = merge_documents(run, run)["apps"]["1"]["days"]["2026-11-29"]
    assert (again["publishes"], again["http_publishes"]) == (20, 8)
