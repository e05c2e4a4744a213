"""What a resource-exhaustion hunt found with raw sockets against a running emulator: a fragmented WebSocket message
was gathered as a list of its frames. websockets bounds a message's bytes across its fragments (``max_size``), not
its frames, so empty continuation frames (6 bytes each on the wire) grew one connection's list without end: 4 million
of them in 10 s grew the process by 27 MB, and it went on; 1-byte fragments were kept at about 42 bytes each."""

from __future__ import annotations

import asyncio
import json
import struct

import pytest
import websockets

from relay.emulator.ably_realtime import AblySession
from relay.emulator.server import MAX_MESSAGE_FRAGMENTS
from tests.conformance.test_rfc6455 import CLOSE, CONTINUATION, PING, PONG, TEXT, RawClient, frame, still_served
from tests.conftest import RunningEmulator, StartEmulator, whole_run
from tests.operations.support import eventually
from tests.operations.test_limits import closed_by_server, from_address

PING_MESSAGE = b'{"event":"pusher:ping","data":{}}'
ABLY_KEY = "1.app-key:app-secret"


def in_fragments(message: bytes, count: int) -> list[bytes]:
    """``message`` as ``count`` frames: its bytes in the first, then empty continuations, the last one final."""
    return [
        frame(TEXT, message, fin=False),
        *(frame(CONTINUATION, b"", fin=False) for _ in range(count - 2)),
        frame(CONTINUATION, b""),
    ]


async def test_a_message_in_as_many_fragments_as_allowed_is_handled(emulator: RunningEmulator) -> None:
    client = await RawClient.open(emulator)
    client.send(*in_fragments(PING_MESSAGE, MAX_MESSAGE_FRAGMENTS))
    assert await client.read() == (TEXT, b'{"event":"pusher:pong","data":{}}')


async def test_a_message_of_endless_empty_fragments_is_refused_with_1009(emulator: RunningEmulator) -> None:
    """Before: every empty continuation was kept, without end (one connection grew the process 27 MB in 10 s)."""
    client = await RawClient.open(emulator)
    client.send(*in_fragments(PING_MESSAGE, 100_000))
    opcode, payload = await client.read()
    assert opcode == TEXT
    error = json.loads(payload)
    assert error["event"] == "pusher:error"
    assert error["data"] == {
        "code": 1009,
        "message": f"Message too fragmented: this server accepts a WebSocket message in up to "
        f"{MAX_MESSAGE_FRAGMENTS} frames",
    }
    assert await client.close_code() == 1009
    await still_served(emulator)


async def test_fragments_are_counted_per_message_with_controls_in_between(emulator: RunningEmulator) -> None:
    """The count starts again with each message; pings between fragments are not fragments."""
    client = await RawClient.open(emulator)
    for _ in range(3):
        fragments = in_fragments(PING_MESSAGE, MAX_MESSAGE_FRAGMENTS)
        client.send(*fragments[:10], frame(PING, b"between"), *fragments[10:])
        assert await client.read() == (PONG, b"between")
        assert await client.read() == (TEXT, b'{"event":"pusher:pong","data":{}}')


async def ably_raw(emulator: RunningEmulator) -> RawClient:
    """A raw Ably connection, its CONNECTED read."""
    client = await RawClient.upgrade(emulator, f"/?key={ABLY_KEY}&format=json")
    assert json.loads((await client.read())[1])["action"] == 4  # CONNECTED
    return client


async def test_an_ably_connection_s_endless_fragments_fail_it_with_40009(emulator: RunningEmulator) -> None:
    client = await ably_raw(emulator)
    client.send(*in_fragments(b'{"action":0}', 100_000))
    opcode, payload = await client.read()
    assert opcode == TEXT
    message = json.loads(payload)
    assert (message["action"], message["error"]["code"], message["error"]["statusCode"]) == (9, 40009, 413)
    assert message["error"]["message"] == (
        f"Message too fragmented: this server accepts a WebSocket message in up to {MAX_MESSAGE_FRAGMENTS} frames"
    )
    opcode, payload = await client.read()  # the close, next
    assert (opcode, struct.unpack("!H", payload[:2])[0]) == (CLOSE, 1009)
    client.writer.close()
    await still_served(emulator)


