"""Bugs a second hunt found on the Ably side, each checked with an official SDK against the emulator: ephemeral
messages (``extras.ephemeral``, Ably's typing indicators and reactions) were kept as history, rewound, sent to
Ably-format webhooks, sent again to a resumed connection and cached for Pusher subscribers, where Ably only delivers
them to the subscribers of the moment."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from typing import Any

from ably import AblyRealtime, AblyRest  # type: ignore[import-untyped]
from ably.types.channeloptions import ChannelOptions  # type: ignore[import-untyped]
from ably.types.message import Message  # type: ignore[import-untyped]
from ablysupport import API_KEY, APP, connected, pusher_wire

from relay.emulator.config import Webhook
from tests.ably.test_ably_resume import MESSAGE, RESUMED, Clock, setup, ticks
from tests.conftest import RunningEmulator, StartEmulator
from tests.webhook_receiver import Receiver

EPHEMERAL = {"ephemeral": True}


async def test_ephemeral_messages_reach_subscribers_only(receiver: Receiver, start_emulator: StartEmulator) -> None:
    """Ably's ephemeral messages (extras ``{"ephemeral": true}``) reach the channel's subscribers of the moment and
    nothing else: not history, not a rewind (a page loading the last messages would get typing indicators instead of
    chat), not a persisted last message, not Ably-format webhooks. Published over REST (alone, and in a publish
    beside a kept message, which keeps its id) and over realtime, by ably-python."""
    hooks = (Webhook(url=f"{receiver.url}/ably", format="ably"),)
    app = replace(APP, webhooks=hooks, ably_persist_last_message=("chat",))
    running = await start_emulator(app=app)
    rest = AblyRest(key=app.ably_api_key, endpoint="127.0.0.1", port=running.port, tls=False, use_token_auth=True)
    subscriber = AblyRealtime(key=app.ably_api_key, endpoint=f"127.0.0.1:{running.port}", tls=False)
    rewinder = AblyRealtime(key=app.ably_api_key, endpoint=f"127.0.0.1:{running.port}", tls=False)
    try:
        await connected(subscriber)
        received: asyncio.Queue[Any] = asyncio.Queue()
        live = subscriber.channels.get("chat:1")
        await live.subscribe(received.put_nowait)
        channel = rest.channels.get("chat:1")
        await channel.publish(Message(name="msg", data="kept-1"))
        await channel.publish(Message(name="typing", data="rest", extras=EPHEMERAL))
        await channel.publish(
            [Message(name="typing", data="beside", extras=EPHEMERAL), Message(name="msg", data="kept-2")]
        )
        await live.publish(Message(name="typing", data="realtime", extras=EPHEMERAL))
        await rest.channels.get("chat:2").publish(Message(name="typing", data="only", extras=EPHEMERAL))
        got = [await asyncio.wait_for(received.get(), 3) for _ in range(5)]
        assert [message.data for message in got] == ["kept-1", "rest", "beside", "kept-2", "realtime"]
        assert got[1].extras == EPHEMERAL  # delivered live as published

        history = await channel.history(direction="forwards")
        assert [(message.data, message.id) for message in history.items] == [
            ("kept-1", got[0].id),
            ("kept-2", got[3].id),
        ]
        assert (await rest.channels.get("chat:2").history()).items == []

        await connected(rewinder)
        rewound: asyncio.Queue[Any] = asyncio.Queue()
        await rewinder.channels.get("chat:1", ChannelOptions(params={"rewind": "10"})).subscribe(rewound.put_nowait)
        await rewinder.channels.get("chat:2", ChannelOptions(params={"rewind": "1"})).subscribe(rewound.put_nowait)
        assert [(await asyncio.wait_for(rewound.get(), 3)).data for _ in range(2)] == ["kept-1", "kept-2"]
        await asyncio.sleep(0.3)
        assert rewound.empty()  # chat:2 had only an ephemeral message: nothing to rewind, none persisted
    finally:
        await rewinder.close()
        await subscriber.close()
        await rest.close()

    def webhook_data() -> list[str]:
        return [
            message["data"]
            for delivery in receiver.deliveries
            for item in json.loads(delivery.body)["items"]
            if item["name"] == "channel.message"
            for message in item["data"]["messages"]
        ]

    await receiver.until(lambda: len(webhook_data()) >= 2, within=5)
    await asyncio.sleep(0.5)  # an ephemeral message's item would come meanwhile
    assert webhook_data() == ["kept-1", "kept-2"]


def test_a_resume_does_not_send_the_ephemeral_messages_it_missed() -> None:
    """A connection that comes back gets what it missed but the ephemeral messages (Ably delivers those once, to
    whoever is connected); the kept message of a publish that mixed both comes with the id it was published with."""
    clock = Clock()
    _, phone, watcher = setup(clock, "room")
    phone.session.connection_lost(phone.link)  # no CLOSE: the network went
    watcher.publish("room", "1")
    watcher.send(
        {
            "action": MESSAGE,
            "channel": "room",
            "msgSerial": 1,
            "messages": [{"name": "typing", "data": "alone", "extras": EPHEMERAL}],
        }
    )
    typing = {"name": "typing", "data": "beside", "extras": EPHEMERAL}
    mixed = [typing, {"name": "tick", "data": "2"}]
    watcher.send({"action": MESSAGE, "channel": "room", "msgSerial": 2, "messages": mixed})
    [*_, sent] = [frame for frame in watcher.take() if frame["action"] == MESSAGE]
    assert [item["data"] for item in sent["messages"]] == ["beside", "2"]  # live, both (echo)
    clock.now += 5

    phone.resume()
    attached, *rest = phone.reattach("room")
    assert attached["flags"] & RESUMED
    assert ticks(rest) == ["1", "2"]
    [kept] = [frame for frame in rest if frame["action"] == MESSAGE][-1]["messages"]
    assert kept["id"] == f"{sent['id']}:1"


async def test_a_cache_channel_keeps_the_last_lasting_ably_message_for_pusher_subscribers(
    ably_emulator: RunningEmulator, wires: list[Any]
) -> None:
    """A ``cache-`` channel gives a new Pusher subscriber the last Ably message, but not an ephemeral one: that one
    reached the subscribers of the moment only, as on Ably (a page opened later shows the order's status, not the
    typing that followed it)."""
    rest = AblyRest(key=API_KEY, endpoint="127.0.0.1", port=ably_emulator.port, tls=False, use_token_auth=True)
    try:
        channel = rest.channels.get("cache-order-7")
        await channel.publish(Message(name="status", data="shipped"))
        await channel.publish(Message(name="typing", data="bo", extras=EPHEMERAL))
    finally:
        await rest.close()
    late = await pusher_wire(ably_emulator)
    wires.append(late)
    await late.send("pusher:subscribe", {"channel": "cache-order-7"})
    await late.expect("pusher_internal:subscription_succeeded")
    cached = await late.expect("status")
    assert cached["data"] == "shipped"
