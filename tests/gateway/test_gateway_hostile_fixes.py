"""The gateway after a hostile-client audit. Body framing: Content-Length with Transfer-Encoding was taken (chunked
won), answered, and the connection kept, so a request smuggled after the body was answered too; a transfer coding
other than chunked got uvicorn's plain-text 400. Heads: the documented 64 KiB limit held only for heads still
arriving between reads (100 KB heads that came in one read were served). JWTs: a string ``exp`` was accepted, ``true``
was "expired", a 5,000-digit one was answered with Python's advice on ``sys.set_int_max_str_digits()``. Bodies that
are not UTF-8, nest too deeply or hold huge integers got FastAPI's "There was an error parsing the body".

`relay serve` itself (a subprocess, h11 as it runs it) answers the raw-socket tests; the JWT and body tests use the
gateway served by uvicorn in the test's loop, in front of a real emulator (tests/gateway/conftest.py)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import socket
import time
from collections.abc import Iterator

import httpx
import jwt
import pytest
from fastapi import FastAPI

from relay.gateway import HeadGuard
from relay.identity import MAX_NUMERIC_DATE
from relay.protocol.http_framing import MAX_HEAD_BYTES
from tests.gateway.conftest import JWT_SECRET, TOKEN, RunningGateway, relay_serve, serve_asgi

CL_AND_TE = (
    "the request has both Content-Length and Transfer-Encoding, which say different things of where its body ends: "
    "send one (RFC 9112 §6.1)"
)
UNSUPPORTED_CODING = (
    "the request's Transfer-Encoding is not supported (only chunked is): send the body with Content-Length, or with "
    "Transfer-Encoding: chunked alone"
)
JWT_HINT = "(a JWT in Authorization or a cookie counts: leave out of it the claims the gateway does not need)"
SMUGGLED = b"GET /v1/client-config HTTP/1.1\r\nHost: gateway\r\n\r\n"
ORIGIN = "https://app.example.com"

Answer = tuple[int, dict[str, str], bytes]


# -- `relay serve` and raw HTTP ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def serve_port() -> Iterator[int]:
    """`relay serve` as the command line runs it, on a free port, with the API token, a JWT secret and CORS."""
    with relay_serve(
        RELAY_URL="memory://hostile-fixes", RELAY_JWT_SECRET=JWT_SECRET, RELAY_CORS_ORIGINS=ORIGIN
    ) as served:
        yield served.port


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection; fails if it leaves the connection open."""
    received = bytearray()
    sock.settimeout(5)
    while True:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            pytest.fail(f"the gateway left the connection open after sending {bytes(received)!r}")
        if not chunk:
            return bytes(received)
        received += chunk


