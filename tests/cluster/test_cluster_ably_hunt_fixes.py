"""Ably clients in a cluster, found by a hunt with real nodes and a real redis-server: a signed TokenRequest is used
once in the cluster, as Ably uses it once, not once on each node behind the load balancer; an idempotent publish
is answered as the first by a node started since."""

from __future__ import annotations

import time

import httpx

from relay.protocol.ably import build_token_request
from tests.ably.ablysupport import KEY_NAME, KEY_SECRET
from tests.cluster.conftest import RedisServer
from tests.cluster.test_cluster import Client
from tests.cluster.test_cluster_webhooks import until
from tests.conftest import RunningEmulator, StartEmulator

PATH = f"/keys/{KEY_NAME}/requestToken"


async def exchange(node: RunningEmulator, token_request: dict[str, object]) -> httpx.Response:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{node.port}") as http:
        return await http.post(PATH, json=token_request)


def replay_refused(answer: httpx.Response) -> bool:
    return answer.status_code == 401 and answer.json()["error"]["code"] == 40105


async def test_a_signed_token_request_is_exchanged_once_in_the_cluster(
    redis_server: RedisServer, start_emulator: StartEmulator
) -> None:
    """One TokenRequest gave a token on each node: captured, it could be replayed once a node."""
    a = await start_emulator(redis_url=redis_server.url)
    b = await start_emulator(redis_url=redis_server.url)
    token_request = build_token_request(KEY_NAME, KEY_SECRET, timestamp=int(time.time() * 1000), nonce="n" * 20)
    first = await exchange(a, token_request)
    assert first.status_code == 200, first.text
    assert replay_refused(await exchange(a, token_request))
    used = (KEY_NAME, "n" * 20, token_request["timestamp"])
    await until(lambda: used in b.node.ably.auth._nonces)  # the news crosses Redis in milliseconds
    assert replay_refused(await exchange(b, token_request))
    # A node started since reads the nonces Redis keeps
    c = await start_emulator(redis_url=redis_server.url)
    assert replay_refused(await exchange(c, token_request))
    other = build_token_request(KEY_NAME, KEY_SECRET, timestamp=int(time.time() * 1000), nonce="m" * 20)
    assert (await exchange(c, other)).status_code == 200  # another TokenRequest is another nonce


async def test_an_idempotent_ably_publish_is_not_delivered_again_by_a_node_started_since(
    redis_server: RedisServer, start_emulator: StartEmulator
) -> None:
    """A retry (same message ids) sent to a node started after the first publish, as in a rolling deploy, was
    published again: the ids crossed the bus only, which that node never heard."""
    a = await start_emulator(redis_url=redis_server.url)
    b = await start_emulator(redis_url=redis_server.url)
    watcher = await Client.open(b)
    await watcher.subscribe("orders")
    body = [{"id": "retry-1:0", "name": "paid", "data": "x"}]
    first = await publish(a, body)
    assert (await watcher.expect("paid"))["data"] == "x"
    c = await start_emulator(redis_url=redis_server.url)
    again = await publish(c, body)
    assert again == first  # the first answer, serials and all
    await publish(c, [{"name": "marker", "data": "y"}])
    assert (await watcher.recv())["event"] == "marker"  # and nothing between


async def publish(node: RunningEmulator, body: list[dict[str, str]]) -> object:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{node.port}") as http:
        answer = await http.post("/channels/orders/messages", json=body, auth=(KEY_NAME, KEY_SECRET))
    assert answer.status_code == 201, answer.text
    return answer.json()
