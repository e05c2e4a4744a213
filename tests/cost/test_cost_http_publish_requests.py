"""The requests that published, as Ably's HTTP API request limits count them: the usage file's
``http_publish_requests``. A trigger to several channels, a batch of events and an Ably REST publish of several
messages are one request each (the Ably adapter sends a multi-channel publish and a batch to Ably as one), but every
HTTP publish was taken for a request of its own: a workload that triggers to three channels at once was checked
against Ably Free's 25,000 requests an hour and 50 a second with three times the requests it makes. A file without
the field (an older emulator's) keeps that upper bound."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pusher  # type: ignore[import-untyped]
import pytest
from ably import AblyRest  # type: ignore[import-untyped]
from ably.types.message import Message  # type: ignore[import-untyped]
from cost_helpers import provider, run_cost_json, usage_day
from test_cost_from_emulator import ABLY_KEY, metered_with_a_subscriber
from test_cost_http_publishes import BUSY, REQUEST_LIMITS, free_breaks
from test_cost_usage_audit_fixes import WHOLE_DAY, measured, usage_file

from relay.cost.usage import load_usage, workload_from_usage
from relay.emulator.usage import check_usage_document, merge_documents
from tests.cli_support import run_relay
from tests.conftest import whole_run


async def test_each_publishing_request_is_counted_once(tmp_path: Path) -> None:
    """pusher-http-python triggers to three channels 4 times and sends 2 batches of 5 events; ably-python publishes
    3 messages in one REST request; a raw Ably REST publish of a malformed message is refused after it authenticated
    (Ably's limiter counts it: it meters every admitted request whatever its answer). 25 publishes, 8 requests: relay
    cost checks Ably's hourly request limit against the 8, not the 25."""
    usage = tmp_path / "usage.json"
    emulator, subscriber = await metered_with_a_subscriber(usage, "a")
    client = pusher.Pusher(
        app_id="1", key="app-key", secret="app-secret", host="127.0.0.1", port=emulator.port, ssl=False
    )
    for index in range(4):
        await asyncio.to_thread(client.trigger, ["a", "b", "c"], "order-ready", {"id": index})
    for _ in range(2):
        batch = [{"channel": "a", "name": "tick", "data": str(index)} for index in range(5)]
        await asyncio.to_thread(client.trigger_batch, batch)
    rest = AblyRest(key=ABLY_KEY, endpoint="127.0.0.1", port=emulator.port, tls=False, use_token_auth=True)
    try:
        await rest.channels.get("a").publish(messages=[Message("m", str(index)) for index in range(3)])
    finally:
        await rest.close()
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{emulator.port}") as http:
        refused = await http.post("/channels/a/messages", json=[{"name": 5}], auth=("1.app-key", "app-secret"))
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"]["message"] == "messages[0]: name must be a string"
    for _ in range(4 + 10 + 3):  # everything published to "a" arrived: the emulator kept serving
        await subscriber.recv()
    await subscriber.close()
    assert await emulator.stop(grace=30) == 0
    run = whole_run(json.loads(usage.read_text())["apps"]["1"]["days"])
    assert (run["publishes"], run["http_publishes"], run["http_publish_requests"]) == (25, 25, 8)

    priced = await run_relay("cost", "--usage", str(usage), "--format", "json", "--provider", "ably_rb", within=60)
    assert priced.returncode == 0, priced.stderr
    estimate = json.loads(priced.stdout)
    workload = estimate["workload"]
    assert workload["http_publish_requests_per_day"] == pytest.approx(workload["publishes_per_day"] * 8 / 25)
    free = next(plan for plan in provider(estimate, "ably_rb")["plans"] if plan["plan"] == "free")
    hourly = next(check for check in free["checks"] if check["limit"] == "HTTP API requests/hour at peak")
    busiest_hour = workload["peak_day_factor"] * min(workload["peak_factor"], 24) / 24
    assert hourly["used"] == pytest.approx(workload["http_publish_requests_per_day"] * busiest_hour)


def test_requests_measured_fit_where_one_per_publish_breaks(tmp_path: Path) -> None:
    """30,000 HTTP publishes a day, 60 in the busiest second, break Free's request limits taken one request each;
    made in 3,000 requests of 10 (batches), they fit, with the same messages billed."""
    per_publish = usage_file(tmp_path, {"2026-11-29": measured({**BUSY, "http_publishes": 30_000}, WHOLE_DAY)})
    assert free_breaks(per_publish) == REQUEST_LIMITS
    (tmp_path / "batched").mkdir()
    day = measured({**BUSY, "http_publishes": 30_000, "http_publish_requests": 3_000}, WHOLE_DAY)
    batched = usage_file(tmp_path / "batched", {"2026-11-29": day})
    assert free_breaks(batched) == []
    ably = provider(run_cost_json(["--usage", str(batched), "--provider", "ably_rb"]), "ably_rb")
    assert (
        "HTTP API requests: 3,000 a day measured published (a trigger to several channels, or a batch, is one "
        "request, as the Ably adapter sends it)"
    ) in ably["assumptions"]
    messages = [
        provider(run_cost_json(["--usage", str(path), "--provider", "ably_rb"]), "ably_rb")["units"]["messages_per_day"]
        for path in (per_publish, batched)
    ]
    assert messages[0] == messages[1]


def test_a_day_without_the_field_takes_each_http_publish_as_a_request(tmp_path: Path) -> None:
    """An older emulator's day (no ``http_publish_requests``) stands for its HTTP publishes, or, older still (no
    ``http_publishes`` either), its publishes, beside a newer day's own count; the workload's origin says how many
    app-days recorded it, and a file where none did leaves the workload's field unset (no measured requests)."""
    days = {
        "2026-11-28": measured(BUSY, WHOLE_DAY),
        "2026-11-29": measured({**BUSY, "http_publishes": 20_000}, WHOLE_DAY),
        "2026-11-30": measured({**BUSY, "http_publishes": 30_000, "http_publish_requests": 1_000}, WHOLE_DAY),
    }
    workload = workload_from_usage(load_usage(usage_file(tmp_path, days)))
    assert workload.http_publish_requests_per_day == pytest.approx((30_000 + 20_000 + 1_000) / 3)
    assert (
        "http_publish_requests recorded on 1 of the 3 app-days (older emulators do not count the requests that "
        "published): the others' HTTP publishes are each taken as a request of its own, an upper bound"
    ) in workload.origin
    assert workload.scaled(10).http_publish_requests_per_day == pytest.approx(170_000)

    (tmp_path / "older").mkdir()
    older = workload_from_usage(load_usage(usage_file(tmp_path / "older", {"2026-11-29": days["2026-11-29"]})))
    assert older.http_publish_requests_per_day is None
    assert older.http_publish_requests == older.http_publishes == 20_000


def test_the_emulator_adds_a_run_to_an_older_file_without_the_field_as_an_upper_bound() -> None:
    """A run that counted its publishing requests, added to a day an older emulator wrote without them: the sum
    cannot say how many requests the older publishes took, so the day is left without (one per HTTP publish); a day
    both counted adds up."""
    older = {"version": 2, "apps": {"1": {"days": {"2026-11-29": measured(usage_day(), WHOLE_DAY)}}}}
    counted = usage_day(http_publishes=10, http_publish_requests=2)
    run = {"version": 2, "apps": {"1": {"days": {"2026-11-29": measured(counted, WHOLE_DAY)}}}}
    merged = check_usage_document(merge_documents(older, run))
    assert "http_publish_requests" not in merged["apps"]["1"]["days"]["2026-11-29"]
    again = merge_documents(run, run)["apps"]["1"]["days"]["2026-11-29"]
    assert (again["http_publishes"], again["http_publish_requests"]) == (20, 4)
