"""Ably's token requests, the usage file's ``ably_token_requests``: checked against Ably's token request limits (an
hour and a second: Free 60,000 and 50, Standard 360,000 and 250, Pro 720,000 and 500, ably-and-pricing §A.13), apart
from its HTTP API requests, and by no other provider. A file an older emulator wrote, which served them without
counting them, still loads (test_cost_ably_api_requests.py reads such files for both counts). (The emulator's meter
is tested in tests/ably/test_ably_token_requests_usage.py.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cost_helpers import provider, run_cost_json, usage_day
from test_cost_ably_api_requests import assert_only_ably_and_selfhosted_cpu_differ
from test_cost_usage_audit_fixes import WHOLE_DAY, measured, usage_file

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
