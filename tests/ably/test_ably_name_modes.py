"""One connection attaching a channel under several names (``room`` and ``[?modes=publish]room``, as an SDK keeps one
channel object per name): each name is a channel attachment of its own, with the modes its own ATTACH was granted.
The connection's attachment to the channel had one set of modes for all its names, so the second ATTACH's replaced
the first's (the plain ``room`` stopped receiving after ``[?modes=publish]room`` attached) and messages went under
every name, whatever that name's ATTACH asked for.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from ablysupport import (
    ACK,
    ALL_MODES,
    API_KEY,
    APP,
    ATTACH,
    ATTACHED,
    AUTH,
    CONNECTED,
    DETACH,
    DETACHED,
    ERROR,
    HEARTBEAT,
    MESSAGE,
    NACK,
    PRESENCE,
    AblyWire,
    PusherWire,
    ably_wire,
    jwt_token,
)

from relay.emulator.usage import DayUsage
from relay.protocol.ably import sent_to
from tests.conftest import RunningEmulator, whole_run

Wires = list[AblyWire | PusherWire]
PRESENCE_MODE, PUBLISH_MODE, SUBSCRIBE_MODE, PRESENCE_SUBSCRIBE_MODE = 1 << 16, 1 << 17, 1 << 18, 1 << 19
RESUMED_FLAG = 4
HAS_PRESENCE_FLAG = 1


async def sent_before_pong(wire: AblyWire, ping_id: str) -> list[dict[str, Any]]:
    """What ``wire`` is sent before the answer to a HEARTBEAT it sends now (the server's own heartbeats aside):
    everything the server wrote to it so far, in order."""
    await wire.send({"action": HEARTBEAT, "id": ping_id})
    sent = []
    while (message := await wire.recv())["action"] != HEARTBEAT or message.get("id") != ping_id:
        if message["action"] != HEARTBEAT:
            sent.append(message)
    return sent


def shown(messages: list[dict[str, Any]]) -> list[tuple[int, str | None]]:
    """Each message's action and the channel name it went under (none for an ACK)."""
    return [(message["action"], message.get("channel")) for message in messages]


async def sent_until_acked(wire: AblyWire, serial: int, ping_id: str) -> list[tuple[int, str | None]]:
    """:func:`shown` of what ``wire`` is sent before the answer to a HEARTBEAT it sends now, which ends with the ACK
    of its message ``serial``."""
    sent = await sent_before_pong(wire, ping_id)
    assert (sent[-1]["action"], sent[-1].get("msgSerial")) == (ACK, serial), sent
    return shown(sent)


@pytest.mark.parametrize(
    ("modes", "presence", "own", "echo", "sent"),
    [
        (SUBSCRIBE_MODE, False, False, False, True),
        (SUBSCRIBE_MODE, False, True, True, True),  # its own message, echoed
        (SUBSCRIBE_MODE, False, True, False, False),  # echo=false
        (PUBLISH_MODE | PRESENCE_SUBSCRIBE_MODE, False, False, True, False),  # no SUBSCRIBE
        (PRESENCE_SUBSCRIBE_MODE, True, True, False, True),  # presence changes go to their own connection too
        (SUBSCRIBE_MODE | PRESENCE_MODE, True, False, True, False),  # no PRESENCE_SUBSCRIBE
    ],
)
def test_what_a_name_is_sent(modes: int, presence: bool, own: bool, echo: bool, sent: bool) -> None:
    assert sent_to(modes, presence=presence, own=own, echo=echo) is sent


async def test_a_publish_only_name_leaves_the_plain_name_subscribed(
    ably_emulator: RunningEmulator, wires: Wires
) -> None:
    """``room`` then ``[?modes=publish]room``: each ATTACHED has its own name's modes, and another connection's
    message arrives once, under ``room``: the second ATTACH no longer takes the first name's SUBSCRIBE away."""
    listener, publisher = await ably_wire(ably_emulator), await ably_wire(ably_emulator)
    wires.extend((listener, publisher))
    assert (await listener.attach("room"))["flags"] == ALL_MODES
    publishing = await listener.attach("[?modes=publish]room")
    assert (publishing["channel"], publishing["flags"]) == ("[?modes=publish]room", PUBLISH_MODE)
    await publisher.publish("room", {"name": "chat", "data": "hello"})
    await publisher.expect(ACK)
    sent = await sent_before_pong(listener, "after-the-publish")
    assert shown(sent) == [(MESSAGE, "room")]
    assert sent[0]["messages"][0]["data"] == "hello"


async def test_each_name_publishes_and_enters_with_its_own_modes(ably_emulator: RunningEmulator, wires: Wires) -> None:
    """A publish or a presence message goes by the modes of the name it is sent under: the subscribe-only name's
    is NACKed 40165 (the key's capability allows it, the ATTACH did not ask), the connection's other names' are
    not; its own message comes back under the names that subscribe only."""
    wire = await ably_wire(ably_emulator, f"key={API_KEY}&clientId=sam")
    wires.append(wire)
    for name in ("[?modes=publish]room", "[?modes=subscribe]room", "room"):
        await wire.attach(name)
    serial = await wire.publish("[?modes=subscribe]room", {"name": "chat", "data": "refused"})
    nack = await wire.expect(NACK)
    assert (nack["msgSerial"], nack["error"]["code"]) == (serial, 40165)
    serial = await wire.presence("[?modes=subscribe]room", {"action": 2})
    nack = await wire.expect(NACK)
    assert (nack["msgSerial"], nack["error"]["code"]) == (serial, 40165)

    serial = await wire.publish("[?modes=publish]room", {"name": "chat", "data": "allowed"})
    assert await sent_until_acked(wire, serial, "after-the-publish") == [
        (MESSAGE, "[?modes=subscribe]room"),
        (MESSAGE, "room"),
        (ACK, None),
    ]
    serial = await wire.presence("room", {"action": 2})
    # the subscribe-only name is sent no presence
    assert await sent_until_acked(wire, serial, "after-the-enter") == [(PRESENCE, "room"), (ACK, None)]


async def test_detaching_one_name_leaves_the_others(ably_emulator: RunningEmulator, wires: Wires) -> None:
    """DETACH of ``room`` leaves ``[?modes=subscribe]room`` receiving and ``[?modes=publish]room`` publishing: the
    channel goes with its last name only."""
    wire, publisher = await ably_wire(ably_emulator), await ably_wire(ably_emulator)
    wires.extend((wire, publisher))
    for name in ("room", "[?modes=subscribe]room", "[?modes=publish]room"):
        await wire.attach(name)
    await wire.send({"action": DETACH, "channel": "room"})
    assert (await wire.expect(DETACHED))["channel"] == "room"
    await publisher.publish("room", {"name": "chat", "data": "after the detach"})
    await publisher.expect(ACK)
    assert shown(await sent_before_pong(wire, "after-the-publish")) == [(MESSAGE, "[?modes=subscribe]room")]
    serial = await wire.publish("[?modes=publish]room", {"name": "chat", "data": "still publishing"})
    assert await sent_until_acked(wire, serial, "after-its-publish") == [
        (MESSAGE, "[?modes=subscribe]room"),
        (ACK, None),
    ]


async def test_a_narrower_token_changes_each_name_s_modes(ably_emulator: RunningEmulator, wires: Wires) -> None:
    """AUTH with a token that takes publish away: each name whose modes change gets an ATTACHED flagged RESUMED with
    its own new modes, one left with none fails with 40160, one unchanged is told nothing; the others go on
    receiving under their names."""
    token = jwt_token({"room": ["subscribe", "publish", "presence"]}, client_id="c")
    wire = await ably_wire(ably_emulator, f"access_token={token}")
    publisher = await ably_wire(ably_emulator)
    wires.extend((wire, publisher))
    names = ("room", "[?modes=publish,subscribe]room", "[?modes=subscribe]room", "[?modes=publish]room")
    for name in names:
        await wire.attach(name)
    narrowed = jwt_token({"room": ["subscribe", "presence"]}, client_id="c")
    await wire.send({"action": AUTH, "auth": {"accessToken": narrowed}})
    await wire.expect(CONNECTED)
    sent = await sent_before_pong(wire, "after-the-auth")
    assert shown(sent) == [(ATTACHED, "room"), (ATTACHED, "[?modes=publish,subscribe]room"), (ERROR, names[3])]
    assert sent[0]["flags"] == SUBSCRIBE_MODE | PRESENCE_SUBSCRIBE_MODE | PRESENCE_MODE | RESUMED_FLAG
    assert sent[1]["flags"] == SUBSCRIBE_MODE | RESUMED_FLAG
    assert sent[2]["error"]["code"] == 40160

    await publisher.publish("room", {"name": "chat", "data": "after the auth"})
    await publisher.expect(ACK)
    received = shown(await sent_before_pong(wire, "after-the-publish"))
    assert received == [(MESSAGE, "room"), (MESSAGE, "[?modes=publish,subscribe]room"), (MESSAGE, names[2])]
    serial = await wire.publish("[?modes=publish,subscribe]room", {"name": "chat"})
    assert (await wire.expect(NACK))["msgSerial"] == serial


async def test_presence_goes_under_the_names_that_subscribe_to_it(ably_emulator: RunningEmulator, wires: Wires) -> None:
    """A member's enter reaches the connection once, under its name with PRESENCE_SUBSCRIBE; the name attached for
    messages only is sent no presence, and is the one a message goes under."""
    listener = await ably_wire(ably_emulator)
    member = await ably_wire(ably_emulator, f"key={API_KEY}&clientId=ann")
    wires.extend((listener, member))
    assert (await listener.attach("[?modes=subscribe]room"))["flags"] == SUBSCRIBE_MODE
    watching = await listener.attach("[?modes=presence_subscribe]room")
    assert watching["flags"] == PRESENCE_SUBSCRIBE_MODE
    await member.attach("room")
    await member.presence("room", {"action": 2, "data": "here"})
    assert [message["action"] for message in await sent_before_pong(member, "after-its-enter")] == [PRESENCE, ACK]
    sent = await sent_before_pong(listener, "after-the-enter")
    assert shown(sent) == [(PRESENCE, "[?modes=presence_subscribe]room")]
    assert [(item["clientId"], item["data"]) for item in sent[0]["presence"]] == [("ann", "here")]
    await member.publish("room", {"name": "chat"})
    await sent_before_pong(member, "after-its-publish")
    assert shown(await sent_before_pong(listener, "after-the-publish")) == [(MESSAGE, "[?modes=subscribe]room")]


async def test_the_echo_is_metered_once_for_the_names_that_get_it(ably_emulator: RunningEmulator, wires: Wires) -> None:
    """A publisher attached to publish only under ``room`` and to subscribe under ``[?modes=subscribe]room`` is sent
    its message back under the latter, and the meter counts that echo (once per publish, as a delivery to a
    connection is counted once whatever its names)."""
    publisher, listener = await ably_wire(ably_emulator), await ably_wire(ably_emulator)
    wires.extend((publisher, listener))
    await publisher.attach("room", flags=PUBLISH_MODE)
    await publisher.attach("[?modes=subscribe]room")
    await listener.attach("room")
    serial = await publisher.publish("room", {"name": "chat", "data": "x"})
    sent = await sent_until_acked(publisher, serial, "after-the-publish")
    assert sent == [(MESSAGE, "[?modes=subscribe]room"), (ACK, None)]
    await listener.expect(MESSAGE)
    day: DayUsage = whole_run(ably_emulator.node.states[APP.app_id].meter.days())
    assert (day.deliveries, day.echo_deliveries) == (1, 1)


async def test_a_resumed_name_is_sent_what_its_own_modes_took_in(ably_emulator: RunningEmulator, wires: Wires) -> None:
    """After a dropped socket and a resume, each name's re-attach is RESUMED with the missed messages its own modes
    take: ``room`` gets the message published meanwhile, ``[?modes=publish]room`` nothing."""
    phone, watcher = await ably_wire(ably_emulator), await ably_wire(ably_emulator)
    wires.extend((phone, watcher))
    taken = {name: (await phone.attach(name))["channelSerial"] for name in ("room", "[?modes=publish]room")}
    phone.ws.transport.abort()  # no CLOSE: the connection is held for a resume
    await asyncio.sleep(0.1)
    await watcher.publish("room", {"name": "tick", "data": "missed"})
    await watcher.expect(ACK)

    back = await ably_wire(ably_emulator, f"key={API_KEY}&resume={phone.connected['connectionKey']}")
    wires.append(back)
    assert back.connected["connectionId"] == phone.connected["connectionId"]
    for name in ("[?modes=publish]room", "room"):
        await back.send({"action": ATTACH, "channel": name, "channelSerial": taken[name]})
    sent = await sent_before_pong(back, "after-the-re-attach")
    assert shown(sent) == [(ATTACHED, "[?modes=publish]room"), (ATTACHED, "room"), (MESSAGE, "room")]
    assert [message["flags"] for message in sent[:2]] == [PUBLISH_MODE | RESUMED_FLAG, ALL_MODES | RESUMED_FLAG]
    assert sent[2]["messages"][0]["data"] == "missed"


async def test_members_leave_when_no_name_may_be_present_any_more(ably_emulator: RunningEmulator, wires: Wires) -> None:
    """The member entered under ``room`` leaves when that name is DETACHed and the name left attached
    (``[?modes=subscribe]room``) has no PRESENCE: nothing could make it leave otherwise (a PRESENCE under the
    subscribe-only name is refused), and it stayed until the connection closed."""
    member = await ably_wire(ably_emulator, f"key={API_KEY}&clientId=ann")
    watcher = await ably_wire(ably_emulator)
    wires.extend((member, watcher))
    await watcher.attach("room")
    await member.attach("room")
    await member.attach("[?modes=subscribe]room")
    await member.presence("room", {"action": 2})
    assert shown(await sent_before_pong(member, "after-its-enter")) == [(PRESENCE, "room"), (ACK, None)]
    assert [item["action"] for item in (await watcher.expect(PRESENCE))["presence"]] == [2]
    await member.send({"action": DETACH, "channel": "room"})
    await member.expect(DETACHED)
    left = (await watcher.expect(PRESENCE))["presence"]
    assert [(item["action"], item["clientId"]) for item in left] == [(3, "ann")]
    newcomer = await ably_wire(ably_emulator)
    wires.append(newcomer)
    assert not (await newcomer.attach("room"))["flags"] & HAS_PRESENCE_FLAG  # the presence set is empty


async def test_members_leave_when_a_reauth_takes_presence_away(ably_emulator: RunningEmulator, wires: Wires) -> None:
    """A token without presence fails the name attached for it (40160) and its member leaves, though the connection
    keeps the channel under its subscribe-only name."""
    member = await ably_wire(
        ably_emulator, f"access_token={jwt_token({'room': ['subscribe', 'presence']}, client_id='c')}"
    )
    watcher = await ably_wire(ably_emulator)
    wires.extend((member, watcher))
    await watcher.attach("room")
    await member.attach("[?modes=presence]room")
    await member.attach("[?modes=subscribe]room")
    await member.presence("[?modes=presence]room", {"action": 2})
    await member.expect(ACK)
    await watcher.expect(PRESENCE)
    await member.send({"action": AUTH, "auth": {"accessToken": jwt_token({"room": ["subscribe"]}, client_id="c")}})
    await member.expect(CONNECTED)
    failed = await member.expect(ERROR)
    assert (failed["channel"], failed["error"]["code"]) == ("[?modes=presence]room", 40160)
    left = (await watcher.expect(PRESENCE))["presence"]
    assert [(item["action"], item["clientId"]) for item in left] == [(3, "c")]
