"""The usage meter (issue 4): per app and UTC day, counted as Pusher and Ably bill (ably-and-pricing §F.1, §F.2,
§F.6), exported by /usage in the usage-file format `relay cost --usage` reads (relay/cost/usage.py)."""

from __future__ import annotations

import base64
import datetime as dt
import json
import math
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from relay.cost.usage import parse_usage, workload_from_usage
from relay.emulator import usage as usage_meter
from relay.emulator.config import Webhook
from relay.emulator.usage import AppMeter, merge_documents, usage_document
from relay.emulator.usage_file import write_usage_file
from tests.conftest import StartEmulator, clock_clear_of_midnight
from tests.operations.support import APP, api, eventually, publish, ws_client
from tests.webhook_receiver import Receiver

BIG = "x" * 6_000  # 2 chunks of 5 KiB, 3 of 2 KiB


async def get_json(url: str) -> dict[str, object]:
    async with httpx.AsyncClient() as http:
        response = await http.get(url)
    assert response.status_code == 200, response.text
    document: dict[str, object] = response.json()
    return document


async def test_usage_counts_messages_as_pusher_and_ably_do(start_emulator: StartEmulator, receiver: Receiver) -> None:
    app = replace(APP, webhooks=(Webhook(url=receiver.url, event_types=frozenset({"channel_occupied"})),),
                  webhook_batch_ms=10)  # fmt: skip
    emulator = await start_emulator(app=app, wall_clock=clock_clear_of_midnight())  # minutes are rounded per day
    # Without permessage-deflate, which websockets negotiates by default: BIG would go out in a few dozen bytes.
    alice, bob, carol = [await ws_client(emulator.ws_url(), compression=None) for _ in range(3)]
    for client in (alice, bob, carol):
        await client.subscribe("news", app)
    await alice.subscribe("presence-room", app, user_id="alice")
    await bob.subscribe("presence-room", app, user_id="bob")
    await alice.expect("pusher_internal:member_added")
    await bob.send("client-hi", {"n": 1}, channel="presence-room")
    await alice.expect("client-hi")
    await alice.send("pusher:ping", {})  # pings are not messages
    await alice.expect("pusher:pong")

    await publish(emulator.http_url, app, "news", "small", "hello")  # 5 bytes, 3 recipients
    await publish(emulator.http_url, app, "news", "big", BIG)  # 6000 bytes, 3 recipients
    batch = {"batch": [{"name": "b", "channel": "news", "data": "1"}, {"name": "b", "channel": "empty", "data": "2"}]}
    assert (await api(emulator.http_url, app, "POST", "/apps/1/batch_events", batch)).status_code == 200
    assert (await api(emulator.http_url, app, "GET", "/apps/1/channels")).status_code == 200  # an API call
    forged = await api(emulator.http_url, app, "GET", "/apps/1/channels", secret="wrong")
    assert forged.status_code == 401  # not counted
    for client in (alice, bob, carol):
        await client.expect("b")
    # The receiver records a request before it answers; the meter counts it once the answer is back.
    dispatcher = emulator.node.states["1"].webhooks
    await eventually(lambda: len(receiver.deliveries) >= 1 and dispatcher.pending == 0, what="the webhook answers")
    webhooks = len(receiver.deliveries)

    document = await get_json(f"{emulator.http_url}/usage")
    usage = parse_usage(document, origin="/usage")  # relay cost's own strict loader accepts it
    (day,) = usage.apps["1"].days.values()
    assert day.peak_connections == 3
    assert day.peak_channels == 3  # news, presence-room and "empty", active for a minute after its publish
    assert day.connection_minutes == 3 and day.channel_minutes == 3  # open ones count, rounded up
    assert (day.publishes, day.deliveries) == (4, 3 + 3 + 3 + 0)
    assert (day.client_events, day.client_event_deliveries) == (1, 1)
    assert (day.presence_events, day.presence_deliveries) == (2, 1)  # alice (nobody to tell), bob (alice told)
    assert day.webhooks == webhooks
    assert day.api_requests == 1
    # Each message's name, data and (a client event's) user id, as Ably sizes a message.
    assert day.payload_bytes == (5 + 5) + (3 + 6000) + (1 + 1) + (1 + 1) + len('client-hi{"n":1}bob')
    assert day.units_5kib == 1 + 2 + 1 + 1 + 1 and day.units_2kib == 1 + 3 + 1 + 1 + 1
    assert day.peak_publishes_per_second is not None and 1 <= day.peak_publishes_per_second <= 5
    assert usage.apps["1"].unique_users == 2
    # Pusher: 4 publishes + 9 deliveries + 1 client event + 1 delivery + 1 member_added delivery + webhooks + 1 call.
    assert day.pusher_messages == 4 + 9 + 1 + 1 + 1 + webhooks + 1
    summary = await get_json(f"{emulator.http_url}/usage?summary=1")
    (today_summary,) = summary["1"].values()  # type: ignore[attr-defined]
    assert today_summary["pusher_messages"] == day.pusher_messages
    # Ably: inbound + outbound per 5 KiB chunk: small 1×(1+3), big 2×(1+3), batch 1×(1+3) + 1×(1+0),
    # client event 1×(1+1), presence enters (1+0) + (1+1), webhooks 1 each.
    assert today_summary["ably_messages"] == 4 + 8 + 4 + 1 + 2 + 1 + 2 + webhooks
    # bytes_out is every byte written to sockets, the same count /metrics exports.
    assert day.bytes_out == emulator.node.states["1"].meter.bytes_sent > 6000 * 3

    workload = workload_from_usage(usage)  # and relay cost turns it into a workload
    assert workload.connections == 3
    assert workload.subscribers_per_publish == pytest.approx(9 / 4)
    for client in (alice, bob, carol):
        await client.close()


