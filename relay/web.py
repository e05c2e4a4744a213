"""Auth endpoints for frontends, as a FastAPI router: pusher-js channel auth and sign-in, and an Ably token URL.

    app.include_router(auth_router(client, rules, current_user))

``current_user(request)`` returns the signed-in :class:`~relay.models.User` (or None); it may be async. The same
functions serve Django or Flask: call :func:`channel_auth_body` and :func:`user_auth_body` from a view.
"""

from __future__ import annotations

import inspect
import json
import logging
import math
import sys
from collections.abc import Awaitable, Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from relay.client import AsyncRelay, Relay
from relay.errors import (
    AuthenticationError,
    ConfigError,
    DuplicateKey,
    PermissionDenied,
    ProtocolError,
    ProviderError,
    RelayError,
    TransportError,
    UnsupportedCapability,
    about_item,
    json_kind,
    printable,
)
from relay.models import User
from relay.protocol.media_types import is_json_media_type, media_type
from relay.rules import ChannelRules, Decision

log = logging.getLogger("relay.web")
CurrentUser = Callable[[Request], User | Awaitable[User | None] | None]


def channel_auth_body(
    client: Relay | AsyncRelay,
    rules: ChannelRules,
    user: User | None,
    socket_id: str,
    channel: str,
    *,
    no_user_reason: str | None = None,
) -> dict[str, Any]:
    """The provider's channel-auth body if ``rules`` allow ``user`` on ``channel``; else :class:`PermissionDenied`.
    ``no_user_reason``: why a request has no user, which the refusal of a channel that needs one ends with."""
    decision = rules.authorize(user, channel, no_user_reason=no_user_reason)
    return client.authorize_channel(socket_id, channel, decision.member)


async def channel_auth_body_async(
    client: Relay | AsyncRelay,
    rules: ChannelRules,
    user: User | None,
    socket_id: str,
    channel: str,
    *,
    no_user_reason: str | None = None,
) -> dict[str, Any]:
    decision = await rules.authorize_async(user, channel, no_user_reason=no_user_reason)
    return client.authorize_channel(socket_id, channel, decision.member)


def channels_token_body(
    client: Relay | AsyncRelay,
    rules: ChannelRules,
    user: User | None,
    channels: Sequence[str],
    *,
    no_user_reason: str | None = None,
) -> dict[str, Any]:
    """An Ably TokenRequest for those of ``channels`` that ``rules`` allow ``user``. One refused (401, 403) is left
    out, so attaching it fails on its own (40160) while the others serve, as a refused pusher-js subscription does;
    when all are refused, the first refusal is raised."""
    decisions: list[Decision] = []
    refusals: list[RelayError] = []
    for channel in client.token_channels(channels):  # checked before any rule runs: a rule may cost a query
        with _deciding(channels, channel, refusals):
            decisions.append(rules.authorize(user, channel, no_user_reason=no_user_reason))
    return _token_for(client, decisions, refusals)


async def channels_token_body_async(
    client: Relay | AsyncRelay,
    rules: ChannelRules,
    user: User | None,
    channels: Sequence[str],
    *,
    no_user_reason: str | None = None,
) -> dict[str, Any]:
    decisions: list[Decision] = []
    refusals: list[RelayError] = []
    for channel in client.token_channels(channels):
        with _deciding(channels, channel, refusals):
            decisions.append(await rules.authorize_async(user, channel, no_user_reason=no_user_reason))
    return _token_for(client, decisions, refusals)


@contextmanager
def _deciding(channels: Sequence[str], channel: str, refusals: list[RelayError]) -> Iterator[None]:
    """Around the rules' decision on one of a token's ``channels``: a refusal (401, 403) is kept in ``refusals``, the
    channel left out; a name the rules refuse (over their length limit, "*") is raised, saying which of the list."""
    try:
        yield
    except (AuthenticationError, PermissionDenied) as refusal:
        refusals.append(refusal)
    except ProtocolError as error:
        raise about_item(error, f"channels[{channels.index(channel)}]") from None


def _token_for(client: Relay | AsyncRelay, decisions: list[Decision], refusals: list[RelayError]) -> dict[str, Any]:
    if not decisions:
        raise refusals[0]
    # The token's clientId is the user's, or the presence member a rule named (a token has one); None for a request
    # without a user
    members = {decision.member.id: decision.member for decision in decisions if decision.member is not None}
    if len(members) > 1:
        raise ProtocolError(
            f"the rules made different users ({', '.join(sorted(map(repr, members)))}) of these channels, "
            "and a token has one clientId: ask for their tokens separately"
        )
    member = next(iter(members.values()), None)
    return client.authorize_channels([decision.channel for decision in decisions], member)


