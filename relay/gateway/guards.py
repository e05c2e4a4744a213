"""The gateway's ASGI guards: request heads, the API token, body limits, CORS, unhandled errors and the refusal log."""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlencode

from fastapi import Request, Response
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from relay.client import MAX_TOKEN_CHANNELS, parse_configuration
from relay.errors import AuthenticationError, PayloadTooLarge, ProtocolError, RelayError, printable
from relay.gateway.settings import GatewaySettings, browser_origin
from relay.identity import bearer_token, shown_credential
from relay.protocol.channels import DEFAULT_LIMITS
from relay.protocol.http_framing import MAX_HEAD_BYTES, chunked_alone
from relay.web import error_response, no_store, route_path

# The gateway's logger, which docs/gateway.md names
log = logging.getLogger("relay.gateway")


MAX_BODY_BYTES = 1_048_576
MAX_AUTH_BODY_BYTES = 16_384  # pusher-js posts socket_id and channel_name, plus whatever params the app adds
# /v1/auth/channel's largest valid body: an Ably token request for MAX_TOKEN_CHANNELS names as long as the rules take
# (DEFAULT_LIMITS), each character one a form encoder percent-encodes ("@"), sent as ably-js sends `channels`
# (JSON.stringify's array, form-encoded): 3 bytes for each character of the array, its quotes, commas and brackets
# too. A JSON body holds it in fewer (2 bytes for an escaped quote, 1 for the rest). Over that, MAX_AUTH_BODY_BYTES
# for socket_id, the params an app adds and an encoder's spaces. The 16 KiB alone refused 100 names of 200 characters.
MAX_CHANNEL_AUTH_BODY_BYTES = MAX_AUTH_BODY_BYTES + len(
    urlencode(
        {"channels": json.dumps(["@" * DEFAULT_LIMITS.max_channel_name] * MAX_TOKEN_CHANNELS, separators=(",", ":"))}
    )
)


# Headers a request may carry once: of two Authorization headers, Idempotency-Keys or X-Socket-Ids, which one is meant
# is not known (the first Idempotency-Key, and the first X-Socket-Id, whatever the second said, were taken silently)
SINGLE_HEADERS = {
    b"authorization": "Authorization",
    b"idempotency-key": "Idempotency-Key",
    b"x-socket-id": "X-Socket-Id",
}


# The POST routes a backend calls with the API token; USER_ROUTE's carry the user id in their path (and only these
# two: an embedding app's own /v1/users/… routes are its own).
PUBLISH_PATHS = frozenset({"/v1/publish", "/v1/publish/batch"})
USER_ROUTE = re.compile(r"/v1/users/[^/]+/(events|terminate)")


BODY_LIMITS = {
    "/v1/publish": MAX_BODY_BYTES,
    "/v1/publish/batch": MAX_BODY_BYTES,
    "/v1/webhooks": MAX_BODY_BYTES,
    "/v1/auth/channel": MAX_CHANNEL_AUTH_BODY_BYTES,
    "/v1/auth/user": MAX_AUTH_BODY_BYTES,
}
# Their answers are Cache-Control: no-store (relay.web.no_store), the refusals of the gateway's own layers too
AUTH_PATHS = frozenset({"/v1/auth/channel", "/v1/auth/user"})


def body_limit(path: str) -> int | None:
    """The largest body a POST to ``path`` may have (None: not one of the gateway's routes)."""
    user_route = USER_ROUTE.fullmatch(path)
    if user_route is None:
        return BODY_LIMITS.get(path)
    return MAX_BODY_BYTES if user_route.group(1) == "events" else MAX_AUTH_BODY_BYTES  # terminate takes no body


def check_api_token(settings: GatewaySettings, request: Request) -> None:
    """The API token of the backend routes (publishing, channel queries, user events), compared in constant time."""
    if settings.api_token is None:
        raise AuthenticationError(
            "the server API (/v1/publish…, /v1/channels…, /v1/users/…) is disabled: set RELAY_API_TOKEN on the gateway"
        )
    header = request.headers.get("authorization", "")
    supplied = bearer_token(header)
    if not supplied or not hmac.compare_digest(supplied.encode(), settings.api_token.encode()):
        problem = api_token_problem(header, supplied)
        raise AuthenticationError(f"missing or invalid API token (Authorization: Bearer RELAY_API_TOKEN): {problem}")