async def test_an_ably_message_is_billed_by_its_name_data_client_id_and_extras(start_emulator: StartEmulator) -> None:
    """Ably sizes a message as its name + clientId + data + the JSON of its extras, in 5 KiB chunks (ably-and-pricing
    §F.2): 5,100 bytes of data alone are one chunk, with the rest two. Published to a channel nobody is subscribed
    to, which Ably keeps active for a minute: one channel, one channel-minute."""
    emulator = await start_emulator(wall_clock=clock_clear_of_midnight())  # minutes are rounded per day
    message = {"name": "n", "data": "x" * 5100, "clientId": "courier-7", "extras": {"headers": {"k": "v"}}}
    basic = {"Authorization": "Basic " + base64.b64encode(emulator.app.ably_api_key.encode()).decode()}
    async with httpx.AsyncClient(base_url=emulator.http_url) as http:
        response = await http.post("/channels/orders/messages", json=message, headers=basic)
    assert response.status_code == 201, response.text
    document = await get_json(f"{emulator.http_url}/usage")
    (day,) = parse_usage(document).apps["1"].days.values()
    assert day.payload_bytes == 1 + 9 + 5100 + len('{"headers":{"k":"v"}}')
    assert (day.publishes, day.units_5kib, day.units_2kib) == (1, 2, 3)
    assert (day.peak_channels, day.channel_minutes) == (1, 1)
    summary = await get_json(f"{emulator.http_url}/usage?summary=1")
    assert next(iter(summary["1"].values()))["ably_messages"] == 2  # type: ignore[attr-defined]


def test_days_roll_over_at_utc_midnight_and_minutes_are_split() -> None:
    """Connection minutes are rounded up per connection and per UTC day; a new day starts with the connections
    still open as its peak."""
    midnight = dt.datetime(2026, 11, 30, tzinfo=dt.UTC).timestamp()
    now = [midnight - 30.0]
    meter = AppMeter("9", clock=lambda: now[0])
    meter.connected("1.1")
    meter.connected("1.2")
    meter.subscribed("news", "1.1", 1, None)
    meter.published("news", "e", "data", 1, size=5)
    now[0] = midnight + 70.0
    meter.disconnected("1.2")  # 30 s before midnight (1 minute), 70 s after (2 minutes)
    meter.published("news", "e", "data", 1, size=5)
    days = meter.days()
    before, after = days["2026-11-29"], days["2026-11-30"]
    assert (before.peak_connections, before.connection_minutes) == (2, 1 + 1)  # 1.1 is still open: 1 minute so far
    assert (after.peak_connections, after.connection_minutes) == (2, 2 + 2)
    assert (before.publishes, after.publishes) == (1, 1)
    assert (before.peak_channels, before.channel_minutes, after.channel_minutes) == (1, 1, 2)
    parse_usage(usage_document([meter], "test"))


