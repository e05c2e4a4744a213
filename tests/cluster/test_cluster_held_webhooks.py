"""Held channel_vacated / member_removed webhooks outlive the node that held them, with a real redis-server and real
nodes: a node killed with SIGKILL, or cut off from Redis when its timer ends, does not take its holds with it; a
client that comes back within the delay still cancels them; each is sent once, and nothing of a hold stays in Redis."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from relay.emulator.cluster import HOLD_GRACE_SECONDS, HOLD_SWEEP_SECONDS
from tests.cluster.conftest import RedisServer
from tests.cluster.test_cluster import Client
from tests.cluster.test_cluster_webhooks import cluster_of, hooked, until
from tests.conftest import TEST_APP, RunningEmulator, StartEmulator
from tests.emulator_process import EmulatorProcess
from tests.webhook_receiver import Receiver, StartReceiver

# webhook_delay: time to kill a node, or bring a client back, after it made its holds and before they end. That takes
# a fraction of a second, but at 1.5 s a test process stalled for longer on a loaded machine failed falsely: the holds
# were released before the kill or the return (reproduced by stopping this process for 1.6 s once the holds were made).
DELAY = 3.0
HOLDS = "relay:holds:1"
CHANNEL_HOLD = "relay:vacating:1:presence-room"
MEMBER_HOLD = "relay:leaving:1:presence-room:alice"
NEWS_HOLD = "relay:vacating:1:news"
APP_TWO = replace(TEST_APP, app_id="2", key="two-key", secret="two-secret")
APP_TWO_HOLD = "relay:vacating:2:news"
HELD = {"channel_vacated", "member_removed"}
VACATED = {"name": "channel_vacated", "channel": "presence-room"}
REMOVED = {"name": "member_removed", "channel": "presence-room", "user_id": "alice"}
SWEEPS = HOLD_SWEEP_SECONDS + 0.5  # every node has swept again within this

Spawn = Callable[..., Awaitable[tuple[EmulatorProcess, RunningEmulator]]]


@pytest.fixture
async def spawn(tmp_path: Path, redis_server: RedisServer) -> AsyncIterator[Spawn]:
    """Nodes as real processes (so they can be SIGKILLed), each posting its webhooks to the URL it is given, so a
    test sees which node sent what. A test asks for its receivers first, so they still answer while the nodes stop.

    Their node_ttl is 3 s unless a test asks for less: a node whose heartbeats stop for node_ttl is buried (rightly),
    and its channels and members are counted out, their departures held anew by the node that buried it, on that
    node's clock, until it registers again. At 1 s a node stalled that long on a loaded machine was, and a test saw
    those holds and webhooks instead of the ones it looks at."""
    processes: list[EmulatorProcess] = []

    async def start(
        webhook_url: str, *, app_two: bool = False, delay: float = DELAY, node_ttl: float = 3.0
    ) -> tuple[EmulatorProcess, RunningEmulator]:
        """A node serving app 1, and APP_TWO too if asked, both posting their webhooks to ``webhook_url``, holding
        departures for ``delay`` seconds, and buried by the others once its heartbeats stop for ``node_ttl``."""
        apps = [TEST_APP, APP_TWO] if app_two else [TEST_APP]
        config = tmp_path / f"node{len(processes)}.toml"
        config.write_text(
            "".join(
                f'[[apps]]\napp_id = "{app.app_id}"\nkey = "{app.key}"\nsecret = "{app.secret}"\n'
                f'webhook_delay = {delay}\nwebhook_batch_ms = 10\nwebhooks = [{{ url = "{webhook_url}" }}]\n'
                for app in apps
            )
        )
        options = ["--node-ttl", str(node_ttl), "--shutdown-spread", "0"]
        process = await EmulatorProcess.start("--config", str(config), "--redis-url", redis_server.url, *options)
        processes.append(process)
        return process, RunningEmulator(node=None, port=process.port, app=TEST_APP)  # type: ignore[arg-type]

    yield start
    for process in processes:
        await process.stop()


@pytest.fixture
async def check(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    """The test's own connection to Redis, to watch the holds."""
    client: aioredis.Redis = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    yield client
    await client.aclose()


