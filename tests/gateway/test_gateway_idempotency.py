"""``Idempotency-Key`` on the gateway's publish routes, over real HTTP to ``relay serve``'s app under uvicorn, in
front of a real emulator watched by a real WebSocket subscriber: a route handler's retry is delivered once."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from relay.gateway import GatewaySettings
from tests.conftest import RunningEmulator
from tests.gateway.conftest import TOKEN, RunningGateway, StartGateway, emulator_url
from tests.operations.support import Client, ws_client

AUTH = {"Authorization": f"Bearer {TOKEN}"}
KEY = "01J9ZQ4V6TQ8M2X0B7K3N5R1YD"  # a ULID
RULE = "an idempotency key is 1 to 200 printable ASCII characters without spaces (a UUID or a ULID fits)"


async def delivered(watcher: Client, http: httpx.AsyncClient, channel: str) -> list[str]:
    """The events ``watcher`` got on ``channel`` before a sentinel published after them, each as often as it came."""
    sentinel = await http.post("/v1/publish", json={"channel": channel, "event": "sentinel", "data": "end"})
    assert sentinel.status_code == 200, sentinel.text
    names = []
    while (frame := await watcher.next())["event"] != "sentinel":
        if frame.get("channel") == channel:
            names.append(frame["event"])
    return names


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/publish", {"channel": "orders", "event": "created", "data": {"id": 1}}),
        ("/v1/publish/batch", {"events": [{"channel": "orders", "event": "created", "data": {"id": 1}}]}),
    ],
)
async def test_a_retried_publish_is_delivered_once_and_answered_as_the_first(
    gateway: RunningGateway, emulator: RunningEmulator, path: str, body: dict[str, Any]
) -> None:
    watcher = await ws_client(emulator.ws_url())
    await watcher.subscribe("orders", emulator.app)
    async with httpx.AsyncClient(base_url=gateway.url, headers=AUTH) as http:
        first = await http.post(path, json=body, headers={"Idempotency-Key": KEY})
        again = await http.post(path, json=body, headers={"Idempotency-Key": KEY})
        assert (first.status_code, again.status_code) == (200, 200)
        assert again.content == first.content
        assert "idempotency-replayed" not in first.headers
        assert again.headers["idempotency-replayed"] == "true"
        assert await delivered(watcher, http, "orders") == ["created"]
    await watcher.close()


async def test_concurrent_retries_through_the_gateway_deliver_once(
    gateway: RunningGateway, emulator: RunningEmulator
) -> None:
    watcher = await ws_client(emulator.ws_url())
    await watcher.subscribe("orders", emulator.app)
    body = {"channel": "orders", "event": "created", "data": "x"}
    async with httpx.AsyncClient(base_url=gateway.url, headers=AUTH) as http:
        answers = await asyncio.gather(
            *(http.post("/v1/publish", json=body, headers={"Idempotency-Key": KEY}) for _ in range(5))
        )
        assert [answer.status_code for answer in answers] == [200] * 5
        assert sorted(answer.headers.get("idempotency-replayed", "") for answer in answers) == [""] + ["true"] * 4
        assert await delivered(watcher, http, "orders") == ["created"]
    await watcher.close()


async def test_a_key_reused_with_another_body_is_a_422(gateway: RunningGateway) -> None:
    async with httpx.AsyncClient(base_url=gateway.url, headers={**AUTH, "Idempotency-Key": KEY}) as http:
        first = await http.post("/v1/publish", json={"channel": "orders", "event": "created", "data": 1})
        other = await http.post("/v1/publish", json={"channel": "orders", "event": "created", "data": 2})
        batch = await http.post("/v1/publish/batch", json={"events": [{"channel": "o", "event": "e", "data": 1}]})
    assert first.status_code == 200
    message = (
        f"the idempotency key {KEY!r} was used for another publish in the last 120 seconds: a resend must repeat "
        "the same channels, event, data and socket_id; give a new publish a new key"
    )
    for refused in (other, batch):
        assert (refused.status_code, refused.json()) == (422, {"error": message})
        assert "idempotency-replayed" not in refused.headers


@pytest.mark.parametrize(
    ("key", "got"),
    [("", "got an empty one"), ("a b", "got one holding ' '"), ("k" * 201, "got 201 characters")],
)
async def test_a_bad_key_is_a_400_naming_the_rule(gateway: RunningGateway, key: str, got: str) -> None:
    async with httpx.AsyncClient(base_url=gateway.url, headers={**AUTH, "Idempotency-Key": key}) as http:
        publish = await http.post("/v1/publish", json={"channel": "orders", "event": "created", "data": 1})
        batch = await http.post("/v1/publish/batch", json={"events": [{"channel": "o", "event": "e", "data": 1}]})
    for refused in (publish, batch):
        assert (refused.status_code, refused.json()) == (400, {"error": f"{RULE}: {got}"})


async def test_a_publish_whose_provider_failed_keeps_no_key(start_gateway: StartGateway) -> None:
    """The provider unreachable (nothing listens on port 9): a 502, and the retry with the key is tried again (a 502
    again), not answered from memory."""
    gateway = await start_gateway(
        GatewaySettings(relay_url="emulator://app-key:app-secret@127.0.0.1:9/apps/1", api_token=TOKEN)
    )
    async with httpx.AsyncClient(base_url=gateway.url, headers={**AUTH, "Idempotency-Key": KEY}) as http:
        answers = [
            await http.post("/v1/publish", json={"channel": "orders", "event": "created", "data": 1}) for _ in range(2)
        ]
    for answer in answers:
        assert answer.status_code == 502 and "idempotency-replayed" not in answer.headers
        assert answer.json()["error"].startswith("could not reach 127.0.0.1:9"), answer.text


async def test_the_preflight_allows_the_idempotency_key_header(
    emulator: RunningEmulator, start_gateway: StartGateway
) -> None:
    gateway = await start_gateway(
        env={
            "RELAY_URL": emulator_url(emulator),
            "RELAY_CORS_ORIGINS": "http://localhost:3000",
            "RELAY_API_TOKEN": TOKEN,
        }
    )
    preflight = {
        "origin": "http://localhost:3000",
        "access-control-request-method": "POST",
        "access-control-request-headers": "authorization, content-type, idempotency-key",
    }
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        answer = await http.options("/v1/publish", headers=preflight)
    assert answer.status_code == 200, answer.text
    allowed = {header.strip().lower() for header in answer.headers["access-control-allow-headers"].split(",")}
    assert "idempotency-key" in allowed
    # A page's fetch reads only the headers CORS exposes: the replay's header is one
    cross_origin = {**AUTH, "origin": "http://localhost:3000", "Idempotency-Key": KEY}
    body = {"channel": "orders", "event": "created", "data": {"id": 1}}
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        first = await http.post("/v1/publish", json=body, headers=cross_origin)
        replayed = await http.post("/v1/publish", json=body, headers=cross_origin)
    assert first.status_code == 200, first.text
    assert replayed.headers["idempotency-replayed"] == "true"
    assert replayed.headers["access-control-expose-headers"].lower() == "idempotency-replayed"


async def test_two_gateway_replicas_sent_one_key_deliver_once(
    emulator: RunningEmulator, start_gateway: StartGateway
) -> None:
    """Each replica's client remembers its own keys; the emulator (an emulator:// URL) dedupes across them, as Ably
    does. A load balancer's retry landing on the other replica is not delivered again, and is answered as replayed."""
    watcher = await ws_client(emulator.ws_url())
    await watcher.subscribe("orders", emulator.app)
    settings = GatewaySettings(relay_url=emulator_url(emulator), api_token=TOKEN)
    replicas = [await start_gateway(settings), await start_gateway(settings)]
    publish = {"channel": "orders", "event": "created", "data": {"id": 1}}
    batch = {"events": [{"channel": "orders", "event": "paid", "data": {"id": 1}}]}
    answers = []
    for replica in replicas:
        async with httpx.AsyncClient(base_url=replica.url, headers=AUTH) as http:
            answers += [
                await http.post("/v1/publish", json=publish, headers={"Idempotency-Key": KEY}),
                await http.post("/v1/publish/batch", json=batch, headers={"Idempotency-Key": f"{KEY}-batch"}),
            ]
    assert [answer.status_code for answer in answers] == [200] * 4, [answer.text for answer in answers]
    assert answers[2].content == answers[0].content and answers[3].content == answers[1].content
    # The other replica's client never saw the keys: the emulator's answers say they were replayed, and so does it
    assert [answer.headers.get("idempotency-replayed") for answer in answers] == [None, None, "true", "true"]
    # The key for other data at the other replica: the emulator's refusal, passed on, and nothing delivered
    other_key = {"Idempotency-Key": f"{KEY}-other"}
    async with httpx.AsyncClient(base_url=replicas[1].url, headers=AUTH) as http:
        other = await http.post("/v1/publish", json={**publish, "data": {"id": 2}}, headers=other_key)
    async with httpx.AsyncClient(base_url=replicas[0].url, headers=AUTH) as http:
        reused = await http.post("/v1/publish", json={**publish, "data": {"id": 3}}, headers=other_key)
        assert await delivered(watcher, http, "orders") == ["created", "paid", "created"]
    assert (other.status_code, reused.status_code) == (200, 422), reused.text
    reuse = (
        f"the idempotency key '{KEY}-other' was used for another publish in the last 120 seconds: a resend must repeat "
        "the same channels, event, data and socket_id; give a new publish a new key"
    )
    assert reused.json() == {"error": f"the Relay emulator answered 422: {reuse}"}
    await watcher.close()
