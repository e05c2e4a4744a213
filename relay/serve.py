"""How ``relay serve`` runs the gateway: uvicorn's h11 protocol, whose refusals (a head past the limit, a transfer
coding the gateway does not decode, bytes that are not HTTP/1.1) are answered as the gateway's own errors. Part of the
CLI's layer: the gateway itself (``relay.gateway``) is an ASGI app any server may run."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

import h11
from fastapi.responses import JSONResponse
from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

from relay.gateway import MAX_HEAD_BYTES, UNSUPPORTED_TRANSFER_CODING, head_too_large

log = logging.getLogger("relay.gateway")


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
    before."""

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

    def send_400_response(self, msg: str) -> None:
        conn = self.conn
        assert isinstance(conn, _RefusalNotingConnection)
        status, message = _parser_refusal(conn)
        detail = "" if conn.refusal is None else f" ({str(conn.refusal)[:200]})"
        log.info("a request the HTTP parser refused answered %d: %s%s", status, message, detail)
        if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):  # an answer is on its way already: only close
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


def server_options() -> dict[str, Any]:
    """The uvicorn settings ``relay serve`` runs the gateway with. h11, not httptools: uvicorn bounds only h11's
    unfinished request heads, and httptools buffered one without limit (a client sending headers that never end grew
    the process by what it sent); with GatewayHttpProtocol, h11's refusals are answered as the gateway's errors. The
    gateway is not a hot path."""
    return {"http": GatewayHttpProtocol, "h11_max_incomplete_event_size": MAX_HEAD_BYTES}
