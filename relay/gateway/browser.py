"""The gateway's routes for browsers: channel auth and sign-in from the user's JWT, and /v1/client-config."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from relay.client import AsyncRelay, Relay
from relay.config import hosted_pusher_cluster, is_hosted_ably, is_hosted_pusher
from relay.errors import LimitExceeded, PayloadTooLarge, ProtocolError, RelayError, json_kind
from relay.gateway.rules_file import RuleSpec
from relay.gateway.server_api import query_parameters
from relay.gateway.settings import BrowserSocket, GatewaySettings, browser_socket, loopback_socket_warning
from relay.identity import JwtVerifier
from relay.models import User
from relay.protocol.channels import DEFAULT_LIMITS
from relay.protocol.members import watchlist_problem
from relay.rules import ChannelRules
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

# The gateway's logger, which docs/gateway.md names
log = logging.getLogger("relay.gateway")


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


def _user_of(verifier: JwtVerifier, request: Request) -> tuple[User | None, str | None]:
    """The request's user, from its JWT; without one, why it has none (which a refusal that needs a user ends with)."""
    user = verifier.user(request)
    return user, verifier.no_user_reason(request) if user is None else None


def add_browser_routes(
    router: APIRouter, settings: GatewaySettings, client: AsyncRelay, verifier: JwtVerifier, rules: ChannelRules
) -> None:
    """``/v1/auth/channel`` (pusher-js's channel auth, ably-js's token URL) and ``/v1/auth/user`` (pusher-js's
    sign-in), for the user ``verifier`` reads from the request as ``rules`` allow, and ``/v1/client-config``."""
    rule_specs: dict[str, RuleSpec] = {}
    for spec in settings.rules:  # the first rule with a pattern decides, so a later one with the same is never used
        rule_specs.setdefault(spec.pattern, spec)
    # Parsed once here: every page load asks /v1/client-config
    web_socket = None if settings.public_ws_url is None else browser_socket(settings.public_ws_url)
    loopback = loopback_socket_warning(settings, client.config)
    if loopback is not None:
        log.warning("%s", loopback)

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
            user, no_user_reason = _user_of(verifier, request)
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
            user, no_user_reason = _user_of(verifier, request)
            if user is not None:
                info = {claim: user.info[claim] for claim in SIGNIN_INFO_CLAIMS if claim in user.info}
                user = User(user.id, info, _watchlist_claim(user.info))
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
