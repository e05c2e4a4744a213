"""Requests the gateway took without a word and answered from a guess: a trailing '/' got Starlette's 307 to a URL
built from the Host header, two Authorization headers were read as the first, a gzipped body was "malformed JSON",
and of two JWT cookies of the same name the last was the user. Each is now refused with its reason, and the gateway
keeps serving. A real gateway (uvicorn) in front of a real emulator (tests/gateway/conftest.py)."""

from __future__ import annotations

import gzip
import json

import httpx
import pytest

from relay.gateway import GatewaySettings
from tests.conftest import RunningEmulator
from tests.gateway.conftest import JWT_SECRET, TOKEN, RunningGateway, StartGateway, emulator_url, hs_jwt
from tests.operations.support import ws_client

PUBLISH = {"channels": ["orders"], "event": "placed", "data": {"id": 7}}
API = {"authorization": f"Bearer {TOKEN}"}


async def assert_publishing(http: httpx.AsyncClient) -> None:
    response = await http.post("/v1/publish", json=PUBLISH, headers=API)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("method", "path", "route"),
    [
        ("POST", "/v1/publish/", "/v1/publish"),
        ("POST", "/v1/publish/batch//", "/v1/publish/batch"),
        ("GET", "/v1/channels/", "/v1/channels"),
        ("POST", "/v1/auth/channel/", "/v1/auth/channel"),
    ],
)
async def test_a_route_s_path_with_a_trailing_slash_is_a_404_naming_the_route(
    gateway: RunningGateway, method: str, path: str, route: str
) -> None:
    """Starlette answered 307 to http://<Host header>/v1/publish: behind a proxy an address the caller cannot reach,
    and a fetch that followed it sent the body and the token again."""
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        response = await http.request(method, path, json=PUBLISH, headers={**API, "host": "internal:9999"})
        assert "location" not in response.headers
        message = f"no route at this path, which ends in '/': the route is {route}, without it"
        assert (response.status_code, response.json()) == (404, {"error": message})
        await assert_publishing(http)


async def test_an_unknown_path_ending_in_a_slash_is_a_plain_404(gateway: RunningGateway) -> None:
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        response = await http.get("/v1/nothing/")
    assert (response.status_code, response.json()) == (404, {"error": "Not Found"})


async def test_two_authorization_headers_are_a_400_whichever_is_right(gateway: RunningGateway) -> None:
    """The first was taken: a request with the API token second was refused as unauthorised, and one with it first
    was served whatever the second said."""
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        for pair in ([f"Bearer {TOKEN}", "Bearer other"], ["Bearer other", f"Bearer {TOKEN}"]):
            headers = httpx.Headers([("authorization", value) for value in pair])
            response = await http.post("/v1/publish", json=PUBLISH, headers=headers)
            error = {"error": "the request has 2 Authorization headers: send one"}
            assert (response.status_code, response.json()) == (400, error)
        await assert_publishing(http)


async def test_two_idempotency_keys_are_a_400_and_nothing_is_published(
    gateway: RunningGateway, emulator: RunningEmulator
) -> None:
    """The first key was taken silently: a retry sending the keys in the other order was published again. As with two
    Authorization headers, which is meant is not known, so neither is taken, and nothing is published."""
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        headers = httpx.Headers([*API.items(), ("idempotency-key", "order-1"), ("idempotency-key", "order-2")])
        response = await http.post("/v1/publish", json=PUBLISH, headers=headers)
        error = {"error": "the request has 2 Idempotency-Key headers: send one"}
        assert (response.status_code, response.json()) == (400, error)
        assert emulator.node.states["1"].meter.publishes == 0
        await assert_publishing(http)
    assert emulator.node.states["1"].meter.publishes == 1


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/publish", PUBLISH),
        ("/v1/publish/batch", {"events": [{"channel": "orders", "event": "placed", "data": 7}]}),
    ],
)
async def test_two_x_socket_id_headers_are_a_400_and_nothing_is_published(
    gateway: RunningGateway, emulator: RunningEmulator, path: str, body: dict[str, object]
) -> None:
    """The first X-Socket-Id was taken and the second dropped unseen, though a publish names one socket to leave out
    (the emulator's HTTP API takes it from one place, and refuses a parameter given twice): refused as two
    Idempotency-Keys are, naming the header, and nothing is published."""
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        headers = httpx.Headers([*API.items(), ("x-socket-id", "1.2"), ("x-socket-id", "3.4")])
        response = await http.post(path, json=body, headers=headers)
        error = {"error": "the request has 2 X-Socket-Id headers: send one"}
        assert (response.status_code, response.json()) == (400, error)
        assert emulator.node.states["1"].meter.publishes == 0
        await assert_publishing(http)


