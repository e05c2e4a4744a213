"""Ably's inband occupancy on the emulator (docs/ably.md#occupancy-events): an attachment with the ``occupancy``
channel param gets ``[meta]occupancy`` messages, the counts of both protocols' connections, at once and within a
second of a change; ``metrics.<category>`` narrows them to one count; a bad value is 40003, a token without
``channel-metadata`` 40160, and the connection stays."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import pytest
from ably import AblyRealtime  # type: ignore[import-untyped]
from ably.types.channeloptions import ChannelOptions  # type: ignore[import-untyped]
from ablysupport import (
    APP,
    ATTACH,
    ATTACHED,
    AUTH,
    CONNECTED,
    DETACH,
    DETACHED,
    ERROR,
    MESSAGE,
    AblyWire,
    ably_wire,
    connected,
    jwt_token,
    pusher_wire,
    run_node,
)

from relay.emulator.ably_hub import AblyApp
from relay.protocol import ably
from tests.conftest import RunningEmulator

PRESENCE_ACTION, ENTER = 14, 2


async def occupancy(wire: AblyWire, wait: float = 3.0) -> dict[str, int]:
    """The metrics of the next [meta]occupancy message (other protocol messages are skipped)."""
    while True:
        message = await wire.recv(wait)
        if message["action"] != MESSAGE:
            continue
        [event] = message["messages"]
        if event["name"] == "[meta]occupancy":
            assert event["encoding"] == "json" and event["id"].startswith(message["id"])
            assert event["timestamp"] == message["timestamp"] and "connectionId" not in message
            metrics: dict[str, int] = json.loads(event["data"])["metrics"]
            return metrics


async def no_occupancy(wire: AblyWire, wait: float = 1.5) -> None:
    """No [meta]occupancy message for ``wait`` seconds (a sweep and a half)."""
    with pytest.raises(TimeoutError):
        await occupancy(wire, wait)


async def test_occupancy_events_follow_both_protocols(ably_emulator: RunningEmulator, wires: list[Any]) -> None:
    """The first event comes right after ATTACHED (which shows the param) and counts the watcher itself; a Pusher
    subscriber and another Ably attachment are counted as they come and go; an attachment without the param gets
    no such messages."""
    watcher = await ably_wire(ably_emulator)
    wires.append(watcher)
    attached = await watcher.attach("room", params={"occupancy": "metrics"})
    assert attached["params"] == {"occupancy": "metrics"}
    first = await occupancy(watcher)
    assert first == {
        "connections": 1, "presenceConnections": 1, "presenceMembers": 0, "presenceSubscribers": 1,
        "publishers": 1, "subscribers": 1, "objectPublishers": 0, "objectSubscribers": 0,
    }  # fmt: skip

    pusher = await pusher_wire(ably_emulator)
    wires.append(pusher)
    await pusher.send("pusher:subscribe", {"channel": "room"})
    await pusher.expect("pusher_internal:subscription_succeeded")
    assert (await occupancy(watcher))["connections"] == 2

    other = await ably_wire(ably_emulator)
    wires.append(other)
    await other.attach("room", flags=1 << 18)  # SUBSCRIBE only: a subscriber, not a publisher
    counts = await occupancy(watcher)
    assert (counts["connections"], counts["subscribers"], counts["publishers"]) == (3, 3, 1)
    await no_occupancy(other)

    await pusher.ws.close()
    await other.send({"action": DETACH, "channel": "room"})
    await other.expect(DETACHED)
    for _ in range(2):  # the two departures may come in one event or in two
        counts = await occupancy(watcher)
        if counts["connections"] == 1:
            break
    assert counts["connections"] == 1


async def test_one_category_is_sent_only_when_it_changes(ably_emulator: RunningEmulator, wires: list[Any]) -> None:
    """``metrics.presenceMembers``: the data holds that count alone, a new subscriber changes nothing sent, a member
    entering does; a second ATTACH without the param stops the events, and a DETACH too."""
    watcher = await ably_wire(ably_emulator)
    wires.append(watcher)
    await watcher.attach("room", params={"occupancy": "metrics.presenceMembers"})
    assert await occupancy(watcher) == {"presenceMembers": 0}
    member = await ably_wire(ably_emulator, f"key={APP.ably_api_key}&clientId=ann")
    wires.append(member)
    await member.attach("room")
    await no_occupancy(watcher)
    await member.presence("room", {"action": ENTER, "data": "hi"})
    assert await occupancy(watcher) == {"presenceMembers": 1}

    await watcher.attach("room")  # no params: no more events
    await member.send({"action": DETACH, "channel": "room"})
    await no_occupancy(watcher)
    await watcher.attach("room", params={"occupancy": "metrics.connections"})
    assert await occupancy(watcher) == {"connections": 1}  # the member detached
    await watcher.send({"action": DETACH, "channel": "room"})
    await watcher.expect(DETACHED)
    app = ably_emulator.node.states[APP.app_id].foreign_presence
    assert isinstance(app, AblyApp)
    assert app.occupancy_watches == {} and app._occupancy_sweep is None  # no timer left behind


@pytest.mark.parametrize(
    ("params", "token_capability", "code", "message"),
    [
        (
            {"occupancy": "everything"},
            None,
            40003,
            "Invalid channel params: occupancy must be 'metrics' or 'metrics.' and one of connections, "
            "presenceConnections, presenceMembers, presenceSubscribers, publishers, subscribers, objectPublishers, "
            "objectSubscribers, got 'everything'",
        ),
        ({"occupancy": "metrics.viewers"}, None, 40003, "got 'metrics.viewers'"),
        (
            {"occupancy": "metrics"},
            {"room": ["subscribe"], "other": ["subscribe"]},
            40160,
            "Occupancy events need the 'channel-metadata' capability on channel 'room'",
        ),
    ],
    ids=["unknown-value", "unknown-category", "no-channel-metadata"],
)
async def test_a_refused_occupancy_param_fails_that_channel_only(
    ably_emulator: RunningEmulator,
    wires: list[Any],
    params: dict[str, str],
    token_capability: dict[str, list[str]] | None,
    code: int,
    message: str,
) -> None:
    query = f"key={APP.ably_api_key}" if token_capability is None else f"accessToken={jwt_token(token_capability)}"
    wire = await ably_wire(ably_emulator, query)
    wires.append(wire)
    await wire.send({"action": 10, "channel": "room", "params": params})
    error = await wire.expect(ERROR)
    assert (error["channel"], error["error"]["code"]) == ("room", code) and message in error["error"]["message"]
    assert (await wire.attach("other"))["action"] == ATTACHED


@pytest.mark.parametrize(
    ("params", "categories"),
    [
        ({}, None),
        ({"occupancy": "metrics"}, ably.OCCUPANCY_CATEGORIES),
        ({"occupancy": "metrics.subscribers"}, ("subscribers",)),
        ({"occupancy": "metrics.objectPublishers"}, ("objectPublishers",)),
    ],
)
def test_occupancy_params(params: dict[str, object], categories: tuple[str, ...] | None) -> None:
    assert ably.parse_occupancy(params) == categories


@pytest.mark.parametrize("value", ["", "metrics.", "Metrics", "metrics.subscribers.x", 1, ["metrics"]])
def test_occupancy_params_ably_refuses(value: object) -> None:
    with pytest.raises(ValueError, match=r"^occupancy must be 'metrics' or 'metrics\.' and one of connections"):
        ably.parse_occupancy({"occupancy": value})


async def test_ably_python_receives_occupancy_as_json(ably_emulator: RunningEmulator) -> None:
    """ably-python decodes the event's data (``encoding: json``) into the metrics object."""
    realtime = AblyRealtime(key=APP.ably_api_key, endpoint=f"127.0.0.1:{ably_emulator.port}", tls=False)
    try:
        await connected(realtime)
        channel = realtime.channels.get("room", ChannelOptions(params={"occupancy": "metrics.connections"}))
        received: asyncio.Queue[Any] = asyncio.Queue()
        await channel.subscribe("[meta]occupancy", received.put_nowait)
        event = await asyncio.wait_for(received.get(), 5)
        assert event.data == {"metrics": {"connections": 1}} and event.name == "[meta]occupancy"
    finally:
        await realtime.close()


