"""Ably's ``[meta]channel.lifecycle`` metachannel on the emulator (docs/ably.md#channel-lifecycle-metachannel): a
subscriber whose capability names ``[meta]`` gets ``channel.region.active`` and ``channel.opened`` when a channel
opens (an attachment or a Pusher subscription), ``channel.region.inactive`` and ``channel.closed`` when its last one
has been gone for the app's webhook delay, each with a ChannelDetails; once per cluster, to subscribers on every
node. Nobody may publish or enter presence there (40160); ``*`` does not cover it (40160); other ``[meta]`` names stay
refused (40010)."""

from __future__ import annotations

import asyncio
import base64
import json
from dataclasses import replace
from typing import Any
from urllib.parse import quote

import httpx
from ablysupport import (
    API_KEY,
    APP,
    ATTACH,
    DETACH,
    DETACHED,
    ERROR,
    MESSAGE,
    NACK,
    AblyWire,
    ably_wire,
    pusher_wire,
    run_node,
)

from relay.emulator.config import Webhook
from tests.cluster.conftest import RedisServer
from tests.cluster.conftest import redis_server as redis_server
from tests.conftest import RunningEmulator, StartEmulator, whole_run
from tests.webhook_receiver import Receiver

LIFECYCLE = "[meta]channel.lifecycle"
# The app's keys reach metachannels too; closings are sent 0.2 s after the last subscriber left.
WATCHED = replace(APP, ably_capability='{"[*]*":["*"]}', webhook_delay=0.2)
MODE_SUBSCRIBE = 1 << 18
BASIC = {"Authorization": "Basic " + base64.b64encode(API_KEY.encode()).decode()}


async def lifecycle_events(wire: AblyWire, wait: float = 3.0) -> list[tuple[str, dict[str, Any]]]:
    """The events (name, decoded data) of the next MESSAGE on the metachannel."""
    message = await wire.expect(MESSAGE, wait)
    assert message["channel"] == LIFECYCLE
    events = []
    for item in message["messages"]:
        assert item["encoding"] == "json"
        events.append((item["name"], json.loads(item["data"])))
    return events


async def no_message(wire: AblyWire, seconds: float) -> None:
    """Nothing but heartbeats arrives for ``seconds``."""
    try:
        message = await wire.expect(MESSAGE, seconds)
    except TimeoutError:
        return
    raise AssertionError(f"unexpected {message}")


async def watcher(running: RunningEmulator, wires: list[Any]) -> AblyWire:
    wire = await ably_wire(running)
    wires.append(wire)
    attached = await wire.attach(LIFECYCLE)
    assert attached["flags"] == MODE_SUBSCRIBE  # subscribe only, though the capability grants "*"
    return wire


async def test_ably_js_watches_channels_open_and_close(start_emulator: StartEmulator) -> None:
    running = await start_emulator(app=WATCHED)
    run = await run_node("ably_js_channel_lifecycle.mjs", running)
    assert run.summary["checks"] == ["attached", "opened", "closed", "publish-refused", "capability-refused"]


async def test_an_opening_and_a_closing_carry_channel_details(start_emulator: StartEmulator, wires: list[Any]) -> None:
    running = await start_emulator(app=WATCHED)
    monitor = await watcher(running, wires)
    viewer = await ably_wire(running, binary=True)
    wires.append(viewer)
    await viewer.send({"action": ATTACH, "channel": "room", "flags": MODE_SUBSCRIBE})
    opened = await lifecycle_events(monitor)
    metrics = {
        "connections": 1,
        "presenceConnections": 0,
        "presenceMembers": 0,
        "presenceSubscribers": 0,
        "publishers": 0,
        "subscribers": 1,
        "objectPublishers": 0,
        "objectSubscribers": 0,
    }
    status = {"isActive": True, "occupancy": {"metrics": metrics}}
    assert opened == [
        (
            "channel.region.active",
            {"channelId": "room", "name": "room", "region": "local", "isGlobalMaster": True, "status": status},
        ),
        ("channel.opened", {"channelId": "room", "name": "room", "status": status}),
    ]
    await viewer.close()
    closed = await lifecycle_events(monitor)
    status = {"isActive": False, "occupancy": {"metrics": dict.fromkeys(metrics, 0)}}
    assert [name for name, _ in closed] == ["channel.region.inactive", "channel.closed"]
    assert closed[1][1] == {"channelId": "room", "name": "room", "status": status}