def exchange(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        return read_until_closed(sock)


def answers(raw: bytes) -> list[Answer]:
    """The responses in ``raw``, one after another (each with its Content-Length)."""
    found = []
    while raw:
        head, separator, rest = raw.partition(b"\r\n\r\n")
        assert separator, f"an unfinished response: {raw!r}"
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
        length = int(headers["content-length"])
        found.append((int(status_line.split()[1]), headers, rest[:length]))
        raw = rest[length:]
    return found


def only_answer(raw: bytes) -> tuple[int, dict[str, str], object]:
    """The one response in ``raw`` (a second would be one to a request that followed), its body read as JSON."""
    found = answers(raw)
    assert len(found) == 1, f"{len(found)} answers: {raw!r}"
    status, headers, body = found[0]
    return status, headers, json.loads(body)


def assert_serving(port: int) -> None:
    assert httpx.get(f"http://127.0.0.1:{port}/health").json() == {"status": "ok"}


PUBLISH = (
    b"POST /v1/publish HTTP/1.1\r\nHost: gateway\r\nAuthorization: Bearer " + TOKEN.encode() + b"\r\n"
    b"Content-Type: application/json\r\n"
)


@pytest.mark.parametrize(
    "request_head",
    [
        PUBLISH + b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n",
        PUBLISH + b"Transfer-Encoding: Chunked\r\nContent-Length: 5\r\n\r\n",
        b"GET /health HTTP/1.1\r\nHost: gateway\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        # A CORS preflight, which CORSMiddleware answers itself: the check is outside it.
        b"OPTIONS /v1/publish HTTP/1.1\r\nHost: gateway\r\nOrigin: " + ORIGIN.encode() + b"\r\n"
        b"Access-Control-Request-Method: POST\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
    ],
    ids=["publish CL then TE", "publish TE then CL", "GET with both", "CORS preflight with both"],
)
def test_content_length_with_transfer_encoding_is_a_400_and_what_follows_is_never_answered(
    serve_port: int, request_head: bytes
) -> None:
    """RFC 9112 §6.1: such a request "ought to be handled as an error", and the server MUST close the connection
    after answering it. One answer, the gateway's JSON, ``Connection: close``, then the connection is closed: the
    request written after the chunked body gets nothing. Before, the publish got a 422 and the smuggled GET a 200."""
    raw = exchange(serve_port, request_head + b"0\r\n\r\n" + SMUGGLED)
    status, headers, body = only_answer(raw)
    assert (status, body) == (400, {"error": CL_AND_TE})
    assert headers["connection"] == "close"
    assert_serving(serve_port)


@pytest.mark.parametrize(
    "framing",
    [
        b"Transfer-Encoding: gzip, chunked\r\n",
        b"Transfer-Encoding: chunked, identity\r\n",
        b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
    ],
    ids=["gzip, chunked", "chunked, identity", "two Transfer-Encoding headers"],
)
def test_a_transfer_coding_other_than_chunked_alone_is_a_501_in_json_and_closes(
    serve_port: int, framing: bytes
) -> None:
    """RFC 9112 §6.1: a transfer coding the server does not understand SHOULD get 501 (h11 refuses these before the
    app sees them). It was uvicorn's plain-text ``400 Invalid HTTP request received.``"""
    raw = exchange(serve_port, PUBLISH + framing + b"\r\n0\r\n\r\n" + SMUGGLED)
    status, headers, body = only_answer(raw)
    assert (status, body) == (501, {"error": UNSUPPORTED_CODING})
    assert (headers["connection"], headers["content-type"]) == ("close", "application/json")
    assert_serving(serve_port)


@pytest.mark.parametrize("path", ["/v1/publish%0A", "/v1/publish/batch%0a", "/v1/auth/channel%0A", "/v1/webhooks%00"])
def test_a_route_s_path_with_a_control_character_is_a_400_before_its_body_is_read(serve_port: int, path: str) -> None:
    """Starlette's route patterns end in "$", which also matches before a final newline: "/v1/publish%0A" reached the
    publish route, while RequestGuard, which knows the routes by their exact paths, let it through unchecked. A body
    of any size was then read whole without the API token (a 422 repeating 100 KB of input took the event loop for
    a second), and /v1/auth/channel's 16 KiB limit did not apply. Now the head alone is answered, before any body."""
    head = f"POST {path} HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
    with socket.create_connection(("127.0.0.1", serve_port), timeout=5) as sock:
        sock.sendall(head.encode() + f"Content-Length: {50_000_000}\r\n\r\n".encode())
        raw = read_until_closed(sock)  # answered, and closed, with not one byte of the body sent
    status, headers, body = only_answer(raw)
    message = "the request's path has a control character (such as %0A): no route of the gateway has one"
    assert (status, body, headers["connection"]) == (400, {"error": message}, "close")
    assert_serving(serve_port)


def head_of(size: int, first_lines: bytes = b"GET /health HTTP/1.1\r\nHost: gateway\r\n") -> bytes:
    """A request head of exactly ``size`` bytes: ``first_lines``, ``Connection: close``, a padding header, the blank
    line."""
    start = first_lines + b"Connection: close\r\nX-Padding: "
    head = start + b"a" * (size - len(start) - 4) + b"\r\n\r\n"
    assert len(head) == size
    return head


def test_a_head_of_64_kib_is_served_and_one_byte_more_is_a_431(serve_port: int) -> None:
    """docs/security.md: request line and headers over 64 KiB are refused. A 100 KB head that reached the server in
    one read was served (h11 measures a head only while it is unfinished between reads); now the limit is the byte."""
    assert MAX_HEAD_BYTES == 65_536
    status, _, body = only_answer(exchange(serve_port, head_of(MAX_HEAD_BYTES)))
    assert (status, body) == (200, {"status": "ok"})
    status, headers, body = only_answer(exchange(serve_port, head_of(MAX_HEAD_BYTES + 1)))
    message = f"the request line and headers are 65537 bytes; the gateway takes at most 65536 {JWT_HINT}"
    assert (status, body, headers["connection"]) == (431, {"error": message}, "close")
    assert_serving(serve_port)


def test_an_ably_token_request_refused_by_its_head_is_a_403_in_ably_s_shape() -> None:
    """ably-js asks again, for ever, for a token refused with any status but 403, and reads the status from an
    ``{"error": {…}}`` body: a head over 64 KiB (a large cookie) or two Authorization headers on /v1/auth/channel were
    a plain 431 and 400, which ably-js asked again every few seconds. Now a 403 in Ably's shape, as the route's and
    RequestGuard's refusals; the connection is still closed, and the gateway serves on."""
    with relay_serve(RELAY_URL="ably://app.key:secret@127.0.0.1:9?tls=false", RELAY_JWT_SECRET=JWT_SECRET) as served:
        first = b"POST /v1/auth/channel HTTP/1.1\r\nHost: gateway\r\n"
        too_large = only_answer(exchange(served.port, head_of(MAX_HEAD_BYTES + 1, first)))
        twice = first + b"Authorization: Bearer a\r\nAuthorization: Bearer b\r\nConnection: close\r\n\r\n"
        two_credentials = only_answer(exchange(served.port, twice))
        assert_serving(served.port)
    message = f"the request line and headers are 65537 bytes; the gateway takes at most 65536 {JWT_HINT}"
    for (status, headers, body), said in (
        (too_large, message),
        (two_credentials, "the request has 2 Authorization headers: send one"),
    ):
        assert (status, headers["connection"], headers["cache-control"]) == (403, "close", "no-store")
        assert body == {"error": {"message": said, "code": 40300, "statusCode": 403}}


def test_a_jwt_that_makes_the_head_pass_64_kib_is_a_431_that_says_so(serve_port: int) -> None:
    """The audit's 500 KB JWT got ``400 Invalid HTTP request received.`` in plain text; a long JWT is the likely way
    to pass the limit, so the answer names it."""
    token = jwt.encode({"sub": "alice", "exp": int(time.time()) + 60, "pad": "p" * 48_000}, JWT_SECRET, "HS256")
    first = f"POST /v1/auth/channel HTTP/1.1\r\nHost: gateway\r\nAuthorization: Bearer {token}\r\n".encode()
    status, _, body = only_answer(exchange(serve_port, head_of(MAX_HEAD_BYTES + 1, first)))
    message = f"the request line and headers are 65537 bytes; the gateway takes at most 65536 {JWT_HINT}"
    assert (status, body) == (431, {"error": message})
    assert_serving(serve_port)


def test_a_431_to_a_page_of_an_allowed_origin_carries_cors_headers_and_to_another_none(serve_port: int) -> None:
    """A page whose cookie or JWT passed 64 KiB saw a network error, not the 431: HeadGuard answers outside CORS, and
    its refusals had no CORS headers. Now an allowed origin gets them (so the page reads the reason), another none."""
    first = f"POST /v1/auth/channel HTTP/1.1\r\nHost: gateway\r\nOrigin: {ORIGIN}\r\n".encode()
    status, headers, body = only_answer(exchange(serve_port, head_of(MAX_HEAD_BYTES + 1, first)))
    message = f"the request line and headers are 65537 bytes; the gateway takes at most 65536 {JWT_HINT}"
    assert (status, body, headers["connection"]) == (431, {"error": message}, "close")
    assert (headers["access-control-allow-origin"], headers["access-control-allow-credentials"]) == (ORIGIN, "true")
    assert (headers["vary"], headers["cache-control"]) == ("Origin", "no-store")  # an auth path's, as its others
    other = first.replace(ORIGIN.encode(), b"https://elsewhere.example")
    status, headers, _ = only_answer(exchange(serve_port, head_of(MAX_HEAD_BYTES + 1, other)))
    assert status == 431
    assert "access-control-allow-origin" not in headers
    assert headers["vary"] == "Origin"
    raw = exchange(serve_port, f"GET /v1/publish%0A HTTP/1.1\r\nHost: gateway\r\nOrigin: {ORIGIN}\r\n\r\n".encode())
    status, headers, body = only_answer(raw)
    assert (status, headers["access-control-allow-origin"]) == (400, ORIGIN)
    assert "cache-control" not in headers  # not an auth path: as the gateway's other answers
    assert_serving(serve_port)


def test_a_head_still_arriving_past_64_kib_is_a_431_in_json_and_the_connection_closed(serve_port: int) -> None:
    """A head that has not ended by 64 KiB is refused as its bytes arrive (nothing more is read), with the gateway's
    JSON rather than uvicorn's plain-text 400."""
    with socket.create_connection(("127.0.0.1", serve_port), timeout=5) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: gateway\r\n")
        sent = 0
        while sent <= MAX_HEAD_BYTES:  # in pieces the server reads one by one; stops just past the limit, unfinished
            sock.sendall(b"X-Padding: " + b"a" * 8_000 + b"\r\n")
            sent += 8_013
            time.sleep(0.02)
        raw = read_until_closed(sock)
    status, headers, body = only_answer(raw)
    message = f"the request line and headers are over 65536 bytes; the gateway takes at most 65536 {JWT_HINT}"
    assert (status, body, headers["connection"]) == (431, {"error": message}, "close")
    assert_serving(serve_port)


def test_a_chunked_body_s_trailers_past_64_kib_are_a_413_and_the_connection_closed(serve_port: int) -> None:
    """h11 bounds a chunked body's trailer section (and chunk-size lines) as it bounds a head; past it, the answer is
    413 as the emulator's, not "malformed": trailers are valid HTTP, only too long."""
    with socket.create_connection(("127.0.0.1", serve_port), timeout=5) as sock:
        sock.sendall(PUBLISH + b"Transfer-Encoding: chunked\r\n\r\n0\r\n")
        sent = 0
        while sent <= MAX_HEAD_BYTES:
            sock.sendall(b"X-Trailer: " + b"a" * 8_000 + b"\r\n")
            sent += 8_013
            time.sleep(0.02)
        raw = read_until_closed(sock)
    status, headers, body = only_answer(raw)
    message = "the request body's chunked framing (a chunk-size line, or the trailer section) is over 65536 bytes"
    assert (status, body, headers["connection"]) == (413, {"error": message}, "close")
    assert_serving(serve_port)


async def test_head_guard_in_an_app_of_one_s_own_refuses_as_relay_serve_does() -> None:
    """docs/gateway.md (embedding): ``HeadGuard`` in an app served with uvicorn's default parser, httptools, which
    passes ``Transfer-Encoding: gzip, chunked`` and heads of any size on to the app (under `relay serve`, h11 refuses
    the first itself)."""
    app = FastAPI()
    app.add_middleware(HeadGuard)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    async with serve_asgi(app) as url:
        port = int(url.rsplit(":", 1)[1])
        coded = PUBLISH.replace(b"/v1/publish", b"/health") + b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"
        status, headers, body = only_answer(await asyncio.to_thread(exchange, port, coded + SMUGGLED))
        assert (status, body, headers["connection"]) == (501, {"error": UNSUPPORTED_CODING}, "close")
        status, _, body = only_answer(await asyncio.to_thread(exchange, port, head_of(MAX_HEAD_BYTES + 1)))
        message = f"the request line and headers are 65537 bytes; the gateway takes at most 65536 {JWT_HINT}"
        assert (status, body) == (431, {"error": message})
        status, _, body = only_answer(await asyncio.to_thread(exchange, port, head_of(MAX_HEAD_BYTES)))
        assert (status, body) == (200, {"status": "ok"})


def test_pipelined_requests_within_the_limits_are_all_answered(serve_port: int) -> None:
    """The refusals close only the connections they answer: ordinary keep-alive and pipelining are as they were."""
    ping = b"GET /health HTTP/1.1\r\nHost: gateway\r\n\r\n"
    raw = exchange(serve_port, ping * 3 + b"GET /health HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n\r\n")
    assert [(status, body) for status, _, body in answers(raw)] == [(200, b'{"status":"ok"}')] * 4


# -- JWT claims -------------------------------------------------------------------------------------------------------


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def signed_jwt(payload: bytes, header: bytes = b'{"alg":"HS256","typ":"JWT"}') -> str:
    """A JWT of these exact bytes, correctly signed with the gateway's secret (so only its claims can be at fault)."""
    signing_input = f"{b64(header)}.{b64(payload)}"
    signature = hmac.new(JWT_SECRET.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


async def channel_auth(gateway: RunningGateway, token: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        return await http.post(
            "/v1/auth/channel",
            data={"socket_id": "1234.5678", "channel_name": "private-user-alice"},
            headers={"Authorization": f"Bearer {token}"},
        )


LATER = int(time.time()) + 3600
NUMBER_OF_SECONDS = "invalid JWT: the {} claim must be a number of seconds, got {}"
UP_TO_9999 = (
    f"invalid JWT: the exp claim must be a number of seconds up to {MAX_NUMERIC_DATE} (the end of the year 9999), got "
)
TEAM_DIGITS = "invalid JWT: its 'team' claim holds an integer of 5000 digits"
TOO_DEEP = "invalid JWT: its payload nests arrays and objects too deeply"


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b'{"sub":"alice","exp":"%d"}' % LATER, NUMBER_OF_SECONDS.format("exp", "a string")),
        (b'{"sub":"alice","exp":true}', NUMBER_OF_SECONDS.format("exp", "a boolean")),
        (b'{"sub":"alice","exp":null}', NUMBER_OF_SECONDS.format("exp", "null")),
        (b'{"sub":"alice","exp":[%d]}' % LATER, NUMBER_OF_SECONDS.format("exp", "a list")),
        (b'{"sub":"alice","exp":%d,"nbf":"now"}' % LATER, NUMBER_OF_SECONDS.format("nbf", "a string")),
        (b'{"sub":"alice","exp":%d,"iat":false}' % LATER, NUMBER_OF_SECONDS.format("iat", "a boolean")),
        (b'{"sub":"alice","exp":' + b"9" * 5000 + b"}", UP_TO_9999 + "an integer of 5000 digits"),
        (b'{"sub":"alice","exp":1e400}', UP_TO_9999 + "a number too large for a double (1e400)"),
        (b'{"sub":"alice","exp":NaN}', UP_TO_9999 + "NaN, which is not a JSON number"),
        (b'{"sub":"alice","exp":100000000000000000000}', UP_TO_9999 + "1e+20"),
        (b'{"sub":"alice","exp":1' + b"0" * 400 + b"}", UP_TO_9999 + "1e+400"),
        (b'{"sub":"alice","exp":%d,"team":' % LATER + b"7" * 5000 + b"}", TEAM_DIGITS),
        (b'{"sub":"alice","exp":%d,"x":' % LATER + b"[" * 3000 + b"]" * 3000 + b"}", TOO_DEEP),
        (b'{"sub":"alice\xff","exp":%d}' % LATER, "invalid JWT: its payload is not UTF-8 text"),
        (b'["alice"]', "invalid JWT: its payload must be a JSON object, not a list"),
    ],
    ids=[
        "exp string", "exp true", "exp null", "exp list", "nbf string", "iat false", "exp 5000 digits", "exp 1e400",
        "exp NaN", "exp after 9999", "exp 401 digits", "other claim 5000 digits", "nested 3000 deep", "not UTF-8",
        "not an object",
    ],
)  # fmt: skip
async def test_jwt_claims_that_are_not_numeric_dates_are_a_401_that_names_the_claim(
    gateway: RunningGateway, payload: bytes, message: str
) -> None:
    """RFC 7519 §2: a NumericDate is a JSON number of seconds. Checked before PyJWT reads the claims, in the gateway's
    words: PyJWT took a string exp, read true as 1 ("the JWT has expired") and passed on Python's own messages."""
    response = await channel_auth(gateway, signed_jwt(payload))
    assert (response.status_code, response.json()) == (401, {"error": message})
    assert "sys." not in response.text and "recursion" not in response.text


