"""The gateway's answers when the provider refuses, and to bodies its parsers cannot take, over real HTTP (uvicorn)
in front of a real emulator (or, for a 429, a local stand-in that answers like a rate-limited provider).

docs/gateway.md: a 401 is the caller's credentials, a 502 the provider's side (its failures, and its refusal of the
gateway's own credentials); a provider's 429 is passed on with its Retry-After; a malformed body is a 400.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from relay.emulator.config import App
from relay.gateway import GatewaySettings
from relay.gateway.error_answers import NON_FINITE_JSON_BODY
from relay.protocol.signing import webhook_signature
from tests.conftest import TEST_APP, RunningEmulator, StartEmulator
from tests.gateway.conftest import JWT_SECRET, TOKEN, RunningGateway, StartGateway, emulator_url, hs_jwt, serve_asgi
from tests.operations.support import ws_client
from tests.webhook_receiver import Receiver

PUBLISH = {"channel": "orders", "event": "created", "data": {"id": 1}}
BEARER = {"authorization": f"Bearer {TOKEN}"}
REFUSED = "the provider refused this server's own credentials or app id, not this request: the Relay emulator answered"


def settings_for(relay_url: str, **options: Any) -> GatewaySettings:
    return GatewaySettings(relay_url=relay_url, api_token=TOKEN, jwt_secret=JWT_SECRET, **options)


async def post(gateway: RunningGateway, path: str, **request: Any) -> httpx.Response:
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        return await http.post(path, **request)


# -- 1. the provider refusing the gateway's own credentials ------------------------------------------------------------


async def test_the_provider_refusing_the_gateway_s_credentials_is_a_502_not_the_caller_s_401(
    start_emulator: StartEmulator, start_gateway: StartGateway
) -> None:
    """The caller sent the right API token: the provider's 401 (wrong secret in RELAY_URL), 404 (wrong app id) and
    403 (a disabled app) are the gateway's misconfiguration. Passed on, the 401 read as 'wrong RELAY_API_TOKEN'."""
    disabled = App(app_id="2", key="off-key", secret="off-secret", enabled=False)
    emulator = await start_emulator(apps=(disabled,))
    port = emulator.port
    cases = [
        (
            f"emulator://app-key:wrong-secret@127.0.0.1:{port}/apps/1",
            "401: invalid auth_signature: sign 'METHOD\\nPATH\\nsorted query' with the app secret of auth_key "
            "'app-key': here 'POST\\n/apps/1/events\\nauth_key=app-key&auth_timestamp=…' (check the key and "
            "secret in the provider URL, and the server clock)",
        ),
        (
            f"emulator://app-key:app-secret@127.0.0.1:{port}/apps/999",
            "404: unknown app id '999' (check the app id and host in the provider URL)",
        ),
        (
            f"emulator://off-key:off-secret@127.0.0.1:{port}/apps/2",
            "403: the app is disabled (the app is disabled, over quota, or the key lacks this permission)",
        ),
    ]
    for relay_url, answer in cases:
        gateway = await start_gateway(settings_for(relay_url))
        for _ in range(2):  # the same answer every time: nothing broke
            response = await post(gateway, "/v1/publish", json=PUBLISH, headers=BEARER)
            said = re.sub(r"auth_timestamp=[^']*'", "auth_timestamp=…'", response.json()["error"])  # varies
            assert (response.status_code, said) == (502, f"{REFUSED} {answer}")
        wrong_token = await post(gateway, "/v1/publish", json=PUBLISH, headers={"authorization": "Bearer nope"})
        assert wrong_token.status_code == 401, "the caller's own wrong token is still the caller's 401"
        auth = await post(
            gateway,
            "/v1/auth/channel",
            data={"socket_id": "1.1", "channel_name": "private-user-alice"},
            headers={"authorization": f"Bearer {hs_jwt()}"},
        )
        assert auth.status_code == 200, auth.text  # signing needs no provider answer
    fixed = await start_gateway(settings_for(emulator_url(emulator)))
    assert (await post(fixed, "/v1/publish", json=PUBLISH, headers=BEARER)).status_code == 200


# -- 2. a provider's 429 and its Retry-After ---------------------------------------------------------------------------


