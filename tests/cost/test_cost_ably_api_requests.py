"""Ably's REST requests other than publishes (history, presence, channel status), the usage file's
``ably_api_requests``: counted against Ably's HTTP API request limits, with the HTTP publishes and the Pusher API's
calls, and by no other provider. A file an older emulator wrote, which served those requests without counting them,
still loads. (The emulator run is in test_cost_from_emulator.py.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cost_helpers import provider, run_cost_json, usage_day
from test_cost_usage_audit_fixes import AFTERNOON, WHOLE_DAY, measured, usage_file

from relay.cost.render import workload_summary
from relay.cost.usage import load_usage, workload_from_usage

# 10 publishes, 1 Pusher API call: Free's 25,000 requests an hour and 50 a second hold them easily.
QUIET = usage_day(http_publishes=10, peak_publishes_per_second=1)
REQUEST_LIMITS = ["HTTP API requests/hour at peak", "HTTP API requests/s at peak"]


def free_breaks(result: dict[str, object]) -> list[str]:
    free = next(plan for plan in provider(result, "ably_rb")["plans"] if plan["plan"] == "free")
    return sorted(check["limit"] for check in free["checks"] if not check["ok"])


def free_check(result: dict[str, Any], limit: str) -> float:
    free = next(plan for plan in provider(result, "ably_rb")["plans"] if plan["plan"] == "free")
    used: float = next(check["used"] for check in free["checks"] if check["limit"] == limit)
    return used


def assert_only_ably_and_selfhosted_cpu_differ(
    without: dict[str, Any], withit: dict[str, Any], added_at_peak_second: float
) -> None:
    """Pusher, PubNub and the other managed providers price the two files alike; self-hosted nodes serve the Ably
    requests too, at the capacity's 150 µs of CPU each (docs/cost.md): ``added_at_peak_second`` more at the peak
    (the JSON gives cores to 4 decimals)."""
    managed = [
        entry["provider"]
        for entry in without["providers"]
        if entry["kind"] == "managed" and not entry["provider"].startswith("ably")
    ]
    assert "pusher" in managed
    for name in managed:
        assert provider(withit, name)["units"] == provider(without, name)["units"], name
        assert provider(withit, name)["plans"] == provider(without, name)["plans"], name
    assert added_at_peak_second > 0
    selfhosted = [entry["provider"] for entry in without["providers"] if entry["kind"] == "selfhosted"]
    assert "hetzner" in selfhosted
    for name in selfhosted:
        cpu = [provider(result, name)["units"]["cpu_cores_at_peak"] for result in (without, withit)]
        assert cpu[1] - cpu[0] == pytest.approx(added_at_peak_second * 150e-6, abs=1e-4), name


def test_they_break_ablys_request_limits_and_nothing_else(tmp_path: Path) -> None:
    """4,320,000 reads a day break Free's request limits, an hour's and a second's; the same day without them fits.
    Pusher, PubNub and the other managed providers price the two files alike; self-hosted nodes need the CPU to
    serve them."""
    (tmp_path / "plain").mkdir()
    plain = usage_file(tmp_path / "plain", {"2026-11-29": measured(QUIET, WHOLE_DAY)})
    reads = usage_file(tmp_path, {"2026-11-29": measured({**QUIET, "ably_api_requests": 4_320_000}, WHOLE_DAY)})
    without, withit = (run_cost_json(["--usage", str(path)]) for path in (plain, reads))
    assert withit["workload"]["ably_api_requests_per_day"] == 4_320_000
    assert (free_breaks(without), free_breaks(withit)) == ([], REQUEST_LIMITS)
    added = free_check(withit, REQUEST_LIMITS[1]) - free_check(without, REQUEST_LIMITS[1])
    assert_only_ably_and_selfhosted_cpu_differ(without, withit, added)


@pytest.mark.parametrize(
    ("field", "summary"),
    [("ably_api_requests", "other Ably REST calls/day"), ("ably_token_requests", "Ably token requests/day")],
)
def test_an_older_file_without_them_loads_and_a_day_without_them_takes_the_rate_recorded(
    tmp_path: Path, field: str, summary: str
) -> None:
    """A version 1 file (and a version 2 one without the field) counts none. A file an older and a newer emulator
    added to: the 6,000 requests recorded in the 12 h measured on 2026-11-29 are 12,000 a day, the older emulator's
    day included, and the workload's origin and summary say so; token requests alike."""
    (tmp_path / "v1").mkdir()
    older = usage_file(tmp_path / "v1", {"2026-11-29": QUIET}, version=1)
    assert getattr(workload_from_usage(load_usage(older)), f"{field}_per_day") == 0
    days = {
        "2026-11-28": measured(QUIET, WHOLE_DAY),
        "2026-11-29": measured({**QUIET, field: 6_000}, AFTERNOON),
    }
    workload = workload_from_usage(load_usage(usage_file(tmp_path, days)))
    assert getattr(workload, f"{field}_per_day") == 12_000
    assert (
        f"{field} recorded on 1 of the 2 app-days (older emulators do not count it): the others are taken at "
        "their app's rate on the days that record it"
    ) in workload.origin
    assert getattr(workload.scaled(10), f"{field}_per_day") == 120_000
    assert workload_summary(workload).endswith(f", 12,000 {summary}, 100-byte messages")
