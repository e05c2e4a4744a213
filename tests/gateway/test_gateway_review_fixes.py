"""Found by a review of the gateway's code: each test failed before its fix."""

from __future__ import annotations

import asyncio

import httpx
from fastapi import FastAPI

from relay import WebhookEvent
from relay.gateway import GatewaySettings, create_app
from tests.gateway.conftest import JWT_SECRET, TOKEN
from tests.gateway.test_gateway_webhook_hunt_fixes import pusher_webhook
from tests.webhook_receiver import Receiver


async def forward_one_webhook(app: FastAPI) -> tuple[int, str]:
    """One signed Pusher webhook posted to ``app``, in the running loop, with the app's lifespan around it."""
    body, headers = pusher_webhook()
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as http,
    ):
        answer = await http.post("/v1/webhooks", content=body, headers=headers)
    return answer.status_code, answer.text


async def test_one_app_forwards_webhooks_from_each_event_loop_it_serves_in(receiver: Receiver) -> None:
    """The forward's httpx client was made once with the router and kept the connections of the first loop that
    used it: the same app served by one test client after another (each runs the app in a loop of its own) answered
    the second provider's webhook 500, ``RuntimeError: Event loop is closed``. Each loop now has its own client."""
    app = create_app(
        GatewaySettings.from_env(
            {
                "RELAY_URL": "emulator://app-key:app-secret@127.0.0.1:1/apps/1",
                "RELAY_API_TOKEN": TOKEN,
                "RELAY_JWT_SECRET": JWT_SECRET,
                "RELAY_WEBHOOK_FORWARD_URL": receiver.url,
            }
        )
    )
    for _ in range(2):
        assert await asyncio.to_thread(asyncio.run, forward_one_webhook(app)) == (200, '{"events":1}')
    forwarded = await receiver.wait_for(2)
    assert [[event["kind"] for event in delivery.events] for delivery in forwarded] == [["channel_occupied"]] * 2


async def test_the_webhook_hook_runs_again_when_the_provider_resends_a_webhook_the_forward_failed(
    receiver: Receiver,
) -> None:
    """What docs/gateway.md says of ``webhook_hook``: called before the forward, and at least once, not once. A failed
    forward is a 502, and the provider's resend of the same webhook reaches the hook again."""
    seen: list[list[str]] = []

    async def on_events(events: list[WebhookEvent]) -> None:
        seen.append([event.kind for event in events])

    receiver.status = 500
    settings = GatewaySettings.from_env(
        {
            "RELAY_URL": "emulator://app-key:app-secret@127.0.0.1:1/apps/1",
            "RELAY_API_TOKEN": TOKEN,
            "RELAY_JWT_SECRET": JWT_SECRET,
            "RELAY_WEBHOOK_FORWARD_URL": receiver.url,
        }
    )
    app = create_app(settings, webhook_hook=on_events)
    body, headers = pusher_webhook()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as http:
        for _ in range(2):
            answer = await http.post("/v1/webhooks", content=body, headers=headers)
            assert answer.status_code == 502
            refused = "RELAY_WEBHOOK_FORWARD_URL answered 500 (the provider sends the webhook again)"
            assert answer.json() == {"error": refused}
    assert seen == [["channel_occupied"], ["channel_occupied"]]
    assert len(receiver.deliveries) == 2
