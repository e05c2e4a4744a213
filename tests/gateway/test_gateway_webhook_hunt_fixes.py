"""Found hunting webhook bugs end to end (the gateway's side): each test failed before its fix."""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from relay.errors import ConfigError
from relay.gateway import GatewaySettings
from relay.gateway import webhooks as gateway_webhooks
from relay.protocol.ably import webhook_signature
from relay.protocol.signing import webhook_signature as pusher_signature
from tests.conftest import free_port
from tests.gateway.conftest import JWT_SECRET, TOKEN, StartGateway
from tests.webhook_receiver import Receiver, StartReceiver, serving

ABLY_KEY_NAME, ABLY_SECRET = "appid.keyid", "ably-key-secret"


def ably_webhook(messages: str, *, encode: str = "utf-8") -> tuple[bytes, dict[str, str]]:
    """A signed Ably batched webhook of one channel.message item carrying ``messages`` (JSON text, as written)."""
    item = (
        f'{{"webhookId":"w","source":"channel.message","serial":"1","timestamp":{int(time.time() * 1000)},'
        f'"name":"channel.message","data":{{"channelId":"orders","messages":{messages}}}}}'
    )
    body = f'{{"items":[{item}]}}'.encode(encode)
    return body, {"X-Ably-Key": ABLY_KEY_NAME, "X-Ably-Signature": webhook_signature(ABLY_SECRET, body)}


@pytest.mark.parametrize(
    ("messages", "encode", "error"),
    [
        ('[{"name":"e","data":NaN}]', "utf-8", "Ably webhook body is not valid JSON: NaN is not a finite number"),
        ('[{"name":"e","data":1e400}]', "utf-8", "Ably webhook body is not valid JSON: 1e400 is not a finite number"),
        ('[{"name":"e","data":"\\ud800"}]', "utf-8", "Ably webhook body contains a lone UTF-16 surrogate escape"),
        ('[{"name":"e","data":"x"}]', "utf-16", "Ably webhook body is not valid JSON: it is not UTF-8 text"),
    ],
)
async def test_an_ably_webhook_body_json_cannot_carry_is_a_400_naming_it_and_the_gateway_serves_on(
    start_gateway: StartGateway, receiver: Receiver, messages: str, encode: str, error: str
) -> None:
    """The Ably side parsed webhooks with json.loads, unlike the Pusher side: a signed body holding NaN or a lone
    surrogate verified, and forwarding it (JSON has neither) answered 500 at every retry; UTF-16 verified too, and
    other bytes that are not UTF-8 got a vague "must be {items: [...]}". Now both formats are read alike."""
    env = {
        "RELAY_URL": f"ably://{ABLY_KEY_NAME}:{ABLY_SECRET}@127.0.0.1:1?tls=false",
        "RELAY_API_TOKEN": TOKEN,
        "RELAY_JWT_SECRET": JWT_SECRET,
        "RELAY_WEBHOOK_FORWARD_URL": receiver.url,
    }
    gateway = await start_gateway(env=env)
    body, headers = ably_webhook(messages, encode=encode)
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        refused = await http.post("/v1/webhooks", content=body, headers=headers)
        assert (refused.status_code, refused.json()["error"]) == (400, error)
        body, headers = ably_webhook('[{"name":"e","data":"fine"}]')
        accepted = await http.post("/v1/webhooks", content=body, headers=headers)
        assert (accepted.status_code, accepted.json()) == (200, {"events": 1})
    [forwarded] = await receiver.wait_for(1)
    assert [(event["kind"], event["data"]) for event in forwarded.events] == [("message", "fine")]


