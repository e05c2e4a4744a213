"""``relay serve``: publishing for any backend with one ``fetch``, and the channel-auth endpoint for browsers.

Configured from the environment (see :class:`GatewaySettings`); the same routes are available as a router for apps
that embed Relay (:func:`gateway_router`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from relay.client import AsyncRelay, Relay
from relay.config import hosted_pusher_cluster, is_hosted_ably, is_hosted_pusher
from relay.errors import LimitExceeded, PayloadTooLarge, ProtocolError, RelayError, json_kind, unique_keys
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
from relay.gateway.rules_file import RuleSpec, build_rules
from relay.gateway.server_api import add_server_api_routes, query_parameters
from relay.gateway.settings import BrowserSocket, GatewaySettings, browser_socket, loopback_socket_warning
from relay.gateway.webhooks import WebhookHook, add_webhook_route, webhook_forward
from relay.identity import JwtVerifier
from relay.models import User
from relay.protocol.channels import DEFAULT_LIMITS
from relay.protocol.idempotency_keys import REPLAYED_HEADER
from relay.protocol.members import watchlist_problem
from relay.web import (
    channel_auth_request,
    channels_token_body_async,
    error_response,
    no_store,
    request_fields,
    requested_channels,
    socket_id_placeholder,
    user_auth_body,
)

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

log = logging.getLogger("relay.gateway")


# -- configuration ------------------------------------------------------------------------------------------------


WATCHLIST_CLAIM = "watchlist"
# The JWT claims that make a signed-in user's user_info (pusher-js's signin; docs/gateway.md, sign-in and watchlists)
SIGNIN_INFO_CLAIMS = ("name",)


def _watchlist_claim(claims: Mapping[str, Any]) -> tuple[str, ...]:
    """The JWT's ``watchlist`` claim, the user ids whose online status a signed-in user is told (Pusher's watchlist
    events), or none without it. A malformed claim is refused rather than dropped: the user would watch nobody, and
    nothing would say why."""
    if WATCHLIST_CLAIM not in claims:
        return ()
    watchlist = claims[WATCHLIST_CLAIM]
    wanted = f"the JWT's {WATCHLIST_CLAIM} claim must be a list of user id strings"
    if not isinstance(watchlist, list):
        raise ProtocolError(f"{wanted}, not {json_kind(watchlist)}")
    for index, item in enumerate(watchlist):
        if not isinstance(item, str):
            raise ProtocolError(f"{wanted}: item {index} is {json_kind(item)}")
    watched = tuple(dict.fromkeys(watchlist))  # an id listed twice is watched once, as User keeps it
    if len(watched) > DEFAULT_LIMITS.max_watchlist:
        raise LimitExceeded(
            f"the JWT's {WATCHLIST_CLAIM} claim has {len(watched)} user ids; Pusher watches at most "
            f"{DEFAULT_LIMITS.max_watchlist}"
        )
    problem = watchlist_problem(watchlist)
    if problem is not None:
        raise ProtocolError(f"the JWT's {WATCHLIST_CLAIM} claim: {problem}")
    return watched


# -- request bodies ---------------------------------------------------------------------------------------------


# -- the app ----------------------------------------------------------------------------------------------------


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
    router = APIRouter(route_class=_UniqueKeysRoute)
    verifier = JwtVerifier(settings)
    rules = build_rules(settings.rules)
    rule_specs: dict[str, RuleSpec] = {}
    for spec in settings.rules:  # the first rule with a pattern decides, so a later one with the same is never used
        rule_specs.setdefault(spec.pattern, spec)
    forward = webhook_forward(settings)
    # Parsed once here: every page load asks /v1/client-config
    web_socket = None if settings.public_ws_url is None else browser_socket(settings.public_ws_url)
    loopback = loopback_socket_warning(settings, client.config)
    if loopback is not None:
        log.warning("%s", loopback)

    add_server_api_routes(router, settings, client)

    # GET too: ably-js's authUrl asks with GET unless told authMethod 'POST', its authParams in the query (a page
    # pointed at this route with the default got a 405)
    @router.post(
        "/v1/auth/channel",
        summary="Channel authorization for pusher-js (form or JSON) or Ably",
        openapi_extra=_auth_body({"socket_id": "123.456", "channel_name": "private-orders"}, required=["channel_name"]),
    )
    @router.get(
        "/v1/auth/channel",
        summary="An Ably token request, as ably-js's authUrl asks with GET",
        openapi_extra=query_parameters(AUTH_CHANNEL_QUERY),
    )
    async def auth_channel(request: Request) -> JSONResponse:
        try:
            fields = await request_fields(request)
            channels = requested_channels(fields)
            user = verifier.user(request)
            no_user_reason = verifier.no_user_reason(request) if user is None else None
            if channels is not None:
                body = await channels_token_body_async(client, rules, user, channels, no_user_reason=no_user_reason)
                return no_store(JSONResponse(body))
            socket_id, channel = channel_auth_request(client, fields)
            decision = await rules.authorize_async(user, channel, no_user_reason=no_user_reason)
            try:
                body = client.authorize_channel(socket_id, channel, decision.member)
            except PayloadTooLarge as error:  # the only size checked here: a presence member's user_info
                if decision.pattern is None:
                    raise
                raise PayloadTooLarge(_user_info_too_large(error.message, rule_specs[decision.pattern])) from None
        except RelayError as error:
            return no_store(error_response(error, request, ably=client.config.scheme == "ably"))
        return no_store(JSONResponse(body))

    @router.post(
        "/v1/auth/user",
        summary="User authentication (pusher-js signin)",
        openapi_extra=_auth_body({"socket_id": "123.456"}, required=["socket_id"]),
    )
    async def auth_user(request: Request) -> JSONResponse:
        try:
            fields = await request_fields(request)
            # As channel auth reads it: "invalid socket_id ''" sent a missing field looking for a malformed one.
            socket_id = fields.get("socket_id") or socket_id_placeholder(client)
            user = verifier.user(request)
            if user is not None:
                info = {claim: user.info[claim] for claim in SIGNIN_INFO_CLAIMS if claim in user.info}
                user = User(user.id, info, _watchlist_claim(user.info))
            no_user_reason = verifier.no_user_reason(request) if user is None else None
            try:
                body = user_auth_body(client, user, socket_id, no_user_reason)
            except PayloadTooLarge as error:  # the only size checked here: the signed-in user's user_info
                raise PayloadTooLarge(_signin_info_too_large(error.message)) from None
        except RelayError as error:
            return no_store(error_response(error, request))
        return no_store(JSONResponse(body))

    @router.get("/v1/client-config", summary="What a frontend needs to connect")
    async def client_config(request: Request) -> dict[str, Any]:
        # The routes' own paths, wherever they are served: under a mount's prefix (parent.mount("/relay", …)) or an
        # included router's (include_router(…, prefix="/rt")). With RELAY_PUBLIC_URL, whole URLs: a page from another
        # origin resolved a bare path against its own (a Next.js dev server's), and asked it for its tokens.
        base = settings.public_url or ""
        channel_auth, user_auth = (base + request.url_for(name).path for name in ("auth_channel", "auth_user"))
        return frontend_config(client, channel_auth=channel_auth, user_auth=user_auth, web_socket=web_socket)

    add_webhook_route(router, client, forward, webhook_hook)

    # HEAD too: load balancers' health checks send it (AWS target groups, HAProxy's option httpchk HEAD). Out of the
    # schema: one route for both methods gave both the same OpenAPI operation id.
    @router.get("/health", summary="Liveness")
    @router.head("/health", include_in_schema=False)
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return router


def _user_info_too_large(message: str, spec: RuleSpec) -> str:
    """The library's "user_info is 1111 bytes; the limit is 1024" said nothing of where user_info came from: here, from
    the JWT claims the deciding rule names."""
    return (
        f"{message}: a presence member's user_info is the JWT claims that rule {spec.pattern!r} names in "
        f"user_info_claims ({', '.join(spec.user_info_claims)}); send shorter claims, or name fewer in the rules file"
    )


def _signin_info_too_large(message: str) -> str:
    """The library's "user_info is 1111 bytes; the limit is 1024", for a sign-in: said where user_info came from, as
    a presence member's refusal says it (:func:`_user_info_too_large`)."""
    return (
        f"{message}: a signed-in user's user_info is the JWT's {', '.join(SIGNIN_INFO_CLAIMS)} claim; send a shorter "
        "one"
    )


