"""How ``relay serve`` runs the gateway: uvicorn's h11 protocol, whose refusals (a head past the limit, a transfer
coding the gateway does not decode, bytes that are not HTTP/1.1) are answered as the gateway's own errors. Part of the
CLI's layer: the gateway itself (``relay.gateway``) is an ASGI app any server may run."""

from __future__ import annotations

import asyncio
import logging
from http import HTTPStatus
from typing import Any

import h11
from fastapi.responses import JSONResponse
from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

from relay.gateway.guards import UNSUPPORTED_TRANSFER_CODING, head_too_large
from relay.protocol.http_framing import MAX_HEAD_BYTES

log = logging.getLogger("relay.gateway")


def request_timed_out(seconds: float) -> str:
    return (
        f"the request was not received whole within {seconds:g} seconds of the connection opening (or of the previous "
        "answer on it): send the request line, the headers and the body at once"
    )


class _RefusalNotingConnection(h11.Connection):
    """h11's server connection, noting the error it refused the client's data with, and whether in a request's head."""

    def __init__(self, max_head_bytes: int) -> None:
        super().__init__(h11.SERVER, max_incomplete_event_size=max_head_bytes)
        self.max_head_bytes = max_head_bytes
        self.refusal: h11.RemoteProtocolError | None = None
        self.refused_in_head = False

    def next_event(self) -> h11.Event | type[h11.NEED_DATA] | type[h11.PAUSED]:
        in_head = self.their_state is h11.IDLE
        try:
            return super().next_event()
        except h11.RemoteProtocolError as error:
            self.refusal, self.refused_in_head = error, in_head
            raise


class GatewayHttpProtocol(H11Protocol):
    """uvicorn's h11 protocol as ``relay serve`` runs it (:func:`server_options`). A request h11 refuses never reaches
    the app: a head still unfinished past ``h11_max_incomplete_event_size`` (h11 checks it only between reads, so a
    whole head that arrives in one read is measured by HeadGuard instead), a Transfer-Encoding other than chunked,
    a request line or header that is not HTTP/1.1. uvicorn answered each ``400 Invalid HTTP request received.`` in
    plain text; here the answer is the gateway's, ``{"error": "…"}`` with the status h11 gives (431, 501, 400; 413
    for chunked framing past the limit, as the emulator answers it), and the connection is closed after it, as
    before.

    A request must arrive whole, head and body, within ``request_timeout`` seconds of the connection opening or of the
    previous answer on it: past that, a connection that sent nothing is closed, one that sent part of a request is
    answered 408 and closed.
    """

    request_timeout: float  # set by server_options

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: Any = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        limit = config.h11_max_incomplete_event_size
        self.conn = _RefusalNotingConnection(MAX_HEAD_BYTES if limit is None else limit)
        self.read_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._await_request()

    def handle_events(self) -> None:
        super().handle_events()
        upgraded = self.transport.get_protocol() is not self  # the WebSocket protocol's now, the transport with it
        if not upgraded and self.conn.their_state in (h11.IDLE, h11.SEND_BODY):
            self._await_request()
        else:  # the request is read whole (or the connection is ending, or upgraded)
            self._stop_awaiting()

    def on_response_complete(self) -> None:
        self._stop_awaiting()  # the next request's time starts now, not at the first byte it sends
        super().on_response_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_awaiting()
        super().connection_lost(exc)

    def shutdown(self) -> None:
        """A request still arriving when the server shuts down is answered 503 and its connection closed: waiting for
        the rest of it would hold the shutdown for as long as its client likes, and the process ends either way.
        Requests received whole are let finish (within ``timeout_graceful_shutdown``)."""
        if self._request_arriving():
            self._stop_awaiting()
            log.warning("a request still arriving at shutdown answered 503: %s", SHUTTING_DOWN)
            self._cut_short(HTTPStatus.SERVICE_UNAVAILABLE, SHUTTING_DOWN)
            return
        super().shutdown()

    def _request_arriving(self) -> bool:
        """Whether part of a request has come and not all of it: its body, or bytes of its head."""
        their_state = self.conn.their_state
        return their_state is h11.SEND_BODY or (their_state is h11.IDLE and bool(self.conn.trailing_data[0]))

    def _await_request(self) -> None:
        if self.read_deadline is None and not self.transport.is_closing():
            self.read_deadline = self.loop.call_later(self.request_timeout, self._request_timed_out)

    def _stop_awaiting(self) -> None:
        if self.read_deadline is not None:
            self.read_deadline.cancel()
            self.read_deadline = None

    def _request_timed_out(self) -> None:
        """The request was not read whole in time: a 408 if any of it came and no answer has begun, and the close.
        A handler waiting for the rest of the body is told the client is gone (``http.disconnect``)."""
        self.read_deadline = None
        if self.transport.is_closing():
            return
        if not self._request_arriving():
            self.transport.close()  # an idle connection: nothing to answer
            return
        log.info("a request not received whole within %gs answered 408", self.request_timeout)
        self._cut_short(HTTPStatus.REQUEST_TIMEOUT, request_timed_out(self.request_timeout))

    def _cut_short(self, status: int, message: str) -> None:
        """Stop reading a request not yet received whole: a handler waiting for the rest of its body is told the
        client is gone (``http.disconnect``); the client is answered ``status``, unless an answer has begun."""
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True
            cycle.message_event.set()
        self._answer_and_close(status, message)

    def send_400_response(self, msg: str) -> None:
        conn = self.conn
        assert isinstance(conn, _RefusalNotingConnection)
        status, message = _parser_refusal(conn)
        detail = "" if conn.refusal is None else f" ({str(conn.refusal)[:200]})"
        log.info("a request the HTTP parser refused answered %d: %s%s", status, message, detail)
        self._answer_and_close(status, message)

    def _answer_and_close(self, status: int, message: str) -> None:
        """Answer ``status`` with the gateway's JSON error and close; only close if an answer is on its way already."""
        conn = self.conn
        if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            self.transport.close()
            return
        body = bytes(JSONResponse({"error": message}).body)  # as the routes write it
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        reason = HTTPStatus(status).phrase.encode()
        answer = (h11.Response(status_code=status, headers=headers, reason=reason), h11.Data(data=body))
        for event in (*answer, h11.EndOfMessage()):
            self.transport.write(conn.send(event) or b"")
        self.transport.close()