async def test_an_ably_webhook_stamped_past_a_float_s_range_is_a_400_not_a_500(
    start_gateway: StartGateway, receiver: Receiver
) -> None:
    """The replay check divided the newest item's timestamp outside the parsing's error handling: a signed item
    stamped 10**400 ms raised OverflowError, a 500 at every retry. The Pusher side already answered 400."""
    env = {
        "RELAY_URL": f"ably://{ABLY_KEY_NAME}:{ABLY_SECRET}@127.0.0.1:1?tls=false",
        "RELAY_WEBHOOK_FORWARD_URL": receiver.url,
    }
    gateway = await start_gateway(env=env)
    body = b'{"items":[{"timestamp":1' + b"0" * 400 + b',"name":"channel.opened","data":{"channelId":"c"}}]}'
    headers = {"X-Ably-Key": ABLY_KEY_NAME, "X-Ably-Signature": webhook_signature(ABLY_SECRET, body)}
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        refused = await http.post("/v1/webhooks", content=body, headers=headers)
        assert (refused.status_code, refused.json()["error"]) == (
            400,
            f"Ably webhook items[0].timestamp must be a whole number of milliseconds since 1970, not 1{'0' * 39}",
        )
        assert (await http.get("/health")).status_code == 200
    assert receiver.deliveries == []


def pusher_webhook() -> tuple[bytes, dict[str, str]]:
    body = json.dumps({"time_ms": int(time.time() * 1000), "events": [{"name": "channel_occupied", "channel": "o"}]})
    return body.encode(), {
        "X-Pusher-Key": "app-key",
        "X-Pusher-Signature": pusher_signature("app-secret", body.encode()),
    }