def _auth_body(example: Mapping[str, str], *, required: list[str]) -> dict[str, Any]:
    """The OpenAPI request body of an auth endpoint: the form fields pusher-js posts, or the same as JSON (the
    handlers read the body themselves, so FastAPI cannot infer it)."""
    schema = {
        "type": "object",
        "properties": {name: {"type": "string", "example": value} for name, value in example.items()},
        "required": required,
    }
    media_types = ("application/x-www-form-urlencoded", "application/json")
    content = {media_type: {"schema": schema} for media_type in media_types}
    return {"requestBody": {"required": True, "content": content}}


# What GET /v1/auth/channel reads from its query, each with the example its OpenAPI parameter shows: the fields a
# POST reads from its body (relay.web.AUTH_FIELDS), pusher-js's socket_id and channel_name, or the channel or channels
# of ably-js's authParams
AUTH_CHANNEL_QUERY = {
    "socket_id": "123.456",
    "channel_name": "private-orders",
    "channel": "private-orders",
    "channels": '["orders-42", "presence-room-1"]',
}


def frontend_config(
    client: Relay | AsyncRelay,
    *,
    channel_auth: str = "/v1/auth/channel",
    user_auth: str = "/v1/auth/user",
    ably_auth: str | None = None,
    web_socket: BrowserSocket | None = None,
) -> dict[str, Any]:
    """What a page needs to connect to the client's (primary) provider: pusher-js options with ``provider`` and the
    auth endpoints, or ably-js's ``authUrl`` (and its client options off Ably's cloud). The endpoints default to the
    gateway's routes; an app serving ``relay.web.auth_router`` passes ``channel_auth="/pusher/auth"``,
    ``user_auth="/pusher/user-auth"`` and ``ably_auth="/ably/token"``. ``ably_auth`` defaults to ``channel_auth``,
    which answers Ably with a token request on the gateway. ``web_socket``: where pages open their WebSocket when it
    is not the provider's own address (RELAY_PUBLIC_WS_URL: a proxy in front of an emulator on 127.0.0.1); hosted
    Pusher's and Ably's pages connect where their client sends them, so it changes nothing for them."""
    config = client.config
    auth = {"channelAuthEndpoint": channel_auth, "userAuthEndpoint": user_auth}
    if config.scheme == "ably":
        ably_url = channel_auth if ably_auth is None else ably_auth
        ably: dict[str, Any] = {"provider": "ably", "authUrl": ably_url, "authMethod": "POST"}
        if not is_hosted_ably(config.host):
            ably["clientOptions"] = _ably_client_options(web_socket or BrowserSocket.of(config))
        return ably
    if config.scheme == "memory":
        return {"provider": "memory", **auth}
    host = config.host
    cluster = hosted_pusher_cluster(host)
    settings: dict[str, Any] = {
        "provider": config.scheme,
        "key": config.key,
        "cluster": cluster,
        "forceTLS": config.tls,
        **auth,
    }
    # api.pusherapp.com is hosted Pusher's legacy API host, the mt1 cluster's (pusher-http-node's default): pusher-js
    # connects there with cluster "mt1" alone, and cannot open a WebSocket to the API host itself.
    hosted = is_hosted_pusher(host)
    if config.scheme == "emulator" or not hosted:
        socket = web_socket or BrowserSocket.of(config)
        # pusher-js dials wssPort with TLS (443 unless told) and wsPort without: both, so the options work as given.
        # Its TLS strategy is its "ws" transport with TLS on ("wss" alone leaves it none), and a plain server is
        # given "ws" alone, as the emulator's banner does: with "wss" too, pusher-js also tried TLS on the plain port
        # while the server was away.
        settings.update(
            forceTLS=socket.tls,
            wsHost=socket.host,
            wsPort=socket.port,
            wssPort=socket.port,
            enabledTransports=["ws", "wss"] if socket.tls else ["ws"],
        )
        if socket.path:  # a server behind a proxy path: pusher-js puts wsPath before /app/{key}
            settings["wsPath"] = socket.path
    return settings


def _ably_client_options(socket: BrowserSocket) -> dict[str, Any]:
    """What ably-js needs to reach a self-hosted Ably endpoint such as the emulator, as ``relay emulator`` prints it:
    without it ably-js connects to Ably's cloud, and without ``fallbackHosts: []`` it retries there."""
    port_option = "tlsPort" if socket.tls else "port"
    return {"endpoint": socket.host, port_option: socket.port, "tls": socket.tls, "fallbackHosts": []}


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
