"""A presence channel's members at its fullest, which Pusher limits to 100 and Ably to 200: `--presence-members`.
Without it the limit was checked against one more than a join is told to, the members' average: a room that fills
from empty to 150 tells its joins about 75 on average, so a chat whose rooms outgrow Pusher's limit was priced on a
Pusher plan that refuses its 101st member."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ably import AblyRealtime  # type: ignore[import-untyped]
from cost_helpers import provider, refused, run_cost_json, usage_day
from test_cost_from_emulator import ABLY_KEY
from test_cost_usage_audit_fixes import WHOLE_DAY, measured, usage_file

from relay.cost.usage import load_usage, workload_from_usage
from relay.emulator.config import App
from relay.emulator.usage import add_peaks, check_usage_document, merge_documents
from tests.cli_support import run_relay
from tests.conftest import whole_run
from tests.emulator_process import EmulatorProcess
from tests.operations.support import ws_client

APP_1 = App(app_id="1", key="app-key", secret="app-secret")  # what `relay emulator --app-id 1` serves
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


async def test_the_emulator_measures_the_fullest_presence_channel(tmp_path: Path) -> None:
    """Two Pusher users in presence-room (a third connection of one of them adds no member) and three ably-python
    members in the Ably channel lobby: the day's ``peak_presence_members`` is 3, the fullest channel, and relay cost
    checks the limits with it."""
    usage = tmp_path / "usage.json"
    emulator = await EmulatorProcess.start("--app-id", "1", "--usage-file", str(usage))
    url = f"ws://127.0.0.1:{emulator.port}/app/app-key?protocol=7"
    pusher_clients = [await ws_client(url) for _ in range(3)]
    ably_clients = [
        AblyRealtime(key=ABLY_KEY, endpoint=f"127.0.0.1:{emulator.port}", tls=False, client_id=name)
        for name in ("ann", "bob", "cy")
    ]
    try:
        for client, user in zip(pusher_clients, ("ann", "bob", "ann"), strict=True):
            await client.subscribe("presence-room", APP_1, user_id=user)
        for member in ably_clients:
            lobby = member.channels.get("lobby")
            await lobby.attach()
            await lobby.presence.enter("here")  # its ACK comes once the emulator recorded (and metered) it
    finally:
        for member in ably_clients:
            await member.close()
        for client in pusher_clients:
            await client.close()
    assert await emulator.stop(grace=30) == 0
    run = whole_run(json.loads(usage.read_text())["apps"]["1"]["days"])
    assert run["peak_presence_members"] == 3

    priced = await run_relay("cost", "--usage", str(usage), "--format", "json", "--provider", "pusher", within=60)
    assert priced.returncode == 0, priced.stderr
    estimate = json.loads(priced.stdout)
    assert estimate["workload"]["presence_members"] == 3
    assert presence_check(estimate, "pusher") == {**presence_check(estimate, "pusher"), "used": 3, "max": 100}


def test_a_measured_room_beyond_pushers_limit_does_not_fit(tmp_path: Path) -> None:
    """A usage file whose fullest presence channel held 150 members on one day (and 40 on another, of another app):
    the largest, not a sum, is checked; a file without the field (an older emulator's) takes the average's guess."""
    days = {"2026-11-29": measured(usage_day(peak_presence_members=150), WHOLE_DAY)}
    path = tmp_path / "usage.json"
    other = {"days": {"2026-11-29": measured(usage_day(peak_presence_members=40), WHOLE_DAY)}}
    path.write_text(json.dumps({"version": 2, "apps": {"chat": {"days": days}, "other": other}}))
    workload = workload_from_usage(load_usage(path))
    assert workload.presence_members == 150
    pusher = provider(run_cost_json(["--usage", str(path), "--provider", "pusher"]), "pusher")
    assert pusher["status"] == "does_not_fit"
    assert pusher["limit"].startswith("presence members per channel 150 > 100")

    (tmp_path / "older").mkdir()
    older = usage_file(tmp_path / "older", {"2026-11-29": measured(usage_day(), WHOLE_DAY)})
    assert workload_from_usage(load_usage(older)).presence_members is None


def test_merged_runs_keep_the_larger_not_the_sum() -> None:
    """Two nodes of a cluster saw the same channel's members (each node counts every node's): their runs, added to
    one file while serving together, keep the larger count, where connections add up."""
    first = {"version": 2, "apps": {"1": {"days": {"2026-11-29": usage_day(peak_presence_members=30)}}}}
    second = {"version": 2, "apps": {"1": {"days": {"2026-11-29": usage_day(peak_presence_members=25)}}}}
    concurrent = add_peaks({}, first)
    merged = check_usage_document(merge_documents(first, second, concurrent))["apps"]["1"]["days"]["2026-11-29"]
    assert (merged["peak_presence_members"], merged["peak_connections"]) == (30, 12)
