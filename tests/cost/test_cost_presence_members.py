"""A presence channel's members at its fullest, which Pusher limits to 100 and Ably to 200: `--presence-members`.
Without it the limit was checked against one more than a join is told to, the members' average: a room that fills
from empty to 150 tells its joins about 75 on average, so a chat whose rooms outgrow Pusher's limit was priced on a
Pusher plan that refuses its 101st member."""

from __future__ import annotations

import pytest
from cost_helpers import provider, refused, run_cost_json

ROOMS = ["--connections", "1000", "--publishes-per-day", "10000", "--subscribers-per-publish", "50"]
ROOMS += ["--presence-events-per-day", "2000", "--presence-subscribers", "75"]


def presence_check(estimate: dict[str, object], name: str) -> dict[str, object]:
    found = provider(estimate, name)
    plan = next(plan for plan in found["plans"] if plan["plan"] == found["plan"] or plan["status"] != "fits")
    return next(check for check in plan["checks"] if check["limit"] == "presence members per channel")


def test_rooms_of_150_members_fit_ably_not_pusher() -> None:
    average = run_cost_json([*ROOMS, "--provider", "pusher", "--provider", "ably_rb"])
    assert provider(average, "pusher")["status"] == "fits"  # 76 members, the average's guess
    assert (
        "a presence channel holds at most one more member than a join is told to; a room that fills from empty holds "
        "more at its fullest (pass --presence-members)"
    ) in average["assumptions"]

    full = run_cost_json([*ROOMS, "--presence-members", "150", "--provider", "pusher", "--provider", "ably_rb"])
    pusher = provider(full, "pusher")
    assert pusher["status"] == "does_not_fit"
    assert pusher["limit"].startswith("presence members per channel 150 > 100 on Growth Plus")
    ably = provider(full, "ably_rb")
    assert ably["status"] == "fits"
    checks = [check for plan in ably["plans"] for check in plan["checks"] if check["limit"].startswith("presence")]
    assert {(check["used"], check["max"], check["ok"]) for check in checks} == {(150, 200, True)}
    assert full["workload"]["presence_members"] == 150
    assert not any("--presence-members" in line for line in full["assumptions"])


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("1001", "--presence-members 1001 is more than the 1,000 that --connections 1000 allows: each member holds a "
         "connection"),
        ("-1", "workload field presence_members (--presence-members) must be a finite number ≥ 0, got -1.0"),
    ],
)  # fmt: skip
def test_a_room_larger_than_the_connections_is_refused(
    value: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert message in refused(["cost", *ROOMS, "--presence-members", value], capsys)