async def test_a_pusher_subscription_opens_a_channel_and_a_quick_return_does_not_close_it(
    start_emulator: StartEmulator, wires: list[Any]
) -> None:
    """A Pusher subscriber is an occupant of the shared channel; one that leaves and comes back within the hold (the
    app's webhook delay) leaves the channel open, as for the channel_vacated webhook."""
    running = await start_emulator(app=replace(WATCHED, webhook_delay=1.0))
    monitor = await watcher(running, wires)
    pusher = await pusher_wire(running)
    wires.append(pusher)
    await pusher.send("pusher:subscribe", {"channel": "orders"})
    await pusher.expect("pusher_internal:subscription_succeeded")
    opened = await lifecycle_events(monitor)
    assert opened[1][0] == "channel.opened" and opened[1][1]["status"]["occupancy"]["metrics"]["connections"] == 1
    await pusher.send("pusher:unsubscribe", {"channel": "orders"})
    await pusher.send("pusher:subscribe", {"channel": "orders"})
    await pusher.expect("pusher_internal:subscription_succeeded")
    await no_message(monitor, 1.5)


async def test_publishing_or_entering_presence_is_refused_and_the_metachannel_is_not_reported(
    start_emulator: StartEmulator, wires: list[Any]
) -> None:
    running = await start_emulator(app=WATCHED)
    monitor = await watcher(running, wires)
    await monitor.publish(LIFECYCLE, {"name": "channel.opened", "data": "forged"})
    nack = await monitor.expect(NACK)
    assert nack["error"]["code"] == 40160 and nack["error"]["statusCode"] == 401
    assert "publish to '[meta]channel.lifecycle'" in nack["error"]["message"]
    await monitor.presence(LIFECYCLE, {"action": 2, "clientId": "spy"})
    assert (await monitor.expect(NACK))["error"]["code"] == 40160
    second = await watcher(running, wires)  # another subscriber of the metachannel: no event for it
    await no_message(second, 0.5)


async def test_rest_refuses_a_publish_and_answers_history(start_emulator: StartEmulator, wires: list[Any]) -> None:
    """Over REST, as Ably: a publish to the metachannel is 40160 (HTTP 401); its history lists the events sent; the
    enumeration of active channels leaves it out."""
    running = await start_emulator(app=WATCHED)
    monitor = await watcher(running, wires)
    viewer = await ably_wire(running)
    wires.append(viewer)
    await viewer.attach("room")
    await lifecycle_events(monitor)
    path = "/channels/" + quote(LIFECYCLE, safe="") + "/messages"
    async with httpx.AsyncClient(base_url=running.http_url, headers=BASIC) as http:
        published = await http.post(path, json={"name": "channel.opened", "data": "forged"})
        assert published.status_code == 401
        assert published.json()["error"]["code"] == 40160
        history = await http.get(path)
        assert history.status_code == 200, history.text
        assert [item["name"] for item in history.json()] == ["channel.opened", "channel.region.active"]
        assert json.loads(history.json()[0]["data"])["channelId"] == "room"
        listed = await http.get("/channels", params={"by": "id"})  # the app's channels: no metachannel
        assert listed.status_code == 200 and listed.json() == ["room"]


async def test_a_late_watcher_rewinds_to_the_last_event(start_emulator: StartEmulator, wires: list[Any]) -> None:
    running = await start_emulator(app=WATCHED)
    monitor = await watcher(running, wires)
    viewer = await ably_wire(running)
    wires.append(viewer)
    await viewer.attach("room")
    await lifecycle_events(monitor)
    late = await ably_wire(running)
    wires.append(late)
    await late.attach(LIFECYCLE, params={"rewind": "1"})
    rewound = await lifecycle_events(late)
    assert [(name, data["channelId"]) for name, data in rewound] == [("channel.opened", "room")]


async def test_the_key_s_star_capability_does_not_cover_the_metachannel(
    start_emulator: StartEmulator, wires: list[Any]
) -> None:
    """The default key capability {"*":["*"]} is every channel but no metachannel: the attach fails with 40160 and
    the connection stays; another [meta] name is still no channel the emulator has (40010)."""
    running = await start_emulator(app=APP)
    wire = await ably_wire(running)
    wires.append(wire)
    await wire.send({"action": ATTACH, "channel": LIFECYCLE})
    error = await wire.expect(ERROR)
    assert error["channel"] == LIFECYCLE
    assert error["error"]["code"] == 40160
    assert error["error"]["message"].startswith("Channel denied access based on given capability")
    await wire.send({"action": ATTACH, "channel": "[meta]log"})
    assert (await wire.expect(ERROR))["error"]["code"] == 40010
    await wire.attach("still-connected")


