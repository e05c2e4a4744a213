"""``relay serve``, the HTTP gateway: the app (:func:`create_app`) and its routes (:func:`gateway_router`)."""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.routing import APIRoute

from relay.client import AsyncRelay
from relay.errors import unique_keys
from relay.gateway.browser import add_browser_routes, frontend_config
from relay.gateway.error_answers import add_error_handlers
from relay.gateway.guards import (
    CORS_HEADERS,
    GatewayCORS,
    HeadGuard,
    InternalErrorGuard,
    RefusalLog,
    RequestGuard,
    answers_ably_js,
)
from relay.gateway.rules_file import build_rules
from relay.gateway.server_api import add_server_api_routes
from relay.gateway.settings import BrowserSocket, GatewaySettings
from relay.gateway.webhooks import WebhookHook, add_webhook_route, webhook_forward
from relay.identity import JwtVerifier
from relay.protocol.idempotency_keys import REPLAYED_HEADER

# What docs/gateway.md and the examples import from relay.gateway to serve or embed the gateway
__all__ = [
    "BrowserSocket",
    "GatewaySettings",
    "HeadGuard",
    "RefusalLog",
    "RequestGuard",
    "add_error_handlers",
    "create_app",
    "frontend_config",
    "gateway_router",
]


class _UniqueKeysRequest(Request):
    """A request whose JSON body is refused, before the schema reads it, where an object names a key twice."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = json.loads(await self.body(), object_pairs_hook=unique_keys)
        return self._json


class _UniqueKeysRoute(APIRoute):
    """A gateway route: ``{"channel": "a", "channel": "b"}`` was read as its last value, which need not be the one the
    sender (or a proxy in front) meant or checked, and published there."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def read_unique_keys(request: Request) -> Response:
            return await handler(_UniqueKeysRequest(request.scope, request.receive, request._send))

        return read_unique_keys


def gateway_router(
    settings: GatewaySettings, client: AsyncRelay, *, webhook_hook: WebhookHook | None = None
) -> APIRouter:
    """Every route of the gateway, for an app that embeds it (:func:`create_app` adds the guards around them)."""
    router = APIRouter(route_class=_UniqueKeysRoute)
    verifier = JwtVerifier(settings)
    rules = build_rules(settings.rules)
    forward = webhook_forward(settings)
    add_server_api_routes(router, settings, client)
    add_browser_routes(router, settings, client, verifier, rules)
    add_webhook_route(router, client, forward, webhook_hook)

    # HEAD too: load balancers' health checks send it (AWS target groups, HAProxy's option httpchk HEAD). Out of the
    # schema: one route for both methods gave both the same OpenAPI operation id.
    @router.get("/health", summary="Liveness")
    @router.head("/health", include_in_schema=False)
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return router


def create_app(settings: GatewaySettings, *, webhook_hook: WebhookHook | None = None) -> FastAPI:
    client = AsyncRelay(settings.relay_url, retry=settings.provider_retry)
    # No redirect from /v1/publish/ to /v1/publish: Starlette's 307 named a URL built from the Host header (behind a
    # proxy, an address the client cannot reach), and a backend's fetch followed it with the token. A 404 says it.
    app = FastAPI(
        title="Relay gateway", version="1", docs_url="/docs", openapi_url="/openapi.json", redirect_slashes=False
    )
    app.add_middleware(InternalErrorGuard)
    app.add_middleware(RequestGuard, settings=settings)
    if settings.cors_origins:  # outside RequestGuard, so a browser can read its refusals too
        app.add_middleware(
            GatewayCORS,
            allow_origins=list(settings.cors_origins),
            allow_credentials=True,
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=CORS_HEADERS,
            # A browser's fetch reads only the headers CORS exposes: a page's resend must see it was a replay
            expose_headers=[REPLAYED_HEADER],
        )
    app.add_middleware(HeadGuard, cors_origins=settings.cors_origins, ably_auth=answers_ably_js(settings))
    app.add_middleware(RefusalLog)  # added last, so outermost: it sees CORS's own refusals too
    app.include_router(gateway_router(settings, client, webhook_hook=webhook_hook))
    add_error_handlers(app)
    return app