@pytest.mark.parametrize("size", [1, 0])
async def test_fragments_are_held_as_their_bytes_alone(emulator: RunningEmulator, size: int) -> None:
    """A message held while its fragments arrive takes its bytes, not a Python object per fragment (a list of
    16,384 one-byte fragments took 700 KB for a 16 KiB message)."""
    client = await RawClient.open(emulator)
    start = b'{"event":"pusher:ping","data":"'
    pieces = [frame(TEXT, start, fin=False)]
    pieces += [frame(CONTINUATION, b"x" * size, fin=False) for _ in range(MAX_MESSAGE_FRAGMENTS - 10)]
    client.send(*pieces)
    connection = next(iter(emulator.node.connections))
    for _ in range(100):
        await asyncio.sleep(0.02)
        if len(connection._fragments) >= len(start) + (MAX_MESSAGE_FRAGMENTS - 10) * size:
            break
    held = connection._fragments
    assert isinstance(held, bytearray)
    assert len(held) == len(start) + (MAX_MESSAGE_FRAGMENTS - 10) * size
    client.send(frame(CONTINUATION, b'"}'))
    assert await client.read() == (TEXT, b'{"event":"pusher:pong","data":{}}')


# -- 2. Ably connections held for a resume, outside the per-address cap -----------------------------------------------


def ably_keys(emulator: RunningEmulator) -> set[str]:
    return {peer.connection_key for peer in emulator.node.states["1"].peers.values() if isinstance(peer, AblySession)}


async def test_ably_connections_held_for_a_resume_count_against_their_address(start_emulator: StartEmulator) -> None:
    """An Ably connection whose socket drops is held two minutes for a resume, and held nothing against its address:
    one address dropping its sockets held 2,000 connections (40,000 channels, 76 MB) in 5 s under a cap of 100, and
    would hold ~48,000 at that rate. A held connection now keeps its socket's place under
    ``max_connections_per_address``, and the address's next socket at the cap lets its oldest held connection go
    (its members leave, as when the two minutes are up) rather than be refused: one address holds no more
    connections than the cap, live or held."""
    emulator = await start_emulator(max_connections_per_address=3)
    url = f"ws://127.0.0.1:{emulator.port}/?key={ABLY_KEY}&format=json"
    keys: list[str] = []
    for _ in range(5):  # two more than the cap, each dropped without a CLOSE
        ably = await websockets.connect(url)
        keys.append(json.loads(await ably.recv())["connectionKey"])
        assert ably.transport is not None
        ably.transport.abort()
        await eventually(lambda: emulator.node.per_address == {"127.0.0.1": min(len(keys), 3)}, what="the drop")
    assert ably_keys(emulator) == set(keys[2:])  # before: all 5, and the address's count back to 0
    # a resume comes on a new socket, which takes the oldest held connection's place; the resumed one's is freed
    resumed = await websockets.connect(f"{url}&resume={keys[4]}")
    assert json.loads(await resumed.recv())["connectionKey"] == keys[4]
    assert ably_keys(emulator) == set(keys[3:])
    await eventually(lambda: emulator.node.per_address == {"127.0.0.1": 2}, what="the resumed connection's place")
    pusher = await RawClient.open(emulator)  # the third place, free
    extra = from_address(emulator.port, "127.0.0.1")  # at the cap: keys[3], the last held, goes
    assert not await closed_by_server(extra)
    assert ably_keys(emulator) == {keys[4]}
    another = from_address(emulator.port, "127.0.0.1")  # nothing held is left to let go: closed as before
    assert await closed_by_server(another, within=5)
    assert emulator.node.per_address == {"127.0.0.1": 3}
    pusher.send(frame(TEXT, PING_MESSAGE))
    assert await pusher.read() == (TEXT, b'{"event":"pusher:pong","data":{}}')
    extra.close()
    await resumed.close()  # a WebSocket close without Ably's CLOSE: held again, in its place
    await eventually(lambda: emulator.node.per_address == {"127.0.0.1": 2}, what="the closed connections' places")
    assert ably_keys(emulator) == {keys[4]}
    await emulator.node.close()  # shutdown lets held connections go, and their places
    assert emulator.node.per_address == {"127.0.0.1": 1} and emulator.node.held_by_address == {}


# -- 3. WebSocket pings on Ably connections, outside every budget ------------------------------------------------------