class CuttableLink:
    """A TCP proxy to Redis that can be cut, as a network fault between a node and Redis is: the connections through
    it drop and new ones are closed at once, while Redis runs on with its data."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.cut_off = False
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.cut_off:
            writer.transport.abort()
            return
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        pair = {writer, upstream_writer}
        self._writers |= pair
        await asyncio.gather(self._pipe(reader, upstream_writer), self._pipe(upstream_reader, writer))
        self._writers -= pair

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.transport.abort()

    def cut(self) -> None:
        self.cut_off = True
        for writer in list(self._writers):
            writer.transport.abort()

    def restore(self) -> None:
        self.cut_off = False

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


@pytest.fixture
async def link(redis_server: RedisServer) -> AsyncIterator[CuttableLink]:
    """Requested before start_emulator, so the nodes behind it are closed before it is."""
    proxy = CuttableLink(redis_server.port)
    await proxy.start()
    yield proxy
    await proxy.close()


async def held(check: aioredis.Redis) -> list[str]:
    """The pending keys the holds' sorted set names, sorted."""
    return sorted(str(member) for member in await check.zrange(HOLDS, 0, -1))


async def pending_keys(check: aioredis.Redis) -> list[str]:
    """The holds' pending keys in Redis (a return, a release or a sweep deletes them), sorted."""
    found: list[str] = []
    for pattern in ("relay:vacating:*", "relay:leaving:*"):
        found += [str(key) for key in await check.keys(pattern)]
    return sorted(found)


async def until_pending(check: aioredis.Redis, expected: list[str], within: float = 10.0) -> None:
    expected = sorted(expected)
    deadline = time.monotonic() + within
    while (found := await pending_keys(check)) != expected:
        assert time.monotonic() < deadline, f"holds in Redis: {found}, not {expected}"
        await asyncio.sleep(0.02)


async def hold_keys(check: aioredis.Redis) -> list[str]:
    """Every key a hold may leave behind: the holds' sorted set and the pending keys."""
    return sorted([*map(str, await check.keys("relay:holds:*")), *await pending_keys(check)])


async def redis_ms(check: aioredis.Redis) -> int:
    seconds, microseconds = await check.time()
    return int(seconds) * 1000 + int(microseconds) // 1000


def held_events(receiver: Receiver) -> list[dict[str, Any]]:
    return sorted(receiver.events(names=HELD), key=lambda event: str(event["name"]))


def arrivals(receiver: Receiver) -> list[float]:
    """When each held webhook's delivery arrived."""
    return [delivery.at for delivery in receiver.deliveries for event in delivery.events if event["name"] in HELD]


async def test_a_killed_node_s_held_webhooks_are_sent_once_by_a_survivor_after_the_delay(
    receiver: Receiver, start_receiver: StartReceiver, spawn: Spawn, check: aioredis.Redis
) -> None:
    """alice leaves a presence channel on a node, which holds channel_vacated and member_removed, and the node is
    SIGKILLed before the delay ends: the surviving node sends each once, after the delay (they used to be lost)."""
    to_doomed = await start_receiver()
    doomed_process, doomed = await spawn(to_doomed.url)
    await spawn(receiver.url)  # the survivor: no client of its own, only its sweep
    alice = await Client.open(doomed)
    await alice.subscribe("presence-room", "alice")
    await to_doomed.until(lambda: len(to_doomed.events()) >= 2, within=5)  # channel_occupied, member_added
    left_at = time.monotonic()
    await alice.ws.close()
    await until_pending(check, [CHANNEL_HOLD, MEMBER_HOLD])
    await doomed_process.kill()
    assert await pending_keys(check) == sorted([CHANNEL_HOLD, MEMBER_HOLD]), (
        "released before the kill: the test proves nothing"
    )

    await receiver.until(lambda: len(receiver.events()) >= 2, within=15)
    await asyncio.sleep(SWEEPS)  # not sent again: the survivor has swept once more meanwhile
    assert held_events(receiver) == [VACATED, REMOVED]
    assert receiver.events() == receiver.events(names=HELD)
    assert min(arrivals(receiver)) >= left_at + DELAY, "sent before the delay ended"
    assert to_doomed.events(names=HELD) == []
    assert await hold_keys(check) == []


async def test_a_client_returning_on_another_node_cancels_the_holds_of_a_killed_node(
    receiver: Receiver, spawn: Spawn, check: aioredis.Redis
) -> None:
    """alice leaves a presence channel and `news` on a node, which is then SIGKILLed, and comes back to the presence
    channel on the other node within the delay: that channel's holds are cancelled (no webhook, not even
    channel_occupied or member_added, as if she had not left); `news`, which nobody came back to, is vacated once."""
    doomed_process, doomed = await spawn(receiver.url)
    _, survivor = await spawn(receiver.url)
    alice = await Client.open(doomed)
    await alice.subscribe("presence-room", "alice")
    await alice.subscribe("news")
    await receiver.until(lambda: len(receiver.events()) >= 3, within=5)  # channel_occupied twice, member_added
    left_at = time.monotonic()
    await alice.ws.close()
    await until_pending(check, [NEWS_HOLD, CHANNEL_HOLD, MEMBER_HOLD])
    await doomed_process.kill()
    back = await Client.open(survivor)
    await back.subscribe("presence-room", "alice")
    await until_pending(check, [NEWS_HOLD])
    assert time.monotonic() < left_at + DELAY, "not back within the delay: the test proves nothing"

    await receiver.until(lambda: len(receiver.events()) >= 4, within=15)
    await asyncio.sleep(SWEEPS)  # the cancelled holds, had they stayed, would have been taken with news's
    assert receiver.events()[3:] == [{"name": "channel_vacated", "channel": "news"}]
    assert await hold_keys(check) == []


