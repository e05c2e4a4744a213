"""The gateway's error answers for what no route answers: 404, 405, a body not JSON, a 422 off the schema."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.routing import Match

from relay.errors import printable
from relay.gateway.guards import AUTH_PATHS
from relay.identity import shown_credential
from relay.protocol.media_types import is_json_media_type
from relay.web import malformed_json_body, no_store, route_path

# A path shaped as a user route but for its user id, which is not one path segment: empty, or holding a '/' (a %2F is
# decoded before routing, so encodeURIComponent cannot carry one)
MISSED_USER_ROUTE = re.compile(r"/v1/users/(|.*/.*)/(events|terminate)")


class _AsciiJSONResponse(JSONResponse):
    """A 422 echoes the input, which may hold a lone surrogate (valid JSON: "\\ud800") that UTF-8 cannot encode:
    escaped as JSON's \\uXXXX, it renders, and the client parses back exactly what it sent."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


def add_error_handlers(app: FastAPI) -> None:
    """Answer errors as the gateway's routes do, ``{"error": "…"}``: an unknown route (404), a wrong method (405,
    with its ``Allow`` header) and a body that is not JSON (400, as on the auth routes) would otherwise get FastAPI's
    ``{"detail": …}``. A body that is JSON but does not fit the schema stays FastAPI's 422, which names the field."""

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 400 and exc.detail == FASTAPI_BODY_ERROR:
            return JSONResponse({"error": malformed_json_body(exc.__cause__)}, status_code=400)
        missed = MISSED_USER_ROUTE.fullmatch(route_path(request.scope)) if request.method == "POST" else None
        if exc.status_code == 404 and missed is not None:
            return JSONResponse({"error": _missed_user_route(*missed.groups())}, status_code=404)
        if exc.status_code == 404 and _slash_off_a_route(request):
            path = route_path(request.scope).rstrip("/")
            message = f"no route at this path, which ends in '/': the route is {printable(path)}, without it"
            return JSONResponse({"error": message}, status_code=404)
        headers = exc.headers
        allowed = _allowed_methods(request) if exc.status_code == 405 else ""
        if allowed:
            headers = {**(headers or {}), "Allow": allowed}
        answer = JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=headers)
        return no_store(answer) if route_path(request.scope) in AUTH_PATHS else answer

    async def validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        if any(error.get("type") == "json_invalid" for error in exc.errors()):
            return JSONResponse({"error": "the JSON body is malformed"}, status_code=400)
        content_type = request.headers.get("content-type", "")
        if not is_json_media_type(content_type) and _body_refused(exc):
            # FastAPI parses a body as JSON only when its Content-Type says it is: fetch() with a string body sends
            # text/plain, and the 422 said "Input should be a valid dictionary" without a word of the header. Such
            # a body is refused, not read as JSON regardless: a text/plain POST is a CORS "simple request", one a
            # cross-site page can send without a preflight.
            sent = f"this request's is {content_type!r}" if content_type else "this request has none"
            message = f"the body must be JSON: send Content-Type: application/json ({sent})"
            return JSONResponse({"error": message}, status_code=415)
        try:
            try:
                errors = jsonable_encoder(exc.errors())
                return _AsciiJSONResponse({"error": schema_refusal(errors), "detail": errors}, status_code=422)
            except RecursionError:
                # A value nested as deeply as the parser read it, echoed a few levels deeper: past the stack, a 500.
                # The 422 then names the fields without the values.
                errors = jsonable_encoder([{**error, "input": None} for error in exc.errors()])
                return _AsciiJSONResponse({"error": schema_refusal(errors), "detail": errors}, status_code=422)
        except ValueError:
            # The input echoed holds NaN or Infinity, which Python's parser reads (1e400 as Infinity) and JSON has
            # not: rendering it failed, and the answer was a 500.
            return JSONResponse({"error": NON_FINITE_JSON_BODY}, status_code=400)

    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)


# The most of a 422's problems its error names: a batch of 1,000 events with the same mistake has 1,000 of them
SHOWN_SCHEMA_PROBLEMS = 5