@pytest.mark.parametrize(
    ("claims", "path", "form", "refused"),
    [
        (b'"sub":"alice","name":"Ann \\ud83c"', "/v1/auth/channel", {"channel_name": "presence-room"}, "'name'"),
        (b'"sub":"al\\udc00ice"', "/v1/auth/channel", {"channel_name": "presence-room"}, "'sub'"),
        (b'"sub":"alice","watchlist":["bob\\ud800"]', "/v1/auth/user", {}, "'watchlist'"),
        (b'"sub":"alice","name":"Ann \\uD83C"', "/v1/auth/user", {}, "'name'"),
    ],
    ids=["name on presence", "sub on presence", "watchlist on signin", "upper-case escape"],
)
async def test_a_jwt_claim_with_half_a_utf16_pair_is_a_401_not_a_500(
    gateway: RunningGateway, claims: bytes, path: str, form: dict[str, str], refused: str
) -> None:
    """A JavaScript issuer that cuts a display name with slice() can leave half an emoji: valid JSON, signed, but text
    no provider can carry. The answer was a 500 as the channel_data was written; the token is refused, naming the
    claim, and the gateway serves the next request."""
    token = signed_jwt(b"{" + claims + b',"exp":%d}' % LATER)
    async with httpx.AsyncClient(base_url=gateway.url, headers={"Authorization": f"Bearer {token}"}) as http:
        response = await http.post(path, data={"socket_id": "1234.5678", **form})
    assert (response.status_code, response.json()) == (
        401,
        {
            "error": f"invalid JWT: its {refused} claim holds a lone UTF-16 surrogate, which UTF-8 cannot encode: a "
            "string cut in the middle of a character"
        },
    )
    whole = signed_jwt(b'{"sub":"alice","name":"Ann \\ud83c\\udf89","exp":%d}' % LATER)  # a whole pair is fine
    async with httpx.AsyncClient(base_url=gateway.url, headers={"Authorization": f"Bearer {whole}"}) as http:
        answer = await http.post("/v1/auth/channel", data={"socket_id": "1234.5678", "channel_name": "presence-room"})
    assert answer.status_code == 200, answer.text
    assert json.loads(answer.json()["channel_data"])["user_info"]["name"] == "Ann 🎉"


