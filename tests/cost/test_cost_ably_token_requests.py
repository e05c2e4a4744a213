"""Ably's token requests, the usage file's ``ably_token_requests``: checked against Ably's token request limits (an
hour and a second: Free 60,000 and 50, Standard 360,000 and 250, Pro 720,000 and 500, ably-and-pricing §A.13), apart
from its HTTP API requests, and by no other provider. A file an older emulator wrote, which served them without
counting them, still loads. (The emulator's meter is tested in tests/ably/test_ably_token_requests_usage.py.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cost_helpers import provider, run_cost_json, usage_day
from test_cost_ably_api_requests import QUIET, assert_only_ably_and_selfhosted_cpu_differ
from test_cost_usage_audit_fixes import AFTERNOON, WHOLE_DAY, measured, usage_file

from relay.cost.render import workload_summary
from relay.cost.usage import load_usage, workload_from_usage

TOKEN_LIMITS = ["token requests/hour at peak", "token requests/s at peak"]


# A publish a second all day, each to one subscriber: the peak second is the average one (a peak factor of 1)
STEADY = usage_day(publishes=86_400, http_publishes=86_400, deliveries=86_400, peak_publishes_per_second=1)


def plan_checks(result: dict[str, Any], plan_id: str) -> dict[str, tuple[float, float, bool]]:
    plan = next(plan for plan in provider(result, "ably_rb")["plans"] if plan["plan"] == plan_id)
    return {check["limit"]: (check["used"], check["max"], check["ok"]) for check in plan["checks"]}


def test_they_break_ablys_token_limits_and_nothing_else(tmp_path: Path) -> None:
    """4,752,000 token requests in a steady day are 198,000 an hour and 55 a second: over Free's 60,000 and 50, and
    Standard's 360,000 and 250 hold them. Ably's other checks, and every other managed provider, price the file as
    they price the same day without them; self-hosted nodes need the CPU to serve them."""
    (tmp_path / "plain").mkdir()
    plain = usage_file(tmp_path / "plain", {"2026-11-29": measured(STEADY, WHOLE_DAY)})
    tokens = usage_file(tmp_path, {"2026-11-29": measured({**STEADY, "ably_token_requests": 4_752_000}, WHOLE_DAY)})
    without, withit = (run_cost_json(["--usage", str(path)]) for path in (plain, tokens))
    assert withit["workload"]["ably_token_requests_per_day"] == 4_752_000
    free, standard = plan_checks(withit, "free"), plan_checks(withit, "standard")
    assert free["token requests/hour at peak"] == (198_000, 60_000, False)
    assert free["token requests/s at peak"] == (55, 50, False)
    assert standard["token requests/hour at peak"] == (198_000, 360_000, True)
    assert standard["token requests/s at peak"] == (55, 250, True)
    for plan in ("free", "standard", "pro"):
        before, after = plan_checks(without, plan), plan_checks(withit, plan)
        assert before.pop("token requests/hour at peak")[0] == before.pop("token requests/s at peak")[0] == 0
        assert {name: check for name, check in after.items() if name not in TOKEN_LIMITS} == before, plan
    assert_only_ably_and_selfhosted_cpu_differ(without, withit, 55)


def test_an_older_file_without_them_loads_and_a_day_without_them_takes_the_rate_recorded(tmp_path: Path) -> None:
    """A version 1 file counts none. A file an older and a newer emulator added to: the 3,000 token requests recorded
    in the 12 h measured on 2026-11-29 are 6,000 a day, the older emulator's day included."""
    (tmp_path / "v1").mkdir()
    older = usage_file(tmp_path / "v1", {"2026-11-29": QUIET}, version=1)
    assert workload_from_usage(load_usage(older)).ably_token_requests_per_day == 0
    days = {
        "2026-11-28": measured(QUIET, WHOLE_DAY),
        "2026-11-29": measured({**QUIET, "ably_token_requests": 3_000}, AFTERNOON),
    }
    workload = workload_from_usage(load_usage(usage_file(tmp_path, days)))
    assert workload.ably_token_requests_per_day == 6_000
    assert (
        "ably_token_requests recorded on 1 of the 2 app-days (older emulators do not count it): the others are taken "
        "at their app's rate on the days that record it"
    ) in workload.origin
    assert workload.scaled(10).ably_token_requests_per_day == 60_000
    assert workload_summary(workload).endswith(", 6,000 Ably token requests/day, 100-byte messages")