def test_a_channel_is_active_as_ably_bills_it_until_a_minute_after_its_last_subscriber_and_publish() -> None:
    """Ably bills a channel from its first attach or publish until it has no subscriber and about a minute has
    passed since its last detach and its last publish (ably-and-pricing §F.2): a subscriber back within the minute,
    or a publish, keeps the channel one active span; a publish with no subscriber makes a channel active (an event
    sent to a user does not: it is on no channel)."""
    start = 1_800_000_000.0
    now = [start]
    meter = AppMeter("1", clock=lambda: now[0])

    def at(seconds: float) -> None:
        now[0] = start + seconds

    meter.subscribed("news", "1.1", 1, None)
    at(10)
    meter.published("alerts", "e", "x", 0, size=2)  # nobody subscribed: active from 10 s to 70 s
    meter.published("#server-to-user-42", "e", "x", 0, size=2)  # a user, not a channel: none active
    at(30)
    meter.unsubscribed("news", "1.1", 0)  # news lingers until 90 s
    at(50)
    meter.subscribed("news", "1.2", 1, None)  # back within the minute: the same span
    at(100)
    meter.unsubscribed("news", "1.2", 0)  # lingers until 160 s
    at(120)
    (day,) = meter.days().values()
    assert (day.peak_channels, day.channel_minutes) == (2, 1 + 2)  # alerts: 1 minute; news: 0–120 s so far
    at(150)
    meter.published("news", "e", "x", 0, size=2)  # lingers until 210 s
    at(400)
    meter.published("news", "e", "x", 0, size=2)  # its linger ended at 210 s: a new span, 400–460 s
    at(1000)
    (day,) = meter.days().values()
    assert day.channel_minutes == 1 + math.ceil(210 / 60) + 1
    assert day.peak_channels == 2
    parse_usage(usage_document([meter], "test"))


def test_a_channel_lingering_over_midnight_counts_its_minutes_and_its_peak_on_both_days() -> None:
    midnight = dt.datetime(2026, 11, 30, tzinfo=dt.UTC).timestamp()
    now = [midnight - 100.0]
    meter = AppMeter("9", clock=lambda: now[0])
    meter.subscribed("news", "1.1", 1, None)
    now[0] = midnight - 30.0
    meter.unsubscribed("news", "1.1", 0)  # lingers until 30 s after midnight
    now[0] = midnight + 10.0
    meter.connected("1.2")  # the new day starts with news active
    assert meter.today().peak_channels == 1
    now[0] = midnight + 300.0
    days = meter.days()
    before, after = days["2026-11-29"], days["2026-11-30"]
    assert (before.peak_channels, before.channel_minutes) == (1, 2)
    assert (after.peak_channels, after.channel_minutes) == (1, 1)


