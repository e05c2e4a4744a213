"""Fixes from a conformance audit of the Pusher side against the checklist (reference §8), each against a real
emulator over real sockets.

1. Frames read together with the client's close frame were dropped: the close reply and the end of the stream that
   websockets queued for that close were flushed before the frames before it were handled, which ended the session
   first. A client event sent just before the close (websockets' ``send()`` then ``close()``, or any client that
   writes both at once: a "leaving" whisper) reached no one, and no ``client_event`` webhook was sent; a message
   refused as too big lost the messages before it and its own ``pusher:error`` (item 9) the same way. (pusher-js
   defers each send to a timer, so its ``trigger()`` then ``disconnect()`` loses the event in the browser anyway.)
"""

from __future__ import annotations

import json
import struct
from dataclasses import replace

from relay.emulator.config import Webhook
from tests.conformance.test_rfc6455 import CLOSE, TEXT, frame, presence_member, still_served
from tests.conformance.wsclient import APP, Connect, assert_serves_others
from tests.conftest import RunningEmulator, StartEmulator
from tests.webhook_receiver import Receiver

# -- 1. what a client sends before its close frame ---------------------------------------------------------------


async def test_a_client_event_sent_with_the_close_frame_reaches_the_others(emulator: RunningEmulator) -> None:
    """A client event and the close frame in one TCP write (as a client sends them when it closes right after
    triggering): the other member gets the client event, with the sender's user_id (item 43), then member_removed;
    the sender gets the close echoed and nothing else."""
    observer = await presence_member(emulator, "presence-leaving", "obs")
    leaver = await presence_member(emulator, "presence-leaving", "leaver")
    _, added = await observer.read()
    assert json.loads(added)["event"] == "pusher_internal:member_added"
    whisper = {"event": "client-bye", "channel": "presence-leaving", "data": {"reason": "closing"}}
    leaver.send(frame(TEXT, json.dumps(whisper).encode()), frame(CLOSE, struct.pack("!H", 1000)))
    _, relayed = await observer.read()
    assert json.loads(relayed) == {
        "event": "client-bye",
        "channel": "presence-leaving",
        "data": '{"reason":"closing"}',
        "user_id": "leaver",
    }
    _, removed = await observer.read()
    assert json.loads(removed) == {
        "event": "pusher_internal:member_removed",
        "channel": "presence-leaving",
        "data": '{"user_id":"leaver"}',
    }
    assert await leaver.read() == (CLOSE, struct.pack("!H", 1000))
    await still_served(emulator)


async def test_a_client_that_triggers_then_closes_has_its_event_relayed_and_webhooked(
    start_emulator: StartEmulator, connect: Connect, receiver: Receiver
) -> None:
    """The websockets client's send() then close(), a client event and its close written back to back: every time,
    the listener gets the event and the app its client_event webhook (item 48)."""
    app = replace(APP, webhooks=(Webhook(url=receiver.url, event_types=frozenset({"client_event"})),))
    target = await start_emulator(app=app)
    listener = await connect(target)
    for attempt in range(5):
        channel = f"private-last-words-{attempt}"
        await listener.subscribed(channel)
        sender = await connect(target)
        await sender.subscribed(channel)
        await sender.ws.send(json.dumps({"event": "client-last", "channel": channel, "data": {"n": attempt}}))
        await sender.ws.close()
        relayed = await listener.expect("client-last", channel)
        assert relayed["data"] == json.dumps({"n": attempt}, separators=(",", ":"))
    await receiver.until(lambda: len(receiver.events(names={"client_event"})) == 5)
    assert [event["channel"] for event in receiver.events(names={"client_event"})] == [
        f"private-last-words-{attempt}" for attempt in range(5)
    ]
    await assert_serves_others(target, connect)


async def test_a_message_too_big_read_with_the_messages_before_it(start_emulator: StartEmulator) -> None:
    """A client event and a message over max_frame_bytes in one TCP write: the client event is relayed, and the
    sender gets its pusher:error 1009 saying why (item 9), then the close 1009."""
    target = await start_emulator(max_frame_bytes=32_768)
    observer = await presence_member(target, "presence-big", "obs")
    sender = await presence_member(target, "presence-big", "big")
    await observer.read()  # member_added
    whisper = {"event": "client-before", "channel": "presence-big", "data": "first"}
    too_big = {"event": "client-after", "channel": "presence-big", "data": "x" * 40_000}
    sender.send(frame(TEXT, json.dumps(whisper).encode()), frame(TEXT, json.dumps(too_big).encode()))
    _, relayed = await observer.read()
    assert json.loads(relayed)["event"] == "client-before"
    opcode, error = await sender.read()
    assert opcode == TEXT
    assert json.loads(error) == {
        "event": "pusher:error",
        "data": {
            "code": 1009,
            "message": "Message too large: this server accepts WebSocket messages up to 32768 bytes",
        },
    }
    assert await sender.close_code() == 1009
    await still_served(target)