async def test_ably_js_shows_a_live_viewer_count(ably_emulator: RunningEmulator) -> None:
    """ably-js: ``subscribe('[meta]occupancy')`` gets the count at once, and again as viewers come and go;
    ``channel.params`` shows the param."""
    run = await run_node("ably_js_occupancy.mjs", ably_emulator)
    assert run.summary["checks"] == ["first-count", "viewer-joined", "viewer-left"]


async def test_a_change_is_one_message_for_every_watcher(ably_emulator: RunningEmulator, wires: list[Any]) -> None:
    """Watchers of the same counts get the same message (one id, encoded once per wire format), whatever their
    format."""
    watchers = [await ably_wire(ably_emulator), await ably_wire(ably_emulator, binary=True)]
    wires.extend(watchers)
    for watcher in watchers:
        await watcher.attach("room", params={"occupancy": "metrics.connections"})
    await occupancy(watchers[1])  # its first: two connections, the first watcher's first said one
    pusher = await pusher_wire(ably_emulator)
    wires.append(pusher)
    await pusher.send("pusher:subscribe", {"channel": "room"})
    await pusher.expect("pusher_internal:subscription_succeeded")
    ids = []
    for watcher in watchers:
        while True:
            message = await watcher.expect(MESSAGE)
            if json.loads(message["messages"][0]["data"])["metrics"]["connections"] == 3:
                ids.append(message["id"])
                break
    assert ids[0] == ids[1]


