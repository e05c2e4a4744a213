"""Ably's echo in the usage meter: a realtime connection that publishes is sent its own message back unless it
connected with ``echo=false`` (ably-js ``echoMessages``), and Ably bills that delivery. The meter counted it among
the ``deliveries``, as if it reached another subscriber: Pusher, Supabase and PubNub, which send no publisher its own
message, were billed for it from a measured file, and ``relay cost --no-echo`` could not take it out for Ably. It is
now ``echo_deliveries``, apart, counted once per publish on the node that holds the publisher (in a cluster, from the
connectionId the Ably message carries over the bus). A connection counted in the reach but sent nothing (echo=false
reached from another node, or an attachment that does not subscribe) is no delivery at all.
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import httpx
import pytest
from ably import AblyRealtime  # type: ignore[import-untyped]
from ablysupport import ACK, API_KEY, APP, MESSAGE, AblyWire, ably_wire

from relay.cost import default_prices, estimate
from relay.cost.rules import ably_messages_per_day
from relay.cost.usage import parse_usage, workload_from_usage
from relay.emulator.usage import DayUsage
from tests.cluster.conftest import RedisServer
from tests.cluster.conftest import redis_server as redis_server
from tests.conftest import RunningEmulator, StartEmulator, whole_run

WAIT = 5.0
BASIC = {"Authorization": "Basic " + base64.b64encode(API_KEY.encode()).decode()}
MODE_PUBLISH = 1 << 17


def metered(emulator: RunningEmulator) -> DayUsage:
    return whole_run(emulator.node.states[APP.app_id].meter.days())


async def acknowledged(wire: AblyWire, serial: int) -> list[dict[str, Any]]:
    """The MESSAGEs ``wire`` was sent until the ACK of its publish ``serial``."""
    sent: list[dict[str, Any]] = []
    while not ((answer := await wire.recv(WAIT))["action"] == ACK and answer["msgSerial"] == serial):
        if answer["action"] == MESSAGE:
            sent.append(answer)
    return sent


async def test_the_official_client_s_echo_is_counted_apart_and_relay_cost_bills_it_on_ably_only(
    ably_emulator: RunningEmulator, wires: list[Any]
) -> None:
    """ably-python publishes on a channel it subscribes to, with a raw listener there: it hears its own message (the
    SDK's default), /usage says 1 delivery and 1 echo delivery, and relay cost bills Ably 3 messages a publish (1 in,
    1 out, 1 echoed; 2 with --no-echo) and Pusher 2 (the publish and the listener's delivery)."""
    listener = await ably_wire(ably_emulator)
    wires.append(listener)
    await listener.attach("room")
    client = AblyRealtime(key=API_KEY, endpoint=f"127.0.0.1:{ably_emulator.port}", tls=False)
    try:
        channel = client.channels.get("room")
        heard: asyncio.Queue[Any] = asyncio.Queue()
        await channel.subscribe(heard.put_nowait)
        await channel.publish("chat", "hello")
        assert (await asyncio.wait_for(heard.get(), WAIT)).data == "hello"  # its own message, back
        assert (await listener.expect(MESSAGE))["messages"][0]["data"] == "hello"

        async with httpx.AsyncClient() as http:
            answer = await http.get(f"{ably_emulator.http_url}/usage")
        assert answer.status_code == 200, answer.text
        usage = parse_usage(answer.json(), origin="/usage")  # relay cost's strict loader takes the new field
        day = whole_run(usage.apps[APP.app_id].days)
        assert (day.publishes, day.deliveries, day.echo_deliveries) == (1, 1, 1)
        assert metered(ably_emulator).ably_messages == 3
        assert metered(ably_emulator).pusher_messages == 2
    finally:
        await client.close()

    echoed = workload_from_usage(usage)
    assert echoed.subscribers_per_publish == 1  # the listener: the publisher is no subscriber of its own publish
    per_publish = echoed.echo_deliveries_per_day / echoed.publishes_per_day  # type: ignore[operator]
    assert per_publish == 1
    assert ably_messages_per_day(echoed) == pytest.approx(3 * echoed.publishes_per_day)
    quiet = workload_from_usage(usage, echo=False)
    assert ably_messages_per_day(quiet) == pytest.approx(2 * quiet.publishes_per_day)
    pusher_units = dict(estimate(echoed, default_prices()).provider("pusher").units)
    assert pusher_units["messages_per_day"] == pytest.approx(2 * echoed.publishes_per_day)


@pytest.mark.parametrize(
    ("query", "attach", "sent_back"),
    [
        ("&echo=false", {}, False),  # left out by its own choice
        ("", {"flags": MODE_PUBLISH}, False),  # attached to publish only: it is sent no message of the channel
        ("", {}, True),
    ],
)
async def test_a_publisher_is_counted_as_what_it_was_sent(
    ably_emulator: RunningEmulator, wires: list[Any], query: str, attach: dict[str, int], sent_back: bool
) -> None:
    """A raw connection publishes to a channel with one other subscriber. Echo off or a publish-only attachment:
    nothing comes back, and neither a delivery nor an echo is counted (the publish-only attachment was counted a
    delivery it never got). Echo on: the echo, apart from the delivery."""
    publisher = await ably_wire(ably_emulator, f"key={API_KEY}{query}")
    listener = await ably_wire(ably_emulator)
    wires.extend([publisher, listener])
    await publisher.attach("room", **attach)
    await listener.attach("room")
    serial = await publisher.publish("room", {"name": "chat", "data": "x" * 6000})  # 2 units of 5 KiB
    assert len(await acknowledged(publisher, serial)) == int(sent_back)
    await listener.expect(MESSAGE)
    day = metered(ably_emulator)
    assert (day.deliveries, day.echo_deliveries) == (1, int(sent_back))
    assert day.delivered_units_5kib == 2  # the listener's delivery
    assert day.ably_messages == 2 * (1 + 1 + int(sent_back))


async def test_a_publish_as_a_connection_on_another_node_meters_its_echo_there(
    redis_server: RedisServer, start_emulator: StartEmulator, wires: list[Any]
) -> None:
    """A REST publish "as" a connection (its connectionKey) reaching the node that does not hold it: the node that
    holds it sends it back (echo on) and meters an echo delivery, told whose message it is by the connectionId the
    message carries over the bus; an echo=false connection there is sent nothing and metered nothing (it was a
    delivery). A realtime publish's echo is counted once, on the publisher's node, not by the node it reaches."""
    here, there = [await start_emulator(app=APP, redis_url=redis_server.url) for _ in range(2)]
    loud = await ably_wire(there)
    quiet = await ably_wire(there, f"key={API_KEY}&echo=false")
    far = await ably_wire(here)
    wires.extend([loud, quiet, far])
    for wire in (loud, quiet, far):
        await wire.attach("orders")
    await asyncio.sleep(0.2)  # the nodes' bus subscriptions are live well before this

    async with httpx.AsyncClient(base_url=here.http_url, headers=BASIC) as http:
        for name, wire in (("as-loud", loud), ("as-quiet", quiet)):
            key = wire.connected["connectionKey"]
            answer = await http.post(
                "/channels/orders/messages", json={"name": name, "data": "x", "connectionKey": key}
            )
            assert answer.status_code == 201, answer.text
    assert [(await loud.expect(MESSAGE))["messages"][0]["name"] for _ in range(2)] == ["as-loud", "as-quiet"]
    assert (await quiet.expect(MESSAGE))["messages"][0]["name"] == "as-loud"  # not its own
    for _ in range(2):
        await far.expect(MESSAGE)
    # there: as-loud reached quiet and came back to loud; as-quiet reached loud only.
    assert (metered(there).deliveries, metered(there).echo_deliveries) == (2, 1)
    assert (metered(here).publishes, metered(here).deliveries, metered(here).echo_deliveries) == (2, 2, 0)

    serial = await loud.publish("orders", {"name": "realtime", "data": "y"})
    assert [m["messages"][0]["name"] for m in await acknowledged(loud, serial)] == ["realtime"]
    assert (await far.expect(MESSAGE))["messages"][0]["name"] == "realtime"
    await quiet.expect(MESSAGE)
    assert (metered(there).deliveries, metered(there).echo_deliveries) == (3, 2)
    assert (metered(here).deliveries, metered(here).echo_deliveries) == (3, 0)