def user_auth_body(
    client: Relay | AsyncRelay, user: User | None, socket_id: str, no_user_reason: str | None = None
) -> dict[str, Any]:
    """The provider's user-authentication body; with no ``user``, the refusal ends with ``no_user_reason``, what
    the caller knows of the missing credential."""
    if user is None:
        reason = f": {no_user_reason}" if no_user_reason else ""
        raise AuthenticationError(f"sign in first: no user for this request{reason}")
    return client.authenticate_user(socket_id, user)


# What the auth endpoints read from a request (a JSON body's other members, which no endpoint reads, may be anything)
AUTH_FIELDS = ("socket_id", "channel_name", "channel", "channels")


async def request_fields(request: Request) -> Mapping[str, str]:
    """pusher-js posts form-encoded ``socket_id``/``channel_name``; JSON (its values strings) and query parameters
    work too. A multipart body (``fetch`` with a ``FormData``) is refused with 415: read as a form, it had no fields,
    and the answer was "channel_name is required" although it was sent. A GET (ably-js's ``authUrl`` with its
    default ``authMethod``, its ``authParams`` in the query) is read from its query alone: a GET's body means nothing
    (RFC 9110 §9.3.1)."""
    fields = query_fields(request, AUTH_FIELDS)
    if request.method in ("GET", "HEAD"):
        return fields
    sent_type = request.headers.get("content-type", "")
    content_type = media_type(sent_type)
    if is_json_media_type(content_type):
        try:
            body = json.loads(await request.body(), object_pairs_hook=_Members)
        except (ValueError, RecursionError) as exc:  # RecursionError: nested deeper than the parser goes ('[' * 3000)
            raise ProtocolError(malformed_json_body(exc)) from None
        if not isinstance(body, _Members):
            raise ProtocolError("the JSON body must be an object")
        for name, value in body:
            # str() made ["x"] the channel "['x']" and true "True": a value a form could not have sent is refused.
            if name in AUTH_FIELDS and value is not None and not isinstance(value, str):
                kind = "an object" if isinstance(value, _Members) else json_kind(value)
                raise ProtocolError(f"the JSON body's {name!r} must be a string, not {kind}")
        _take_once(fields, [(name, value) for name, value in body if isinstance(value, str)], AUTH_FIELDS)
    elif content_type.startswith("multipart/"):
        raise ProtocolError(
            "a multipart body (fetch with a FormData) is not read here: send the fields as "
            "application/x-www-form-urlencoded (a URLSearchParams body) or as JSON (Content-Type: application/json)",
            http_status=415,
        )
    elif request.method == "POST":
        body = (await request.body()).decode("utf-8", "replace")
        if body.lstrip().startswith("{"):
            # fetch() with a JSON.stringify body and no header sends text/plain: read as a form, it had no fields, and
            # the answer was "channel_name is required" although it was sent.
            sent = f"sent as {sent_type!r}" if sent_type else "sent with no Content-Type"  # as the publish routes say
            raise ProtocolError(
                f"the body is JSON {sent}: send Content-Type: application/json (or the fields form-encoded)",
                http_status=415,
            )
        _take_once(fields, parse_qsl(body, keep_blank_values=True), AUTH_FIELDS)
    return fields


class _Members(list[tuple[str, Any]]):
    """A JSON object's members as sent, in order: a name given twice is there twice (read into a dict, the last value
    alone was kept, and the one dropped could be the one a proxy checked)."""


def query_fields(request: Request, read: Collection[str]) -> dict[str, str]:
    """The request's query parameters, one that its route ``read``s given twice with two values refused. Starlette's
    ``query_params[name]`` is the last value: ``?prefix=orders-&prefix=presence-`` listed presence channels, the
    first value dropped unseen, where the emulator's HTTP API refuses a repeated parameter."""
    fields: dict[str, str] = {}
    _take_once(fields, request.query_params.multi_items(), read)
    return fields


def _take_once(fields: dict[str, str], pairs: Iterable[tuple[str, str]], read: Collection[str]) -> None:
    """``pairs`` added to ``fields``: a field the route ``read``s given twice with two values (in the query and the
    body, twice in a query or a form, or twice in a JSON object) is refused, since the value not read might be the
    one a rule or a proxy checked. The same value twice is that value, with nothing left unread; a field the route
    does not read resolves nothing, whatever it holds."""
    for name, value in pairs:
        earlier = fields.setdefault(name, value)
        if earlier != value and name in read:
            raise ProtocolError(f"{name} is given twice, as {earlier!r:.80} and {value!r:.80}: give it once")