@dataclass
class RateLimitedProvider:
    """Answers every request 429 with ``retry_after`` (Pusher's HTTP API as a rate-limited app sees it), or 200
    once ``limited`` is False."""

    retry_after: str = "30"
    limited: bool = True
    requests: list[str] = field(default_factory=list)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        self.requests.append(scope["path"])
        status, headers, body = 200, [(b"content-type", b"application/json")], b"{}"
        if self.limited:
            status, body = 429, b'{"error": "too many requests"}'
            headers.append((b"retry-after", self.retry_after.encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


@pytest.fixture
async def limited() -> AsyncIterator[tuple[RateLimitedProvider, str]]:
    provider = RateLimitedProvider()
    async with serve_asgi(provider) as url:
        yield provider, url.replace("http://", "emulator://app-key:app-secret@") + "/apps/1"


LIMITED = "the Relay emulator answered 429: too many requests (slow down; retry after the given delay)"


@pytest.mark.parametrize(
    ("retry_after", "passed_on", "attempts"),
    [("30", "30", 1), ("0.2", "1", 3), ("inf", None, 3)],
    ids=["over-max-delay", "fraction-rounded-up", "infinite-is-no-delay"],
)
async def test_a_provider_s_429_is_passed_on_with_its_retry_after(
    limited: tuple[RateLimitedProvider, str],
    start_gateway: StartGateway,
    retry_after: str,
    passed_on: str | None,
    attempts: int,
) -> None:
    """A wait over the retry policy's max_delay is the caller's to make, so the caller must be told it. A fraction
    goes out as whole seconds, rounded up (never too early); 'inf' is no delay at all (it was an OverflowError)."""
    provider, relay_url = limited
    provider.retry_after = retry_after
    gateway = await start_gateway(settings_for(relay_url))
    response = await post(gateway, "/v1/publish", json=PUBLISH, headers=BEARER)
    assert (response.status_code, response.json()) == (429, {"error": LIMITED})
    assert response.headers.get("retry-after") == passed_on
    assert len(provider.requests) == attempts, "the gateway's client retried what it could wait out itself"
    provider.limited = False
    assert (await post(gateway, "/v1/publish", json=PUBLISH, headers=BEARER)).status_code == 200


# -- 3. bodies the parsers cannot take ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/auth/channel", "/v1/auth/user"])
async def test_json_nested_past_the_parser_s_depth_is_a_400_on_the_auth_routes(
    gateway: RunningGateway, path: str
) -> None:
    """No credentials are needed to reach the parser: '[' * 3000 was a plain-text 500 (a RecursionError)."""
    nested = await post(gateway, path, content=b"[" * 3000, headers={"content-type": "application/json"})
    message = "the JSON body is malformed: it nests arrays and objects too deeply"
    assert (nested.status_code, nested.json()) == (400, {"error": message})
    fields = {"socket_id": "1.1", "channel_name": "private-user-alice"}
    ok = await post(gateway, path, json=fields, headers={"authorization": f"Bearer {hs_jwt()}"})
    assert ok.status_code == 200, ok.text
    assert ok.json()["auth"].startswith("app-key:")


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"[" * 3000, "webhook body nests arrays and objects too deeply"),
        (b'{"time_ms": Infinity, "events": []}', "webhook body is not valid JSON: Infinity is not a finite number"),
        (
            b'{"time_ms": ' + b"9" * 400 + b', "events": []}',
            f"webhook time_ms must be a whole number of milliseconds since 1970, not {'9' * 40}",
        ),
    ],
    ids=["nested", "infinity", "past-a-float"],
)
async def test_a_signed_webhook_the_parser_cannot_take_is_a_400(
    emulator: RunningEmulator, start_gateway: StartGateway, receiver: Receiver, body: bytes, error: str
) -> None:
    gateway = await start_gateway(settings_for(emulator_url(emulator), webhook_forward_url=receiver.url))
    signed = {"x-pusher-key": TEST_APP.key, "x-pusher-signature": webhook_signature(TEST_APP.secret, body)}
    refused = await post(gateway, "/v1/webhooks", content=body, headers=signed)
    assert (refused.status_code, refused.json()) == (400, {"error": error})
    good = json.dumps({"time_ms": int(time.time() * 1000), "events": [{"name": "channel_vacated", "channel": "a"}]})
    headers = {"x-pusher-key": TEST_APP.key, "x-pusher-signature": webhook_signature(TEST_APP.secret, good.encode())}
    accepted = await post(gateway, "/v1/webhooks", content=good.encode(), headers=headers)
    assert (accepted.status_code, accepted.json()) == (200, {"events": 1})
    forwarded = (await receiver.wait_for(1))[0].events
    assert [(event["kind"], event["channel"]) for event in forwarded] == [("channel_vacated", "a")]