async def test_a_jwt_header_python_cannot_read_is_a_401_without_python_s_words(gateway: RunningGateway) -> None:
    token = signed_jwt(b'{"sub":"alice","exp":%d}' % LATER, header=b'{"alg":"HS256","x":' + b"9" * 5000 + b"}")
    response = await channel_auth(gateway, token)
    assert (response.status_code, response.json()) == (401, {"error": "invalid JWT: its header is not a JSON object"})


@pytest.mark.parametrize(
    "exp", [b"%d.5" % LATER, b"%d" % MAX_NUMERIC_DATE, b"%de0" % LATER], ids=["float", "end of 9999", "exponent"]
)
async def test_numeric_dates_as_json_numbers_are_accepted(gateway: RunningGateway, exp: bytes) -> None:
    response = await channel_auth(gateway, signed_jwt(b'{"sub":"alice","exp":' + exp + b',"iat":1700000000}'))
    assert response.status_code == 200, response.text
    assert set(response.json()) == {"auth"}


async def test_a_fractional_exp_still_ahead_is_accepted(gateway: RunningGateway) -> None:
    """exp was compared as int(exp): at 12.2 s past some second, a token with exp 12.7 s was "expired" (12 <= 12.2),
    half a second before its time. RFC 7519 §2: a NumericDate may hold a fraction."""
    while not 0.1 <= time.time() % 1 < 0.3:  # noqa: ASYNC110 (a fraction of the current second, not an event)
        await asyncio.sleep(0.01)
    exp = b"%.3f" % (time.time() + 0.5)
    response = await channel_auth(gateway, signed_jwt(b'{"sub":"alice","exp":' + exp + b"}"))
    assert response.status_code == 200, response.text
    expired = b"%.3f" % (time.time() - 0.2)
    response = await channel_auth(gateway, signed_jwt(b'{"sub":"alice","exp":' + expired + b"}"))
    assert (response.status_code, response.json()) == (401, {"error": "the JWT has expired"})