async def test_a_forward_that_fails_says_where_to_and_why(
    start_gateway: StartGateway, start_receiver: StartReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    """A forward URL nothing listens on (a receiver not started yet) answered 502 "forwarding failed: ConnectError",
    and a route refusing the gateway's token "forward target answered 401": neither said which setting, nor why.
    Now the answer (and the gateway's log line) names RELAY_WEBHOOK_FORWARD_URL and the cause, and a refusal of the
    token says which token the route must check."""
    env = {"RELAY_URL": "emulator://app-key:app-secret@127.0.0.1:1/apps/1", "RELAY_API_TOKEN": TOKEN}
    down = await start_gateway(env={**env, "RELAY_WEBHOOK_FORWARD_URL": f"http://127.0.0.1:{free_port()}/hooks"})
    refusing = await start_receiver(status=401)
    refused = await start_gateway(env={**env, "RELAY_WEBHOOK_FORWARD_URL": refusing.url})
    body, headers = pusher_webhook()
    async with httpx.AsyncClient() as http:
        unreachable = await http.post(f"{down.url}/v1/webhooks", content=body, headers=headers)
        assert (unreachable.status_code, unreachable.json()["error"]) == (
            502,
            "forwarding to RELAY_WEBHOOK_FORWARD_URL failed: ConnectError: Connection refused "
            "(the provider sends the webhook again)",
        )
        answered = await http.post(f"{refused.url}/v1/webhooks", content=body, headers=headers)
        assert (answered.status_code, answered.json()["error"]) == (
            502,
            "RELAY_WEBHOOK_FORWARD_URL answered 401: the route refused the gateway's Authorization: Bearer "
            "RELAY_API_TOKEN; it must check the gateway's RELAY_API_TOKEN (the provider sends the webhook again)",
        )
    assert len(refusing.deliveries) == 1
    logged = [record.getMessage() for record in caplog.records if record.name == "relay.gateway"]
    assert "POST /v1/webhooks answered 502: forwarding to RELAY_WEBHOOK_FORWARD_URL failed: ConnectError" in (
        " ".join(logged)
    )


async def test_a_forward_url_with_a_password_is_refused_at_start_when_the_forward_carries_the_api_token(
    start_gateway: StartGateway, receiver: Receiver
) -> None:
    """httpx sends a URL's user:password as Authorization: Basic, in place of the headers' Authorization: Bearer
    RELAY_API_TOKEN: a receiver behind basic auth got "Basic dTpw" and no token, refused every forward, and the 502
    said "the route refused the gateway's Authorization: Bearer RELAY_API_TOKEN", a header it was never sent. Now the
    gateway stops at start, naming the setting and without repeating the password; without the token, the URL's
    credentials are the forward's only ones, and are sent."""
    env = {"RELAY_URL": "emulator://app-key:app-secret@127.0.0.1:1/apps/1"}
    with_password = receiver.url.replace("http://", "http://hooks:pass-word@", 1)
    with pytest.raises(ConfigError) as refused:
        GatewaySettings.from_env({**env, "RELAY_API_TOKEN": TOKEN, "RELAY_WEBHOOK_FORWARD_URL": with_password})
    assert refused.value.message == (
        "RELAY_WEBHOOK_FORWARD_URL has a user name or password before its host (user:password@), which would be sent "
        "as Authorization: Basic in place of the Authorization: Bearer RELAY_API_TOKEN the receiver checks: remove "
        "them from the URL"
    )
    gateway = await start_gateway(env={**env, "RELAY_WEBHOOK_FORWARD_URL": with_password})
    body, headers = pusher_webhook()
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        assert (await http.post("/v1/webhooks", content=body, headers=headers)).status_code == 200
    [delivery] = await receiver.wait_for(1)
    assert delivery.header_values("authorization") == ["Basic aG9va3M6cGFzcy13b3Jk"]


class Trickling(Receiver):
    """A route that answers 200 at once, then its body a byte every 0.2 s for 4 s."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        for _ in range(20):
            await send({"type": "http.response.body", "body": b".", "more_body": True})
            await asyncio.sleep(0.2)
        await send({"type": "http.response.body", "body": b""})


async def test_a_forward_is_bounded_as_a_whole_and_its_timeout_said_plainly(
    start_gateway: StartGateway, start_receiver: StartReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The forward's 10 s (docs/gateway.md: the gateway answers "once your route handler has answered it (up to
    10 s)") bounded each read alone: a route answering a byte at a time held the webhook for as long as it sent them,
    past the provider's 4 s, answered 200 at last. And a route that did not answer within it was a 502 "ReadTimeout:
    Cancelled via cancel scope 7fdfe481e840; reason: deadline exceeded", anyio's words. Now the whole forward is
    bounded, and the 502 says what ran out (here the bound is 1 s, not 10)."""
    monkeypatch.setattr(gateway_webhooks, "FORWARD_SECONDS", 1.0)
    env = {"RELAY_URL": "emulator://app-key:app-secret@127.0.0.1:1/apps/1", "RELAY_API_TOKEN": TOKEN}
    timed_out = (
        502,
        "forwarding to RELAY_WEBHOOK_FORWARD_URL failed: no answer within 1 s (the provider sends the webhook again)",
    )
    async with serving(Trickling()) as trickling:
        slow = await start_receiver(delays=deque([3.0]))
        for url in (trickling.url, slow.url):
            gateway = await start_gateway(env={**env, "RELAY_WEBHOOK_FORWARD_URL": url})
            body, headers = pusher_webhook()
            async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as http:
                started = time.monotonic()
                answered = await http.post("/v1/webhooks", content=body, headers=headers)
                assert (answered.status_code, answered.json()["error"]) == timed_out
                assert time.monotonic() - started < 2.5


async def test_a_forward_answered_with_a_redirect_names_where_it_points(
    start_gateway: StartGateway, start_receiver: StartReceiver
) -> None:
    """A Next.js app with trailingSlash answers a POST to /api/webhooks with 308 to /api/webhooks/: the gateway, which
    follows no redirect (the events and the token are not sent on), answered 502 "RELAY_WEBHOOK_FORWARD_URL answered
    308", and the setting's mistake stayed hidden. Now the 502 names the URL the route points to, without the
    user-info or query a Location may carry, and the gateway serves on."""
    moved = await start_receiver(status=308, headers={"Location": "/api/webhooks/?token=s3cret"})
    env = {
        "RELAY_URL": "emulator://app-key:app-secret@127.0.0.1:1/apps/1",
        "RELAY_API_TOKEN": TOKEN,
        "RELAY_WEBHOOK_FORWARD_URL": f"{moved.url}/api/webhooks",
    }
    gateway = await start_gateway(env=env)
    body, headers = pusher_webhook()
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        answered = await http.post("/v1/webhooks", content=body, headers=headers)
        assert (answered.status_code, answered.json()["error"]) == (
            502,
            f"RELAY_WEBHOOK_FORWARD_URL answered 308, a redirect to '{moved.url}/api/webhooks/': the gateway follows "
            "no redirect; set RELAY_WEBHOOK_FORWARD_URL to the URL the route answers at (the provider sends the "
            "webhook again)",
        )
        assert (await http.get("/health")).status_code == 200
    assert [delivery.path for delivery in moved.deliveries] == ["/api/webhooks"]