def api_token_problem(header: str, supplied: str | None) -> str:
    """What is wrong with the ``Authorization`` header of a request refused the API token: a caller whose shell
    lacked RELAY_API_TOKEN sent ``Bearer `` alone, and one that left out the scheme sent the right token, and both
    read the same "missing or invalid". Neither the token sent nor the scheme is repeated: either may be the token."""
    if not header.strip():
        return "the request has no Authorization header"
    if supplied == "":
        return "it has no token after Bearer (is RELAY_API_TOKEN set where the request is made?)"
    if supplied is None:
        return "it does not start with 'Bearer ': send 'Authorization: Bearer TOKEN'"
    return "the token is not the gateway's RELAY_API_TOKEN"


def head_size(scope: Scope) -> int:
    """The bytes of a request's line and headers as written plainly (``Name: value``, CRLFs, the blank line): the
    server has parsed them, so whitespace around a header's value is not counted."""
    target = len(scope.get("raw_path") or scope["path"].encode())
    query = scope.get("query_string", b"")
    line = len(scope["method"]) + 1 + target + (1 + len(query) if query else 0) + len(" HTTP/\r\n")
    line += len(scope.get("http_version", "1.1"))
    return line + sum(len(name) + 2 + len(value) + 2 for name, value in scope["headers"]) + 2


UNSUPPORTED_TRANSFER_CODING = (
    "the request's Transfer-Encoding is not supported (only chunked is): send the body with Content-Length, or with "
    "Transfer-Encoding: chunked alone"
)


def framing_refusal(headers: Sequence[tuple[bytes, bytes]]) -> tuple[int, str] | None:
    """Why a request's body framing cannot be trusted (a status and the reason), or None. With Content-Length and
    Transfer-Encoding both, servers and proxies disagree where the body ends, and what one takes for the rest of the
    body another takes for the next request (request smuggling): RFC 9112 §6.1 lets a server refuse such a request and
    has it close the connection after answering. A transfer coding the gateway does not decode is a 501 (§6.1)."""
    transfer_encodings = [value for name, value in headers if name == b"transfer-encoding"]
    if not transfer_encodings:
        return None
    if not chunked_alone(transfer_encodings):
        return 501, UNSUPPORTED_TRANSFER_CODING
    if any(name == b"content-length" for name, _ in headers):
        return 400, (
            "the request has both Content-Length and Transfer-Encoding, which say different things of where its "
            "body ends: send one (RFC 9112 §6.1)"
        )
    return None


def _closing_refusal(
    status: int, message: str, headers: Mapping[str, str] | None = None, *, ably: bool = False
) -> JSONResponse:
    """An answer after which the connection is closed (``Connection: close``): what follows this request on the
    connection is not read, as its framing or size is not trusted. With ``ably`` (an answer to ably-js's ``authUrl``),
    in Ably's shape, as error_response gives it."""
    answer = (
        error_response(ProtocolError(message, http_status=status), ably=True)
        if ably
        else JSONResponse({"error": message}, status_code=status)
    )
    answer.headers.update({**(headers or {}), "Connection": "close"})
    return answer


# A control character in a request's (percent-decoded) path: no route, channel name or user id holds one, and
# Starlette's routes match up to a final "\n" (their regular expressions end in "$"), so "/v1/publish%0A" reached the
# publish route past RequestGuard, which knows the routes by their exact paths.
CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f]")
PATH_WITH_CONTROL_CHARACTER = (
    "the request's path has a control character (such as %0A): no route of the gateway has one"
)