async def test_a_forged_jwt_with_a_bad_exp_is_refused_for_its_signature(gateway: RunningGateway) -> None:
    """The claims are read once the signature is verified: a forged token learns nothing of what its claims would
    have been told."""
    forged = signed_jwt(b'{"sub":"alice","exp":"soon"}').rsplit(".", 1)[0] + "." + b64(b"\0" * 32)
    response = await channel_auth(gateway, forged)
    assert response.status_code == 401
    assert response.json()["error"].startswith("invalid JWT: Signature verification failed with RELAY_JWT_SECRET")


# -- bodies FastAPI cannot parse -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"channel":"c","event":"e","data":"\xff"}', "the JSON body is malformed: it is not UTF-8 text"),
        (
            b'{"channel":"c","event":"e","data":' + b"[" * 3000 + b"]" * 3000 + b"}",
            "the JSON body is malformed: it nests arrays and objects too deeply",
        ),
        (
            b'{"channel":"c","event":"e","data":' + b"9" * 5000 + b"}",
            "the JSON body is malformed: it has an integer of more than 4300 digits",
        ),
        (b'{"channel":', "the JSON body is malformed"),  # as before: FastAPI's json_invalid
    ],
    ids=["invalid UTF-8", "nested 3000 deep", "5000-digit integer", "cut short"],
)
@pytest.mark.parametrize("path", ["/v1/publish", "/v1/users/alice/events", "/v1/auth/channel"])
async def test_a_json_body_the_parser_cannot_read_is_the_gateway_s_400(
    gateway: RunningGateway, path: str, body: bytes, message: str
) -> None:
    """FastAPI answered these ``There was an error parsing the body``, where the auth routes and a truncated body say
    ``the JSON body is malformed``; now every JSON route says the latter, with the reason (relay.web's auth routes
    too, which read their body themselves)."""
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        response = await http.post(path, content=body, headers=headers)
        assert (response.status_code, response.json()) == (400, {"error": message})
        assert (await http.get("/health")).json() == {"status": "ok"}