async def test_a_hold_its_own_node_releases_is_sent_once_by_that_node_and_a_return_elsewhere_cancels_it(
    redis_server: RedisServer, start_emulator: StartEmulator, start_receiver: StartReceiver, check: aioredis.Redis
) -> None:
    """alice leaves on A and comes back on B within the delay: no webhook, and nothing of the hold is left in Redis.
    She leaves B: B's own timer sends channel_vacated and member_removed once, after the delay, and A's sweep does not
    send them again. Meanwhile the hold is in Redis, due at the delay by Redis's clock, and expires by itself."""
    to_a, to_b = await start_receiver(), await start_receiver()
    a = await start_emulator(app=replace(hooked(to_a), webhook_delay=DELAY), redis_url=redis_server.url)
    b = await start_emulator(app=replace(hooked(to_b), webhook_delay=DELAY), redis_url=redis_server.url)
    first = await Client.open(a)
    await first.subscribe("presence-room", "alice")
    await to_a.until(lambda: len(to_a.events()) >= 2, within=5)  # channel_occupied, member_added
    left_at = time.monotonic()
    await first.ws.close()
    await until_pending(check, [CHANNEL_HOLD, MEMBER_HOLD])
    second = await Client.open(b)
    await second.subscribe("presence-room", "alice")
    await until_pending(check, [])
    assert time.monotonic() < left_at + DELAY, "not back within the delay: the test proves nothing"
    assert await hold_keys(check) == []
    await until(lambda: cluster_of(b)._queue.empty())

    before = await redis_ms(check)
    left_again_at = time.monotonic()
    await second.ws.close()
    await until_pending(check, [CHANNEL_HOLD, MEMBER_HOLD])
    after = await redis_ms(check)
    assert await held(check) == sorted([CHANNEL_HOLD, MEMBER_HOLD])
    for pending in (CHANNEL_HOLD, MEMBER_HOLD):
        due = await check.zscore(HOLDS, pending)
        assert due is not None and before + DELAY * 1000 <= due <= after + DELAY * 1000
        assert 0 < await check.pttl(pending) <= (DELAY + 30) * 1000
    assert 0 < await check.pttl(HOLDS) <= (DELAY + 30) * 1000

    await to_b.until(lambda: len(to_b.events()) >= 2, within=10)
    await asyncio.sleep(HOLD_GRACE_SECONDS + SWEEPS)  # A's sweep would have taken them by now, had they stayed
    assert held_events(to_b) == [VACATED, REMOVED]
    assert to_b.events() == to_b.events(names=HELD)
    assert min(arrivals(to_b)) >= left_again_at + DELAY, "sent before the delay ended"
    assert to_a.events(names=HELD) == []
    assert await hold_keys(check) == []


async def test_a_hold_whose_node_is_cut_off_from_redis_when_it_ends_is_sent_once_redis_is_back(
    redis_server: RedisServer,
    link: CuttableLink,
    start_emulator: StartEmulator,
    receiver: Receiver,
    check: aioredis.Redis,
) -> None:
    """A network fault between the node and Redis (Redis keeps its data) while alice's holds end: the node's own
    release cannot reach Redis, and is dropped; once the link is back, the node's sweep finds the holds still in Redis
    and sends each webhook once (they used to be lost); the node also releases them again itself on reconnection."""
    # Not DELAY: the node, its link and this test share one event loop, so what stalls the cut stalls the node's timers
    # as long, and the test waits for the timers to end with the link cut, so a longer delay is only time lost.
    node = await start_emulator(app=replace(hooked(receiver), webhook_delay=1.5), redis_url=link.url)
    alice = await Client.open(node)
    await alice.subscribe("presence-room", "alice")
    await receiver.until(lambda: len(receiver.events()) >= 2, within=5)  # channel_occupied, member_added
    await alice.ws.close()
    await until_pending(check, [CHANNEL_HOLD, MEMBER_HOLD])
    link.cut()
    loop = asyncio.get_running_loop()
    await until(
        lambda: (
            not cluster_of(node)._connected.is_set()
            and all(handle.when() <= loop.time() for handle, *_ in cluster_of(node)._held.values())
        )
    )
    assert await pending_keys(check) == sorted([CHANNEL_HOLD, MEMBER_HOLD]), (
        "released before the cut: the test proves nothing"
    )
    assert receiver.events(names=HELD) == []

    link.restore()
    await receiver.until(lambda: len(receiver.events()) >= 4, within=20)
    await asyncio.sleep(SWEEPS)
    assert held_events(receiver) == [VACATED, REMOVED]
    assert await hold_keys(check) == []