def schema_refusal(errors: Sequence[Mapping[str, Any]]) -> str:
    """A 422's ``error``: where the body does not fit the schema and how, in words (``detail`` beside it names the
    same by ``loc``, as FastAPI does). ``name`` where ``event`` is missing is one problem, not two: it is the spelling
    of Pusher's API and of the library's Event, and FastAPI's "Field required" and "Extra inputs are not permitted"
    did not say that the one goes in the other."""

    def places(kind: str, key: str) -> set[tuple[Any, ...]]:
        return {tuple(error["loc"][:-1]) for error in errors if error.get("type") == kind and _key(error) == key}

    # Only where an event is wanted and missing: a batch's own {"name": …} beside "events" is no event's name
    misnamed = places("extra_forbidden", "name") & places("missing", "event")
    problems: list[str] = []
    for error in errors:
        loc, kind = tuple(error.get("loc", ())), error.get("type")
        if kind == "missing" and _key(error) == "event" and loc[:-1] in misnamed:
            continue  # said with the 'name' that holds it
        if kind == "extra_forbidden" and loc[:-1] in misnamed and _key(error) == "name":
            problems.append(f"{_place(loc[:-1])}: unknown key 'name': the event's name goes in 'event'")
        elif kind == "extra_forbidden":
            problems.append(f"{_place(loc[:-1])}: unknown key {shown_credential(str(_key(error)))}")
        elif kind == "missing" and len(loc) > 1:
            problems.append(f"{_place(loc[:-1])}: {shown_credential(str(_key(error)))} is required")
        elif kind == "missing":
            problems.append(f"{_place(loc)} is empty: send a JSON object")
        else:  # pydantic's words, which describe the value without repeating it
            problems.append(f"{_place(loc)}: {str(error.get('msg')).removeprefix('Value error, ')}")
    shown = "; ".join(problems[:SHOWN_SCHEMA_PROBLEMS])
    more = len(problems) - SHOWN_SCHEMA_PROBLEMS
    return f"{shown}; and {more} more" if more > 0 else shown


def _key(error: Mapping[str, Any]) -> object:
    loc = error.get("loc", ())
    return loc[-1] if loc else None


def _place(loc: Sequence[object]) -> str:
    """A ``loc`` as a caller writes it: ``events[1].channel``; ``the body`` for the body itself."""
    text = ""
    for part in loc[1:] if tuple(loc[:1]) == ("body",) else loc:  # the schema's own names: a key sent is not one
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else str(part)
    return text or "the body"


def _slash_off_a_route(request: Request) -> bool:
    """Whether the request's path is one of a route's but for the '/'s it ends in."""
    path = route_path(request.scope)
    if not path.endswith("/") or not path.rstrip("/"):
        return False
    scope = {**request.scope, "path": request.scope["path"].rstrip("/")}
    return any(route.matches(scope)[0] is not Match.NONE for route in request.app.router.routes)


# The methods a 405's Allow may name (RFC 9110 §9), as routes take them
HTTP_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


def _allowed_methods(request: Request) -> str:
    """The 405's ``Allow``: every method of the routes at the request's path. Starlette's named the first route's
    alone, and /v1/auth/channel, a route for GET (ably-js's authUrl) and one for POST (pusher-js), said ``Allow: GET``
    to a wrong method, leaving out the POST pusher-js sends."""
    routes = request.app.router.routes
    return ", ".join(
        method
        for method in HTTP_METHODS
        if any(route.matches({**request.scope, "method": method})[0] is Match.FULL for route in routes)
    )


def _missed_user_route(user_id: str, action: str) -> str:
    """The 404 of a user route whose user id is not one path segment: a bare 'Not Found' read as a mistyped route."""
    problem = "it is empty" if not user_id else f"{user_id[:50]!r} holds a '/'"
    return (
        f"no route for the user id of POST /v1/users/{{id}}/{action}: {problem}; a user id is one path segment, "
        "percent-encoded (a '/' cannot be one: the %2F is decoded before routing)"
    )


NON_FINITE_JSON_BODY = (
    "the JSON body is malformed: it holds NaN or Infinity (or a number past a double's range, such as 1e400), "
    "which JSON has no value for"
)

# FastAPI's 400 for a JSON body its parser raised on with anything but a JSONDecodeError (that one is its json_invalid,
# answered above): invalid UTF-8, nesting past the parser's recursion limit, an integer past Python's limit on digits.
FASTAPI_BODY_ERROR = "There was an error parsing the body"


def _body_refused(exc: RequestValidationError) -> bool:
    """Whether the schema refused a body as a whole (bytes where an object goes), not one field or an empty body."""
    return any(tuple(error.get("loc", ())) == ("body",) and error.get("type") != "missing" for error in exc.errors())