def answer_after_the_body(port: int, head: bytes, body: bytes) -> bytes:
    """Send ``head``; the gateway must not answer before ``body`` comes (0.3 s); then send it: all it answers."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(head)
        sock.settimeout(0.3)
        with pytest.raises(TimeoutError):  # waiting for the body, not answering without it
            sock.recv(1)
        sock.settimeout(5)
        sock.sendall(body)
        return read_until_closed(sock)


def test_a_small_body_of_a_request_refused_by_its_path_is_read_before_the_answer(serve_port: int) -> None:
    """Answered before its body came, the connection was closed with the body unread: the client got a reset that
    could overtake the 400 ("connection reset" for an ordinary request with a stray %13 in a user id; schemathesis
    found it). A body of at most 64 KiB is now read first; a larger one is not waited for (above)."""
    body = b'{"event": "e", "data": {}}'
    head = f"POST /v1/users/%13x/events HTTP/1.1\r\nHost: gateway\r\nContent-Length: {len(body)}\r\n\r\n"
    raw = answer_after_the_body(serve_port, head.encode(), body)
    status, headers, answer = only_answer(raw)
    message = "the request's path has a control character (such as %0A): no route of the gateway has one"
    assert (status, answer, headers["connection"]) == (400, {"error": message}, "close")
    assert_serving(serve_port)


def test_a_small_body_of_a_publish_without_the_token_is_read_before_the_401(serve_port: int) -> None:
    """As a request refused by its path: the 401 came before the body, then the close with the body unread, whose
    reset could overtake the answer for a backend with a wrong token. A declared body of at most 64 KiB is read
    first; a chunked one still is not (test_an_unauthenticated_publish_is_refused_before_its_body_is_read)."""
    body = b'{"channel": "orders", "name": "e", "data": "{}"}'
    head = (
        "POST /v1/publish HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    then_close = b"GET /health HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n\r\n"  # the 401 keeps it open
    raw = answer_after_the_body(serve_port, head.encode(), body + then_close)
    assert raw.startswith(b"HTTP/1.1 401 "), raw[:200]
    assert_serving(serve_port)
