"""Event names starting with ``pusher`` are the protocol's own (``pusher:…``, ``pusher_internal:…``): hosted Pusher
refuses a trigger of one with 400 "The 'pusher' namespace is reserved for internal usage" (pusher/pusher-http-ruby#142).
The library refuses them before sending anything, in the words the emulator answers with, since both use
``relay.protocol.channels.validate_event_name``. Every test runs through ``Relay`` and ``AsyncRelay``."""

from __future__ import annotations

import json
import time

import httpx
import pytest
from libsupport import APP_ID, KEY, SECRET, Emulator, MakeRelay, emulator_url

from relay import Event, Relay
from relay.errors import InvalidEventName
from relay.protocol.signing import sign_rest_request

RESERVED = "The 'pusher' namespace is reserved for internal usage"
NAMES = ["pusher-notification", "pusher:error", "pusher_internal:member_added"]


@pytest.mark.parametrize("name", NAMES)
async def test_a_reserved_event_name_is_refused_before_anything_is_sent(
    emulator: Emulator, make_relay: MakeRelay, name: str
) -> None:
    relay = make_relay(emulator_url(emulator))
    with pytest.raises(InvalidEventName) as published:
        await relay.publish("orders", name, {"id": 1})
    assert str(published.value).startswith(RESERVED)
    with pytest.raises(InvalidEventName) as batched:
        await relay.publish_batch([Event("orders", "order-placed", "1"), Event("orders", name, "2")])
    assert str(batched.value) == f"events[1]: {published.value}"
    with pytest.raises(InvalidEventName):
        await relay.send_to_user("alice", name, {})
    assert relay.requests == []


@pytest.mark.parametrize("name", NAMES)
async def test_the_emulator_refuses_the_same_names_in_the_same_words(
    emulator: Emulator, make_relay: MakeRelay, name: str
) -> None:
    """What the library would have sent, sent by hand, is answered 400 with the library's own message."""
    relay = make_relay(emulator_url(emulator))
    with pytest.raises(InvalidEventName) as refused:
        await relay.publish("orders", name, "{}")
    path = f"/apps/{APP_ID}/events"
    body = json.dumps({"name": name, "channels": ["orders"], "data": "{}"}).encode()
    params = sign_rest_request(KEY, SECRET, "POST", path, timestamp=int(time.time()), body=body)
    async with httpx.AsyncClient(timeout=5) as http:
        response = await http.post(f"http://127.0.0.1:{emulator.port}{path}", params=params, content=body)
    assert (response.status_code, response.json()) == (400, {"error": str(refused.value)})


def test_every_provider_refuses_them_as_the_check_is_shared() -> None:
    """The rule is the Pusher API's; the library applies its event-name rules to every provider, so a Relay on Ably
    alone (which would carry the name) refuses them too, and code moves between providers unchanged."""
    for url in ("ably://app.key:secret@rest.ably.io", "memory://", "pusher://key:secret@eu/apps/1"):
        with pytest.raises(InvalidEventName, match=RESERVED):
            Relay.from_url(url).publish("orders", "pusher:member_added", {})
