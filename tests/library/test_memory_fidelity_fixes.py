"""memory:// answers as the emulator answers, for the subscriptions a test makes up: each test runs the same steps
against both, subscribing through ``store_of().subscribe`` on memory and through real WebSocket connections on the
emulator, so a test an application writes against memory passes only where production would."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest
from libsupport import Subscribe, Subscriber

from relay import AsyncRelay
from relay.adapters.memory import memory_store
from relay.errors import LimitExceeded
from tests.conftest import RunningEmulator, emulator_url


@dataclass
class World:
    """A provider and a way to make its clients subscribe: ``join`` returns what ``leave`` ends."""

    client: AsyncRelay
    join: Callable[[str, str | None], Awaitable[object]]
    leave: Callable[[object], Awaitable[None]]
    refusals: list[str] = field(default_factory=list)


def _memory_world() -> World:
    store = memory_store("fidelity")
    store.clear()

    async def join(channel: str, user_id: str | None) -> object:
        store.subscribe(channel, user_id)
        return (channel, user_id)

    async def leave(handle: object) -> None:
        channel, user_id = handle  # type: ignore[misc]
        store.unsubscribe(channel, user_id)

    return World(AsyncRelay("memory://fidelity"), join, leave)


def _emulator_world(emulator: RunningEmulator, subscriber: Subscribe) -> World:
    client = AsyncRelay(emulator_url(emulator))
    world: World

    async def join(channel: str, user_id: str | None) -> object:
        connection = await subscriber(emulator)
        body: dict[str, object] = {"channel": channel}
        if channel.startswith(("private-", "presence-")):
            body.update(client.authorize_channel(connection.socket_id, channel, None if user_id is None else user_id))
        await connection.send("pusher:subscribe", body)
        frame = await connection.recv()
        if frame["event"] == "pusher:subscription_error":
            world.refusals.append(frame["data"]["error"])
            raise LimitExceeded(frame["data"]["error"])
        assert frame["event"] == "pusher_internal:subscription_succeeded", frame
        return connection

    async def leave(handle: object) -> None:
        assert isinstance(handle, Subscriber)
        await handle.ws.close()
        await asyncio.sleep(0.2)  # the emulator sees the close

    world = World(client, join, leave)
    return world


@pytest.fixture(params=["memory", "emulator"])
async def world(
    request: pytest.FixtureRequest, emulator: RunningEmulator, subscriber: Subscribe
) -> AsyncIterator[World]:
    made = _memory_world() if request.param == "memory" else _emulator_world(emulator, subscriber)
    yield made
    await made.client.aclose()


async def test_channels_are_listed_in_name_order(world: World) -> None:
    """The emulator lists channels sorted by name; memory listed them in the order a test subscribed, so a test
    comparing ``list(channels())`` passed on memory and failed against the emulator."""
    for channel in ("zeta", "alpha", "presence-room", "middle"):
        await world.join(channel, "bob" if channel.startswith("presence-") else None)
    assert list(await world.client.channels()) == ["alpha", "middle", "presence-room", "zeta"]


async def test_a_presence_channel_takes_at_most_100_members(world: World) -> None:
    """Pusher and the emulator refuse the 101st user of a presence channel (a second tab of a member still joins);
    memory took any number, and a test counted members production never has."""
    for index in range(100):
        await world.join("presence-big", f"u{index}")
    await world.join("presence-big", "u0")  # a member's second tab
    with pytest.raises(LimitExceeded, match="presence limit of 100 reached"):
        await world.join("presence-big", "u100")
    assert (await world.client.channel("presence-big")).user_count == 100
    assert len(await world.client.presence_members("presence-big")) == 100


async def test_members_keep_their_order_when_a_second_tab_closes(world: World) -> None:
    """A member is listed where they first joined while any of their connections stays: memory moved them to the
    end when their first tab closed."""
    first_tab = await world.join("presence-room", "bob")
    await world.join("presence-room", "alice")
    await world.join("presence-room", "bob")
    await world.leave(first_tab)
    members = await world.client.presence_members("presence-room")
    assert [member.user_id for member in members] == ["bob", "alice"]


async def test_a_presence_member_id_may_hold_a_slash(world: World) -> None:
    """Pusher takes any user id of 1 to 128 characters in channel_data; memory refused one with '/' (a rule of
    terminate_connections' path), so an application's member ids could not be modelled."""
    await world.join("presence-room", "auth0/123")
    assert [member.user_id for member in await world.client.presence_members("presence-room")] == ["auth0/123"]


async def test_a_server_to_user_channel_is_never_occupied_nor_listed(
    emulator: RunningEmulator, subscriber: Subscribe
) -> None:
    """A signed-in user's ``#server-to-user-`` subscription is no channel the HTTP API counts or lists; memory let a
    test subscribe to one, which then showed as occupied and listed. It is refused now, naming send_to_user."""
    async with AsyncRelay(emulator_url(emulator)) as real:
        connection = await subscriber(emulator)
        await connection.signin(real.authenticate_user(connection.socket_id, "42"))
        await connection.subscribe("#server-to-user-42", {"auth": ""})
        assert not (await real.channel("#server-to-user-42")).occupied
        assert await real.channels() == {}
    store = memory_store("fidelity")
    store.clear()
    with pytest.raises(ValueError, match="send_to_user"):
        store.subscribe("#server-to-user-42")
    assert store.subscriptions == {}
