"""The debug console lists an Ably connection as it lists a Pusher one: its client id as the user, the channels it
is attached to, and its age (the list showed "–", no channels and no age for every Ably connection)."""

from __future__ import annotations

from ablysupport import AblyWire, PusherWire, ably_wire, jwt_token

from tests.conftest import RunningEmulator


async def test_an_ably_connection_is_listed_with_its_client_id_channels_and_age(
    ably_emulator: RunningEmulator, wires: list[AblyWire | PusherWire]
) -> None:
    wire = await ably_wire(ably_emulator, f"access_token={jwt_token(client_id='ably-user')}")
    wires.append(wire)
    for channel in ("orders", "presence-room"):
        await wire.attach(channel)
    node = ably_emulator.node
    [listed] = node.ops.snapshot(node.states["1"])["connections"]
    assert listed == {
        **listed,
        "socket_id": wire.connected["connectionId"],
        "user_id": "ably-user",
        "channels": ["orders", "presence-room"],
        "channels_total": 2,
    }
    assert isinstance(listed["opened_at"], int) and listed["opened_at"] > 0
