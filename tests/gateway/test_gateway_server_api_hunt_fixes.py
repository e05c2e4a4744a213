"""The server API as a Next.js backend reads it with one fetch, through Pusher (the emulator) and Ably (the emulator's
Ably endpoint): what a caller must know before sending a failed publish again is in the JSON body, not only in the
sentence, on both providers alike.

A local stand-in provider hangs up after reading each request: the request went out and no answer came, so a
publish may have been delivered (``outcome_unknown``). The emulator refuses a batch's second call: its first call's
events were delivered (``published``). A route handler passing the browser's X-Socket-Id header on excludes that
tab; a user id that cannot be one path segment gets a 404 that says so.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import httpx
import pytest

from relay.gateway import GatewaySettings
from tests.conftest import TEST_APP, RunningEmulator
from tests.gateway.conftest import TOKEN, RunningGateway, StartGateway
from tests.gateway.test_gateway_server_api import signed_in
from tests.operations.support import ws_client

BEARER = {"Authorization": f"Bearer {TOKEN}"}
PUBLISH = {"channel": "orders", "event": "created", "data": {"id": 1}}
BATCH = {"events": [{"channel": "orders", "event": "created", "data": {"id": 1}}]}


def provider_urls(port: int) -> dict[str, str]:
    """RELAY_URLs of the emulator's app on ``port`` (or a stand-in there): its Pusher HTTP API and its Ably REST."""
    return {
        "pusher": f"emulator://{TEST_APP.key}:{TEST_APP.secret}@127.0.0.1:{port}/apps/{TEST_APP.app_id}",
        "ably": f"ably://1.{TEST_APP.key}:{TEST_APP.secret}@127.0.0.1:{port}?tls=false",
    }


@pytest.fixture
async def hanging_up_provider() -> AsyncIterator[tuple[int, list[bytes]]]:
    """A provider that reads each request whole, then closes the connection without answering; yields its port and
    the request lines it read."""
    request_lines: list[bytes] = []

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            (int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")),
            0,
        )
        await reader.readexactly(length)
        request_lines.append(head.split(b"\r\n")[0])
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], request_lines
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("provider", ["pusher", "ably"])
@pytest.mark.parametrize(("path", "body"), [("/v1/publish", PUBLISH), ("/v1/publish/batch", BATCH)])
async def test_a_publish_sent_and_not_answered_says_outcome_unknown_in_its_json(
    hanging_up_provider: tuple[int, list[bytes]],
    start_gateway: StartGateway,
    provider: str,
    path: str,
    body: object,
) -> None:
    """The 502's sentence said 'a publish may have been delivered', which a route handler cannot branch on: one that
    sent every 502 again (the usual retry) delivered the event twice. The flag is in the body, as the library's
    error has it."""
    port, request_lines = hanging_up_provider
    gateway = await start_gateway(GatewaySettings(relay_url=provider_urls(port)[provider], api_token=TOKEN))
    async with httpx.AsyncClient(base_url=gateway.url, headers=BEARER) as http:
        response = await http.post(path, json=body)
        assert response.status_code == 502
        answer = response.json()
        assert answer["outcome_unknown"] is True
        assert "may have been delivered, check before sending it again" in answer["error"]
        assert set(answer) == {"error", "outcome_unknown"}
        assert request_lines, "the request reached the provider"
        query = await http.get("/v1/channels/orders")
        assert query.status_code == 502
        assert set(query.json()) == {"error"}, "a query changes nothing: there is no outcome to be unsure of"


@pytest.mark.parametrize("provider", ["pusher", "ably"])
async def test_a_provider_that_cannot_be_reached_is_a_502_safe_to_send_again(
    start_gateway: StartGateway, provider: str
) -> None:
    """Nothing was sent: the body has no outcome_unknown, so a caller may send it again."""
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    gateway = await start_gateway(GatewaySettings(relay_url=provider_urls(port)[provider], api_token=TOKEN))
    async with httpx.AsyncClient(base_url=gateway.url, headers=BEARER) as http:
        response = await http.post("/v1/publish", json=PUBLISH)
    assert response.status_code == 502
    assert set(response.json()) == {"error"}
    assert response.json()["error"].startswith(f"could not reach 127.0.0.1:{port}: ConnectError")


# Events per call (Pusher 10, Ably 100), and an event over the provider's size limit (10 KB, 64 KiB)
PER_CALL = {"pusher": (10, 11_000), "ably": (100, 70_000)}