async def test_a_renewal_without_channel_metadata_fails_the_watched_channel(
    ably_emulator: RunningEmulator, wires: list[Any]
) -> None:
    """A token renewal (AUTH) whose capability no longer has ``channel-metadata`` on a watched channel fails that
    channel with 40160, as its attach would be now; the connection and its other channels stay."""
    wire = await ably_wire(ably_emulator, f"accessToken={jwt_token({'*': ['*']})}")
    wires.append(wire)
    await wire.attach("room", params={"occupancy": "metrics.connections"})
    await wire.attach("other")
    assert await occupancy(wire) == {"connections": 1}
    narrowed = jwt_token({"room": ["subscribe"], "other": ["subscribe", "publish"]})
    await wire.send({"action": AUTH, "auth": {"accessToken": narrowed}})
    await wire.expect(CONNECTED)
    while (error := await wire.recv())["action"] == ATTACHED:  # "other": its new modes
        assert error["channel"] == "other"
    assert (error["action"], error["channel"], error["error"]["code"]) == (ERROR, "room", 40160)
    app = ably_emulator.node.states[APP.app_id].foreign_presence
    assert isinstance(app, AblyApp) and app.occupancy_watches == {}
    assert (await wire.attach("other"))["action"] == ATTACHED


async def test_a_publish_only_attachment_gets_no_occupancy_messages(
    ably_emulator: RunningEmulator, wires: list[Any]
) -> None:
    """The messages are MESSAGEs: an attachment without the SUBSCRIBE mode gets none, as it gets no other message."""
    wire = await ably_wire(ably_emulator)
    wires.append(wire)
    attached = await wire.attach("room", params={"occupancy": "metrics"}, flags=1 << 17)  # PUBLISH only
    assert attached["params"] == {"occupancy": "metrics"}
    await no_occupancy(wire)


async def test_a_failing_count_costs_one_message_not_the_apps_later_ones(
    ably_emulator: RunningEmulator, wires: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug while counting one channel (forced here) is logged, and the next sweep still sends every change."""
    watcher = await ably_wire(ably_emulator)
    wires.append(watcher)
    app = ably_emulator.node.states[APP.app_id].foreign_presence
    assert isinstance(app, AblyApp)
    await watcher.attach("room", params={"occupancy": "metrics.connections"})
    assert await occupancy(watcher) == {"connections": 1}
    counted = app.channel_details
    failures = [RuntimeError("a bug")]

    def failing_once(name: str) -> dict[str, Any]:
        if failures:
            raise failures.pop()
        return counted(name)

    monkeypatch.setattr(app, "channel_details", failing_once)
    pusher = await pusher_wire(ably_emulator)
    wires.append(pusher)
    await pusher.send("pusher:subscribe", {"channel": "room"})
    await pusher.expect("pusher_internal:subscription_succeeded")
    assert await occupancy(watcher, 4.0) == {"connections": 2}
    assert not failures


async def test_a_burst_of_watchers_shares_one_count(
    ably_emulator: RunningEmulator, wires: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Watches new at the same moment get their first message from one count of the channel, not one each (the
    count walks the channel's attachments: one per watcher made a crowd quadratic)."""
    watchers = [await ably_wire(ably_emulator) for _ in range(20)]
    wires.extend(watchers)
    app = ably_emulator.node.states[APP.app_id].foreign_presence
    assert isinstance(app, AblyApp)
    counted, calls = app.channel_details, []

    def counting(name: str) -> dict[str, Any]:
        calls.append(name)
        return counted(name)

    monkeypatch.setattr(app, "channel_details", counting)
    await asyncio.gather(
        *(w.send({"action": 10, "channel": "room", "params": {"occupancy": "metrics"}}) for w in watchers)
    )
    firsts = [await occupancy(watcher) for watcher in watchers]
    assert {first["connections"] for first in firsts} <= set(range(1, 21)) and len(calls) <= 10, len(calls)


async def test_occupancy_goes_to_the_name_that_asked_and_stops_when_that_name_is_detached(
    ably_emulator: RunningEmulator, wires: list[Any]
) -> None:
    """One connection attached to ``room`` and to ``[?occupancy=metrics]room`` (two channel objects of one page): the
    events went under both names, so the plain ``room`` got messages it never asked for, and a DETACH of the name that
    asked left them coming. They now go under that name alone, and stop with it; ``room`` stays attached."""
    watched = "[?occupancy=metrics]room"
    wire = await ably_wire(ably_emulator)
    wires.append(wire)
    await wire.attach("room")
    await wire.send({"action": ATTACH, "channel": watched})

    async def occupancy_names(wait: float) -> list[str]:
        """The names of the [meta]occupancy messages that arrive within ``wait`` seconds."""
        names = []
        with contextlib.suppress(TimeoutError):
            while True:
                message = await wire.recv(wait)
                if message["action"] == MESSAGE and message["messages"][0]["name"] == "[meta]occupancy":
                    names.append(message["channel"])
        return names

    assert await occupancy_names(1.5) == [watched]
    await wire.send({"action": DETACH, "channel": watched})
    other = await ably_wire(ably_emulator)
    wires.append(other)
    await other.attach("room")  # a change the watch would report
    assert await occupancy_names(2.0) == []
    await other.publish("room", {"name": "still", "data": "attached"})
    message = await wire.expect(MESSAGE)
    assert (message["channel"], message["messages"][0]["name"]) == ("room", "still")