@pytest.mark.parametrize(
    ("path", "body", "key"),
    [
        ("/v1/publish", b'{"channel": "orders", "channel": "audit", "event": "placed", "data": 7}', "channel"),
        ("/v1/publish", b'{"channel": "orders", "event": "placed", "data": {"id": 7, "id": 8}}', "id"),
        ("/v1/publish/batch", b'{"events": [{"channel": "orders", "event": "placed", "event": "paid"}]}', "event"),
        ("/v1/users/alice/events", b'{"event": "placed", "data": 1, "data": 2}', "data"),
    ],
    ids=["channel", "in data", "in a batch's event", "user event"],
)
async def test_a_key_given_twice_in_a_json_body_is_a_400_and_nothing_is_published(
    gateway: RunningGateway, emulator: RunningEmulator, path: str, body: bytes, key: str
) -> None:
    """The body was read with the last of the two values winning: one channel named twice published to the second,
    which need not be the one the sender meant or a proxy in front checked. Refused, naming the key, as two
    Idempotency-Keys are."""
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        response = await http.post(path, content=body, headers={**API, "content-type": "application/json"})
        error = (
            f"the JSON body is malformed: {key!r} is given twice in one object, and which value was meant is unknown"
        )
        assert (response.status_code, response.json()) == (400, {"error": error})
        assert emulator.node.states["1"].meter.publishes == 0
        await assert_publishing(http)
    assert emulator.node.states["1"].meter.publishes == 1


# Each route that reads its query, and the names it reads there: the POST auth routes read the query beside the body
# (their OpenAPI document shows the fields as the body's), the GET routes the query alone (shown as query parameters)
QUERY_READERS = [
    ("GET", "/v1/channels", "prefix"),
    *(("GET", "/v1/auth/channel", name) for name in ("socket_id", "channel_name", "channel", "channels")),
    ("POST", "/v1/auth/channel", "channel_name"),
    ("POST", "/v1/auth/user", "socket_id"),
]


async def test_a_query_parameter_given_twice_with_two_values_is_a_400_on_every_route_reading_one(
    gateway: RunningGateway, emulator: RunningEmulator
) -> None:
    """/v1/channels took the last prefix and dropped the first unseen, where the emulator's HTTP API refuses any
    repeated parameter and the auth routes refused an auth field's second value. Every route reading its query now
    refuses a name it reads given two values, naming it; the same value twice is that value, as on the auth routes;
    and the gateway goes on serving."""
    for channel in ("news", "orders"):
        await (await ws_client(emulator.ws_url())).subscribe(channel, emulator.app)
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        schema = (await http.get("/openapi.json")).json()
        documented = {
            (method.upper(), path, parameter["name"])
            for path, operations in schema["paths"].items()
            for method, operation in operations.items()
            for parameter in operation.get("parameters", [])
            if parameter["in"] == "query"
        }
        # Every name a GET route reads is documented (GET /v1/auth/channel's socket_id was not), and a route that
        # comes to read its query is tested here too
        assert documented == {reader for reader in QUERY_READERS if reader[0] == "GET"}
        for method, path, name in QUERY_READERS:
            response = await http.request(method, f"{path}?{name}=orders&{name}=news", headers=API)
            error = {"error": f"{name} is given twice, as 'orders' and 'news': give it once"}
            assert (response.status_code, response.json()) == (400, error), (method, path)
        listed = await http.get("/v1/channels?prefix=news&prefix=news", headers=API)
        assert listed.status_code == 200, listed.text
        assert [channel["name"] for channel in listed.json()["channels"]] == ["news"]
        await assert_publishing(http)