@pytest.mark.parametrize("provider", ["pusher", "ably"])
async def test_a_batch_refused_after_its_first_call_says_how_many_were_published_in_its_json(
    start_gateway: StartGateway, emulator: RunningEmulator, provider: str
) -> None:
    """The provider takes a batch's events in calls of ``per_call``; the event after the first call's is over its
    size limit. The first call's events were delivered, which only the sentence said: the count is in the body, so a
    route handler sends only ``events.slice(published)`` again."""
    per_call, oversized = PER_CALL[provider]
    gateway = await start_gateway(GatewaySettings(relay_url=provider_urls(emulator.port)[provider], api_token=TOKEN))
    subscriber = await ws_client(emulator.ws_url())
    await subscriber.subscribe("orders", TEST_APP)
    events = [{"channel": "orders", "event": f"e{i}", "data": str(i)} for i in range(per_call + 3)]
    events[per_call + 1]["data"] = "x" * oversized
    async with httpx.AsyncClient(base_url=gateway.url, headers=BEARER) as http:
        response = await http.post("/v1/publish/batch", json={"events": events})
        assert response.status_code == 413
        answer = response.json()
        assert answer["published"] == per_call
        assert "outcome_unknown" not in answer, "the provider answered: nothing is unknown"
        assert f"send only the events from {per_call} on again" in answer["error"]
        delivered = [(await subscriber.expect(f"e{i}"))["data"] for i in range(per_call)]
        assert delivered == [str(i) for i in range(per_call)]
        refused_alone = await http.post("/v1/publish/batch", json={"events": [events[per_call + 1]]})
        assert refused_alone.status_code == 413
        assert "published" not in refused_alone.json(), "nothing was published: no count to send"
        served = await http.post("/v1/publish", json={"channel": "orders", "event": "after", "data": "ok"})
        assert served.status_code == 200
    assert (await subscriber.expect("after"))["data"] == "ok"
    await subscriber.close()


async def test_an_ably_publish_through_the_emulator_answers_in_the_same_shape_as_pusher(
    start_gateway: StartGateway, emulator: RunningEmulator
) -> None:
    """The point of the gateway: the same request, another RELAY_URL, the same answer's keys."""
    urls = provider_urls(emulator.port)
    pusher, ably = [await start_gateway(GatewaySettings(relay_url=urls[name], api_token=TOKEN)) for name in urls]
    async with httpx.AsyncClient(headers=BEARER) as http:
        for data in ({"id": 1}, "text", 5, None):
            answers = [await http.post(f"{gw.url}/v1/publish", json={**PUBLISH, "data": data}) for gw in (pusher, ably)]
            assert [answer.status_code for answer in answers] == [200, 200]
            assert [set(answer.json()) for answer in answers] == [{"channels", "message_ids"}] * 2
            assert [answer.json()["channels"] for answer in answers] == [["orders"], ["orders"]]


async def test_an_x_socket_id_header_excludes_that_connection_as_the_body_s_socket_id_does(
    gateway: RunningGateway, emulator: RunningEmulator
) -> None:
    """A route handler that passes the browser's X-Socket-Id on as a header (Laravel's toOthers() reads it there)
    had it ignored: the tab got its own event back. The body's socket_id, when given, wins ("" excludes no one)."""
    sender, other = await ws_client(emulator.ws_url()), await ws_client(emulator.ws_url())
    for client in (sender, other):
        await client.subscribe("orders", TEST_APP)
    async with httpx.AsyncClient(base_url=gateway.url, headers=BEARER) as http:
        header = {"X-Socket-Id": sender.socket_id}
        assert (await http.post("/v1/publish", json={**PUBLISH, "event": "one"}, headers=header)).status_code == 200
        batch = {"events": [{"channel": "orders", "event": "two", "data": "2"}]}
        assert (await http.post("/v1/publish/batch", json=batch, headers=header)).status_code == 200
        body_wins = {**PUBLISH, "event": "three", "socket_id": other.socket_id}
        assert (await http.post("/v1/publish", json=body_wins, headers=header)).status_code == 200
        nobody = {**PUBLISH, "event": "four", "socket_id": ""}
        assert (await http.post("/v1/publish", json=nobody, headers=header)).status_code == 200
        refused = await http.post("/v1/publish", json=PUBLISH, headers={"X-Socket-Id": "undefined"})
        assert refused.status_code == 400
        assert refused.json() == {
            "error": "the X-Socket-Id header: invalid socket_id 'undefined': expected digits '.' digits, such as "
            "'1234.5678'"
        }
    assert [(await other.next())["event"] for _ in range(3)] == ["one", "two", "four"]
    assert [(await sender.next())["event"] for _ in range(2)] == ["three", "four"]
    for client in (sender, other):
        await client.close()


@pytest.mark.parametrize(
    ("path", "said"),
    [
        ("/v1/users/auth0%2F42/events", "'auth0/42' holds a '/'"),
        ("/v1/users//terminate", "it is empty"),
    ],
)
async def test_a_user_id_that_is_not_one_path_segment_is_a_404_that_says_so(
    gateway: RunningGateway, emulator: RunningEmulator, path: str, said: str
) -> None:
    """encodeURIComponent('auth0/42') is 'auth0%2F42', which the server decodes before routing: the answer was a bare
    'Not Found', as for a mistyped route."""
    alice = await signed_in(emulator, "alice")
    action = path.rsplit("/", 1)[1]
    async with httpx.AsyncClient(base_url=gateway.url, headers=BEARER) as http:
        missed = await http.post(path, json={"event": "notice", "data": 1})
        assert missed.status_code == 404
        assert missed.json() == {
            "error": f"no route for the user id of POST /v1/users/{{id}}/{action}: {said}; a user id is one path "
            "segment, percent-encoded (a '/' cannot be one: the %2F is decoded before routing)"
        }
        sent = await http.post("/v1/users/alice/events", json={"event": "notice", "data": 1})
        assert sent.status_code == 200
    assert (await alice.expect("notice"))["data"] == "1"
    await alice.close()