def _parser_refusal(conn: _RefusalNotingConnection) -> tuple[int, str]:
    error = conn.refusal
    status = 400 if error is None else error.error_status_hint
    if status == 431 and conn.refused_in_head:
        return 431, head_too_large(conn.max_head_bytes)
    if status == 431:  # past the head, h11 buffers only a chunk-size line or the trailer section: 413, as the emulator
        return 413, (
            f"the request body's chunked framing (a chunk-size line, or the trailer section) is over "
            f"{conn.max_head_bytes} bytes"
        )
    if status == 501:
        return 501, UNSUPPORTED_TRANSFER_CODING
    if conn.refused_in_head:
        return 400, "malformed HTTP request: its request line or headers are not HTTP/1.1 (RFC 9112)"
    return 400, "malformed HTTP request: its body's chunked framing is not HTTP/1.1 (RFC 9112 §7.1)"


SHUTTING_DOWN = "the gateway is shutting down and did not receive the whole request: send it again"


def server_options(request_timeout: float, shutdown_timeout: float) -> dict[str, Any]:
    """The uvicorn settings ``relay serve`` runs the gateway with. h11, not httptools: uvicorn bounds only h11's
    unfinished request heads, and httptools buffered one without limit (a client sending headers that never end grew
    the process by what it sent); with GatewayHttpProtocol, h11's refusals are answered as the gateway's errors. The
    gateway is not a hot path.

    uvicorn bounds neither how long a request may take to arrive (a connection that sends nothing, or a byte of its
    head every few seconds, was held for ever: enough of them and the process ran out of descriptors) nor how long a
    shutdown waits for the requests in flight (SIGTERM waited for such a client): ``request_timeout`` bounds the one,
    ``shutdown_timeout`` the other."""
    protocol = type("GatewayHttpProtocol", (GatewayHttpProtocol,), {"request_timeout": request_timeout})
    return {
        "http": protocol,
        "h11_max_incomplete_event_size": MAX_HEAD_BYTES,
        "timeout_graceful_shutdown": shutdown_timeout,
    }