async def test_an_ably_connection_flooding_websocket_pings_is_closed_with_42924(emulator: RunningEmulator) -> None:
    """A Pusher connection's pings come out of its frame budget; an Ably connection's came out of nothing: two
    clients pinging as fast as they could had 1.1 million pings answered in 5 s and kept a core busy. They now count
    against the 2000 protocol messages a second, past which the connection is closed with 42924."""
    client = await ably_raw(emulator)
    client.send(frame(PING, b"") * 2_100)
    pongs = 0
    while (answer := await client.read())[0] == PONG:
        pongs += 1
    assert pongs <= 2_100  # those read before the flood was seen, answered by websockets as it parsed them
    message = json.loads(answer[1])
    assert (message["action"], message["error"]["code"], message["error"]["statusCode"]) == (9, 42924, 429)
    assert (
        message["error"]["message"] == "Connection terminated for abuse (inbound WebSocket ping rate exceeded 2000/s)"
    )
    opcode, payload = await client.read()  # the close, next
    assert (opcode, struct.unpack("!H", payload[:2])[0]) == (CLOSE, 1000)
    client.writer.close()
    await still_served(emulator)
    calm = await ably_raw(emulator)  # a few pings a second are nothing
    for _ in range(3):
        calm.send(frame(PING, b"calm"))
        assert await calm.read() == (PONG, b"calm")
    calm.writer.close()


# -- 4. an Ably channel's qualified names, outside every limit ---------------------------------------------------------


async def send_ably(client: RawClient, message: dict[str, object]) -> dict[str, object]:
    """Send an Ably protocol message; the next message read."""
    client.send(frame(TEXT, json.dumps(message).encode()))
    answer: dict[str, object] = json.loads((await client.read())[1])
    return answer


async def test_an_ably_channel_s_qualified_names_are_bounded_in_length_and_number(emulator: RunningEmulator) -> None:
    """Each name an ATTACH gave a channel (``[?rewind=1]room`` beside ``room``) was kept, whatever its qualifier's
    length and however many: 2,000 ATTACHes of one channel with 100 KB qualifiers grew the process by 196 MB in 4 s,
    without end. A qualifier is now at most 1,024 characters (40010), and every name counts against the 200 channels
    of a connection (90010); that channel's ATTACH fails, and the connection stays."""
    client = await ably_raw(emulator)
    long_name = f"[?pad={'x' * 1018}]room"  # a qualifier of 1,025 characters
    refused = await send_ably(client, {"action": 10, "channel": long_name})
    error = refused["error"]
    assert isinstance(error, dict)
    assert (refused["action"], refused["channel"], error["code"]) == (9, long_name, 40010)
    assert error["message"].endswith("its qualifier is 1025 characters, the most is 1024")
    attached = await send_ably(client, {"action": 10, "channel": f"[?pad={'x' * 1017}]room"})
    assert attached["action"] == 11  # ATTACHED: 1,024 fit
    for number in range(1, 200):
        assert (await send_ably(client, {"action": 10, "channel": f"[?n={number}]room"}))["action"] == 11
    refused = await send_ably(client, {"action": 10, "channel": "[?n=200]room"})
    error = refused["error"]
    assert isinstance(error, dict)
    assert (refused["action"], refused["channel"], error["code"]) == (9, "[?n=200]room", 90010)
    assert error["message"] == "Maximum number of channels per connection (200) exceeded"
    again = await send_ably(client, {"action": 10, "channel": "[?n=1]room"})  # a name it has: attached again
    assert again["action"] == 11
    heartbeat = await send_ably(client, {"action": 0, "id": "still here"})  # the connection stays
    assert heartbeat == {"action": 0, "id": "still here"}
    client.writer.close()
    await still_served(emulator)


# -- 5. channels left empty, lingering for the usage past their cap ----------------------------------------------------


async def test_channels_left_empty_linger_no_more_than_the_cap(
    start_emulator: StartEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A channel whose last subscriber leaves stays active for the usage a minute more, as on Ably; a publish to a
    channel nobody watches is held so within MAX_LINGERING_CHANNELS, but a channel emptied by an unsubscribe was
    held past it: 196,000 channels subscribed to and left by 400 clients in 24 s held 196,000 (76 MB). Past the cap,
    its minute is counted at once, as a publish's is."""
    monkeypatch.setattr("relay.emulator.usage.MAX_LINGERING_CHANNELS", 50)
    emulator = await start_emulator()
    meter = emulator.node.states["1"].meter
    client = await RawClient.open(emulator)
    for number in range(200):
        channel = {"channel": f"churn-{number}"}
        client.send(
            frame(TEXT, json.dumps({"event": "pusher:subscribe", "data": channel}).encode()),
            frame(TEXT, json.dumps({"event": "pusher:unsubscribe", "data": channel}).encode()),
        )
        assert json.loads((await client.read())[1])["event"] == "pusher_internal:subscription_succeeded"
    client.send(frame(TEXT, PING_MESSAGE))
    assert await client.read() == (TEXT, b'{"event":"pusher:pong","data":{}}')
    assert len(meter._lingering) == 50  # before: 200
    run = whole_run(meter.days())
    assert run.channel_minutes >= 150  # each one past the cap counted at once
    assert run.peak_channels >= 1
    await still_served(emulator)