def malformed_json_body(cause: BaseException | None) -> str:
    """The words for a JSON body the parser raised ``cause`` on: why, where it is not plainly bad JSON, never the
    parser's own message (one named Python's sys.set_int_max_str_digits())."""
    if isinstance(cause, UnicodeDecodeError):
        return "the JSON body is malformed: it is not UTF-8 text"
    if isinstance(cause, RecursionError):
        return "the JSON body is malformed: it nests arrays and objects too deeply"
    if isinstance(cause, DuplicateKey):
        return f"the JSON body is malformed: {cause}, and which value was meant is unknown"
    if isinstance(cause, ValueError) and not isinstance(cause, json.JSONDecodeError) and "digits" in str(cause):
        return f"the JSON body is malformed: it has an integer of more than {sys.get_int_max_str_digits()} digits"
    return "the JSON body is malformed"


def socket_id_placeholder(client: Relay | AsyncRelay) -> str:
    """Ably tokens are not bound to a connection, so Ably needs no socket id; Pusher's signatures do (400)."""
    if client.config.scheme == "ably":
        return "ably"
    raise ProtocolError("socket_id is required")


def channel_auth_request(client: Relay | AsyncRelay, fields: Mapping[str, str]) -> tuple[str, str]:
    """The socket id and channel of a channel-auth request. pusher-js posts ``channel_name``; an Ably token URL is
    given ``channel`` (ably-js ``authParams``); either is read, and both must then name the same channel, since the
    one not read might be the one a rule would have been asked about."""
    named = {name for name in (fields.get("channel_name"), fields.get("channel")) if name}
    if not named:
        raise ProtocolError("channel_name is required (channel is read too)")
    if len(named) > 1:
        raise ProtocolError("channel_name and channel name different channels: give one")
    return fields.get("socket_id") or socket_id_placeholder(client), named.pop()


def requested_channels(fields: Mapping[str, str]) -> list[str] | None:
    """The channels of an Ably token request for several, or None for a request naming one channel. ``channels`` is
    a JSON array of names, as ably-js sends ``authParams: {channels: JSON.stringify(names)}`` (a comma, which
    joining an array would put between them, may be in a name)."""
    text = fields.get("channels")
    if text is None:
        return None
    if fields.get("channel_name") or fields.get("channel"):
        raise ProtocolError("channels and channel_name (or channel) are both given: give one")
    try:
        names = json.loads(text)
    except (ValueError, RecursionError):
        names = None
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise ProtocolError(
            "channels must be a JSON array of channel names, as ably-js sends "
            'authParams: {channels: JSON.stringify(["orders-42", "presence-room-1"])}'
        )
    return names


def _not_ably(client: Relay | AsyncRelay) -> UnsupportedCapability:
    """The 501 of ``/ably/token`` asked for a token (no socket id: ably-js's request) when the provider is not Ably.
    "socket_id is required" sent the caller looking for a field ably-js never sends. With a socket id the route
    answers as ``/pusher/auth`` does, for an app that calls it with Pusher's fields."""
    provider = client.adapter.name
    return UnsupportedCapability(
        provider,
        "Ably tokens",
        hint=f"/ably/token is the token route for Ably providers (ably-js's authUrl), and this router's provider is "
        f"{provider}: pusher-js authorizes channels at /pusher/auth",
    )


def _required(fields: Mapping[str, str], name: str) -> str:
    value = fields.get(name)
    if not value:
        raise ProtocolError(f"{name} is required")
    return value


# A provider refusing the server's own key, secret or app id (or a disabled app) says nothing about the caller: its
# 401 passed on would read as the caller's token being wrong, and the caller can fix none of it.
_REFUSED_SERVER_CONFIGURATION = frozenset({401, 403, 404})


# Client errors a token request repeated as it was gets again; 401 (a JWT may be renewed by an authCallback), 408 and
# 429 are worth asking again
_NOT_MENDED_BY_ASKING_AGAIN = frozenset(range(400, 500)) - {401, 408, 429}