# -- 4. data no subscriber could read, and a batch refused half-way ----------------------------------------------------


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (
            r'"broken \ud83d"',
            "event data contains a lone UTF-16 surrogate ('\\ud83d' at character 7), which UTF-8 cannot encode: a "
            "string cut in the middle of a character",
        ),
        (
            '{"price": NaN}',
            "event data holds NaN or Infinity, which JSON cannot carry (JSON.parse in pusher-js and ably-js refuses "
            "the message): send null or a string instead",
        ),
    ],
    ids=["lone-surrogate", "nan"],
)
async def test_publish_data_no_subscriber_could_read_is_a_400(
    gateway: RunningGateway, emulator: RunningEmulator, data: str, error: str
) -> None:
    """JSON.stringify of a cut emoji gives a lone surrogate (it was a 500: UnicodeEncodeError); NaN was published
    as JSON no pusher-js could parse (a 200)."""
    subscriber = await ws_client(emulator.ws_url())
    await subscriber.subscribe("orders", TEST_APP)
    body = f'{{"channel": "orders", "event": "created", "data": {data}}}'.encode()
    refused = await post(gateway, "/v1/publish", content=body, headers={**BEARER, "content-type": "application/json"})
    assert (refused.status_code, refused.json()) == (400, {"error": error})
    assert (await post(gateway, "/v1/publish", json=PUBLISH, headers=BEARER)).status_code == 200
    assert (await subscriber.expect("created"))["data"] == '{"id":1}', "the refused publish never reached anyone"
    await subscriber.close()


@pytest.mark.parametrize(
    "body",
    [
        b'{"channel": NaN, "event": "created", "data": 1}',
        b'{"channel": "orders", "event": 1e400, "data": 1}',
        b'{"events": [{"channel": "orders", "event": -Infinity}]}',
    ],
    ids=["nan-channel", "1e400-event", "infinity-in-batch"],
)
async def test_a_body_the_schema_refuses_holding_nan_or_infinity_is_a_400(
    gateway: RunningGateway, emulator: RunningEmulator, body: bytes
) -> None:
    """Python's parser reads NaN, Infinity and 1e400 (as Infinity); where the schema refused such a value, its 422
    echoed the input and failed to render it (JSON has no NaN): a 500. It is a 400 that says why."""
    subscriber = await ws_client(emulator.ws_url())
    await subscriber.subscribe("orders", TEST_APP)
    path = "/v1/publish/batch" if body.startswith(b'{"events"') else "/v1/publish"
    refused = await post(gateway, path, content=body, headers={**BEARER, "content-type": "application/json"})
    assert (refused.status_code, refused.json()) == (400, {"error": NON_FINITE_JSON_BODY})
    assert (await post(gateway, "/v1/publish", json=PUBLISH, headers=BEARER)).status_code == 200
    assert (await subscriber.expect("created"))["data"] == '{"id":1}'
    await subscriber.close()


async def test_a_batch_refused_after_its_first_call_names_the_event_and_what_was_published(
    gateway: RunningGateway, emulator: RunningEmulator
) -> None:
    """Pusher takes 10 events per call: event 12's 413 came back as 'batch[2]', with no word that events 0-9 had
    been delivered, so a retry of the whole batch delivered them twice."""
    subscriber = await ws_client(emulator.ws_url())
    await subscriber.subscribe("orders", TEST_APP)
    events = [{"channel": "orders", "event": f"e{i}", "data": str(i)} for i in range(15)]
    events[12]["data"] = "x" * 11_000
    response = await post(gateway, "/v1/publish/batch", json={"events": events}, headers=BEARER)
    assert (response.status_code, response.json()) == (
        413,
        {
            "error": "the Relay emulator answered 413: batch[12]: data is 11000 bytes; the limit is 10240 (the "
            "payload is over the provider's size limit); events 0-9 were already published by the calls before this "
            "one (its first call took 10): send only the events from 10 on again",
            "published": 10,
        },
    )
    assert [(await subscriber.expect(f"e{i}"))["data"] for i in range(10)] == [str(i) for i in range(10)]
    rest = [event for event in events[10:] if event["event"] != "e12"]
    assert (await post(gateway, "/v1/publish/batch", json={"events": rest}, headers=BEARER)).status_code == 200
    assert (await subscriber.next())["event"] == "e10", "nothing of the refused call was delivered"
    await subscriber.close()


async def test_an_empty_socket_id_excludes_no_one(gateway: RunningGateway, emulator: RunningEmulator) -> None:
    """A route handler passing on a request's missing X-Socket-Id header as "" publishes to everyone, as the library
    and pusher-http-python read "" (it was a 422), in a publish and in a batch."""
    subscriber = await ws_client(emulator.ws_url())
    await subscriber.subscribe("orders", TEST_APP)
    published = await post(gateway, "/v1/publish", json={**PUBLISH, "socket_id": ""}, headers=BEARER)
    assert published.status_code == 200, published.text
    assert (await subscriber.expect("created"))["data"] == '{"id":1}'
    batch = {"events": [{"channel": "orders", "event": "batched", "data": "x", "socket_id": ""}]}
    batched = await post(gateway, "/v1/publish/batch", json=batch, headers=BEARER)
    assert batched.status_code == 200, batched.text
    assert (await subscriber.expect("batched"))["data"] == "x"