class HeadGuard:
    """ASGI middleware, outside CORS (whose preflight answers would otherwise let such a request through, and keep its
    connection): a request whose body framing is ambiguous (Content-Length with Transfer-Encoding), whose transfer
    coding the gateway does not decode, whose path has a control character, or whose line and headers are over
    MAX_HEAD_BYTES, is refused and its connection closed. A head h11 could not finish within the limit is refused
    before it gets here (GatewayHttpProtocol), without CORS headers.

    A refusal to a page of one of ``cors_origins`` carries CORS's headers for it, as CORSMiddleware's answers do:
    without them the page saw only a network error for the 431 an oversized cookie or JWT brought, not the reason."""

    def __init__(self, app: ASGIApp, cors_origins: Sequence[str] = (), *, ably_auth: bool = False) -> None:
        self.app = app
        self.cors_origins = frozenset(browser_origin(origin) for origin in cors_origins)
        # /v1/auth/channel answers ably-js (the primary provider is Ably): its refusals are in Ably's shape, a 403 for
        # what asking again cannot mend (an oversized cookie's 431), as RequestGuard's and the route's are
        self.ably_auth = ably_auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            refusal = framing_refusal(scope["headers"])
            if refusal is not None:  # where its body ends is not known: none of it is read
                await self._refusal(scope, *refusal)(scope, receive, send)
                return
            if CONTROL_CHARACTER.search(scope["path"]):
                refusal = 400, PATH_WITH_CONTROL_CHARACTER
            if refusal is None:  # of two credentials or two keys, which one is meant is not known: none is taken
                copies = Counter(name for name, _ in scope["headers"] if name in SINGLE_HEADERS)
                for name, count in copies.items():
                    if count > 1:
                        refusal = 400, f"the request has {count} {SINGLE_HEADERS[name]} headers: send one"
                        break
            size = head_size(scope)
            if refusal is None and size > MAX_HEAD_BYTES:
                refusal = 431, head_too_large(MAX_HEAD_BYTES, size)
            if refusal is not None:
                await _drain_small_body(scope, receive)
                await self._refusal(scope, *refusal)(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _refusal(self, scope: Scope, status: int, message: str) -> JSONResponse:
        ably = self.ably_auth and route_path(scope) == "/v1/auth/channel"
        return _closing_refusal(status, message, self._refusal_headers(scope), ably=ably)

    def _refusal_headers(self, scope: Scope) -> dict[str, str]:
        """CORS's headers for an allowed origin, and ``no-store`` on the auth paths, as their other refusals."""
        headers = {"Cache-Control": "no-store"} if route_path(scope) in AUTH_PATHS else {}
        origin = Headers(scope=scope).get("origin")
        if origin in self.cors_origins:
            headers |= {"Access-Control-Allow-Origin": origin, "Access-Control-Allow-Credentials": "true"}
        if self.cors_origins:
            headers["Vary"] = "Origin"
        return headers


# The most of a refused request's body read before the answer. Closing a connection with unread bytes in it sends the
# client a reset, which can reach it before the answer and lose it ("connection reset" for a 400 on an ordinary
# request); a larger body is not waited for (an answer with the head alone, then the close).
DRAINED_BODY_BYTES = 65_536


async def _drain_small_body(scope: Scope, receive: Receive) -> None:
    """Read and drop the body of a request refused by its head alone, if it declares at most DRAINED_BODY_BYTES (a
    chunked body, of no declared size, is not read: nobody without the token makes the gateway read a body)."""
    declared = Headers(scope=scope).get("content-length", "")
    if not declared.isdigit() or int(declared) > DRAINED_BODY_BYTES:
        return
    with contextlib.suppress(PayloadTooLarge):
        await _bounded_body(receive, DRAINED_BODY_BYTES)


class RequestGuard:
    """ASGI middleware for the gateway's POST routes. A publish without the API token is refused before its body is
    read, and a body over its route's limit, declared or streamed, is refused without being buffered whole: FastAPI
    reads and validates a body before a handler can look at the request."""

    def __init__(self, app: ASGIApp, settings: GatewaySettings) -> None:
        self.app = app
        self.settings = settings
        self.ably = answers_ably_js(settings)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = route_path(scope) if scope["type"] == "http" and scope["method"] == "POST" else ""
        limit = body_limit(path)
        if limit is None:
            await self.app(scope, receive, send)
            return
        try:
            request = Request(scope)
            if path in PUBLISH_PATHS or USER_ROUTE.fullmatch(path):
                check_api_token(self.settings, request)
            coding = content_coding_refusal(request.headers.get("content-encoding", ""))
            if coding is not None:
                raise ProtocolError(coding, http_status=415)
            declared = request.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > limit:
                raise PayloadTooLarge(f"the request body is over {limit} bytes")
            body = await _bounded_body(receive, limit)
        except RelayError as error:
            ably = self.ably and path == "/v1/auth/channel"
            await _drain_small_body(scope, receive)  # a 401 before the body: no reset overtaking it (see HeadGuard)
            refusal = error_response(error, Request(scope), ably=ably)
            await (no_store(refusal) if path in AUTH_PATHS else refusal)(scope, receive, send)
            return
        if body is not None:
            await self.app(scope, _replay(body, receive), send)


def answers_ably_js(settings: GatewaySettings) -> bool:
    """Whether /v1/auth/channel answers ably-js (the primary provider is Ably), as the route decides: the guards'
    refusals there are then in Ably's shape, as the route's are."""
    _, configs = parse_configuration(settings.relay_url)
    return configs[0].scheme == "ably"


def content_coding_refusal(content_encoding: str) -> str | None:
    """Why a body with this Content-Encoding is refused (the gateway decodes none), or None for none or ``identity``.
    A gzipped body was read as it came, and refused as "the JSON body is malformed", which sent its sender to look
    for a mistake in JSON it had checked."""
    codings = [coding.strip().lower() for coding in content_encoding.split(",") if coding.strip()]
    if all(coding == "identity" for coding in codings):
        return None
    return (
        f"the request body is encoded ({shown_credential(content_encoding.strip())} in Content-Encoding), and the "
        "gateway decodes no content coding: send the body uncompressed, without Content-Encoding"
    )


def head_too_large(limit: int, size: int | None = None) -> str:
    sent = f"over {limit}" if size is None else str(size)
    return (
        f"the request line and headers are {sent} bytes; the gateway takes at most {limit} (a JWT in Authorization "
        "or a cookie counts: leave out of it the claims the gateway does not need)"
    )


class InternalErrorGuard:
    """ASGI middleware inside CORS for what no handler caught (a bug, or a ``webhook_hook`` that raised). Starlette
    answers those from its outermost layer, outside CORS, in plain text a browser's page cannot read; here they are
    logged with their traceback and answered as the routes answer errors, ``{"error": "…"}``, with the CORS headers."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, send_tracked)
        except Exception:
            if started:  # part of the answer is out: nothing sound can follow it, so the connection is dropped
                raise
            log.exception("unhandled error answering %s %s", scope["method"], printable(route_path(scope)))
            answer = JSONResponse({"error": "internal error: the gateway's log has the details"}, status_code=500)
            await answer(scope, receive, send)


# The most of an answer's body read for its reason: a 422 echoes the input, up to a whole 1 MiB publish body.
MAX_LOGGED_ANSWER_BYTES = 65_536


class RefusalLog:
    """ASGI middleware, outermost: logs each refused request (4xx) at INFO on ``relay.gateway``, and each failure that
    nothing else logs (5xx but 500, which is logged where it happens) at WARNING, with the method, the path, the
    status and the reason the answer gives. A browser shows the page only pusher-js's "received status: 403", and
    uvicorn's access log (off) gave no reason: the reason reached only the network tab of the browser that was
    refused. The reason is the answer's, and answers never repeat a credential: no token or JWT is logged."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 0
        answer = bytearray()
        gone = False  # the client went, or the server cut the request short and answered it itself (serve.py)

        async def receive_observed() -> Message:
            nonlocal gone
            message = await receive()
            gone = gone or message["type"] == "http.disconnect"
            return message

        async def send_observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and _logged(status) and not gone:  # else never sent
                answer.extend(message.get("body", b"")[: MAX_LOGGED_ANSWER_BYTES - len(answer)])
                if not message.get("more_body", False):
                    _log_refusal(scope, status, bytes(answer))
            await send(message)

        await self.app(scope, receive_observed, send_observed)


def _logged(status: int) -> bool:
    return 400 <= status < 600 and status != 500


def _log_refusal(scope: Scope, status: int, answer: bytes) -> None:
    origin = Request(scope).headers.get("origin")
    source = "" if origin is None else f" (Origin: {origin})"  # which site's page, for a CORS refusal above all
    level = logging.INFO if status < 500 else logging.WARNING
    reason = printable(_answer_reason(answer))
    path = printable(route_path(scope))
    log.log(level, "%s %s answered %d%s: %s", scope["method"], path, status, printable(source), reason)


def _answer_reason(answer: bytes) -> str:
    """The reason an answer gives: its ``error``, a 422's fields and messages (not the input it echoes), or its text
    (CORS refusals are plain text)."""
    try:
        body = json.loads(answer)
    except ValueError:
        if len(answer) >= MAX_LOGGED_ANSWER_BYTES:
            return f"(an answer over {MAX_LOGGED_ANSWER_BYTES} bytes)"
        return answer.decode("utf-8", "replace").strip()[:200] or "(no body)"
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return str(body["error"])
    if isinstance(body, dict) and isinstance(body.get("error"), dict) and isinstance(body["error"].get("message"), str):
        return str(body["error"]["message"])  # Ably's shape, on the token route of an Ably provider
    if isinstance(body, dict) and isinstance(body.get("detail"), list):
        return "; ".join(_schema_problem(problem) for problem in body["detail"])
    return "(an answer without a reason)"


def _schema_problem(problem: object) -> str:
    if not isinstance(problem, dict):
        return str(problem)
    where = ".".join(str(part) for part in problem.get("loc", ()))
    return f"{where}: {problem.get('msg')}"


async def _bounded_body(receive: Receive, limit: int) -> bytes | None:
    """The whole request body, or ``None`` if the client went away; PayloadTooLarge once it passes ``limit``."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the request body is over {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if replayed:
            return await receive()
        replayed = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


# X-Requested-With and X-XSRF-TOKEN: what Laravel's stock axios set-up sends with every request
CORS_HEADERS = (
    "Authorization",
    "Content-Type",
    "X-Socket-Id",
    "Idempotency-Key",
    "X-CSRF-Token",
    "X-Requested-With",
    "X-XSRF-TOKEN",
)
# How many refused origins the log warns of, each once: anyone can send preflights from as many origins as they like
MAX_WARNED_CORS_ORIGINS = 100
# What the log shows of an origin or a header a preflight named: the sender chooses them, at any length
SHOWN_CORS_CHARACTERS = 100


class GatewayCORS(CORSMiddleware):
    """Starlette's CORS, its preflight refusals answered as the gateway's errors: ``{"error": "…"}`` naming what was
    refused (the origin, the method or a header) and what to change, not the plain text ``Disallowed CORS origin``.
    The answer never lists the allowed origins (any site may ask); the log does, in a warning once per refused origin
    (for the first MAX_WARNED_CORS_ORIGINS of them), where the operator reads which origin to add."""

    def __init__(self, app: ASGIApp, /, **options: Any) -> None:
        super().__init__(app, **options)
        self._warned: set[str] = set()

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code != 400:
            return response
        origin = request_headers["origin"]
        method = request_headers["access-control-request-method"]
        requested = [name.strip() for name in request_headers.get("access-control-request-headers", "").split(",")]
        problems = []
        if not self.is_allowed_origin(origin):
            problems.append(
                f"the origin {_shown(origin)} is not allowed to call this gateway (to allow its pages, the gateway's "
                "operator adds it to RELAY_CORS_ORIGINS)"
            )
            self._warn(origin)
        if method not in self.allow_methods:
            problems.append(f"the method {_shown(method)} is not one the gateway's routes take (GET, POST)")
        refused = next((name for name in requested if name and name.lower() not in self.allow_headers), None)
        if refused is not None:
            problems.append(
                f"the request header {_shown(refused)} is not one the gateway allows ({', '.join(CORS_HEADERS)}): "
                "leave it out of the request"
            )
        if "access-control-request-private-network" in request_headers and not self.allow_private_network:
            problems.append("a request from a public site to a private network address is not allowed")
        if not problems:  # a refusal Starlette knows and this does not: its own words
            problems.append(bytes(response.body).decode())
        headers = {
            name: value for name, value in response.headers.items() if name.lower().startswith(("access-", "vary"))
        }
        return JSONResponse(
            {"error": f"CORS preflight refused: {'; '.join(problems)}"}, status_code=400, headers=headers
        )

    def _warn(self, origin: str) -> None:
        if origin in self._warned or len(self._warned) > MAX_WARNED_CORS_ORIGINS:
            return
        self._warned.add(origin)
        if len(self._warned) > MAX_WARNED_CORS_ORIGINS:
            log.warning(
                "CORS: over %d origins refused; the others are not warned of (each refusal is still logged at INFO)",
                MAX_WARNED_CORS_ORIGINS,
            )
            return
        log.warning(
            "CORS: refused a preflight from %s, which is not in RELAY_CORS_ORIGINS (%s); add it there if its pages "
            "should call the gateway (warned once per origin)",
            _shown(origin),
            ", ".join(self.allow_origins),
        )


def _shown(value: str) -> str:
    """A preflight's origin, method or header for an answer or a log line: quoted, cut, its control characters
    escaped."""
    cut = value if len(value) <= SHOWN_CORS_CHARACTERS else f"{value[:SHOWN_CORS_CHARACTERS]}…"
    return f"'{printable(cut)}'"
