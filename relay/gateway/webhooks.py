"""The gateway's /v1/webhooks: a provider's webhook verified, handed to webhook_hook and forwarded to the app."""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from relay.client import AsyncRelay
from relay.errors import RelayError, first_cause
from relay.gateway.settings import GatewaySettings
from relay.models import WebhookEvent
from relay.senders import LoopClients
from relay.web import error_response

# The gateway's logger, which docs/gateway.md names
log = logging.getLogger("relay.gateway")


WebhookHook = Callable[[list[WebhookEvent]], Awaitable[None]]


# Forwards verified events to RELAY_WEBHOOK_FORWARD_URL: why it failed, for the provider's 502, or None
WebhookForward = Callable[[list[WebhookEvent]], Awaitable[str | None]]


def webhook_forward(settings: GatewaySettings) -> WebhookForward | None:
    """The forward to RELAY_WEBHOOK_FORWARD_URL, None without one; a forward without RELAY_API_TOKEN is warned of."""
    url = settings.webhook_forward_url
    if url is None:
        return None
    # A client per event loop: an app serving one test client after another (each its own loop) forwarded on the
    # first loop's connections, and failed with "Event loop is closed" once that loop had ended
    clients = LoopClients(lambda: httpx.AsyncClient(timeout=FORWARD_SECONDS))
    # The forward says it comes from the gateway with Authorization: Bearer RELAY_API_TOKEN, not an HMAC of the
    # body: its receiver is the app's backend, which holds that token already (it publishes with it), so there is
    # no second secret to configure and the check is one constant-time comparison. The token crosses the network
    # on every publish anyway, and the events inside were verified against the provider's signature here. httpx
    # follows no redirect, so the header never goes on to another host.
    headers = {} if settings.api_token is None else {"Authorization": f"Bearer {settings.api_token}"}
    if settings.api_token is None:
        log.warning(
            "RELAY_WEBHOOK_FORWARD_URL is set but RELAY_API_TOKEN is not: webhooks are forwarded without "
            "authentication, so the receiver cannot tell the gateway's requests from forged ones; set "
            "RELAY_API_TOKEN and check Authorization: Bearer RELAY_API_TOKEN in the receiver"
        )

    async def forward(events: list[WebhookEvent]) -> str | None:
        return await _forward_failure(clients, url, headers, events, settings)

    return forward


def add_webhook_route(
    router: APIRouter, client: AsyncRelay, forward: WebhookForward | None, webhook_hook: WebhookHook | None
) -> None:
    """``POST /v1/webhooks``: the provider's webhook verified, its events given to ``webhook_hook`` and ``forward``."""

    @router.post("/v1/webhooks", summary="Verify a provider webhook and forward its normalised events")
    async def webhooks(request: Request) -> JSONResponse:
        try:
            events = client.verify_webhook(dict(request.headers), await request.body())
        except RelayError as error:
            return error_response(error, request)
        if webhook_hook is None and forward is None:  # answered 200, the events would be lost without a word
            nowhere = "no RELAY_WEBHOOK_FORWARD_URL is set: the verified events have nowhere to go"
            return JSONResponse({"error": nowhere}, status_code=503)
        if webhook_hook is not None:
            await webhook_hook(events)
        if forward is not None:
            failure = await forward(events)
            if failure is not None:
                return JSONResponse({"error": failure}, status_code=502)
        return JSONResponse({"events": len(events)})


# How long a webhook forward may take, from connecting to the answer read whole (docs/gateway.md: "up to 10 s").
FORWARD_SECONDS = 10.0

# What a 502 to the provider brings about: it delivers the webhook again later, so nothing is lost meanwhile.
RETRIED = "(the provider sends the webhook again)"


async def _forward_failure(
    forward: LoopClients, url: str, headers: Mapping[str, str], events: list[WebhookEvent], settings: GatewaySettings
) -> str | None:
    """Forwards ``events`` to ``url`` (RELAY_WEBHOOK_FORWARD_URL); why it failed, for the provider's 502, or None."""
    payload = {"events": [_event_json(event) for event in events]}
    try:
        # The whole forward within FORWARD_SECONDS, answer read: httpx's timeout bounds each read alone, and a route
        # answering a byte every few seconds held the webhook (and its connection) for as long as it sent them, past
        # the provider's own timeout
        async with asyncio.timeout(FORWARD_SECONDS):
            http, _ = await forward.here()
            response = await http.post(url, json=payload, headers=headers)
    except (TimeoutError, httpx.TimeoutException) as exc:
        # httpx's own timeouts say only "Cancelled via cancel scope 7fdf…; reason: deadline exceeded"
        what = "no connection" if isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout) else "no answer"
        return f"forwarding to RELAY_WEBHOOK_FORWARD_URL failed: {what} within {FORWARD_SECONDS:g} s {RETRIED}"
    except httpx.HTTPError as exc:
        failed = f"forwarding to RELAY_WEBHOOK_FORWARD_URL failed: {exc.__class__.__name__}: {first_cause(exc):.300}"
        return f"{failed} {RETRIED}"
    if response.status_code >= 300:
        return _forward_refused(response, settings)
    return None


def _forward_refused(response: httpx.Response, settings: GatewaySettings) -> str:
    """The 502 for a forward the route answered other than 2xx: a 401 or 403 is most likely the route checking another
    token than the one the gateway sends; a redirect, a forward URL that is not where the route is."""
    status = response.status_code
    if response.next_request is not None:
        # The gateway follows no redirect: a POST's events and token are not sent on to wherever a Location points
        # (httpx builds that request, unsent). A redirect is how a route says the URL differs (Next.js's trailingSlash
        # answers 308 to "/api/webhooks/", a host to its https:// URL); shown without user-info or query, which may
        # hold a credential.
        target = response.next_request.url
        shown = f"{target.scheme}://{target.netloc.decode('ascii')}{target.path}"[:300]
        return (
            f"RELAY_WEBHOOK_FORWARD_URL answered {status}, a redirect to {shown!r}: the gateway follows no redirect; "
            f"set RELAY_WEBHOOK_FORWARD_URL to the URL the route answers at {RETRIED}"
        )
    if status in (401, 403) and settings.api_token is not None:
        return (
            f"RELAY_WEBHOOK_FORWARD_URL answered {status}: the route refused the gateway's Authorization: Bearer "
            f"RELAY_API_TOKEN; it must check the gateway's RELAY_API_TOKEN {RETRIED}"
        )
    return f"RELAY_WEBHOOK_FORWARD_URL answered {status} {RETRIED}"


def _event_json(event: WebhookEvent) -> dict[str, Any]:
    """``event`` as forwarded: binary data (an Ably message's) as base64, the step added to its ``encoding`` as Ably
    writes it (``"base64"``, or ``"utf-8/cipher+aes-128-cbc/base64"`` for ciphertext), since JSON has no bytes."""
    fields = {name: getattr(event, name) for name in event.__slots__ if getattr(event, name) is not None}
    if isinstance(event.data, bytes):
        fields["data"] = base64.b64encode(event.data).decode()
        fields["encoding"] = "/".join(step for step in (event.encoding, "base64") if step)
    return fields