async def test_a_capability_naming_the_metachannel_is_enough(start_emulator: StartEmulator, wires: list[Any]) -> None:
    running = await start_emulator(app=replace(APP, ably_capability=f'{{"*":["*"],"{LIFECYCLE}":["subscribe"]}}'))
    await watcher(running, wires)


async def test_webhooks_do_not_report_the_metachannel(
    receiver: Receiver, start_emulator: StartEmulator, wires: list[Any]
) -> None:
    """The metachannel is Ably's, not one of the app's channels: its subscribers open no channel a webhook tells of,
    nor change a count the subscription_count webhook tells of (on an app counting subscriptions)."""
    hook = Webhook(url=receiver.url, event_types=frozenset({"channel_occupied", "subscription_count"}))
    running = await start_emulator(app=replace(WATCHED, webhooks=(hook,), subscription_count=True))
    monitor = await watcher(running, wires)
    second = await watcher(running, wires)
    await second.send({"action": DETACH, "channel": LIFECYCLE})  # a count of the metachannel changed again
    await second.expect(DETACHED)
    viewer = await ably_wire(running)
    wires.append(viewer)
    await viewer.attach("room")
    await lifecycle_events(monitor)
    await receiver.until(lambda: len(receiver.events()) >= 2, 2.0)
    await asyncio.sleep(0.3)  # and no other
    assert sorted((event["name"], event["channel"]) for event in receiver.events()) == [
        ("channel_occupied", "room"),
        ("subscription_count", "room"),
    ]


async def test_a_cluster_reports_each_opening_once_to_every_node(
    redis_server: RedisServer, start_emulator: StartEmulator, wires: list[Any]
) -> None:
    here, there = [await start_emulator(app=WATCHED, redis_url=redis_server.url) for _ in range(2)]
    monitors = [await watcher(here, wires), await watcher(there, wires)]
    await _settle(here)
    viewers = [await ably_wire(here), await ably_wire(there)]
    wires.extend(viewers)
    for viewer in viewers:
        await viewer.attach("room")
    for monitor in monitors:
        opened = await lifecycle_events(monitor)
        assert [name for name, _ in opened] == ["channel.region.active", "channel.opened"]
        assert opened[1][1]["channelId"] == "room"
    for viewer in viewers:
        await viewer.close()
    for monitor in monitors:
        closed = await lifecycle_events(monitor)
        assert [name for name, _ in closed] == ["channel.region.inactive", "channel.closed"]
        await no_message(monitor, 1.0)
    # Metered apart from the publishes, once: the opening's two messages and the closing's, each 1 sent (on the node
    # that decided it) and 1 per subscriber (on each subscriber's node): 2 × 2 × (1 + 2).
    days = [whole_run(node.node.states[WATCHED.app_id].meter.days()) for node in (here, there)]
    assert sum(day.metachannel_messages for day in days) == 12
    assert sum(day.publishes + day.deliveries for day in days) == 0
    await monitors[1].close()  # the other node learns the metachannel has nobody there: nothing is built for it
    state = here.node.states[WATCHED.app_id]
    async with asyncio.timeout(2):
        while state.subscription_count(LIFECYCLE) != 1:  # noqa: ASYNC110 (a count the bus updates, no event)
            await asyncio.sleep(0.02)


async def _settle(running: RunningEmulator) -> None:
    """Until each node has heard of the other's metachannel subscriber (it reports nothing to nobody)."""
    await asyncio.sleep(0.3)  # the nodes' bus messages arrive well before this


async def test_an_opening_is_metered_as_its_two_messages_to_each_metachannel_subscriber(
    start_emulator: StartEmulator, wires: list[Any]
) -> None:
    """What docs/ably.md says the usage meter counts of an opening: Ably's two messages (channel.region.active and
    channel.opened), each 1 sent and 1 delivered to the metachannel's subscriber, counted apart from the publishes and
    their deliveries (only Ably has them, so relay cost bills them on Ably only); the metachannel and the channel
    opened are the peak's two channels."""
    running = await start_emulator(app=WATCHED)
    monitor = await watcher(running, wires)
    viewer = await ably_wire(running)
    wires.append(viewer)
    await viewer.send({"action": ATTACH, "channel": "room", "flags": MODE_SUBSCRIBE})
    assert [name for name, _ in await lifecycle_events(monitor)] == ["channel.region.active", "channel.opened"]
    day = whole_run(running.node.states[APP.app_id].meter.days())
    assert (day.metachannel_messages, day.publishes, day.deliveries, day.peak_channels) == (4, 0, 0, 2)
    assert day.ably_messages == 4