@pytest.mark.long
async def test_a_node_leaves_the_holds_of_an_app_it_does_not_serve_to_one_that_does(
    receiver: Receiver, start_receiver: StartReceiver, spawn: Spawn, check: aioredis.Redis
) -> None:
    """Nodes whose app lists differ, as in a rolling deploy that adds an app: the survivor, without app 2, leaves the
    killed node's app 2 hold in Redis (it used to take it and drop it, lost for every node); a node serving app 2,
    started later, sends it once."""
    to_doomed = await start_receiver()
    doomed_process, doomed = await spawn(to_doomed.url, app_two=True)
    await spawn(receiver.url)
    bob = await Client.open(replace(doomed, app=APP_TWO))
    await bob.subscribe("news")
    await to_doomed.until(lambda: len(to_doomed.events()) >= 1, within=5)  # channel_occupied
    await bob.ws.close()
    await until_pending(check, [APP_TWO_HOLD])
    await doomed_process.kill()
    await asyncio.sleep(DELAY + HOLD_GRACE_SECONDS + 2 * SWEEPS)  # the survivor has swept past the hold's time
    assert (await pending_keys(check), receiver.events()) == ([APP_TWO_HOLD], [])

    to_heir = await start_receiver()
    await spawn(to_heir.url, app_two=True)
    await to_heir.until(lambda: len(to_heir.events()) >= 1, within=10)
    await asyncio.sleep(SWEEPS)  # not sent twice
    assert to_heir.events() == [{"name": "channel_vacated", "channel": "news"}]
    assert await hold_keys(check) == []


async def test_a_killed_node_buried_by_a_node_without_its_app_is_settled_and_its_departures_sent_by_one_with_it(
    redis_server: RedisServer,
    receiver: Receiver,
    start_receiver: StartReceiver,
    spawn: Spawn,
    start_emulator: StartEmulator,
    check: aioredis.Redis,
) -> None:
    """The only survivor of a killed app 1 node serves app 2 only: it buries the node and used to skip app 1's counters
    while deleting the node's state, so they stayed counted for good and app 1 never had a channel_occupied,
    member_added, member_removed or channel_vacated webhook for that channel again. Now it counts them out, holding
    the departures in Redis, and a node serving app 1 started later sends them, then the next join's."""
    to_doomed = await start_receiver()
    # The doomed node's node_ttl of 1 s makes its burial quick (a stall of it before the kill ends in the same holds),
    # and the app 2 node holds nothing a burial would count out. The heir has 3 s: at 1 s, one stopped for 1.5 s was
    # buried with alice back, and the holds of her departures were still in Redis at the last check.
    doomed_process, doomed = await spawn(to_doomed.url, node_ttl=1)
    await start_emulator(app=APP_TWO, redis_url=redis_server.url, node_ttl=1.0)
    alice = await Client.open(doomed)
    await alice.subscribe("presence-room", "alice")
    await to_doomed.until(lambda: len(to_doomed.events()) >= 2, within=5)  # channel_occupied, member_added
    await doomed_process.kill()
    deadline = time.monotonic() + 10
    while await check.exists("relay:mem:1:presence-room", "relay:occ:1"):
        assert time.monotonic() < deadline, "the killed node's app 1 counters were not settled"
        await asyncio.sleep(0.05)
    assert await pending_keys(check) == sorted([CHANNEL_HOLD, MEMBER_HOLD])

    _, heir = await spawn(receiver.url)
    await receiver.until(lambda: len(receiver.events()) >= 2, within=10)
    assert held_events(receiver) == [VACATED, REMOVED]
    back = await Client.open(heir)
    await back.subscribe("presence-room", "alice")
    await receiver.until(lambda: len(receiver.events()) >= 4, within=5)
    await asyncio.sleep(SWEEPS)  # nothing sent twice
    assert sorted(event["name"] for event in receiver.events()[2:]) == ["channel_occupied", "member_added"]
    assert len(receiver.events()) == 4
    assert await hold_keys(check) == []