def test_past_its_bound_a_publish_to_a_channel_nobody_watches_counts_its_minute_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The names of channels only published to are held for their minute, up to MAX_LINGERING_CHANNELS (a backend
    making up a name per request would hold them all); past it, each such publish counts its minute at once."""
    monkeypatch.setattr(usage_meter, "MAX_LINGERING_CHANNELS", 3)
    start = 1_800_000_000.0
    now = [start]
    meter = AppMeter("1", clock=lambda: now[0])
    for index in range(5):
        meter.published(f"made-up-{index}", "e", "x", 0, size=2)
    assert len(meter._lingering) == 3  # the names held
    (day,) = meter.days().values()
    assert (day.peak_channels, day.channel_minutes) == (3, 3 + 2)  # 3 lingering so far (a minute each), 2 counted
    meter.published("made-up-0", "e", "x", 0, size=2)  # still lingering: its span goes on
    now[0] = start + 200
    (day,) = meter.days().values()
    assert (day.peak_channels, day.channel_minutes) == (3, 5) and not meter._lingering


@pytest.mark.parametrize("first_event", [10.0, 120.0])
def test_channels_whose_linger_ends_after_midnight_are_in_the_new_day_s_peak_whenever_its_first_event_comes(
    first_event: float,
) -> None:
    """Three channels left at 23:59:30 linger until 00:00:30; the day's first event at 00:02 still finds them in its
    peak (they were active at its midnight), as one at 00:00:10 does."""
    midnight = dt.datetime(2026, 11, 30, tzinfo=dt.UTC).timestamp()
    now = [midnight - 100.0]
    meter = AppMeter("9", clock=lambda: now[0])
    for name in ("a", "b", "c"):
        meter.subscribed(name, "1.1", 1, None)
    now[0] = midnight - 30.0
    for name in ("a", "b", "c"):
        meter.unsubscribed(name, "1.1", 0)
    now[0] = midnight + first_event
    meter.connected("1.2")
    after = meter.days()["2026-11-30"]
    assert (after.peak_channels, after.channel_minutes) == (3, 3)


def test_a_wall_clock_stepped_back_does_not_hold_later_channels_active() -> None:
    """A channel left while the clock ran an hour fast lingers until an hour from the clock as it is once set back:
    the channels that linger after it still end a minute after they are left, and a channel back after its linger
    ended starts a new span."""
    start = 1_800_000_000.0
    now = [start + 3600]
    meter = AppMeter("1", clock=lambda: now[0])
    meter.subscribed("x", "1.1", 1, None)
    meter.unsubscribed("x", "1.1", 0)
    now[0] = start
    for index in range(20):  # each occupied for a second, 100 s apart
        now[0] = start + index * 100
        meter.subscribed(f"c{index}", "1.2", 1, None)
        now[0] += 1
        meter.unsubscribed(f"c{index}", "1.2", 0)
    now[0] = start + 2000
    meter.subscribed("c0", "1.3", 1, None)  # its linger ended at 61 s
    now[0] = start + 2030
    (day,) = meter.days().values()
    assert day.peak_channels <= 3  # x, one channel lingering, one occupied
    # x: at most 2 (re-based to the clock); c0: 2 then 1 so far; c1..c19: 2 each.
    assert 2 + 19 * 2 + 1 <= day.channel_minutes <= 2 + 2 + 19 * 2 + 1


def test_merging_usage_adds_counts_and_keeps_the_larger_peak() -> None:
    meter = AppMeter("1", clock=lambda: 1_800_000_000.0)
    meter.connected("1.1")
    meter.published("news", "e", "x" * 99, 0, size=100)
    first = usage_document([meter], "run 1")
    merged = merge_documents(first, first)
    day = next(iter(merged["apps"]["1"]["days"].values()))
    assert day["publishes"] == 2 and day["payload_bytes"] == 200 and day["units_5kib"] == 2
    assert day["peak_connections"] == 1  # peaks are not added
    parse_usage(merged)
    with pytest.raises(ValueError, match="not a version 1 or 2 usage file"):
        merge_documents({"hello": "world"}, first)


async def test_usage_file_accumulates_across_runs_and_never_clobbers_another_file(
    start_emulator: StartEmulator, tmp_path: Path
) -> None:
    emulator = await start_emulator(app=APP)
    await publish(emulator.http_url, APP, "news", "e", "1")
    target = tmp_path / "usage.json"
    write_usage_file(emulator.node, target)
    write_usage_file(emulator.node, target)  # as a second run would
    usage = parse_usage(json.loads(target.read_text()))
    assert sum(day.publishes for day in usage.apps["1"].days.values()) == 2
    other = tmp_path / "notes.json"
    other.write_text('{"not": "usage"}')
    written = write_usage_file(emulator.node, other)
    assert written == tmp_path / "notes.json.new"
    assert json.loads(other.read_text()) == {"not": "usage"}
    parse_usage(json.loads(written.read_text()))
    # Saved by an editor with a UTF-8 byte order mark, it is still the usage file (relay cost reads it so).
    target.write_bytes(b"\xef\xbb\xbf" + target.read_bytes())
    assert write_usage_file(emulator.node, target) == target
    usage = parse_usage(json.loads(target.read_text()))
    assert sum(day.publishes for day in usage.apps["1"].days.values()) == 3


def test_a_metachannel_message_is_counted_apart_and_shown_on_the_console() -> None:
    """A channel lifecycle message is Ably's own: metachannel_messages (1 sent + 1 per subscriber, in 5 KiB units)
    and Ably's messages count it, the publishes and their deliveries do not; the console's live feed still shows it,
    as it did when it was counted as a publish."""
    meter = AppMeter("1", clock=lambda: 1_800_000_000.0)
    shown: list[dict[str, object]] = []
    meter.observer = shown.append
    assert meter.published("[meta]channel.lifecycle", "channel.opened", BIG, 3, size=6_000, http=False) == 2
    (day,) = meter.days().values()
    assert (day.metachannel_messages, day.ably_messages) == (2 * (1 + 3), 2 * (1 + 3))
    assert (day.publishes, day.deliveries, day.http_publishes, meter.publishes) == (0, 0, 0, 0)
    assert [(event["type"], event["channel"], event["recipients"]) for event in shown] == [
        ("publish", "[meta]channel.lifecycle", 3)
    ]