def error_response(error: RelayError, request: Request | None = None, *, ably: bool = False) -> JSONResponse:
    """The error as JSON; a provider that failed, could not be reached or refused this server's own credentials is a
    502 (the request was fine). A known ``retry_after`` goes out as ``Retry-After``; a publish's ``published`` and
    ``outcome_unknown``, where they apply, as fields of the same names.

    A ConfigError raised while answering is this server's configuration lacking what a valid request needs (an
    encrypted channel a rule allows, or a publish names, without encryption_master_key): a 500 as a bug's, but naming
    the setting to add. Every 500 is logged (with ``request``'s method and path): unlogged, the operator saw nothing
    and only the caller learnt what was missing.

    With ``ably`` (an answer to ably-js's ``authUrl``) the error is in Ably's shape, ``{"error": {"message", "code",
    "statusCode"}}``: ably-js takes the status from the body's ``error`` object, so a plain string lost the 403, and a
    refused token was retried for ever (``80019/401``) instead of failing the connection with the reason (RSA4d)."""
    # Retry-After is whole seconds (RFC 9110 §10.2.3): rounded up, so a client never comes back too early.
    headers = None if error.retry_after is None else {"Retry-After": str(math.ceil(error.retry_after))}
    message = error.message
    if isinstance(error, ConfigError):
        message, status = f"this server's configuration cannot serve this request: {error.message}", 500
    elif error.answered_by is not None and error.http_status in _REFUSED_SERVER_CONFIGURATION:
        message = f"the provider refused this server's own credentials or app id, not this request: {error.message}"
        status = 502
    elif isinstance(error, ProviderError | TransportError):
        status = 502
    else:
        status = error.http_status or 500
    if status == 500:
        where = "" if request is None else f"{request.method} {printable(route_path(request.scope))} "
        log.error("%sanswered 500: %s", where, message)
    if ably:
        if status in _NOT_MENDED_BY_ASKING_AGAIN:
            # ably-js asks again for a token refused with any status but 403, every few seconds for ever (RSA4d): a
            # request no retry can mend (a channel name relay refuses, a missing field, a body too large) fails the
            # connection instead, with the reason as its cause
            status = 403
        code = status * 100 if status < 500 else 50000  # Ably's codes extend the status: 40300 is a refusal
        return JSONResponse(
            {"error": {"message": message, "code": code, "statusCode": status}}, status_code=status, headers=headers
        )
    return JSONResponse({"error": message, **_resend_facts(error)}, status_code=status, headers=headers)


def _resend_facts(error: RelayError) -> dict[str, Any]:
    """What a caller must know before sending a failed publish again, as fields it can branch on (the message says
    it too, in a sentence): ``published``, how many events or channels were delivered (send only the rest), and
    ``outcome_unknown``, a request sent and not answered (it may have been delivered). Only those that apply."""
    facts: dict[str, Any] = {}
    if error.published is not None:
        facts["published"] = error.published
    if error.outcome_unknown:
        facts["outcome_unknown"] = True
    return facts


def no_store(response: JSONResponse) -> JSONResponse:
    """``response`` marked ``Cache-Control: no-store``: an auth answer carries a signature or a token made for one
    visitor's request, which a shared cache (a CDN, a proxy) must never keep and hand to the next; its refusals too,
    since a GET's (ably-js's authUrl) would be kept for the URL and answer a visitor whose request it was not."""
    response.headers["Cache-Control"] = "no-store"
    return response


def route_path(scope: Mapping[str, Any]) -> str:
    """The request's path inside the app: mounted under a prefix, the scope's path starts with its ``root_path``
    (as Starlette keeps it now; older versions removed it), and fixed paths compared with it would match nothing."""
    path: str = scope["path"]
    root_path: str = scope.get("root_path", "")
    if root_path and (path == root_path or path.startswith(f"{root_path}/")):
        return path[len(root_path) :] or "/"
    return path


def auth_router(
    client: Relay | AsyncRelay, rules: ChannelRules, current_user: CurrentUser, *, prefix: str = ""
) -> APIRouter:
    """``POST /pusher/auth``, ``POST /pusher/user-auth`` and ``GET|POST /ably/token`` under ``prefix``."""
    router = APIRouter(prefix=prefix)

    async def user_of(request: Request) -> User | None:
        user = current_user(request)
        return await user if inspect.isawaitable(user) else user

    @router.post("/pusher/auth")
    async def pusher_channel_auth(request: Request) -> JSONResponse:
        try:
            socket_id, channel = channel_auth_request(client, await request_fields(request))
            body = await channel_auth_body_async(client, rules, await user_of(request), socket_id, channel)
        except RelayError as error:
            return no_store(error_response(error, request))
        return no_store(JSONResponse(body))

    @router.post("/pusher/user-auth")
    async def pusher_user_auth(request: Request) -> JSONResponse:
        try:
            fields = await request_fields(request)
            body = user_auth_body(client, await user_of(request), _required(fields, "socket_id"))
        except RelayError as error:
            return no_store(error_response(error, request))
        return no_store(JSONResponse(body))

    @router.api_route("/ably/token", methods=["GET", "POST"])
    async def ably_token(request: Request) -> JSONResponse:
        try:
            fields = await request_fields(request)
            channels = requested_channels(fields)
            if channels is not None:
                body = await channels_token_body_async(client, rules, await user_of(request), channels)
            else:
                if not fields.get("socket_id") and client.config.scheme != "ably":
                    raise _not_ably(client)
                socket_id, channel = channel_auth_request(client, fields)
                body = await channel_auth_body_async(client, rules, await user_of(request), socket_id, channel)
        except RelayError as error:
            return no_store(error_response(error, request, ably=client.config.scheme == "ably"))
        return no_store(JSONResponse(body))

    return router