@pytest.mark.parametrize(
    ("query", "unknown"), [("filter_by_prefix=presence-", "filter_by_prefix"), ("prefix=presence-&info=x", "info")]
)
async def test_a_query_parameter_the_channel_list_does_not_read_is_a_400_naming_it_and_prefix(
    gateway: RunningGateway, emulator: RunningEmulator, query: str, unknown: str
) -> None:
    """It was ignored: a user coming from Pusher, whose HTTP API names the prefix filter_by_prefix, got every channel
    listed as if they all had the prefix. Refused naming the parameter and the one the route reads (one name for
    the filter, not an alias), and the gateway goes on serving."""
    for channel in ("orders", "presence-room"):
        await (await ws_client(emulator.ws_url())).subscribe(channel, emulator.app, user_id="alice")
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        refused = await http.get(f"/v1/channels?{query}", headers=API)
        error = {"error": f"unknown query parameter {unknown!r}: this route reads prefix"}
        assert (refused.status_code, refused.json()) == (400, error)
        listed = await http.get("/v1/channels?prefix=presence-", headers=API)
        assert [channel["name"] for channel in listed.json()["channels"]] == ["presence-room"]


@pytest.mark.parametrize("coding", ["gzip", "br", "identity, gzip"])
async def test_a_body_in_a_content_coding_is_a_415_not_malformed_json(gateway: RunningGateway, coding: str) -> None:
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        body = gzip.compress(json.dumps(PUBLISH).encode())
        headers = {**API, "content-type": "application/json", "content-encoding": coding}
        response = await http.post("/v1/publish", content=body, headers=headers)
        message = (
            f"the request body is encoded ({coding!r} in Content-Encoding), and the gateway decodes no content "
            "coding: send the body uncompressed, without Content-Encoding"
        )
        assert (response.status_code, response.json()) == (415, {"error": message})
        await assert_publishing(http)


async def test_a_body_in_a_content_coding_without_the_token_is_a_401_first(gateway: RunningGateway) -> None:
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        response = await http.post("/v1/publish", content=b"x", headers={"content-encoding": "gzip"})
    assert response.status_code == 401


async def test_content_encoding_identity_is_no_coding(gateway: RunningGateway) -> None:
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        response = await http.post("/v1/publish", json=PUBLISH, headers={**API, "content-encoding": "identity"})
    assert response.status_code == 200, response.text


@pytest.fixture
async def cookie_gateway(start_gateway: StartGateway, emulator: RunningEmulator) -> RunningGateway:
    return await start_gateway(
        GatewaySettings(relay_url=emulator_url(emulator), api_token=TOKEN, jwt_secret=JWT_SECRET, jwt_cookie="session")
    )


async def sign_in(gateway: RunningGateway, cookie: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        return await http.post("/v1/auth/user", data={"socket_id": "1.1"}, headers={"cookie": cookie})


async def test_two_session_cookies_with_different_tokens_are_a_401(cookie_gateway: RunningGateway) -> None:
    """A browser sends both when one was set for another path or domain: Starlette's reading took the last, and
    signed the request in as whoever it named."""
    current, stale = hs_jwt("alice"), hs_jwt("mallory")
    response = await sign_in(cookie_gateway, f"session={current}; theme=dark; session={stale}")
    message = (
        "the request has 2 'session' cookies with different tokens (one set for another path or domain, left from "
        "an earlier sign-in): the gateway cannot tell which is current; sign out, or clear the site's cookies"
    )
    assert (response.status_code, response.json()) == (401, {"error": message})
    alone = await sign_in(cookie_gateway, f"session={current}")
    assert alone.status_code == 200, alone.text
    assert json.loads(alone.json()["user_data"])["id"] == "alice"


@pytest.mark.parametrize(
    "cookie",
    ["session={token}; session={token}", "session=; session={token}", "session={token};session="],
    ids=["the same token twice", "a signed-out one first", "a signed-out one last"],
)
async def test_one_token_among_session_cookies_is_the_user(cookie_gateway: RunningGateway, cookie: str) -> None:
    response = await sign_in(cookie_gateway, cookie.format(token=hs_jwt("alice")))
    assert response.status_code == 200, response.text
    assert json.loads(response.json()["user_data"])["id"] == "alice"
