"""Ably realtime fixes from a hunt with ably-js and the wire: what a resumed connection may do is its new token's.
§ numbers are the reference's (shared/reference/ably-and-pricing.md); Ably's features spec is cited where it is the
source."""

from __future__ import annotations

import asyncio

from ablysupport import NACK, ably_wire, jwt_token
from test_ably_realtime_edges import Wires, next_non_heartbeat

from tests.conftest import RunningEmulator

ENTER = 2


async def test_a_connection_resumed_with_a_narrower_token_acts_under_it_before_its_re_attach(
    ably_emulator: RunningEmulator, wires: Wires
) -> None:
    """RTN15c6 and RTN15h2: a client whose token expired (or whose network dropped) resumes with the token it has now.
    Its capability is the connection's from then on, as after an AUTH (RTC8a1): a publish or a presence message sent
    before the channel's re-attach used to pass under the old token's modes, so a backend that narrowed a user's
    tokens still saw that user publish on the channel it took away."""
    wide = jwt_token({"room": ["publish", "subscribe", "presence"]}, client_id="phone")
    narrow = jwt_token({"room": ["subscribe"]}, client_id="phone")
    phone = await ably_wire(ably_emulator, f"access_token={wide}")
    watcher = await ably_wire(ably_emulator)
    wires.extend((phone, watcher))
    await phone.attach("room")
    await watcher.attach("room")
    phone.ws.transport.abort()  # the network goes: the connection is held for a resume
    await asyncio.sleep(0.1)

    key = phone.connected["connectionKey"]
    back = await ably_wire(ably_emulator, f"access_token={narrow}&resume={key}")
    wires.append(back)
    assert back.connected["connectionId"] == phone.connected["connectionId"] and "error" not in back.connected
    await back.publish("room", {"name": "after", "data": "d"})
    refused = await back.expect(NACK)
    assert refused["error"]["code"] == 40160, refused
    await back.presence("room", {"action": ENTER})
    refused = await back.expect(NACK)
    assert refused["error"]["code"] == 40160, refused
    delivered = await next_non_heartbeat(watcher, 1.0)
    assert delivered is None, f"the watcher was sent {delivered}"
